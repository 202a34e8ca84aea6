"""Chat Completions backends: OpenAI, OpenAI-compatible servers and Azure OpenAI.

:class:`OpenAIBackend` talks to the OpenAI API or to any server that implements
``POST /v1/chat/completions`` (vLLM, the llama.cpp server, Ollama) through
``base_url``. :class:`AzureOpenAIBackend` talks to one Azure OpenAI deployment.

Both send one request per sentence from a bounded thread pool and hand every
finished response to the cache before waiting for the next one, so an
interrupted run resumes where it stopped. This module retries timeouts,
connection errors, HTTP 429 and HTTP 5xx with exponential backoff and jitter.
The ``openai`` client's own retries are switched off so that only this policy runs.

The API key goes to the ``openai`` client only. It is not part of
:attr:`~OpenAIBackend.parameters`, the cache or ``repr()``, and this module
never logs it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import openai
from tqdm import tqdm

from l2d_utils.llm.base import UNPARSEABLE, LLMBackend
from l2d_utils.llm.cache import CachedResponse, ResponseCache
from l2d_utils.llm.parsing import parse_label
from l2d_utils.llm.prompts import PromptTemplate

logger = logging.getLogger(__name__)

# OpenAI reasoning models (o1, o3, o4-mini, gpt-5, ...) reject ``max_tokens`` with
# HTTP 400 "Unsupported parameter: 'max_tokens' is not supported with this model.
# Use 'max_completion_tokens' instead." Other model names keep ``max_tokens``,
# which OpenAI-compatible servers such as vLLM, llama.cpp and Ollama accept.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)", re.IGNORECASE)

# Maximum number of retries and of unparseable replies logged one by one per run.
# Beyond it, they are logged at DEBUG level and counted in a summary line.
_MAX_LOGGED_PER_RUN = 10

_LENGTH_HINT = (
    ". The model used all max_tokens before any visible output, as reasoning models do"
    " with a small limit. Raise max_tokens or lower reasoning_effort."
)

#: Callback that ``LLMBackend.classify`` passes to ``_classify_uncached``.
ResultCallback = Callable[[int, CachedResponse], None]


class LLMRequestError(RuntimeError):
    """Error of a request that failed permanently, with a non-retryable error or after all retries.

    Attributes:
        position: Index of the sentence among the uncached sentences of the run.
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


def _setting(value: str | None, variable: str) -> str | None:
    """Return ``value``, else the environment variable, treating empty strings as unset."""
    if value:
        return value
    return os.environ.get(variable) or None


def _missing_setting_error(setting: str, argument: str, variable: str, hint: str = "") -> ValueError:
    return ValueError(f"Missing {setting}: pass {argument}=... or set the environment variable {variable}.{hint}")


def _token_limit_name(model: str) -> str:
    return "max_completion_tokens" if _REASONING_MODEL.match(model) else "max_tokens"


