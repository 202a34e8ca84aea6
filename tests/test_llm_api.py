"""Specification of the OpenAI and Azure OpenAI backends, run against a local stand-in server.

The stand-in is a real HTTP server on 127.0.0.1 that implements the Chat
Completions routes of OpenAI (``POST /v1/chat/completions``) and of Azure
OpenAI (``POST /openai/deployments/<name>/chat/completions?api-version=...``).
It replies ``1`` when the last user message contains "induced" and ``0``
otherwise, and it can be scripted to fail: HTTP errors, a reply slower than
the client timeout, a connection closed without a response, or a fixed reply.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from l2d_utils.llm.api import AzureOpenAIBackend, LLMRequestError, OpenAIBackend, estimate_request_tokens, make_backend
from l2d_utils.llm.base import UNPARSEABLE
from l2d_utils.llm.cache import CacheMissError, ResponseCache
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT, PromptTemplate

API_KEY = "sk-test-0123456789abcdefSECRET"
API_VERSION = "2024-10-21"
DEPLOYMENT = "ade-gpt4o"

SENTENCES = [
    "Intravenous azithromycin-induced ototoxicity.",
    "Methotrexate is commonly used for rheumatoid arthritis.",
    "Lithium-induced nephrogenic diabetes insipidus in a 60-year-old woman.",
    "Serum potassium was measured weekly during the first month.",
]
EXPECTED_LABELS = [1, 0, 1, 0]

AZURE_PATH = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")


# Stand-in server


@dataclass
class RecordedRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lowercase names
    body: dict[str, Any]
    last_user_message: str
    arrived_at: float


@dataclass
class StandInState:
    """Requests the stand-in received, and the scripted actions for the next ones.

    Actions: ``"429"``, ``"500"``, ``"503"`` or ``"400"`` respond with that HTTP
    status. ``"429-quota"`` responds with 429 and the error code
    ``insufficient_quota``. ``"hang"`` responds only after ``hang_seconds``.
    ``"close"`` closes the connection without a response. ``"reply:<text>"``
    responds with that text as the model's reply. ``"truncated"`` responds with
    empty content and finish_reason ``length``, as a reasoning model does when it
    uses all of max_tokens. ``"null"`` responds with null content.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RecordedRequest] = field(default_factory=list)
    #: Actions for the next requests, in arrival order.
    queued_actions: list[str] = field(default_factory=list)
    #: Actions for every request whose last user message contains the key.
    actions_by_fragment: dict[str, str] = field(default_factory=dict)
    hang_seconds: float = 1.0
    #: Delay before every normal reply, to keep requests in flight together.
    reply_delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    #: Completion id -> usage sent, to compare with what the cache stored.
    issued: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Called with no arguments as each request arrives. Its return values go to arrival_values.
    on_arrival: Callable[[], Any] | None = None
    arrival_values: list[Any] = field(default_factory=list)

    def request_count(self) -> int:
        with self.lock:
            return len(self.requests)


class StandInHandler(BaseHTTPRequestHandler):
    server: "StandInHTTPServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 because the base class names it so
        pass

    def do_POST(self) -> None:  # noqa: N802 because http.server dispatches on this name
        state = self.server.state
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        url = urlsplit(self.path)
        user_messages = [message["content"] for message in body.get("messages", []) if message["role"] == "user"]
        last_user_message = user_messages[-1] if user_messages else ""

        with state.lock:
            state.requests.append(
                RecordedRequest(url.path, parse_qs(url.query), {name.lower(): value for name, value in self.headers.items()}, body, last_user_message, time.monotonic())
            )
            action = next((action for fragment, action in state.actions_by_fragment.items() if fragment in last_user_message), None)
            if action is None and state.queued_actions:
                action = state.queued_actions.pop(0)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            if state.on_arrival is not None:
                state.arrival_values.append(state.on_arrival())
        try:
            self._answer(state, url.path, body, last_user_message, action)
        except (BrokenPipeError, ConnectionResetError):
            pass  # The client gave up, e.g. after its timeout.
        finally:
            with state.lock:
                state.in_flight -= 1

    def _answer(self, state: StandInState, path: str, body: dict[str, Any], last_user_message: str, action: str | None) -> None:
        if path != "/v1/chat/completions" and not AZURE_PATH.match(path):
            self._send_json(404, {"error": {"message": f"No route {path}", "type": "invalid_request_error", "code": None}})
            return
        if action == "close":
            self.close_connection = True
            return
        if action == "hang":
            time.sleep(state.hang_seconds)
        elif action == "429-quota":
            self._send_error(429, "insufficient_quota")
            return
        elif action is not None and action.isdigit():
            self._send_error(int(action), None)
            return
        elif state.reply_delay:
            time.sleep(state.reply_delay)

        finish_reason = "stop"
        if action is not None and action.startswith("reply:"):
            reply = action.removeprefix("reply:")
        elif action == "truncated":
            reply, finish_reason = "", "length"
        elif action == "null":
            reply = None
        else:
            reply = "1" if "induced" in last_user_message.lower() else "0"
        with state.lock:
            completion_id = f"chatcmpl-standin-{len(state.issued) + 1}"
            usage = {"prompt_tokens": 100 + len(last_user_message), "completion_tokens": 1}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            state.issued[completion_id] = usage
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish_reason}],
                "usage": usage,
            },
        )

    def _send_error(self, status: int, code: str | None) -> None:
        if status == 429:
            kind = "rate_limit_error"
        elif status >= 500:
            kind = "server_error"
        else:
            kind = "invalid_request_error"
        self._send_json(status, {"error": {"message": f"Stand-in error {status}", "type": kind, "code": code}})

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StandInHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # A handler still sleeping in "hang" must not block teardown.

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), StandInHandler)
        self.state = StandInState()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # Writes to sockets that the client closed after its timeout.


