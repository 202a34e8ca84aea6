"""Classify large jobs through the OpenAI Batch API and store the results in the response cache.

The Batch API runs the requests of one uploaded JSONL file asynchronously and
returns the responses in an output file. Each request line here carries the
exact body that the backend's request loop would send, with the response-cache
key as ``custom_id``. Loading the output therefore fills the same cache, so a
later :meth:`~l2d_utils.llm.base.LLMBackend.classify` call with the same
backend settings reads every sentence whose request succeeded from the cache,
without a request::

    client = openai.OpenAI()
    custom_ids = write_batch_requests(backend, texts, template, "requests.jsonl")
    batch_id = submit_batch(client, "requests.jsonl")
    batch = wait_for_batch(client, batch_id, poll_seconds=300, timeout_seconds=26 * 3600)
    summary = load_batch_results(backend, template, download_batch_results(client, batch), texts)
    results = backend.classify(texts, template)  # All cache hits.

Request lines have the form ``{"custom_id", "method": "POST", "url", "body"}``.
Output lines have the form ``{"id", "custom_id", "response": {"status_code",
"request_id", "body"}, "error": null | {"code", "message"}}``, where ``body``
is a chat completion. Failed requests go to the batch's error file in the same
line format. The functions take any client with the ``files`` and ``batches``
resources of the ``openai`` package (written against version 3.63.0), such
as ``openai.OpenAI`` or ``openai.AzureOpenAI``.

NOTE: Provider limits on the number of requests and the size of one input file
are not checked here. Split ``texts`` yourself when a job exceeds them.

NOTE: Only the OpenAI form of the files is tested. For Azure OpenAI, check the
``url`` that its batch documentation expects in request lines and pass it as
``url`` and ``endpoint``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from l2d_utils.llm.api import _ChatCompletionsBackend
from l2d_utils.llm.base import UNPARSEABLE, template_id
from l2d_utils.llm.cache import CachedResponse
from l2d_utils.llm.parsing import parse_label
from l2d_utils.llm.prompts import PromptTemplate

logger = logging.getLogger(__name__)

#: Endpoint of Chat Completions requests in the OpenAI Batch API.
CHAT_COMPLETIONS_URL = "/v1/chat/completions"

#: ``latency_ms`` stored for batch results. The Batch API reports no per-request
#: latency, and the cache column does not accept NaN (SQLite stores NaN as NULL).
#: :func:`l2d_utils.llm.costs.usage_summary` leaves zero latencies out of its latency statistics.
BATCH_LATENCY_MS = 0.0

#: Batch statuses after which the batch does not change any more.
TERMINAL_STATUSES = ("completed", "failed", "expired", "cancelled")

# Maximum number of failed output lines logged one by one per load.
_MAX_LOGGED_ERRORS = 10


class BatchFailedError(RuntimeError):
    """A batch ended with status ``failed``, ``expired`` or ``cancelled``.

    Attributes:
        batch: The last batch object that ``batches.retrieve`` returned.
    """

    def __init__(self, message: str, batch: Any) -> None:
        super().__init__(message)
        self.batch = batch


@dataclass
class BatchLoadSummary:
    """Counts of one :func:`load_batch_results` call.

    Attributes:
        lines: Non-blank lines in the output text.
        stored: Responses committed to the cache.
        unparseable: Stored responses whose reply parsed to ``UNPARSEABLE``.
        failed: Lines with an error or an HTTP status other than 200. They are not stored.
        errors: ``(custom_id, message)`` of every failed line.
        uncached: Distinct sentences of ``texts`` still missing from the cache
            after loading. Writing a new request file sends exactly these again.
    """

    lines: int = 0
    stored: int = 0
    unparseable: int = 0
    failed: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    uncached: int = 0


def _require_batch_backend(backend: Any) -> _ChatCompletionsBackend:
    if not isinstance(backend, _ChatCompletionsBackend):
        raise TypeError(
            f"The Batch API needs an OpenAIBackend or AzureOpenAIBackend, got {type(backend).__name__}. "
            "Local models have no Batch API."
        )
    if backend.cache is None:
        raise ValueError("Batch results are stored in the response cache, but the backend has none. Pass cache=ResponseCache(path).")
    return backend


def write_batch_requests(
    backend: _ChatCompletionsBackend,
    texts: Sequence[str],
    template: PromptTemplate,
    path: str | Path,
    *,
    url: str = CHAT_COMPLETIONS_URL,
) -> list[str]:
    """Write a Batch API request file with one line per sentence that is not cached yet.

    Each line's ``custom_id`` is the sentence's response-cache key and its
    ``body`` is :meth:`~l2d_utils.llm.api.OpenAIBackend.request_body` of the
    sentence's messages. A sentence that occurs several times gets one line,
    because the Batch API requires distinct ``custom_id`` values. When every
    sentence is cached, the file is written empty.

    Args:
        backend: The backend whose settings and cache the later ``classify`` call uses.
        texts: Sentences to classify.
        template: Prompt template.
        path: JSONL file to write. An existing file is replaced.
        url: Endpoint written into every line. Must match the ``endpoint`` of :func:`submit_batch`.

    Returns:
        The custom ids written, in the order of their first sentence.

    Raises:
        TypeError: If ``backend`` is not an OpenAI or Azure OpenAI backend.
        ValueError: If the backend has no cache.
    """
    backend = _require_batch_backend(backend)
    custom_ids: list[str] = []
    written: set[str] = set()
    cached = 0
    lines: list[str] = []
    for text in texts:
        key = backend.cache_key(text, template)
        if key in written:
            continue
        if key in backend.cache:
            cached += 1
            continue
        line = {"custom_id": key, "method": "POST", "url": url, "body": backend.request_body(template.messages(text))}
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
        written.add(key)
        custom_ids.append(key)

    Path(path).write_text("".join(lines), encoding="utf-8")
    logger.info(
        "%s/%s: wrote %d batch requests to %s, and %d distinct sentences were already cached",
        backend.provider,
        backend.model,
        len(custom_ids),
        path,
        cached,
    )
    return custom_ids


def submit_batch(
    client: Any,
    path: str | Path,
    completion_window: str = "24h",
    *,
    endpoint: str = CHAT_COMPLETIONS_URL,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Upload a request file with ``purpose="batch"``, create a batch over it and return the batch id.

    Args:
        client: An ``openai.OpenAI`` or ``openai.AzureOpenAI`` client.
        path: Request file from :func:`write_batch_requests`.
        completion_window: Time frame of the batch. The Batch API accepts only ``"24h"``.
        endpoint: Endpoint of every request in the file.
        metadata: Optional key-value pairs stored with the batch.

    Raises:
        ValueError: If the file is empty, has a line that is not JSON, or has a
            line whose ``url`` is not ``endpoint``. The Batch API would reject it.
    """
    path = Path(path)
    count = 0
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                url = json.loads(line).get("url")
            except (json.JSONDecodeError, AttributeError) as error:
                raise ValueError(f"{path}, line {line_number}: invalid request line ({error}).") from error
            if url != endpoint:
                raise ValueError(f"{path}, line {line_number}: url {url!r} differs from the batch endpoint {endpoint!r}.")
            count += 1
    if count == 0:
        raise ValueError(f"{path} contains no requests, so there is nothing to submit. Every sentence may already be cached.")

    with path.open("rb") as file:
        uploaded = client.files.create(file=file, purpose="batch")
    arguments: dict[str, Any] = {"input_file_id": uploaded.id, "endpoint": endpoint, "completion_window": completion_window}
    if metadata is not None:
        arguments["metadata"] = dict(metadata)
    batch = client.batches.create(**arguments)
    logger.info("Submitted batch %s with %d requests from %s (input file %s)", batch.id, count, path, uploaded.id)
    return batch.id


