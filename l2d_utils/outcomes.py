"""Treatment outcomes on PsyTAR, and a check that restricted text stays out of published files.

PsyTAR (Zolnoori et al., Data in Brief 24:103838, 2019) labels each sentence of
patient posts about four antidepressants with marks such as ADR (adverse drug
reaction), WD (withdrawal symptom) and EF (drug effective). :func:`load_psytar`
maps those marks to three outcome classes:

``NEUTRAL`` (0)
    None of ADR, WD and EF is set.
``ADVERSE`` (1)
    ADR or WD is set, EF is not.
``EFFECTIVE`` (2)
    EF is set, ADR and WD are not.

Sentences with EF together with ADR or WD belong to two classes and are left
out. The post texts come from AskaPatient under terms that allow research use
only, so the sentences must never appear in a committed file or a rendered
page. :func:`find_restricted_text` scans files for them.
"""

from __future__ import annotations

import html
import json
import logging
import numbers
import re
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from l2d_utils.config import data_dir as resolve_data_dir
from l2d_utils.splits import SPLITS

logger = logging.getLogger(__name__)

#: Outcome class names. A class's index in this tuple is its integer label.
OUTCOME_CLASSES = ("NEUTRAL", "ADVERSE", "EFFECTIVE")
NEUTRAL, ADVERSE, EFFECTIVE = range(len(OUTCOME_CLASSES))

PSYTAR_FOLDER = "psytar"
PSYTAR_FILE = "PsyTAR_dataset.xlsx"
PSYTAR_SHEET = "Sentence_Labeling"
#: Label columns of the sheet. A cell is set when it contains a non-empty, non-zero mark.
MARK_COLUMNS = ("ADR", "WD", "EF", "INF", "SSI", "DI", "Findings", "others")
#: Sheet columns that identify a sentence and hold its text.
KEY_COLUMNS = ("drug_id", "sentence_index", "sentences")

#: Counts of the published PsyTAR_dataset.xlsx after mapping to outcome classes.
PSYTAR_SENTENCES = 5828
PSYTAR_POSTS = 882
PSYTAR_LEFT_OUT_MIXED = 175

_FIX = (
    "Get PsyTAR_dataset.xlsx, the release of Zolnoori et al., Data in Brief 24:103838, 2019 "
    "(for example from GitHub basaldella/psytarpreprocessor), into <data folder>/psytar/ and "
    "set L2D_DATA_DIR to <data folder>."
)


# Loading PsyTAR


def psytar_path(data_dir: str | Path | None = None) -> Path:
    """Return the path of ``<data_dir>/psytar/PsyTAR_dataset.xlsx`` after checking that it exists.

    Raises:
        FileNotFoundError: Naming the missing path and how to get the file.
    """
    root = resolve_data_dir(data_dir)
    path = root / PSYTAR_FOLDER / PSYTAR_FILE
    if not path.is_file() and (root / PSYTAR_FILE).is_file():
        path = root / PSYTAR_FILE  # the user pointed at the psytar folder itself
    if not path.is_file():
        raise FileNotFoundError(f"Missing PsyTAR file {path}. {_FIX}")
    return path


def is_mark_set(value: object) -> bool:
    """Check whether a label cell is set: any non-empty, non-zero value (``1``, ``'!'``, ``'*'``).

    Empty cells (None, NaN, blank strings) and zeros (``0``, ``0.0``, ``'0'``) are unset.
    """
    if value is None:
        return False
    if isinstance(value, str):
        mark = value.strip()
        if not mark:
            return False
        try:
            return float(mark) != 0
        except ValueError:
            return True  # a symbol such as '!' or '*'
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Number):
        return not pd.isna(value) and value != 0
    return True


def _is_empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return bool(pd.isna(value)) if np.isscalar(value) else False


def _read_sheet(path: Path) -> pd.DataFrame:
    """Read the sentence sheet with raw cell values (dtype object) and stripped header names."""
    try:
        workbook = pd.ExcelFile(path, engine="openpyxl")
    except ImportError as error:
        raise ImportError(f"Reading {path} needs openpyxl. Install it with: pip install openpyxl") from error
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(
            f"{path} is not a readable .xlsx workbook ({error}). The file is damaged or in "
            f"another format, so download it again. {_FIX}"
        ) from error

    with workbook:
        if PSYTAR_SHEET not in workbook.sheet_names:
            raise ValueError(
                f"{path} has no sheet {PSYTAR_SHEET!r}. Its sheets are {workbook.sheet_names}. "
                f"Use the published PsyTAR workbook. {_FIX}"
            )
        sheet = pd.read_excel(workbook, sheet_name=PSYTAR_SHEET, dtype=object)

    sheet.columns = [str(column).strip() for column in sheet.columns]
    missing = [column for column in KEY_COLUMNS + MARK_COLUMNS if column not in sheet.columns]
    if missing:
        raise ValueError(
            f"Sheet {PSYTAR_SHEET!r} of {path} lacks columns {missing}. It has {list(sheet.columns)}. "
            f"Use the published PsyTAR workbook. {_FIX}"
        )
    return sheet.reset_index(drop=True)


