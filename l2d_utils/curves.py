"""Deferral curves: combined-system F1 against the share of inputs sent to the LLM.

A curve is a frame with columns ``llm_rate`` (0 to 1) and ``f1``, one row per
operating point, as :func:`l2d_utils.deferral.threshold_sweep` returns for L2D.
The summaries here compare methods across every call rate instead of at one
threshold: the normalized area under the curve, and the call rate a method
needs to recover a given share of the gap between BERT alone and the oracle.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from l2d_utils.baselines import fixed_threshold_deferral
from l2d_utils.metrics import score_system


def _check_curve(curve: pd.DataFrame) -> pd.DataFrame:
    missing = {"llm_rate", "f1"} - set(curve.columns)
    if missing:
        raise ValueError(f"A deferral curve needs columns llm_rate and f1; missing {sorted(missing)}.")
    if len(curve) == 0:
        raise ValueError("The deferral curve is empty.")
    return curve.sort_values(["llm_rate", "f1"]).reset_index(drop=True)


def upper_envelope(curve: pd.DataFrame) -> pd.DataFrame:
    """Keep, for each call rate, the best F1 reached at that rate or below.

    A threshold sweep can reach the same call rate with different F1 values
    (ties in scores); the envelope is what an operator choosing a threshold
    for a call budget could get.

    Returns:
        Frame with ``llm_rate`` ascending and non-decreasing ``f1``.
    """
    ordered = _check_curve(curve)
    best = ordered.groupby("llm_rate", as_index=False)["f1"].max()
    best["f1"] = best["f1"].cummax()
    return best


def area_under_curve(curve: pd.DataFrame, max_rate: float = 1.0) -> float:
    """Average F1 over call rates from 0 to ``max_rate`` (trapezoidal rule on the envelope).

    The envelope is extended flat to ``max_rate``, so a method that stops at a
    lower rate keeps its last F1. The result is in F1 units.

    Raises:
        ValueError: When ``max_rate`` is not in (0, 1] or the curve has no point at rate 0.
    """
    if not 0.0 < max_rate <= 1.0:
        raise ValueError(f"max_rate={max_rate} must lie in (0, 1].")
    envelope = upper_envelope(curve)
    if envelope["llm_rate"].iloc[0] > 0.0:
        raise ValueError("The curve must include the no-deferral point (llm_rate 0), e.g. BERT alone.")
    rates = envelope["llm_rate"].to_numpy()
    scores = envelope["f1"].to_numpy()
    inside = rates <= max_rate
    rates = np.append(rates[inside], max_rate)
    scores = np.append(scores[inside], scores[inside][-1])
    return float(np.trapezoid(scores, rates) / max_rate)


def rate_to_recover(curve: pd.DataFrame, bert_f1: float, oracle_f1: float, fraction: float) -> float:
    """Return the smallest call rate at which F1 recovers ``fraction`` of the BERT-to-oracle gap.

    Args:
        curve: Deferral curve.
        bert_f1: F1 of BERT alone.
        oracle_f1: F1 of the oracle.
        fraction: Share of the gap, e.g. 0.5 or 0.8.

    Returns:
        The call rate (0 to 1), or NaN when the curve never gets there.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must lie in (0, 1].")
    if oracle_f1 <= bert_f1:
        return float("nan")
    target = bert_f1 + fraction * (oracle_f1 - bert_f1)
    envelope = upper_envelope(curve)
    reached = envelope[envelope["f1"] >= target - 1e-12]
    return float(reached["llm_rate"].iloc[0]) if len(reached) else float("nan")


def fixed_threshold_curve(confidence, y_true, bert_labels, llm_labels, thetas: Sequence[float] | None = None) -> pd.DataFrame:
    """Sweep the fixed confidence threshold θ and score each point.

    Args:
        confidence: BERT's top-class probability, shape ``(N,)``.
        thetas: Thresholds to try; default the distinct confidences and 1.0.

    Returns:
        Frame with ``theta, f1, accuracy, llm_rate`` plus a no-deferral row (θ = 0).
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    if thetas is None:
        thetas = np.unique(np.concatenate([confidence, [1.0]]))
    rows = [{"theta": 0.0, **vars(score_system(y_true, bert_labels, llm_labels, np.zeros(len(confidence), bool)))}]
    for theta in thetas:
        if theta <= 0.0:
            continue
        defer = fixed_threshold_deferral(confidence, min(float(theta) + 1e-12, 1.0))
        rows.append({"theta": float(theta), **vars(score_system(y_true, bert_labels, llm_labels, defer))})
    return pd.DataFrame(rows)


def random_deferral_curve(
    y_true, bert_labels, llm_labels, rates: Sequence[float], seeds: int = 200, random_state: int = 0
) -> pd.DataFrame:
    """Score random deferral at each call rate, over many draws.

    Returns:
        Frame with ``llm_rate, f1`` (mean over draws), ``f1_low, f1_high``
        (2.5th and 97.5th percentiles over draws), one row per rate.
    """
    y_true = np.asarray(y_true, dtype=int)
    count = len(y_true)
    generator = np.random.default_rng(random_state)
    rows = []
    for rate in rates:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate={rate} must lie in [0, 1].")
        deferred = int(round(rate * count))
        values = []
        for _ in range(seeds):
            defer = np.zeros(count, dtype=bool)
            defer[generator.choice(count, size=deferred, replace=False)] = True
            values.append(score_system(y_true, bert_labels, llm_labels, defer).f1)
        low, high = np.percentile(values, [2.5, 97.5])
        rows.append({"llm_rate": deferred / count, "f1": float(np.mean(values)), "f1_low": float(low), "f1_high": float(high)})
    return pd.DataFrame(rows)
