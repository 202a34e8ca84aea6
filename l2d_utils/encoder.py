"""Fine-tune a BERT-style encoder for sentence classification, resumably.

:func:`fine_tune` trains with AdamW, a linear schedule with warmup, and early
stopping on validation F1, as the paper (arXiv:2604.13285, section 4.2) does. After every
``checkpoint_every_steps`` optimizer steps and at each epoch's end it saves
the model, optimizer, scheduler and position in the epoch. A run that is
killed resumes from the last checkpoint with the same batch order, because
each epoch's order comes from a generator seeded with ``seed + epoch``.

The best epoch's weights are saved to ``<output_dir>/best`` and
:func:`predict_proba` reads them for the validation and test predictions
that later chapters use.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import f1_score
from tqdm import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from l2d_utils.config import EncoderSettings
from l2d_utils.models import resolve_encoder

logger = logging.getLogger(__name__)

BEST_DIR = "best"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "training_state.json"


@dataclass
class TrainingState:
    """Progress of a fine-tuning run, saved beside each checkpoint.

    Attributes:
        epoch: Epoch in progress, counted from 0.
        step_in_epoch: Batches of that epoch already trained.
        global_step: Optimizer steps since the start.
        best_f1: Best validation F1 so far (macro F1 for more than two classes).
        best_epoch: Epoch (from 0) that reached ``best_f1``; -1 before the first evaluation.
        epochs_without_improvement: Evaluations since ``best_f1`` last improved.
        history: One dict per finished epoch: ``epoch, train_loss, validation_f1, seconds``.
        finished: True once training stopped, by early stopping or the epoch limit.
        settings: The :class:`EncoderSettings` the run started with.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_f1: float = -1.0
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    finished: bool = False
    settings: dict[str, object] = field(default_factory=dict)


