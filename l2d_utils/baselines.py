"""Routing baselines and the assembly of Table 1 of arXiv:2604.13285.

Every baseline returns a boolean deferral mask of shape ``(N,)``; the combined
system's scores come from :func:`l2d_utils.metrics.score_system`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from l2d_utils.metrics import SystemScore, score_system

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
    count = len(np.asarray(y_true))
    if not 0 <= n_deferred <= count:
        raise ValueError(f"n_deferred={n_deferred} must lie between 0 and the number of inputs {count}.")
    generator = np.random.default_rng(random_state)
    rows = []
    for _ in range(seeds):
        defer = np.zeros(count, dtype=bool)
        defer[generator.choice(count, size=n_deferred, replace=False)] = True
        result = score_system(y_true, bert_labels, llm_labels, defer, num_classes)
        rows.append(vars(result))
    return pd.DataFrame(rows)


def results_table(
    y_true,
    bert_labels,
    llm_labels,
    confidence,
    l2d_defer,
    random_seeds: int = 1000,
    thresholds: Sequence[float] = FIXED_THRESHOLDS,
    num_classes: int = 2,
) -> pd.DataFrame:
    """Build Table 1: every routing method's F1, accuracy and LLM call rate.

    Args:
        y_true: Labels, shape ``(N,)``.
        bert_labels: BERT's labels, shape ``(N,)``.
        llm_labels: LLM's labels, shape ``(N,)``; -1 for unparseable replies.
        confidence: BERT's top-class probability, shape ``(N,)``.
        l2d_defer: L2D's deferral mask, shape ``(N,)``.
        random_seeds: Draws averaged for random deferral at L2D's rate.
        thresholds: Confidence thresholds of the fixed baseline.
        num_classes: 2 for positive-class F1, more for macro F1.

    Returns:
        Frame with columns ``method, f1, accuracy, llm_rate``; ``method`` takes
        the keys ``bert_only, llm_only, random, fixed_<theta>, l2d, oracle``.
    """
    y_true = np.asarray(y_true, dtype=int)
    count = len(y_true)
    l2d_defer = np.asarray(l2d_defer, dtype=bool)

    def row(method: str, result: SystemScore) -> dict[str, object]:
        return {"method": method, **vars(result)}

    rows = [
        row("bert_only", score_system(y_true, bert_labels, llm_labels, np.zeros(count, bool), num_classes)),
        row("llm_only", score_system(y_true, llm_labels, llm_labels, np.ones(count, bool), num_classes)),
    ]
    draws = random_deferral_scores(y_true, bert_labels, llm_labels, int(l2d_defer.sum()), random_seeds, num_classes)
    rows.append({"method": "random", **draws.mean().to_dict()})
    for theta in thresholds:
        defer = fixed_threshold_deferral(confidence, theta)
        rows.append(row(f"fixed_{theta:g}", score_system(y_true, bert_labels, llm_labels, defer, num_classes)))
    rows.append(row("l2d", score_system(y_true, bert_labels, llm_labels, l2d_defer, num_classes)))
    rows.append(row("oracle", score_system(y_true, bert_labels, llm_labels, oracle_deferral(y_true, bert_labels, llm_labels), num_classes)))
    return pd.DataFrame(rows, columns=["method", "f1", "accuracy", "llm_rate"])


def with_paper_values(table: pd.DataFrame, paper: dict[str, tuple[float, float, float]] = PAPER_TABLE1) -> pd.DataFrame:
    """Add the paper's F1, accuracy and LLM rate beside each row (NaN where it reports none)."""
    out = table.copy()
    for position, column in enumerate(("paper_f1", "paper_accuracy", "paper_llm_rate")):
        out[column] = [paper[method][position] if method in paper else np.nan for method in out["method"]]
    return out
