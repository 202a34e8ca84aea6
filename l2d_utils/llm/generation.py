"""Free-text generation with the backends, request settings and response cache of the classifiers.

:class:`~l2d_utils.llm.base.LLMBackend` turns each reply into a class index.
Some steps need the reply itself: the MIMIC-IV triplet extraction requests
JSON, and the caller parses it. A :class:`TextGenerator` sends chat messages,
returns the reply text, and stores every finished reply in a
:class:`~l2d_utils.llm.cache.ResponseCache` before the next one is needed, so
an interrupted run resumes and pays only for the requests it had not finished.
A replay-only cache raises :class:`~l2d_utils.llm.cache.CacheMissError` before
any request is sent.

Two generators exist:

* :class:`ChatCompletionsGenerator` wraps an
  :class:`~l2d_utils.llm.api.OpenAIBackend` or
  :class:`~l2d_utils.llm.api.AzureOpenAIBackend` and follows its settings:
  concurrency, retries of timeouts, connection errors, HTTP 429 and HTTP 5xx
  with backoff, and the request and token rate limits.
* :class:`LocalGenerator` runs greedy ``generate`` of transformers in this
  process, for example on the packaged Qwen2.5-Coder-1.5B.

Generated replies share the ``responses`` table with classification replies.
Their keys include ``"mode": "generate"`` so that they never equal a
classification key, and their ``label`` column contains
:data:`~l2d_utils.llm.base.UNPARSEABLE` because free text has no class.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import openai
from tqdm import tqdm

from l2d_utils.llm.api import (
    _MAX_LOGGED_PER_RUN,
    LLMRequestError,
    _ChatCompletionsBackend,
    _is_retryable,
    run_requests,
    make_backend,
)
from l2d_utils.llm.base import UNPARSEABLE
from l2d_utils.llm.cache import CachedResponse, ResponseCache, request_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatPrompt:
    """A versioned system text with example turns, for tasks whose reply is free text.

    It renders messages in the same order as
    :class:`~l2d_utils.llm.prompts.PromptTemplate`, but allows any reply,
    so an example answer may be JSON or a sentence.

    Attributes:
        name: Stable identifier, e.g. ``mimic-triplet-extraction``.
        version: Raised whenever the text or the examples change.
        system: System message.
        examples: ``(user message, assistant reply)`` pairs shown as earlier turns.
    """

    name: str
    version: str
    system: str
    examples: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.version.strip():
            raise ValueError(f"A prompt needs a non-empty name and version, got {self.name!r} and {self.version!r}.")
        if not self.system.strip():
            raise ValueError(f"Prompt {self.name!r} has an empty system text.")

    def prefix_messages(self) -> list[dict[str, str]]:
        """Return the system message and example turns, shared by every input."""
        messages = [{"role": "system", "content": self.system}]
        for text, reply in self.examples:
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": reply})
        return messages

    def messages(self, text: str) -> list[dict[str, str]]:
        """Return the full chat for one input."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Prompt {self.name!r}: the input must be a non-empty string, got {text!r:.60}.")
        return [*self.prefix_messages(), {"role": "user", "content": text}]

    def fingerprint(self) -> str:
        """Return a short hash of everything that shapes the prompt."""
        payload = json.dumps([self.name, self.version, self.system, self.examples], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def identifier(self) -> str:
        """``name:version:fingerprint``, as stored in cache keys and records."""
        return f"{self.name}:{self.version}:{self.fingerprint()}"


@dataclass(frozen=True)
class GenerationRequest:
    """One chat request.

    Attributes:
        prompt_id: :attr:`ChatPrompt.identifier` of the prompt that produced
            ``messages``. It goes into the cache key and the cache record.
        messages: The full chat, sent as is.
    """

    prompt_id: str
    messages: tuple[Mapping[str, str], ...]

    @classmethod
    def from_prompt(cls, prompt: ChatPrompt, text: str) -> "GenerationRequest":
        """Build the request of ``prompt`` for one input."""
        return cls(prompt.identifier, tuple(prompt.messages(text)))


@dataclass(frozen=True)
class Generation:
    """One reply.

    Attributes:
        text: The reply text, empty when the model returned no content.
        prompt_tokens: Input tokens of the call, if known.
        completion_tokens: Output tokens of the call, if known.
        latency_ms: Wall time of the original call, in milliseconds.
        request_id: Provider request id, if any.
        cached: True when the reply came from the cache, False when this run sent the request.
    """

    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    request_id: str | None
    cached: bool

    @classmethod
    def from_response(cls, response: CachedResponse, cached: bool) -> "Generation":
        """Build a reply from a cache record."""
        return cls(
            response.raw_reply,
            response.prompt_tokens,
            response.completion_tokens,
            response.latency_ms,
            response.request_id,
            cached,
        )


#: Callback that :meth:`TextGenerator.generate` passes to ``_generate_uncached``:
#: ``on_result(position among the uncached requests, response)``.
ReplyCallback = Callable[[int, CachedResponse], None]


class TextGenerator(ABC):
    """Base class of the generators: reads the cache first and stores every new reply at once.

    Args:
        provider: Backend name stored in cache keys (``openai``, ``azure``, ``local``).
        model: Model or deployment name stored in cache keys.
        cache: Response cache, or ``None`` to call the model every time.
    """

    def __init__(self, provider: str, model: str, cache: ResponseCache | None) -> None:
        self.provider = provider
        self.model = model
        self.cache = cache

    @property
    @abstractmethod
    def parameters(self) -> Mapping[str, Any]:
        """Return every setting that changes the reply; these go into the cache key."""

    @abstractmethod
    def _generate_uncached(self, requests: Sequence[GenerationRequest], on_result: ReplyCallback) -> None:
        """Send ``requests`` and call ``on_result(position, response)`` for each, as soon as it is known."""

    @property
    def name(self) -> str:
        """``provider/model``, for logs and reports."""
        return f"{self.provider}/{self.model}"

    def cache_key(self, request: GenerationRequest) -> str:
        """Return the response-cache key of ``request`` on this generator."""
        parameters = {**self.parameters, "mode": "generate"}
        return request_key(self.provider, self.model, request.prompt_id, list(request.messages), parameters)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Return one reply per request, from the cache where stored and from the model otherwise.

        Every cache lookup happens before the first request is sent, so a
        replay-only cache raises on the first miss without sending anything.

        Args:
            requests: N requests.

        Returns:
            N replies in input order.

        Raises:
            CacheMissError: When the cache is replay-only and lacks a reply.
            LLMRequestError: When an API request failed permanently. Replies
                that finished before it are stored.
            RuntimeError: When the backend reported no reply for some request.
        """
        requests = list(requests)
        keys = [self.cache_key(request) for request in requests]
        replies: list[Generation | None] = [None] * len(requests)
        misses: list[int] = []
        for position, key in enumerate(keys):
            stored = self.cache.get(key) if self.cache is not None else None
            if stored is None:
                misses.append(position)
            else:
                replies[position] = Generation.from_response(stored, cached=True)
        logger.info("%s: %d of %d replies cached, %d requests to send", self.name, len(requests) - len(misses), len(requests), len(misses))

        if misses:

            def on_result(miss_index: int, response: CachedResponse) -> None:
                position = misses[miss_index]
                if self.cache is not None:
                    self.cache.put(keys[position], response, self.provider, self.model, requests[position].prompt_id)
                replies[position] = Generation.from_response(response, cached=False)

            self._generate_uncached([requests[position] for position in misses], on_result)

        unfinished = [position for position, reply in enumerate(replies) if reply is None]
        if unfinished:
            raise RuntimeError(f"{self.name} returned no reply for {len(unfinished)} requests (positions {unfinished[:10]}).")
        return replies  # type: ignore[return-value]


class ChatCompletionsGenerator(TextGenerator):
    """Generate with an OpenAI, OpenAI-compatible or Azure OpenAI backend and its request settings.

    The backend's ``max_tokens``, ``temperature``, ``seed`` and
    ``reasoning_effort`` shape each request body. Its ``max_concurrency``,
    ``max_retries``, backoff and rate limits govern how requests are sent.
    Its own cache is not used: pass the cache here.

    Args:
        backend: An :class:`~l2d_utils.llm.api.OpenAIBackend` or
            :class:`~l2d_utils.llm.api.AzureOpenAIBackend`.
        cache: Response cache, or ``None``.
    """

    def __init__(self, backend: _ChatCompletionsBackend, cache: ResponseCache | None = None) -> None:
        if not isinstance(backend, _ChatCompletionsBackend):
            raise TypeError(f"Expected an OpenAIBackend or AzureOpenAIBackend, got {type(backend).__name__}.")
        super().__init__(backend.provider, backend.model, cache)
        self.backend = backend
        self._log_lock = threading.Lock()
        self._retries_logged = 0

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The backend's parameters: temperature and max_tokens, plus seed and reasoning_effort when set."""
        return self.backend.parameters

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backend!r})"

    def _log_retry(self, position: int, attempt: int, error: Exception, delay: float) -> None:
        with self._log_lock:
            self._retries_logged += 1
            level = logging.WARNING if self._retries_logged <= _MAX_LOGGED_PER_RUN else logging.DEBUG
        logger.log(
            level,
            "%s: request %d failed (attempt %d of %d), retrying in %.2f s: %s: %s",
            self.name,
            position,
            attempt,
            self.backend.max_retries + 1,
            delay,
            type(error).__name__,
            self.backend._redact(str(error)),
        )

    def _send(self, position: int, request: GenerationRequest, stop: threading.Event) -> tuple[CachedResponse, str | None]:
        """Send one request with the backend's retry policy, and return the response and its finish_reason.

        ``latency_ms`` is the wall time of the attempt that succeeded.
        """
        messages = [dict(message) for message in request.messages]
        return self.backend._send(position, messages, stop, log_retry=self._log_retry)

    def _generate_uncached(self, requests: Sequence[GenerationRequest], on_result: ReplyCallback) -> None:
        """Send the requests from a thread pool and pass each response to ``on_result`` as it finishes.

        At most ``max_concurrency`` requests are in flight. After the first
        request that fails permanently, no new request starts. The requests in
        flight finish and are stored, and then :class:`LLMRequestError` is raised.
        """
        self._retries_logged = 0
        truncated = 0

        def send(position: int, stop: threading.Event) -> tuple[CachedResponse, str | None]:
            return self._send(position, requests[position], stop)

        def finished(position: int, response: CachedResponse, finish_reason: str | None) -> None:
            nonlocal truncated
            if finish_reason == "length":
                truncated += 1

        def late_failure(position: int, error: Exception) -> None:
            logger.error(
                "%s: request %d also failed while the run was ending: %s: %s",
                self.name,
                position,
                type(error).__name__,
                self.backend._redact(str(error)),
            )

        failure = run_requests(
            len(requests),
            send,
            on_result,
            finished,
            late_failure,
            max_concurrency=self.backend.max_concurrency,
            description=self.name,
            show_progress=self.backend.show_progress,
        )

        if truncated:
            logger.warning(
                "%s: %d of %d replies stopped at max_tokens=%d (finish_reason=length), so they may be cut off. "
                "Raise max_tokens, or lower reasoning_effort for a reasoning model.",
                self.name,
                truncated,
                len(requests),
                self.backend.max_tokens,
            )
        if failure is not None:
            position, error = failure
            if not isinstance(error, openai.OpenAIError):
                raise error
            cause = f"{type(error).__name__}: {self.backend._redact(str(error))}"
            if _is_retryable(error):
                cause += f", after {self.backend.max_retries} retries"
            raise LLMRequestError(
                f"{self.name}: request {position} of the {len(requests)} uncached requests failed ({cause}). "
                "Replies finished before it are stored in the cache, so rerunning sends only the remaining requests.",
                position,
            ) from error