@pytest.fixture
def server():
    httpd = StandInHTTPServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove real credentials, endpoints and proxies, so tests reach only the stand-in."""
    for variable in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_AD_TOKEN",
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
def cache(tmp_path: Path):
    cache = ResponseCache(tmp_path / "responses.sqlite")
    yield cache
    cache.close()


FAST_SETTINGS = dict(max_retries=3, backoff_base=0.01, backoff_max=0.05, timeout=2.0, show_progress=False)


def openai_backend(
    server: StandInHTTPServer, cache: ResponseCache | None, model: str = "gpt-4o-mini", **settings: Any
) -> OpenAIBackend:
    arguments = dict(FAST_SETTINGS, api_key=API_KEY, base_url=f"{server.root_url}/v1")
    arguments.update(settings)
    return OpenAIBackend(model, cache, **arguments)


def azure_backend(server: StandInHTTPServer, cache: ResponseCache | None, **settings: Any) -> AzureOpenAIBackend:
    arguments = dict(FAST_SETTINGS, api_key=API_KEY, azure_endpoint=server.root_url, api_version=API_VERSION)
    arguments.update(settings)
    return AzureOpenAIBackend(DEPLOYMENT, cache, **arguments)


# Labels and request format


def test_openai_labels_match_server(server, cache) -> None:
    results = openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert [result.label for result in results] == EXPECTED_LABELS


def test_openai_one_request_per_sentence(server, cache) -> None:
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert server.state.request_count() == len(SENTENCES)


def test_openai_request_format(server, cache) -> None:
    openai_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)
    request = server.state.requests[0]

    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["messages"] == ADE_PAPER_PROMPT.messages(SENTENCES[0])
    assert request.body["temperature"] == 0.0
    assert request.body["max_tokens"] == 16
    assert "seed" not in request.body


@pytest.mark.parametrize(
    ("model", "limit_name"),
    [
        ("gpt-4o-mini", "max_tokens"),
        ("o1", "max_completion_tokens"),
        ("o3-mini", "max_completion_tokens"),
        ("gpt-5-mini", "max_completion_tokens"),
        ("olmo-2-7b", "max_tokens"),
    ],
)
def test_token_limit_name_by_model(server, cache, model: str, limit_name: str) -> None:
    openai_backend(server, cache, model=model, max_tokens=64).classify(SENTENCES[:1], ADE_PAPER_PROMPT)
    body = server.state.requests[0].body

    assert body[limit_name] == 64
    assert len({"max_tokens", "max_completion_tokens"} & body.keys()) == 1


def test_token_limit_name_override(server, cache) -> None:
    openai_backend(server, cache, token_limit_name="max_completion_tokens").classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert server.state.requests[0].body["max_completion_tokens"] == 16


def test_temperature_none_omitted(server, cache) -> None:
    openai_backend(server, cache, temperature=None).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert "temperature" not in server.state.requests[0].body


def test_seed_sent_and_in_parameters(server, cache) -> None:
    backend = openai_backend(server, cache, seed=7)
    backend.classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert server.state.requests[0].body["seed"] == 7
    assert backend.parameters == {"temperature": 0.0, "max_tokens": 16, "seed": 7}


def test_reasoning_effort_sent_and_in_parameters(server, cache) -> None:
    backend = openai_backend(server, cache, model="gpt-5-nano", reasoning_effort="minimal")
    backend.classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert server.state.requests[0].body["reasoning_effort"] == "minimal"
    assert backend.parameters["reasoning_effort"] == "minimal"


def test_parameters_without_seed() -> None:
    backend = OpenAIBackend("gpt-4o-mini", None, api_key=API_KEY, temperature=0.2, max_tokens=8)

    assert backend.parameters == {"temperature": 0.2, "max_tokens": 8}


# Cache use


def test_usage_latency_request_id_stored(server, cache) -> None:
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    replayed = openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    for text, result in zip(SENTENCES, replayed):
        assert result.cached
        assert result.request_id in server.state.issued
        assert result.prompt_tokens == server.state.issued[result.request_id]["prompt_tokens"]
        assert result.prompt_tokens == 100 + len(text)
        assert result.completion_tokens == 1
        assert result.latency_ms > 0
        assert result.raw_reply in ("0", "1")


def test_second_classify_makes_no_requests(server, cache) -> None:
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)
    requests_after_first_run = server.state.request_count()

    results = openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert server.state.request_count() == requests_after_first_run
    assert [result.label for result in results] == EXPECTED_LABELS


def test_replay_only_cold_cache_raises_before_request(server, tmp_path) -> None:
    cache = ResponseCache(tmp_path / "cold.sqlite", replay_only=True)
    try:
        with pytest.raises(CacheMissError):
            openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)
    finally:
        cache.close()

    assert server.state.request_count() == 0


def test_each_response_stored_before_next_request(server, cache) -> None:
    server.state.on_arrival = lambda: len(cache)

    openai_backend(server, cache, max_concurrency=1).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert server.state.arrival_values == [0, 1, 2, 3]


def test_changed_seed_misses_cache(server, cache) -> None:
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    openai_backend(server, cache, seed=1).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert server.state.request_count() == 2 * len(SENTENCES)


# Retries


@pytest.mark.parametrize(
    ("action", "failures"),
    [
        ("429", 2),
        ("500", 2),
        ("503", 3),
        ("close", 2),
        ("hang", 1),
    ],
)
def test_retry_then_success(server, cache, action: str, failures: int) -> None:
    server.state.queued_actions = [action] * failures
    server.state.hang_seconds = 1.0
    backend = openai_backend(server, cache, timeout=0.3)

    results = backend.classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert results[0].label == 1
    assert server.state.request_count() == failures + 1


def test_retry_logged_as_warning(server, cache, caplog) -> None:
    server.state.queued_actions = ["429"]
    caplog.set_level(logging.WARNING, logger="l2d_utils.llm.api")

    openai_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert "retrying" in caplog.text
    assert "RateLimitError" in caplog.text


def test_retries_exhausted_raise(server, cache) -> None:
    server.state.queued_actions = ["500"] * 10

    with pytest.raises(LLMRequestError, match=r"sentence 0 .*InternalServerError.*after 2 retries"):
        openai_backend(server, cache, max_retries=2).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert server.state.request_count() == 3


@pytest.mark.parametrize("action", ["400", "429-quota"])
def test_non_retryable_error_not_retried(server, cache, action: str) -> None:
    server.state.queued_actions = [action]

    with pytest.raises(LLMRequestError, match="sentence 0"):
        openai_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert server.state.request_count() == 1


def test_hard_failure_keeps_finished_results(server, cache) -> None:
    sentences = [*SENTENCES[:2], "Hopeless sentence that always fails.", *SENTENCES[2:]]
    server.state.actions_by_fragment = {"Hopeless": "500"}

    with pytest.raises(LLMRequestError, match="sentence 2 ") as raised:
        openai_backend(server, cache, max_concurrency=1, max_retries=2).classify(sentences, ADE_PAPER_PROMPT)

    assert raised.value.position == 2
    assert len(cache) == 2
    assert server.state.request_count() == 2 + 3


def test_resume_requests_only_unfinished(server, cache) -> None:
    sentences = [*SENTENCES[:2], "Hopeless sentence, induced by nothing.", *SENTENCES[2:]]
    server.state.actions_by_fragment = {"Hopeless": "500"}
    with pytest.raises(LLMRequestError):
        openai_backend(server, cache, max_concurrency=1, max_retries=2).classify(sentences, ADE_PAPER_PROMPT)
    requests_before_resume = server.state.request_count()
    server.state.actions_by_fragment = {}

    results = openai_backend(server, cache, max_concurrency=1).classify(sentences, ADE_PAPER_PROMPT)

    assert server.state.request_count() - requests_before_resume == 3
    assert [result.cached for result in results] == [True, True, False, False, False]
    assert [result.label for result in results] == [1, 0, 1, 1, 0]


def test_hard_failure_stops_other_retries(server, cache) -> None:
    server.state.actions_by_fragment = {"Hopeless": "400", "Flaky": "500"}
    sentences = ["Hopeless sentence.", "Flaky sentence."]
    backend = openai_backend(server, cache, max_concurrency=2, max_retries=5, backoff_base=0.5, backoff_max=5.0)

    with pytest.raises(LLMRequestError, match="sentence 0 "):
        backend.classify(sentences, ADE_PAPER_PROMPT)

    flaky_requests = [request for request in server.state.requests if "Flaky" in request.last_user_message]
    assert len(flaky_requests) == 1


# Unparseable replies


def test_unparseable_reply_stored_as_minus_one(server, cache) -> None:
    server.state.actions_by_fragment = {"Methotrexate": "reply:maybe"}

    results = openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert results[1].label == UNPARSEABLE
    assert results[1].raw_reply == "maybe"
    assert [result.label for result in results[::2]] == [1, 1]


def test_unparseable_reply_is_cached(server, cache) -> None:
    server.state.actions_by_fragment = {"Methotrexate": "reply:maybe"}
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    replayed = openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert replayed[1].cached
    assert replayed[1].label == UNPARSEABLE


def test_unparseable_reply_logged_with_position(server, cache, caplog) -> None:
    server.state.actions_by_fragment = {"Methotrexate": "reply:maybe"}
    caplog.set_level(logging.WARNING, logger="l2d_utils.llm.api")

    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert "unparseable reply for sentence 1 " in caplog.text
    assert "1 of 4 replies were unparseable" in caplog.text


@pytest.mark.parametrize("action", ["truncated", "null"])
def test_empty_reply_stored_as_minus_one(server, cache, action: str) -> None:
    server.state.queued_actions = [action]

    results = openai_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert results[0].label == UNPARSEABLE
    assert results[0].raw_reply == ""


def test_truncated_reply_logs_hint(server, cache, caplog) -> None:
    server.state.queued_actions = ["truncated"]
    caplog.set_level(logging.WARNING, logger="l2d_utils.llm.api")

    openai_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert "finish_reason=length" in caplog.text
    assert "Raise max_tokens" in caplog.text


# Concurrency and rate limit


def test_max_concurrency_bounds_in_flight(server, cache) -> None:
    server.state.reply_delay = 0.1
    sentences = [f"Sentence number {i}." for i in range(6)]

    openai_backend(server, cache, max_concurrency=2).classify(sentences, ADE_PAPER_PROMPT)

    assert server.state.max_in_flight == 2


def test_per_input_templates_run_concurrently(server, cache) -> None:
    """Retrieved few-shot prompts differ per sentence and still share the concurrency bound."""
    server.state.reply_delay = 0.1
    sentences = [f"Sentence number {i}." for i in range(6)]
    templates = [
        PromptTemplate(
            f"ade-own-{i}",
            "1",
            ADE_PAPER_PROMPT.system,
            ADE_PAPER_PROMPT.examples[i % 3 :],
            ADE_PAPER_PROMPT.answers,
            ADE_PAPER_PROMPT.class_names,
        )
        for i in range(6)
    ]

    results = openai_backend(server, cache, max_concurrency=3).classify_each(sentences, templates)

    assert server.state.max_in_flight == 3
    assert [len(request.body["messages"]) for request in server.state.requests].count(len(templates[0].messages("x"))) == 2
    assert len(results) == 6
    assert len(cache) == 6


def test_requests_per_minute_spaces_starts(server, cache) -> None:
    openai_backend(server, cache, requests_per_minute=600, max_concurrency=4).classify(SENTENCES, ADE_PAPER_PROMPT)

    arrivals = sorted(request.arrived_at for request in server.state.requests)
    # 600 per minute is one start per 0.1 s. The span is checked rather than
    # each gap: on a loaded machine one request can reach the server late and
    # the next on time, which shortens a gap without breaking the limit.
    assert len(arrivals) == len(SENTENCES)
    assert arrivals[-1] - arrivals[0] >= 0.095 * (len(arrivals) - 1)


# A template whose prompt is tiny, so that the stand-in's usage (100 tokens plus
# the sentence's length in characters) is far from the estimate.
TINY_PROMPT = PromptTemplate(name="tiny", version="1", system="s", examples=(), answers=("0", "1"), class_names=("no", "yes"))


def start_gaps(server: StandInHTTPServer) -> list[float]:
    arrivals = sorted(request.arrived_at for request in server.state.requests)
    return [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]


def test_estimate_request_tokens() -> None:
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcde"}]

    assert estimate_request_tokens(messages, max_tokens=16) == 3 + 16


def test_tokens_per_minute_spaces_starts(server, cache) -> None:
    estimates = [estimate_request_tokens(ADE_PAPER_PROMPT.messages(text), 16) for text in SENTENCES]
    tokens_per_minute = 300 * min(estimates)  # At least 0.2 s of budget per request.

    openai_backend(server, cache, tokens_per_minute=tokens_per_minute, max_concurrency=4).classify(SENTENCES, ADE_PAPER_PROMPT)

    # The margin below 0.2 s absorbs variation in request transit time on a busy machine.
    assert min(start_gaps(server)) >= 0.15


def test_tokens_per_minute_none_never_waits(server, cache) -> None:
    server.state.reply_delay = 0.3

    openai_backend(server, cache, tokens_per_minute=None, max_concurrency=4).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert server.state.max_in_flight == 4


def test_tokens_per_minute_usage_above_estimate_delays(server, cache) -> None:
    sentences = ["First.", "Second."]
    # Estimate: 2 tokens of prompt plus max_tokens=1. Usage reported: 100 + 6 + 1 = 107.
    assert estimate_request_tokens(TINY_PROMPT.messages(sentences[0]), 1) == 3

    backend = openai_backend(server, cache, max_tokens=1, tokens_per_minute=30_000, max_concurrency=1)
    backend.classify(sentences, TINY_PROMPT)

    # At 500 tokens per second the usage delays the next start by 0.214 s, the estimate by 6 ms.
    assert start_gaps(server)[0] >= 0.15


def test_tokens_per_minute_usage_below_estimate_speeds_up(server, cache) -> None:
    sentences = ["First.", "Second."]
    # Estimate: 2 tokens of prompt plus max_tokens=1000. Usage reported: 107.
    assert estimate_request_tokens(TINY_PROMPT.messages(sentences[0]), 1000) == 1002

    backend = openai_backend(server, cache, max_tokens=1000, tokens_per_minute=30_000, max_concurrency=1)
    backend.classify(sentences, TINY_PROMPT)

    # At 500 tokens per second the usage delays the next start by 0.214 s, the estimate by 2 s.
    gap = start_gaps(server)[0]
    assert gap >= 0.15
    assert gap < 1.0


# Secrets


def test_api_key_absent_from_cache_file(server, tmp_path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite")
    server.state.queued_actions = ["429"]
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)
    cache.close()

    stored = b"".join(path.read_bytes() for path in tmp_path.glob("responses.sqlite*"))
    assert len(stored) > 0
    assert API_KEY.encode() not in stored


def test_api_key_absent_from_logs(server, cache, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server.state.queued_actions = ["429", "close"]
    server.state.actions_by_fragment = {"Methotrexate": "reply:maybe"}
    openai_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)
    server.state.queued_actions = ["400"]
    with pytest.raises(LLMRequestError) as raised:
        openai_backend(server, cache).classify(["Another sentence."], ADE_PAPER_PROMPT)

    assert caplog.text  # The run did log at DEBUG level.
    assert API_KEY not in caplog.text
    assert API_KEY not in str(raised.value)


@pytest.mark.parametrize("make", [openai_backend, azure_backend])
def test_api_key_absent_from_repr(server, cache, make) -> None:
    backend = make(server, cache)

    assert API_KEY not in repr(backend)
    assert API_KEY not in repr(backend.parameters)


def test_repr_names_model_and_url(server, cache) -> None:
    text = repr(openai_backend(server, cache))

    assert "gpt-4o-mini" in text
    assert server.root_url in text


# Azure OpenAI


def test_azure_labels_match_server(server, cache) -> None:
    results = azure_backend(server, cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert [result.label for result in results] == EXPECTED_LABELS


def test_azure_request_format(server, cache) -> None:
    azure_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)
    request = server.state.requests[0]

    assert request.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert request.query["api-version"] == [API_VERSION]
    assert request.headers["api-key"] == API_KEY
    assert request.body["messages"] == ADE_PAPER_PROMPT.messages(SENTENCES[0])


def test_azure_provider_in_cache_key(server, cache) -> None:
    openai_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    azure_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert server.state.request_count() == 2


def test_azure_settings_from_environment(server, cache, monkeypatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.root_url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", API_VERSION)

    results = AzureOpenAIBackend(DEPLOYMENT, cache, **FAST_SETTINGS).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert results[0].label == 1
    assert server.state.requests[0].query["api-version"] == [API_VERSION]


def test_azure_retries_then_succeeds(server, cache) -> None:
    server.state.queued_actions = ["429", "500"]

    results = azure_backend(server, cache).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert results[0].label == 1
    assert server.state.request_count() == 3


# Settings from the environment and missing settings


def test_openai_settings_from_environment(server, cache, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"{server.root_url}/v1")

    results = OpenAIBackend("gpt-4o-mini", cache, **FAST_SETTINGS).classify(SENTENCES[:1], ADE_PAPER_PROMPT)

    assert results[0].label == 1
    assert server.state.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_openai_missing_key_names_variable() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY") as raised:
        OpenAIBackend("gpt-4o-mini", None)

    assert "api_key=" in str(raised.value)


@pytest.mark.parametrize(
    ("missing", "present"),
    [
        ("AZURE_OPENAI_ENDPOINT", {"AZURE_OPENAI_API_KEY": API_KEY, "OPENAI_API_VERSION": API_VERSION}),
        ("AZURE_OPENAI_API_KEY", {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "OPENAI_API_VERSION": API_VERSION}),
        ("OPENAI_API_VERSION", {"AZURE_OPENAI_ENDPOINT": "http://127.0.0.1:9", "AZURE_OPENAI_API_KEY": API_KEY}),
    ],
)
def test_azure_missing_setting_names_variable(monkeypatch, missing: str, present: dict[str, str]) -> None:
    for variable, value in present.items():
        monkeypatch.setenv(variable, value)

    with pytest.raises(ValueError, match=missing) as raised:
        AzureOpenAIBackend(DEPLOYMENT, None)

    assert API_KEY not in str(raised.value)


def test_empty_variable_counts_as_missing(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")

    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini", None)


@pytest.mark.parametrize(
    "setting",
    [
        {"max_concurrency": 0},
        {"max_retries": -1},
        {"max_tokens": 0},
        {"requests_per_minute": 0},
        {"tokens_per_minute": -5},
        {"backoff_base": -1.0},
        {"token_limit_name": "max_output_tokens"},
    ],
)
def test_invalid_setting_raises(setting: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(setting))):
        OpenAIBackend("gpt-4o-mini", None, api_key=API_KEY, **setting)


# make_backend


def test_make_backend_openai(server) -> None:
    backend = make_backend("openai", "gpt-4o-mini", None, api_key=API_KEY, base_url=f"{server.root_url}/v1", max_concurrency=2)

    assert isinstance(backend, OpenAIBackend)
    assert backend.max_concurrency == 2


def test_make_backend_azure(server) -> None:
    backend = make_backend("azure", DEPLOYMENT, None, api_key=API_KEY, azure_endpoint=server.root_url, api_version=API_VERSION)

    assert isinstance(backend, AzureOpenAIBackend)
    assert backend.model == DEPLOYMENT


def test_make_backend_local_passes_settings(monkeypatch, cache) -> None:
    created: list[tuple[Any, ...]] = []

    class FakeLocalBackend:
        def __init__(self, model: str, cache: ResponseCache | None, batch_size: int = 8) -> None:
            created.append((model, cache, batch_size))

    fake_module = types.ModuleType("l2d_utils.llm.local")
    fake_module.LocalBackend = FakeLocalBackend
    monkeypatch.setitem(sys.modules, "l2d_utils.llm.local", fake_module)

    backend = make_backend("local", "packaged:qwen", cache, batch_size=4)

    assert isinstance(backend, FakeLocalBackend)
    assert created == [("packaged:qwen", cache, 4)]


def test_make_backend_unknown_raises() -> None:
    with pytest.raises(ValueError, match="'anthropic'.*local.*openai.*azure"):
        make_backend("anthropic", "claude", None)
