"""Specification of retrieved few-shot prompts, the nearest-neighbour expert, the probability threshold and classify_each.

Most tests use 2-D unit vectors at known angles, so the cosine similarity of
two rows is the cosine of their angle difference and every ranking can be read
off the angles. One test embeds a few invented sentences with the packaged MiniLM.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pytest

import l2d_utils.llm.retrieval as retrieval
from l2d_utils.llm.base import LLMBackend, template_id
from l2d_utils.llm.cache import CachedResponse, ResponseCache
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT, PromptTemplate
from l2d_utils.llm.retrieval import (
    agreement_rate,
    balanced_neighbours,
    embed_texts,
    nearest_label,
    nearest_neighbours,
    retrieved_templates,
    tune_probability_threshold,
)
from l2d_utils.metrics import class_f1


def unit_vectors(angles: Sequence[float]) -> np.ndarray:
    angles = np.asarray(angles, dtype=np.float64)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


# Pool row i sits at POOL_ANGLES[i] radians. A query at angle 0 ranks the rows 0, 1, 2, 3, 4, 5.
POOL_ANGLES = [0.0, 0.1, 0.2, 0.3, 0.5, 1.0]
POOL_TEXTS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
POOL_LABELS = np.array([1, 0, 1, 0, 0, 1])
POOL = unit_vectors(POOL_ANGLES)
QUERY_AT_ALPHA = unit_vectors([0.0])


# nearest_neighbours: exclusion of identical texts


def test_nearest_excludes_identical_text() -> None:
    indices = nearest_neighbours(QUERY_AT_ALPHA, POOL, k=3, query_texts=["alpha"], pool_texts=POOL_TEXTS)

    assert indices.tolist() == [[1, 2, 3]]


def test_nearest_keeps_identical_text_without_flag() -> None:
    indices = nearest_neighbours(QUERY_AT_ALPHA, POOL, k=3, query_texts=["alpha"], pool_texts=POOL_TEXTS, exclude_identical=False)

    assert indices.tolist() == [[0, 1, 2]]


def test_nearest_without_flag_needs_no_texts() -> None:
    indices = nearest_neighbours(QUERY_AT_ALPHA, POOL, k=2, exclude_identical=False)

    assert indices.tolist() == [[0, 1]]


def test_nearest_exclusion_strips_whitespace() -> None:
    indices = nearest_neighbours(QUERY_AT_ALPHA, POOL, k=1, query_texts=["  alpha\n"], pool_texts=POOL_TEXTS)

    assert indices.tolist() == [[1]]


def test_nearest_excludes_every_repeat() -> None:
    pool = unit_vectors([0.0, 0.05, 0.1, 0.2])
    texts = ["alpha", "alpha", "beta", "alpha "]

    indices = nearest_neighbours(QUERY_AT_ALPHA, pool, k=1, query_texts=["alpha"], pool_texts=texts)

    assert indices.tolist() == [[2]]


def test_nearest_keeps_similar_but_different_text() -> None:
    # Exact match only: a sentence differing in one character is a legitimate example.
    indices = nearest_neighbours(QUERY_AT_ALPHA, POOL, k=1, query_texts=["alpha."], pool_texts=POOL_TEXTS)

    assert indices.tolist() == [[0]]


def test_nearest_exclusion_is_per_query() -> None:
    queries = unit_vectors([0.0, 0.0])

    indices = nearest_neighbours(queries, POOL, k=1, query_texts=["alpha", "something else"], pool_texts=POOL_TEXTS)

    assert indices[:, 0].tolist() == [1, 0]


# nearest_neighbours: ordering


def test_nearest_orders_most_similar_first() -> None:
    query = unit_vectors([0.45])  # distances: epsilon 0.05, delta 0.15, gamma 0.25, beta 0.35

    indices = nearest_neighbours(query, POOL, k=4, exclude_identical=False)

    assert indices.tolist() == [[4, 3, 2, 1]]


def test_nearest_ties_go_to_lower_index() -> None:
    pool = unit_vectors([0.3, 0.1, 0.1, 0.1])

    indices = nearest_neighbours(QUERY_AT_ALPHA, pool, k=2, exclude_identical=False)

    assert indices.tolist() == [[1, 2]]


def test_nearest_ignores_vector_length() -> None:
    scaled_pool = POOL * np.array([[5.0], [0.1], [2.0], [1.0], [3.0], [0.5]])

    indices = nearest_neighbours(QUERY_AT_ALPHA * 7.0, scaled_pool, k=3, exclude_identical=False)

    assert indices.tolist() == [[0, 1, 2]]


def test_nearest_returns_int_array_shape() -> None:
    queries = unit_vectors([0.0, 0.4, 0.9])

    indices = nearest_neighbours(queries, POOL, k=2, exclude_identical=False)

    assert indices.shape == (3, 2)
    assert indices.dtype == np.int64


def test_nearest_same_across_query_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    queries = unit_vectors([0.0, 0.15, 0.4, 0.7, 1.2])
    texts = ["alpha", "q1", "delta", "q3", "zeta"]
    whole = nearest_neighbours(queries, POOL, k=3, query_texts=texts, pool_texts=POOL_TEXTS)
    monkeypatch.setattr(retrieval, "_QUERY_BLOCK", 2)

    blocked = nearest_neighbours(queries, POOL, k=3, query_texts=texts, pool_texts=POOL_TEXTS)

    assert np.array_equal(blocked, whole)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(k=0), "k=0"),
        (dict(k=7), "k=7"),
        (dict(k=1.5), "integer"),
        (dict(k=True), "integer"),
        (dict(query_embeddings=np.array([1.0, 0.0])), "2-D"),
        (dict(query_embeddings=np.zeros((0, 2))), "2-D"),
        (dict(query_embeddings=np.ones((1, 3))), "dimensions"),
        (dict(query_embeddings=np.array([[np.nan, 1.0]])), "NaN"),
        (dict(pool_embeddings=np.vstack([POOL[:5], [[0.0, 0.0]]])), "all-zero"),
        (dict(query_texts=None), "query_texts is required"),
        (dict(pool_texts=None), "pool_texts is required"),
        (dict(query_texts=["alpha", "beta"]), "query_texts has 2"),
        (dict(pool_texts=POOL_TEXTS[:5]), "pool_texts has 5"),
        (dict(pool_texts=[*POOL_TEXTS[:5], None]), "must be strings"),
        (dict(k=6), "only 5 pool rows left"),
    ],
)
def test_nearest_rejects_bad_input(arguments: dict[str, Any], message: str) -> None:
    call = dict(query_embeddings=QUERY_AT_ALPHA, pool_embeddings=POOL, k=2, query_texts=["alpha"], pool_texts=POOL_TEXTS)
    call.update(arguments)

    with pytest.raises(ValueError, match=message):
        nearest_neighbours(**call)


# balanced_neighbours


def test_balanced_takes_nearest_of_each_label() -> None:
    indices = balanced_neighbours(QUERY_AT_ALPHA, POOL, POOL_LABELS, k=4, query_texts=["alpha"], pool_texts=POOL_TEXTS)

    # Label 0: beta (1), delta (3). Label 1 without alpha itself: gamma (2), zeta (5).
    assert sorted(indices[0].tolist()) == [1, 2, 3, 5]


def test_balanced_orders_by_similarity() -> None:
    indices = balanced_neighbours(QUERY_AT_ALPHA, POOL, POOL_LABELS, k=4, query_texts=["alpha"], pool_texts=POOL_TEXTS)

    assert indices.tolist() == [[1, 2, 3, 5]]


def test_balanced_has_half_of_each_label() -> None:
    queries = unit_vectors([0.0, 0.3, 0.6, 1.1])

    indices = balanced_neighbours(queries, POOL, POOL_LABELS, k=4, exclude_identical=False)

    assert (POOL_LABELS[indices] == 1).sum(axis=1).tolist() == [2, 2, 2, 2]


def test_balanced_keeps_identical_text_without_flag() -> None:
    indices = balanced_neighbours(QUERY_AT_ALPHA, POOL, POOL_LABELS, k=2, exclude_identical=False)

    assert indices.tolist() == [[0, 1]]


def test_balanced_excludes_identical_text() -> None:
    indices = balanced_neighbours(QUERY_AT_ALPHA, POOL, POOL_LABELS, k=2, query_texts=["alpha"], pool_texts=POOL_TEXTS)

    assert indices.tolist() == [[1, 2]]


def test_balanced_three_labels() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])

    indices = balanced_neighbours(QUERY_AT_ALPHA, POOL, labels, k=3, exclude_identical=False)

    assert indices.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(k=3), "multiple of the 2 labels"),
        (dict(k=0), "multiple of the 2 labels"),
        (dict(k=2.0), "multiple of the 2 labels"),
        (dict(k=8), "needs 4 pool rows of label 0"),
        (dict(k=6), "only 2 pool rows left"),
        (dict(pool_labels=np.ones(6, dtype=int)), "at least two labels"),
        (dict(pool_labels=POOL_LABELS[:5]), "6 integers"),
        (dict(pool_labels=POOL_LABELS.astype(float)), "6 integers"),
        (dict(pool_embeddings=np.ones((6, 3))), "dimensions"),
        (dict(query_texts=None), "query_texts is required"),
    ],
)
def test_balanced_rejects_bad_input(arguments: dict[str, Any], message: str) -> None:
    call = dict(
        query_embeddings=QUERY_AT_ALPHA,
        pool_embeddings=POOL,
        pool_labels=POOL_LABELS,
        k=2,
        query_texts=["alpha"],
        pool_texts=POOL_TEXTS,
    )
    call.update(arguments)

    with pytest.raises(ValueError, match=message):
        balanced_neighbours(**call)


# retrieved_templates

YES_NO_PROMPT = PromptTemplate(
    name="yes-no",
    version="3",
    system="Reply yes or no.",
    examples=(("A fixed example.", "no"),),
    answers=("no", "yes"),
    class_names=("negative", "positive"),
)


def build_templates(neighbours: list[list[int]], query_texts: list[str] | None = None) -> list[PromptTemplate]:
    query_texts = query_texts or [f"query {i}" for i in range(len(neighbours))]
    return retrieved_templates(YES_NO_PROMPT, query_texts, np.array(neighbours), POOL_TEXTS, POOL_LABELS, "knn-3")


def test_templates_put_most_similar_last() -> None:
    template = build_templates([[1, 2, 3]])[0]

    assert [text for text, _ in template.examples] == ["delta", "gamma", "beta"]


def test_templates_map_labels_to_answers() -> None:
    template = build_templates([[1, 2, 3]])[0]

    assert [answer for _, answer in template.examples] == ["no", "yes", "no"]


def test_templates_keep_base_system_and_answers() -> None:
    template = build_templates([[1, 2, 3]])[0]

    assert template.system == YES_NO_PROMPT.system
    assert template.answers == YES_NO_PROMPT.answers
    assert template.class_names == YES_NO_PROMPT.class_names


def test_templates_name_and_version() -> None:
    template = build_templates([[1, 2, 3]])[0]

    assert template.name == "yes-no-knn-3"
    assert template.version == f"3.r{retrieval.RETRIEVAL_TEMPLATE_VERSION}"


def test_templates_one_per_query() -> None:
    templates = build_templates([[1, 2, 3], [4, 5, 0], [1, 2, 3]])

    assert len(templates) == 3


def test_templates_fingerprints_differ_by_neighbours() -> None:
    first, second = build_templates([[1, 2, 3], [1, 3, 2]])

    assert first.fingerprint() != second.fingerprint()


def test_templates_fingerprints_equal_for_same_neighbours() -> None:
    first, second = build_templates([[1, 2, 3], [1, 2, 3]])

    assert first.fingerprint() == second.fingerprint()


def test_templates_fingerprint_differs_from_base() -> None:
    template = build_templates([[1, 2, 3]])[0]

    assert template.fingerprint() != YES_NO_PROMPT.fingerprint()


def test_templates_render_examples_before_input() -> None:
    template = build_templates([[1, 2]])[0]

    messages = template.messages("the input")

    assert [message["content"] for message in messages] == ["Reply yes or no.", "gamma", "yes", "beta", "no", "the input"]


def test_templates_log_inputs_shown_as_examples(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="l2d_utils.llm.retrieval"):
        build_templates([[0, 1], [1, 2]], query_texts=["alpha", "alpha"])

    assert "1 of them show the input's own text" in caplog.text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(name_suffix=""), "name_suffix"),
        (dict(query_texts=["only one"]), "Q = 1"),
        (dict(neighbour_indices=np.array([1, 2])), "shape"),
        (dict(neighbour_indices=np.zeros((2, 0), dtype=int)), "shape"),
        (dict(neighbour_indices=np.array([[1.0], [2.0]])), "integers"),
        (dict(neighbour_indices=np.array([[1], [6]])), "0..5"),
        (dict(neighbour_indices=np.array([[1], [-1]])), "0..5"),
        (dict(pool_labels=POOL_LABELS[:5]), "6 integers"),
        (dict(pool_labels=np.array([0, 2, 1, 0, 0, 1])), "must index base.answers"),
        (dict(pool_texts=["alpha", "", "gamma", "delta", "epsilon", "zeta"]), "Pool text 1 is empty"),
    ],
)
def test_templates_reject_bad_input(arguments: dict[str, Any], message: str) -> None:
    call = dict(
        base=YES_NO_PROMPT,
        query_texts=["first", "second"],
        neighbour_indices=np.array([[1], [2]]),
        pool_texts=POOL_TEXTS,
        pool_labels=POOL_LABELS,
        name_suffix="knn-1",
    )
    call.update(arguments)

    with pytest.raises(ValueError, match=message):
        retrieved_templates(**call)


# nearest_label and agreement_rate


def test_nearest_label_uses_first_column() -> None:
    labels = nearest_label(np.array([[2, 1], [1, 0], [5, 3]]), POOL_LABELS)

    assert labels.tolist() == [1, 0, 1]


def test_nearest_label_follows_exclusion() -> None:
    indices = nearest_neighbours(QUERY_AT_ALPHA, POOL, k=1, query_texts=["alpha"], pool_texts=POOL_TEXTS)

    assert nearest_label(indices, POOL_LABELS).tolist() == [0]


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (np.array([1, 2]), "shape"),
        (np.zeros((0, 1), dtype=int), "shape"),
        (np.array([[0.0]]), "integers"),
        (np.array([[6]]), "0..5"),
    ],
)
def test_nearest_label_rejects_bad_input(indices: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nearest_label(indices, POOL_LABELS)


def test_agreement_rate_counts_equal_labels() -> None:
    assert agreement_rate([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5


def test_agreement_rate_unparseable_disagrees() -> None:
    assert agreement_rate([-1, 0], [0, 0]) == 0.5


@pytest.mark.parametrize(
    ("labels_a", "labels_b"),
    [([1, 0], [1]), ([], []), ([[1, 0]], [[1, 0]])],
)
def test_agreement_rate_rejects_bad_input(labels_a: list, labels_b: list) -> None:
    with pytest.raises(ValueError, match="equal length"):
        agreement_rate(labels_a, labels_b)


# tune_probability_threshold

# With y = [1, 0, 0, 1], threshold 0.9 labels one input positive (F1 2/3) and
# threshold 0.2 labels all four positive (F1 4/6 = 2/3). The higher one wins.
TIE_PROBABILITIES = np.array([0.9, 0.6, 0.5, 0.2])
TIE_LABELS = np.array([1, 0, 0, 1])


def test_threshold_tie_construction_is_a_tie() -> None:
    assert class_f1(TIE_LABELS, TIE_PROBABILITIES >= 0.9) == class_f1(TIE_LABELS, TIE_PROBABILITIES >= 0.2)


def test_threshold_tie_goes_to_higher() -> None:
    threshold, _ = tune_probability_threshold(TIE_PROBABILITIES, TIE_LABELS)

    assert threshold == 0.9


def test_threshold_tie_reports_f1() -> None:
    _, f1 = tune_probability_threshold(TIE_PROBABILITIES, TIE_LABELS)

    assert f1 == pytest.approx(2 / 3)


def test_threshold_finds_best_value() -> None:
    # F1 at 0.9, 0.8, 0.6, 0.4: 2/3, 1/2, 4/5, 2/3.
    threshold, f1 = tune_probability_threshold([0.9, 0.8, 0.6, 0.4], [1, 0, 1, 0])

    assert threshold == 0.6
    assert f1 == pytest.approx(0.8)


def test_threshold_labels_equal_probabilities_together() -> None:
    # At 0.7 both inputs with probability 0.7 are labelled positive: F1 2/4, against 4/5 at 0.3.
    threshold, _ = tune_probability_threshold([0.7, 0.7, 0.3], [1, 0, 1])

    assert threshold == 0.3


def test_threshold_below_half_possible() -> None:
    threshold, f1 = tune_probability_threshold([0.45, 0.4, 0.1, 0.05], [1, 1, 0, 0])

    assert threshold == 0.4
    assert f1 == 1.0


@pytest.mark.parametrize(
    ("probabilities", "y_true", "message"),
    [
        ([0.5, 0.2], [1], "equal length"),
        ([], [], "non-empty"),
        ([[0.5]], [[1]], "1-D"),
        ([0.5, np.nan], [1, 0], "no NaN"),
        ([0.5, 1.2], [1, 0], r"\[0, 1\]"),
        ([0.5, -0.1], [1, 0], r"\[0, 1\]"),
        ([0.5, 0.2], [1, 2], "only 0 and 1"),
        ([0.5, 0.2], [0, 0], "no positive label"),
    ],
)
def test_threshold_rejects_bad_input(probabilities: list, y_true: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tune_probability_threshold(probabilities, y_true)


# LLMBackend.classify_each


def response(label: int) -> CachedResponse:
    return CachedResponse(
        raw_reply=str(label),
        label=label,
        probabilities=None,
        prompt_tokens=10,
        completion_tokens=1,
        latency_ms=1.0,
        request_id=None,
        created_at=1_700_000_000.0,
    )


class RecordingBackend(LLMBackend):
    """Backend that returns the label of its template's last example and records each call."""

    def __init__(self, cache: ResponseCache | None) -> None:
        super().__init__("test", "recording", cache)
        self.calls: list[tuple[str, list[str]]] = []

    @property
    def parameters(self) -> Mapping[str, Any]:
        return {"temperature": 0.0}

    def _classify_uncached(self, texts: Sequence[str], template: PromptTemplate, on_result) -> None:
        self.calls.append((template_id(template), list(texts)))
        label = template.answers.index(template.examples[-1][1])
        for position in range(len(texts)):
            on_result(position, response(label))


