"""Specification of l2d_utils.mimic and l2d_utils.llm.generation, against a local stand-in server.

Every note here is invented for these tests, and no MIMIC text appears. The
tests write them into a ``discharge.csv.gz`` with the release's columns in
tmp_path. The stand-in is a real HTTP server on 127.0.0.1 that implements the
Chat Completions routes of OpenAI and Azure OpenAI and returns scripted
replies: per note for the extraction prompt (first reply, then the reply to
the retry), and per model and drug for the labeling prompt.

The end-to-end test with the packaged local LLM is marked slow.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest

from l2d_utils.llm.api import LLMRequestError
from l2d_utils.llm.cache import CachedResponse, CacheMissError, ResponseCache
from l2d_utils.llm.generation import ChatPrompt, GenerationRequest, make_generator
from l2d_utils.mimic import (
    DATASET_COLUMNS,
    EXTRACTION_PROMPT,
    LABELING_PROMPT,
    NOTE_COLUMNS,
    TRIPLET_COLUMNS,
    MalformedReplyError,
    build_outcome_dataset,
    consensus_labels,
    encoder_text,
    extract_triplets,
    find_discharge_file,
    is_grounded,
    note_priority,
    parse_triplets,
    read_discharge_notes,
    sample_notes,
    split_by_note,
    split_note,
)
from l2d_utils.outcomes import OUTCOME_CLASSES, outcome_split

API_KEY = "sk-test-mimic-0123456789"
EXTRACTOR = "extractor-model"
LABELER_A = "labeler-a"
LABELER_B = "labeler-b"
RETRY_PREFIX = "Your reply could not be used"

# Invented notes.
NOTES = {
    "10000001-DS-1": (
        "Brief Hospital Course:\n# Cellulitis: Left leg cellulitis was treated with cefazolin, and the redness resolved.\n\n"
        "Discharge Medications:\n1. Cephalexin 500 mg PO QID"
    ),
    "10000002-DS-1": "Brief Hospital Course:\nShe developed hives after the first dose of amoxicillin, so it was stopped.",
    "10000003-DS-1": "Brief Hospital Course:\nHome atorvastatin was continued for hyperlipidemia.",
    "10000004-DS-1": (
        "Brief Hospital Course:\nThe gout flare improved with colchicine.\n\nMetformin was continued for type 2 diabetes."
    ),
    "10000005-DS-1": "Social History: Lives alone and walks daily.",
}


def triplet(drug: str, condition: str, outcome: str, evidence: str) -> dict[str, str]:
    return {"drug": drug, "condition": condition, "outcome": outcome, "evidence": evidence}


CEFAZOLIN = triplet("cefazolin", "cellulitis", "EFFECTIVE", "Left leg cellulitis was treated with cefazolin, and the redness resolved.")
AMOXICILLIN = triplet("amoxicillin", "hives", "ADVERSE", "She developed hives after the first dose of amoxicillin, so it was stopped.")
ATORVASTATIN = triplet("atorvastatin", "hyperlipidemia", "NEUTRAL", "Home atorvastatin was continued for hyperlipidemia.")
COLCHICINE = triplet("colchicine", "gout flare", "EFFECTIVE", "The gout flare improved with colchicine.")
METFORMIN = triplet("metformin", "type 2 diabetes", "NEUTRAL", "Metformin was continued for type 2 diabetes.")

#: Extraction replies per note: the first reply, then the reply to the retry.
GOOD_REPLIES = {
    "10000001-DS-1": [json.dumps([CEFAZOLIN])],
    "10000002-DS-1": [json.dumps([AMOXICILLIN])],
    "10000003-DS-1": [json.dumps([ATORVASTATIN])],
    "10000004-DS-1": [json.dumps([COLCHICINE, METFORMIN])],
    "10000005-DS-1": ["[]"],
}
#: Labels that both labelers give, by drug.
AGREED_LABELS = {"cefazolin": "EFFECTIVE", "amoxicillin": "ADVERSE", "atorvastatin": "NEUTRAL", "colchicine": "EFFECTIVE", "metformin": "NEUTRAL"}


# Stand-in server


@dataclass
class Recorded:
    path: str
    model: str
    messages: list[dict[str, str]]

    @property
    def last_user_message(self) -> str:
        return [message["content"] for message in self.messages if message["role"] == "user"][-1]


@dataclass
class Script:
    """Replies of the stand-in.

    ``extraction[note_id]`` lists the replies to the first request and to the
    retry (the last one repeats). ``labels[(model, drug)]`` overrides
    :data:`AGREED_LABELS`. ``fail_once`` maps a note id to an HTTP status
    returned for that note's first extraction request only. ``statuses`` are
    returned, in order, for the next requests whatever they are.
    """

    extraction: dict[str, list[str]] = field(default_factory=lambda: {key: list(value) for key, value in GOOD_REPLIES.items()})
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    fail_once: dict[str, int] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)


def note_of(messages: list[dict[str, str]]) -> str | None:
    user_text = "\n".join(message["content"] for message in messages[len(EXTRACTION_PROMPT.prefix_messages()) :] if message["role"] == "user")
    for note_id, text in NOTES.items():
        if text in user_text or any(chunk in user_text for chunk in text.split("\n\n")):
            return note_id
    return None


class StandInHandler(BaseHTTPRequestHandler):
    server: "StandInServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 because the base class names it so
        pass

    def do_POST(self) -> None:  # noqa: N802 because http.server dispatches on this name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        path = self.path.split("?")[0]
        deployment = re.match(r"^/openai/deployments/([^/]+)/chat/completions$", path)
        if path != "/v1/chat/completions" and deployment is None:
            self._send(404, {"error": {"message": f"No route {path}", "type": "invalid_request_error", "code": None}})
            return
        model = deployment.group(1) if deployment else body["model"]
        record = Recorded(path, model, body["messages"])
        with self.server.lock:
            self.server.requests.append(record)
            outcome = self.server.respond(record)
        if isinstance(outcome, int):
            kind = "server_error" if outcome >= 500 else "invalid_request_error"
            self._send(outcome, {"error": {"message": f"Stand-in error {outcome}", "type": kind, "code": None}})
            return
        self._send(
            200,
            {
                "id": f"chatcmpl-standin-{len(self.server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": outcome}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.lock = threading.Lock()
        self.requests: list[Recorded] = []
        self.script = Script()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def respond(self, record: Recorded) -> str | int:
        """Return the scripted reply text or HTTP status for one request. Called with the lock acquired."""
        script = self.script
        if script.statuses:
            return script.statuses.pop(0)
        system = record.messages[0]["content"]
        if system == LABELING_PROMPT.system:
            drug = re.search(r"^Drug: (.*)$", record.last_user_message, re.MULTILINE).group(1)
            return script.labels.get((record.model, drug), AGREED_LABELS.get(drug, "NEUTRAL"))
        note_id = note_of(record.messages)
        if note_id is None:
            return 400
        is_retry = record.last_user_message.startswith(RETRY_PREFIX)
        if not is_retry and note_id in script.fail_once:
            return script.fail_once.pop(note_id)
        replies = script.extraction[note_id]
        return replies[min(1 if is_retry else 0, len(replies) - 1)]

    def count(self, predicate: Callable[[Recorded], bool] = lambda record: True) -> int:
        with self.lock:
            return sum(1 for record in self.requests if predicate(record))

    def extraction_requests_for(self, note_id: str) -> list[Recorded]:
        with self.lock:
            return [record for record in self.requests if record.messages[0]["content"] == EXTRACTION_PROMPT.system and note_of(record.messages) == note_id]


@pytest.fixture
def server():
    httpd = StandInServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove real credentials, endpoints and proxies, so requests reach only the stand-in."""
    for variable in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "OPENAI_API_VERSION",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(variable, raising=False)


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "responses.sqlite"


