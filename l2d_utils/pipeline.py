"""The pipeline's steps, each cached on disk so chapters and reruns share them.

Two tasks run through the same functions (:data:`TASKS`): ADE detection on
ADE Corpus V2 (two classes) and treatment outcomes on PsyTAR or MIMIC-IV
(three classes). A :class:`Task` names the classes, the prompt and which of
the profile's encoder settings apply.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from l2d_utils.config import LLM_CACHE_FILE, MIMIC_NOTES_ENV, REPLAY_ONLY_ENV, EncoderSettings, LLMSettings, Profile, artifacts_root
from l2d_utils.data import load_ade_corpus, stratified_sample
from l2d_utils.encoder import fine_tune, load_state, predict_proba
from l2d_utils.features import deferral_features, probability_columns
from l2d_utils.llm.base import results_frame
from l2d_utils.llm.cache import ResponseCache
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT, OUTCOME_PAPER_PROMPT, PromptTemplate
from l2d_utils.outcomes import OUTCOME_CLASSES, load_psytar, outcome_split
from l2d_utils.splits import grouped_split, llm_subset, paper_split

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Task:
    """Settings that differ between the two classification tasks.

    Attributes:
        name: ``ade`` or ``outcome``; also the prefix of result files.
        class_names: Names of the classes in label order, or ``None`` for
            ADE's two classes (probability columns ``p_negative, p_positive``).
        template: The LLM prompt.
        encoder_field: The :class:`~l2d_utils.config.Profile` field with the
            fine-tuning settings (``encoder`` or ``outcome_encoder``).
    """

    name: str
    class_names: tuple[str, ...] | None
    template: PromptTemplate
    encoder_field: str

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return 2 if self.class_names is None else len(self.class_names)

    @property
    def probability_columns(self) -> list[str]:
        """Names of the encoder's per-class probability columns."""
        return probability_columns(self.num_classes, self.class_names)

    def encoder_settings(self, profile: Profile) -> EncoderSettings:
        """Return the profile's fine-tuning settings for this task."""
        return getattr(profile, self.encoder_field)


ADE_TASK = Task(name="ade", class_names=None, template=ADE_PAPER_PROMPT, encoder_field="encoder")
OUTCOME_TASK = Task(name="outcome", class_names=OUTCOME_CLASSES, template=OUTCOME_PAPER_PROMPT, encoder_field="outcome_encoder")
#: The tasks by name.
TASKS: dict[str, Task] = {task.name: task for task in (ADE_TASK, OUTCOME_TASK)}


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


#: Data sources of the treatment-outcome task.
OUTCOME_SOURCES = ("psytar", "mimic")


def outcome_source() -> str:
    """Return ``mimic`` when ``L2D_MIMIC_NOTES`` is set, else ``psytar``."""
    return "mimic" if os.environ.get(MIMIC_NOTES_ENV) else "psytar"


def draw_posts(frame: pd.DataFrame, n_rows: int, seed: int = 42) -> pd.DataFrame:
    """Keep whole posts, in a seeded random order, until at least ``n_rows`` rows are kept.

    Drawing posts instead of rows keeps every post's sentences together, so
    the split by post that follows stays a split by post.

    Args:
        frame: Rows with ``post_id``.
        n_rows: Rows wanted, at least 10.
        seed: Seed of the post order.

    Returns:
        The kept rows in their original order.

    Raises:
        ValueError: When ``n_rows`` is below 10 or above ``len(frame)``.
    """
    if not isinstance(n_rows, (int, np.integer)) or isinstance(n_rows, bool) or not 10 <= n_rows <= len(frame):
        raise ValueError(f"n_rows={n_rows!r} must be a whole number between 10 and the number of rows {len(frame)}.")
    post_ids = frame["post_id"].astype(str)
    posts = np.random.default_rng(seed).permutation(np.array(sorted(post_ids.unique())))
    cumulative_rows = np.cumsum(post_ids.value_counts().reindex(posts).to_numpy())
    enough = int(np.searchsorted(cumulative_rows, n_rows)) + 1
    return frame[post_ids.isin(set(posts[:enough])).to_numpy()].reset_index(drop=True)