class LocalGenerator(TextGenerator):
    """Generate greedily with a causal LM in this process.

    Decoding is greedy (``do_sample=False``) with ``repetition_penalty=1.0``,
    which overrides a sampling setup in the model's generation config, so a
    given model, prompt and dtype always give the same reply on one machine.

    Args:
        model: :data:`~l2d_utils.config.PACKAGED_QWEN`, a model folder or a Hub id.
        cache: Response cache, or ``None``.
        max_new_tokens: Maximum generated tokens per reply.
        dtype: Name of the torch dtype of weights and activations, e.g. ``bfloat16``.
    """

    def __init__(self, model: str, cache: ResponseCache | None = None, max_new_tokens: int = 1024, dtype: str = "bfloat16") -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
        super().__init__("local", model, cache)
        self.max_new_tokens = max_new_tokens
        self.dtype = dtype
        self._tokenizer = None
        self._network = None

    @property
    def parameters(self) -> Mapping[str, Any]:
        return {"method": "greedy", "max_new_tokens": self.max_new_tokens, "dtype": self.dtype}

    def _load(self) -> None:
        if self._network is None:
            # Imported here so that API users and tests never import torch.
            import torch

            from l2d_utils.llm.local import load_causal_lm

            self._tokenizer, self._network = load_causal_lm(self.model, getattr(torch, self.dtype))

    def _generate_uncached(self, requests: Sequence[GenerationRequest], on_result: ReplyCallback) -> None:
        import torch

        self._load()
        tokenizer, network = self._tokenizer, self._network
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        truncated = 0
        for position, request in enumerate(tqdm(requests, desc=f"{self.model.split(':')[-1]} generating", leave=False)):
            prompt = tokenizer.apply_chat_template([dict(message) for message in request.messages], tokenize=False, add_generation_prompt=True)
            inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(network.device)
            created_at = time.time()
            started = time.perf_counter()
            with torch.no_grad():
                output = network.generate(
                    **inputs,
                    do_sample=False,
                    repetition_penalty=1.0,
                    max_new_tokens=self.max_new_tokens,
                    pad_token_id=pad_id,
                )
            latency_ms = (time.perf_counter() - started) * 1000.0
            new_tokens = output[0, inputs["input_ids"].shape[1] :]
            if len(new_tokens) >= self.max_new_tokens and int(new_tokens[-1]) != tokenizer.eos_token_id:
                truncated += 1
            on_result(
                position,
                CachedResponse(
                    raw_reply=tokenizer.decode(new_tokens, skip_special_tokens=True),
                    label=UNPARSEABLE,
                    probabilities=None,
                    prompt_tokens=int(inputs["input_ids"].shape[1]),
                    completion_tokens=len(new_tokens),
                    latency_ms=latency_ms,
                    request_id=None,
                    created_at=created_at,
                ),
            )
        if truncated:
            logger.warning(
                "%s: %d of %d replies stopped at max_new_tokens=%d, so they may be cut off. Raise max_new_tokens.",
                self.name,
                truncated,
                len(requests),
                self.max_new_tokens,
            )