def _is_retryable(error: Exception) -> bool:
    """Return True for timeouts, connection errors, HTTP 429 and HTTP 5xx.

    A 429 whose error code is ``insufficient_quota`` means the account has run
    out of credit, which waiting does not fix, so it is not retried.
    """
    if isinstance(error, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(error, openai.APIStatusError):
        if error.status_code == 429:
            return error.code != "insufficient_quota"
        return error.status_code >= 500
    return False


def _retry_after_seconds(error: Exception) -> float | None:
    """Return the ``Retry-After`` header of an HTTP error in seconds, if it has a numeric one."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def estimate_request_tokens(messages: Sequence[Mapping[str, str]], max_tokens: int) -> int:
    """Estimate the tokens that one request uses: prompt characters / 4, rounded up, plus ``max_tokens``.

    Four characters per token is a rule of thumb for English text, not a
    tokenizer count, so the result is an estimate. Counting ``max_tokens`` in
    full makes the estimate an upper bound for the reply.
    """
    characters = sum(len(message["content"]) for message in messages)
    return math.ceil(characters / 4) + max_tokens


class _RateLimiter:
    """Space request starts to stay under a request rate and a token rate, across threads.

    Each start moves the earliest next start ``60 / requests_per_minute``
    seconds later, and a separate earliest next start
    ``tokens / (tokens_per_minute / 60)`` seconds later. There is no burst
    allowance: starts are spread evenly, not sent at the top of each minute. Once a response
    reports its real usage, :meth:`correct` moves the token schedule by the
    difference to the estimate, which speeds up or slows down the starts that
    have not been scheduled yet.
    """

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        self.request_interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.tokens_per_second = tokens_per_minute / 60.0 if tokens_per_minute else 0.0
        self._lock = threading.Lock()
        self._next_request_start = 0.0
        self._next_token_start = 0.0

    def wait_turn(self, estimated_tokens: int, stop: threading.Event) -> None:
        """Reserve a start for a request of ``estimated_tokens`` and sleep until it, or until ``stop`` is set."""
        if self.request_interval == 0.0 and self.tokens_per_second == 0.0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_request_start, self._next_token_start)
            self._next_request_start = start + self.request_interval
            if self.tokens_per_second:
                self._next_token_start = start + estimated_tokens / self.tokens_per_second
        stop.wait(start - now)

    def correct(self, estimated_tokens: int, used_tokens: int) -> None:
        """Replace a reserved estimate with the tokens that the response reports."""
        if self.tokens_per_second == 0.0:
            return
        with self._lock:
            self._next_token_start += (used_tokens - estimated_tokens) / self.tokens_per_second


def run_requests(
    count: int,
    send: Callable[[int, threading.Event], tuple[CachedResponse, str | None]],
    on_result: Callable[[int, CachedResponse], None],
    on_finished: Callable[[int, CachedResponse, str | None], None],
    on_late_failure: Callable[[int, Exception], None],
    max_concurrency: int,
    description: str,
    show_progress: bool = True,
) -> tuple[int, Exception] | None:
    """Run ``send`` for positions ``0 .. count - 1`` on a thread pool, storing each result as it finishes.

    At most ``max_concurrency`` requests are in flight. After the first request
    that fails permanently, no new request starts and ``stop`` is set, so
    retries end early. The requests in flight still finish and are stored. On
    an interrupt, or an error raised by ``on_result``, the finished requests
    in flight are stored and the exception propagates.

    Args:
        count: Number of requests.
        send: ``send(position, stop)`` returns ``(response, finish_reason)``.
        on_result: Stores a response (e.g. commits it to the cache); called
            once per successful request, in completion order.
        on_finished: Called after ``on_result`` with the finish_reason, for logging.
        on_late_failure: Called for a failure that follows the first one.
        max_concurrency: Requests in flight at most.
        description: Label of the progress bar and of the worker threads.
        show_progress: Show a tqdm progress bar.

    Returns:
        ``(position, error)`` of the first permanent failure, or ``None``.
    """
    stop = threading.Event()
    failure: tuple[int, Exception] | None = None
    next_position = 0
    in_flight: dict[Future, int] = {}
    progress = tqdm(total=count, desc=description, unit="request", disable=None if show_progress else True)
    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=description.replace("/", "-"))

    def submit_next() -> None:
        nonlocal next_position
        if failure is not None or next_position >= count:
            return
        in_flight[pool.submit(send, next_position, stop)] = next_position
        next_position += 1

    def store(future: Future, position: int) -> None:
        nonlocal failure
        try:
            response, finish_reason = future.result()
        except Exception as error:  # noqa: BLE001 because the caller re-raises it, once the others are stored
            if failure is None:
                failure = (position, error)
                stop.set()
            else:
                on_late_failure(position, error)
            return
        on_result(position, response)
        progress.update(1)
        on_finished(position, response, finish_reason)

    try:
        for _ in range(max_concurrency):
            submit_next()
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                store(future, in_flight.pop(future))
                submit_next()
    except BaseException:
        # On KeyboardInterrupt or an error in on_result, stop retrying but
        # store the requests in flight that still succeed.
        stop.set()
        for future in wait(in_flight).done:
            if future.exception() is None:
                response, _ = future.result()
                on_result(in_flight[future], response)
        raise
    finally:
        pool.shutdown(wait=True)
        progress.close()
    return failure


class _ChatCompletionsBackend(LLMBackend):
    """Request loop shared by :class:`OpenAIBackend` and :class:`AzureOpenAIBackend`."""

    #: Environment variable of the API key, named in authentication errors.
    _key_variable = "OPENAI_API_KEY"

    def __init__(
        self,
        provider: str,
        model: str,
        cache: ResponseCache | None,
        client: openai.OpenAI,
        *,
        temperature: float | None,
        max_tokens: int,
        seed: int | None,
        reasoning_effort: str | None,
        token_limit_name: str | None,
        max_concurrency: int,
        max_retries: int,
        backoff_base: float,
        backoff_max: float,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        show_progress: bool,
    ) -> None:
        super().__init__(provider, model, cache)
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}.")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}.")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}.")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError(f"backoff_base and backoff_max must be 0 or more, got {backoff_base} and {backoff_max}.")
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute must be positive or None, got {requests_per_minute}.")
        if tokens_per_minute is not None and tokens_per_minute <= 0:
            raise ValueError(f"tokens_per_minute must be positive or None, got {tokens_per_minute}.")
        if token_limit_name not in (None, "max_tokens", "max_completion_tokens"):
            raise ValueError(f"token_limit_name must be 'max_tokens', 'max_completion_tokens' or None, got {token_limit_name!r}.")

        self._client = client
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.reasoning_effort = reasoning_effort
        self.token_limit_name = token_limit_name or _token_limit_name(model)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.show_progress = show_progress
        self._rate_limiter = _RateLimiter(requests_per_minute, tokens_per_minute)
        self._log_lock = threading.Lock()
        self._retries_logged = 0

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Settings stored in every cache key: temperature and max_tokens, plus seed and reasoning_effort when set."""
        parameters: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            parameters["seed"] = self.seed
        if self.reasoning_effort is not None:
            parameters["reasoning_effort"] = self.reasoning_effort
        return parameters

    @property
    def base_url(self) -> str:
        """URL that requests go to, without credentials."""
        return str(self._client.base_url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r}, parameters={dict(self.parameters)!r})"

    def request_body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """Return the JSON body of the Chat Completions request for ``messages``.

        The request loop sends exactly this body, and :mod:`l2d_utils.llm.batch`
        writes it into Batch API request files.
        """
        body: dict[str, Any] = {"model": self.model, "messages": messages, self.token_limit_name: self.max_tokens}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.seed is not None:
            body["seed"] = self.seed
        if self.reasoning_effort is not None:
            body["reasoning_effort"] = self.reasoning_effort
        return body

    def _backoff_seconds(self, attempt: int, error: Exception) -> float:
        """Return the wait before retry number ``attempt`` (1-based).

        The wait is drawn uniformly from the upper half of
        ``min(backoff_max, backoff_base * 2 ** (attempt - 1))``. A numeric
        ``Retry-After`` header raises it, up to ``backoff_max``.
        """
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        retry_after = _retry_after_seconds(error)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        return delay

    def _redact(self, text: str) -> str:
        """Replace the API key in ``text``, in case a server echoes it in an error."""
        api_key = getattr(self._client, "api_key", None)
        if isinstance(api_key, str) and len(api_key) >= 4:
            text = text.replace(api_key, "[redacted]")
        return text

    def _log_retry(self, position: int, attempt: int, error: Exception, delay: float) -> None:
        with self._log_lock:
            self._retries_logged += 1
            level = logging.WARNING if self._retries_logged <= _MAX_LOGGED_PER_RUN else logging.DEBUG
        logger.log(
            level,
            "%s/%s: request for sentence %d failed (attempt %d of %d), retrying in %.2f s: %s: %s",
            self.provider,
            self.model,
            position,
            attempt,
            self.max_retries + 1,
            delay,
            type(error).__name__,
            self._redact(str(error)),
        )

    def _send(
        self,
        position: int,
        messages: list[dict[str, str]],
        stop: threading.Event,
        log_retry: Callable[[int, int, Exception, float], None] | None = None,
    ) -> tuple[CachedResponse, str | None]:
        """Send one request with retries and return the raw response and its finish_reason.

        The response's label is left unparseable; :meth:`_complete` parses it,
        and free-text generation (:mod:`l2d_utils.llm.generation`) keeps it so.
        ``latency_ms`` is the wall time of the attempt that succeeded, without
        earlier attempts or backoff waits. Every attempt reserves the estimated
        tokens under ``tokens_per_minute``, and only the attempt that succeeded
        replaces its estimate with the reported usage.

        Args:
            position: Index of the request in its run, for log lines.
            messages: Chat messages.
            stop: Set when the run is ending; backoff waits end early.
            log_retry: Called as ``(position, attempt, error, delay)`` before a
                retry; default :meth:`_log_retry`.
        """
        log_retry = log_retry or self._log_retry
        body = self.request_body(messages)
        estimated_tokens = estimate_request_tokens(messages, self.max_tokens)
        attempt = 0
        while True:
            attempt += 1
            self._rate_limiter.wait_turn(estimated_tokens, stop)
            created_at = time.time()
            started = time.perf_counter()
            try:
                completion = self._client.chat.completions.create(**body)
            except openai.OpenAIError as error:
                if not _is_retryable(error) or attempt > self.max_retries or stop.is_set():
                    raise
                delay = self._backoff_seconds(attempt, error)
                log_retry(position, attempt, error, delay)
                if stop.wait(delay):
                    raise  # Another request failed permanently, so the run is ending.
                continue
            latency_ms = (time.perf_counter() - started) * 1000.0
            break

        raw_reply = ""
        finish_reason = None
        if completion.choices:
            choice = completion.choices[0]
            finish_reason = choice.finish_reason
            # A refusal or a content-filtered reply has no content. It is kept as
            # an empty reply, which parses as unparseable.
            raw_reply = choice.message.content or ""
        usage = completion.usage
        if usage is not None and usage.prompt_tokens is not None and usage.completion_tokens is not None:
            self._rate_limiter.correct(estimated_tokens, usage.prompt_tokens + usage.completion_tokens)
        return CachedResponse(
            raw_reply=raw_reply,
            label=UNPARSEABLE,
            probabilities=None,
            prompt_tokens=usage.prompt_tokens if usage is not None else None,
            completion_tokens=usage.completion_tokens if usage is not None else None,
            latency_ms=latency_ms,
            request_id=completion.id or None,
            created_at=created_at,
        ), finish_reason

    def _complete(
        self,
        position: int,
        messages: list[dict[str, str]],
        answers: Sequence[str],
        class_names: Sequence[str],
        stop: threading.Event,
    ) -> tuple[CachedResponse, str | None]:
        """Send one request with retries (:meth:`_send`) and return the parsed response and its finish_reason."""
        response, finish_reason = self._send(position, messages, stop)
        return replace(response, label=parse_label(response.raw_reply, answers, class_names)), finish_reason

    def _classify_uncached(self, texts: Sequence[str], template: PromptTemplate, on_result: ResultCallback) -> None:
        self._classify_uncached_each(texts, [template] * len(texts), on_result)

    def _classify_uncached_each(
        self, texts: Sequence[str], templates: Sequence[PromptTemplate], on_result: ResultCallback
    ) -> None:
        """Send one request per sentence, each with its own template, and store each response as it finishes.

        At most ``max_concurrency`` requests are in flight, whether the
        sentences share a template or each has its own (retrieved examples).
        After the first request that fails permanently, no new request starts.
        The requests in flight finish and are stored, and then
        :class:`LLMRequestError` is raised.
        """
        all_messages = [template.messages(text) for text, template in zip(texts, templates)]
        self._retries_logged = 0
        unparseable: list[int] = []

        def send(position: int, stop: threading.Event) -> tuple[CachedResponse, str | None]:
            template = templates[position]
            return self._complete(position, all_messages[position], template.answers, template.class_names, stop)

        def finished(position: int, response: CachedResponse, finish_reason: str | None) -> None:
            if response.label != UNPARSEABLE:
                return
            unparseable.append(position)
            if len(unparseable) <= _MAX_LOGGED_PER_RUN:
                logger.warning(
                    # The reply's text is not logged: models often repeat the input, which may be restricted.
                    "%s/%s: unparseable reply for sentence %d stored with label %d (finish_reason=%s, %d characters)%s",
                    self.provider,
                    self.model,
                    position,
                    UNPARSEABLE,
                    finish_reason,
                    len(response.raw_reply),
                    _LENGTH_HINT if finish_reason == "length" and not response.raw_reply.strip() else "",
                )

        def late_failure(position: int, error: Exception) -> None:
            logger.error(
                "%s/%s: request for sentence %d also failed while the run was ending: %s: %s",
                self.provider,
                self.model,
                position,
                type(error).__name__,
                self._redact(str(error)),
            )

        failure = run_requests(
            len(texts),
            send,
            on_result,
            finished,
            late_failure,
            max_concurrency=self.max_concurrency,
            description=f"{self.provider}/{self.model}",
            show_progress=self.show_progress,
        )

        if self._retries_logged > _MAX_LOGGED_PER_RUN:
            logger.warning(
                "%s/%s: %d retries in this run; only the first %d were logged at WARNING level.",
                self.provider,
                self.model,
                self._retries_logged,
                _MAX_LOGGED_PER_RUN,
            )
        if unparseable:
            logger.warning(
                "%s/%s: %d of %d replies were unparseable and stored with label %d (first positions: %s).",
                self.provider,
                self.model,
                len(unparseable),
                len(texts),
                UNPARSEABLE,
                sorted(unparseable)[:_MAX_LOGGED_PER_RUN],
            )
        if failure is not None:
            position, error = failure
            if not isinstance(error, openai.OpenAIError):
                raise error
            raise LLMRequestError(self._failure_message(position, len(texts), error), position) from error

    def _failure_message(self, position: int, total: int, error: Exception) -> str:
        cause = f"{type(error).__name__}: {self._redact(str(error))}"
        if _is_retryable(error):
            cause += f", after {self.max_retries} retries"
        advice = "Responses finished before it are stored in the cache, so rerunning calls only the remaining sentences."
        if isinstance(error, openai.AuthenticationError):
            advice = f"Check the API key ({self._key_variable}). " + advice
        return (
            f"{self.provider}/{self.model}: request for sentence {position} of the {total} uncached sentences "
            f"failed ({cause}). {advice} The sentence's text is left out because its data set may be restricted; "
            "find it by its position in the input."
        )