def outcome_splits(profile: Profile, data_dir: str | Path | None = None, source: str | None = None) -> pd.DataFrame:
    """Load the treatment-outcome rows and split them 80/10/10 by post or by note.

    Args:
        profile: Sets the row sample and the seed.
        data_dir: Data folder containing ``psytar/``; default ``L2D_DATA_DIR``.
        source: ``psytar`` (the default run) or ``mimic`` (discharge notes
            from ``L2D_MIMIC_NOTES``, see :func:`mimic_outcome_rows`). Default:
            :func:`outcome_source`.

    Returns:
        Frame with ``row_id, group_id, text, label, split``: ``group_id`` is
        the PsyTAR post or the MIMIC note, and no group spans two splits.
        ``label`` indexes :data:`~l2d_utils.outcomes.OUTCOME_CLASSES`.
        ``frame.attrs`` contains ``source`` and, for PsyTAR, the loader's counts.
        The texts are restricted: never print them.
    """
    source = outcome_source() if source is None else source
    if source not in OUTCOME_SOURCES:
        raise ValueError(f"Unknown outcome source {source!r}; use one of {list(OUTCOME_SOURCES)}.")
    seed = profile.outcome_encoder.seed
    if source == "mimic":
        rows = mimic_outcome_rows(profile)
        frame = rows.rename(columns={"note_id": "group_id"})[["row_id", "group_id", "text", "label", "split"]]
        frame.attrs["source"] = "mimic"
        return frame
    sentences = load_psytar(data_dir)
    attrs = dict(sentences.attrs)
    if profile.outcome_rows is not None:
        sentences = draw_posts(sentences, profile.outcome_rows, seed=seed)
    split = outcome_split(sentences, seed=seed)
    frame = split.rename(columns={"post_id": "group_id"})[["row_id", "group_id", "text", "label", "split"]].reset_index(drop=True)
    frame.attrs.update(attrs)
    frame.attrs["source"] = "psytar"
    return frame


def mimic_outcome_rows(profile: Profile, notes: str | Path | None = None) -> pd.DataFrame:
    """Build the MIMIC-IV consensus triplets with the profile's labelers, or read them back.

    The extraction model is the profile's first labeler; every labeler labels
    every triplet (see :func:`l2d_utils.mimic.build_outcome_dataset`). The
    triplets go to ``<artifacts>/<profile>/mimic_outcomes-<hash>.parquet``
    beside a JSON report; the LLM replies stay in the response cache, so an
    interrupted run resumes where it stopped.

    Args:
        profile: Sets the note sample size, the seed and the models.
        notes: ``discharge.csv.gz`` or its folder; default ``L2D_MIMIC_NOTES``.

    Returns:
        The triplets (:data:`l2d_utils.mimic.DATASET_COLUMNS`) with ``row_id``.
        They contain note text: never publish them.

    Raises:
        FileNotFoundError: When no notes path is given or it does not exist.
        ValueError: When two labelers are the same model with the same settings.
    """
    from l2d_utils.llm.generation import make_generator
    from l2d_utils.mimic import build_outcome_dataset

    table_path = _mimic_table_path(profile, notes)
    if table_path.is_file():
        logger.info("Reusing MIMIC outcome triplets from %s", table_path)
        return pd.read_parquet(table_path)

    replay_only = os.environ.get(REPLAY_ONLY_ENV) == "1"
    cache = llm_cache(replay_only)
    try:
        generators = [
            make_generator(labeler.backend, labeler.model, cache, **_generator_settings(labeler)) for labeler in profile.labelers
        ]
        dataset = build_outcome_dataset(
            _mimic_notes_path(notes), generators[0], generators, n_notes=profile.mimic_notes, seed=profile.outcome_encoder.seed
        )
    finally:
        cache.close()
    triplets = dataset.triplets.copy()
    triplets.insert(0, "row_id", np.arange(len(triplets)))
    profile.artifacts_dir.mkdir(parents=True, exist_ok=True)
    triplets.to_parquet(table_path)
    table_path.with_suffix(".json").write_text(json.dumps(asdict(dataset.report), indent=1, default=str))
    return triplets


def mimic_report(profile: Profile, notes: str | Path | None = None) -> dict[str, object]:
    """Return the counts of :class:`l2d_utils.mimic.MimicReport` saved by :func:`mimic_outcome_rows`.

    Builds the triplets first when they are not saved yet.
    """
    mimic_outcome_rows(profile, notes)
    return json.loads(_mimic_table_path(profile, notes).with_suffix(".json").read_text())


def _mimic_notes_path(notes: str | Path | None) -> Path:
    from l2d_utils.mimic import find_discharge_file

    raw = notes if notes is not None else os.environ.get(MIMIC_NOTES_ENV)
    if not raw:
        raise FileNotFoundError(
            f"No MIMIC-IV notes given. Set {MIMIC_NOTES_ENV} to the path of discharge.csv.gz "
            "(from MIMIC-IV-Note, credentialed access on PhysioNet), or pass notes=..."
        )
    return find_discharge_file(raw)