def _failure_message(batch: Any) -> str:
    message = f"Batch {batch.id} ended with status {batch.status!r}."
    errors = getattr(getattr(batch, "errors", None), "data", None) or []
    if errors:
        details = "; ".join(f"line {error.line}: {error.code}: {error.message}" for error in errors[:5])
        message += f" Validation errors: {details}."
    message += f" Error file: {batch.error_file_id or 'none'}."
    if batch.output_file_id:
        message += (
            f" Output file {batch.output_file_id} contains the requests that finished."
            " Load them with load_batch_results, then write and submit a new request file for the rest."
        )
    return message


def wait_for_batch(client: Any, batch_id: str, poll_seconds: float = 60.0, timeout_seconds: float | None = None) -> Any:
    """Poll ``batches.retrieve`` until the batch reaches a terminal status and return the completed batch.

    Args:
        client: An ``openai.OpenAI`` or ``openai.AzureOpenAI`` client.
        batch_id: Id that :func:`submit_batch` returned.
        poll_seconds: Seconds between two polls.
        timeout_seconds: Maximum seconds to wait, or ``None`` to wait until a terminal status.

    Raises:
        BatchFailedError: If the batch ends ``failed``, ``expired`` or
            ``cancelled``. The message names the batch id and its error file.
        TimeoutError: If ``timeout_seconds`` pass first. The batch keeps
            running, so calling this function again resumes the wait.
    """
    if poll_seconds < 0:
        raise ValueError(f"poll_seconds must be 0 or more, got {poll_seconds}.")
    started = time.monotonic()
    last_status = None
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status != last_status:
            counts = batch.request_counts
            progress = f" ({counts.completed} completed, {counts.failed} failed of {counts.total})" if counts is not None else ""
            logger.info("Batch %s: status %s%s", batch_id, batch.status, progress)
            last_status = batch.status
        if batch.status == "completed":
            return batch
        if batch.status in TERMINAL_STATUSES:
            raise BatchFailedError(_failure_message(batch), batch)

        elapsed = time.monotonic() - started
        if timeout_seconds is not None and elapsed + poll_seconds > timeout_seconds:
            raise TimeoutError(
                f"Batch {batch_id} still has status {batch.status!r} after {elapsed:.0f} s of waiting "
                f"(timeout_seconds={timeout_seconds}). It keeps running; call wait_for_batch again to resume waiting."
            )
        time.sleep(poll_seconds)


