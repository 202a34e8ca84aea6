"""Analyses around Table 1: evaluation protocols, seed sensitivity, error breakdown, cost.

Every function takes plain arrays or the frame of
:func:`l2d_utils.pipeline.deferral_inputs` (one row per sentence, with
``label, bert_label, llm_label, confidence`` and the feature columns), so the
same code serves the ADE task and any other task with the same columns.

Two protocols for L2D are implemented:

* :func:`cross_validated_l2d`, the ADE protocol of arXiv:2604.13285 (the paper): out-of-fold deferral
  scores on the evaluation sentences themselves, and the threshold tuned on
  those same scores. It uses every labelled sentence but reports the tuned
  F1, which is optimistic.
* :func:`held_out_l2d`: the deferral model and its threshold are fitted on
  separate tuning sentences (the validation split), then applied once to the
  evaluation sentences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone
from tqdm.auto import tqdm

from l2d_utils.baselines import fixed_threshold_deferral, oracle_deferral
from l2d_utils.deferral import make_deferral_model, make_target, out_of_fold_scores, tune_threshold
from l2d_utils.features import FEATURE_NAMES
from l2d_utils.metrics import combine_predictions, score_system
from l2d_utils.splits import llm_subset

logger = logging.getLogger(__name__)

#: The paper's Table 3: BERT-only F1, L2D F1 and L2D's LLM call rate per task.
PAPER_TABLE3: dict[str, tuple[float, float, float]] = {"ade": (0.911, 0.928, 0.070), "mimic": (0.887, 0.980, 0.168)}

#: The paper's ADE error analysis (sections 5.1 and 6.1): residual errors after
#: L2D by kind, the share of deferred sentences that were BERT errors, and the
#: LLM's accuracy on the deferred sentences and overall.
PAPER_ADE_ERRORS: dict[str, float] = {
    "both_wrong": 19,
    "false_deferral": 11,
    "missed_deferral": 6,
    "total": 36,
    "deferral_precision": 0.73,
    "llm_accuracy_deferred": 0.89,
    "llm_accuracy_overall": 0.834,
}

#: Precision and recall of the positive (ADE) class per model, from the paper's section 6.1.
PAPER_ADE_PRECISION_RECALL: dict[str, tuple[float, float]] = {"bert": (0.94, 0.88), "llm": (0.78, 0.95)}

#: Columns that :func:`cross_validated_l2d` and :func:`held_out_l2d` read besides the features.
REQUIRED_COLUMNS = ("label", "bert_label", "llm_label")


def _check_inputs(inputs: pd.DataFrame, features: Sequence[str]) -> None:
    missing = [column for column in (*REQUIRED_COLUMNS, *features) if column not in inputs.columns]
    if missing:
        raise ValueError(
            f"The inputs lack columns {missing}; pass the frame of l2d_utils.pipeline.deferral_inputs() "
            "or one with the same columns."
        )
    if len(inputs) == 0:
        raise ValueError("The inputs frame has no rows; pass at least one sentence per fold.")


@dataclass(frozen=True)
class L2DRun:
    """One fitted L2D routing and its result on the evaluation sentences.

    Attributes:
        scores: Deferral scores ``d(x)`` on the evaluation sentences, shape ``(N,)``.
        tau: Threshold; a sentence is deferred when ``d(x) >= tau``.
        defer: Deferral mask on the evaluation sentences, shape ``(N,)``.
        f1: Combined-system F1 on the evaluation sentences.
        accuracy: Combined-system accuracy on the evaluation sentences.
        llm_rate: Share of evaluation sentences deferred.
        tuning_f1: Combined F1 at ``tau`` on the sentences that tuned it
            (equal to ``f1`` under the cross-validated protocol).
    """

    scores: np.ndarray
    tau: float
    defer: np.ndarray
    f1: float
    accuracy: float
    llm_rate: float
    tuning_f1: float


def cross_validated_l2d(
    inputs: pd.DataFrame,
    features: Sequence[str] = FEATURE_NAMES,
    target: str = "bert_error",
    model: str = "logistic",
    folds: int = 5,
    seed: int = 42,
    num_classes: int = 2,
) -> L2DRun:
    """Run L2D with the paper's ADE protocol: out-of-fold scores, tau tuned on them.

    Args:
        inputs: One row per evaluation sentence (see the module docstring).
        features: Feature columns of the deferral model.
        target: ``bert_error`` (the paper) or ``complementarity``.
        model: ``logistic`` (the paper), ``random_forest`` or ``gradient_boosting``.
        folds: Cross-validation folds.
        seed: Fold assignment seed.
        num_classes: 2 for positive-class F1, more for macro F1.
    """
    _check_inputs(inputs, features)
    y_true, bert_labels, llm_labels = (inputs[column].to_numpy(dtype=int) for column in REQUIRED_COLUMNS)
    target_values = make_target(target, y_true, bert_labels, llm_labels)
    scores = out_of_fold_scores(inputs[list(features)], target_values, n_splits=folds, seed=seed, model=make_deferral_model(model))
    choice = tune_threshold(scores, y_true, bert_labels, llm_labels, num_classes)
    defer = scores >= choice.tau
    return L2DRun(scores, choice.tau, defer, choice.f1, choice.accuracy, choice.llm_rate, choice.f1)


def held_out_l2d(
    tuning: pd.DataFrame,
    evaluation: pd.DataFrame,
    features: Sequence[str] = FEATURE_NAMES,
    target: str = "bert_error",
    model: str = "logistic",
    folds: int = 5,
    seed: int = 42,
    num_classes: int = 2,
) -> L2DRun:
    """Fit the deferral model and tau on ``tuning`` sentences, then score ``evaluation`` once.

    Tau is chosen on out-of-fold scores of the tuning sentences. Those
    scores come from models that never saw the sentence, as the evaluation
    scores do. The model that scores the evaluation sentences is then
    fitted on all tuning sentences.

    Args:
        tuning: Sentences with BERT and LLM labels that tune the router (validation).
        evaluation: Sentences scored once (test).
        features, target, model, folds, seed, num_classes: As :func:`cross_validated_l2d`.
    """
    _check_inputs(tuning, features)
    _check_inputs(evaluation, features)
    tuned = cross_validated_l2d(tuning, features, target, model, folds, seed, num_classes)
    y_tune, bert_tune, llm_tune = (tuning[column].to_numpy(dtype=int) for column in REQUIRED_COLUMNS)
    estimator = clone(make_deferral_model(model)).fit(
        tuning[list(features)].to_numpy(dtype=np.float64), make_target(target, y_tune, bert_tune, llm_tune)
    )
    scores = estimator.predict_proba(evaluation[list(features)].to_numpy(dtype=np.float64))[:, 1]
    defer = scores >= tuned.tau
    y_true, bert_labels, llm_labels = (evaluation[column].to_numpy(dtype=int) for column in REQUIRED_COLUMNS)
    result = score_system(y_true, bert_labels, llm_labels, defer, num_classes)
    return L2DRun(scores, tuned.tau, defer, result.f1, result.accuracy, result.llm_rate, tuned.tuning_f1)


def seed_sensitivity(
    pool: pd.DataFrame,
    subset_size: int,
    seeds: Sequence[int],
    features: Sequence[str] = FEATURE_NAMES,
    folds: int = 5,
    num_classes: int = 2,
    tuning: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Redraw the evaluation subset and the folds once per seed and rerun L2D.

    Each seed draws a stratified subset of ``subset_size`` sentences from
    ``pool`` (as :func:`l2d_utils.splits.llm_subset` draws the paper's) and
    uses the same seed for the folds. With the whole test split as the pool,
    in the row order of :func:`l2d_utils.pipeline.ade_splits`, and seed 42,
    the draw is the book's Table 1 subset (the draw depends on row order).
    A seed whose draw has too few encoder errors for cross-validation is
    skipped with a warning.

    Args:
        pool: Sentences with BERT and LLM labels, ``row_id`` and features.
        subset_size: Sentences per draw (the paper: 500).
        seeds: One run per seed (at least 20 for a distribution).
        features: Feature columns of the deferral model.
        folds: Cross-validation folds.
        num_classes: 2 for positive-class F1, more for macro F1.
        tuning: Separate sentences with BERT and LLM labels (validation). When
            given, each draw is also scored by the router fitted on them
            (:func:`held_out_l2d`, folds seeded per draw); NaN where that fit fails.

    Returns:
        Frame with one row per seed: ``seed, bert_errors, bert_f1, l2d_f1,
        gain, llm_rate, fixed_095_f1, oracle_f1``, plus ``held_out_f1,
        held_out_gain, held_out_llm_rate`` when ``tuning`` is given.
    """
    _check_inputs(pool, features)
    if subset_size > len(pool):
        raise ValueError(f"subset_size={subset_size} exceeds the {len(pool)} sentences of the pool.")
    rows = []
    for seed in tqdm(list(seeds), desc="sensitivity seeds", leave=False):
        subset = llm_subset(pool, subset_size, seed=int(seed))
        y_true, bert_labels, llm_labels = (subset[column].to_numpy(dtype=int) for column in REQUIRED_COLUMNS)
        bert = score_system(y_true, bert_labels, llm_labels, np.zeros(len(subset), bool), num_classes)
        try:
            run = cross_validated_l2d(subset, features, folds=folds, seed=int(seed), num_classes=num_classes)
        except ValueError as error:
            logger.warning("Seed %d skipped: %s", seed, error)
            continue
        fixed = score_system(y_true, bert_labels, llm_labels, fixed_threshold_deferral(subset["confidence"], 0.95), num_classes)
        oracle = score_system(y_true, bert_labels, llm_labels, oracle_deferral(y_true, bert_labels, llm_labels), num_classes)
        row = {
            "seed": int(seed),
            "bert_errors": int((bert_labels != y_true).sum()),
            "bert_f1": bert.f1,
            "l2d_f1": run.f1,
            "gain": run.f1 - bert.f1,
            "llm_rate": run.llm_rate,
            "fixed_095_f1": fixed.f1,
            "oracle_f1": oracle.f1,
        }
        if tuning is not None:
            try:
                held = held_out_l2d(tuning, subset, features, folds=folds, seed=int(seed), num_classes=num_classes)
                row.update({"held_out_f1": held.f1, "held_out_gain": held.f1 - bert.f1, "held_out_llm_rate": held.llm_rate})
            except ValueError as error:
                logger.warning("Seed %d: held-out router not fitted: %s", seed, error)
                row.update({"held_out_f1": np.nan, "held_out_gain": np.nan, "held_out_llm_rate": np.nan})
        rows.append(row)
    return pd.DataFrame(rows)


