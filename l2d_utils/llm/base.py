"""The interface every LLM backend implements, and the labelling loop they share.

A backend classifies sentences with a :class:`~l2d_utils.llm.prompts.PromptTemplate`
and returns one :class:`LLMResult` per sentence. Results come from the response
cache when present; :meth:`LLMBackend.classify` only sends the misses to the
backend's ``_classify_uncached`` and stores each result as soon as it is known.
:meth:`LLMBackend.classify_each` does the same with one template per sentence.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

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
        return self.classify_each(texts, [template] * len(texts))

    def classify_each(self, texts: Sequence[str], templates: Sequence[PromptTemplate]) -> list[LLMResult]:
        """Classify each sentence with its own template, reading the cache first and storing every new result.

        Sentences whose results are not cached are grouped by :func:`template_id`
        and passed to ``_classify_uncached_each``. By default that makes one
        ``_classify_uncached`` call per template. The local backend overrides it
        to batch sentences across templates, and the API backends to keep up to
        ``max_concurrency`` requests in flight across templates.

        Args:
            texts: Sentences, length N.
            templates: Prompt templates, length N; ``templates[i]`` classifies ``texts[i]``.

        Returns:
            N results in input order.

        Raises:
            ValueError: When ``texts`` and ``templates`` differ in length.
            RuntimeError: When the backend reported no result for some sentence.

        An error raised by the backend propagates unchanged, after the results
        of earlier groups and those the failing call reported are stored.
        Positions in such an error count from the start of that group's
        uncached sentences.
        """
        texts = list(texts)
        templates = list(templates)
        if len(texts) != len(templates):
            raise ValueError(f"Got {len(texts)} texts and {len(templates)} templates; pass one template per text.")

        template_ids = [template_id(template) for template in templates]

        results: list[LLMResult | None] = [None] * len(texts)
        keys = [self.cache_key(text, template) for text, template in zip(texts, templates)]
        misses_by_template: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            stored = self.cache.get(key) if self.cache is not None else None
            if stored is None:
                misses_by_template.setdefault(template_ids[position], []).append(position)
            else:
                results[position] = LLMResult.from_cached(stored)
        miss_count = sum(len(positions) for positions in misses_by_template.values())
        logger.info(
            "%s/%s: %d of %d sentences cached, %d to call with %d templates",
            self.provider,
            self.model,
            len(texts) - miss_count,
            len(texts),
            miss_count,
            len(misses_by_template),
        )

        miss_positions = [position for positions in misses_by_template.values() for position in positions]
        if miss_positions:

            def on_result(miss_index: int, response: CachedResponse) -> None:
                position = miss_positions[miss_index]
                if self.cache is not None:
                    self.cache.put(keys[position], response, self.provider, self.model, template_ids[position])
                results[position] = LLMResult.from_cached(response, cached=False)

            self._classify_uncached_each(
                [texts[i] for i in miss_positions], [templates[i] for i in miss_positions], on_result
            )

        unfinished = [i for i, result in enumerate(results) if result is None]
        if unfinished:
            raise RuntimeError(f"The backend returned no result for {len(unfinished)} sentences (positions {unfinished[:10]}…).")
        return results  # type: ignore[return-value]

    def _classify_uncached_each(
        self, texts: Sequence[str], templates: Sequence[PromptTemplate], on_result: Callable[[int, CachedResponse], None]
    ) -> None:
        """Classify uncached sentences, each with its own template.

        This default sends each run of sentences that share a template to
        ``_classify_uncached`` in one call; ``texts`` arrive grouped by template.
        Backends that can batch or parallelize across templates override it.
        """
        identities = [template_id(template) for template in templates]
        start = 0
        while start < len(texts):
            end = start + 1
            while end < len(texts) and identities[end] == identities[start]:
                end += 1

            def shifted(index: int, response: CachedResponse, offset: int = start) -> None:
                on_result(offset + index, response)

            self._classify_uncached(texts[start:end], templates[start], shifted)
            start = end


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