def download_batch_results(client: Any, batch: Any) -> str:
    """Download and return the output file of a batch followed by its error file, as JSONL text.

    Line numbers in errors of :func:`load_batch_results` count through both files in that order.
    """
    parts = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            text = client.files.content(file_id).text
            parts.append(text if text.endswith("\n") or not text else text + "\n")
    return "".join(parts)


@dataclass(frozen=True)
class _OutputLine:
    line_number: int
    custom_id: str
    response: CachedResponse | None
    error: str | None


def _parse_output_line(line: str, line_number: int, template: PromptTemplate) -> _OutputLine:
    """Parse one output line into a cache record, or into an error message for a failed request.

    Raises:
        ValueError: If the line is not an output line of the documented format.
    """
    where = f"Batch output line {line_number}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where} is not valid JSON ({error}): {line[:120]!r}") from error
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        raise ValueError(f"{where} has no string custom_id: {line[:120]!r}")
    custom_id = record["custom_id"]

    error = record.get("error")
    if error is not None:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else error
        return _OutputLine(line_number, custom_id, None, f"{code}: {message}")
    response = record.get("response")
    if not isinstance(response, dict) or "status_code" not in response:
        raise ValueError(f"{where} ({custom_id}) has neither an error nor a response with a status_code.")
    body = response.get("body")
    if response["status_code"] != 200:
        detail = body.get("error", body) if isinstance(body, dict) else body
        return _OutputLine(line_number, custom_id, None, f"HTTP {response['status_code']}: {detail}")

    try:
        choices = body["choices"]
        usage = body.get("usage") or {}
        raw_reply = (choices[0]["message"].get("content") or "") if choices else ""
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(f"{where} ({custom_id}) has a status 200 response whose body is not a chat completion ({error!r}).") from error
    created = body.get("created")
    cached_response = CachedResponse(
        raw_reply=raw_reply,
        label=parse_label(raw_reply, template.answers, template.class_names),
        probabilities=None,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        latency_ms=BATCH_LATENCY_MS,
        request_id=body.get("id") or response.get("request_id"),
        created_at=float(created) if created else time.time(),
    )
    return _OutputLine(line_number, custom_id, cached_response, None)