def _mimic_table_path(profile: Profile, notes: str | Path | None) -> Path:
    """Return the path of the saved triplets.

    Its name hashes the notes file's path, size and modification time, the
    sample size, the seed, the labelers and both prompts, so a change to any
    of them builds the triplets again.
    """
    from l2d_utils.mimic import EXTRACTION_PROMPT, LABELING_PROMPT

    path = _mimic_notes_path(notes)
    # Prices only change the cost tables, so they stay out of the name.
    identities = [{key: value for key, value in asdict(labeler).items() if key != "prices"} for labeler in profile.labelers]
    if any(identities.count(identity) > 1 for identity in identities):  # Profile ensures at least two
        raise ValueError(
            f"Profile {profile.name!r} has labelers {[labeler.model for labeler in profile.labelers]}; the MIMIC consensus "
            "needs two different models, because one model with one prompt always agrees with itself. "
            "Use the paper profile or get_profile(..., labelers=(LLMSettings(...), LLMSettings(...)))."
        )
    status = path.stat()
    key = json.dumps(
        {
            "notes": [str(path), status.st_size, status.st_mtime_ns],
            "n": profile.mimic_notes,
            "seed": profile.outcome_encoder.seed,
            "labelers": identities,
            "prompts": [EXTRACTION_PROMPT.fingerprint(), LABELING_PROMPT.fingerprint()],
        }
    )
    return profile.artifacts_dir / f"mimic_outcomes-{hashlib.sha256(key.encode()).hexdigest()[:10]}.parquet"


def _generator_settings(settings: LLMSettings) -> dict[str, object]:
    if settings.backend == "local":
        return {"max_tokens": 512}
    return {"max_tokens": max(settings.max_tokens, 512), "temperature": settings.temperature, "reasoning_effort": settings.reasoning_effort}


def _rows_fingerprint(rows: pd.DataFrame) -> str:
    """Hash of which rows are in which split with which label (16 hex digits)."""
    payload = json.dumps([rows["row_id"].tolist(), rows["label"].tolist(), rows["split"].tolist()])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encoder_folder(profile: Profile, splits: pd.DataFrame, task: Task = ADE_TASK) -> Path:
    """Return the folder of the profile's fine-tuned encoder for these splits.

    The name carries a hash of the fine-tuning settings, the task and the
    split, so a change to any of them starts a new run instead of clashing
    with a saved one.
    """
    content: dict[str, object] = {"settings": asdict(task.encoder_settings(profile)), "rows": _rows_fingerprint(splits)}
    if task is not ADE_TASK:
        content["task"] = task.name  # ADE folders keep the names of earlier releases
    payload = json.dumps(content, sort_keys=True)
    return profile.artifacts_dir / f"encoder-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def encoder_predictions(profile: Profile, splits: pd.DataFrame, task: Task = ADE_TASK) -> pd.DataFrame:
    """Fine-tune the profile's encoder if needed and return its validation and test probabilities.

    The model and predictions live in :func:`encoder_folder`; a finished run
    is reused and an interrupted one resumes.

    Args:
        profile: Picks the model and settings.
        splits: Rows with ``row_id, text, label, split``.
        task: :data:`ADE_TASK` or :data:`OUTCOME_TASK`.

    Returns:
        Frame with ``row_id, split, text, label``, one probability column per
        class (:attr:`Task.probability_columns`: ``p_negative, p_positive`` for
        ADE), ``bert_label, confidence`` for validation and test rows.
    """
    folder = encoder_folder(profile, splits, task)
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
    settings = task.encoder_settings(profile)
    fine_tune(
        train["text"].tolist(),
        train["label"].tolist(),
        validation["text"].tolist(),
        validation["label"].tolist(),
        settings,
        folder,
        num_labels=task.num_classes,
    )
    started = time.monotonic()
    probabilities = predict_proba(scored["text"].tolist(), folder, max_length=settings.max_length, progress="encoder predictions")
    predict_ms = 1000.0 * (time.monotonic() - started) / len(scored)

    frame = scored[["row_id", "split", "text", "label"]].reset_index(drop=True)
    for index, column in enumerate(task.probability_columns):
        frame[column] = probabilities[:, index]
    frame["bert_label"] = probabilities.argmax(axis=1)
    frame["confidence"] = probabilities.max(axis=1)
    frame.to_parquet(predictions_path)
    metadata_path.write_text(json.dumps({"fingerprint": fingerprint, "predict_ms_per_sentence": predict_ms}))
    return frame


