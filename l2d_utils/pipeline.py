"""The ADE pipeline's steps, each cached on disk so chapters and reruns share them.

Each chapter calls these functions instead of repeating work: the split is
recomputed (it takes a second and is deterministic), while fine-tuning and
LLM labels are read from ``<artifacts>/<profile>/`` and the response cache
when present. A chapter run on its own therefore still works: it trains or
labels what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from l2d_utils.config import REPLAY_ONLY_ENV, Profile, artifacts_root
from l2d_utils.data import load_ade_corpus, stratified_sample
from l2d_utils.encoder import fine_tune, load_state, predict_proba
from l2d_utils.features import deferral_features
from l2d_utils.llm.base import results_frame
from l2d_utils.llm.cache import ResponseCache
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT, PromptTemplate
from l2d_utils.splits import grouped_split, llm_subset, paper_split

logger = logging.getLogger(__name__)

LLM_CACHE_FILE = "llm_cache.sqlite"


#: Ways to split ADE Corpus V2: the paper's stratified row split, or a split
#: by PubMed id with repeated texts removed (:func:`l2d_utils.splits.grouped_split`).
SPLIT_SCHEMES = ("paper", "grouped")


def ade_splits(profile: Profile, data_dir: str | Path | None = None, scheme: str = "paper") -> pd.DataFrame:
    """Load ADE Corpus V2 and split it for one profile.

    Args:
        profile: Sets the row sample, the seed and the subset size.
        data_dir: Data folder; default ``L2D_DATA_DIR``.
        scheme: ``paper`` (70/15/15 by row, stratified, as the paper) or
            ``grouped`` (70/15/15 by PubMed id after removing repeated texts).

    Returns:
        Frame with ``row_id, pmid, text, label, split, in_llm_subset,
        in_validation_subset, in_sensitivity_pool``. The first two subsets
        are stratified draws of ``profile.llm_subset_size`` rows from test
        and from validation; the paper's LLM labels only the first, the
        held-out protocol needs both. The pool is the test rows that the
        sensitivity analysis redraws subsets from (``profile.sensitivity_pool``).
    """
    if scheme not in SPLIT_SCHEMES:
        raise ValueError(f"Unknown split scheme {scheme!r}; use one of {list(SPLIT_SCHEMES)}.")
    corpus = load_ade_corpus(data_dir)
    if profile.ade_rows is not None:
        corpus = stratified_sample(corpus, profile.ade_rows, seed=profile.encoder.seed)
    if scheme == "paper":
        splits = paper_split(corpus, seed=profile.encoder.seed)
    else:
        splits = grouped_split(corpus, seed=profile.encoder.seed, drop_duplicates=True)
    for column, split in [("in_llm_subset", "test"), ("in_validation_subset", "validation")]:
        drawn = llm_subset(splits[splits["split"] == split], profile.llm_subset_size, seed=profile.encoder.seed)
        splits[column] = splits["row_id"].isin(drawn["row_id"])
    test = splits[splits["split"] == "test"]
    pool = test if profile.sensitivity_pool is None else llm_subset(test, profile.sensitivity_pool, seed=profile.encoder.seed)
    splits["in_sensitivity_pool"] = splits["row_id"].isin(pool["row_id"])
    return splits.reset_index(drop=True)


def _rows_fingerprint(rows: pd.DataFrame) -> str:
    """Hash of which rows are in which split with which label (16 hex digits)."""
    payload = json.dumps([rows["row_id"].tolist(), rows["label"].tolist(), rows["split"].tolist()])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encoder_folder(profile: Profile, splits: pd.DataFrame) -> Path:
    """Return the folder of the profile's fine-tuned encoder for these splits.

    The name carries a hash of the fine-tuning settings and the split, so a
    change to either starts a new run instead of clashing with a saved one.
    """
    payload = json.dumps({"settings": asdict(profile.encoder), "rows": _rows_fingerprint(splits)}, sort_keys=True)
    return profile.artifacts_dir / f"encoder-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def encoder_predictions(profile: Profile, splits: pd.DataFrame) -> pd.DataFrame:
    """Fine-tune the profile's encoder if needed and return its validation and test probabilities.

    The model and predictions live in :func:`encoder_folder`; a finished run
    is reused and an interrupted one resumes.

    Returns:
        Frame with ``row_id, split, text, label, p_negative, p_positive, bert_label,
        confidence`` for validation and test rows.
    """
    folder = encoder_folder(profile, splits)
    predictions_path = folder / "predictions.parquet"
    metadata_path = folder / "predictions.json"
    train = splits[splits["split"] == "train"]
    scored = splits[splits["split"].isin(["validation", "test"])]
    fingerprint = _rows_fingerprint(splits)

    if predictions_path.is_file() and metadata_path.is_file():
        metadata = json.loads(metadata_path.read_text())
        if metadata.get("fingerprint") == fingerprint:
            logger.info("Reusing encoder predictions from %s", predictions_path)
            return pd.read_parquet(predictions_path)

    validation = splits[splits["split"] == "validation"]
    fine_tune(
        train["text"].tolist(),
        train["label"].tolist(),
        validation["text"].tolist(),
        validation["label"].tolist(),
        profile.encoder,
        folder,
    )
    started = time.monotonic()
    probabilities = predict_proba(scored["text"].tolist(), folder, max_length=profile.encoder.max_length, progress="encoder predictions")
    predict_ms = 1000.0 * (time.monotonic() - started) / len(scored)

    frame = scored[["row_id", "split", "text", "label"]].reset_index(drop=True)
    frame["p_negative"] = probabilities[:, 0]
    frame["p_positive"] = probabilities[:, 1]
    frame["bert_label"] = probabilities.argmax(axis=1)
    frame["confidence"] = probabilities.max(axis=1)
    frame.to_parquet(predictions_path)
    metadata_path.write_text(json.dumps({"fingerprint": fingerprint, "predict_ms_per_sentence": predict_ms}))
    return frame


def encoder_run_info(profile: Profile, splits: pd.DataFrame) -> dict[str, object]:
    """Return the fine-tuning history and prediction speed saved by :func:`encoder_predictions`."""
    folder = encoder_folder(profile, splits)
    state = load_state(folder)
    metadata_path = folder / "predictions.json"
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    return {
        "history": state.history if state else [],
        "best_epoch": (state.best_epoch + 1) if state else None,
        "epochs_run": len(state.history) if state else 0,
        "predict_ms_per_sentence": metadata.get("predict_ms_per_sentence"),
    }


def llm_cache(replay_only: bool = False) -> ResponseCache:
    """Open the response cache shared by all profiles (``<artifacts>/llm_cache.sqlite``)."""
    return ResponseCache(artifacts_root() / LLM_CACHE_FILE, replay_only=replay_only)


def llm_predictions(
    profile: Profile, rows: pd.DataFrame, template: PromptTemplate = ADE_PAPER_PROMPT, replay_only: bool = False
) -> pd.DataFrame:
    """Label ``rows`` with the profile's LLM, reading and filling the response cache.

    With ``replay_only`` (or ``L2D_LLM_REPLAY_ONLY=1``) no new call is made and
    a missing response raises :class:`~l2d_utils.llm.cache.CacheMissError`.

    Returns:
        Frame with ``row_id`` and the columns of :func:`l2d_utils.llm.base.results_frame`.
    """
    from l2d_utils.llm.api import make_backend

    replay_only = replay_only or os.environ.get(REPLAY_ONLY_ENV) == "1"
    cache = llm_cache(replay_only)
    try:
        backend = make_backend(profile.llm.backend, profile.llm.model, cache, **_backend_settings(profile))
        results = backend.classify(rows["text"].tolist(), template)
    finally:
        cache.close()
    frame = results_frame(results)
    frame.insert(0, "row_id", rows["row_id"].to_numpy())
    return frame


def _backend_settings(profile: Profile) -> dict[str, object]:
    if profile.llm.backend == "local":
        return {"batch_size": profile.llm.batch_size}
    return {
        "temperature": profile.llm.temperature,
        "max_tokens": profile.llm.max_tokens,
        "reasoning_effort": profile.llm.reasoning_effort,
    }


def deferral_inputs(
    profile: Profile, splits: pd.DataFrame, replay_only: bool = False, rows: str = "in_llm_subset"
) -> pd.DataFrame:
    """Join BERT's and the LLM's outputs and the 18 features on a set of rows.

    Args:
        profile: Picks the encoder and the LLM.
        splits: Output of :func:`ade_splits`.
        replay_only: Forbid new LLM calls.
        rows: Which rows: a boolean column of ``splits`` (``in_llm_subset``,
            the paper's test subset; ``in_validation_subset``), or a split name
            (``test``, ``validation``) for all of its rows.

    Returns:
        One row per chosen sentence: ``row_id, split, text, label, p_negative, p_positive,
        bert_label, confidence, llm_label, llm_probability, latency_ms``, then the
        18 feature columns.
    """
    if rows in ("validation", "test"):
        chosen = splits["split"] == rows
    elif rows in splits.columns and splits[rows].dtype == bool:
        chosen = splits[rows]
    else:
        raise ValueError(
            f"rows={rows!r} names neither a split ('validation', 'test') nor a boolean column of splits "
            "such as 'in_llm_subset' or 'in_validation_subset'."
        )
    bert = encoder_predictions(profile, splits)
    subset = bert[bert["row_id"].isin(splits.loc[chosen, "row_id"])].reset_index(drop=True)
    llm = llm_predictions(profile, subset, replay_only=replay_only)
    merged = subset.merge(llm[["row_id", "llm_label", "llm_probability", "latency_ms"]], on="row_id", validate="one_to_one")
    features = deferral_features(merged["text"], merged[["p_negative", "p_positive"]].to_numpy())
    overlap = [column for column in features.columns if column in merged.columns]
    return pd.concat([merged.drop(columns=overlap), features], axis=1)


def write_results(table: pd.DataFrame, profile: Profile, name: str) -> Path:
    """Write a result table to ``<results>/<profile>/<name>.csv`` and return the path."""
    folder = profile.results_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    table.to_csv(path, index=False, float_format="%.6g")
    return path
