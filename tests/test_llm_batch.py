"""Specification of the Batch API route: request files, submission, polling and loading results into the cache.

No Batch API is reachable, so the tests write output files in the documented
format themselves and use a fake client for ``files`` and ``batches``. The
backend under test points at the local stand-in server of ``test_llm_api``,
which counts every Chat Completions request it receives.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import pytest
from openai.types import Batch, BatchRequestCounts

from l2d_utils.llm.base import UNPARSEABLE, LLMBackend
from l2d_utils.llm.batch import (
    BATCH_LATENCY_MS,
    BatchFailedError,
    download_batch_results,
    load_batch_results,
    submit_batch,
    wait_for_batch,
    write_batch_requests,
)
from l2d_utils.llm.cache import ResponseCache
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT
from test_llm_api import (  # noqa: F401 because cache, isolated_environment and server are pytest fixtures
    DEPLOYMENT,
    EXPECTED_LABELS,
    SENTENCES,
    azure_backend,
    cache,
    isolated_environment,
    openai_backend,
    server,
)

# Output file helpers


def output_line(custom_id: str, reply: str | None, *, prompt_tokens: int = 150, index: int = 1) -> str:
    """Return one output line of a request that succeeded, in the documented format."""
    body = {
        "id": f"chatcmpl-batch-{index}",
        "object": "chat.completion",
        "created": 1_711_652_795,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
    }
    record = {
        "id": f"batch_req_{index}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"req_{index}", "body": body},
        "error": None,
    }
    return json.dumps(record)


def error_line(custom_id: str, index: int = 99) -> str:
    record = {
        "id": f"batch_req_{index}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."},
    }
    return json.dumps(record)


def http_error_line(custom_id: str, status_code: int = 500, index: int = 98) -> str:
    body = {"error": {"message": "The server had an error processing your request.", "type": "server_error", "code": None}}
    record = {
        "id": f"batch_req_{index}",
        "custom_id": custom_id,
        "response": {"status_code": status_code, "request_id": f"req_{index}", "body": body},
        "error": None,
    }
    return json.dumps(record)


def expected_reply(text: str) -> str:
    """Return the stand-in server's reply, so batch results and live results agree."""
    return "1" if "induced" in text.lower() else "0"


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# Fake Batch API client


class FakeFiles:
    def __init__(self, contents: Mapping[str, str] | None = None) -> None:
        self.uploads: list[dict[str, Any]] = []
        self.contents = dict(contents or {})

    def create(self, *, file, purpose: str) -> SimpleNamespace:
        self.uploads.append({"data": file.read(), "purpose": purpose})
        return SimpleNamespace(id=f"file-input-{len(self.uploads)}")

    def content(self, file_id: str) -> SimpleNamespace:
        return SimpleNamespace(text=self.contents[file_id])


class FakeBatches:
    """Batches whose status steps through ``statuses``, one per ``retrieve`` call, then stays at the last."""

    def __init__(self, statuses: Sequence[str], **fields: Any) -> None:
        self.statuses = list(statuses)
        self.fields = fields
        self.created: list[dict[str, Any]] = []
        self.retrieved: list[str] = []

    def _batch(self, batch_id: str, status: str) -> Batch:
        fields: dict[str, Any] = dict(
            id=batch_id,
            object="batch",
            endpoint="/v1/chat/completions",
            input_file_id="file-input-1",
            completion_window="24h",
            created_at=1_711_652_000,
            status=status,
            request_counts=BatchRequestCounts(completed=0, failed=0, total=4),
        )
        fields.update(self.fields)
        return Batch(**fields)

    def create(self, **arguments: Any) -> Batch:
        self.created.append(arguments)
        return self._batch("batch_abc123", "validating")

    def retrieve(self, batch_id: str) -> Batch:
        self.retrieved.append(batch_id)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return self._batch(batch_id, status)


def fake_client(statuses: Sequence[str] = ("completed",), contents: Mapping[str, str] | None = None, **batch_fields: Any):
    return SimpleNamespace(files=FakeFiles(contents), batches=FakeBatches(statuses, **batch_fields))