@pytest.fixture
def cache(cache_path: Path):
    cache = ResponseCache(cache_path)
    yield cache
    cache.close()


def generator(server: StandInServer, cache: ResponseCache | None, model: str = EXTRACTOR, **settings: Any):
    arguments = dict(
        api_key=API_KEY,
        base_url=f"{server.url}/v1",
        max_tokens=512,
        max_retries=2,
        backoff_base=0.01,
        backoff_max=0.02,
        timeout=5.0,
        show_progress=False,
    )
    arguments.update(settings)
    return make_generator("openai", model, cache, **arguments)


def labelers(server: StandInServer, cache: ResponseCache | None) -> list:
    return [generator(server, cache, LABELER_A, max_tokens=8), generator(server, cache, LABELER_B, max_tokens=8)]


def notes_frame(note_ids: list[str] | None = None) -> pd.DataFrame:
    note_ids = list(NOTES) if note_ids is None else note_ids
    return pd.DataFrame(
        {
            "note_id": note_ids,
            "subject_id": [int(note_id.split("-")[0]) for note_id in note_ids],
            "hadm_id": [20000000 + number for number, _ in enumerate(note_ids)],
            "note_type": "DS",
            "note_seq": 1,
            "charttime": "2180-07-23 00:00:00",
            "storetime": "2180-07-23 18:21:00",
            "text": [NOTES.get(note_id, f"Invented note {note_id}: no treatment outcomes.") for note_id in note_ids],
        }
    )


def write_discharge(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, compression="gzip")
    return path


def many_notes(count: int) -> pd.DataFrame:
    note_ids = [f"{10000100 + number}-DS-{number % 3 + 1}" for number in range(count)]
    return notes_frame(note_ids)


# Reading and sampling


def test_read_returns_seeded_sample(tmp_path: Path) -> None:
    path = write_discharge(tmp_path / "discharge.csv.gz", many_notes(12))

    sample = read_discharge_notes(path, n_notes=5, seed=7)

    assert list(sample.columns) == list(NOTE_COLUMNS)
    assert len(sample) == 5
    assert sample["note_id"].is_monotonic_increasing
    assert set(sample["note_id"]) <= set(many_notes(12)["note_id"])
    assert str(sample["subject_id"].dtype) == "Int64"
    assert str(sample["hadm_id"].dtype) == "Int64"
    assert pd.api.types.is_datetime64_any_dtype(sample["charttime"])
    assert sample.attrs["notes_read"] == 12
    assert sample.attrs["notes_without_text"] == 0


def test_sample_is_the_lowest_priorities(tmp_path: Path) -> None:
    frame = many_notes(12)
    path = write_discharge(tmp_path / "discharge.csv.gz", frame)

    sample = read_discharge_notes(path, n_notes=4, seed=3)

    order = np.argsort(note_priority(frame["note_id"], seed=3), kind="stable")
    assert set(sample["note_id"]) == set(frame["note_id"].iloc[order[:4]])


def test_sample_ignores_row_order_and_chunks(tmp_path: Path) -> None:
    frame = many_notes(12)
    first = read_discharge_notes(write_discharge(tmp_path / "a" / "discharge.csv.gz", frame), n_notes=5, seed=7)
    shuffled = frame.sample(frac=1.0, random_state=0)
    second = read_discharge_notes(write_discharge(tmp_path / "b" / "discharge.csv.gz", shuffled), n_notes=5, seed=7, chunk_rows=3)
    in_memory = sample_notes(frame, n_notes=5, seed=7)

    assert list(second["note_id"]) == list(first["note_id"])
    assert list(in_memory["note_id"]) == list(first["note_id"])


def test_sample_changes_with_seed(tmp_path: Path) -> None:
    path = write_discharge(tmp_path / "discharge.csv.gz", many_notes(12))

    seven = read_discharge_notes(path, n_notes=5, seed=7)
    eight = read_discharge_notes(path, n_notes=5, seed=8)

    assert list(seven["note_id"]) != list(eight["note_id"])