def last_example_template(answer: str) -> PromptTemplate:
    return PromptTemplate(
        name="ade-test",
        version="1",
        system=ADE_PAPER_PROMPT.system,
        examples=(("An example sentence.", answer),),
        answers=ADE_PAPER_PROMPT.answers,
        class_names=ADE_PAPER_PROMPT.class_names,
    )


POSITIVE = last_example_template("1")
NEGATIVE = last_example_template("0")
TEXTS = ["first sentence", "second sentence", "third sentence", "fourth sentence"]
TEMPLATES = [POSITIVE, NEGATIVE, POSITIVE, NEGATIVE]


@pytest.fixture
def cache(tmp_path: Path):
    cache = ResponseCache(tmp_path / "responses.sqlite")
    yield cache
    cache.close()


def test_classify_each_uses_own_template(cache: ResponseCache) -> None:
    results = RecordingBackend(cache).classify_each(TEXTS, TEMPLATES)

    assert [result.label for result in results] == [1, 0, 1, 0]


def test_classify_each_groups_by_template(cache: ResponseCache) -> None:
    backend = RecordingBackend(cache)

    backend.classify_each(TEXTS, TEMPLATES)

    assert backend.calls == [
        (template_id(POSITIVE), ["first sentence", "third sentence"]),
        (template_id(NEGATIVE), ["second sentence", "fourth sentence"]),
    ]


