"""Routing baselines and the assembly of Table 1 of arXiv:2604.13285.

Every baseline returns a boolean deferral mask of shape ``(N,)``; the combined
system's scores come from :func:`l2d_utils.metrics.score_system`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from l2d_utils.metrics import accuracy, class_f1, combine_predictions, macro_f1, score_system
from l2d_utils.uncertainty import bootstrap_bounds

#: Confidence thresholds of the fixed-threshold baseline (the paper's grid).
FIXED_THRESHOLDS: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9, 0.95)

#: The paper's Table 1 (ADE Corpus V2, BioBERT and GPT-5-nano, 500 test sentences).
#: Only the fixed-threshold row for theta = 0.95 is reported there.
PAPER_TABLE1: dict[str, tuple[float, float, float]] = {
    "bert_only": (0.911, 0.948, 0.0),
    "llm_only": (0.765, 0.834, 1.0),
    "random": (0.903, 0.938, 0.070),
    "fixed_0.95": (0.921, 0.954, 0.022),
    "l2d": (0.928, 0.958, 0.070),
    "oracle": (0.945, 0.968, 0.020),
}


#: The paper's Table 2 (MIMIC-IV treatment outcomes, Bio_ClinicalBERT and
#: GPT-5-nano, 279 test triplets; F1 is macro F1). The paper gives no accuracy
#: for the fixed threshold and no row for random deferral or the oracle.
PAPER_TABLE2: dict[str, tuple[float, float, float]] = {
    "bert_only": (0.887, 0.946, 0.0),
    "llm_only": (0.967, 0.968, 1.0),
    "fixed_0.95": (0.971, float("nan"), 0.262),
    "l2d": (0.980, 0.986, 0.168),
}


def fixed_threshold_deferral(confidence, theta: float) -> np.ndarray:
    """Defer where BERT's top-class probability is below ``theta``."""
    if not 0.0 < theta <= 1.0:
        raise ValueError(f"theta={theta} must lie in (0, 1].")
    return np.asarray(confidence, dtype=np.float64) < theta


def oracle_deferral(y_true, bert_labels, llm_labels) -> np.ndarray:
    """Defer exactly where BERT is wrong and the LLM is right.

    This is the best possible deferral mask, an upper bound on every deferral
    method. It is not an upper bound on the LLM alone: where the LLM's reply is
    unparseable, the oracle keeps BERT's label, which may be a false positive.
    """
    y_true = np.asarray(y_true, dtype=int)
    return (np.asarray(bert_labels) != y_true) & (np.asarray(llm_labels) == y_true)


def random_deferral_scores(
    y_true, bert_labels, llm_labels, n_deferred: int, seeds: int = 1000, num_classes: int = 2, random_state: int = 0
) -> pd.DataFrame:
    """Score random deferral of ``n_deferred`` inputs, once per seed.

    Args:
        n_deferred: Inputs deferred per draw (L2D's count, for a fair comparison).
        seeds: Number of draws.
        random_state: Seed of the generator that makes the draws.

    Returns:
        Frame with ``f1, accuracy, llm_rate``, one row per draw.
    """
    masks = random_deferral_masks(len(np.asarray(y_true)), n_deferred, seeds, random_state)
    return pd.DataFrame([vars(score_system(y_true, bert_labels, llm_labels, defer, num_classes)) for defer in masks])


def random_deferral_masks(count: int, n_deferred: int, seeds: int = 1000, random_state: int = 0) -> np.ndarray:
    """Draw ``seeds`` random deferral masks, each deferring ``n_deferred`` of ``count`` inputs.

    Returns:
        Boolean array, shape ``(seeds, count)``.
    """
    if not 0 <= n_deferred <= count:
        raise ValueError(f"n_deferred={n_deferred} must lie between 0 and the number of inputs {count}.")
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be at least 1.")
    generator = np.random.default_rng(random_state)
    masks = np.zeros((seeds, count), dtype=bool)
    for draw in range(seeds):
        masks[draw, generator.choice(count, size=n_deferred, replace=False)] = True
    return masks


