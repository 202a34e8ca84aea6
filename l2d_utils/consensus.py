"""Consensus labels from several LLM labelers, and how good they are against human labels.

L2D-Clinical (arXiv:2604.13285, section 4.1) builds its MIMIC-IV ground truth
by keeping the triplets on which two LLMs agree, and checks 5% of them by hand. PsyTAR has human labels for every
sentence, so the same rule can be measured: label sentences with two labelers,
keep the agreements, and score the kept labels against the human ones.

:func:`vote` is the agreement rule (also used by
:func:`l2d_utils.mimic.consensus_labels`); :func:`labeler_prompts` gives each
labeler a prompt; :func:`label_quality` and :func:`quality_table` score labels
with intervals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd
from scipy.stats import norm

from l2d_utils.config import LLMSettings
from l2d_utils.data import stratified_sample
from l2d_utils.llm.prompts import OUTCOME_LABELER_PROMPT_A, OUTCOME_LABELER_PROMPT_B, PromptTemplate
from l2d_utils.metrics import accuracy, class_f1, macro_f1
from l2d_utils.uncertainty import bootstrap_bounds

logger = logging.getLogger(__name__)

#: Prompts handed to the labelers in order.
LABELER_PROMPTS: tuple[PromptTemplate, ...] = (OUTCOME_LABELER_PROMPT_A, OUTCOME_LABELER_PROMPT_B)


def _as_labels(values, name: str) -> np.ndarray:
    """Return ``values`` as an int array, rejecting non-integer values and labels below -1."""
    array = np.asarray(values)
    if array.dtype.kind not in "iub":
        as_float = array.astype(np.float64)
        if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
            raise ValueError(f"{name} must contain whole-number class labels (-1 for unparseable); got dtype {array.dtype}.")
    labels = array.astype(int)
    if labels.size and labels.min() < -1:
        raise ValueError(f"{name} contains {int(labels.min())}; labels are class indices, or -1 for an unparseable reply.")
    return labels


def vote(votes) -> tuple[np.ndarray, np.ndarray]:
    """Apply the consensus rule: keep a row when every labeler gives the same parseable label.

    Args:
        votes: Labels, shape ``(N, K)`` for ``K >= 2`` labelers; -1 marks an unparseable reply.

    Returns:
        ``(agreed, label)``: a boolean mask of shape ``(N,)``, and the common
        label where agreed, -1 elsewhere, shape ``(N,)``.

    Raises:
        ValueError: When ``votes`` is not two-dimensional with at least two columns.
    """
    votes = _as_labels(votes, "votes")
    if votes.ndim != 2 or votes.shape[1] < 2:
        raise ValueError(f"votes must have shape (N, K) with K >= 2 labelers; got {votes.shape}.")
    agreed = (votes >= 0).all(axis=1) & (votes == votes[:, :1]).all(axis=1)
    return agreed, np.where(agreed, votes[:, 0], -1).astype(int)


def labeler_prompts(labelers: Sequence[LLMSettings], prompts: Sequence[PromptTemplate] = LABELER_PROMPTS) -> list[PromptTemplate]:
    """Give each labeler a prompt: a different one per labeler, in order.

    Two labelers that are the same model need different prompts, or they would
    always agree. Different models get different prompts too, which keeps the
    two labelers' errors as independent as this setup allows.

    Raises:
        ValueError: With fewer than two labelers, or more labelers than prompts.
    """
    if isinstance(labelers, (str, LLMSettings)) or not isinstance(labelers, Sequence):
        raise ValueError(f"labelers must be a list or tuple of LLMSettings, got {type(labelers).__name__}.")
    wrong = [type(labeler).__name__ for labeler in labelers if not isinstance(labeler, LLMSettings)]
    if wrong:
        raise ValueError(f"Every labeler must be an LLMSettings; got {wrong}. Build one with LLMSettings(backend=..., model=...).")
    if len(labelers) < 2:
        raise ValueError(f"Consensus needs at least two labelers, got {len(labelers)}.")
    if len(labelers) > len(prompts):
        raise ValueError(f"{len(labelers)} labelers but only {len(prompts)} prompts; pass one prompt per labeler.")
    identities = [(asdict(labeler), prompt.fingerprint()) for labeler, prompt in zip(labelers, prompts)]
    if len({repr(identity) for identity in identities}) < len(identities):
        raise ValueError("Two labelers have the same model and the same prompt, so they would always agree; use distinct prompts.")
    return list(prompts[: len(labelers)])


def consensus_sample(frame: pd.DataFrame, size: int | None, seed: int = 42) -> pd.DataFrame:
    """Draw ``size`` rows stratified by ``label`` (all rows when ``size`` is ``None`` or too large).

    Raises:
        ValueError: When ``size`` is below 10.
    """
    if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool)):
        raise ValueError(f"size={size!r} must be a whole number of sentences, or None for every row.")
    if size is None or size >= len(frame):
        return frame.copy()
    if size < 10:
        raise ValueError(f"size={size} is too small to stratify; use at least 10, or None for every row.")
    return stratified_sample(frame, size, seed=seed)


def wilson_interval(successes: int, count: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    Args:
        successes: Number of successes, ``0 <= successes <= count``.
        count: Number of trials, at least 1.
        confidence: Coverage, in (0, 1).

    Returns:
        ``(low, high)`` as proportions.
    """
    if any(not isinstance(value, (int, np.integer)) or isinstance(value, bool) for value in (successes, count)):
        raise ValueError(f"successes and count must be whole numbers; got successes={successes!r}, count={count!r}.")
    if count < 1 or not 0 <= successes <= count:
        raise ValueError(f"Need 0 <= successes <= count and count >= 1; got successes={successes}, count={count}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), for example 0.95.")
    z = float(norm.ppf(0.5 + confidence / 2))
    share = successes / count
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def label_quality(
    human, predicted, class_names: Sequence[str], n_resamples: int = 1000, random_state: int = 0
) -> dict[str, float]:
    """Score labels against human labels: accuracy with a Wilson interval, macro and per-class F1 with bootstrap intervals.

    Args:
        human: Human labels, shape ``(N,)``, in ``[0, len(class_names))``.
        predicted: Labels to check, shape ``(N,)``; -1 (unparseable) counts as wrong.
        class_names: Names of the classes in label order.
        n_resamples: Bootstrap resamples of the F1 intervals.
        random_state: Seed of the resampling.

    Returns:
        ``n, accuracy, accuracy_low, accuracy_high, macro_f1, macro_f1_low,
        macro_f1_high`` and ``f1_<name>, f1_<name>_low, f1_<name>_high`` per
        class (lower-case name). Intervals are 95%.
    """
    human = _as_labels(human, "human")
    predicted = _as_labels(predicted, "predicted")
    if human.shape != predicted.shape or human.ndim != 1 or len(human) == 0:
        raise ValueError(f"human {human.shape} and predicted {predicted.shape} must be non-empty and of the same shape (N,).")
    num_classes = len(class_names)
    if human.min() < 0 or human.max() >= num_classes:
        raise ValueError(f"Human labels must lie in [0, {num_classes}); found {sorted(set(human.tolist()))}.")
    if predicted.max() >= num_classes:
        raise ValueError(f"Predicted labels must lie in [-1, {num_classes}); found {sorted(set(predicted.tolist()))}.")
    correct = int((human == predicted).sum())
    low, high = wilson_interval(correct, len(human))
    row: dict[str, float] = {"n": float(len(human)), "accuracy": accuracy(human, predicted), "accuracy_low": low, "accuracy_high": high}

    def macro(truth: np.ndarray, labels: np.ndarray) -> float:
        return macro_f1(truth, labels, num_classes)

    row["macro_f1"] = macro(human, predicted)
    row["macro_f1_low"], row["macro_f1_high"] = bootstrap_bounds(macro, human, predicted, n_resamples=n_resamples, random_state=random_state)
    for index, name in enumerate(class_names):
        key = f"f1_{name.lower()}"

        def one_class(truth: np.ndarray, labels: np.ndarray, positive: int = index) -> float:
            return class_f1(truth, labels, positive=positive)

        row[key] = one_class(human, predicted)
        row[f"{key}_low"], row[f"{key}_high"] = bootstrap_bounds(
            one_class, human, predicted, n_resamples=n_resamples, random_state=random_state
        )
    return row