def test_classify_each_groups_equal_templates(cache: ResponseCache) -> None:
    backend = RecordingBackend(cache)
    copies = [last_example_template("1") for _ in TEXTS]

    backend.classify_each(TEXTS, copies)

    assert len(backend.calls) == 1


def test_classify_each_second_call_cached(cache: ResponseCache) -> None:
    RecordingBackend(cache).classify_each(TEXTS, TEMPLATES)
    backend = RecordingBackend(cache)

    results = backend.classify_each(TEXTS, TEMPLATES)

    assert backend.calls == []
    assert all(result.cached for result in results)
    assert [result.label for result in results] == [1, 0, 1, 0]


def test_classify_each_first_call_not_cached(cache: ResponseCache) -> None:
    results = RecordingBackend(cache).classify_each(TEXTS, TEMPLATES)

    assert not any(result.cached for result in results)


def test_classify_each_sends_only_misses(cache: ResponseCache) -> None:
    RecordingBackend(cache).classify_each(TEXTS[:2], TEMPLATES[:2])
    backend = RecordingBackend(cache)

    results = backend.classify_each(TEXTS, TEMPLATES)

    assert backend.calls == [(template_id(POSITIVE), ["third sentence"]), (template_id(NEGATIVE), ["fourth sentence"])]
    assert [result.cached for result in results] == [True, True, False, False]