# write_batch_requests


def test_request_lines_documented_format(server, cache, tmp_path) -> None:
    backend = openai_backend(server, cache)
    path = tmp_path / "requests.jsonl"

    write_batch_requests(backend, SENTENCES, ADE_PAPER_PROMPT, path)
    lines = read_lines(path)

    assert len(lines) == len(SENTENCES)
    for text, line in zip(SENTENCES, lines):
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert line["method"] == "POST"
        assert line["url"] == "/v1/chat/completions"
        assert line["body"] == {
            "model": "gpt-4o-mini",
            "messages": ADE_PAPER_PROMPT.messages(text),
            "max_tokens": 16,
            "temperature": 0.0,
        }


def test_custom_ids_are_cache_keys(server, cache, tmp_path) -> None:
    backend = openai_backend(server, cache)
    path = tmp_path / "requests.jsonl"

    custom_ids = write_batch_requests(backend, SENTENCES, ADE_PAPER_PROMPT, path)

    assert custom_ids == [backend.cache_key(text, ADE_PAPER_PROMPT) for text in SENTENCES]
    assert [line["custom_id"] for line in read_lines(path)] == custom_ids
    assert len(set(custom_ids)) == len(SENTENCES)


@pytest.mark.parametrize(
    ("model", "settings"),
    [
        ("gpt-4o-mini", {}),
        ("gpt-4o-mini", {"seed": 7, "temperature": 0.3, "max_tokens": 4}),
        ("gpt-5-nano", {"temperature": None, "reasoning_effort": "minimal", "max_tokens": 256}),
    ],
)
def test_request_body_equals_live_request(server, cache, tmp_path, model: str, settings: dict[str, Any]) -> None:
    backend = openai_backend(server, None, model=model, **settings)
    backend.classify(SENTENCES[:1], ADE_PAPER_PROMPT)
    live_body = server.state.requests[0].body

    write_batch_requests(openai_backend(server, cache, model=model, **settings), SENTENCES[:1], ADE_PAPER_PROMPT, tmp_path / "r.jsonl")

    assert read_lines(tmp_path / "r.jsonl")[0]["body"] == live_body


def test_azure_request_uses_deployment(server, cache, tmp_path) -> None:
    backend = azure_backend(server, cache)

    custom_ids = write_batch_requests(backend, SENTENCES[:1], ADE_PAPER_PROMPT, tmp_path / "r.jsonl")

    line = read_lines(tmp_path / "r.jsonl")[0]
    assert line["body"]["model"] == DEPLOYMENT
    assert custom_ids == [backend.cache_key(SENTENCES[0], ADE_PAPER_PROMPT)]


def test_cached_sentences_skipped(server, cache, tmp_path) -> None:
    openai_backend(server, cache).classify(SENTENCES[:2], ADE_PAPER_PROMPT)
    backend = openai_backend(server, cache)

    custom_ids = write_batch_requests(backend, SENTENCES, ADE_PAPER_PROMPT, tmp_path / "r.jsonl")

    assert custom_ids == [backend.cache_key(text, ADE_PAPER_PROMPT) for text in SENTENCES[2:]]
    assert len(read_lines(tmp_path / "r.jsonl")) == 2


def test_duplicate_sentences_written_once(server, cache, tmp_path) -> None:
    backend = openai_backend(server, cache)

    custom_ids = write_batch_requests(backend, [SENTENCES[0], SENTENCES[1], SENTENCES[0]], ADE_PAPER_PROMPT, tmp_path / "r.jsonl")

    assert len(custom_ids) == 2
    assert len(read_lines(tmp_path / "r.jsonl")) == 2


def test_all_cached_writes_empty_file(server, cache, tmp_path) -> None:
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)
    path = tmp_path / "r.jsonl"

    custom_ids = write_batch_requests(openai_backend(server, cache), SENTENCES, ADE_PAPER_PROMPT, path)

    assert custom_ids == []
    assert path.read_text() == ""


