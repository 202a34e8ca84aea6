"""Formatting helpers that put result tables on chapter pages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from l2d_utils.baselines import PAPER_TABLE2, with_paper_values
from l2d_utils.report import or_dash, paper_comparison, with_interval


def result_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": ["bert_only", "random"],
            "f1": [0.8, 0.81234],
            "f1_low": [0.7, 0.75],
            "f1_high": [0.9, 0.86],
            "accuracy": [0.9, 0.91],
            "accuracy_low": [0.85, 0.86],
            "accuracy_high": [0.95, 0.96],
            "llm_rate": [0.0, 0.125],
        }
    )


def test_with_interval_formats_bounds() -> None:
    assert with_interval(result_rows(), "f1").tolist() == ["0.800 [0.700, 0.900]", "0.812 [0.750, 0.860]"]


def test_with_interval_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="precision_low"):
        with_interval(result_rows().assign(precision=1.0), "precision")


def test_or_dash_marks_missing_values() -> None:
    assert or_dash(pd.Series([0.1234, np.nan]), 100, 1).tolist() == ["12.3", "–"]


def test_paper_comparison_uses_table2_values() -> None:
    comparison = paper_comparison(with_paper_values(result_rows(), PAPER_TABLE2), f1_name="macro F1")
    assert list(comparison.columns) == ["macro F1 [95% CI]", "accuracy [95% CI]", "LLM %", "paper F1", "paper accuracy", "paper LLM %"]
    assert comparison.loc["bert_only", "paper F1"] == "0.887"
    assert comparison.loc["random", "paper F1"] == "–"
    assert comparison.loc["random", "LLM %"] == "12.5"
