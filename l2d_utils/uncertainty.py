"""Bootstrap confidence intervals for scores computed on a few hundred sentences.

Sentences are resampled with replacement, while each method's predictions stay
as they were (a randomized method, such as random deferral, also varies its
draw; see :func:`bootstrap_bounds`). The interval therefore reflects which
sentences happened to be drawn into the test subset, not the randomness of
training. Sentences are treated as independent, although repeated texts and
sentences of one abstract are not quite so; the intervals are a little narrow
for that reason. Intervals are percentile
intervals. Every function takes a ``random_state`` so that a rerun gives the
same interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval.

    Attributes:
        value: The metric on the original sentences.
        low: Lower end of the interval.
        high: Upper end of the interval.
    """

    value: float
    low: float
    high: float


def _resample_indices(count: int, n_resamples: int, random_state: int) -> np.ndarray:
    """Return bootstrap row indices, shape ``(n_resamples, count)``."""
    if count < 2:
        raise ValueError(f"Bootstrap needs at least 2 sentences; got {count}.")
    if n_resamples < 100:
        raise ValueError(f"n_resamples={n_resamples} is too few for a percentile interval; use 1000 or more.")
    generator = np.random.default_rng(random_state)
    return generator.integers(0, count, size=(n_resamples, count))


def _bounds(values: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1, e.g. 0.95.")
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_interval(
    metric: Metric, y_true, y_pred, n_resamples: int = 1000, confidence: float = 0.95, random_state: int = 0
) -> Interval:
    """Bootstrap a percentile interval for ``metric(y_true, y_pred)``.

    Args:
        metric: Function of ``(y_true, y_pred)`` arrays returning a float.
        y_true: Labels, shape ``(N,)``.
        y_pred: Predictions, shape ``(N,)``.
        n_resamples: Bootstrap resamples (at least 100; 1000 or more advised).
        confidence: Coverage of the interval, e.g. 0.95.
        random_state: Seed of the resampling.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape.")
    indices = _resample_indices(len(y_true), n_resamples, random_state)
    values = np.array([metric(y_true[rows], y_pred[rows]) for rows in indices])
    low, high = _bounds(values, confidence)
    return Interval(float(metric(y_true, y_pred)), low, high)


def bootstrap_bounds(
    metric: Metric,
    y_true,
    predictions,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval bounds for a method whose predictions may vary by draw.

    Args:
        metric: Function of ``(y_true, y_pred)`` returning a float.
        y_true: Labels, shape ``(N,)``.
        predictions: Shape ``(N,)`` for a fixed method, or ``(D, N)`` for a
            randomized one (``D`` draws, as random deferral): resample ``b``
            then scores draw ``b mod D``, so the interval covers both the
            sentences drawn and the method's own randomness.
        n_resamples: Bootstrap resamples.
        confidence: Coverage of the interval.
        random_state: Seed of the resampling; the same seed gives every method
            the same resampled sentences.

    Returns:
        ``(low, high)``.
    """
    y_true = np.asarray(y_true)
    predictions = np.asarray(predictions)
    draws = predictions.reshape(1, -1) if predictions.ndim == 1 else predictions
    if draws.ndim != 2 or draws.shape[1] != len(y_true):
        raise ValueError(f"predictions must be (N,) or (D, N) with N = {len(y_true)}; got {predictions.shape}.")
    indices = _resample_indices(len(y_true), n_resamples, random_state)
    values = np.array([metric(y_true[rows], draws[b % len(draws)][rows]) for b, rows in enumerate(indices)])
    return _bounds(values, confidence)


@dataclass(frozen=True)
class PairedDifference:
    """Difference of one metric between two methods on the same sentences.

    Attributes:
        difference: ``metric(a) - metric(b)`` on the original sentences.
        low: Lower end of the bootstrap interval of the difference.
        high: Upper end.
        share_not_better: Share of resamples where ``a`` does not beat ``b``
            (difference <= 0); a rough one-sided p-value.
    """

    difference: float
    low: float
    high: float
    share_not_better: float


def paired_bootstrap_difference(
    metric: Metric,
    y_true,
    predictions_a,
    predictions_b,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> PairedDifference:
    """Bootstrap the difference between two methods, resampling sentences jointly.

    Pairing matters: both methods are scored on the same resampled sentences,
    so the interval of the difference is much narrower than what two separate
    intervals suggest.

    Args:
        metric: Function of ``(y_true, y_pred)`` returning a float.
        y_true: Labels, shape ``(N,)``.
        predictions_a: Method A's predictions, shape ``(N,)``.
        predictions_b: Method B's predictions, shape ``(N,)``.
        n_resamples: Bootstrap resamples.
        confidence: Coverage of the interval.
        random_state: Seed of the resampling.
    """
    y_true = np.asarray(y_true)
    predictions_a = np.asarray(predictions_a)
    predictions_b = np.asarray(predictions_b)
    if not (y_true.shape == predictions_a.shape == predictions_b.shape):
        raise ValueError(f"Shapes differ: y_true {y_true.shape}, a {predictions_a.shape}, b {predictions_b.shape}.")
    indices = _resample_indices(len(y_true), n_resamples, random_state)
    differences = np.array([metric(y_true[rows], predictions_a[rows]) - metric(y_true[rows], predictions_b[rows]) for rows in indices])
    low, high = _bounds(differences, confidence)
    return PairedDifference(
        difference=float(metric(y_true, predictions_a) - metric(y_true, predictions_b)),
        low=low,
        high=high,
        share_not_better=float(np.mean(differences <= 0.0)),
    )