def encoder_run_info(profile: Profile, splits: pd.DataFrame, task: Task = ADE_TASK) -> dict[str, object]:
    """Return the fine-tuning history and prediction speed saved by :func:`encoder_predictions`."""
    folder = encoder_folder(profile, splits, task)
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
    profile: Profile,
    rows: pd.DataFrame,
    template: PromptTemplate | list[PromptTemplate] = ADE_PAPER_PROMPT,
    replay_only: bool = False,
    llm: LLMSettings | None = None,
) -> pd.DataFrame:
    """Label ``rows`` with the profile's LLM, reading and filling the response cache.

    With ``replay_only`` (or ``L2D_LLM_REPLAY_ONLY=1``) no new call is made and
    a missing response raises :class:`~l2d_utils.llm.cache.CacheMissError`.

    Args:
        profile: Picks the LLM.
        rows: Frame with ``row_id`` and ``text``.
        template: The prompt, or one prompt per row (retrieved few-shot examples).
        replay_only: Forbid new calls.
        llm: Another model than ``profile.llm``, such as one of ``profile.labelers``.

    Returns:
        Frame with ``row_id`` and the columns of :func:`l2d_utils.llm.base.results_frame`.
    """
    from l2d_utils.llm.api import make_backend

    settings = profile.llm if llm is None else llm
    replay_only = replay_only or os.environ.get(REPLAY_ONLY_ENV) == "1"
    cache = llm_cache(replay_only)
    try:
        backend = make_backend(settings.backend, settings.model, cache, **_backend_settings(settings))
        texts = rows["text"].tolist()
        results = backend.classify_each(texts, template) if isinstance(template, list) else backend.classify(texts, template)
    finally:
        cache.close()
    frame = results_frame(results)
    frame.insert(0, "row_id", rows["row_id"].to_numpy())
    return frame


def _backend_settings(settings: LLMSettings) -> dict[str, object]:
    if settings.backend == "local":
        return {"batch_size": settings.batch_size}
    return {
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "reasoning_effort": settings.reasoning_effort,
    }


def deferral_inputs(
    profile: Profile,
    splits: pd.DataFrame,
    replay_only: bool = False,
    rows: str = "in_llm_subset",
    task: Task = ADE_TASK,
    expert: str = "llm",
) -> pd.DataFrame:
    """Join BERT's and the expert's outputs and the deferral features on a set of rows.

    Args:
        profile: Picks the encoder and the LLM.
        splits: Output of :func:`ade_splits` or :func:`outcome_splits`.
        replay_only: Forbid new LLM calls.
        rows: Which rows: a boolean column of ``splits`` (``in_llm_subset``,
            the paper's test subset; ``in_validation_subset``), or a split name
            (``test``, ``validation``) for all of its rows.
        task: :data:`ADE_TASK` or :data:`OUTCOME_TASK`; sets the classes and the prompt.
        expert: Who labels deferred sentences, a key of
            :data:`l2d_utils.experts.EXPERTS`; ``llm`` is the paper's prompt.
            The ``llm_*`` columns then hold that expert's labels.

    Returns:
        One row per chosen sentence: ``row_id, split, text, label``, the
        probability columns, ``bert_label, confidence, llm_label,
        llm_probability, latency_ms``, then the feature columns of
        :func:`l2d_utils.features.feature_names` (18 for ADE, 19 for three classes).
    """
    if rows in ("validation", "test"):
        chosen = splits["split"] == rows
    elif rows in splits.columns and splits[rows].dtype == bool:
        chosen = splits[rows]
    else:
        columns = [column for column in splits.columns if splits[column].dtype == bool]
        raise ValueError(
            f"rows={rows!r} names neither a split ('validation', 'test') nor a boolean column of splits "
            f"(this frame has {columns or 'none'}). For the outcome task pass rows='validation' or rows='test'."
        )
    bert = encoder_predictions(profile, splits, task)
    subset = bert[bert["row_id"].isin(splits.loc[chosen, "row_id"])].reset_index(drop=True)
    if expert == "llm":
        llm = llm_predictions(profile, subset, template=task.template, replay_only=replay_only)
    else:
        from l2d_utils.experts import expert_predictions

        llm = expert_predictions(profile, splits, subset, expert, task=task, replay_only=replay_only)
    merged = subset.merge(llm[["row_id", "llm_label", "llm_probability", "latency_ms"]], on="row_id", validate="one_to_one")
    features = deferral_features(merged["text"], merged[task.probability_columns].to_numpy(), task.class_names)
    overlap = [column for column in features.columns if column in merged.columns]
    return pd.concat([merged.drop(columns=overlap), features], axis=1)


def write_results(table: pd.DataFrame, profile: Profile, name: str) -> Path:
    """Write a result table to ``<results>/<profile>/<name>.csv`` and return the path."""
    folder = profile.results_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    table.to_csv(path, index=False, float_format="%.6g")
    return path