def test_read_keeps_all_when_too_few(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_discharge(tmp_path / "discharge.csv.gz", many_notes(6))

    with caplog.at_level(logging.WARNING, logger="l2d_utils.mimic"):
        sample = read_discharge_notes(path, n_notes=50)

    assert len(sample) == 6
    assert "only 6" in caplog.text
    assert len(read_discharge_notes(path, n_notes=None)) == 6


def test_read_skips_empty_text(tmp_path: Path) -> None:
    frame = many_notes(6)
    frame.loc[[1, 4], "text"] = ["", "   "]
    path = write_discharge(tmp_path / "discharge.csv.gz", frame)

    sample = read_discharge_notes(path, n_notes=None, chunk_rows=2)
    in_memory = sample_notes(frame, n_notes=None)

    assert len(sample) == 4
    assert sample.attrs["notes_read"] == 4
    assert sample.attrs["notes_without_text"] == 2
    assert not set(frame["note_id"].iloc[[1, 4]]) & set(sample["note_id"])
    assert list(in_memory["note_id"]) == list(sample["note_id"])
    assert in_memory.attrs["notes_without_text"] == 2


def test_read_accepts_folder(tmp_path: Path) -> None:
    path = write_discharge(tmp_path / "mimic-iv-note" / "note" / "discharge.csv.gz", many_notes(4))

    assert find_discharge_file(tmp_path / "mimic-iv-note") == path
    assert find_discharge_file(path.parent) == path
    assert len(read_discharge_notes(tmp_path / "mimic-iv-note", n_notes=2)) == 2


def test_read_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "discharge.csv.gz"

    with pytest.raises(FileNotFoundError) as raised:
        read_discharge_notes(missing)

    assert str(missing) in str(raised.value)
    assert "physionet.org" in str(raised.value)


def test_read_folder_without_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="contains no discharge.csv.gz"):
        read_discharge_notes(tmp_path)


def test_read_missing_column(tmp_path: Path) -> None:
    path = write_discharge(tmp_path / "discharge.csv.gz", many_notes(4).drop(columns=["text", "hadm_id"]))

    with pytest.raises(ValueError) as raised:
        read_discharge_notes(path)

    assert "['hadm_id', 'text']" in str(raised.value)
    assert "note_type" in str(raised.value)


def test_read_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "discharge.csv.gz"
    path.write_bytes(b"this is not gzip data\n")

    with pytest.raises(ValueError, match="not a readable CSV"):
        read_discharge_notes(path)


def test_read_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(many_notes(40).to_csv(index=False).encode())
    path = tmp_path / "discharge.csv.gz"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match="truncated"):
        read_discharge_notes(path, chunk_rows=5)


def test_read_repeated_note_id(tmp_path: Path) -> None:
    frame = many_notes(4)
    frame.loc[3, "note_id"] = frame.loc[0, "note_id"]
    path = write_discharge(tmp_path / "discharge.csv.gz", frame)

    with pytest.raises(ValueError, match="more than once"):
        read_discharge_notes(path)


@pytest.mark.parametrize("n_notes", [0, -1, 1.5, True])
def test_read_rejects_invalid_sample_size(tmp_path: Path, n_notes: Any) -> None:
    path = write_discharge(tmp_path / "discharge.csv.gz", many_notes(4))

    with pytest.raises(ValueError, match="n_notes"):
        read_discharge_notes(path, n_notes=n_notes)


def test_sample_notes_rejects_missing_id() -> None:
    frame = many_notes(4)
    frame.loc[2, "note_id"] = None

    with pytest.raises(ValueError, match="no note_id"):
        sample_notes(frame, n_notes=2)


# Validating extraction replies


def test_parse_valid_array() -> None:
    reply = json.dumps([CEFAZOLIN, {**AMOXICILLIN, "confidence": "high"}])

    triplets = parse_triplets(reply)

    assert [item.drug for item in triplets] == ["cefazolin", "amoxicillin"]
    assert triplets[1].outcome == "ADVERSE"
    assert triplets[0].evidence == CEFAZOLIN["evidence"]


def test_parse_empty_array() -> None:
    assert parse_triplets(" [] ") == []


def test_parse_code_fenced_json() -> None:
    reply = "Here is the list:\n```json\n" + json.dumps([ATORVASTATIN]) + "\n```\nLet me know."

    assert parse_triplets(reply)[0].drug == "atorvastatin"


def test_parse_object_with_triplets_field() -> None:
    assert len(parse_triplets(json.dumps({"triplets": [CEFAZOLIN, METFORMIN]}))) == 2


def test_parse_removes_think_block() -> None:
    reply = "<think>EFFECTIVE or NEUTRAL? [maybe]</think>" + json.dumps([METFORMIN])

    assert parse_triplets(reply)[0].outcome == "NEUTRAL"


def test_parse_normalizes_case_and_alias() -> None:
    item = {"drug": " Colchicine ", "disease": "gout flare", "outcome": "effective", "evidence": "The gout flare improved with colchicine."}

    parsed = parse_triplets(json.dumps([item]))[0]

    assert parsed.drug == "Colchicine"
    assert parsed.condition == "gout flare"
    assert parsed.outcome == "EFFECTIVE"


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("Sure, here are the triplets: cefazolin for cellulitis.", "not valid JSON"),
        ('[{"drug": "a", "condition": "b", "outcome": "EFFECTIVE", "evidence": "c"}', "not valid JSON"),
        ('{"drug": "a"}', 'without a "triplets" array'),
        ('"cefazolin"', "JSON str"),
        ("[1]", "element 0 is a int"),
        ('[{"drug": "a", "outcome": "EFFECTIVE", "evidence": "c"}]', "no field condition"),
        ('[{"drug": " ", "condition": "b", "outcome": "EFFECTIVE", "evidence": "c"}]', "field drug is empty"),
        ('[{"drug": 5, "condition": "b", "outcome": "EFFECTIVE", "evidence": "c"}]', "field drug is a int"),
        ('[{"drug": "a", "condition": "b", "outcome": "IMPROVED", "evidence": "c"}]', "'IMPROVED' is not one of"),
        ('[{"drug": "a", "condition": "b", "outcome": "EFFECTIVE."}]', "is not one of"),
    ],
)
def test_parse_rejects_malformed(reply: str, problem: str) -> None:
    with pytest.raises(MalformedReplyError) as raised:
        parse_triplets(reply)

    assert problem in str(raised.value)


