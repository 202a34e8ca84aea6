"""The interface every LLM backend implements, and the labelling loop they share.

A backend classifies sentences with a :class:`~l2d_utils.llm.prompts.PromptTemplate`
and returns one :class:`LLMResult` per sentence. Results come from the response
cache when present; :meth:`LLMBackend.classify` only sends the misses to the
backend's ``_classify_uncached`` and stores each result as soon as it is known.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from l2d_utils.llm.cache import CachedResponse, ResponseCache, request_key
from l2d_utils.llm.prompts import PromptTemplate

logger = logging.getLogger(__name__)

#: Label of a reply that could not be parsed into a class.
UNPARSEABLE = -1


def template_id(template: PromptTemplate) -> str:
    """Return the ``name:version:fingerprint`` identifier of a template, as stored in cache keys and records."""
    return f"{template.name}:{template.version}:{template.fingerprint()}"


@dataclass(frozen=True)
class LLMResult:
    """One classified sentence.

    Attributes:
        label: Class index, or :data:`UNPARSEABLE`.
        raw_reply: The model's reply (for the local scorer: the highest-scoring answer).
        probabilities: Per-class probabilities (local scorer only), else ``None``.
        prompt_tokens: Input tokens of the call.
        completion_tokens: Output tokens of the call.
        latency_ms: Wall time of the original call, in milliseconds.
        request_id: Provider request id, if any.
        cached: True when the result came from the cache.
    """

    label: int
    raw_reply: str
    probabilities: tuple[float, ...] | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    request_id: str | None
    cached: bool

    @classmethod
    def from_cached(cls, response: CachedResponse, cached: bool = True) -> "LLMResult":
        """Build a result from a cache record."""
        return cls(
            response.label,
            response.raw_reply,
            response.probabilities,
            response.prompt_tokens,
            response.completion_tokens,
            response.latency_ms,
            response.request_id,
            cached,
        )


class LLMBackend(ABC):
    """Base class of the local, OpenAI and Azure backends.

    Args:
        provider: Backend name stored in cache keys.
        model: Model or deployment name stored in cache keys.
        cache: Response cache, or ``None`` to call the model every time.
    """

    def __init__(self, provider: str, model: str, cache: ResponseCache | None = None) -> None:
        self.provider = provider
        self.model = model
        self.cache = cache

    @property
    @abstractmethod
    def parameters(self) -> Mapping[str, Any]:
        """Every setting that changes the reply (stored in the cache key)."""

    @abstractmethod
    def _classify_uncached(self, texts: Sequence[str], template: PromptTemplate, on_result) -> None:
        """Classify ``texts`` and call ``on_result(position, response)`` for each, as soon as it is known."""

    def cache_key(self, text: str, template: PromptTemplate) -> str:
        """Return the response-cache key of classifying ``text`` with ``template`` on this backend."""
        return request_key(self.provider, self.model, template_id(template), template.messages(text), self.parameters)

    def classify(self, texts: Sequence[str], template: PromptTemplate) -> list[LLMResult]:
        """Classify sentences, reading the cache first and storing every new result.

        Args:
            texts: Sentences, length N.
            template: Prompt template.

        Returns:
            N results in input order.
        """
        texts = list(texts)
        results: list[LLMResult | None] = [None] * len(texts)
        keys = [self.cache_key(text, template) for text in texts]
        misses: list[int] = []
        for position, key in enumerate(keys):
            stored = self.cache.get(key) if self.cache is not None else None
            if stored is None:
                misses.append(position)
            else:
                results[position] = LLMResult.from_cached(stored)
        logger.info(
            "%s/%s: %d of %d sentences cached, %d to call", self.provider, self.model, len(texts) - len(misses), len(texts), len(misses)
        )
        stored_template_id = template_id(template)

        def on_result(miss_index: int, response: CachedResponse) -> None:
            position = misses[miss_index]
            if self.cache is not None:
                self.cache.put(keys[position], response, self.provider, self.model, stored_template_id)
            results[position] = LLMResult.from_cached(response, cached=False)

        if misses:
            self._classify_uncached([texts[i] for i in misses], template, on_result)
        unfinished = [i for i, result in enumerate(results) if result is None]
        if unfinished:
            raise RuntimeError(f"The backend returned no result for {len(unfinished)} sentences (positions {unfinished[:10]}…).")
        return results  # type: ignore[return-value]


def results_frame(results: Sequence[LLMResult]):
    """Turn results into a :class:`pandas.DataFrame`, one row per sentence.

    Columns: ``llm_label, raw_reply, llm_probability`` (probability of class 1
    when known, else NaN), ``prompt_tokens, completion_tokens, latency_ms, cached``.
    """
    import pandas as pd

    return pd.DataFrame(
        {
            "llm_label": [result.label for result in results],
            "raw_reply": [result.raw_reply for result in results],
            "llm_probability": [
                result.probabilities[1] if result.probabilities is not None and len(result.probabilities) == 2 else np.nan
                for result in results
            ],
            "prompt_tokens": [result.prompt_tokens for result in results],
            "completion_tokens": [result.completion_tokens for result in results],
            "latency_ms": [result.latency_ms for result in results],
            "cached": [result.cached for result in results],
        }
    )
