"""The experts that a sentence can be deferred to, besides the LLM with the paper's prompt.

L2D-Clinical (Kondadadi and Ortega, arXiv:2604.13285) defers to GPT-5-nano
with one fixed few-shot prompt. The packaged
1.5B model given the same prompt is much weaker and its errors overlap the
encoder's, so deferral has little to gain from it. This module defines other
experts built from the same model and the training split, so the book can
measure how the gain from deferral depends on the expert:

- ``llm``: the paper's prompt (:data:`~l2d_utils.llm.prompts.ADE_PAPER_PROMPT`).
- ``llm-threshold``: the same probabilities, with the decision threshold on
  P(class 1) tuned for F1 on the validation subset (two-class tasks only).
- ``knn-llm``: the LLM with the k training sentences nearest to the input as
  its few-shot examples, k being the number of examples in the paper's prompt.
- ``balanced-llm``: the nearest training sentences of each class in equal
  numbers (k rounded down to a multiple of the number of classes).
- ``knn-llm-leaky``: as ``knn-llm`` but without removing training sentences
  identical to the input. It only measures the leak and is not meant for use.
- ``nearest-label``: the label of the nearest training sentence; no LLM.
- ``nearest-label-leaky``: the same without removing identical sentences, to
  measure the leak.

Retrieval uses the packaged all-MiniLM-L6-v2 sentence embeddings
(:func:`~l2d_utils.llm.retrieval.embed_texts`) and a pool made of the training
split with repeated texts dropped, so that each example is a distinct
sentence. Embeddings are saved under ``<artifacts>/<profile>/embeddings/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from l2d_utils.config import Profile
from l2d_utils.llm.retrieval import (
    balanced_neighbours,
    embed_texts,
    nearest_label,
    nearest_neighbours,
    retrieved_templates,
    tune_probability_threshold,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expert:
    """One way to label a deferred sentence.

    Attributes:
        name: Key in :data:`EXPERTS`.
        description: One line for tables.
        retrieval: ``nearest``, ``balanced`` or ``None`` (the paper's fixed examples).
        uses_llm: Whether the expert calls the LLM.
        exclude_identical: Drop training sentences identical to the input from retrieval.
        tuned_threshold: Relabel by a threshold on P(class 1) tuned on the validation subset.
    """

    name: str
    description: str
    retrieval: str | None = None
    uses_llm: bool = True
    exclude_identical: bool = True
    tuned_threshold: bool = False


#: The experts by name, in the order the book reports them.
EXPERTS: dict[str, Expert] = {
    expert.name: expert
    for expert in (
        Expert("llm", "LLM, the paper's five fixed examples"),
        Expert("llm-threshold", "LLM, fixed examples, threshold tuned on validation", tuned_threshold=True),
        Expert("knn-llm", "LLM, nearest training sentences as examples", retrieval="nearest"),
        Expert("balanced-llm", "LLM, nearest training sentences of each class", retrieval="balanced"),
        Expert(
            "knn-llm-leaky", "LLM, nearest examples, input's own text allowed (leak)", retrieval="nearest", exclude_identical=False
        ),
        Expert("nearest-label", "label of the nearest training sentence (no LLM)", retrieval="nearest", uses_llm=False),
        Expert(
            "nearest-label-leaky",
            "label of the nearest training sentence, input's own text allowed (leak)",
            retrieval="nearest",
            uses_llm=False,
            exclude_identical=False,
        ),
    )
}


def get_expert(name: str) -> Expert:
    """Look up an expert by name.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name not in EXPERTS:
        raise ValueError(f"Unknown expert {name!r}; use one of {list(EXPERTS)}.")
    return EXPERTS[name]


def shots(task, expert: Expert) -> int:
    """Number of few-shot examples (or neighbours) an expert uses for a task.

    ``nearest`` retrieval uses as many examples as the paper's prompt: 5 for
    ADE, 3 for outcomes. ``balanced`` rounds that down to a multiple of the
    number of classes, which gives 4 for ADE and 3 for outcomes.
    """
    k = len(task.template.examples)
    if expert.retrieval == "balanced":
        k = max(task.num_classes, k - k % task.num_classes)
    return k


def cached_embeddings(profile: Profile, texts: list[str]) -> np.ndarray:
    """Embed sentences with the packaged sentence encoder, saving the result by a hash of the texts.

    Args:
        profile: Sets the folder (``<artifacts>/<profile>/embeddings``).
        texts: N sentences.

    Returns:
        Float32 array of shape ``(N, 384)`` with unit-norm rows.
    """
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]
    path = profile.artifacts_dir / "embeddings" / f"minilm-{digest}.npy"
    if path.is_file():
        embeddings = np.load(path)
        if embeddings.shape[0] == len(texts):
            return embeddings
    embeddings = embed_texts(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, embeddings)
    os.replace(partial, path)
    return embeddings


