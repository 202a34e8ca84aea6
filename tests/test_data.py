"""Specification of l2d_utils.data: reading the ADE Corpus V2 release files.

Most tests write a few invented lines in the release formats into tmp_path:
``DRUG-AE.rel`` has ``pmid|sentence|effect|begin|end|drug|begin|end`` and
``ADE-NEG.txt`` has ``PMID NEG sentence``. The last test reads the real
release from L2D_DATA_DIR and is skipped when that variable is unset.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from l2d_utils.data import (
    ADE_FOLDER,
    ADE_POSITIVES,
    ADE_ROWS,
    NEGATIVE_FILE,
    POSITIVE_FILE,
    ReleaseFileError,
    load_ade_corpus,
    load_ade_from_hub,
    stratified_sample,
)

POSITIVE_LINES = [
    "1001|Carbamazepine-induced rash in a child.|rash|22|26|Carbamazepine|0|13",
    "1002|  Severe hepatitis after isoniazid.  |hepatitis|9|18|isoniazid|25|34",
]
NEGATIVE_LINES = [
    "2001 NEG The trial enrolled 40 patients.",
    "2002 NEG   Dosing was adjusted weekly.   ",
    "1001 NEG Follow-up lasted two years.",
]

requires_release = pytest.mark.skipif(
    not os.environ.get("L2D_DATA_DIR"), reason="L2D_DATA_DIR is not set; the real ADE Corpus V2 release is needed"
)


def write_release(
    root: Path, positive: list[str] = POSITIVE_LINES, negative: list[str] = NEGATIVE_LINES
) -> Path:
    """Write both release files under ``root/ade_corpus_v2`` and return ``root``."""
    folder = root / ADE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / POSITIVE_FILE).write_text("\n".join(positive) + "\n", encoding="utf-8")
    (folder / NEGATIVE_FILE).write_text("\n".join(negative) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def release_dir(tmp_path: Path) -> Path:
    return write_release(tmp_path)


# Loading well-formed files


def test_load_columns(release_dir: Path) -> None:
    corpus = load_ade_corpus(release_dir, verify=False)

    assert list(corpus.columns) == ["row_id", "pmid", "text", "label"]


def test_load_positives_first(release_dir: Path) -> None:
    corpus = load_ade_corpus(release_dir, verify=False)

    assert corpus["label"].tolist() == [1, 1, 0, 0, 0]
    assert corpus["text"].tolist() == [
        "Carbamazepine-induced rash in a child.",
        "Severe hepatitis after isoniazid.",
        "The trial enrolled 40 patients.",
        "Dosing was adjusted weekly.",
        "Follow-up lasted two years.",
    ]


def test_load_row_ids_are_positions(release_dir: Path) -> None:
    corpus = load_ade_corpus(release_dir, verify=False)

    assert corpus["row_id"].tolist() == [0, 1, 2, 3, 4]


def test_load_keeps_pmid_as_string(release_dir: Path) -> None:
    corpus = load_ade_corpus(release_dir, verify=False)

    assert corpus["pmid"].tolist() == ["1001", "1002", "2001", "2002", "1001"]
    assert all(isinstance(pmid, str) for pmid in corpus["pmid"])


def test_load_strips_sentence_whitespace(release_dir: Path) -> None:
    corpus = load_ade_corpus(release_dir, verify=False)

    assert corpus.loc[1, "text"] == "Severe hepatitis after isoniazid."
    assert corpus.loc[3, "text"] == "Dosing was adjusted weekly."


def test_load_keeps_repeated_sentences(tmp_path: Path) -> None:
    """A sentence with two drug-effect relations is one row per relation, as on the Hub."""
    repeated = POSITIVE_LINES + ["1001|Carbamazepine-induced rash in a child.|rash|22|26|Carbamazepine|0|13"]
    corpus = load_ade_corpus(write_release(tmp_path, positive=repeated), verify=False)

    assert len(corpus) == len(repeated) + len(NEGATIVE_LINES)
    assert corpus["text"].duplicated().sum() == 1


def test_load_ade_folder_itself(release_dir: Path) -> None:
    corpus = load_ade_corpus(release_dir / ADE_FOLDER, verify=False)

    assert len(corpus) == 5


def test_load_from_environment(release_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2D_DATA_DIR", str(release_dir))

    corpus = load_ade_corpus(verify=False)

    assert len(corpus) == 5


def test_load_crlf_line_endings(tmp_path: Path) -> None:
    folder = write_release(tmp_path) / ADE_FOLDER
    for name in (POSITIVE_FILE, NEGATIVE_FILE):
        path = folder / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    corpus = load_ade_corpus(tmp_path, verify=False)

    assert corpus["text"].tolist()[0] == "Carbamazepine-induced rash in a child."
    assert not corpus["text"].str.endswith("\r").any()


# Release checks


def test_verify_rejects_wrong_line_count(release_dir: Path) -> None:
    positive_path = release_dir / ADE_FOLDER / POSITIVE_FILE

    with pytest.raises(ReleaseFileError) as raised:
        load_ade_corpus(release_dir, verify=True)

    message = str(raised.value)
    assert str(positive_path) in message
    assert "2 lines" in message
    assert "6821" in message
    assert "verify=False" in message


def test_verify_is_default(release_dir: Path) -> None:
    with pytest.raises(ReleaseFileError):
        load_ade_corpus(release_dir)


# Malformed lines: the error names the file and the line number


@pytest.mark.parametrize(
    ("bad_line", "fragment"),
    [
        ("1003|Only seven fields here.|rash|1|2|drug|3", "found 7"),
        ("1003|Nine|fields|here|1|2|drug|3|4", "found 9"),
        ("PMID7|A sentence with a bad id.|rash|1|2|drug|3|4", "numeric PubMed id"),
        ("|A sentence without an id.|rash|1|2|drug|3|4", "numeric PubMed id"),
        ("1003|   |rash|1|2|drug|3|4", "empty"),
        ("", "found 1"),
    ],
)
def test_positive_malformed_line(tmp_path: Path, bad_line: str, fragment: str) -> None:
    root = write_release(tmp_path, positive=POSITIVE_LINES + [bad_line])
    path = root / ADE_FOLDER / POSITIVE_FILE

    with pytest.raises(ReleaseFileError) as raised:
        load_ade_corpus(root, verify=False)

    message = str(raised.value)
    assert f"{path}, line 3" in message
    assert fragment in message


@pytest.mark.parametrize(
    "bad_line",
    [
        "2003 The NEG marker is missing.",
        "2003 neg Lower-case marker.",
        "2003\tNEG Tab-separated fields.",
        "PMID NEG A non-numeric PubMed id.",
        "2003 NEG",
        "2003 NEG    ",
        "",
    ],
)
def test_negative_malformed_line(tmp_path: Path, bad_line: str) -> None:
    root = write_release(tmp_path, negative=NEGATIVE_LINES + [bad_line])
    path = root / ADE_FOLDER / NEGATIVE_FILE

    with pytest.raises(ReleaseFileError) as raised:
        load_ade_corpus(root, verify=False)

    message = str(raised.value)
    assert f"{path}, line 4" in message
    assert "PMID NEG sentence" in message


def test_invalid_utf8_names_line(release_dir: Path) -> None:
    path = release_dir / ADE_FOLDER / NEGATIVE_FILE
    path.write_bytes(path.read_bytes() + b"2004 NEG Caf\xe9 au lait spots.\n")

    with pytest.raises(ReleaseFileError) as raised:
        load_ade_corpus(release_dir, verify=False)

    message = str(raised.value)
    assert f"{path}, line 4" in message
    assert "UTF-8" in message


def test_release_file_error_is_value_error() -> None:
    assert issubclass(ReleaseFileError, ValueError)


# Missing data


def test_missing_data_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"

    with pytest.raises(FileNotFoundError) as raised:
        load_ade_corpus(missing, verify=False)

    message = str(raised.value)
    assert str(missing) in message
    assert "L2D_DATA_DIR" in message


@pytest.mark.parametrize("removed", [POSITIVE_FILE, NEGATIVE_FILE])
def test_missing_release_file(release_dir: Path, removed: str) -> None:
    path = release_dir / ADE_FOLDER / removed
    path.unlink()

    with pytest.raises(FileNotFoundError) as raised:
        load_ade_corpus(release_dir, verify=False)

    message = str(raised.value)
    assert str(path) in message
    assert "L2D_DATA_DIR" in message


def test_missing_ade_subfolder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        load_ade_corpus(tmp_path, verify=False)

    assert str(tmp_path / ADE_FOLDER / POSITIVE_FILE) in str(raised.value)


def test_unset_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("L2D_DATA_DIR", raising=False)

    with pytest.raises(FileNotFoundError) as raised:
        load_ade_corpus(verify=False)

    assert "L2D_DATA_DIR" in str(raised.value)


# Loading through the datasets library from a local file in the Hub schema


def write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def load_local_hub_copy(tmp_path: Path, records: list[dict[str, object]]) -> pd.DataFrame:
    data_file = write_jsonl(tmp_path / "ade.jsonl", records)
    return load_ade_from_hub(path="json", name=None, data_files=str(data_file), cache_dir=str(tmp_path / "cache"))


def test_hub_copy_columns(tmp_path: Path) -> None:
    frame = load_local_hub_copy(
        tmp_path,
        [{"text": " Drug-induced rash. ", "label": 1}, {"text": "A normal sentence.", "label": 0}],
    )

    assert list(frame.columns) == ["row_id", "pmid", "text", "label"]
    assert frame["row_id"].tolist() == [0, 1]
    assert frame["pmid"].tolist() == ["", ""]
    assert frame["text"].tolist() == ["Drug-induced rash.", "A normal sentence."]
    assert frame["label"].tolist() == [1, 0]


def test_hub_copy_rejects_label_two(tmp_path: Path) -> None:
    records = [{"text": "Drug-induced rash.", "label": 1}, {"text": "Unclear.", "label": 2}]

    with pytest.raises(ValueError, match=r"has labels \[2\]; expected only 0"):
        load_local_hub_copy(tmp_path, records)


def test_hub_copy_requires_label_column(tmp_path: Path) -> None:
    records = [{"text": "Drug-induced rash.", "tag": 1}, {"text": "A normal sentence.", "tag": 0}]

    with pytest.raises(ValueError, match=r"lacks columns \['label'\]"):
        load_local_hub_copy(tmp_path, records)


# stratified_sample


@pytest.fixture
def balanced_corpus() -> pd.DataFrame:
    """200 rows, 60 positive, with texts that identify each row."""
    labels = [1] * 60 + [0] * 140
    return pd.DataFrame(
        {
            "row_id": range(200),
            "pmid": [str(1000 + index // 3) for index in range(200)],
            "text": [f"sentence {index}" for index in range(200)],
            "label": labels,
        }
    )


def test_sample_size(balanced_corpus: pd.DataFrame) -> None:
    sample = stratified_sample(balanced_corpus, 50)

    assert len(sample) == 50


def test_sample_class_balance(balanced_corpus: pd.DataFrame) -> None:
    sample = stratified_sample(balanced_corpus, 50)

    assert sample["label"].sum() == 15  # 30% of 50, as in the corpus


def test_sample_keeps_row_id(balanced_corpus: pd.DataFrame) -> None:
    sample = stratified_sample(balanced_corpus, 50)

    assert sample["row_id"].is_unique
    assert sample["row_id"].is_monotonic_increasing
    assert sample["row_id"].isin(balanced_corpus["row_id"]).all()
    assert (sample["text"] == "sentence " + sample["row_id"].astype(str)).all()


def test_sample_is_deterministic(balanced_corpus: pd.DataFrame) -> None:
    first = stratified_sample(balanced_corpus, 50, seed=7)
    second = stratified_sample(balanced_corpus, 50, seed=7)
    other_seed = stratified_sample(balanced_corpus, 50, seed=8)

    assert first["row_id"].tolist() == second["row_id"].tolist()
    assert first["row_id"].tolist() != other_seed["row_id"].tolist()


def test_sample_whole_corpus(balanced_corpus: pd.DataFrame) -> None:
    sample = stratified_sample(balanced_corpus, 200)

    pd.testing.assert_frame_equal(sample, balanced_corpus)


@pytest.mark.parametrize("n_rows", [-1, 0, 9, 201])
def test_sample_rejects_bad_size(balanced_corpus: pd.DataFrame, n_rows: int) -> None:
    with pytest.raises(ValueError, match=rf"n_rows={n_rows} must be between 10 and the corpus size 200"):
        stratified_sample(balanced_corpus, n_rows)


# The real release


@requires_release
def test_real_release_counts() -> None:
    corpus = load_ade_corpus(os.environ["L2D_DATA_DIR"])

    assert len(corpus) == ADE_ROWS == 23516
    assert corpus["label"].sum() == ADE_POSITIVES == 6821
    assert corpus["text"].duplicated().sum() == 2620
    assert corpus["text"].nunique() == 20896
    assert corpus["label"].iloc[:6821].eq(1).all()
    assert corpus["row_id"].tolist() == list(range(23516))
