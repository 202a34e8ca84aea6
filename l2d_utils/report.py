"""Helpers for putting computed values into the book's prose."""

from __future__ import annotations

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
