"""The ``openai`` backend against a real OpenAI-compatible server: llama.cpp serving the packaged GGUF.

The server (``python -m llama_cpp.server``, from ``llama-cpp-python[server]``,
which ``make test`` installs) runs on 127.0.0.1 on a free port and is stopped
at the end of the module. A small proxy in front of it injects the failures an
API run meets: HTTP 429 and 500, a closed connection, a reply slower than the
client's timeout, and a reply that names no label. The sentences are invented.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from l2d_utils.config import PACKAGED_QWEN
from l2d_utils.llm.api import LLMRequestError, OpenAIBackend
from l2d_utils.llm.base import UNPARSEABLE
from l2d_utils.llm.cache import ResponseCache
from l2d_utils.llm.local import LocalBackend
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT
from l2d_utils.models import packaged_gguf_path

pytest.importorskip("llama_cpp.server", reason="install llama-cpp-python[server] (make test does) to run this test")
pytestmark = pytest.mark.slow

#: Clear cases, so that greedy decoding on the 4-bit weights and label
#: scoring on the bfloat16 weights should mostly agree.
SENTENCES = [
    "Fatal hepatitis due to ketoconazole.",
    "Blood pressure was recorded at each visit.",
    "A generalized rash appeared two days after starting allopurinol.",
    "The trial enrolled 120 adults with type 2 diabetes.",
    "Lithium toxicity presented with coarse tremor and confusion.",
    "Patients were seen in the outpatient clinic every three months.",
    "Severe neutropenia developed after the second cycle of carboplatin.",
    "The questionnaire was translated into Spanish.",
]
#: Share of sentences on which the server and the local backend must agree.
MIN_AGREEMENT = 0.75
SERVER_START_SECONDS = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    """Start the llama.cpp server on the packaged GGUF; yield its ``/v1`` URL; stop it."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(packaged_gguf_path()),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2", "--seed", "0", "--verbose", "False",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + SERVER_START_SECONDS
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama.cpp server exited with code {process.returncode}: {process.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama.cpp server did not answer on {url} within {SERVER_START_SECONDS} s")
            time.sleep(0.5)
        # One request evaluates the prompt's shared prefix, which the server then
        # reuses, so later requests finish well within the tests' client timeout.
        server_backend(url, None).classify(SENTENCES[:1], ADE_PAPER_PROMPT)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)
        process.stderr.close()


