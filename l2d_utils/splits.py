"""Train/validation/test splits, the LLM test subset, and the duplicate-text leak.

The paper (arXiv:2604.13285, section 4.1) splits ADE Corpus V2 by row: 70% train, then the remaining 30% in
halves, stratified by label with seed 42. Because 2,620 rows repeat another
row's text, that split puts copies of some test sentences into train.
:func:`leak_report` measures how many; :func:`grouped_split` offers a split by
PubMed id with duplicate texts removed, where no sentence crosses splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

SPLITS = ("train", "validation", "test")


def _require_columns(frame: pd.DataFrame, columns: set[str]) -> None:
    missing = columns - set(frame.columns)
    if missing:
        raise ValueError(f"Frame lacks columns {sorted(missing)}; it has {list(frame.columns)}.")
    if not frame.index.is_unique:
        raise ValueError("Frame index has repeated labels, so split assignment would be ambiguous; call reset_index(drop=True) first.")


def paper_split(corpus: pd.DataFrame, seed: int = 42, train_fraction: float = 0.7) -> pd.DataFrame:
    """Split rows 70/15/15 stratified by label, as the paper does.

    The first :func:`~sklearn.model_selection.train_test_split` keeps 70% for
    train. The second splits the rest in half; its larger part (``test_size=0.5``
    rounds up) becomes validation, so the full corpus gives train 16,461,
    validation 3,528 and test 3,527 rows, the counts the paper reports.

    Args:
        corpus: Frame with ``row_id`` and ``label`` (see :mod:`l2d_utils.data`).
        seed: ``random_state`` of both splits.
        train_fraction: Share of rows in train.

    Returns:
        A copy of ``corpus`` with a ``split`` column (``train``, ``validation``, ``test``).
    """
    _require_columns(corpus, {"row_id", "label"})
    train, rest = train_test_split(
        corpus, train_size=train_fraction, stratify=corpus["label"], random_state=seed
    )
    test, validation = train_test_split(rest, test_size=0.5, stratify=rest["label"], random_state=seed)
    return _with_split_column(corpus, train, validation, test)


def grouped_split(
    corpus: pd.DataFrame, seed: int = 42, train_fraction: float = 0.7, drop_duplicates: bool = True
) -> pd.DataFrame:
    """Split by PubMed id 70/15/15, optionally after removing repeated texts.

    No abstract contributes to two splits, so no sentence can leak. Shares are
    shares of abstracts, so row counts differ a little from 70/15/15.

    Args:
        corpus: Frame with ``row_id``, ``pmid``, ``text`` and ``label``.
        seed: ``random_state`` of both group splits.
        train_fraction: Share of PubMed ids in train.
        drop_duplicates: Keep only the first row of each distinct text.

    Returns:
        The kept rows with a ``split`` column.

    Raises:
        ValueError: When PubMed ids are missing (the Hub's classification config lacks them).
    """
    _require_columns(corpus, {"row_id", "pmid", "text", "label"})
    if (corpus["pmid"].astype(str).str.len() == 0).any():
        raise ValueError(
            "Some rows have no PubMed id, so a grouped split is impossible. Load the corpus "
            "from the release files with l2d_utils.data.load_ade_corpus()."
        )
    rows = corpus.drop_duplicates("text", keep="first") if drop_duplicates else corpus
    outer = GroupShuffleSplit(n_splits=1, train_size=train_fraction, random_state=seed)
    train_index, rest_index = next(outer.split(rows, groups=rows["pmid"]))
    rest = rows.iloc[rest_index]
    inner = GroupShuffleSplit(n_splits=1, train_size=0.5, random_state=seed)
    validation_index, test_index = next(inner.split(rest, groups=rest["pmid"]))
    return _with_split_column(rows, rows.iloc[train_index], rest.iloc[validation_index], rest.iloc[test_index])


def _with_split_column(
    rows: pd.DataFrame, train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame
) -> pd.DataFrame:
    names = pd.Series("", index=rows.index, dtype=object)
    names[train.index] = "train"
    names[validation.index] = "validation"
    names[test.index] = "test"
    out = rows.copy()
    out["split"] = names
    return out


def split_counts(splits: pd.DataFrame) -> pd.DataFrame:
    """Count rows, positives and the positive share per split.

    Returns:
        Frame indexed by split name with columns ``rows, positive, positive_share``.
    """
    _require_columns(splits, {"split", "label"})
    grouped = splits.groupby("split")["label"]
    table = pd.DataFrame({"rows": grouped.size(), "positive": grouped.sum()})
    table["positive_share"] = table["positive"] / table["rows"]
    return table.reindex([name for name in SPLITS if name in table.index])


def llm_subset(test: pd.DataFrame, size: int = 500, seed: int = 42) -> pd.DataFrame:
    """Draw the stratified test subset that the LLM labels (the paper: 500 rows).

    Args:
        test: Test rows with a ``label`` column.
        size: Rows to draw; the whole test set if ``size >= len(test)``.
        seed: ``random_state`` of the draw.

    Returns:
        The subset, sorted by ``row_id``.
    """
    _require_columns(test, {"row_id", "label"})
    if size <= 0:
        raise ValueError(f"size={size} must be positive.")
    if size >= len(test):
        return test.sort_values("row_id").reset_index(drop=True)
    subset, _ = train_test_split(test, train_size=size, stratify=test["label"], random_state=seed)
    return subset.sort_values("row_id").reset_index(drop=True)


@dataclass(frozen=True)
class LeakReport:
    """How many test rows repeat a training text verbatim.

    Attributes:
        test_rows: Rows in test.
        leaked_rows: Test rows whose exact text is also in train.
        test_positives: Positive rows in test.
        leaked_positives: Positive test rows whose text is in train.
        repeated_rows: Rows of the whole table that repeat an earlier row's text.
        distinct_texts: Distinct texts in the whole table.
    """

    test_rows: int
    leaked_rows: int
    test_positives: int
    leaked_positives: int
    repeated_rows: int
    distinct_texts: int

    @property
    def leaked_share(self) -> float:
        """Share of test rows whose text occurs in train."""
        return self.leaked_rows / self.test_rows if self.test_rows else float("nan")

    @property
    def leaked_positive_share(self) -> float:
        """Share of positive test rows whose text occurs in train."""
        return self.leaked_positives / self.test_positives if self.test_positives else float("nan")


def leaked_mask(splits: pd.DataFrame, evaluated: str = "test", seen: str = "train") -> np.ndarray:
    """Flag rows of split ``evaluated`` whose text occurs verbatim in split ``seen``.

    Returns:
        Boolean array of shape ``(rows in evaluated,)`` in the frame's row order.
    """
    _require_columns(splits, {"split", "text"})
    seen_texts = set(splits.loc[splits["split"] == seen, "text"])
    return splits.loc[splits["split"] == evaluated, "text"].isin(seen_texts).to_numpy()


def leak_report(splits: pd.DataFrame) -> LeakReport:
    """Measure the duplicate-text leak from train into test."""
    _require_columns(splits, {"split", "text", "label"})
    test = splits[splits["split"] == "test"]
    mask = leaked_mask(splits)
    return LeakReport(
        test_rows=len(test),
        leaked_rows=int(mask.sum()),
        test_positives=int(test["label"].sum()),
        leaked_positives=int(test["label"].to_numpy()[mask].sum()),
        repeated_rows=int(splits["text"].duplicated().sum()),
        distinct_texts=int(splits["text"].nunique()),
    )
