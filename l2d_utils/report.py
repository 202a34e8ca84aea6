"""Helpers for putting computed values into the book's prose."""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
from myst_nb import glue as _myst_glue


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`` roles and ``glue:figure`` directives.

    NumPy scalars are turned into Python numbers first: MyST-NB formats a
    glued number from its ``repr``, and ``repr(np.float64(0.5))`` is
    ``'np.float64(0.5)'``, which no format specification accepts.
    """
    if isinstance(value, np.generic):
        value = value.item()
    _myst_glue(name, value, display=display)


def log_to_stderr(level: int = logging.INFO) -> None:
    """Send ``l2d_utils`` log records to stderr inside a chapter's kernel.

    The book runner copies each kernel's stderr into its own log (papermill
    ``log_output``), so messages such as "Resuming fine-tuning" or "N of M
    sentences cached" reach the terminal. The rendered pages drop stderr
    (``nb_output_stderr: remove`` in ``_config.yml``).
    """
    package_logger = logging.getLogger("l2d_utils")
    if not any(getattr(handler, "_l2d_stderr", False) for handler in package_logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._l2d_stderr = True  # type: ignore[attr-defined]
        package_logger.addHandler(handler)
    package_logger.setLevel(level)