class FaultState:
    """Scripted faults by sentence fragment, and what the proxy saw."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lock = threading.Lock()
        #: fragment of the input -> list of actions, one used per matching request
        self.faults: dict[str, list[str]] = {}
        self.hang_seconds = 25.0
        self.arrivals: list[str] = []
        self.forwarded: list[str] = []

    def next_action(self, text: str) -> str | None:
        with self.lock:
            self.arrivals.append(text)
            for fragment, actions in self.faults.items():
                if fragment in text and actions:
                    return actions.pop(0)
        return None


class FaultHandler(BaseHTTPRequestHandler):
    server: "FaultProxy"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 because the base class names it so
        pass

    def do_POST(self) -> None:  # noqa: N802 because http.server dispatches on this name
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        messages = json.loads(body)["messages"]
        text = messages[-1]["content"]
        action = state.next_action(text)
        try:
            if action == "close":
                self.close_connection = True
                return
            if action in ("429", "500"):
                kind = "rate_limit_error" if action == "429" else "server_error"
                self._send(int(action), json.dumps({"error": {"message": f"injected {action}", "type": kind}}).encode())
                return
            if action == "hang":
                # Send nothing until the client has timed out, then drop the connection.
                time.sleep(state.hang_seconds)
                self.close_connection = True
                return
            status, payload = self._forward(body)
            if action == "unparseable" and status == 200:
                reply = json.loads(payload)
                reply["choices"][0]["message"]["content"] = "I am not able to say."
                payload = json.dumps(reply).encode()
            self._send(status, payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up after its timeout

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        state = self.server.state
        request = urllib.request.Request(
            f"{state.upstream}{self.path.removeprefix('/v1')}", data=body, headers={"Content-Type": "application/json"}
        )
        with state.lock:
            state.forwarded.append(json.loads(body)["messages"][-1]["content"])
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), FaultHandler)
        self.state = FaultState(upstream)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture
def proxy(llama_server):
    server = FaultProxy(llama_server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def server_backend(url: str, cache: ResponseCache | None, **settings: Any) -> OpenAIBackend:
    options = dict(api_key="unused", base_url=url, temperature=0.0, max_tokens=2, max_concurrency=1, show_progress=False)
    options.update(settings)
    return OpenAIBackend("qwen2.5-coder-1.5b-instruct-q4_k_m", cache, **options)


def test_server_agrees_with_the_local_backend(llama_server, tmp_path):
    served = server_backend(llama_server, ResponseCache(tmp_path / "served.sqlite")).classify(SENTENCES, ADE_PAPER_PROMPT)
    local = LocalBackend(PACKAGED_QWEN).classify(SENTENCES, ADE_PAPER_PROMPT)

    served_labels = [result.label for result in served]
    local_labels = [result.label for result in local]
    assert UNPARSEABLE not in served_labels, f"the server's replies {[r.raw_reply for r in served]} were not all labels"
    agreement = sum(a == b for a, b in zip(served_labels, local_labels)) / len(SENTENCES)
    assert agreement >= MIN_AGREEMENT, f"server {served_labels} vs local {local_labels}"
    assert all(result.prompt_tokens > 100 and result.completion_tokens >= 1 for result in served)
    assert all(result.request_id and result.request_id.startswith("chatcmpl") for result in served)


def test_faults_are_retried_or_recorded(proxy, tmp_path):
    """429, 500, a closed connection and a timeout are retried; a reply with no label is stored as unparseable."""
    proxy.state.faults = {
        "hepatitis": ["429"],
        "Blood pressure": ["500", "500"],
        "rash": ["close"],
        "trial enrolled": ["hang"],
        "Lithium": ["unparseable"],
    }
    cache = ResponseCache(tmp_path / "faults.sqlite")
    backend = server_backend(proxy.url, cache, max_retries=3, timeout=20.0, backoff_base=0.05, backoff_max=0.2)

    results = backend.classify(SENTENCES, ADE_PAPER_PROMPT)

    assert len(cache) == len(SENTENCES)
    arrivals = proxy.state.arrivals
    assert arrivals.count(SENTENCES[0]) == 2  # 429, then a reply
    assert arrivals.count(SENTENCES[1]) == 3  # 500 twice, then a reply
    assert arrivals.count(SENTENCES[2]) == 2  # closed connection, then a reply
    assert arrivals.count(SENTENCES[3]) == 2  # timed out, then a reply
    labels = [result.label for result in results]
    assert labels[4] == UNPARSEABLE
    assert results[4].raw_reply == "I am not able to say."
    assert all(label in (0, 1) for position, label in enumerate(labels) if position != 4)


def test_permanent_failure_keeps_finished_calls(proxy, tmp_path):
    """A sentence that fails every retry stops the run; the rerun sends only the unfinished sentences."""
    proxy.state.faults = {"carboplatin": ["500"] * 3}
    cache = ResponseCache(tmp_path / "resume.sqlite")
    backend = server_backend(proxy.url, cache, max_retries=2, backoff_base=0.01, backoff_max=0.05)

    with pytest.raises(LLMRequestError, match="sentence 6 of the 8 uncached sentences") as raised:
        backend.classify(SENTENCES, ADE_PAPER_PROMPT)
    assert "carboplatin" not in str(raised.value)  # the sentence's text stays out of the message
    stored = len(cache)
    assert stored == 6  # one request in flight at a time: the six before it finished

    proxy.state.forwarded.clear()
    results = backend.classify(SENTENCES, ADE_PAPER_PROMPT)
    assert proxy.state.forwarded == SENTENCES[stored:]
    assert [result.cached for result in results] == [True] * stored + [False] * (len(SENTENCES) - stored)
