"""Bootstrap intervals: coverage of the point value, determinism, pairing, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from l2d_utils.metrics import accuracy, class_f1
from l2d_utils.uncertainty import bootstrap_interval, paired_bootstrap_difference


@pytest.fixture
def labels_and_predictions():
    generator = np.random.default_rng(1)
    y_true = generator.integers(0, 2, 400)
    noisy = np.where(generator.random(400) < 0.15, 1 - y_true, y_true)
    worse = np.where(generator.random(400) < 0.30, 1 - y_true, y_true)
    return y_true, noisy, worse


def test_interval_contains_point_value(labels_and_predictions):
    y_true, noisy, _ = labels_and_predictions
    interval = bootstrap_interval(class_f1, y_true, noisy)
    assert interval.low <= interval.value <= interval.high


def test_interval_is_reproducible(labels_and_predictions):
    y_true, noisy, _ = labels_and_predictions
    assert bootstrap_interval(accuracy, y_true, noisy, random_state=3) == bootstrap_interval(accuracy, y_true, noisy, random_state=3)


def test_interval_narrows_with_confidence(labels_and_predictions):
    y_true, noisy, _ = labels_and_predictions
    wide = bootstrap_interval(accuracy, y_true, noisy, confidence=0.99)
    narrow = bootstrap_interval(accuracy, y_true, noisy, confidence=0.5)
    assert narrow.high - narrow.low < wide.high - wide.low


def test_accuracy_interval_matches_binomial_width(labels_and_predictions):
    y_true, noisy, _ = labels_and_predictions
    interval = bootstrap_interval(accuracy, y_true, noisy, n_resamples=4000)
    p = interval.value
    normal_width = 2 * 1.96 * np.sqrt(p * (1 - p) / len(y_true))
    assert interval.high - interval.low == pytest.approx(normal_width, rel=0.15)


def test_paired_difference_detects_clear_gap(labels_and_predictions):
    y_true, noisy, worse = labels_and_predictions
    result = paired_bootstrap_difference(accuracy, y_true, noisy, worse)
    assert result.low > 0
    assert result.share_not_better < 0.01


def test_paired_difference_of_identical_methods_is_zero(labels_and_predictions):
    y_true, noisy, _ = labels_and_predictions
    result = paired_bootstrap_difference(accuracy, y_true, noisy, noisy)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert result.share_not_better == 1.0


def test_pairing_narrows_difference_interval(labels_and_predictions):
    y_true, noisy, _ = labels_and_predictions
    almost_same = noisy.copy()
    almost_same[:10] = 1 - almost_same[:10]
    paired = paired_bootstrap_difference(accuracy, y_true, noisy, almost_same)
    single = bootstrap_interval(accuracy, y_true, noisy)
    assert paired.high - paired.low < (single.high - single.low) / 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"y_true": [1], "y_pred": [1]}, "at least 2"),
        ({"y_true": [0, 1], "y_pred": [0, 1, 1]}, "same shape"),
        ({"y_true": [0, 1], "y_pred": [0, 1], "n_resamples": 10}, "too few"),
        ({"y_true": [0, 1], "y_pred": [0, 1], "confidence": 95}, "between 0 and 1"),
    ],
)
def test_bad_input_is_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_interval(accuracy, **arguments)