class OpenAIBackend(_ChatCompletionsBackend):
    """Classify with the OpenAI Chat Completions API or an OpenAI-compatible server.

    Args:
        model: Model name, e.g. ``gpt-4o-mini``, or the name a local server serves.
        cache: Response cache, or ``None`` to call the API every time.
        api_key: API key. Default: ``OPENAI_API_KEY``. Servers that need no key
            (vLLM without ``--api-key``, Ollama) still need a non-empty value.
        base_url: API root such as ``http://127.0.0.1:8000/v1``. Default:
            ``OPENAI_BASE_URL``, else the OpenAI API.
        temperature: Sampling temperature. ``None`` leaves it out of the request.
            OpenAI reasoning models (o1, o3, gpt-5) need ``None`` because they
            reject other values with HTTP 400 "Only the default (1) value is supported".
        max_tokens: Maximum completion tokens. It is sent as ``max_completion_tokens``
            when the model name starts with ``o<digit>`` or ``gpt-5`` and as ``max_tokens``
            otherwise. Reasoning models count hidden reasoning tokens against this
            limit, so they need far more than the one token of a ``0`` or ``1`` reply.
        seed: Sampling seed sent with each request, if set. Providers treat it as a
            best effort, not a guarantee of identical replies.
        reasoning_effort: ``reasoning_effort`` of OpenAI reasoning models, e.g.
            ``"minimal"`` or ``"low"``, sent only when set. A lower effort leaves
            more of ``max_tokens`` for the visible reply.
        token_limit_name: ``"max_tokens"`` or ``"max_completion_tokens"`` to override the
            choice made from the model name, e.g. for an Azure deployment whose name
            does not show the model.
        max_concurrency: Maximum number of requests in flight.
        max_retries: Retries per request after timeouts, connection errors, HTTP 429
            and HTTP 5xx.
        timeout: Seconds before one attempt times out.
        backoff_base: Upper bound of the first retry wait in seconds. It doubles
            with every retry, up to ``backoff_max``.
        backoff_max: Maximum wait between two attempts in seconds.
        requests_per_minute: Maximum request starts per minute, retries included.
            ``None`` means no limit.
        tokens_per_minute: Maximum tokens per minute, retries included. ``None``
            means no limit. A request is budgeted before it starts at an
            estimate (prompt characters / 4 plus ``max_tokens``, see
            :func:`estimate_request_tokens`), which is replaced by the usage that
            the response reports. Starts are spread evenly, without a burst at
            the start of each minute.
        show_progress: Show a tqdm progress bar.
    """

    def __init__(
        self,
        model: str,
        cache: ResponseCache | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        temperature: float | None = 0.0,
        max_tokens: int = 16,
        seed: int | None = None,
        reasoning_effort: str | None = None,
        token_limit_name: str | None = None,
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        show_progress: bool = True,
    ) -> None:
        resolved_key = _setting(api_key, "OPENAI_API_KEY")
        if resolved_key is None:
            raise _missing_setting_error(
                "OpenAI API key",
                "api_key",
                "OPENAI_API_KEY",
                " For a local server that needs no key, pass any non-empty value, e.g. api_key='unused'.",
            )
        client = openai.OpenAI(
            api_key=resolved_key,
            base_url=_setting(base_url, "OPENAI_BASE_URL"),
            timeout=timeout,
            max_retries=0,
        )
        super().__init__(
            "openai",
            model,
            cache,
            client,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            reasoning_effort=reasoning_effort,
            token_limit_name=token_limit_name,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            show_progress=show_progress,
        )