def quality_table(
    human, labels: dict[str, np.ndarray], class_names: Sequence[str], n_resamples: int = 1000, random_state: int = 0
) -> pd.DataFrame:
    """Score each labeler on every row, and the consensus on the rows where all agree.

    Args:
        human: Human labels, shape ``(N,)``.
        labels: Labeler name to labels, each shape ``(N,)``, at least two.
        class_names: Class names in label order.

    Returns:
        One row per labeler (``rows`` = ``all``), then ``consensus`` (``rows`` =
        ``agreed``), with the columns of :func:`label_quality` and ``labeler``,
        ``rows``, ``coverage`` (share of the N rows scored).
    """
    human = _as_labels(human, "human")
    if len(labels) < 2:
        raise ValueError(f"Pass at least two labelers; got {list(labels)}.")
    names = list(labels)
    votes = np.column_stack([_as_labels(labels[name], name) for name in names])
    agreed, consensus = vote(votes)
    rows = []
    for name in names:
        rows.append({"labeler": name, "rows": "all", "coverage": 1.0, **label_quality(human, labels[name], class_names, n_resamples, random_state)})
    if agreed.any():
        scored = label_quality(human[agreed], consensus[agreed], class_names, n_resamples, random_state)
        rows.append({"labeler": "consensus", "rows": "agreed", "coverage": float(agreed.mean()), **scored})
    else:
        logger.warning("The labelers agree on no row, so the consensus cannot be scored.")
    return pd.DataFrame(rows)


def worst_case_half_width(count: int, confidence: float = 0.95) -> float:
    """Half-width of a normal-approximation interval for a proportion near 0.5 from ``count`` items.

    The widest an accuracy interval gets for a sample of this size, e.g. 0.040 for 600.
    """
    if count < 1:
        raise ValueError(f"count={count} must be at least 1.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), for example 0.95.")
    return float(norm.ppf(0.5 + confidence / 2)) * math.sqrt(0.25 / count)