def residual_errors(y_true, bert_labels, llm_labels, defer) -> pd.Series:
    """Split the combined system's errors into the paper's three kinds.

    * ``both_wrong``: BERT and the LLM are both wrong, so no routing helps
      (this includes deferred sentences whose LLM reply was unparseable).
    * ``false_deferral``: deferred although BERT was right, and the LLM was wrong.
    * ``missed_deferral``: kept although BERT was wrong, and the LLM was right.

    The three are disjoint and add up to the combined system's errors.

    Returns:
        Integer counts indexed by kind, plus ``total``.
    """
    y_true = np.asarray(y_true, dtype=int)
    bert_labels = np.asarray(bert_labels, dtype=int)
    llm_labels = np.asarray(llm_labels, dtype=int)
    defer = np.asarray(defer, dtype=bool)
    wrong = combine_predictions(bert_labels, llm_labels, defer) != y_true
    kinds = error_kinds(y_true, bert_labels, llm_labels, defer)
    counts = pd.Series({kind: int((kinds == kind).sum()) for kind in RESIDUAL_KINDS}, dtype=int)
    counts["total"] = int(wrong.sum())
    return counts


#: Kinds of residual error, in the order the book shows them.
RESIDUAL_KINDS = ("both_wrong", "false_deferral", "missed_deferral")