def _batches(count: int, batch_size: int, generator: torch.Generator | None) -> list[np.ndarray]:
    """Split ``range(count)`` into batches, shuffled when a generator is given."""
    order = torch.randperm(count, generator=generator).numpy() if generator is not None else np.arange(count)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def classification_f1(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> float:
    """Return positive-class F1 for two labels and macro F1 for more."""
    if num_labels == 2:
        return float(f1_score(labels, predictions, pos_label=1, zero_division=0))
    return float(f1_score(labels, predictions, average="macro", zero_division=0))


def device() -> torch.device:
    """Return the first CUDA device when one is available, else the CPU."""
    # NOTE: the CUDA path has not been run by this project's tests, which run on CPUs only.
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _encode(tokenizer, texts: Sequence[str], max_length: int, target: torch.device) -> dict[str, torch.Tensor]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    return {name: tensor.to(target) for name, tensor in encoded.items()}


@torch.no_grad()
def _predict_with(model, tokenizer, texts: Sequence[str], max_length: int, batch_size: int, progress: str | None) -> np.ndarray:
    """Return softmax probabilities, shape ``(len(texts), num_labels)``.

    Texts are scored in order of length so each batch pads little, and the
    rows are put back in input order.
    """
    model.eval()
    lengths = np.array([len(text) for text in texts])
    order = np.argsort(lengths, kind="stable")
    probabilities = np.zeros((len(texts), model.config.num_labels), dtype=np.float64)
    starts = range(0, len(texts), batch_size)
    # disable=None lets tqdm hide the bar when stderr is not a terminal, as in executed notebooks.
    for start in tqdm(starts, desc=progress, disable=True if progress is None else None, leave=False):
        index = order[start : start + batch_size]
        inputs = _encode(tokenizer, [texts[i] for i in index], max_length, model.device)
        logits = model(**inputs).logits.float()
        probabilities[index] = torch.softmax(logits, dim=-1).cpu().numpy()
    return probabilities


def _save_checkpoint(model, optimizer, scheduler, state: TrainingState, folder: Path) -> None:
    """Write a resumable checkpoint; the state file is written last and renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder / "model")
    # The random state makes dropout after a resume match an uninterrupted run.
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()},
        folder / "optimizer.pt",
    )
    temporary = folder / (STATE_FILE + ".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=1))
    temporary.replace(folder / STATE_FILE)


def fine_tune(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    validation_texts: Sequence[str],
    validation_labels: Sequence[int],
    settings: EncoderSettings,
    output_dir: str | Path,
    num_labels: int = 2,
    max_train_seconds: float | None = None,
) -> TrainingState:
    """Fine-tune ``settings.model`` and keep the epoch with the best validation F1.

    Args:
        train_texts: Training sentences, length N.
        train_labels: Integer labels in ``[0, num_labels)``, length N.
        validation_texts: Validation sentences, length M.
        validation_labels: Labels, length M.
        settings: Hyperparameters; the defaults are the paper's ADE settings.
        output_dir: Folder for checkpoints and the best model. A finished run
            found there is returned as is; an unfinished one is resumed.
        num_labels: Number of classes.
        max_train_seconds: Stop after a checkpoint once this much training time
            has passed in this call, leaving the run resumable (for tests).

    Returns:
        The final :class:`TrainingState`.

    Raises:
        ValueError: For empty inputs, mismatched lengths, labels out of range,
            or a checkpoint made with other settings.
    """
    _validate_inputs(train_texts, train_labels, num_labels, "train")
    _validate_inputs(validation_texts, validation_labels, num_labels, "validation")
    output_dir = Path(output_dir)
    checkpoint = output_dir / CHECKPOINT_DIR
    state = _load_state(checkpoint)
    settings_dict = {**asdict(settings), "num_labels": num_labels, "train_rows": len(train_texts)}
    if state is not None and state.settings != settings_dict:
        raise ValueError(
            f"{checkpoint} contains a run with settings {state.settings}, not {settings_dict}. "
            "Delete that folder to start again, or use another output_dir."
        )
    if state is not None and state.finished:
        logger.info("Fine-tuning already finished in %s (best epoch %d)", output_dir, state.best_epoch + 1)
        return state

    torch.manual_seed(settings.seed)
    source = resolve_encoder(settings.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    start_from = checkpoint / "model" if state is not None else source
    model = AutoModelForSequenceClassification.from_pretrained(start_from, num_labels=num_labels).to(device())

    steps_per_epoch = math.ceil(len(train_texts) / settings.batch_size)
    total_steps = steps_per_epoch * settings.max_epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    parameter_groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": settings.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(parameter_groups, lr=settings.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total_steps), total_steps)

    if state is None:
        state = TrainingState(settings=settings_dict)
        logger.info("Starting fine-tuning of %s: %d rows, %d steps per epoch", settings.model, len(train_texts), steps_per_epoch)
    else:
        saved = torch.load(checkpoint / "optimizer.pt", weights_only=True, map_location=model.device)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if "rng" in saved:
            torch.set_rng_state(saved["rng"].cpu())
        logger.info("Resuming fine-tuning at epoch %d, step %d", state.epoch + 1, state.step_in_epoch)

    labels = torch.tensor(list(train_labels), dtype=torch.long)
    validation_labels_array = np.asarray(validation_labels)
    started = time.monotonic()
    while state.epoch < settings.max_epochs:
        generator = torch.Generator().manual_seed(settings.seed + state.epoch)
        batches = _batches(len(train_texts), settings.batch_size, generator)
        epoch_started = time.monotonic()
        losses: list[float] = []
        model.train()
        bar = tqdm(total=len(batches), initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}/{settings.max_epochs}", leave=False)
        for index in batches[state.step_in_epoch :]:
            inputs = _encode(tokenizer, [train_texts[i] for i in index], settings.max_length, model.device)
            loss = model(**inputs, labels=labels[index].to(model.device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            state.step_in_epoch += 1
            state.global_step += 1
            bar.update(1)
            if state.step_in_epoch % settings.checkpoint_every_steps == 0 and state.step_in_epoch < len(batches):
                _save_checkpoint(model, optimizer, scheduler, state, checkpoint)
                if max_train_seconds is not None and time.monotonic() - started > max_train_seconds:
                    bar.close()
                    logger.info("Stopping after %d steps as max_train_seconds asked; rerun to resume", state.global_step)
                    return state
        bar.close()

        probabilities = _predict_with(model, tokenizer, validation_texts, settings.max_length, 64, progress=None)
        validation_f1 = classification_f1(validation_labels_array, probabilities.argmax(axis=1), num_labels)
        state.history.append(
            {
                "epoch": state.epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "validation_f1": validation_f1,
                "seconds": time.monotonic() - epoch_started,
            }
        )
        logger.info("Epoch %d: validation F1 %.4f", state.epoch + 1, validation_f1)
        if validation_f1 > state.best_f1:
            state.best_f1, state.best_epoch, state.epochs_without_improvement = validation_f1, state.epoch, 0
            model.save_pretrained(output_dir / BEST_DIR)
            tokenizer.save_pretrained(output_dir / BEST_DIR)
        else:
            state.epochs_without_improvement += 1
        state.epoch += 1
        state.step_in_epoch = 0
        if state.epochs_without_improvement >= settings.patience:
            logger.info("Early stopping: no validation F1 gain for %d epochs", settings.patience)
            break
        _save_checkpoint(model, optimizer, scheduler, state, checkpoint)

    state.finished = True
    _save_checkpoint(model, optimizer, scheduler, state, checkpoint)
    # The best model is kept; the last checkpoint's weights and optimizer are no longer needed.
    for name in ("model", "optimizer.pt"):
        target = checkpoint / name
        if target.is_dir():
            import shutil

            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return state


def _validate_inputs(texts: Sequence[str], labels: Sequence[int], num_labels: int, name: str) -> None:
    if len(texts) == 0:
        raise ValueError(f"{name} set is empty; fine-tuning needs at least one sentence.")
    if len(texts) != len(labels):
        raise ValueError(f"{name}: {len(texts)} texts but {len(labels)} labels; they must match.")
    values = np.asarray(labels)
    if values.min() < 0 or values.max() >= num_labels:
        raise ValueError(f"{name}: labels must lie in [0, {num_labels}); found {sorted(set(values.tolist()))}.")


def _load_state(checkpoint: Path) -> TrainingState | None:
    path = checkpoint / STATE_FILE
    if not path.is_file():
        return None
    return TrainingState(**json.loads(path.read_text()))


def load_state(output_dir: str | Path) -> TrainingState | None:
    """Return the saved :class:`TrainingState` of a run, or ``None`` if none was started."""
    return _load_state(Path(output_dir) / CHECKPOINT_DIR)


def predict_proba(
    texts: Sequence[str], model_dir: str | Path, max_length: int = 256, batch_size: int = 64, progress: str | None = "predict"
) -> np.ndarray:
    """Score texts with a fine-tuned classifier.

    Args:
        texts: Sentences, length N.
        model_dir: Folder written by :func:`fine_tune` (its ``best`` subfolder) or any
            sequence-classification checkpoint.
        max_length: Truncation length in tokens.
        batch_size: Sentences per forward pass.
        progress: Progress-bar label, or ``None`` for no bar.

    Returns:
        Softmax probabilities, shape ``(N, num_labels)``, rows summing to 1.
    """
    model_dir = Path(model_dir)
    if (model_dir / BEST_DIR).is_dir():
        model_dir = model_dir / BEST_DIR
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"No fine-tuned model in {model_dir}; run fine_tune() first.")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device())
    return _predict_with(model, tokenizer, list(texts), max_length, batch_size, progress)
