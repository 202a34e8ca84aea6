"""Profiles and paths: one ``profile`` name picks every model, size and folder.

The book's chapters take a ``profile`` parameter. :func:`get_profile` turns that
name into a frozen :class:`Profile`, so a chapter, a test and a user script that
pass the same name train the same encoder on the same rows.

Paths come from environment variables, never from constants in this package:

``L2D_DATA_DIR``
    Folder that holds ``ade_corpus_v2/`` (the original release files).
``L2D_ARTIFACTS_DIR``
    Where fine-tuned models, predictions and the LLM response cache go.
    Default: ``artifacts/`` in the current working directory.
``L2D_RESULTS_DIR``
    Where result tables are written as CSV. Default: ``results/``.
``L2D_MODEL_CACHE``
    Where converted model weights (the de-quantized GGUF) are kept between
    runs. Default: ``~/.cache/l2d-clinical``.
``L2D_LLM_REPLAY_ONLY``
    ``1`` forbids new LLM calls; responses must come from the cache.
``L2D_MIMIC_NOTES``
    Path of MIMIC-IV-Note's ``discharge.csv.gz`` (or its folder). When set,
    the treatment-outcome chapters build their data from these notes instead
    of PsyTAR. Needs credentialed access and an API for the extraction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from l2d_utils.llm.costs import Prices

DATA_DIR_ENV = "L2D_DATA_DIR"
ARTIFACTS_DIR_ENV = "L2D_ARTIFACTS_DIR"
RESULTS_DIR_ENV = "L2D_RESULTS_DIR"
MODEL_CACHE_ENV = "L2D_MODEL_CACHE"
#: Set to 1 to forbid new LLM calls: a response missing from the cache raises
#: CacheMissError. For builds that must not spend API credit.
REPLAY_ONLY_ENV = "L2D_LLM_REPLAY_ONLY"
MIMIC_NOTES_ENV = "L2D_MIMIC_NOTES"

#: Name of the packaged encoder; resolved to a folder by :mod:`l2d_utils.models`.
PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
#: Name of the packaged LLM; resolved to a GGUF file by :mod:`l2d_utils.models`.
PACKAGED_QWEN = "packaged:Qwen2.5-Coder-1.5B-Instruct-Q4_K_M"


@dataclass(frozen=True)
class EncoderSettings:
    """Fine-tuning hyperparameters of the BERT-style classifier.

    The defaults are the ADE settings of arXiv:2604.13285, section 4.2
    (BioBERT on ADE Corpus V2).
    """

    model: str = PACKAGED_MINILM
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 256
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_epochs: int = 5
    patience: int = 2
    seed: int = 42
    #: Save a resumable checkpoint after this many optimizer steps.
    checkpoint_every_steps: int = 200


@dataclass(frozen=True)
class LLMSettings:
    """LLM backend, model and request settings for labelling the test subset.

    Attributes:
        backend: ``local``, ``openai`` or ``azure``.
        model: Packaged model name, Hub id, API model name or Azure deployment.
        batch_size: Inputs scored per forward pass (``local`` only).
        temperature: Sampling temperature for API backends; ``None`` leaves it
            out of the request, as GPT-5 models accept only their default.
        max_tokens: Reply token limit for API backends. For reasoning models
            it also covers hidden reasoning tokens, so it must not be tiny.
        reasoning_effort: ``minimal``, ``low``, ... for reasoning models; ``None`` to omit.
        prices: USD per million input and output tokens, for the book's cost
            tables; ``None`` (the default, and right for a local model) leaves
            costs out. No price ships with the project: take them from the
            provider's current price list.
    """

    backend: str = "local"
    model: str = PACKAGED_QWEN
    batch_size: int = 8
    temperature: float | None = None
    max_tokens: int = 16
    reasoning_effort: str | None = None
    prices: Prices | None = None


#: The paper's treatment-outcome settings (arXiv:2604.13285, section 4.2):
#: Bio_ClinicalBERT, learning rate 2e-5, batch 32, length 512, warmup 0.1, up
#: to 10 epochs. Its dropout of 0.1 is the model's default. The paper gives no
#: weight decay or patience for this task; the ADE values (0.01, 2) are kept.
OUTCOME_PAPER_ENCODER = EncoderSettings(
    model="emilyalsentzer/Bio_ClinicalBERT", learning_rate=2e-5, batch_size=32, max_length=512, max_epochs=10
)


@dataclass(frozen=True)
class Profile:
    """Every model choice and data size of one run of the book.

    Attributes:
        name: ``smoke``, ``laptop`` or ``paper``.
        ade_rows: Rows of ADE Corpus V2 used, drawn stratified by label with
            seed 42 before splitting; ``None`` uses all 23,516 rows.
        llm_subset_size: Test rows that the LLM labels (the paper: 500).
        encoder: Fine-tuning settings.
        llm: LLM settings.
        cv_folds: Folds of the out-of-fold deferral scores (the paper: 5).
        random_deferral_seeds: Seeds averaged for the random-deferral baseline.
        sensitivity_seeds: Redraws of the test subset and of the folds in the
            sensitivity analysis (at least 20).
        sensitivity_pool: Test rows the LLM labels so that subsets can be
            redrawn; ``None`` labels the whole test split.
        outcome_encoder: Fine-tuning settings of the three-class outcome encoder.
        outcome_rows: PsyTAR sentences used, drawn by post with seed 42;
            ``None`` uses all 5,828.
        labelers: The two (or more) models of the consensus labels. When two
            are the same model, the consensus chapter gives them different prompts.
        consensus_sample: PsyTAR sentences the labelers label, a stratified
            draw; ``None`` labels every sentence.
        mimic_notes: Discharge notes sampled when ``L2D_MIMIC_NOTES`` is set (the paper: 2,000).
        description: One line for the book's pages.
    """

    name: str
    ade_rows: int | None
    llm_subset_size: int
    encoder: EncoderSettings
    llm: LLMSettings
    cv_folds: int = 5
    random_deferral_seeds: int = 1000
    sensitivity_seeds: int = 20
    sensitivity_pool: int | None = None
    outcome_encoder: EncoderSettings = EncoderSettings(max_length=128)
    outcome_rows: int | None = None
    labelers: tuple[LLMSettings, ...] = (LLMSettings(), LLMSettings())
    consensus_sample: int | None = 600
    mimic_notes: int = 2000
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.outcome_encoder, EncoderSettings):
            raise ValueError(f"outcome_encoder must be an EncoderSettings, got {type(self.outcome_encoder).__name__}.")
        if len(self.labelers) < 2 or not all(isinstance(labeler, LLMSettings) for labeler in self.labelers):
            raise ValueError(
                f"labelers must be a tuple of at least two LLMSettings, got {self.labelers!r}. "
                "Example: labelers=(LLMSettings(backend='openai', model='a'), LLMSettings(backend='openai', model='b'))."
            )
        for field, minimum, optional in (("outcome_rows", 10, True), ("consensus_sample", 10, True), ("mimic_notes", 1, False)):
            value = getattr(self, field)
            if optional and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                alternative = " or None (all rows)" if optional else ""
                raise ValueError(f"{field}={value!r} must be a whole number of at least {minimum}{alternative}.")

    @property
    def artifacts_dir(self) -> Path:
        """Folder of this profile's fine-tuned model, predictions and labels."""
        return artifacts_root() / self.name

    @property
    def results_dir(self) -> Path:
        """Folder of this profile's result tables (CSV)."""
        return results_root() / self.name


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        ade_rows=900,
        llm_subset_size=48,
        # Checkpoints every 10 steps, so an interrupted smoke run can resume. The
        # learning rate is 4x the paper's so that 80 steps move the encoder off
        # the majority class.
        encoder=EncoderSettings(learning_rate=2e-4, max_epochs=2, max_length=128, checkpoint_every_steps=10),
        llm=LLMSettings(),
        random_deferral_seeds=200,
        sensitivity_pool=96,
        outcome_encoder=EncoderSettings(learning_rate=2e-4, max_epochs=2, max_length=64, checkpoint_every_steps=10),
        outcome_rows=400,
        consensus_sample=60,
        mimic_notes=20,
        description=(
            "a 900-row stratified sample of ADE Corpus V2, two epochs of MiniLM "
            "fine-tuning, 48 LLM calls: checks that every step runs, not what it scores"
        ),
    ),
    "laptop": Profile(
        name="laptop",
        ade_rows=None,
        llm_subset_size=500,
        encoder=EncoderSettings(max_epochs=3),
        llm=LLMSettings(),
        outcome_encoder=EncoderSettings(max_length=128, max_epochs=5),
        description=(
            "all of ADE Corpus V2 and PsyTAR, MiniLM-L6 fine-tuned on the CPU, "
            "the packaged Qwen2.5-Coder-1.5B on the paper's 500-row ADE test subset "
            "and on PsyTAR's validation and test posts"
        ),
    ),
    "paper": Profile(
        name="paper",
        ade_rows=None,
        llm_subset_size=500,
        encoder=EncoderSettings(model="dmis-lab/biobert-base-cased-v1.2"),
        llm=LLMSettings(backend="azure", model="gpt-5-nano", max_tokens=512, reasoning_effort="minimal"),
        outcome_encoder=OUTCOME_PAPER_ENCODER,
        # The paper's labelers were GPT-5.2 and Claude 4.5. Any OpenAI-compatible
        # endpoint serves; point OPENAI_BASE_URL at a gateway for the second.
        labelers=(
            # API references list none, low, medium, high and xhigh for GPT-5.2, so "minimal" would be rejected.
            LLMSettings(backend="openai", model="gpt-5.2", max_tokens=1024, reasoning_effort="low"),
            LLMSettings(backend="openai", model="claude-sonnet-4-5", max_tokens=64),
        ),
        consensus_sample=None,
        description=(
            "the paper's setup: BioBERT-base-cased-v1.2 from the Hugging Face Hub "
            "and GPT-5-nano through Azure OpenAI; needs a GPU, network access and an API key. "
            "The analysis chapters send about 5,000 sentences to the API (the whole test split, "
            "500 validation sentences and both subsets of the grouped split), and chapter 3 about "
            "1,100 more with retrieved few-shot examples"
        ),
    ),
}