def test_parse_lists_several_problems() -> None:
    reply = json.dumps([{"drug": "a"}, {**CEFAZOLIN, "outcome": "GOOD"}])

    with pytest.raises(MalformedReplyError) as raised:
        parse_triplets(reply)

    assert "element 0 has no field condition" in str(raised.value)
    assert "element 1 outcome 'GOOD'" in str(raised.value)


def test_grounding_ignores_case_and_whitespace() -> None:
    note = "The gout  flare\nimproved with Colchicine."

    assert is_grounded("the gout flare improved with colchicine.", note)
    assert not is_grounded("The gout flare resolved with colchicine.", note)


# Extraction through the stand-in server


def test_extraction_valid_replies(server, cache) -> None:
    frame, counts = extract_triplets(notes_frame(), generator(server, cache))

    assert list(frame.columns) == list(TRIPLET_COLUMNS)
    assert list(frame["drug"]) == ["cefazolin", "amoxicillin", "atorvastatin", "colchicine", "metformin"]
    assert list(frame["extracted_outcome"]) == ["EFFECTIVE", "ADVERSE", "NEUTRAL", "EFFECTIVE", "NEUTRAL"]
    assert counts.requests == 5
    assert counts.uncached_requests == 5
    assert counts.malformed_replies == 0
    assert counts.failed_chunks == 0
    assert counts.triplets == 5
    assert server.count() == 5


def test_extraction_request_format(server, cache) -> None:
    extract_triplets(notes_frame(["10000003-DS-1"]), generator(server, cache))
    messages = server.requests[0].messages

    assert messages == EXTRACTION_PROMPT.messages(NOTES["10000003-DS-1"])
    assert server.requests[0].model == EXTRACTOR


def test_extraction_retries_malformed_once(server, cache) -> None:
    server.script.extraction["10000002-DS-1"] = ["Sure! The patient had hives from amoxicillin.", json.dumps([AMOXICILLIN])]

    frame, counts = extract_triplets(notes_frame(), generator(server, cache))

    requests = server.extraction_requests_for("10000002-DS-1")
    assert len(requests) == 2
    assert requests[1].messages[: len(requests[0].messages)] == requests[0].messages
    assert requests[1].messages[-2] == {"role": "assistant", "content": "Sure! The patient had hives from amoxicillin."}
    assert requests[1].last_user_message.startswith(RETRY_PREFIX)
    assert "not valid JSON" in requests[1].last_user_message
    assert counts.malformed_replies == 1
    assert counts.failed_chunks == 0
    assert counts.requests == 6
    assert "amoxicillin" in set(frame["drug"])


def test_extraction_retries_wrong_outcome(server, cache) -> None:
    server.script.extraction["10000003-DS-1"] = [json.dumps([{**ATORVASTATIN, "outcome": "UNCHANGED"}]), json.dumps([ATORVASTATIN])]

    frame, counts = extract_triplets(notes_frame(), generator(server, cache))

    assert counts.malformed_replies == 1
    assert "'UNCHANGED' is not one of" in server.extraction_requests_for("10000003-DS-1")[1].last_user_message
    assert frame.loc[frame["drug"] == "atorvastatin", "extracted_outcome"].tolist() == ["NEUTRAL"]


def test_extraction_malformed_twice_is_skipped(server, cache) -> None:
    server.script.extraction["10000004-DS-1"] = ["not json", '[{"drug": "colchicine"}]']

    frame, counts = extract_triplets(notes_frame(), generator(server, cache))

    assert len(server.extraction_requests_for("10000004-DS-1")) == 2
    assert counts.malformed_replies == 1
    assert counts.failed_chunks == 1
    assert counts.failed_note_ids == ("10000004-DS-1",)
    assert "10000004-DS-1" not in set(frame["note_id"])
    assert counts.triplets == 3


def test_extraction_empty_reply_retried_without_assistant_turn(server, cache) -> None:
    server.script.extraction["10000005-DS-1"] = ["", "[]"]

    _, counts = extract_triplets(notes_frame(["10000005-DS-1"]), generator(server, cache))

    retry = server.extraction_requests_for("10000005-DS-1")[1]
    assert retry.messages[-2]["role"] == "user"
    assert "empty" in retry.last_user_message
    assert counts.malformed_replies == 1
    assert counts.failed_chunks == 0


def test_extraction_code_fence_needs_no_retry(server, cache) -> None:
    server.script.extraction["10000001-DS-1"] = ["```json\n" + json.dumps([CEFAZOLIN]) + "\n```"]

    frame, counts = extract_triplets(notes_frame(), generator(server, cache))

    assert counts.malformed_replies == 0
    assert len(server.extraction_requests_for("10000001-DS-1")) == 1
    assert "cefazolin" in set(frame["drug"])


def test_extraction_drops_ungrounded_and_duplicates(server, cache) -> None:
    invented_evidence = triplet("cefazolin", "cellulitis", "EFFECTIVE", "Cellulitis resolved completely on cefazolin.")
    server.script.extraction["10000001-DS-1"] = [json.dumps([CEFAZOLIN, invented_evidence, {**CEFAZOLIN, "drug": "Cefazolin"}])]

    frame, counts = extract_triplets(notes_frame(["10000001-DS-1"]), generator(server, cache))

    assert counts.ungrounded_triplets == 1
    assert counts.duplicate_triplets == 1
    assert list(frame["drug"]) == ["cefazolin"]


def test_extraction_keeps_ungrounded_when_allowed(server, cache) -> None:
    invented_evidence = triplet("cefazolin", "cellulitis", "EFFECTIVE", "Cellulitis resolved completely on cefazolin.")
    server.script.extraction["10000001-DS-1"] = [json.dumps([invented_evidence])]

    frame, counts = extract_triplets(notes_frame(["10000001-DS-1"]), generator(server, cache), require_grounded_evidence=False)

    assert counts.ungrounded_triplets == 0
    assert len(frame) == 1


