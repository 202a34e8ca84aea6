"""Deferral curves: envelope, area, the call rate that recovers part of the gap, baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from l2d_utils.curves import (
    area_under_curve,
    fixed_threshold_curve,
    random_deferral_curve,
    rate_to_recover,
    upper_envelope,
)


def curve(points):
    return pd.DataFrame(points, columns=["llm_rate", "f1"])


def test_envelope_keeps_best_f1_per_rate():
    envelope = upper_envelope(curve([(0.0, 0.8), (0.1, 0.85), (0.1, 0.9), (0.2, 0.7)]))
    assert envelope["f1"].tolist() == [0.8, 0.9, 0.9]


def test_area_of_flat_curve_is_its_f1():
    assert area_under_curve(curve([(0.0, 0.9), (1.0, 0.9)])) == pytest.approx(0.9)


def test_area_extends_last_point_flat():
    assert area_under_curve(curve([(0.0, 0.8), (0.5, 1.0)])) == pytest.approx(0.5 * 0.9 + 0.5 * 1.0)


def test_area_within_budget():
    assert area_under_curve(curve([(0.0, 0.8), (0.1, 0.9), (1.0, 0.9)]), max_rate=0.1) == pytest.approx(0.85)


def test_area_needs_no_deferral_point():
    with pytest.raises(ValueError, match="llm_rate 0"):
        area_under_curve(curve([(0.1, 0.9)]))


@pytest.mark.parametrize(("fraction", "expected"), [(0.5, 0.05), (0.8, 0.1), (1.0, 0.3)])
def test_rate_to_recover_gap(fraction, expected):
    points = curve([(0.0, 0.80), (0.05, 0.85), (0.1, 0.88), (0.3, 0.90)])
    assert rate_to_recover(points, bert_f1=0.80, oracle_f1=0.90, fraction=fraction) == pytest.approx(expected)


def test_rate_to_recover_unreached_is_nan():
    assert np.isnan(rate_to_recover(curve([(0.0, 0.8), (1.0, 0.82)]), bert_f1=0.8, oracle_f1=0.9, fraction=0.5))


def test_fixed_curve_spans_no_to_full_deferral():
    y_true = np.array([1, 0, 1, 0])
    bert = np.array([1, 1, 0, 0])
    llm = np.array([1, 0, 1, 1])
    confidence = np.array([0.99, 0.6, 0.7, 0.95])
    table = fixed_threshold_curve(confidence, y_true, bert, llm)
    assert table["llm_rate"].min() == 0.0
    assert table["llm_rate"].max() == 1.0


def test_random_curve_defers_requested_share():
    generator = np.random.default_rng(0)
    y_true = generator.integers(0, 2, 100)
    table = random_deferral_curve(y_true, y_true, 1 - y_true, rates=[0.0, 0.25], seeds=20)
    assert table["llm_rate"].tolist() == [0.0, 0.25]
    assert table.loc[0, "f1"] == 1.0
    assert table.loc[1, "f1_low"] <= table.loc[1, "f1"] <= table.loc[1, "f1_high"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: upper_envelope(pd.DataFrame({"f1": [0.5]})), "llm_rate"),
        (lambda: area_under_curve(curve([(0.0, 0.9)]), max_rate=0.0), "max_rate"),
        (lambda: rate_to_recover(curve([(0.0, 0.9)]), 0.8, 0.9, fraction=0.0), "fraction"),
        (lambda: random_deferral_curve([0, 1], [0, 1], [0, 1], rates=[1.5]), "rate"),
    ],
)
def test_bad_input_is_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
