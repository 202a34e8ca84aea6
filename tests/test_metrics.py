"""Specification of l2d_utils.metrics: scores where an unparseable LLM reply (-1) is wrong."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from l2d_utils.metrics import (
    accuracy,
    class_f1,
    combine_predictions,
    macro_f1,
    precision_recall,
    score_system,
)

UNPARSEABLE = -1


@pytest.fixture(params=[0, 1, 2])
def random_labels(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    """200 labels of 3 classes and predictions that include unparseable replies."""
    rng = np.random.default_rng(request.param)
    y_true = rng.integers(0, 3, size=200)
    y_pred = rng.integers(-1, 3, size=200)
    return y_true, y_pred


# Agreement with scikit-learn


@pytest.mark.parametrize("positive", [0, 1, 2])
def test_class_f1_matches_sklearn(random_labels: tuple[np.ndarray, np.ndarray], positive: int) -> None:
    y_true, y_pred = random_labels

    expected = f1_score(y_true, y_pred, labels=[positive], average=None, zero_division=0)[0]

    assert class_f1(y_true, y_pred, positive=positive) == pytest.approx(expected)


def test_binary_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 2, size=300)
    y_pred = rng.integers(0, 2, size=300)

    assert class_f1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred))


def test_macro_f1_matches_sklearn(random_labels: tuple[np.ndarray, np.ndarray]) -> None:
    y_true, y_pred = random_labels

    expected = f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro", zero_division=0)

    assert macro_f1(y_true, y_pred, num_classes=3) == pytest.approx(expected)


def test_accuracy_matches_sklearn(random_labels: tuple[np.ndarray, np.ndarray]) -> None:
    y_true, y_pred = random_labels

    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))


def test_class_f1_absent_class_is_zero() -> None:
    assert class_f1([0, 0, 0], [0, 0, 0], positive=1) == 0.0


def test_macro_f1_counts_absent_class() -> None:
    """A class neither present nor predicted adds an F1 of 0 to the mean."""
    assert macro_f1([0, 1], [0, 1], num_classes=3) == pytest.approx(2 / 3)


# Unparseable replies


def test_unparseable_is_wrong() -> None:
    assert accuracy([0, 1], [UNPARSEABLE, UNPARSEABLE]) == 0.0


def test_unparseable_on_positive_is_false_negative() -> None:
    y_true = [1, 1, 0]
    y_pred = [1, UNPARSEABLE, 0]

    precision, recall = precision_recall(y_true, y_pred)

    assert recall == 0.5
    assert precision == 1.0
    assert class_f1(y_true, y_pred) == pytest.approx(2 / 3)


def test_unparseable_on_negative_adds_no_false_positive() -> None:
    y_true = [1, 0]
    y_pred = [1, UNPARSEABLE]

    assert class_f1(y_true, y_pred) == 1.0
    assert precision_recall(y_true, y_pred) == (1.0, 1.0)
    assert accuracy(y_true, y_pred) == 0.5


def test_unparseable_not_counted_for_class_zero() -> None:
    y_true = [0, 0]
    y_pred = [0, UNPARSEABLE]

    assert class_f1(y_true, y_pred, positive=0) == pytest.approx(2 / 3)


def test_precision_nan_when_never_predicted() -> None:
    precision, recall = precision_recall([1, 0], [0, 0])

    assert np.isnan(precision)
    assert recall == 0.0


# combine_predictions


def test_combine_takes_llm_where_deferred() -> None:
    combined = combine_predictions([0, 0, 1, 1], [1, 1, 0, 0], [True, False, True, False])

    assert combined.tolist() == [1, 0, 0, 1]


def test_combine_falls_back_to_bert() -> None:
    combined = combine_predictions([1, 0, 1], [UNPARSEABLE, UNPARSEABLE, 0], [True, True, True])

    assert combined.tolist() == [1, 0, 0]


def test_combine_never_returns_unparseable() -> None:
    rng = np.random.default_rng(3)
    bert = rng.integers(0, 2, size=100)
    llm = rng.integers(-1, 2, size=100)
    defer = rng.random(100) < 0.5

    combined = combine_predictions(bert, llm, defer)

    assert set(combined.tolist()) <= {0, 1}


@pytest.mark.parametrize(
    ("bert", "llm", "defer"),
    [
        ([0, 1], [0, 1, 1], [True, False]),
        ([0, 1], [0, 1], [True]),
        ([0, 1, 1], [0, 1], [True, False, True]),
    ],
)
def test_combine_rejects_shape_mismatch(bert: list[int], llm: list[int], defer: list[bool]) -> None:
    with pytest.raises(ValueError, match="Shapes differ"):
        combine_predictions(bert, llm, defer)


# score_system


def test_score_system_llm_rate() -> None:
    score = score_system([1, 0, 1, 0], [1, 0, 0, 0], [1, 0, 1, 0], [False, False, True, True])

    assert score.llm_rate == 0.5
    assert score.f1 == 1.0
    assert score.accuracy == 1.0


def test_score_system_no_deferral_is_bert() -> None:
    y_true = [1, 0, 1, 0]
    bert = [1, 1, 0, 0]

    score = score_system(y_true, bert, [1, 0, 1, 0], [False] * 4)

    assert score.llm_rate == 0.0
    assert score.f1 == class_f1(y_true, bert)
    assert score.accuracy == accuracy(y_true, bert)


def test_score_system_unparseable_uses_bert() -> None:
    score = score_system([1, 0], [1, 0], [UNPARSEABLE, UNPARSEABLE], [True, True])

    assert score.accuracy == 1.0
    assert score.llm_rate == 1.0


def test_score_system_macro_for_three_classes() -> None:
    y_true = [0, 1, 2, 2]
    bert = [0, 1, 1, 2]

    score = score_system(y_true, bert, bert, [False] * 4, num_classes=3)

    assert score.f1 == pytest.approx(macro_f1(y_true, bert, num_classes=3))


# Invalid input


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        ([0, 1], [0, 1, 1]),
        ([0, 1, 1], [0]),
        ([[0, 1]], [[0, 1]]),
        (0, 1),
    ],
)
@pytest.mark.parametrize("metric", [accuracy, class_f1, precision_recall])
def test_metrics_reject_shape_mismatch(metric, y_true, y_pred) -> None:
    with pytest.raises(ValueError, match="1-D of equal length"):
        metric(y_true, y_pred)


@pytest.mark.parametrize("metric", [accuracy, class_f1, precision_recall])
def test_metrics_reject_empty_input(metric) -> None:
    with pytest.raises(ValueError, match="empty"):
        metric([], [])


def test_macro_f1_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        macro_f1([], [], num_classes=2)


def test_score_system_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        score_system([], [], [], [])