def error_kinds(y_true, bert_labels, llm_labels, defer) -> np.ndarray:
    """Label each sentence with its residual-error kind, or ``""`` where the system is right.

    Returns:
        Object array of shape ``(N,)`` with values from :data:`RESIDUAL_KINDS` or ``""``.
    """
    y_true = np.asarray(y_true, dtype=int)
    bert_labels = np.asarray(bert_labels, dtype=int)
    llm_labels = np.asarray(llm_labels, dtype=int)
    defer = np.asarray(defer, dtype=bool)
    wrong = combine_predictions(bert_labels, llm_labels, defer) != y_true
    bert_right = bert_labels == y_true
    llm_right = llm_labels == y_true
    kinds = np.full(len(y_true), "", dtype=object)
    kinds[wrong & ~bert_right & ~llm_right] = "both_wrong"
    kinds[wrong & defer & bert_right] = "false_deferral"
    kinds[wrong & ~defer & llm_right] = "missed_deferral"
    return kinds


def deferral_diagnostics(y_true, bert_labels, llm_labels, defer) -> pd.Series:
    """Describe the deferred sentences, as the paper's error analysis does.

    Returns:
        Series with these entries. Shares are NaN when nothing is deferred.

        * ``deferred``: count of deferred sentences.
        * ``deferral_precision``: share of the deferred that are BERT errors
          (the paper: 73% on ADE, 68% on outcomes).
        * ``bert_error_recall``: share of BERT's errors that are deferred.
        * ``llm_accuracy_deferred``, ``llm_accuracy_overall``: the LLM's
          accuracy on the deferred sentences and on all of them.
        * ``bert_accuracy_deferred``: BERT's accuracy on the deferred sentences.
    """
    y_true = np.asarray(y_true, dtype=int)
    bert_labels = np.asarray(bert_labels, dtype=int)
    llm_labels = np.asarray(llm_labels, dtype=int)
    defer = np.asarray(defer, dtype=bool)
    errors = bert_labels != y_true
    deferred = int(defer.sum())
    nan = float("nan")
    return pd.Series(
        {
            "deferred": deferred,
            "deferral_precision": float(errors[defer].mean()) if deferred else nan,
            "bert_error_recall": float(defer[errors].mean()) if errors.any() else nan,
            "llm_accuracy_deferred": float((llm_labels[defer] == y_true[defer]).mean()) if deferred else nan,
            "llm_accuracy_overall": float((llm_labels == y_true).mean()),
            "bert_accuracy_deferred": float((~errors[defer]).mean()) if deferred else nan,
        }
    )


