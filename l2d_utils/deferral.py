"""The deferral model: predict where BERT is wrong, then defer those inputs to the LLM.

The paper's recipe (arXiv:2604.13285, sections 3.3 and 4.2): the target is
``e(x) = 1[BERT's label != true label]``; the model is a logistic regression
with balanced class weights, C = 1 and at most 1000 iterations on z-scored
features; on ADE its scores come from 5-fold stratified cross-validation
(each input scored by a model that never saw it), and the threshold ``tau``
maximizes the combined system's F1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from l2d_utils.metrics import score_system

logger = logging.getLogger(__name__)


def deferral_target(y_true, bert_labels) -> np.ndarray:
    """Return 1 where BERT's label is wrong and 0 where it is right, shape ``(N,)``."""
    y_true = np.asarray(y_true, dtype=int)
    bert_labels = np.asarray(bert_labels, dtype=int)
    if y_true.shape != bert_labels.shape:
        raise ValueError(f"y_true {y_true.shape} and bert_labels {bert_labels.shape} must have the same shape.")
    return (y_true != bert_labels).astype(int)


def complementarity_target(y_true, bert_labels, llm_labels) -> np.ndarray:
    """Return 1 where BERT is wrong and the LLM right, 0 elsewhere, shape ``(N,)``.

    The paper's target (:func:`deferral_target`) marks every BERT error, also
    those the LLM gets wrong too, where deferring gains nothing. This target
    marks only the inputs that deferring fixes: the oracle's choices.
    """
    errors = deferral_target(y_true, bert_labels)
    llm_labels = np.asarray(llm_labels, dtype=int)
    if llm_labels.shape != errors.shape:
        raise ValueError(f"llm_labels {llm_labels.shape} and y_true {errors.shape} must have the same shape.")
    return errors * (llm_labels == np.asarray(y_true, dtype=int)).astype(int)


#: Deferral targets by name: the paper's (BERT wrong) and the complementarity one.
DEFERRAL_TARGETS = ("bert_error", "complementarity")


def make_target(kind: str, y_true, bert_labels, llm_labels) -> np.ndarray:
    """Build the deferral target named ``kind`` (one of :data:`DEFERRAL_TARGETS`), shape ``(N,)``."""
    if kind == "bert_error":
        return deferral_target(y_true, bert_labels)
    if kind == "complementarity":
        return complementarity_target(y_true, bert_labels, llm_labels)
    raise ValueError(f"Unknown deferral target {kind!r}; use one of {list(DEFERRAL_TARGETS)}.")