def load_batch_results(
    backend: _ChatCompletionsBackend,
    template: PromptTemplate,
    output_jsonl_text: str,
    texts: Sequence[str],
) -> BatchLoadSummary:
    """Store the responses of a batch output file in the backend's cache, one commit per response.

    Each record gets the label from :func:`~l2d_utils.llm.parsing.parse_label`,
    the token usage of the chat completion, its id as ``request_id`` (the
    output line's ``request_id`` when the completion has none), its
    ``created`` time, and ``latency_ms`` = :data:`BATCH_LATENCY_MS` (0.0),
    because the Batch API reports no per-request latency. An empty or ``null``
    reply is stored as ``UNPARSEABLE``, as in the request loop.

    Lines with an ``error`` or an HTTP status other than 200 are counted in the
    summary and logged, not stored, so those sentences stay uncached. The whole
    text is checked before anything is stored.

    Args:
        backend: The backend whose :func:`write_batch_requests` call wrote the requests.
        template: The template of that call.
        output_jsonl_text: Output file text, e.g. from :func:`download_batch_results`.
        texts: The sentences of that call. They map custom ids back to requests.

    Raises:
        ValueError: If a line is not valid JSON or not an output line, if a
            ``custom_id`` is not the cache key of one of ``texts`` with this
            backend and template, or if a ``custom_id`` occurs twice. The
            message gives the line number.
    """
    backend = _require_batch_backend(backend)
    keys = {backend.cache_key(text, template) for text in texts}

    parsed: list[_OutputLine] = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(output_jsonl_text.splitlines(), start=1):
        if not line.strip():
            continue
        output = _parse_output_line(line, line_number, template)
        if output.custom_id not in keys:
            raise ValueError(
                f"Batch output line {line_number}: custom_id {output.custom_id[:16]}… is not the cache key of any of the "
                f"{len(texts)} sentences with {backend.provider}/{backend.model} and template {template_id(template)}. "
                "Pass the texts, template and backend settings that wrote the request file."
            )
        if output.custom_id in seen:
            raise ValueError(
                f"Batch output line {line_number}: custom_id {output.custom_id[:16]}… already occurs on line {seen[output.custom_id]}."
            )
        seen[output.custom_id] = line_number
        parsed.append(output)

    summary = BatchLoadSummary(lines=len(parsed))
    stored_template_id = template_id(template)
    for output in parsed:
        if output.response is None:
            summary.failed += 1
            summary.errors.append((output.custom_id, output.error or ""))
            level = logging.WARNING if summary.failed <= _MAX_LOGGED_ERRORS else logging.DEBUG
            logger.log(level, "Batch output line %d (%s…) failed and is not stored: %s", output.line_number, output.custom_id[:16], output.error)
            continue
        backend.cache.put(output.custom_id, output.response, backend.provider, backend.model, stored_template_id)
        summary.stored += 1
        if output.response.label == UNPARSEABLE:
            summary.unparseable += 1

    summary.uncached = sum(1 for key in keys if key not in backend.cache)
    logger.info(
        "%s/%s: stored %d batch responses (%d unparseable), %d failed lines, %d sentences still uncached",
        backend.provider,
        backend.model,
        summary.stored,
        summary.unparseable,
        summary.failed,
        summary.uncached,
    )
    if summary.failed > _MAX_LOGGED_ERRORS:
        logger.warning("%d failed batch lines; only the first %d were logged at WARNING level.", summary.failed, _MAX_LOGGED_ERRORS)
    return summary