def test_extraction_sends_one_request_per_chunk(server, cache) -> None:
    frame, counts = extract_triplets(notes_frame(["10000004-DS-1"]), generator(server, cache), max_chunk_chars=70)

    assert counts.chunks == 2
    assert counts.requests == 2
    assert sorted(request.last_user_message for request in server.requests) == [
        "Brief Hospital Course:\nThe gout flare improved with colchicine.",
        "Metformin was continued for type 2 diabetes.",
    ]
    assert list(frame["chunk_index"]) == [0, 1]


def test_extraction_requires_text_column() -> None:
    with pytest.raises(ValueError, match=r"\['text'\]"):
        extract_triplets(notes_frame().drop(columns="text"), None)  # type: ignore[arg-type]


def test_generation_retries_server_error(server, cache) -> None:
    server.script.statuses = [503]

    replies = generator(server, cache).generate([GenerationRequest.from_prompt(EXTRACTION_PROMPT, NOTES["10000003-DS-1"])])

    assert server.count() == 2
    assert parse_triplets(replies[0].text)[0].drug == "atorvastatin"
    assert replies[0].prompt_tokens == 50


def test_generation_through_azure(server, cache) -> None:
    azure = make_generator(
        "azure",
        "outcome-extractor",
        cache,
        api_key=API_KEY,
        azure_endpoint=server.url,
        api_version="2024-10-21",
        max_tokens=256,
        show_progress=False,
    )

    frame, _ = extract_triplets(notes_frame(["10000002-DS-1"]), azure)

    assert server.requests[0].path == "/openai/deployments/outcome-extractor/chat/completions"
    assert list(frame["drug"]) == ["amoxicillin"]
    assert azure.name == "azure/outcome-extractor"


def test_generation_key_differs_from_other_model(server, cache) -> None:
    request = GenerationRequest.from_prompt(EXTRACTION_PROMPT, NOTES["10000003-DS-1"])

    assert generator(server, cache).cache_key(request) != generator(server, cache, model="other").cache_key(request)
    assert generator(server, cache).cache_key(request) != generator(server, cache, max_tokens=64).cache_key(request)


def test_local_generator_serves_cache_without_loading(cache) -> None:
    local = make_generator("local", "packaged:any-model", cache, max_tokens=64)
    request = GenerationRequest.from_prompt(EXTRACTION_PROMPT, NOTES["10000003-DS-1"])
    stored = CachedResponse(json.dumps([ATORVASTATIN]), -1, None, 300, 40, 1200.0, None, time.time())
    cache.put(local.cache_key(request), stored, local.provider, local.model, request.prompt_id)

    replies = local.generate([request])

    assert replies[0].cached
    assert parse_triplets(replies[0].text)[0].drug == "atorvastatin"
    assert local._network is None
    assert local.parameters == {"method": "greedy", "max_new_tokens": 64, "dtype": "bfloat16"}


def test_make_generator_rejects_unknown_backend() -> None:
    with pytest.raises(ValueError, match="Unknown LLM backend 'anthropic'"):
        make_generator("anthropic", "model", None)
    with pytest.raises(ValueError, match="max_new_tokens"):
        make_generator("local", "model", None, max_tokens=0)


def test_chat_prompt_version_changes_identifier() -> None:
    changed = ChatPrompt(EXTRACTION_PROMPT.name, "2", EXTRACTION_PROMPT.system, EXTRACTION_PROMPT.examples)

    assert changed.identifier != EXTRACTION_PROMPT.identifier
    assert EXTRACTION_PROMPT.identifier.startswith("mimic-triplet-extraction:1:")


def test_prompt_examples_are_valid() -> None:
    for text, reply in EXTRACTION_PROMPT.examples:
        for item in parse_triplets(reply):
            assert is_grounded(item.evidence, text)
    assert {reply for _, reply in LABELING_PROMPT.examples} == set(OUTCOME_CLASSES)


# Consensus labels


def consensus_input() -> pd.DataFrame:
    return pd.DataFrame([CEFAZOLIN, AMOXICILLIN, ATORVASTATIN, COLCHICINE]).rename(columns={"outcome": "extracted_outcome"})


def test_consensus_agree_disagree_unparseable(server, cache) -> None:
    server.script.labels = {
        (LABELER_B, "atorvastatin"): "ADVERSE",
        (LABELER_B, "colchicine"): "Not sure: EFFECTIVE or NEUTRAL.",
    }

    labeled, counts = consensus_labels(consensus_input(), labelers(server, cache))

    assert list(labeled["labeler1"]) == [2, 1, 0, 2]
    assert list(labeled["labeler2"]) == [2, 1, 1, -1]
    assert list(labeled["agreed"]) == [True, True, False, False]
    assert list(labeled["label"]) == [2, 1, -1, -1]
    assert counts.agreed == 2
    assert counts.disagreed == 1
    assert counts.with_unparseable == 1
    assert counts.unparseable_labels == (0, 1)
    assert counts.agreement_rate == 0.5
    assert counts.labelers == (f"openai/{LABELER_A}", f"openai/{LABELER_B}")
    assert server.count() == 8


def test_consensus_both_unparseable_is_disagreement(server, cache) -> None:
    server.script.labels = {(LABELER_A, "cefazolin"): "unknown", (LABELER_B, "cefazolin"): "unknown"}

    labeled, counts = consensus_labels(consensus_input().head(1), labelers(server, cache))

    assert not labeled["agreed"].iloc[0]
    assert counts.unparseable_labels == (1, 1)
    assert counts.agreed == 0


def test_consensus_request_shows_triplet(server, cache) -> None:
    consensus_labels(consensus_input().head(1), labelers(server, cache))

    assert server.requests[0].last_user_message == (
        f"Drug: cefazolin\nCondition: cellulitis\nEvidence: {CEFAZOLIN['evidence']}"
    )
    assert server.requests[0].messages[0]["content"] == LABELING_PROMPT.system


def test_consensus_rejects_same_labeler(server, cache) -> None:
    same = [generator(server, cache, LABELER_A), generator(server, cache, LABELER_A)]

    with pytest.raises(ValueError, match="same provider, model and parameters"):
        consensus_labels(consensus_input(), same)
    with pytest.raises(ValueError, match="at least two"):
        consensus_labels(consensus_input(), same[:1])
    assert server.count() == 0