@dataclass(frozen=True)
class CostModel:
    """Per-call cost and latency of the two models.

    The defaults are the paper's assumptions (appendix 8.2): an LLM call
    costs as much as 50 BERT calls and takes 850 ms against BERT's 12 ms.

    Attributes:
        llm_cost: Cost of one LLM call in units of one BERT call.
        bert_ms: BERT latency per input (ms).
        llm_ms: LLM latency per call (ms).
        router_ms: Deferral overhead per input (features and the deferral model, ms).
    """

    llm_cost: float = 50.0
    bert_ms: float = 12.0
    llm_ms: float = 850.0
    router_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("llm_cost", "bert_ms", "llm_ms", "router_ms"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CostModel.{name}={value} must be a finite number >= 0.")


def system_cost(
    llm_rate: float, cost_model: CostModel = CostModel(), uses_bert: bool = True, uses_router: bool = True
) -> tuple[float, float]:
    """Cost and mean latency per input of a system that sends ``llm_rate`` of inputs to the LLM.

    A deferral system runs BERT and the router on every input and the LLM on
    the deferred ones, one after the other. With the defaults and a free
    router, 7% deferral gives 4.5x cost and 71.5 ms (the paper prints 4.4x and
    71 ms) and 16.8% gives 9.4x and 154.8 ms (the paper: 9.4x and 153 ms).

    Args:
        llm_rate: Share of inputs sent to the LLM (0 to 1).
        cost_model: Per-call costs and latencies.
        uses_bert: False for the LLM-only system.
        uses_router: False where no deferral model runs (BERT alone, a
            confidence threshold, the LLM alone).

    Returns:
        ``(cost, latency_ms)``: cost in BERT-call units per input, mean latency in ms.
    """
    if not 0.0 <= llm_rate <= 1.0:
        raise ValueError(f"llm_rate={llm_rate} must lie in [0, 1].")
    cost = llm_rate * cost_model.llm_cost
    latency = llm_rate * cost_model.llm_ms
    if uses_bert:
        cost += 1.0
        latency += cost_model.bert_ms
    if uses_router:
        latency += cost_model.router_ms
    return cost, latency


def daily_load(rates: dict[str, float], volume: int = 10_000, cost_model: CostModel = CostModel()) -> pd.DataFrame:
    """Tabulate the paper's hospital scenario: ``volume`` notes a day through each system.

    Args:
        rates: LLM call rate per system. The key ``llm_only`` runs no BERT;
            ``bert_only`` and keys starting with ``fixed`` run no deferral
            model; every other key is charged the router's latency.
        volume: Notes per day.
        cost_model: Per-call costs and latencies.

    Returns:
        Frame indexed by system with ``llm_rate, llm_calls_per_day,
        cost_per_day`` (BERT-call units), ``cost_vs_llm_only`` (fraction) and
        ``mean_latency_ms``.
    """
    if volume <= 0:
        raise ValueError(f"volume={volume} must be a positive number of notes per day.")
    llm_only_cost = system_cost(1.0, cost_model, uses_bert=False, uses_router=False)[0] * volume
    rows = {}
    for system, rate in rates.items():
        uses_router = system not in ("bert_only", "llm_only") and not system.startswith("fixed")
        cost, latency = system_cost(rate, cost_model, uses_bert=(system != "llm_only"), uses_router=uses_router)
        rows[system] = {
            "llm_rate": rate,
            "llm_calls_per_day": rate * volume,
            "cost_per_day": cost * volume,
            "cost_vs_llm_only": cost * volume / llm_only_cost,
            "mean_latency_ms": latency,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def pareto_front(cost, score) -> np.ndarray:
    """Flag the points no other point beats on both cost (lower) and score (higher).

    Args:
        cost: Shape ``(N,)``.
        score: Shape ``(N,)``, e.g. F1.

    Returns:
        Boolean mask, shape ``(N,)``; ties on both keep every tied point.
    """
    cost = np.asarray(cost, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    if cost.shape != score.shape or cost.ndim != 1:
        raise ValueError(f"cost {cost.shape} and score {score.shape} must be 1-D of equal length.")
    dominated = np.zeros(len(cost), dtype=bool)
    for index in range(len(cost)):
        better_or_equal = (cost <= cost[index]) & (score >= score[index])
        strictly_better = (cost < cost[index]) | (score > score[index])
        dominated[index] = bool(np.any(better_or_equal & strictly_better))
    return ~dominated