def retrieval_pool(splits: pd.DataFrame) -> pd.DataFrame:
    """Return the training rows with repeated texts dropped (first occurrence kept), index reset.

    Raises:
        ValueError: When ``splits`` has no training rows.
    """
    train = splits[splits["split"] == "train"]
    if train.empty:
        raise ValueError("splits has no rows with split == 'train'; retrieval needs the training split as its pool.")
    return train.drop_duplicates("text").reset_index(drop=True)


def neighbours(profile: Profile, splits: pd.DataFrame, rows: pd.DataFrame, expert: Expert, task) -> tuple[np.ndarray, pd.DataFrame, float]:
    """Retrieve each row's training neighbours for an expert.

    Args:
        profile: Sets the embedding folder.
        splits: All rows, with ``split``; the pool is its training rows.
        rows: Q rows to label, with ``text``.
        expert: An expert with ``retrieval`` set.
        task: Sets the number of neighbours (:func:`shots`).

    Returns:
        ``(indices, pool, ms_per_sentence)``. The indices have shape ``(Q, k)``,
        most similar first, and point into the pool frame. The time covers
        embedding the queries and the search, per sentence, because the
        pool's embeddings are computed once and saved.
    """
    pool = retrieval_pool(splits)
    pool_texts = pool["text"].tolist()
    pool_embeddings = cached_embeddings(profile, pool_texts)
    query_texts = rows["text"].tolist()
    started = time.monotonic()
    query_embeddings = embed_texts(query_texts)
    k = shots(task, expert)
    common = {"query_texts": query_texts, "pool_texts": pool_texts, "exclude_identical": expert.exclude_identical}
    if expert.retrieval == "balanced":
        labels = pool["label"].to_numpy(dtype=np.int64)
        indices = balanced_neighbours(query_embeddings, pool_embeddings, labels, k, **common)
    else:
        indices = nearest_neighbours(query_embeddings, pool_embeddings, k, **common)
    ms_per_sentence = 1000.0 * (time.monotonic() - started) / max(len(query_texts), 1)
    return indices, pool, ms_per_sentence