def test_classify_each_keys_differ_by_template(cache: ResponseCache) -> None:
    RecordingBackend(cache).classify_each(["same sentence", "same sentence"], [POSITIVE, NEGATIVE])

    assert len(cache) == 2


def test_classify_each_without_cache_calls_again() -> None:
    backend = RecordingBackend(None)
    backend.classify_each(TEXTS, TEMPLATES)
    backend.classify_each(TEXTS, TEMPLATES)

    assert len(backend.calls) == 4


def test_classify_each_rejects_length_mismatch(cache: ResponseCache) -> None:
    with pytest.raises(ValueError, match="4 texts and 3 templates"):
        RecordingBackend(cache).classify_each(TEXTS, TEMPLATES[:3])


def test_classify_each_empty_input(cache: ResponseCache) -> None:
    backend = RecordingBackend(cache)

    assert backend.classify_each([], []) == []
    assert backend.calls == []


def test_classify_makes_one_call_per_template(cache: ResponseCache) -> None:
    backend = RecordingBackend(cache)

    backend.classify(TEXTS, POSITIVE)

    assert backend.calls == [(template_id(POSITIVE), TEXTS)]


def test_classify_each_with_retrieved_templates(cache: ResponseCache) -> None:
    queries = unit_vectors([0.0, 0.95])
    query_texts = ["alpha", "near zeta"]
    indices = nearest_neighbours(queries, POOL, k=2, query_texts=query_texts, pool_texts=POOL_TEXTS)
    templates = retrieved_templates(ADE_PAPER_PROMPT, query_texts, indices, POOL_TEXTS, POOL_LABELS, "knn-2")
    backend = RecordingBackend(cache)

    results = backend.classify_each(query_texts, templates)

    # The recording backend echoes the most similar example's label: beta (0) and zeta (1).
    assert [result.label for result in results] == [0, 1]
    assert len(backend.calls) == 2