def test_replay_only_cache_skips_without_raising(server, tmp_path) -> None:
    writer = ResponseCache(tmp_path / "responses.sqlite")
    openai_backend(server, writer).classify(SENTENCES[:1], ADE_PAPER_PROMPT)
    writer.close()
    replay_cache = ResponseCache(tmp_path / "responses.sqlite", replay_only=True)
    try:
        custom_ids = write_batch_requests(openai_backend(server, replay_cache), SENTENCES, ADE_PAPER_PROMPT, tmp_path / "r.jsonl")
    finally:
        replay_cache.close()

    assert len(custom_ids) == len(SENTENCES) - 1


class ScoringBackend(LLMBackend):
    """A backend that is not a Chat Completions backend."""

    parameters = {}

    def _classify_uncached(self, texts, template, on_result) -> None:
        raise AssertionError("not called")


def test_non_api_backend_raises(cache, tmp_path) -> None:
    with pytest.raises(TypeError, match="OpenAIBackend or AzureOpenAIBackend, got ScoringBackend"):
        write_batch_requests(ScoringBackend("local", "qwen", cache), SENTENCES, ADE_PAPER_PROMPT, tmp_path / "r.jsonl")


def test_backend_without_cache_raises(server, tmp_path) -> None:
    with pytest.raises(ValueError, match="no.*cache"):
        write_batch_requests(openai_backend(server, None), SENTENCES, ADE_PAPER_PROMPT, tmp_path / "r.jsonl")


# load_batch_results


def write_and_answer(server, cache, tmp_path, texts: Sequence[str]) -> tuple[Any, list[str]]:
    """Write a request file and return the backend and a matching output line for every request."""
    backend = openai_backend(server, cache)
    custom_ids = write_batch_requests(backend, texts, ADE_PAPER_PROMPT, tmp_path / "requests.jsonl")
    by_key = {backend.cache_key(text, ADE_PAPER_PROMPT): text for text in texts}
    lines = [
        output_line(custom_id, expected_reply(by_key[custom_id]), prompt_tokens=100 + index, index=index)
        for index, custom_id in enumerate(custom_ids)
    ]
    return backend, lines


def test_loaded_results_make_classify_cache_hits(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES)

    summary = load_batch_results(backend, ADE_PAPER_PROMPT, "\n".join(lines) + "\n", SENTENCES)
    results = openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert server.state.request_count() == 0
    assert summary.stored == len(SENTENCES)
    assert summary.uncached == 0
    assert [result.cached for result in results] == [True] * len(SENTENCES)
    assert [result.label for result in results] == EXPECTED_LABELS


def test_loaded_record_fields(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES[:1])

    load_batch_results(backend, ADE_PAPER_PROMPT, lines[0], SENTENCES[:1])
    stored = cache.get(backend.cache_key(SENTENCES[0], ADE_PAPER_PROMPT))

    assert stored.raw_reply == "1"
    assert stored.label == 1
    assert stored.prompt_tokens == 100
    assert stored.completion_tokens == 1
    assert stored.request_id == "chatcmpl-batch-0"
    assert stored.latency_ms == BATCH_LATENCY_MS == 0.0
    assert stored.created_at == 1_711_652_795.0
    assert stored.probabilities is None


def test_error_lines_counted_not_stored(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES)
    custom_ids = [json.loads(line)["custom_id"] for line in lines]
    text = "\n".join([lines[0], error_line(custom_ids[1]), lines[2], http_error_line(custom_ids[3])])

    summary = load_batch_results(backend, ADE_PAPER_PROMPT, text, SENTENCES)

    assert summary.lines == 4
    assert summary.stored == 2
    assert summary.failed == 2
    assert [custom_id for custom_id, _ in summary.errors] == [custom_ids[1], custom_ids[3]]
    assert "batch_expired" in summary.errors[0][1]
    assert "HTTP 500" in summary.errors[1][1]
    assert summary.uncached == 2
    assert len(cache) == 2