class AzureOpenAIBackend(_ChatCompletionsBackend):
    """Classify with one Azure OpenAI deployment through its Chat Completions API.

    Requests go to ``{azure_endpoint}/openai/deployments/{deployment}/chat/completions``
    with the ``api-version`` query parameter and the key in the ``api-key`` header.

    Args:
        deployment: Deployment name, used as the model name in cache keys.
        cache: Response cache, or ``None`` to call the API every time.
        azure_endpoint: Resource URL such as ``https://example.openai.azure.com``.
            Default: ``AZURE_OPENAI_ENDPOINT``.
        api_key: Default: ``AZURE_OPENAI_API_KEY``.
        api_version: Azure OpenAI API version, e.g. ``2024-10-21``. Default:
            ``OPENAI_API_VERSION``.

    The other arguments are those of :class:`OpenAIBackend`.
    """

    _key_variable = "AZURE_OPENAI_API_KEY"

    def __init__(
        self,
        deployment: str,
        cache: ResponseCache | None = None,
        *,
        azure_endpoint: str | None = None,
        api_key: str | None = None,
        api_version: str | None = None,
        temperature: float | None = 0.0,
        max_tokens: int = 16,
        seed: int | None = None,
        reasoning_effort: str | None = None,
        token_limit_name: str | None = None,
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        show_progress: bool = True,
    ) -> None:
        resolved_endpoint = _setting(azure_endpoint, "AZURE_OPENAI_ENDPOINT")
        if resolved_endpoint is None:
            raise _missing_setting_error(
                "Azure OpenAI endpoint", "azure_endpoint", "AZURE_OPENAI_ENDPOINT", " It looks like https://<resource>.openai.azure.com."
            )
        resolved_key = _setting(api_key, "AZURE_OPENAI_API_KEY")
        if resolved_key is None:
            raise _missing_setting_error(
                "Azure OpenAI API key", "api_key", "AZURE_OPENAI_API_KEY", " The key is under Keys and Endpoint of the resource in the Azure portal."
            )
        resolved_version = _setting(api_version, "OPENAI_API_VERSION")
        if resolved_version is None:
            raise _missing_setting_error("Azure OpenAI API version", "api_version", "OPENAI_API_VERSION", " Example: 2024-10-21.")
        client = openai.AzureOpenAI(
            azure_endpoint=resolved_endpoint,
            api_key=resolved_key,
            api_version=resolved_version,
            timeout=timeout,
            max_retries=0,
        )
        super().__init__(
            "azure",
            deployment,
            cache,
            client,
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            reasoning_effort=reasoning_effort,
            token_limit_name=token_limit_name,
            max_concurrency=max_concurrency,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            requests_per_minute=requests_per_minute,
            tokens_per_minute=tokens_per_minute,
            show_progress=show_progress,
        )
        self.api_version = resolved_version


#: Backend names accepted by :func:`make_backend`.
BACKENDS = ("local", "openai", "azure")


def make_backend(backend: str, model: str, cache: ResponseCache | None, **settings: Any) -> LLMBackend:
    """Create the backend named ``backend`` for ``model``.

    Args:
        backend: ``"openai"`` (:class:`OpenAIBackend`), ``"azure"``
            (:class:`AzureOpenAIBackend`, ``model`` is the deployment name) or
            ``"local"`` (``l2d_utils.llm.local.LocalBackend``, imported only here
            because it needs the local model runtime).
        model: Model or deployment name.
        cache: Response cache, or ``None``.
        **settings: Keyword arguments of that backend's constructor, e.g.
            ``max_concurrency`` or, for ``"local"``, ``batch_size``.

    Raises:
        ValueError: If ``backend`` is not one of :data:`BACKENDS`.
    """
    if backend == "openai":
        return OpenAIBackend(model, cache, **settings)
    if backend == "azure":
        return AzureOpenAIBackend(model, cache, **settings)
    if backend == "local":
        from l2d_utils.llm.local import LocalBackend

        return LocalBackend(model, cache, **settings)
    raise ValueError(f"Unknown LLM backend {backend!r}; expected one of {BACKENDS}.")