def make_generator(backend: str, model: str, cache: ResponseCache | None, *, max_tokens: int = 1024, **settings: Any) -> TextGenerator:
    """Create a generator for ``model`` on the backend named ``backend``.

    Args:
        backend: ``"openai"``, ``"azure"`` (``model`` is the deployment name) or ``"local"``.
        model: Model or deployment name.
        cache: Response cache, or ``None``.
        max_tokens: Maximum reply tokens: ``max_tokens`` of the API backends,
            ``max_new_tokens`` of the local one. Reasoning models count hidden
            reasoning tokens against it.
        **settings: Keyword arguments of :class:`~l2d_utils.llm.api.OpenAIBackend`
            or :class:`~l2d_utils.llm.api.AzureOpenAIBackend` (``api_key``,
            ``base_url``, ``temperature``, ``max_concurrency``, ``max_retries``, ...),
            or ``dtype`` for ``"local"``.

    Raises:
        ValueError: For an unknown backend name or an invalid setting.
    """
    if backend == "local":
        return LocalGenerator(model, cache, max_new_tokens=max_tokens, **settings)
    if backend in ("openai", "azure"):
        chat_backend = make_backend(backend, model, None, max_tokens=max_tokens, **settings)
        return ChatCompletionsGenerator(chat_backend, cache)  # type: ignore[arg-type]
    raise ValueError(f"Unknown LLM backend {backend!r}. Expected one of ('local', 'openai', 'azure').")
