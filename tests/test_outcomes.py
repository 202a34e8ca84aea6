"""Specification of l2d_utils.outcomes: PsyTAR outcome classes, the split by post, the text scan.

Every test that touches sentence text writes a small workbook or file of
invented sentences into tmp_path. PsyTAR's post texts are for research use
only, so the tests marked ``requires_psytar`` read the real workbook from
L2D_DATA_DIR and assert counts only. They are skipped when L2D_DATA_DIR is
unset or lacks ``psytar/PsyTAR_dataset.xlsx``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from l2d_utils.outcomes import (
    DATASETS,
    MARK_COLUMNS,
    OUTCOME_CLASSES,
    PSYTAR_FILE,
    PSYTAR_FOLDER,
    PSYTAR_LEFT_OUT_MIXED,
    PSYTAR_POSTS,
    PSYTAR_SENTENCES,
    PSYTAR_SHEET,
    DatasetInfo,
    RestrictedDataError,
    check_publishable,
    dataset_info,
    find_restricted_text,
    is_mark_set,
    load_psytar,
    normalize_for_search,
    outcome_split,
)

REPOSITORY = Path(__file__).resolve().parents[1]


def _real_workbook() -> Path | None:
    root = os.environ.get("L2D_DATA_DIR")
    if not root:
        return None
    path = Path(root) / PSYTAR_FOLDER / PSYTAR_FILE
    return path if path.is_file() else None


requires_psytar = pytest.mark.skipif(
    _real_workbook() is None,
    reason="L2D_DATA_DIR is not set or has no psytar/PsyTAR_dataset.xlsx; the real PsyTAR workbook is needed",
)

HEADER = [
    "id", "comment_id", "drug_id", "sentence_index", "sentences",
    "ADR", "WD", "EF", "INF", "SSI", "DI", "Findings", "others", "rating", "category",
]  # fmt: skip

# Invented sentences in the layout of the Sentence_Labeling sheet. Marks are in
# the columns ADR, WD, EF, INF, SSI, DI, Findings, others.
SYNTHETIC_ROWS = [
    # sheet row 0: ADR -> ADVERSE
    [1, 1, "drugx.1", 1, "The first week of tablets gave me a dry mouth.", 1, None, None, None, None, None, None, 0, 4, "ssri"],
    # sheet row 1: EF -> EFFECTIVE
    [2, 1, "drugx.1", 2, "After a month my sleep came back to normal.", None, None, 1, None, None, None, None, 0, 4, "ssri"],
    # sheet row 2: no outcome mark, surrounding whitespace -> NEUTRAL
    [3, 1, "drugx.1", 3, "  I take the pill with breakfast.  ", None, None, None, None, None, None, None, 1, 4, "ssri"],
    # sheet row 3: WD marked with '!' -> ADVERSE
    [4, 2, "drugx.2", 1, "Coming off it gave me brief electric jolts.", None, "!", None, None, None, None, None, 0, 2, "ssri"],
    # sheet row 4: empty sentence cell -> dropped
    [5, 2, "drugx.2", 2, None, 1, None, None, None, None, None, None, 0, 2, "ssri"],
    # sheet row 5: blank sentence cell -> dropped
    [6, 2, "drugx.2", 3, "   ", None, None, None, None, None, None, None, 0, 2, "ssri"],
    # sheet row 6: EF together with ADR -> left out
    [7, 3, "drugy.1", 1, "It lifted my mood but I gained weight.", 1, None, 1, None, None, None, None, 0, 3, "snri"],
    # sheet row 7: EF marked with '*' -> EFFECTIVE
    [8, 3, "drugy.1", 2, "Panic attacks stopped within weeks.", None, None, "*", None, None, None, None, 0, 3, "snri"],
    # sheet row 8: zero marks are unset, DI '!' is set -> NEUTRAL
    [9, 3, "drugy.1", 3, "My doctor prescribed it for anxiety.", 0, "0", " ", None, None, "!", None, 0, 3, "snri"],
    # sheet row 9: ADR marked with '! ' (trailing space) -> ADVERSE
    [10, 4, "drugy.2", 1, "Headaches every afternoon for two weeks.", "! ", None, None, None, 1, None, None, 0, 1, "snri"],
    # sheet row 10: the totals row, with counts but no post id or sentence
    [None, None, None, None, None, 4, 1, 3, 0, 1, 1, 0, 1, None, None],
]  # fmt: skip


def write_workbook(
    path: Path,
    rows: list[list[object]] = SYNTHETIC_ROWS,
    header: list[str] = HEADER,
    sheet: str = PSYTAR_SHEET,
) -> Path:
    """Write a workbook with a licence sheet first and the sentence rows in ``sheet``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook = openpyxl.Workbook()
    workbook.active.title = "License"
    workbook.active.append(["Invented test data"])
    sentences = workbook.create_sheet(sheet)
    sentences.append(header)
    for row in rows:
        sentences.append(row)
    workbook.save(path)
    return path


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    write_workbook(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE)
    return tmp_path


