"""Specification of l2d_utils.splits: the 70/15/15 row split, the grouped split and the leak.

Synthetic frames check proportions and invariants. The tests marked
``requires_release`` read the real ADE Corpus V2 from L2D_DATA_DIR and check
the split sizes that the L2D-Clinical paper reports (train 16,461, validation
3,528, test 3,527) and the leak those splits contain. They are skipped when
L2D_DATA_DIR is unset.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest

from l2d_utils.data import load_ade_corpus
from l2d_utils.splits import grouped_split, leak_report, leaked_mask, llm_subset, paper_split, split_counts

requires_release = pytest.mark.skipif(
    not os.environ.get("L2D_DATA_DIR"), reason="L2D_DATA_DIR is not set; the real ADE Corpus V2 release is needed"
)


@pytest.fixture(scope="module")
def synthetic_corpus() -> pd.DataFrame:
    """1,000 rows, 300 positive, 250 abstracts of 4 sentences, 100 repeated texts.

    Rows 900-999 repeat the texts of rows 0-99 under other PubMed ids, so only
    removing repeated texts keeps a sentence out of two splits.
    """
    sources = list(range(900)) + list(range(100))
    return pd.DataFrame(
        {
            "row_id": range(1000),
            "pmid": [str(5000 + index // 4) for index in range(1000)],
            "text": [f"sentence {source}" for source in sources],
            "label": [int(source % 10 < 3) for source in sources],
        }
    )


@pytest.fixture(scope="module")
def release_corpus() -> pd.DataFrame:
    return load_ade_corpus(os.environ["L2D_DATA_DIR"])


# paper_split


def test_paper_split_proportions(synthetic_corpus: pd.DataFrame) -> None:
    counts = paper_split(synthetic_corpus)["split"].value_counts()

    assert counts["train"] == 700
    assert counts["validation"] == 150
    assert counts["test"] == 150


def test_paper_split_validation_takes_odd_row() -> None:
    """With an odd remainder, validation gets the extra row (test_size=0.5 rounds up)."""
    corpus = pd.DataFrame({"row_id": range(1001), "label": [1] * 300 + [0] * 701})

    counts = paper_split(corpus)["split"].value_counts()

    assert counts["train"] == 700
    assert counts["validation"] == 151
    assert counts["test"] == 150


def test_paper_split_covers_every_row(synthetic_corpus: pd.DataFrame) -> None:
    splits = paper_split(synthetic_corpus)

    assert len(splits) == len(synthetic_corpus)
    assert set(splits["split"]) == {"train", "validation", "test"}
    assert splits["row_id"].tolist() == synthetic_corpus["row_id"].tolist()


def test_paper_split_keeps_input(synthetic_corpus: pd.DataFrame) -> None:
    paper_split(synthetic_corpus)

    assert "split" not in synthetic_corpus.columns


def test_paper_split_stratified(synthetic_corpus: pd.DataFrame) -> None:
    shares = split_counts(paper_split(synthetic_corpus))["positive_share"]

    for name in ("train", "validation", "test"):
        assert shares[name] == pytest.approx(0.3, abs=0.01), name


def test_paper_split_deterministic(synthetic_corpus: pd.DataFrame) -> None:
    first = paper_split(synthetic_corpus, seed=42)["split"]
    second = paper_split(synthetic_corpus, seed=42)["split"]
    other_seed = paper_split(synthetic_corpus, seed=43)["split"]

    assert first.tolist() == second.tolist()
    assert first.tolist() != other_seed.tolist()


def test_paper_split_requires_columns(synthetic_corpus: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"lacks columns \['label'\]"):
        paper_split(synthetic_corpus.drop(columns="label"))


def test_split_counts_table(synthetic_corpus: pd.DataFrame) -> None:
    table = split_counts(paper_split(synthetic_corpus))

    assert table.index.tolist() == ["train", "validation", "test"]
    assert table["rows"].sum() == 1000
    assert table["positive"].sum() == 300


@requires_release
def test_paper_split_release_counts(release_corpus: pd.DataFrame) -> None:
    counts = paper_split(release_corpus)["split"].value_counts()

    assert counts["train"] == 16461
    assert counts["validation"] == 3528
    assert counts["test"] == 3527


@requires_release
def test_leak_report_release_values(release_corpus: pd.DataFrame) -> None:
    report = leak_report(paper_split(release_corpus))

    assert report.test_rows == 3527
    assert report.leaked_rows == 503
    assert report.test_positives == 1023
    assert report.leaked_positives == 491
    assert report.repeated_rows == 2620
    assert report.distinct_texts == 20896


@requires_release
def test_grouped_split_release_no_leak(release_corpus: pd.DataFrame) -> None:
    splits = grouped_split(release_corpus)

    assert len(splits) == 20896
    assert leak_report(splits).leaked_rows == 0


# grouped_split


def test_grouped_split_pmid_in_one_split(synthetic_corpus: pd.DataFrame) -> None:
    splits = grouped_split(synthetic_corpus)

    splits_per_pmid = splits.groupby("pmid")["split"].nunique()
    assert splits_per_pmid.max() == 1


def test_grouped_split_drops_duplicate_text(synthetic_corpus: pd.DataFrame) -> None:
    splits = grouped_split(synthetic_corpus)

    assert splits["text"].is_unique
    assert len(splits) == 900
    assert splits["row_id"].max() == 899  # the first copy of each text is kept


def test_grouped_split_zero_leak(synthetic_corpus: pd.DataFrame) -> None:
    report = leak_report(grouped_split(synthetic_corpus))

    assert report.leaked_rows == 0
    assert report.leaked_positives == 0


def test_grouped_split_uses_all_splits(synthetic_corpus: pd.DataFrame) -> None:
    counts = grouped_split(synthetic_corpus)["split"].value_counts()

    assert set(counts.index) == {"train", "validation", "test"}
    assert counts["train"] == pytest.approx(630, abs=20)  # 70% of 900 rows, in whole abstracts


def test_grouped_split_keeps_duplicates_on_request(synthetic_corpus: pd.DataFrame) -> None:
    splits = grouped_split(synthetic_corpus, drop_duplicates=False)

    assert len(splits) == 1000


@pytest.mark.parametrize("pmids", [["", "1", "2", "3"], ["1", "2", "", ""]])
def test_grouped_split_rejects_empty_pmid(pmids: list[str]) -> None:
    corpus = pd.DataFrame({"row_id": range(4), "pmid": pmids, "text": list("abcd"), "label": [0, 1, 0, 1]})

    with pytest.raises(ValueError, match="no PubMed id"):
        grouped_split(corpus)


# llm_subset


@pytest.fixture(scope="module")
def held_out_rows(synthetic_corpus: pd.DataFrame) -> pd.DataFrame:
    splits = paper_split(synthetic_corpus)
    return splits[splits["split"] == "test"]


def test_llm_subset_size(held_out_rows: pd.DataFrame) -> None:
    subset = llm_subset(held_out_rows, size=50)

    assert len(subset) == 50


def test_llm_subset_stratified(held_out_rows: pd.DataFrame) -> None:
    subset = llm_subset(held_out_rows, size=50)

    assert subset["label"].sum() == pytest.approx(50 * held_out_rows["label"].mean(), abs=1)


def test_llm_subset_sorted_rows_of_test(held_out_rows: pd.DataFrame) -> None:
    subset = llm_subset(held_out_rows, size=50)

    assert subset["row_id"].is_monotonic_increasing
    assert subset["row_id"].isin(held_out_rows["row_id"]).all()
    assert subset.index.tolist() == list(range(50))


@pytest.mark.parametrize("size", [150, 151, 10_000])
def test_llm_subset_whole_test_set(held_out_rows: pd.DataFrame, size: int) -> None:
    subset = llm_subset(held_out_rows, size=size)

    assert subset["row_id"].tolist() == sorted(held_out_rows["row_id"])


@pytest.mark.parametrize("size", [0, -5])
def test_llm_subset_rejects_size(held_out_rows: pd.DataFrame, size: int) -> None:
    with pytest.raises(ValueError, match=f"size={size} must be positive"):
        llm_subset(held_out_rows, size=size)


# leaked_mask and leak_report on a hand-made frame


@pytest.fixture
def tiny_splits() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": ["a", "b", "c", "a", "d", "c", "b", "e"],
            "label": [1, 0, 1, 1, 0, 0, 0, 1],
            "split": ["train", "train", "validation", "test", "test", "test", "validation", "test"],
        }
    )


def test_leaked_mask_test_rows(tiny_splits: pd.DataFrame) -> None:
    mask = leaked_mask(tiny_splits)

    assert mask.tolist() == [True, False, False, False]  # test texts are a, d, c, e, and only a is in train


def test_leaked_mask_other_splits(tiny_splits: pd.DataFrame) -> None:
    mask = leaked_mask(tiny_splits, evaluated="test", seen="validation")

    assert mask.tolist() == [False, False, True, False]


def test_leak_report_tiny(tiny_splits: pd.DataFrame) -> None:
    report = leak_report(tiny_splits)

    assert report.test_rows == 4
    assert report.leaked_rows == 1
    assert report.test_positives == 2
    assert report.leaked_positives == 1
    assert report.repeated_rows == 3
    assert report.distinct_texts == 5
    assert report.leaked_share == 0.25
    assert report.leaked_positive_share == 0.5
