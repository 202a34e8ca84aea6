"""ADE Corpus V2: load the original release files into one table.

The table has one row per line of ``DRUG-AE.rel`` (label 1) followed by one
row per line of ``ADE-NEG.txt`` (label 0), in file order. That is the row set
and order of the Hugging Face Hub dataset ``ade-benchmark-corpus/ade_corpus_v2``
(config ``Ade_corpus_v2_classification``): 23,516 rows, 6,821 positive, with
no de-duplication. A sentence with several drug-effect relations appears once
per relation, so 2,620 rows repeat another row's text.

Columns of the returned :class:`pandas.DataFrame`:

``row_id`` (int)
    Position in the table, 0 to n-1; stable across runs.
``pmid`` (str)
    PubMed id of the abstract the sentence comes from.
``text`` (str)
    The sentence.
``label`` (int)
    1 if the sentence describes a drug-adverse effect relation, else 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from l2d_utils.config import data_dir as resolve_data_dir
from l2d_utils.models import sha256_of

logger = logging.getLogger(__name__)

ADE_FOLDER = "ade_corpus_v2"
POSITIVE_FILE = "DRUG-AE.rel"
NEGATIVE_FILE = "ADE-NEG.txt"

#: Line counts and sha256 of the original release files (Hugging Face loader records).
RELEASE_FILES: dict[str, tuple[int, str]] = {
    POSITIVE_FILE: (6821, "542cdc483ccc94927762eaf2c9a8ecac49a6c10037dda2895be6a6e20160f75a"),
    NEGATIVE_FILE: (16695, "8f506c159042ce354fbf26981dc39971dde8f09b1158d94106eab1e516e53fcf"),
}
ADE_ROWS = 23516
ADE_POSITIVES = 6821
HUB_DATASET = "ade-benchmark-corpus/ade_corpus_v2"
HUB_CONFIG = "Ade_corpus_v2_classification"

_FIX = (
    "Get the original release files (DRUG-AE.rel, ADE-NEG.txt) of ADE Corpus V2, for example "
    "from the Hugging Face Hub dataset ade-benchmark-corpus/ade_corpus_v2, into "
    "<data folder>/ade_corpus_v2/ and set L2D_DATA_DIR to <data folder>."
)


class ReleaseFileError(ValueError):
    """A release file is missing, truncated or not in the documented format."""


def ade_folder(data_dir: str | Path | None = None) -> Path:
    """Return ``<data_dir>/ade_corpus_v2`` after checking that both release files exist.

    Raises:
        FileNotFoundError: Naming the missing path and how to get it.
    """
    root = resolve_data_dir(data_dir)
    folder = root / ADE_FOLDER
    if not folder.is_dir() and (root / POSITIVE_FILE).is_file():
        folder = root  # the user pointed at the ADE folder itself
    for name in (POSITIVE_FILE, NEGATIVE_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"Missing ADE Corpus V2 file {folder / name}. {_FIX}")
    return folder


def _read_lines(path: Path) -> list[str]:
    """Read a release file as text lines, rejecting non-UTF-8 content with the line number."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = raw[: error.start].count(b"\n") + 1
        raise ReleaseFileError(
            f"{path}, line {line_number}: not valid UTF-8 text ({error.reason}). "
            f"The file is damaged; download it again. {_FIX}"
        ) from error
    return text.splitlines()


def parse_positive_file(path: Path) -> pd.DataFrame:
    """Parse ``DRUG-AE.rel``: ``pmid|sentence|effect|begin|end|drug|begin|end`` per line.

    Returns:
        Frame with columns ``pmid, text, label`` (label 1), one row per line.

    Raises:
        ReleaseFileError: On a line without 8 fields, a non-numeric PubMed id or
            an empty sentence, naming the file and line.
    """
    rows = []
    for line_number, line in enumerate(_read_lines(path), start=1):
        fields = line.split("|")
        if len(fields) != 8:
            raise ReleaseFileError(
                f"{path}, line {line_number}: expected 8 '|'-separated fields "
                f"(pmid|sentence|effect|begin|end|drug|begin|end), found {len(fields)}. {_FIX}"
            )
        pmid, sentence = fields[0].strip(), fields[1].strip()
        if not pmid.isdigit() or not sentence:
            raise ReleaseFileError(
                f"{path}, line {line_number}: expected a numeric PubMed id and a sentence, "
                f"found pmid={pmid!r} and an {'empty' if not sentence else 'unexpected'} sentence. {_FIX}"
            )
        rows.append((pmid, sentence, 1))
    return pd.DataFrame(rows, columns=["pmid", "text", "label"])


def parse_negative_file(path: Path) -> pd.DataFrame:
    """Parse ``ADE-NEG.txt``: ``PMID NEG sentence`` per line.

    Returns:
        Frame with columns ``pmid, text, label`` (label 0), one row per line.

    Raises:
        ReleaseFileError: On a line not in that form, naming the file and line.
    """
    rows = []
    for line_number, line in enumerate(_read_lines(path), start=1):
        parts = line.split(" ", 2)
        if len(parts) != 3 or parts[1] != "NEG" or not parts[0].isdigit() or not parts[2].strip():
            raise ReleaseFileError(
                f"{path}, line {line_number}: expected 'PMID NEG sentence', found {line[:80]!r}. {_FIX}"
            )
        rows.append((parts[0], parts[2].strip(), 0))
    return pd.DataFrame(rows, columns=["pmid", "text", "label"])


