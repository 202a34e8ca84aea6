"""Helpers for putting computed values into the book's prose."""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import pandas as pd
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


def with_interval(frame: pd.DataFrame, column: str, digits: int = 3) -> pd.Series:
    """Format ``column`` as ``value [low, high]`` from the columns ``<column>``, ``<column>_low`` and ``<column>_high``."""
    missing = [name for name in (column, f"{column}_low", f"{column}_high") if name not in frame.columns]
    if missing:
        raise ValueError(f"Missing columns {missing}; the frame has {list(frame.columns)}.")
    return frame.apply(
        lambda row: f"{row[column]:.{digits}f} [{row[column + '_low']:.{digits}f}, {row[column + '_high']:.{digits}f}]", axis=1
    )


def or_dash(values: pd.Series, scale: float = 1.0, digits: int = 3) -> pd.Series:
    """Format numbers times ``scale``, with a dash where a value is missing (as the paper's blank cells)."""
    return values.map(lambda value: "–" if pd.isna(value) else f"{scale * value:.{digits}f}")


def paper_comparison(table: pd.DataFrame, f1_name: str = "F1") -> pd.DataFrame:
    """Lay out a results table beside the paper's values, for a chapter page.

    Args:
        table: Output of :func:`l2d_utils.baselines.with_paper_values`.
        f1_name: Column title of the F1 metric, e.g. ``macro F1``.

    Returns:
        Frame of strings indexed by method: F1 and accuracy with 95% intervals,
        LLM %, then the paper's F1, accuracy and LLM % (a dash where it reports none).
    """
    indexed = table.set_index("method")
    return pd.DataFrame(
        {
            f"{f1_name} [95% CI]": with_interval(indexed, "f1"),
            "accuracy [95% CI]": with_interval(indexed, "accuracy"),
            "LLM %": or_dash(indexed["llm_rate"], 100, 1),
            "paper F1": or_dash(indexed["paper_f1"]),
            "paper accuracy": or_dash(indexed["paper_accuracy"]),
            "paper LLM %": or_dash(indexed["paper_llm_rate"], 100, 1),
        }
    )