# Mark cells


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, True),
        (1.0, True),
        (2, True),
        ("1", True),
        ("!", True),
        ("*", True),
        ("!*", True),
        ("! ", True),
        (True, True),
        (0, False),
        (0.0, False),
        ("0", False),
        (" 0 ", False),
        ("", False),
        ("  ", False),
        (None, False),
        (float("nan"), False),
        (False, False),
    ],
)
def test_mark_set(value: object, expected: bool) -> None:
    assert is_mark_set(value) is expected


# Loading the synthetic workbook


def test_outcome_classes_order() -> None:
    assert OUTCOME_CLASSES == ("NEUTRAL", "ADVERSE", "EFFECTIVE")


def test_load_columns(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert list(frame.columns) == ["row_id", "post_id", "sentence_index", "text", "label", *MARK_COLUMNS]


def test_load_row_ids_are_sheet_rows(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert frame["row_id"].tolist() == [0, 1, 2, 3, 7, 8, 9]


def test_load_labels(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert frame["label"].tolist() == [1, 2, 0, 1, 2, 0, 1]
    assert [OUTCOME_CLASSES[label] for label in frame["label"]] == [
        "ADVERSE", "EFFECTIVE", "NEUTRAL", "ADVERSE", "EFFECTIVE", "NEUTRAL", "ADVERSE",
    ]  # fmt: skip


def test_load_value_types(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert frame["post_id"].tolist() == ["drugx.1", "drugx.1", "drugx.1", "drugx.2", "drugy.1", "drugy.1", "drugy.2"]
    assert all(isinstance(post_id, str) for post_id in frame["post_id"])
    assert frame["sentence_index"].tolist() == [1, 2, 3, 1, 2, 3, 1]
    assert pd.api.types.is_integer_dtype(frame["sentence_index"])
    assert pd.api.types.is_integer_dtype(frame["label"])


def test_load_strips_text(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert frame.loc[2, "text"] == "I take the pill with breakfast."


def test_load_mark_columns_are_boolean(data_root: Path) -> None:
    frame = load_psytar(data_root)

    for column in MARK_COLUMNS:
        assert frame[column].dtype == bool, column
    assert frame["WD"].tolist() == [False, False, False, True, False, False, False]
    assert frame["EF"].tolist() == [False, True, False, False, True, False, False]
    assert frame["DI"].tolist() == [False, False, False, False, False, True, False]
    assert frame["others"].tolist() == [False, False, True, False, False, False, False]


def test_load_drops_totals_row(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert 10 not in frame["row_id"].tolist()
    assert frame.attrs["dropped_totals_rows"] == 1


def test_load_drops_empty_sentences(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert 4 not in frame["row_id"].tolist()
    assert 5 not in frame["row_id"].tolist()
    assert frame.attrs["dropped_empty_sentences"] == 2


def test_load_leaves_out_mixed(data_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="l2d_utils.outcomes"):
        frame = load_psytar(data_root)

    assert 6 not in frame["row_id"].tolist()
    assert frame.attrs["left_out_mixed"] == 1
    assert "Left out 1 sentences marked EF together with ADR or WD" in caplog.text


def test_load_logs_no_sentence_text(data_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="l2d_utils.outcomes"):
        frame = load_psytar(data_root)

    assert "gained weight" not in caplog.text
    for text in frame["text"]:
        assert text not in caplog.text


def test_load_records_source(data_root: Path) -> None:
    frame = load_psytar(data_root)

    assert frame.attrs["source"] == str(data_root / PSYTAR_FOLDER / PSYTAR_FILE)


def test_load_psytar_folder_itself(data_root: Path) -> None:
    frame = load_psytar(data_root / PSYTAR_FOLDER)

    assert len(frame) == 7


def test_load_from_environment(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("L2D_DATA_DIR", str(data_root))

    frame = load_psytar()

    assert len(frame) == 7


def test_load_strips_header_names(tmp_path: Path) -> None:
    header = [f" {name} " for name in HEADER]
    write_workbook(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE, header=header)

    frame = load_psytar(tmp_path)

    assert len(frame) == 7


def test_load_numeric_post_id(tmp_path: Path) -> None:
    rows = [[1, 1, 17, 1, "A sentence with a numeric post id.", None, None, None, None, None, None, None, 0, 1, "ssri"]]
    write_workbook(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE, rows=rows)

    frame = load_psytar(tmp_path)

    assert frame["post_id"].tolist() == ["17"]


# Invalid workbooks: the error names the path and the fix


def test_missing_workbook(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as raised:
        load_psytar(tmp_path)

    message = str(raised.value)
    assert str(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE) in message
    assert "L2D_DATA_DIR" in message


def test_missing_data_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"

    with pytest.raises(FileNotFoundError) as raised:
        load_psytar(missing)

    assert str(missing) in str(raised.value)


def test_missing_sheet(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE, sheet="Sample")

    with pytest.raises(ValueError) as raised:
        load_psytar(tmp_path)

    message = str(raised.value)
    assert str(path) in message
    assert "no sheet 'Sentence_Labeling'" in message
    assert "['License', 'Sample']" in message


@pytest.mark.parametrize("removed", ["drug_id", "sentences", "EF", "WD"])
def test_missing_column(tmp_path: Path, removed: str) -> None:
    position = HEADER.index(removed)
    header = [name for name in HEADER if name != removed]
    rows = [row[:position] + row[position + 1 :] for row in SYNTHETIC_ROWS]
    path = write_workbook(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE, rows=rows, header=header)

    with pytest.raises(ValueError) as raised:
        load_psytar(tmp_path)

    message = str(raised.value)
    assert str(path) in message
    assert f"lacks columns ['{removed}']" in message


def test_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / PSYTAR_FOLDER / PSYTAR_FILE
    path.parent.mkdir()
    path.write_text("id,sentences\n1,not a workbook\n", encoding="utf-8")

    with pytest.raises(ValueError) as raised:
        load_psytar(tmp_path)

    message = str(raised.value)
    assert str(path) in message
    assert "not a readable .xlsx workbook" in message


def test_sentence_without_post(tmp_path: Path) -> None:
    rows = SYNTHETIC_ROWS[:2] + [
        [3, 1, None, 3, "A sentence whose post id is missing.", None, None, None, None, None, None, None, 0, 4, "ssri"]
    ]
    write_workbook(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE, rows=rows)

    with pytest.raises(ValueError) as raised:
        load_psytar(tmp_path)

    message = str(raised.value)
    assert "rows [4]" in message
    assert "no drug_id" in message
    assert "post id is missing" not in message


def test_fractional_sentence_index(tmp_path: Path) -> None:
    rows = [[1, 1, "drugx.1", 1.5, "A sentence with a broken index.", None, None, None, None, None, None, None, 0, 4, "ssri"]]
    write_workbook(tmp_path / PSYTAR_FOLDER / PSYTAR_FILE, rows=rows)

    with pytest.raises(ValueError) as raised:
        load_psytar(tmp_path)

    message = str(raised.value)
    assert "row 2: sentence_index is 1.5" in message
    assert "whole number is expected" in message


# Split by post


@pytest.fixture(scope="module")
def posts_frame() -> pd.DataFrame:
    """600 sentences from 200 posts of 3 sentences each."""
    return pd.DataFrame(
        {
            "row_id": range(600),
            "post_id": [f"drug.{index // 3}" for index in range(600)],
            "label": [index % 3 for index in range(600)],
        }
    )


def test_split_post_shares(posts_frame: pd.DataFrame) -> None:
    splits = outcome_split(posts_frame)

    posts_per_split = splits.groupby("split")["post_id"].nunique().to_dict()
    assert posts_per_split == {"train": 160, "validation": 20, "test": 20}


def test_split_no_post_in_two_splits(posts_frame: pd.DataFrame) -> None:
    splits = outcome_split(posts_frame)

    assert (splits.groupby("post_id")["split"].nunique() == 1).all()


def test_split_keeps_rows_and_order(posts_frame: pd.DataFrame) -> None:
    splits = outcome_split(posts_frame)

    assert splits["row_id"].tolist() == posts_frame["row_id"].tolist()
    assert set(splits["split"]) == {"train", "validation", "test"}
    assert "split" not in posts_frame.columns


def test_split_is_deterministic(posts_frame: pd.DataFrame) -> None:
    first = outcome_split(posts_frame, seed=7)
    second = outcome_split(posts_frame, seed=7)
    other_seed = outcome_split(posts_frame, seed=8)

    assert first["split"].tolist() == second["split"].tolist()
    assert first["split"].tolist() != other_seed["split"].tolist()


def test_split_ignores_row_order(posts_frame: pd.DataFrame) -> None:
    shuffled = posts_frame.sample(frac=1.0, random_state=3).reset_index(drop=True)

    in_order = outcome_split(posts_frame).set_index("row_id")["split"]
    reordered = outcome_split(shuffled).set_index("row_id")["split"]

    assert reordered.sort_index().tolist() == in_order.sort_index().tolist()


def test_split_three_posts() -> None:
    frame = pd.DataFrame({"post_id": ["a.1", "a.2", "a.3"]})

    splits = outcome_split(frame)

    assert sorted(splits["split"]) == ["test", "train", "validation"]


def test_split_rejects_two_posts() -> None:
    frame = pd.DataFrame({"post_id": ["a.1", "a.1", "a.2"]})

    with pytest.raises(ValueError, match="Found 2 posts, but .* needs at least 3"):
        outcome_split(frame)


@pytest.mark.parametrize("train_fraction", [0.0, 1.0, -0.5, 1.2])
def test_split_rejects_bad_fraction(posts_frame: pd.DataFrame, train_fraction: float) -> None:
    with pytest.raises(ValueError, match=rf"train_fraction={train_fraction} must be strictly between 0 and 1"):
        outcome_split(posts_frame, train_fraction=train_fraction)


def test_split_requires_post_id() -> None:
    with pytest.raises(ValueError, match=r"lacks column 'post_id'"):
        outcome_split(pd.DataFrame({"pmid": ["1", "2", "3"]}))


def test_split_rejects_missing_post_id() -> None:
    frame = pd.DataFrame({"post_id": ["a.1", None, "a.2", "a.3"]})

    with pytest.raises(ValueError, match="1 rows have no post_id"):
        outcome_split(frame)


# Data set terms


def test_datasets_restricted_flags() -> None:
    assert set(DATASETS) == {"ade_corpus_v2", "psytar", "mimic_iv_note"}
    assert DATASETS["ade_corpus_v2"].restricted is False
    assert DATASETS["psytar"].restricted is True
    assert DATASETS["mimic_iv_note"].restricted is True
    assert "research use only" in DATASETS["psytar"].licence_note.lower()
    assert "credentialed" in DATASETS["mimic_iv_note"].licence_note.lower()


def test_dataset_info_is_frozen() -> None:
    info = dataset_info("psytar")

    with pytest.raises(dataclasses.FrozenInstanceError):
        info.restricted = False  # type: ignore[misc]


def test_dataset_names_match_keys() -> None:
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo)
        assert info.name == name


@pytest.mark.parametrize("name", ["psytar", "mimic_iv_note"])
def test_check_publishable_rejects_restricted(name: str) -> None:
    with pytest.raises(RestrictedDataError, match=rf"Data set '{name}' is restricted"):
        check_publishable(name)


def test_check_publishable_accepts_ade() -> None:
    assert check_publishable("ade_corpus_v2") is DATASETS["ade_corpus_v2"]


def test_dataset_info_unknown_name() -> None:
    with pytest.raises(ValueError, match=r"Unknown data set 'n2c2'\. Known data sets: \['ade_corpus_v2'"):
        dataset_info("n2c2")


# Scanning files for restricted sentences

# Invented sentences, each at least 30 characters after normalization except the last.
QUOTED = 'My doctor said "take half a pill" & it\'s <fine> for now.'
PLAIN = "The tablets made my hands shake every single morning."
ACCENTED = "The café nurse said the dizziness would pass \U0001f600 soon."
TWO_LINES = "I could not stop yawning at work\nand my boss noticed it."
SHORT = "Felt sleepy all day."
RESTRICTED = [QUOTED, PLAIN, ACCENTED, TWO_LINES, SHORT]

CLEAN_PAGE = "<html><body><p>The model deferred 12% of sentences to the LLM.</p></body></html>"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def notebook_json(outputs: list[dict[str, object]], source: list[str] | None = None) -> str:
    """Serialize a one-cell notebook the way Jupyter does: lines as lists, ASCII escapes."""
    cell = {
        "cell_type": "code",
        "execution_count": 1,
        "metadata": {},
        "source": source or ["frame.head()\n"],
        "outputs": outputs,
    }
    notebook = {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    return json.dumps(notebook, indent=1, ensure_ascii=True)


def lines_of(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def test_scan_plain_text_file(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.md", f"Some context.\n{PLAIN}\nMore context.\n")

    assert find_restricted_text(RESTRICTED, [path]) == [(path, 1)]


def test_scan_clean_file(tmp_path: Path) -> None:
    path = write(tmp_path / "index.html", CLEAN_PAGE)

    assert find_restricted_text(RESTRICTED, [path]) == []


def test_scan_html_entities(tmp_path: Path) -> None:
    escaped = "My doctor said &quot;take half a pill&quot; &amp; it&#39;s &lt;fine&gt; for now."
    path = write(tmp_path / "page.html", f"<table><tr><td>{escaped}</td></tr></table>")

    assert find_restricted_text(RESTRICTED, [path]) == [(path, 0)]


def test_scan_hex_entity_and_nbsp(tmp_path: Path) -> None:
    escaped = "My&nbsp;doctor said &#x22;take half a pill&#x22; &amp;amp; it&#x27;s &lt;fine&gt; for now."
    path = write(tmp_path / "page.html", f"<p>{escaped}</p>")

    assert find_restricted_text(RESTRICTED, [path]) == [(path, 0)]


def test_scan_notebook_stream_output(tmp_path: Path) -> None:
    output = {"name": "stdout", "output_type": "stream", "text": lines_of(f"row 3: {QUOTED}\nrow 4: {ACCENTED}\n")}
    text = notebook_json([output])
    path = write(tmp_path / "chapter.ipynb", text)

    assert '\\"take half a pill\\"' in text
    assert "\\u00e9" in text
    assert "\\ud83d\\ude00" in text
    assert find_restricted_text(RESTRICTED, [path]) == [(path, 0), (path, 2)]


def test_scan_notebook_html_output(tmp_path: Path) -> None:
    table = f"<table>\n<tr><td>{html.escape(QUOTED)}</td></tr>\n</table>\n"
    output = {
        "output_type": "execute_result",
        "execution_count": 1,
        "metadata": {},
        "data": {"text/html": lines_of(table), "text/plain": ["<table of 1 row>"]},
    }
    path = write(tmp_path / "chapter.ipynb", notebook_json([output]))

    assert find_restricted_text(RESTRICTED, [path]) == [(path, 0)]


def test_scan_notebook_split_lines(tmp_path: Path) -> None:
    output = {"name": "stdout", "output_type": "stream", "text": lines_of(f"{TWO_LINES}\n")}
    text = notebook_json([output])
    path = write(tmp_path / "chapter.ipynb", text)

    assert len(output["text"]) == 2
    assert find_restricted_text(RESTRICTED, [path]) == [(path, 3)]


def test_scan_json_escapes_outside_notebooks(tmp_path: Path) -> None:
    path = write(tmp_path / "outputs.json", json.dumps({"sentences": [QUOTED, ACCENTED, TWO_LINES]}))

    assert find_restricted_text(RESTRICTED, [path]) == [(path, 0), (path, 2), (path, 3)]


def test_scan_python_repr(tmp_path: Path) -> None:
    path = write(tmp_path / "log.txt", repr([QUOTED, TWO_LINES]))

    assert "it\\'s" in path.read_text(encoding="utf-8")
    assert find_restricted_text(RESTRICTED, [path]) == [(path, 0), (path, 3)]


def test_scan_collapsed_whitespace(tmp_path: Path) -> None:
    spaced = "The tablets   made my\n\thands shake\r\n every  single   morning."
    path = write(tmp_path / "table.csv", f'id,text\n7,"{spaced}"\n')

    assert find_restricted_text(RESTRICTED, [path]) == [(path, 1)]


def test_scan_ignores_case(tmp_path: Path) -> None:
    path = write(tmp_path / "shout.md", PLAIN.upper())

    assert find_restricted_text(RESTRICTED, [path]) == [(path, 1)]


def test_scan_sentence_at_file_edges(tmp_path: Path) -> None:
    start = write(tmp_path / "start.txt", PLAIN)
    attached = write(tmp_path / "attached.txt", f'["{PLAIN}"]')

    assert find_restricted_text(RESTRICTED, [start, attached]) == [(start, 1), (attached, 1)]


def test_scan_skips_short_sentences(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.md", f"Quoted: {SHORT}")

    assert find_restricted_text(RESTRICTED, [path]) == []
    assert find_restricted_text(RESTRICTED, [path], min_chars=10) == [(path, 4)]


def test_scan_single_word_sentence(tmp_path: Path) -> None:
    long_word = "antidepressant-discontinuation-symptoms"
    path = write(tmp_path / "notes.md", f"see {long_word}.")

    assert find_restricted_text([long_word], [path]) == [(path, 0)]


def test_scan_partial_sentence_is_no_hit(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.md", "The tablets made my hands shake every single")

    assert find_restricted_text(RESTRICTED, [path]) == []


def test_scan_repeated_sentence(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.md", PLAIN)

    assert find_restricted_text([PLAIN, QUOTED, PLAIN], [path]) == [(path, 0), (path, 2)]


def test_scan_folder(tmp_path: Path) -> None:
    write(tmp_path / "book" / "index.html", CLEAN_PAGE)
    nested = write(tmp_path / "book" / "chapters" / "outcomes.html", f"<pre>{html.escape(QUOTED)}</pre>")
    write(tmp_path / "book" / ".git" / "notes.txt", QUOTED)

    assert find_restricted_text(RESTRICTED, [tmp_path / "book"]) == [(nested, 0)]


def test_scan_returns_paths_and_indices(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.md", f"{PLAIN} {QUOTED}")

    hits = find_restricted_text(RESTRICTED, [str(path)])

    assert hits == [(path, 0), (path, 1)]
    for hit_path, index in hits:
        assert isinstance(hit_path, Path)
        assert isinstance(index, int)


def test_scan_truncated_display_needs_prefix(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": [PLAIN]})
    display = frame._repr_html_() + repr(frame)  # what a notebook shows for the frame
    path = write(tmp_path / "head.html", display)

    assert "every single m..." in display
    assert find_restricted_text(RESTRICTED, [path]) == []
    assert find_restricted_text(RESTRICTED, [path], prefix_chars=30) == [(path, 1)]


def test_scan_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "_build" / "html"

    with pytest.raises(FileNotFoundError, match="Cannot scan .*no such file or folder"):
        find_restricted_text(RESTRICTED, [missing])


def test_scan_rejects_non_string(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.md", PLAIN)

    with pytest.raises(TypeError, match=r"texts\[1\] is a float, not a str"):
        find_restricted_text([PLAIN, float("nan")], [path])


@pytest.mark.parametrize(("min_chars", "prefix_chars"), [(0, None), (30, 20)])
def test_scan_rejects_bad_lengths(tmp_path: Path, min_chars: int, prefix_chars: int | None) -> None:
    path = write(tmp_path / "notes.md", PLAIN)

    with pytest.raises(ValueError, match="must be at least"):
        find_restricted_text(RESTRICTED, [path], min_chars=min_chars, prefix_chars=prefix_chars)


def test_normalize_undoes_escapes() -> None:
    assert normalize_for_search('A &quot;b&quot; \\"c\\"\\n\\u00e9 &amp;amp;  D') == 'a "b" "c" é & d'


# The real PsyTAR workbook: counts only, never text


@pytest.fixture(scope="module")
def real_psytar() -> pd.DataFrame:
    return load_psytar(os.environ["L2D_DATA_DIR"])


@requires_psytar
def test_real_counts(real_psytar: pd.DataFrame) -> None:
    assert len(real_psytar) == PSYTAR_SENTENCES == 5828
    assert real_psytar["post_id"].nunique() == PSYTAR_POSTS == 882
    assert real_psytar.attrs["left_out_mixed"] == PSYTAR_LEFT_OUT_MIXED == 175
    assert real_psytar.attrs["dropped_empty_sentences"] == 6
    assert real_psytar.attrs["dropped_totals_rows"] == 1


@requires_psytar
def test_real_class_counts(real_psytar: pd.DataFrame) -> None:
    counts = real_psytar["label"].value_counts().to_dict()

    assert counts == {0: 2531, 1: 2385, 2: 912}


@requires_psytar
def test_real_row_ids_unique(real_psytar: pd.DataFrame) -> None:
    assert real_psytar["row_id"].is_unique
    assert real_psytar["row_id"].is_monotonic_increasing


@requires_psytar
def test_real_split_by_post(real_psytar: pd.DataFrame) -> None:
    splits = outcome_split(real_psytar)

    posts_per_split = splits.groupby("split")["post_id"].nunique().to_dict()
    assert posts_per_split == {"train": 706, "validation": 88, "test": 88}
    assert (splits.groupby("post_id")["split"].nunique() == 1).all()
    assert (splits.groupby("split")["label"].nunique() == 3).all()


@requires_psytar
def test_real_sentences_absent_from_sources(real_psytar: pd.DataFrame) -> None:
    """No PsyTAR sentence is in the repository's chapters, package, tests or top-level docs."""
    folders = [REPOSITORY / name for name in ("chapters", "l2d_utils", "tests") if (REPOSITORY / name).is_dir()]
    top_level = [path for path in REPOSITORY.iterdir() if path.is_file() and path.suffix in {".md", ".yml", ".toml"}]

    hits = find_restricted_text(real_psytar["text"], folders + top_level)

    assert len(hits) == 0, f"{len(hits)} PsyTAR sentences found, at (file, index): {hits[:20]}"