def _whole_number(value: object, column: str, sheet_row: int, path: Path) -> int:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise ValueError(
            f"{path}, sheet {PSYTAR_SHEET!r}, row {sheet_row + 2}: {column} is {value!r}, but a "
            "whole number is expected. Fix that cell or download the workbook again."
        )
    return int(number)


def _post_id(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _sentence_rows(sheet: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the totals row and rows with an empty sentence cell, and convert the cells.

    Returns:
        The kept rows with columns ``row_id, post_id, sentence_index, text`` and one
        boolean column per mark, and the counts of dropped rows by reason.

    Raises:
        ValueError: When a sentence has no post id or no whole-number sentence index.
    """
    empty_text = sheet["sentences"].map(_is_empty)
    empty_post = sheet["drug_id"].map(_is_empty)
    # The sheet ends with a row of column totals, which has neither a post id nor a sentence,
    # and so would any blank row.
    totals = empty_text & empty_post
    empty_sentence = empty_text & ~empty_post
    orphans = sheet.index[~empty_text & empty_post]
    if len(orphans):
        raise ValueError(
            f"{path}, sheet {PSYTAR_SHEET!r}: rows {[index + 2 for index in orphans[:10]]} have a "
            "sentence but no drug_id, so they belong to no post. Fix those cells or download the "
            "workbook again."
        )
    if empty_sentence.any():
        logger.info(
            "%s: dropped %d rows with an empty sentence cell (posts %s)",
            path,
            int(empty_sentence.sum()),
            sorted(set(sheet.loc[empty_sentence, "drug_id"].map(_post_id))),
        )

    with_text = sheet[~empty_text]
    rows = pd.DataFrame(
        {
            # Position among the sheet's data rows: the spreadsheet row number minus 2.
            "row_id": with_text.index.astype(int),
            "post_id": with_text["drug_id"].map(_post_id),
            "sentence_index": [
                _whole_number(value, "sentence_index", index, path)
                for index, value in with_text["sentence_index"].items()
            ],
            "text": with_text["sentences"].map(lambda value: str(value).strip()),
        }
    )
    for column in MARK_COLUMNS:
        rows[column] = with_text[column].map(is_mark_set).astype(bool).to_numpy()
    dropped = {"dropped_totals_rows": int(totals.sum()), "dropped_empty_sentences": int(empty_sentence.sum())}
    return rows.reset_index(drop=True), dropped


def load_psytar(data_dir: str | Path | None = None) -> pd.DataFrame:
    """Load the PsyTAR sentences with a three-class outcome label.

    Reads sheet ``Sentence_Labeling`` of ``<data_dir>/psytar/PsyTAR_dataset.xlsx``,
    drops the totals row and empty sentence cells, and leaves out sentences
    marked EF together with ADR or WD.

    Args:
        data_dir: Folder containing ``psytar/``, or the ``psytar`` folder itself.
            Defaults to ``L2D_DATA_DIR``.

    Returns:
        Frame with one row per sentence and columns

        - ``row_id`` (int): position among the sheet's data rows (spreadsheet
          row minus 2), stable across runs. One pair of ``post_id`` and
          ``sentence_index`` repeats in the release, so use ``row_id`` as the key.
        - ``post_id`` (str): the sheet's ``drug_id``, such as ``lexapro.1``.
        - ``sentence_index`` (int): position of the sentence in its post, from 1.
        - ``text`` (str): the sentence, stripped. Research use only: never print it.
        - ``label`` (int): index into :data:`OUTCOME_CLASSES`.
        - one boolean column per name in :data:`MARK_COLUMNS`.

        ``frame.attrs`` contains ``left_out_mixed`` (sentences with EF and ADR or
        WD), ``dropped_empty_sentences``, ``dropped_totals_rows`` and ``source``
        (the path read). The published file gives 5,828 sentences from 882
        posts (NEUTRAL 2,531, ADVERSE 2,385, EFFECTIVE 912) and leaves out 175.

    Raises:
        FileNotFoundError: When the data folder or the workbook is missing.
        ValueError: When the workbook is unreadable, lacks the sheet or a
            column, or has a sentence without a post id or sentence index.
        ImportError: When openpyxl is not installed.
    """
    path = psytar_path(data_dir)
    rows, dropped = _sentence_rows(_read_sheet(path), path)

    adverse = rows["ADR"] | rows["WD"]
    effective = rows["EF"]
    mixed = adverse & effective
    labels = np.select([adverse, effective], [ADVERSE, EFFECTIVE], default=NEUTRAL)
    rows.insert(rows.columns.get_loc("text") + 1, "label", labels.astype(int))
    frame = rows[~mixed].reset_index(drop=True)

    frame.attrs.update(dropped)
    frame.attrs["left_out_mixed"] = int(mixed.sum())
    frame.attrs["source"] = str(path)
    counts = frame["label"].value_counts().reindex(range(len(OUTCOME_CLASSES)), fill_value=0)
    logger.info(
        "Loaded PsyTAR from %s: %d sentences from %d posts (%s). Left out %d sentences marked EF "
        "together with ADR or WD",
        path,
        len(frame),
        frame["post_id"].nunique(),
        ", ".join(f"{name} {counts[index]}" for index, name in enumerate(OUTCOME_CLASSES)),
        frame.attrs["left_out_mixed"],
    )
    return frame


# Splitting by post


def outcome_split(frame: pd.DataFrame, seed: int = 42, train_fraction: float = 0.8) -> pd.DataFrame:
    """Split by post: ``train_fraction`` of the posts to train, the rest in halves.

    With the default 0.8 the split is 80/10/10 by posts, so sentence counts
    differ a little from those shares. No post contributes to two splits. The
    assignment depends only on the set of post ids and ``seed``, not on the row order.

    Args:
        frame: Frame with a ``post_id`` column (see :func:`load_psytar`).
        seed: Seed of the :func:`numpy.random.default_rng` that shuffles the posts.
        train_fraction: Share of posts in train, strictly between 0 and 1.

    Returns:
        A copy of ``frame`` in the same row order with a ``split`` column
        (``train``, ``validation``, ``test``).

    Raises:
        ValueError: When ``post_id`` is missing or empty, ``train_fraction`` is out
            of range, or there are fewer than 3 posts.
    """
    if "post_id" not in frame.columns:
        raise ValueError(f"Frame lacks column 'post_id'. It has {list(frame.columns)}. Load it with load_psytar().")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction={train_fraction} must be strictly between 0 and 1, for example 0.8.")
    missing_posts = frame["post_id"].map(_is_empty)
    if missing_posts.any():
        raise ValueError(
            f"{int(missing_posts.sum())} rows have no post_id, so they cannot be split by post. "
            "Drop or fill them first."
        )
    post_ids = frame["post_id"].astype(str)
    posts = np.array(sorted(post_ids.unique()))
    if len(posts) < 3:
        raise ValueError(f"Found {len(posts)} posts, but a train/validation/test split by post needs at least 3.")

    shuffled = np.random.default_rng(seed).permutation(posts)
    # Keep at least one post in each split, so that tiny frames still give three splits.
    n_train = min(max(round(train_fraction * len(posts)), 1), len(posts) - 2)
    n_validation = (len(posts) - n_train) // 2
    split_of_post = {post: "train" for post in shuffled[:n_train]}
    split_of_post.update({post: "validation" for post in shuffled[n_train : n_train + n_validation]})
    split_of_post.update({post: "test" for post in shuffled[n_train + n_validation :]})

    out = frame.copy()
    out["split"] = post_ids.map(split_of_post).to_numpy()
    logger.info(
        "Split %d posts by post id (seed %d): %s",
        len(posts),
        seed,
        ", ".join(f"{name} {int((out['split'] == name).sum())} rows" for name in SPLITS),
    )
    return out


# Restricted data sets


@dataclass(frozen=True)
class DatasetInfo:
    """Redistribution terms of a data set that the book reads.

    Attributes:
        name: Key in :data:`DATASETS`.
        restricted: True when the data set's texts must not appear in a
            committed file or a rendered page.
        licence_note: The terms in one or two sentences.
    """

    name: str
    restricted: bool
    licence_note: str


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="ade_corpus_v2",
            restricted=False,
            licence_note=(
                "Sentences from published PubMed case reports (Gurulingappa et al., J Biomed Inform, "
                "2012). The release states no licence and asks for a citation of that paper."
            ),
        ),
        DatasetInfo(
            name="psytar",
            restricted=True,
            licence_note=(
                "Research use only: the annotations are CC BY 4.0, but the post texts come from "
                "AskaPatient under terms that allow research use only and forbid redistribution."
            ),
        ),
        DatasetInfo(
            name="mimic_iv_note",
            restricted=True,
            licence_note=(
                "Credentialed access through PhysioNet. The PhysioNet Credentialed Data Use "
                "Agreement forbids sharing the data with third parties, so note text must not be published."
            ),
        ),
    )
}


class RestrictedDataError(Exception):
    """A data set's texts may not be published."""


def dataset_info(name: str) -> DatasetInfo:
    """Look up a data set in :data:`DATASETS`.

    Raises:
        ValueError: For an unknown name, listing the known ones.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown data set {name!r}. Known data sets: {sorted(DATASETS)}.")
    return DATASETS[name]


def check_publishable(name: str) -> DatasetInfo:
    """Return the data set's terms, or raise when its texts may not be published.

    Call it before writing example sentences of a data set into a page or a file.

    Raises:
        RestrictedDataError: When the data set is restricted.
        ValueError: For an unknown name.
    """
    info = dataset_info(name)
    if info.restricted:
        raise RestrictedDataError(
            f"Data set {name!r} is restricted. {info.licence_note} Its texts must not appear in a "
            "committed file or a rendered page. Show counts, ids and labels instead."
        )
    return info


# Scanning files for restricted sentences

# JSON string escapes, plus \' from Python reprs. A surrogate pair is matched as one
# unit so that characters outside the Basic Multilingual Plane decode correctly.
_ESCAPE = re.compile(
    r"\\(?:u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|([\"'\\/bfnrt]))"
)
_SIMPLE_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
# Unescaping repeats until nothing changes, so that HTML inside JSON (a notebook's
# text/html output) and double escaping are undone, but at most this many times.
_MAX_UNESCAPE_ROUNDS = 4


def _replace_escape(match: re.Match[str]) -> str:
    high, low, code, char = match.groups()
    if high:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    if code:
        return chr(int(code, 16))
    return _SIMPLE_ESCAPES[char]


def normalize_for_search(text: str) -> str:
    """Undo JSON and HTML escaping, case-fold, and collapse whitespace runs to one space.

    Applied to both the sentences and the files, so that a sentence matches its
    escaped copy: ``&quot;``, ``&amp;``, ``&#39;``, ``\\"``, ``\\n`` and ``\\u00e9``
    all turn back into the characters they stand for.
    """
    for _ in range(_MAX_UNESCAPE_ROUNDS):
        unescaped = html.unescape(_ESCAPE.sub(_replace_escape, text))
        if unescaped == text:
            break
        text = unescaped
    return " ".join(text.casefold().split())


def _strings_in(value: object) -> Iterator[str]:
    """Yield the strings of parsed JSON, joining each list of strings (a notebook's lines) first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings_in(item)
    elif isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            yield "".join(value)
        else:
            for item in value:
                yield from _strings_in(item)


def _file_text(path: Path) -> str:
    """Read a file as UTF-8 with invalid bytes replaced. A notebook becomes its joined strings."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    if path.suffix != ".ipynb":
        return text
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as error:
        logger.warning("%s is not valid notebook JSON (%s), so it is scanned as plain text", path, error)
        return text
    # Joining the line lists keeps a sentence whole even when it contains a newline.
    return "\n".join(_strings_in(notebook))


def _files_under(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            # .git contains compressed objects, in which no sentence appears as plain text.
            files.extend(
                sorted(found for found in path.rglob("*") if found.is_file() and ".git" not in found.parts)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(
                f"Cannot scan {path}: no such file or folder. Pass existing files or folders, "
                "for example the rendered book folder _build/html."
            )
    return files


@dataclass
class _Patterns:
    """Normalized sentences, prepared for the search.

    A pattern of three or more words has interior words (all but the first and
    the last), and each of them is a whole word of any text that contains the
    pattern, whatever characters surround the pattern. ``interior`` maps each
    such pattern to its interior words with their character offsets in the
    pattern. Shorter patterns are in ``plain``.
    """

    indices: dict[str, list[int]]
    interior: dict[str, list[tuple[str, int]]]
    plain: list[str]


def _build_patterns(texts: Iterable[str], min_chars: int, prefix_chars: int | None) -> _Patterns:
    indices: dict[str, list[int]] = defaultdict(list)
    skipped = 0
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{index}] is a {type(text).__name__}, not a str. Drop missing values first, "
                "for example frame['text'].dropna()."
            )
        pattern = normalize_for_search(text)
        if len(pattern) < min_chars:
            skipped += 1
            continue
        if prefix_chars is not None:
            pattern = pattern[:prefix_chars].rstrip()
        indices[pattern].append(index)
    if skipped:
        logger.info("Skipped %d sentences shorter than %d characters", skipped, min_chars)

    interior: dict[str, list[tuple[str, int]]] = {}
    plain: list[str] = []
    for pattern in indices:
        words = pattern.split(" ")
        if len(words) < 3:
            plain.append(pattern)
            continue
        offsets = np.cumsum([0] + [len(word) + 1 for word in words[:-1]])
        interior[pattern] = [(words[position], int(offsets[position])) for position in range(1, len(words) - 1)]
    return _Patterns(indices=dict(indices), interior=interior, plain=plain)


def _patterns_in(text: str, patterns: _Patterns) -> set[str]:
    """Find which patterns occur in one normalized text.

    A pattern can occur only where all its interior words occur, so patterns
    with a word missing from the text are dropped at once. Each remaining
    pattern is checked only where its rarest interior word (its anchor) starts,
    in one pass over the text's words. The cost grows with the text's length
    plus the number of anchor occurrences, not with patterns times text length.
    """
    found = {pattern for pattern in patterns.plain if pattern in text}
    words = text.split(" ")
    counts = Counter(words)

    by_anchor: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for pattern, interior_words in patterns.interior.items():
        if any(word not in counts for word, _ in interior_words):
            continue
        anchor, offset = min(interior_words, key=lambda word_offset: counts[word_offset[0]])
        by_anchor[anchor].append((pattern, offset))
    if not by_anchor:
        return found

    word_start = 0
    for word in words:
        candidates = by_anchor.get(word)
        if candidates:
            for pattern, offset in candidates:
                start = word_start - offset
                if start >= 0 and pattern not in found and text.startswith(pattern, start):
                    found.add(pattern)
        word_start += len(word) + 1
    return found


def find_restricted_text(
    texts: Iterable[str],
    paths: Iterable[str | Path],
    min_chars: int = 30,
    prefix_chars: int | None = None,
) -> list[tuple[Path, int]]:
    """Find which of ``texts`` occur in the given files, without returning any text.

    Each file is read once and normalized with :func:`normalize_for_search`, so a
    sentence is found verbatim, HTML-escaped, JSON-escaped (as in a notebook's
    outputs), with a different letter case or with its whitespace rearranged.
    Notebooks (``.ipynb``) are parsed, and the line lists of their cells and
    outputs joined, so a sentence that contains a newline is found too.

    NOTE: a sentence is missed when markup interrupts it (``<em>`` inside the
    sentence) or when it is tokenized (spaces around punctuation). A display
    that truncates it is missed unless ``prefix_chars`` is set, and pandas
    shows at most 50 characters of a cell by default.

    Args:
        texts: The restricted sentences, for example ``load_psytar()["text"]``.
        paths: Files, or folders scanned recursively (``.git`` folders skipped).
        min_chars: Sentences shorter than this after normalization are skipped,
            because a short phrase also occurs in unrelated text.
        prefix_chars: When set, search only each sentence's first ``prefix_chars``
            normalized characters (trailing space removed), which also finds
            truncated displays. Must be at least ``min_chars``.

    Returns:
        ``(file, index)`` pairs sorted by file order, then index, where ``index``
        is the 0-based position in ``texts``. Repeated sentences give one pair per index.

    Raises:
        FileNotFoundError: When a path does not exist.
        TypeError: When an item of ``texts`` is not a str.
        ValueError: When ``min_chars`` or ``prefix_chars`` is out of range.
    """
    if min_chars < 1:
        raise ValueError(f"min_chars={min_chars} must be at least 1. The default 30 skips common short phrases.")
    if prefix_chars is not None and prefix_chars < min_chars:
        raise ValueError(f"prefix_chars={prefix_chars} must be at least min_chars={min_chars}, or None.")
    files = _files_under(paths)
    patterns = _build_patterns(texts, min_chars, prefix_chars)

    hits: list[tuple[Path, int]] = []
    scanned_bytes = 0
    for path in files:
        scanned_bytes += path.stat().st_size
        text = _file_text(path)
        found = _patterns_in(normalize_for_search(text), patterns)
        indices = sorted(index for pattern in found for index in patterns.indices[pattern])
        if indices:
            logger.warning("%s contains %d restricted sentences", path, len(indices))
        hits.extend((path, index) for index in indices)

    logger.info(
        "Scanned %d files (%.1f MB) for %d distinct sentences: %d hits in %d files",
        len(files),
        scanned_bytes / 1e6,
        len(patterns.indices),
        len(hits),
        len({path for path, _ in hits}),
    )
    return hits
