"""Specification of l2d_utils.consensus: the agreement rule and the label-quality scores."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from l2d_utils.config import LLMSettings
from l2d_utils.consensus import (
    LABELER_PROMPTS,
    consensus_sample,
    label_quality,
    labeler_prompts,
    quality_table,
    vote,
    wilson_interval,
    worst_case_half_width,
)
from l2d_utils.llm.prompts import OUTCOME_PAPER_PROMPT
from l2d_utils.outcomes import OUTCOME_CLASSES


def test_vote_keeps_only_unanimous_parseable_rows() -> None:
    votes = [[0, 0], [1, 2], [2, 2], [-1, -1], [-1, 1], [1, 1]]
    agreed, label = vote(votes)
    assert agreed.tolist() == [True, False, True, False, False, True]
    assert label.tolist() == [0, -1, 2, -1, -1, 1]


def test_vote_with_three_labelers_needs_all() -> None:
    agreed, label = vote([[1, 1, 1], [1, 1, 0]])
    assert agreed.tolist() == [True, False]
    assert label.tolist() == [1, -1]


@pytest.mark.parametrize("votes", [[0, 1, 2], [[0], [1]]])
def test_vote_rejects_fewer_than_two_labelers(votes) -> None:
    with pytest.raises(ValueError, match="K >= 2"):
        vote(votes)


def test_same_model_gets_two_distinct_prompts() -> None:
    local = LLMSettings()
    prompts = labeler_prompts([local, local])
    assert [prompt.name for prompt in prompts] == [prompt.name for prompt in LABELER_PROMPTS]
    assert prompts[0].fingerprint() != prompts[1].fingerprint()


def test_labeler_prompts_reject_same_model_and_prompt() -> None:
    local = LLMSettings()
    with pytest.raises(ValueError, match="always agree"):
        labeler_prompts([local, local], prompts=[OUTCOME_PAPER_PROMPT, OUTCOME_PAPER_PROMPT])


def test_labeler_prompts_need_two_labelers_and_enough_prompts() -> None:
    with pytest.raises(ValueError, match="at least two"):
        labeler_prompts([LLMSettings()])
    with pytest.raises(ValueError, match="one prompt per labeler"):
        labeler_prompts([LLMSettings(model=f"m{k}") for k in range(3)])


def test_labeler_prompts_share_the_class_order() -> None:
    for prompt in LABELER_PROMPTS:
        assert prompt.class_names == OUTCOME_CLASSES
        assert len(set(prompt.answers)) == 3


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(139, 139)
    assert low == pytest.approx(0.9731, abs=5e-4)
    assert high == 1.0
    low, high = wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=5e-4)


@pytest.mark.parametrize("successes,count", [(5, 0), (-1, 10), (11, 10)])
def test_wilson_interval_rejects_bad_counts(successes: int, count: int) -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(successes, count)


def test_worst_case_half_width() -> None:
    assert worst_case_half_width(600) == pytest.approx(0.0400, abs=5e-4)
    with pytest.raises(ValueError):
        worst_case_half_width(0)


def test_label_quality_scores_and_intervals() -> None:
    human = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0] * 5)
    predicted = human.copy()
    predicted[:5] = (predicted[:5] + 1) % 3
    predicted[5] = -1
    row = label_quality(human, predicted, OUTCOME_CLASSES, n_resamples=200)
    assert row["n"] == 50
    assert row["accuracy"] == pytest.approx(44 / 50)
    assert row["accuracy_low"] < row["accuracy"] < row["accuracy_high"]
    for name in ("macro_f1", "f1_neutral", "f1_adverse", "f1_effective"):
        assert 0.0 <= row[f"{name}_low"] <= row[name] <= row[f"{name}_high"] <= 1.0


def test_label_quality_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="same shape"):
        label_quality([0, 1], [0], OUTCOME_CLASSES)
    with pytest.raises(ValueError, match="Human labels"):
        label_quality([0, 3], [0, 1], OUTCOME_CLASSES)


def test_quality_table_scores_consensus_on_agreements_only() -> None:
    human = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    first = np.array([0, 1, 2, 0, 1, 0, 1, 1])
    second = np.array([0, 1, 2, 0, 2, 0, 2, 1])
    table = quality_table(human, {"a": first, "b": second}, OUTCOME_CLASSES, n_resamples=100)
    assert table["labeler"].tolist() == ["a", "b", "consensus"]
    consensus = table.set_index("labeler").loc["consensus"]
    # Agreements: rows 0-3, 5 and 7; row 5 is a shared error.
    assert consensus["n"] == 6
    assert consensus["coverage"] == pytest.approx(6 / 8)
    assert consensus["accuracy"] == pytest.approx(5 / 6)


def test_consensus_sample_is_stratified_and_seeded() -> None:
    frame = pd.DataFrame({"row_id": range(300), "label": [0] * 150 + [1] * 100 + [2] * 50})
    sample = consensus_sample(frame, 60, seed=42)
    assert len(sample) == 60
    assert sample["label"].value_counts().to_dict() == {0: 30, 1: 20, 2: 10}
    pd.testing.assert_frame_equal(sample, consensus_sample(frame, 60, seed=42))
    assert len(consensus_sample(frame, None)) == 300
    with pytest.raises(ValueError, match="at least 10"):
        consensus_sample(frame, 5)


@pytest.mark.skipif(not os.environ.get("L2D_DATA_DIR"), reason="set L2D_DATA_DIR to the folder holding psytar/")
def test_no_prompt_example_is_a_psytar_sentence() -> None:
    """Prompts are printed in the book, so their examples must not be restricted sentences."""
    from l2d_utils.llm.prompts import TEMPLATES
    from l2d_utils.outcomes import load_psytar, normalize_for_search

    restricted = {normalize_for_search(text) for text in load_psytar()["text"]}
    examples = [text for template in TEMPLATES.values() for text, _ in template.examples]
    assert not [text for text in examples if normalize_for_search(text) in restricted]


def test_vote_rejects_fractional_labels() -> None:
    with pytest.raises(ValueError, match="whole-number"):
        vote([[0.7, 0.2]])


def test_label_quality_rejects_unknown_predicted_class() -> None:
    with pytest.raises(ValueError, match="Predicted labels"):
        label_quality([0, 1, 2], [0, 1, 5], OUTCOME_CLASSES)


@pytest.mark.parametrize("labelers", ["local", LLMSettings(), [LLMSettings(), {"model": "m"}]])
def test_labeler_prompts_reject_non_settings(labelers) -> None:
    with pytest.raises(ValueError, match="LLMSettings"):
        labeler_prompts(labelers)


@pytest.mark.parametrize("successes,count", [(5.5, 10), (5, 10.0)])
def test_wilson_interval_needs_whole_numbers(successes, count) -> None:
    with pytest.raises(ValueError, match="whole numbers"):
        wilson_interval(successes, count)


def test_consensus_sample_rejects_text_size() -> None:
    frame = pd.DataFrame({"row_id": range(30), "label": [0, 1, 2] * 10})
    with pytest.raises(ValueError, match="whole number"):
        consensus_sample(frame, "20")