def test_failed_sentences_written_again(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES)
    custom_ids = [json.loads(line)["custom_id"] for line in lines]
    load_batch_results(backend, ADE_PAPER_PROMPT, "\n".join([lines[0], error_line(custom_ids[1])]), SENTENCES)

    retry_ids = write_batch_requests(backend, SENTENCES, ADE_PAPER_PROMPT, tmp_path / "retry.jsonl")

    assert retry_ids == custom_ids[1:]


def test_error_lines_logged(server, cache, tmp_path, caplog) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES[:1])
    caplog.set_level(logging.WARNING, logger="l2d_utils.llm.batch")

    load_batch_results(backend, ADE_PAPER_PROMPT, error_line(json.loads(lines[0])["custom_id"]), SENTENCES[:1])

    assert "line 1" in caplog.text
    assert "batch_expired" in caplog.text


def test_unparseable_reply_stored(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES[:2])
    custom_ids = [json.loads(line)["custom_id"] for line in lines]
    text = "\n".join([output_line(custom_ids[0], "maybe"), output_line(custom_ids[1], None, index=2)])

    summary = load_batch_results(backend, ADE_PAPER_PROMPT, text, SENTENCES[:2])

    assert summary.stored == 2
    assert summary.unparseable == 2
    assert cache.get(custom_ids[0]).label == UNPARSEABLE
    assert cache.get(custom_ids[1]).raw_reply == ""


@pytest.mark.parametrize(
    "bad_line",
    [
        "this is not json",
        json.dumps({"id": "batch_req_1", "response": None, "error": None}),
        json.dumps({"id": "batch_req_1", "custom_id": "PLACEHOLDER", "response": None, "error": None}),
        json.dumps({"custom_id": "PLACEHOLDER", "response": {"status_code": 200, "body": {"id": "x"}}, "error": None}),
    ],
    ids=["not-json", "no-custom-id", "no-response", "body-not-completion"],
)
def test_malformed_line_names_line_number(server, cache, tmp_path, bad_line: str) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES[:2])
    bad_line = bad_line.replace("PLACEHOLDER", json.loads(lines[1])["custom_id"])
    text = "\n".join([lines[0], "", bad_line])

    with pytest.raises(ValueError, match="line 3"):
        load_batch_results(backend, ADE_PAPER_PROMPT, text, SENTENCES[:2])

    assert len(cache) == 0


def test_unknown_custom_id_rejected(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES[:2])
    text = "\n".join([lines[0], output_line("0" * 64, "1")])

    with pytest.raises(ValueError, match="line 2: custom_id 0000000000000000… is not the cache key"):
        load_batch_results(backend, ADE_PAPER_PROMPT, text, SENTENCES[:2])

    assert len(cache) == 0


def test_other_settings_reject_custom_ids(server, cache, tmp_path) -> None:
    _, lines = write_and_answer(server, cache, tmp_path, SENTENCES[:1])
    other_backend = openai_backend(server, cache, seed=1)

    with pytest.raises(ValueError, match="not the cache key"):
        load_batch_results(other_backend, ADE_PAPER_PROMPT, lines[0], SENTENCES[:1])


def test_duplicate_custom_id_rejected(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES[:1])

    with pytest.raises(ValueError, match="line 2: .*already occurs on line 1"):
        load_batch_results(backend, ADE_PAPER_PROMPT, "\n".join([lines[0], lines[0]]), SENTENCES[:1])


# submit_batch


def test_submit_uploads_and_creates(server, cache, tmp_path) -> None:
    path = tmp_path / "requests.jsonl"
    write_batch_requests(openai_backend(server, cache), SENTENCES, ADE_PAPER_PROMPT, path)
    client = fake_client()

    batch_id = submit_batch(client, path, metadata={"run": "test"})

    assert batch_id == "batch_abc123"
    assert client.files.uploads == [{"data": path.read_bytes(), "purpose": "batch"}]
    assert client.batches.created == [
        {"input_file_id": "file-input-1", "endpoint": "/v1/chat/completions", "completion_window": "24h", "metadata": {"run": "test"}}
    ]