def test_consensus_warns_on_same_model(server, cache, caplog: pytest.LogCaptureFixture) -> None:
    same_model = [generator(server, cache, LABELER_A, max_tokens=8), generator(server, cache, LABELER_A, max_tokens=16)]

    with caplog.at_level(logging.WARNING, logger="l2d_utils.mimic"):
        _, counts = consensus_labels(consensus_input(), same_model)

    assert "same model with different parameters" in caplog.text
    assert counts.agreed == 4


def test_consensus_empty_input(server, cache) -> None:
    labeled, counts = consensus_labels(consensus_input().head(0), labelers(server, cache))

    assert len(labeled) == 0
    assert counts.triplets == 0
    assert np.isnan(counts.agreement_rate)


# Classifier input and the split by note


def test_encoder_text_marks_drug_and_condition() -> None:
    text = encoder_text("cefazolin", "cellulitis", "Left leg Cellulitis was treated with cefazolin.")

    assert text == "Left leg [COND] Cellulitis [/COND] was treated with [DRUG] cefazolin [/DRUG]."


def test_encoder_text_prepends_missing_names() -> None:
    text = encoder_text("amoxicillin", "urticaria", "She developed hives, so it was stopped.")

    assert text == "[DRUG] amoxicillin [/DRUG] [COND] urticaria [/COND] She developed hives, so it was stopped."


def test_encoder_text_matches_whole_words() -> None:
    text = encoder_text("ace", "pain", "We replace the dressing; ACE inhibitor held for pain.")

    assert text == "We replace the dressing; [DRUG] ACE [/DRUG] inhibitor held for [COND] pain [/COND]."


def test_encoder_text_avoids_overlap() -> None:
    text = encoder_text("heparin", "heparin-induced thrombocytopenia", "Heparin was stopped.")

    assert text == "[COND] heparin-induced thrombocytopenia [/COND] [DRUG] Heparin [/DRUG] was stopped."


def split_input(note_count: int) -> pd.DataFrame:
    rows = []
    for number in range(note_count):
        for position in range(number % 3 + 1):
            rows.append({"note_id": f"note-{number:03d}", "drug": f"drug-{position}"})
    return pd.DataFrame(rows)


def test_split_by_note_keeps_notes_whole() -> None:
    frame = split_input(50)

    split = split_by_note(frame, seed=42)

    assert (split.groupby("note_id")["split"].nunique() == 1).all()
    notes_per_split = split.drop_duplicates("note_id")["split"].value_counts()
    assert notes_per_split.to_dict() == {"train": 40, "validation": 5, "test": 5}
    assert list(split["note_id"]) == list(frame["note_id"])


def test_split_by_note_matches_outcome_split() -> None:
    frame = split_input(30)

    split = split_by_note(frame, seed=42)
    reference = outcome_split(frame.rename(columns={"note_id": "post_id"}), seed=42)

    assert list(split["split"]) == list(reference["split"])
    assert list(split_by_note(frame, seed=42)["split"]) == list(split["split"])
    assert list(split_by_note(frame, seed=7)["split"]) != list(split["split"])


def test_split_by_note_needs_three_notes() -> None:
    with pytest.raises(ValueError, match="Found 2 notes"):
        split_by_note(split_input(2))


def test_split_note_chunks() -> None:
    text = "A" * 10 + "\n\n" + "B" * 5 + "\n" + "C" * 25

    chunks = split_note(text, max_chars=12)

    assert chunks == ["A" * 10, "B" * 5, "C" * 12, "C" * 12, "C"]
    assert all(len(chunk) <= 12 for chunk in chunks)
    assert split_note(text) == [text]
    assert split_note("  \n ") == []
    with pytest.raises(ValueError, match="max_chars"):
        split_note(text, max_chars=0)


# The whole pipeline, resuming and replay


def pipeline(server, cache, path, **settings: Any):
    return build_outcome_dataset(path, generator(server, cache, **settings), labelers(server, cache), n_notes=None)


@pytest.fixture
def discharge_file(tmp_path: Path) -> Path:
    return write_discharge(tmp_path / "discharge.csv.gz", notes_frame())


def test_pipeline_builds_dataset(server, cache, discharge_file) -> None:
    server.script.labels = {(LABELER_B, "metformin"): "EFFECTIVE"}

    dataset = pipeline(server, cache, discharge_file)
    report = dataset.report

    assert list(dataset.triplets.columns) == list(DATASET_COLUMNS)
    assert list(dataset.triplets["drug"]) == ["cefazolin", "amoxicillin", "atorvastatin", "colchicine"]
    assert list(dataset.triplets["label"]) == [2, 1, 0, 2]
    assert dataset.triplets["text"].iloc[0] == (
        "Left leg [COND] cellulitis [/COND] was treated with [DRUG] cefazolin [/DRUG], and the redness resolved."
    )
    assert (dataset.triplets.groupby("note_id")["split"].nunique() == 1).all()
    assert len(dataset.candidates) == 5
    assert report.notes_read == 5
    assert report.notes_sampled == 5
    assert report.extraction_requests == 5
    assert report.extraction_calls == 5
    assert report.candidate_triplets == 5
    assert report.agreed_triplets == 4
    assert report.agreement_rate == 0.8
    assert report.extractor_agreement == 1.0
    assert report.labeling_calls == 10
    assert report.unparseable_labels == (0, 0)
    assert sum(report.split_triplets.values()) == 4
    assert sum(report.split_notes.values()) == 4
    assert report.as_series()["agreed_triplets"] == 4


def test_pipeline_from_frame_matches_file(server, cache, discharge_file) -> None:
    from_file = pipeline(server, cache, discharge_file)
    from_frame = build_outcome_dataset(notes_frame(), generator(server, cache), labelers(server, cache), n_notes=None)

    pd.testing.assert_frame_equal(from_frame.triplets, from_file.triplets)


