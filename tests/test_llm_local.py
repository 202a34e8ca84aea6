"""The local backend with the packaged Qwen2.5-Coder-1.5B: prompt rendering, scoring paths, cache.

These tests load the real packaged model, so they are marked slow. Loading the
converted weights takes a few seconds; the first conversion of the GGUF file
takes about a minute.
"""

from __future__ import annotations

import numpy as np
import pytest

from l2d_utils.config import PACKAGED_QWEN
from l2d_utils.llm.cache import ResponseCache
from l2d_utils.llm.local import LocalBackend, softmax
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT, PromptTemplate
from l2d_utils.models import GGUF_SHA256, packaged_gguf_path, sha256_of

pytestmark = pytest.mark.slow

SENTENCES = [
    "Fatal hepatitis due to ketoconazole.",
    "Blood pressure was recorded at each visit.",
    "A generalized rash appeared two days after starting allopurinol.",
    "The trial enrolled 120 adults with type 2 diabetes.",
    "Lithium toxicity presented with coarse tremor and confusion.",
    "CONCLUSIONS: further studies are needed.",
]
#: Largest allowed difference between answer probabilities of the scoring paths.
#: They differ only by bfloat16 rounding in differently shaped matrix products:
#: logits near 20 round in steps of 0.125, which moves a probability near 0.5
#: by up to about 0.03 (0.0305 measured on 32 ADE sentences by the benchmark).
PROBABILITY_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def backend():
    return LocalBackend(PACKAGED_QWEN, cache=None, batch_size=4)


def test_joined_gguf_matches_release_hash():
    assert sha256_of(packaged_gguf_path()) == GGUF_SHA256


def test_prefix_and_suffix_tokenize_like_whole_chat(backend):
    prefix, suffix = backend.render(ADE_PAPER_PROMPT, SENTENCES[0])
    whole = backend._tokenizer.apply_chat_template(ADE_PAPER_PROMPT.messages(SENTENCES[0]), tokenize=True, add_generation_prompt=True)
    whole = whole if isinstance(whole, list) else list(whole["input_ids"])
    assert prefix + suffix == whole


def test_scoring_paths_agree(backend):
    plain = softmax(backend.score_plain(SENTENCES, ADE_PAPER_PROMPT))
    cached = softmax(backend.score_cached(SENTENCES, ADE_PAPER_PROMPT, batch_size=1))
    batched = softmax(backend.score_cached(SENTENCES, ADE_PAPER_PROMPT, batch_size=4))
    assert np.abs(plain - cached).max() <= PROBABILITY_TOLERANCE
    assert np.abs(plain - batched).max() <= PROBABILITY_TOLERANCE
    decided = np.abs(plain[:, 1] - 0.5) > PROBABILITY_TOLERANCE
    assert (plain.argmax(1)[decided] == batched.argmax(1)[decided]).all()


def test_classify_returns_probabilities(backend):
    results = backend.classify(SENTENCES[:2], ADE_PAPER_PROMPT)
    assert all(result.probabilities is not None and abs(sum(result.probabilities) - 1) < 1e-9 for result in results)
    assert [result.raw_reply for result in results] == [ADE_PAPER_PROMPT.answers[result.label] for result in results]


def test_second_classify_is_served_from_cache(backend, tmp_path, monkeypatch):
    cached_backend = LocalBackend(PACKAGED_QWEN, cache=ResponseCache(tmp_path / "cache.sqlite"), batch_size=4)
    cached_backend._tokenizer, cached_backend._network = backend._tokenizer, backend._network
    first = cached_backend.classify(SENTENCES[:3], ADE_PAPER_PROMPT)

    def fail(*args, **kwargs):
        raise AssertionError("the model was called although every response is cached")

    monkeypatch.setattr(cached_backend, "_classify_uncached", fail)
    second = cached_backend.classify(SENTENCES[:3], ADE_PAPER_PROMPT)
    assert [r.label for r in second] == [r.label for r in first]
    assert all(r.cached for r in second)
    assert [r.latency_ms for r in second] == [r.latency_ms for r in first]


def test_multi_token_answer_is_rejected(backend):
    template = PromptTemplate("long", "1", "Answer.", (), ("EFFECTIVE", "ADVERSE"), ("effective", "adverse"))
    with pytest.raises(ValueError, match="single-token"):
        backend.answer_token_ids(template)


def test_full_prompt_batches_match_plain_scoring(backend):
    other = PromptTemplate(
        "ade-other", "1", ADE_PAPER_PROMPT.system, ADE_PAPER_PROMPT.examples[:2], ADE_PAPER_PROMPT.answers, ADE_PAPER_PROMPT.class_names
    )
    templates = [ADE_PAPER_PROMPT, other, ADE_PAPER_PROMPT, other]
    batched = softmax(backend.score_full(SENTENCES[:4], templates, batch_size=4))
    one_by_one = np.vstack([softmax(backend.score_plain([text], template)) for text, template in zip(SENTENCES[:4], templates)])
    assert np.abs(batched - one_by_one).max() <= PROBABILITY_TOLERANCE


def test_classify_each_scores_mixed_templates(backend, tmp_path):
    other = PromptTemplate(
        "ade-other", "1", ADE_PAPER_PROMPT.system, ADE_PAPER_PROMPT.examples[:2], ADE_PAPER_PROMPT.answers, ADE_PAPER_PROMPT.class_names
    )
    cached_backend = LocalBackend(PACKAGED_QWEN, cache=ResponseCache(tmp_path / "cache.sqlite"), batch_size=4)
    cached_backend._tokenizer, cached_backend._network = backend._tokenizer, backend._network
    results = cached_backend.classify_each(SENTENCES[:4], [ADE_PAPER_PROMPT, other, other, ADE_PAPER_PROMPT])
    assert len(results) == 4
    assert all(not result.cached for result in results)
    assert all(result.cached for result in cached_backend.classify_each(SENTENCES[:4], [ADE_PAPER_PROMPT, other, other, ADE_PAPER_PROMPT]))
