"""Classification metrics that treat an unparseable LLM reply as a wrong answer.

Predictions are integer class indices; :data:`~l2d_utils.llm.base.UNPARSEABLE`
(-1) marks an LLM reply that named no class. Such a prediction is never equal
to the true label, and it is not a prediction of the positive class. On a
positive sentence it therefore counts as a false negative. On a negative one
it costs accuracy but adds no false positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _as_arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length; got shapes {y_true.shape} and {y_pred.shape}.")
    if len(y_true) == 0:
        raise ValueError("Cannot score an empty set of predictions.")
    return y_true, y_pred


def class_f1(y_true, y_pred, positive: int = 1) -> float:
    """F1 of one class, 0.0 when that class is neither predicted nor present."""
    y_true, y_pred = _as_arrays(y_true, y_pred)
    true_positive = int(np.sum((y_pred == positive) & (y_true == positive)))
    predicted = int(np.sum(y_pred == positive))
    actual = int(np.sum(y_true == positive))
    if predicted + actual == 0:
        return 0.0
    return 2.0 * true_positive / (predicted + actual)


def macro_f1(y_true, y_pred, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over classes ``0 .. num_classes - 1``."""
    return float(np.mean([class_f1(y_true, y_pred, positive=k) for k in range(num_classes)]))


def precision_recall(y_true, y_pred, positive: int = 1) -> tuple[float, float]:
    """Precision and recall of one class (NaN precision when it is never predicted)."""
    y_true, y_pred = _as_arrays(y_true, y_pred)
    true_positive = np.sum((y_pred == positive) & (y_true == positive))
    predicted = np.sum(y_pred == positive)
    actual = np.sum(y_true == positive)
    precision = float(true_positive / predicted) if predicted else float("nan")
    recall = float(true_positive / actual) if actual else float("nan")
    return precision, recall


def accuracy(y_true, y_pred) -> float:
    """Share of predictions equal to the label."""
    y_true, y_pred = _as_arrays(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


@dataclass(frozen=True)
class SystemScore:
    """Scores of one routing of inputs between BERT and the LLM.

    Attributes:
        f1: Positive-class F1 for two classes, macro F1 for more.
        accuracy: Share correct.
        llm_rate: Share of inputs sent to the LLM (0 to 1).
    """

    f1: float
    accuracy: float
    llm_rate: float


def combine_predictions(bert_labels, llm_labels, defer) -> np.ndarray:
    """Take the LLM's label where ``defer`` is set and BERT's elsewhere.

    A deferred input whose LLM reply was unparseable keeps BERT's label, as a
    deployed system would fall back to BERT when the LLM gives no usable answer.

    Args:
        bert_labels: Shape ``(N,)``.
        llm_labels: Shape ``(N,)``, -1 for unparseable replies.
        defer: Boolean, shape ``(N,)``.

    Returns:
        Combined labels, shape ``(N,)``.
    """
    bert_labels = np.asarray(bert_labels, dtype=int)
    llm_labels = np.asarray(llm_labels, dtype=int)
    defer = np.asarray(defer, dtype=bool)
    if not (bert_labels.shape == llm_labels.shape == defer.shape):
        raise ValueError(f"Shapes differ: bert {bert_labels.shape}, llm {llm_labels.shape}, defer {defer.shape}.")
    use_llm = defer & (llm_labels >= 0)
    return np.where(use_llm, llm_labels, bert_labels)


def score_system(y_true, bert_labels, llm_labels, defer, num_classes: int = 2) -> SystemScore:
    """Score the combined system for one deferral mask.

    Returns:
        F1 (positive class for two classes, macro otherwise), accuracy, and the
        share of inputs deferred.
    """
    combined = combine_predictions(bert_labels, llm_labels, defer)
    f1 = class_f1(y_true, combined) if num_classes == 2 else macro_f1(y_true, combined, num_classes)
    return SystemScore(f1=f1, accuracy=accuracy(y_true, combined), llm_rate=float(np.mean(np.asarray(defer, dtype=bool))))