def test_submit_empty_file_raises(tmp_path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text("")
    client = fake_client()

    with pytest.raises(ValueError, match="no requests"):
        submit_batch(client, path)

    assert client.files.uploads == []


def test_submit_endpoint_mismatch_raises(server, cache, tmp_path) -> None:
    path = tmp_path / "requests.jsonl"
    write_batch_requests(openai_backend(server, cache), SENTENCES, ADE_PAPER_PROMPT, path, url="/chat/completions")
    client = fake_client()

    with pytest.raises(ValueError, match="line 1: url '/chat/completions' differs"):
        submit_batch(client, path)

    assert client.files.uploads == []


# wait_for_batch


def test_wait_returns_completed_batch() -> None:
    client = fake_client(["validating", "in_progress", "finalizing", "completed"], output_file_id="file-output-1")

    batch = wait_for_batch(client, "batch_abc123", poll_seconds=0)

    assert batch.status == "completed"
    assert batch.output_file_id == "file-output-1"
    assert client.batches.retrieved == ["batch_abc123"] * 4


def test_wait_failed_names_batch_and_error_file() -> None:
    client = fake_client(["in_progress", "failed"], error_file_id="file-errors-1")

    with pytest.raises(BatchFailedError, match=r"batch_abc123 ended with status 'failed'.*Error file: file-errors-1") as raised:
        wait_for_batch(client, "batch_abc123", poll_seconds=0)

    assert raised.value.batch.status == "failed"


@pytest.mark.parametrize("status", ["expired", "cancelled"])
def test_wait_partial_batch_names_output_file(status: str) -> None:
    client = fake_client([status], output_file_id="file-output-1", error_file_id="file-errors-1")

    with pytest.raises(BatchFailedError, match=f"status '{status}'.*Output file file-output-1") as raised:
        wait_for_batch(client, "batch_abc123", poll_seconds=0)

    assert raised.value.batch.output_file_id == "file-output-1"


def test_wait_failed_lists_validation_errors() -> None:
    errors = {"object": "list", "data": [{"code": "invalid_json_line", "line": 3, "message": "This line is not parseable."}]}
    client = fake_client(["failed"], errors=errors)

    with pytest.raises(BatchFailedError, match="line 3: invalid_json_line"):
        wait_for_batch(client, "batch_abc123", poll_seconds=0)


def test_wait_timeout_raises() -> None:
    client = fake_client(["in_progress"])

    with pytest.raises(TimeoutError, match="batch_abc123 still has status 'in_progress'"):
        wait_for_batch(client, "batch_abc123", poll_seconds=0.01, timeout_seconds=0.05)

    assert len(client.batches.retrieved) >= 2


# download_batch_results


def test_download_joins_output_and_errors(server, cache, tmp_path) -> None:
    backend, lines = write_and_answer(server, cache, tmp_path, SENTENCES)
    custom_ids = [json.loads(line)["custom_id"] for line in lines]
    contents = {
        "file-output-1": "\n".join(lines[:3]),  # No final newline.
        "file-errors-1": error_line(custom_ids[3]) + "\n",
    }
    client = fake_client(["completed"], contents=contents, output_file_id="file-output-1", error_file_id="file-errors-1")
    batch = wait_for_batch(client, "batch_abc123", poll_seconds=0)

    summary = load_batch_results(backend, ADE_PAPER_PROMPT, download_batch_results(client, batch), SENTENCES)

    assert summary.lines == 4
    assert summary.stored == 3
    assert summary.failed == 1
    assert summary.errors[0][0] == custom_ids[3]


def test_download_without_files_returns_empty() -> None:
    client = fake_client(["completed"])
    batch = wait_for_batch(client, "batch_abc123", poll_seconds=0)

    assert download_batch_results(client, batch) == ""