def identical_in_training(splits: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Return, for each row, whether its text (stripped) also occurs in the training split.

    Returns:
        Boolean array of shape ``(len(rows),)``.
    """
    train_texts = set(splits.loc[splits["split"] == "train", "text"].str.strip())
    return rows["text"].str.strip().isin(train_texts).to_numpy()


def expert_predictions(
    profile: Profile, splits: pd.DataFrame, rows: pd.DataFrame, expert: str, task=None, replay_only: bool = False
) -> pd.DataFrame:
    """Label ``rows`` with one expert, with the columns of :func:`~l2d_utils.pipeline.llm_predictions`.

    LLM calls go through the response cache, so a rerun makes none.

    Args:
        profile: Picks the LLM and the artifacts folder.
        splits: All rows of the task (the training split is the retrieval
            pool; the ``in_validation_subset`` rows tune ``llm-threshold``).
        rows: Rows to label, with ``row_id`` and ``text``.
        expert: A key of :data:`EXPERTS`.
        task: :data:`~l2d_utils.pipeline.ADE_TASK` (default) or ``OUTCOME_TASK``.
        replay_only: Forbid new LLM calls.

    Returns:
        Frame with ``row_id, llm_label, raw_reply, llm_probability,
        prompt_tokens, completion_tokens, latency_ms, cached`` and
        ``retrieval_ms`` (0 without retrieval). For ``nearest-label``
        ``llm_probability`` is NaN and the token counts and ``latency_ms`` are 0.

    Raises:
        ValueError: For an unknown expert, ``llm-threshold`` on a task with
            more than two classes, or splits without the rows an expert needs.
    """
    from l2d_utils.pipeline import ADE_TASK, llm_predictions

    task = ADE_TASK if task is None else task
    chosen = get_expert(expert)
    if chosen.tuned_threshold and task.num_classes != 2:
        raise ValueError(f"Expert {expert!r} tunes a threshold on P(class 1) and needs two classes; task {task.name!r} has {task.num_classes}.")

    if chosen.retrieval is None:
        frame = llm_predictions(profile, rows, template=task.template, replay_only=replay_only)
        frame["retrieval_ms"] = 0.0
        if chosen.tuned_threshold:
            threshold = probability_threshold(profile, splits, task, replay_only)
            frame["llm_label"] = (frame["llm_probability"] >= threshold).astype(int)
        return frame

    indices, pool, retrieval_ms = neighbours(profile, splits, rows, chosen, task)
    pool_labels = pool["label"].to_numpy(dtype=np.int64)
    if not chosen.uses_llm:
        count = len(rows)
        return pd.DataFrame(
            {
                "row_id": rows["row_id"].to_numpy(),
                "llm_label": nearest_label(indices, pool_labels),
                "raw_reply": "",
                "llm_probability": np.full(count, np.nan),
                "prompt_tokens": np.zeros(count, dtype=int),
                "completion_tokens": np.zeros(count, dtype=int),
                "latency_ms": np.zeros(count),
                "cached": np.zeros(count, dtype=bool),
                "retrieval_ms": np.full(count, retrieval_ms),
            }
        )

    # The leaky expert's templates are named like the clean expert's. Where no
    # training text equals the input, both build the same prompt and share one
    # cached response, so only the other inputs cost a call.
    suffix = f"{chosen.retrieval}-{shots(task, chosen)}"
    templates = retrieved_templates(task.template, rows["text"].tolist(), indices, pool["text"].tolist(), pool_labels, suffix)
    frame = llm_predictions(profile, rows, template=templates, replay_only=replay_only)
    frame["retrieval_ms"] = retrieval_ms
    return frame


def probability_threshold(profile: Profile, splits: pd.DataFrame, task=None, replay_only: bool = False) -> float:
    """Tune the LLM's threshold on P(class 1) for F1 on the validation subset (paper prompt).

    Raises:
        ValueError: When ``splits`` has no ``in_validation_subset`` column or it selects no row.
    """
    from l2d_utils.pipeline import ADE_TASK, llm_predictions

    task = ADE_TASK if task is None else task
    if "in_validation_subset" not in splits.columns or not splits["in_validation_subset"].any():
        raise ValueError("splits needs an 'in_validation_subset' column selecting rows; build it with pipeline.ade_splits.")
    validation = splits[splits["in_validation_subset"]]
    frame = llm_predictions(profile, validation, template=task.template, replay_only=replay_only)
    threshold, f1 = tune_probability_threshold(frame["llm_probability"].to_numpy(), validation["label"].to_numpy())
    logger.info("LLM threshold on P(class 1) tuned on %d validation sentences: %.4f (F1 %.3f)", len(validation), threshold, f1)
    return threshold