# embed_texts with the packaged MiniLM

SENTENCES = [
    "The patient developed a skin rash after taking penicillin.",
    "After penicillin was given, the patient broke out in a rash.",
    "The hospital car park was resurfaced in May.",
    "Serum creatinine rose sharply during vancomycin therapy.",
    "Kidney function worsened while the patient received vancomycin.",
    "The committee meets on the first Tuesday of each month.",
    "Lithium was continued at the same dose.",
    "Headache.",
]


@pytest.fixture(scope="module")
def minilm_embeddings() -> np.ndarray:
    return embed_texts(SENTENCES, batch_size=3)


def test_embeddings_shape(minilm_embeddings: np.ndarray) -> None:
    assert minilm_embeddings.shape == (len(SENTENCES), 384)


def test_embeddings_unit_norm(minilm_embeddings: np.ndarray) -> None:
    assert np.allclose(np.linalg.norm(minilm_embeddings, axis=1), 1.0, atol=1e-5)


def test_embeddings_paraphrase_nearer_than_unrelated(minilm_embeddings: np.ndarray) -> None:
    similarity = minilm_embeddings @ minilm_embeddings.T

    assert similarity[0, 1] > similarity[0, 2]
    assert similarity[3, 4] > similarity[3, 5]


def test_embeddings_keep_input_order(minilm_embeddings: np.ndarray) -> None:
    # Batches are formed longest first, but each row must still belong to its own sentence.
    alone = embed_texts([SENTENCES[7]])

    assert np.allclose(alone[0], minilm_embeddings[7], atol=1e-4)


def test_embeddings_nearest_is_paraphrase(minilm_embeddings: np.ndarray) -> None:
    queries = minilm_embeddings[[0, 3]]

    indices = nearest_neighbours(queries, minilm_embeddings, k=1, query_texts=[SENTENCES[0], SENTENCES[3]], pool_texts=SENTENCES)

    assert indices[:, 0].tolist() == [1, 4]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(texts=[]), "No texts"),
        (dict(texts=["fine", None]), "must be strings"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(max_length=1), "max_length=1"),
    ],
)
def test_embed_rejects_bad_input(arguments: dict[str, Any], message: str) -> None:
    call = dict(texts=["A sentence."])
    call.update(arguments)

    with pytest.raises(ValueError, match=message):
        embed_texts(**call)