def get_profile(name: str, **overrides: object) -> Profile:
    """Look up a profile by name, optionally replacing some of its fields.

    Args:
        name: One of the keys of :data:`PROFILES`.
        **overrides: Fields of :class:`Profile` to replace, e.g. ``llm_subset_size=100``.

    Raises:
        ValueError: For an unknown name or field.
    """
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r}. Use one of {sorted(PROFILES)}: "
            "'smoke' for tests, 'laptop' for one CPU machine, 'paper' for the paper's models."
        )
    profile = PROFILES[name]
    if not overrides:
        return profile
    unknown = set(overrides) - set(Profile.__dataclass_fields__)
    if unknown:
        raise ValueError(f"Unknown profile fields {sorted(unknown)}; valid fields: {sorted(Profile.__dataclass_fields__)}")
    return replace(profile, **overrides)  # type: ignore[arg-type]


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data folder from ``path`` or the ``L2D_DATA_DIR`` variable.

    Raises:
        FileNotFoundError: When neither is set or the folder does not exist.
    """
    raw = path if path is not None else os.environ.get(DATA_DIR_ENV)
    if not raw:
        raise FileNotFoundError(
            f"No data folder given. Set {DATA_DIR_ENV} to the folder that contains "
            "'ade_corpus_v2/' and 'psytar/' (for example: export L2D_DATA_DIR=/path/to/data), "
            "or pass data_dir=... explicitly."
        )
    folder = Path(raw).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Data folder {folder} does not exist. Point {DATA_DIR_ENV} at the folder that "
            "contains 'ade_corpus_v2/' and 'psytar/'."
        )
    return folder


def artifacts_root() -> Path:
    """Folder for fine-tuned models, predictions and caches (``L2D_ARTIFACTS_DIR``)."""
    return Path(os.environ.get(ARTIFACTS_DIR_ENV, "artifacts")).expanduser().resolve()


def results_root() -> Path:
    """Folder for result CSV files (``L2D_RESULTS_DIR``)."""
    return Path(os.environ.get(RESULTS_DIR_ENV, "results")).expanduser().resolve()


#: File name of the LLM response cache, shared by all profiles, in the artifacts folder.
LLM_CACHE_FILE = "llm_cache.sqlite"


def model_cache_dir() -> Path:
    """Folder for converted model weights kept between runs (``L2D_MODEL_CACHE``)."""
    default = Path.home() / ".cache" / "l2d-clinical"
    return Path(os.environ.get(MODEL_CACHE_ENV, default)).expanduser().resolve()