def results_table(
    y_true,
    bert_labels,
    llm_labels,
    confidence,
    l2d_defer,
    random_seeds: int = 1000,
    thresholds: Sequence[float] = FIXED_THRESHOLDS,
    num_classes: int = 2,
    n_resamples: int = 1000,
    interval_seed: int = 0,
) -> pd.DataFrame:
    """Build Table 1: every routing method's F1, accuracy and LLM call rate, with 95% intervals.

    Args:
        y_true: Labels, shape ``(N,)``.
        bert_labels: BERT's labels, shape ``(N,)``.
        llm_labels: LLM's labels, shape ``(N,)``; -1 for unparseable replies.
        confidence: BERT's top-class probability, shape ``(N,)``.
        l2d_defer: L2D's deferral mask, shape ``(N,)``.
        random_seeds: Draws averaged for random deferral at L2D's rate.
        thresholds: Confidence thresholds of the fixed baseline.
        num_classes: 2 for positive-class F1, more for macro F1.
        n_resamples: Bootstrap resamples of the sentences for the intervals
            (:func:`l2d_utils.uncertainty.bootstrap_bounds`); every method is
            scored on the same resamples. Random deferral's interval also
            varies the draw.
        interval_seed: ``random_state`` of the resampling.

    Returns:
        Frame with columns ``method, f1, f1_low, f1_high, accuracy,
        accuracy_low, accuracy_high, llm_rate``; ``method`` takes the keys
        ``bert_only, llm_only, random, fixed_<theta>, l2d, oracle``.
    """
    y_true = np.asarray(y_true, dtype=int)
    bert_labels = np.asarray(bert_labels, dtype=int)
    llm_labels = np.asarray(llm_labels, dtype=int)
    count = len(y_true)
    l2d_defer = np.asarray(l2d_defer, dtype=bool)
    if not (bert_labels.shape == llm_labels.shape == l2d_defer.shape == (count,)):
        raise ValueError(
            f"y_true {y_true.shape}, bert_labels {bert_labels.shape}, llm_labels {llm_labels.shape} and "
            f"l2d_defer {l2d_defer.shape} must all have shape (N,)."
        )

    masks: dict[str, np.ndarray] = {"bert_only": np.zeros(count, bool), "llm_only": np.ones(count, bool)}
    masks["random"] = random_deferral_masks(count, int(l2d_defer.sum()), random_seeds)
    for theta in thresholds:
        masks[f"fixed_{theta:g}"] = fixed_threshold_deferral(confidence, theta)
    masks["l2d"] = l2d_defer
    masks["oracle"] = oracle_deferral(y_true, bert_labels, llm_labels)

    def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
        return class_f1(truth, predicted) if num_classes == 2 else macro_f1(truth, predicted, num_classes)

    rows = []
    for method, mask in masks.items():
        if method == "llm_only":
            # LLM alone has no fallback: an unparseable reply stays wrong.
            predictions = llm_labels
        elif mask.ndim == 2:
            predictions = np.stack([combine_predictions(bert_labels, llm_labels, draw) for draw in mask])
        else:
            predictions = combine_predictions(bert_labels, llm_labels, mask)
        draws = predictions.reshape(-1, count)
        row: dict[str, object] = {"method": method}
        for name, metric in [("f1", f1), ("accuracy", accuracy)]:
            row[name] = float(np.mean([metric(y_true, draw) for draw in draws]))
            row[f"{name}_low"], row[f"{name}_high"] = bootstrap_bounds(
                metric, y_true, predictions, n_resamples=n_resamples, random_state=interval_seed
            )
        row["llm_rate"] = float(mask.mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


#: Columns of :func:`results_table` and of the result CSV files.
TABLE_COLUMNS = ("method", "f1", "f1_low", "f1_high", "accuracy", "accuracy_low", "accuracy_high", "llm_rate")


def with_paper_values(table: pd.DataFrame, paper: dict[str, tuple[float, float, float]] = PAPER_TABLE1) -> pd.DataFrame:
    """Add the paper's F1, accuracy and LLM rate beside each row (NaN where it reports none)."""
    out = table.copy()
    for position, column in enumerate(("paper_f1", "paper_accuracy", "paper_llm_rate")):
        out[column] = [paper[method][position] if method in paper else np.nan for method in out["method"]]
    return out