def test_rerun_sends_no_requests(server, cache_path, discharge_file) -> None:
    server.script.extraction["10000002-DS-1"] = ["no JSON here", json.dumps([AMOXICILLIN])]
    server.script.extraction["10000005-DS-1"] = ["nothing", "still nothing"]
    first_cache = ResponseCache(cache_path)
    first = pipeline(server, first_cache, discharge_file)
    first_cache.close()
    requests_after_first_run = server.count()

    second_cache = ResponseCache(cache_path)
    second = pipeline(server, second_cache, discharge_file)
    second_cache.close()

    assert server.count() == requests_after_first_run
    assert second.report.extraction_calls == 0
    assert second.report.labeling_calls == 0
    assert second.report.malformed_replies == first.report.malformed_replies == 2
    assert second.report.failed_extractions == first.report.failed_extractions == 1
    pd.testing.assert_frame_equal(second.triplets, first.triplets)


def test_interrupted_run_resumes(server, cache_path, discharge_file) -> None:
    server.script.fail_once = {"10000003-DS-1": 400}
    interrupted_cache = ResponseCache(cache_path)
    with pytest.raises(LLMRequestError):
        pipeline(server, interrupted_cache, discharge_file, max_concurrency=1)
    interrupted_cache.close()
    assert server.count() == 3  # The first two notes, then the failing third.

    resumed_cache = ResponseCache(cache_path)
    dataset = pipeline(server, resumed_cache, discharge_file, max_concurrency=1)
    resumed_cache.close()

    assert len(server.extraction_requests_for("10000001-DS-1")) == 1
    assert len(server.extraction_requests_for("10000002-DS-1")) == 1
    assert len(server.extraction_requests_for("10000003-DS-1")) == 2
    assert dataset.report.extraction_calls == 3
    assert dataset.report.candidate_triplets == 5


def test_replay_only_miss_raises(server, cache_path, discharge_file) -> None:
    cache = ResponseCache(cache_path, replay_only=True)
    try:
        with pytest.raises(CacheMissError):
            pipeline(server, cache, discharge_file)
    finally:
        cache.close()

    assert server.count() == 0


def test_replay_only_after_full_run(server, cache_path, discharge_file) -> None:
    writer = ResponseCache(cache_path)
    first = pipeline(server, writer, discharge_file)
    writer.close()
    requests_after_first_run = server.count()

    replay = ResponseCache(cache_path, replay_only=True)
    second = pipeline(server, replay, discharge_file)
    replay.close()

    assert server.count() == requests_after_first_run
    pd.testing.assert_frame_equal(second.triplets, first.triplets)


def test_pipeline_checks_labelers_before_requests(server, cache, discharge_file) -> None:
    same = [generator(server, cache, LABELER_A), generator(server, cache, LABELER_A)]

    with pytest.raises(ValueError, match="same provider"):
        build_outcome_dataset(discharge_file, generator(server, cache), same, n_notes=None)

    assert server.count() == 0


# End to end with the packaged local LLM


@pytest.mark.slow
def test_local_backend_end_to_end(server, tmp_path: Path) -> None:
    """Extract with the packaged LLM, label with it and one stand-in labeler, then rerun from the cache."""
    from l2d_utils.config import PACKAGED_QWEN

    notes = notes_frame(["10000001-DS-1", "10000002-DS-1", "10000004-DS-1"])
    cache = ResponseCache(tmp_path / "local.sqlite")
    extractor = make_generator("local", PACKAGED_QWEN, cache, max_tokens=384)
    local_labeler = make_generator("local", PACKAGED_QWEN, cache, max_tokens=8)

    frame, counts = extract_triplets(notes, extractor)
    local_labeler._tokenizer, local_labeler._network = extractor._tokenizer, extractor._network  # Load the model once.
    labeled, consensus = consensus_labels(frame, [local_labeler, generator(server, cache, LABELER_B, max_tokens=8)])

    assert counts.chunks == 3
    assert counts.requests == 3 + counts.malformed_replies
    assert counts.uncached_requests == counts.requests
    assert counts.triplets == len(frame)
    assert set(frame["note_id"]) <= set(notes["note_id"])
    assert set(frame["extracted_outcome"]) <= set(OUTCOME_CLASSES)
    assert all(is_grounded(evidence, text) for evidence, text in zip(frame["evidence"], frame["note_id"].map(NOTES)))
    assert set(labeled["labeler1"]) <= {-1, 0, 1, 2}
    assert consensus.agreed + consensus.disagreed + consensus.with_unparseable == consensus.triplets

    rerun, rerun_counts = extract_triplets(notes, make_generator("local", PACKAGED_QWEN, cache, max_tokens=384))
    cache.close()

    assert rerun_counts.uncached_requests == 0
    pd.testing.assert_frame_equal(rerun, frame)


# The outcome chapters' entry point: outcome_splits with L2D_MIMIC_NOTES set


def mimic_profile(**overrides: Any):
    from l2d_utils.config import LLMSettings, get_profile

    labeler_pair = (
        LLMSettings(backend="openai", model=LABELER_A, max_tokens=8),
        LLMSettings(backend="openai", model=LABELER_B, max_tokens=8),
    )
    return get_profile("smoke", **{"labelers": labeler_pair, "mimic_notes": 5, **overrides})


