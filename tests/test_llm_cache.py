"""Specification of the response cache and of LLMBackend.classify's use of it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import pytest

from l2d_utils.llm.base import LLMBackend
from l2d_utils.llm.cache import CachedResponse, CacheMissError, ResponseCache, request_key
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT, PromptTemplate

MESSAGES = [{"role": "user", "content": "Intravenous azithromycin-induced ototoxicity."}]
PARAMETERS = {"temperature": 0.0, "max_tokens": 16}


def make_response(label: int = 1, **changes: Any) -> CachedResponse:
    fields = dict(
        raw_reply=str(label),
        label=label,
        probabilities=None,
        prompt_tokens=120,
        completion_tokens=1,
        latency_ms=42.5,
        request_id="chatcmpl-123",
        created_at=1_700_000_000.0,
    )
    fields.update(changes)
    return CachedResponse(**fields)


def make_key(**changes: Any) -> str:
    arguments = dict(provider="openai", model="gpt-4o-mini", template_id="ade-paper:1:abc", messages=MESSAGES, parameters=PARAMETERS)
    arguments.update(changes)
    return request_key(**arguments)


@pytest.fixture
def cache(tmp_path: Path):
    cache = ResponseCache(tmp_path / "responses.sqlite")
    yield cache
    cache.close()


# request_key


def test_key_is_stable() -> None:
    assert make_key() == make_key()


def test_key_ignores_parameter_order() -> None:
    assert make_key(parameters={"max_tokens": 16, "temperature": 0.0}) == make_key()


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "azure"},
        {"model": "gpt-4o"},
        {"template_id": "ade-paper:2:abc"},
        {"messages": [{"role": "user", "content": "Methotrexate is commonly used for rheumatoid arthritis."}]},
        {"parameters": {"temperature": 0.7, "max_tokens": 16}},
        {"parameters": {"temperature": 0.0, "max_tokens": 16, "seed": 1}},
    ],
)
def test_key_changes_with_each_input(change: dict[str, Any]) -> None:
    assert make_key(**change) != make_key()


# ResponseCache


def test_cache_miss_returns_none(cache: ResponseCache) -> None:
    assert cache.get(make_key()) is None


def test_cache_round_trip(cache: ResponseCache) -> None:
    response = make_response()
    cache.put(make_key(), response, "openai", "gpt-4o-mini", "ade-paper:1:abc")

    assert cache.get(make_key()) == response


def test_cache_round_trip_probabilities(cache: ResponseCache) -> None:
    response = make_response(probabilities=(0.25, 0.75))
    cache.put(make_key(), response, "local", "qwen", "ade-paper:1:abc")

    assert cache.get(make_key()).probabilities == (0.25, 0.75)


def test_cache_put_replaces(cache: ResponseCache) -> None:
    cache.put(make_key(), make_response(label=0), "openai", "gpt-4o-mini", "t")
    cache.put(make_key(), make_response(label=1), "openai", "gpt-4o-mini", "t")

    assert cache.get(make_key()).label == 1
    assert len(cache) == 1


def test_cache_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "responses.sqlite"
    first = ResponseCache(path)
    first.put(make_key(), make_response(), "openai", "gpt-4o-mini", "t")
    first.close()

    second = ResponseCache(path)
    try:
        assert second.get(make_key()) == make_response()
    finally:
        second.close()


def test_replay_only_miss_raises(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite", replay_only=True)
    try:
        with pytest.raises(CacheMissError, match="replay-only"):
            cache.get(make_key())
    finally:
        cache.close()


def test_replay_only_hit_returns(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    writer = ResponseCache(path)
    writer.put(make_key(), make_response(), "openai", "gpt-4o-mini", "t")
    writer.close()

    reader = ResponseCache(path, replay_only=True)
    try:
        assert reader.get(make_key()) == make_response()
    finally:
        reader.close()


def test_cache_concurrent_puts(cache: ResponseCache) -> None:
    def put_many(thread_index: int) -> None:
        for i in range(25):
            key = make_key(messages=[{"role": "user", "content": f"sentence {thread_index}-{i}"}])
            cache.put(key, make_response(), "openai", "gpt-4o-mini", "t")

    threads = [threading.Thread(target=put_many, args=(thread_index,)) for thread_index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(cache) == 100


# LLMBackend.classify with the cache


class ScriptedBackend(LLMBackend):
    """Backend that labels a sentence 1 when it contains "induced", else 0.

    With ``fail_after=n`` it raises after reporting the first ``n`` results.
    """

    def __init__(self, cache: ResponseCache | None, fail_after: int | None = None) -> None:
        super().__init__("test", "scripted", cache)
        self.fail_after = fail_after
        self.calls: list[str] = []

    @property
    def parameters(self) -> Mapping[str, Any]:
        return {"temperature": 0.0}

    def _classify_uncached(self, texts: Sequence[str], template: PromptTemplate, on_result) -> None:
        for i, text in enumerate(texts):
            if self.fail_after is not None and i == self.fail_after:
                raise RuntimeError("scripted failure")
            self.calls.append(text)
            label = 1 if "induced" in text else 0
            on_result(i, make_response(label=label, request_id=f"request-{len(self.calls)}"))


SENTENCES = [
    "Azithromycin-induced ototoxicity.",
    "Methotrexate is commonly used for rheumatoid arthritis.",
    "Vancomycin-induced kidney injury.",
    "Serum potassium was measured weekly.",
]


def test_classify_returns_labels_in_order(cache: ResponseCache) -> None:
    results = ScriptedBackend(cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert [result.label for result in results] == [1, 0, 1, 0]


def test_classify_second_run_uses_cache(cache: ResponseCache) -> None:
    ScriptedBackend(cache).classify(SENTENCES, ADE_PAPER_PROMPT)
    backend = ScriptedBackend(cache)

    results = backend.classify(SENTENCES, ADE_PAPER_PROMPT)

    assert backend.calls == []
    assert all(result.cached for result in results)
    assert [result.label for result in results] == [1, 0, 1, 0]


def test_classify_first_run_not_cached(cache: ResponseCache) -> None:
    results = ScriptedBackend(cache).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert not any(result.cached for result in results)


def test_classify_stores_results_before_failure(cache: ResponseCache) -> None:
    with pytest.raises(RuntimeError, match="scripted failure"):
        ScriptedBackend(cache, fail_after=2).classify(SENTENCES, ADE_PAPER_PROMPT)

    assert len(cache) == 2


def test_classify_resume_calls_only_rest(cache: ResponseCache) -> None:
    with pytest.raises(RuntimeError):
        ScriptedBackend(cache, fail_after=2).classify(SENTENCES, ADE_PAPER_PROMPT)
    backend = ScriptedBackend(cache)

    results = backend.classify(SENTENCES, ADE_PAPER_PROMPT)

    assert backend.calls == SENTENCES[2:]
    assert [result.cached for result in results] == [True, True, False, False]


def test_classify_replay_only_cold_raises(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "responses.sqlite", replay_only=True)
    backend = ScriptedBackend(cache)
    try:
        with pytest.raises(CacheMissError):
            backend.classify(SENTENCES, ADE_PAPER_PROMPT)
        assert backend.calls == []
    finally:
        cache.close()


def test_classify_without_cache_calls_every_time() -> None:
    backend = ScriptedBackend(None)
    backend.classify(SENTENCES, ADE_PAPER_PROMPT)
    backend.classify(SENTENCES, ADE_PAPER_PROMPT)

    assert len(backend.calls) == 2 * len(SENTENCES)


# Usage notes per run


def test_usage_counts_each_response_once_per_run(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    first, second = make_key(model="a"), make_key(model="b")
    chapter_3 = ResponseCache(path, run="laptop/03")
    chapter_3.put(first, make_response(prompt_tokens=100, latency_ms=10.0), "openai", "a", "t")
    chapter_3.get(first)  # read again by the same run: still one call
    chapter_3.close()
    chapter_5 = ResponseCache(path, run="laptop/05")
    assert chapter_5.get(first) is not None
    chapter_5.put(second, make_response(prompt_tokens=50, completion_tokens=2, latency_ms=5.0), "openai", "b", "t")
    chapter_5.close()

    reader = ResponseCache(path, run="")
    usage = reader.usage("laptop/")
    assert [(row["run"], row["model"], row["calls"], row["prompt_tokens"]) for row in usage] == [
        ("laptop/03", "a", 1, 100),
        ("laptop/05", "a", 1, 100),
        ("laptop/05", "b", 1, 50),
    ]
    assert reader.usage("smoke/") == []
    assert reader.forget_usage("laptop/05") == 2
    assert [row["run"] for row in reader.usage()] == ["laptop/03"]
    with pytest.raises(ValueError, match="must not be empty"):
        reader.forget_usage("")
    reader.close()


def test_usage_run_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2D_USAGE_RUN", "smoke/07")
    cache = ResponseCache(tmp_path / "responses.sqlite")
    cache.put(make_key(), make_response(), "openai", "gpt-4o-mini", "t")
    assert [row["run"] for row in cache.usage()] == ["smoke/07"]
    cache.close()
    monkeypatch.delenv("L2D_USAGE_RUN")
    unnamed = ResponseCache(tmp_path / "other.sqlite")
    unnamed.put(make_key(), make_response(), "openai", "gpt-4o-mini", "t")
    assert unnamed.usage() == []
    unnamed.close()