def logistic_deferral_model(C: float = 1.0, max_iter: int = 1000) -> Pipeline:
    """Return the paper's deferral model: z-scoring, then balanced logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter))


def random_forest_deferral_model(seed: int = 42) -> Pipeline:
    """Return a balanced random forest (300 trees, leaves of at least 3 inputs).

    The paper reports that a random forest also reached F1 0.928 on ADE but
    gives no settings. These are scikit-learn's defaults except for three.
    There are 300 trees instead of 100, so the scores vary smoothly. Class
    weights are balanced, as in the logistic model. Leaves hold at least 3
    inputs, which keeps the probabilities off 0 and 1 on a few hundred inputs.
    """
    return make_pipeline(
        RandomForestClassifier(n_estimators=300, min_samples_leaf=3, class_weight="balanced", random_state=seed, n_jobs=1)
    )


def gradient_boosting_deferral_model(seed: int = 42) -> Pipeline:
    """Return gradient-boosted trees (100 trees of depth 2, learning rate 0.05, subsample 0.8).

    Shallow, slow-learning trees because the positive class (BERT's errors)
    has a few dozen members in a 500-input subset. Gradient boosting has no
    class weights; the threshold tuning absorbs the imbalance.
    """
    return make_pipeline(
        GradientBoostingClassifier(n_estimators=100, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=seed)
    )


#: Deferral model factories by name; each returns an unfitted estimator with ``predict_proba``.
DEFERRAL_MODELS: dict[str, Callable[[], Pipeline]] = {
    "logistic": logistic_deferral_model,
    "random_forest": random_forest_deferral_model,
    "gradient_boosting": gradient_boosting_deferral_model,
}


def make_deferral_model(name: str) -> Pipeline:
    """Return an unfitted deferral model by name (a key of :data:`DEFERRAL_MODELS`)."""
    if name not in DEFERRAL_MODELS:
        raise ValueError(f"Unknown deferral model {name!r}; use one of {sorted(DEFERRAL_MODELS)}.")
    return DEFERRAL_MODELS[name]()


def out_of_fold_scores(
    features: pd.DataFrame | np.ndarray,
    target,
    n_splits: int = 5,
    seed: int = 42,
    model: ClassifierMixin | None = None,
) -> np.ndarray:
    """Score every input with a deferral model fitted on the other folds.

    Args:
        features: Shape ``(N, F)``.
        target: BERT-error indicator, shape ``(N,)``, values 0/1.
        n_splits: Folds of :class:`~sklearn.model_selection.StratifiedKFold`
            (shuffled with ``seed``). Lowered, with a warning, when BERT makes
            fewer errors than folds.
        seed: ``random_state`` of the fold assignment.
        model: Unfitted estimator with ``predict_proba``; default
            :func:`logistic_deferral_model`.

    Returns:
        Deferral probabilities ``d(x)``, shape ``(N,)``.

    Raises:
        ValueError: When BERT makes fewer than 2 errors, or no input is right,
            so that no fold could contain both classes.
    """
    values = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=int)
    if values.ndim != 2 or len(values) != len(target):
        raise ValueError(f"features must be (N, F) with N = len(target) = {len(target)}; got {values.shape}.")
    minority = int(min(target.sum(), len(target) - target.sum()))
    if minority < 2:
        raise ValueError(
            f"BERT is wrong on {int(target.sum())} of {len(target)} inputs; cross-validated deferral needs at "
            "least 2 wrong and 2 right inputs. Use more inputs (a larger LLM subset)."
        )
    if minority < n_splits:
        logger.warning("Only %d inputs in the smaller class; using %d folds instead of %d", minority, minority, n_splits)
        n_splits = minority
    estimator = model if model is not None else logistic_deferral_model()
    scores = np.zeros(len(target))
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train_index, test_index in folds.split(values, target):
        fitted = clone(estimator).fit(values[train_index], target[train_index])
        scores[test_index] = fitted.predict_proba(values[test_index])[:, 1]
    return scores


@dataclass(frozen=True)
class ThresholdChoice:
    """The tuned deferral threshold and what it gives on the tuning data.

    Attributes:
        tau: Defer when ``d(x) >= tau``.
        f1: Combined-system F1 at ``tau``.
        accuracy: Combined-system accuracy at ``tau``.
        llm_rate: Share deferred at ``tau``.
    """

    tau: float
    f1: float
    accuracy: float
    llm_rate: float


def threshold_sweep(scores, y_true, bert_labels, llm_labels, num_classes: int = 2) -> pd.DataFrame:
    """Score the combined system at every distinct threshold.

    Candidates are each distinct score (defer that input and all above it)
    and ``inf`` (defer nothing).

    Returns:
        Frame with ``tau, f1, accuracy, llm_rate``, one row per candidate, tau descending.
    """
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    rows = []
    for tau in candidates:
        result = score_system(y_true, bert_labels, llm_labels, scores >= tau, num_classes)
        rows.append({"tau": float(tau), "f1": result.f1, "accuracy": result.accuracy, "llm_rate": result.llm_rate})
    return pd.DataFrame(rows)


def tune_threshold(scores, y_true, bert_labels, llm_labels, num_classes: int = 2) -> ThresholdChoice:
    """Choose the ``tau`` that maximizes combined F1; ties go to the fewest deferrals.

    Args:
        scores: Deferral probabilities, shape ``(N,)``.
        y_true: Labels, shape ``(N,)``.
        bert_labels: BERT's labels, shape ``(N,)``.
        llm_labels: LLM's labels, shape ``(N,)`` (-1 for unparseable).
        num_classes: 2 for positive-class F1, more for macro F1.
    """
    sweep = threshold_sweep(scores, y_true, bert_labels, llm_labels, num_classes)
    best = sweep.sort_values(["f1", "llm_rate"], ascending=[False, True], kind="stable").iloc[0]
    return ThresholdChoice(tau=float(best["tau"]), f1=float(best["f1"]), accuracy=float(best["accuracy"]), llm_rate=float(best["llm_rate"]))


def standardized_coefficients(features: pd.DataFrame, target, model_factory: Callable[[], Pipeline] = logistic_deferral_model) -> pd.Series:
    """Fit the deferral model on all rows and return its coefficients per feature.

    Because the features are z-scored first, each coefficient is the change in
    log-odds of deferral per standard deviation of its feature (positive means
    more deferral, as in the paper's Table 4).

    Returns:
        Series indexed by feature name, sorted by absolute value, largest first.
    """
    pipeline = model_factory().fit(features.to_numpy(dtype=np.float64), np.asarray(target, dtype=int))
    coefficients = pd.Series(pipeline[-1].coef_[0], index=list(features.columns), name="coefficient")
    return coefficients.reindex(coefficients.abs().sort_values(ascending=False).index)