def test_outcome_splits_reads_mimic_notes(server, discharge_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from l2d_utils.pipeline import mimic_report, outcome_source, outcome_splits

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.url}/v1")
    monkeypatch.setenv("L2D_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("L2D_MIMIC_NOTES", str(discharge_file))
    server.script.labels = {(LABELER_B, "metformin"): "EFFECTIVE"}
    profile = mimic_profile()

    assert outcome_source() == "mimic"
    frame = outcome_splits(profile)
    sent = server.count()
    again = outcome_splits(profile)

    assert frame.attrs["source"] == "mimic"
    assert list(frame.columns) == ["row_id", "group_id", "text", "label", "split"]
    assert list(frame["label"]) == [2, 1, 0, 2]
    assert (frame.groupby("group_id")["split"].nunique() == 1).all()
    assert server.count() == sent  # the second call reads the saved triplets
    pd.testing.assert_frame_equal(again, frame)
    report = mimic_report(profile)
    assert report["agreed_triplets"] == 4
    assert report["agreement_rate"] == 0.8
    assert server.count() == sent


def test_mimic_rows_need_two_different_labelers(discharge_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from l2d_utils.config import get_profile
    from l2d_utils.pipeline import mimic_outcome_rows

    monkeypatch.setenv("L2D_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    with pytest.raises(ValueError, match="two different models"):
        mimic_outcome_rows(get_profile("laptop"), discharge_file)


def test_mimic_rows_without_notes_path_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from l2d_utils.pipeline import mimic_outcome_rows

    monkeypatch.delenv("L2D_MIMIC_NOTES", raising=False)
    with pytest.raises(FileNotFoundError, match="L2D_MIMIC_NOTES"):
        mimic_outcome_rows(mimic_profile())


# End to end: invented discharge notes -> consensus triplets -> encoder, local LLM, L2D -> Table 2

#: Drugs of the invented notes, with the outcome both stand-in labelers give them.
E2E_DRUGS = {
    "EFFECTIVE": ["cefazolin", "colchicine", "furosemide", "ondansetron", "prednisone", "levothyroxine"],
    "ADVERSE": ["amoxicillin", "vancomycin", "lisinopril", "haloperidol", "warfarin", "allopurinol"],
    "NEUTRAL": ["atorvastatin", "metformin", "omeprazole", "sertraline", "aspirin", "tamsulosin"],
}
E2E_TEMPLATES = {
    "EFFECTIVE": "The {condition} improved quickly with {drug}.",
    "ADVERSE": "She developed {condition} after starting {drug}, so it was stopped.",
    "NEUTRAL": "Home {drug} was continued for {condition}.",
}
#: A sentence that states no outcome, so the encoder cannot learn its label from the text.
E2E_VAGUE = "The patient received {drug} during the stay for {condition}."
E2E_CONDITIONS = ["cellulitis", "hives", "gout", "nausea", "edema", "delirium", "rash", "hypertension"]


def invented_notes(count: int) -> tuple[pd.DataFrame, dict[str, list[str]], dict[str, str]]:
    """Make ``count`` invented notes with two triplets each; return the notes, the extraction replies and drug labels.

    The first triplet of every other note is vague and names a drug seen nowhere
    else, so the encoder cannot learn its label and makes errors for the router to find.
    """
    note_ids = [f"{10001000 + number}-DS-1" for number in range(count)]
    drugs = [(outcome, drug) for outcome, names in E2E_DRUGS.items() for drug in names]
    labels = {drug: outcome for outcome, names in E2E_DRUGS.items() for drug in names}
    replies: dict[str, list[str]] = {}
    texts = []
    for number, note_id in enumerate(note_ids):
        found = []
        for position in range(2):
            condition = E2E_CONDITIONS[(3 * number + position) % len(E2E_CONDITIONS)]
            if position == 0 and number % 2 == 0:
                outcome, drug = OUTCOME_CLASSES[(number // 2) % 3], f"studydrug{number}"
                labels[drug] = outcome
                evidence = E2E_VAGUE.format(drug=drug, condition=condition)
            else:
                outcome, drug = drugs[(2 * number + position) % len(drugs)]
                evidence = E2E_TEMPLATES[outcome].format(drug=drug, condition=condition)
            found.append(triplet(drug, condition, outcome, evidence))
        texts.append("Brief Hospital Course:\n" + " ".join(item["evidence"] for item in found))
        replies[note_id] = [json.dumps(found)]
    frame = notes_frame(note_ids)
    frame["text"] = texts
    return frame, replies, labels


@pytest.mark.slow
def test_mimic_path_reaches_table2(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outcome chapters' code runs on MIMIC-style notes: stand-in API labelers, the local LLM as the expert."""
    from l2d_utils.analysis import held_out_l2d
    from l2d_utils.baselines import results_table
    from l2d_utils.features import feature_names
    from l2d_utils.pipeline import OUTCOME_TASK, deferral_inputs, outcome_splits, write_results

    notes, replies, labels = invented_notes(80)
    path = write_discharge(tmp_path / "discharge.csv.gz", notes)
    for note_id, text in zip(notes["note_id"], notes["text"]):
        monkeypatch.setitem(NOTES, note_id, text)  # the stand-in finds a request's note in NOTES
    server.script.extraction.update(replies)
    server.script.labels = {(model, drug): outcome for drug, outcome in labels.items() for model in (LABELER_A, LABELER_B)}
    server.script.labels[(LABELER_B, "aspirin")] = "EFFECTIVE"  # one drug on which the labelers disagree
    for variable, value in {
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": f"{server.url}/v1",
        "L2D_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "L2D_RESULTS_DIR": str(tmp_path / "results"),
        "L2D_MIMIC_NOTES": str(path),
    }.items():
        monkeypatch.setenv(variable, value)
    profile = mimic_profile(mimic_notes=80)

    splits = outcome_splits(profile)
    validation = deferral_inputs(profile, splits, rows="validation", task=OUTCOME_TASK)
    test = deferral_inputs(profile, splits, rows="test", task=OUTCOME_TASK)
    features = feature_names(3, OUTCOME_CLASSES)
    run = held_out_l2d(validation, test, features=features, folds=3, num_classes=3)
    table = results_table(
        test["label"], test["bert_label"], test["llm_label"], test["confidence"], run.defer, random_seeds=20, num_classes=3, n_resamples=200
    )
    written = write_results(table, profile, "outcome_table2")

    aspirin_rows = sum(1 for reply in replies.values() for item in json.loads(reply[0]) if item["drug"] == "aspirin")
    assert len(splits) == 160 - aspirin_rows
    assert splits.groupby("group_id")["split"].nunique().max() == 1
    assert set(validation.columns) >= {"p_neutral", "p_adverse", "p_effective", "llm_label", *features}
    assert set(test["llm_label"]) <= {-1, 0, 1, 2}
    assert np.allclose(test[["p_neutral", "p_adverse", "p_effective"]].sum(axis=1), 1.0, atol=1e-5)
    assert len(run.defer) == len(test)
    assert table["method"].iloc[-1] == "oracle"
    assert written.name == "outcome_table2.csv"