def load_ade_corpus(data_dir: str | Path | None = None, verify: bool = True) -> pd.DataFrame:
    """Load ADE Corpus V2 from its original release files.

    Args:
        data_dir: Folder containing ``ade_corpus_v2/``; defaults to ``L2D_DATA_DIR``.
        verify: Check each file's line count before parsing, so that a truncated
            download fails here and not after an hour of fine-tuning. A sha256
            mismatch with matching counts is only logged, since a re-encoded copy
            can still be correct.

    Returns:
        Frame with columns ``row_id, pmid, text, label`` (23,516 rows for the release).

    Raises:
        FileNotFoundError: When the folder or a file is missing.
        ReleaseFileError: When a file is truncated or malformed.
    """
    folder = ade_folder(data_dir)
    parts = []
    for name, parser in ((POSITIVE_FILE, parse_positive_file), (NEGATIVE_FILE, parse_negative_file)):
        path = folder / name
        if verify:
            _check_release_file(path)
        parts.append(parser(path))
    corpus = pd.concat(parts, ignore_index=True)
    corpus.insert(0, "row_id", range(len(corpus)))
    logger.info("Loaded ADE Corpus V2 from %s: %d rows, %d positive", folder, len(corpus), corpus["label"].sum())
    return corpus


def _check_release_file(path: Path) -> None:
    """Compare a release file's line count (and, for information, its sha256) with the release."""
    expected_lines, expected_sha = RELEASE_FILES[path.name]
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    if lines != expected_lines:
        raise ReleaseFileError(
            f"{path} has {lines} lines; the ADE Corpus V2 release has {expected_lines}. "
            f"The file is truncated or not the original release. {_FIX} "
            "From Python, load_ade_corpus(verify=False) loads a modified copy anyway."
        )
    if sha256_of(path) != expected_sha:
        logger.warning("%s has the release's line count but not its sha256; using it as is", path)


def load_ade_from_hub(
    path: str = HUB_DATASET, name: str | None = HUB_CONFIG, split: str = "train", **kwargs: object
) -> pd.DataFrame:
    """Load ADE Corpus V2 through the ``datasets`` library (Hub id or a local file).

    The Hub's classification config has columns ``text`` and ``label`` but no
    PubMed id, so ``pmid`` is left empty and a PubMed-grouped split is not
    possible from this source. Use :func:`load_ade_corpus` for that.

    Args:
        path: Hub dataset id, or a builder name such as ``"json"`` with
            ``data_files=...`` in ``kwargs`` for a local copy in the same schema.
        name: Dataset config; pass ``None`` for local builders.
        split: Split to read; the Hub dataset has only ``train``.
        **kwargs: Passed to :func:`datasets.load_dataset`.

    Returns:
        Frame with columns ``row_id, pmid, text, label``.

    Raises:
        ValueError: When the loaded split lacks ``text`` or ``label``, or has labels other than 0/1.
    """
    import datasets  # imported here: loading from the Hub is optional

    dataset = datasets.load_dataset(path, name, split=split, **kwargs)
    missing = {"text", "label"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"Dataset {path!r} (config {name!r}) lacks columns {sorted(missing)}; expected the "
            f"schema of {HUB_DATASET}/{HUB_CONFIG}: text (string), label (0 or 1)."
        )
    frame = dataset.to_pandas()[["text", "label"]]
    bad = sorted(set(frame["label"].tolist()) - {0, 1})
    if bad:
        raise ValueError(f"Dataset {path!r} has labels {bad}; expected only 0 (no ADE) and 1 (ADE).")
    frame["text"] = frame["text"].astype(str).str.strip()
    frame["label"] = frame["label"].astype(int)
    frame.insert(0, "pmid", "")
    frame.insert(0, "row_id", range(len(frame)))
    return frame.reset_index(drop=True)


def stratified_sample(corpus: pd.DataFrame, n_rows: int, seed: int = 42) -> pd.DataFrame:
    """Draw ``n_rows`` rows stratified by label, keeping the original ``row_id`` and order.

    Used by the ``smoke`` profile to run every chapter on a few hundred rows.

    Raises:
        ValueError: When ``n_rows`` is not between 10 and ``len(corpus)``.
    """
    from sklearn.model_selection import train_test_split

    if not 10 <= n_rows <= len(corpus):
        raise ValueError(f"n_rows={n_rows} must be between 10 and the corpus size {len(corpus)}.")
    if n_rows == len(corpus):
        return corpus.copy()
    sample, _ = train_test_split(corpus, train_size=n_rows, stratify=corpus["label"], random_state=seed)
    return sample.sort_values("row_id").reset_index(drop=True)
