"""Treatment-outcome triplets from MIMIC-IV discharge summaries, labeled by the agreement of two LLMs.

The paper (Kondadadi and Ortega, arXiv:2604.13285, section 4.1) samples 2,000
discharge summaries and has an LLM extract 3,321 drug-disease-outcome
triplets from them. Two further LLMs (GPT-5.2 and Claude 4.5) label each
triplet EFFECTIVE, ADVERSE or NEUTRAL. The paper keeps the 2,782 triplets on
which they agree (83.8%) and splits them 80/10/10 by note with seed 42. It publishes neither the extraction
prompt nor the labeling prompt, nor how the notes were drawn. This module
fixes each of those:

1. :func:`read_discharge_notes` streams ``discharge.csv.gz`` of MIMIC-IV-Note
   and keeps a seeded random sample of notes (:func:`note_priority` describes how).
2. :func:`extract_triplets` sends each note, or each chunk of a long note, with
   :data:`EXTRACTION_PROMPT`, which requests a JSON array of
   ``{drug, condition, outcome, evidence}`` objects. :func:`parse_triplets`
   validates a reply. A malformed reply is asked for once more, in a second
   request that quotes the problem, and a chunk whose second reply is also
   malformed is skipped and counted. Triplets whose evidence is not text of the
   note are dropped and counted.
3. :func:`consensus_labels` requests one outcome per triplet from each labeler
   with :data:`LABELING_PROMPT` and keeps the triplets on which all labelers
   agree. An unparseable label counts as a disagreement.
4. :func:`split_by_note` splits 80/10/10 by note, and :func:`encoder_text`
   builds the classifier's input: the evidence with the drug and condition marked.

:func:`build_outcome_dataset` runs all four steps and returns a
:class:`MimicReport` of the counts. Every reply is stored in a
:class:`~l2d_utils.llm.cache.ResponseCache` as it arrives, so a rerun after an
interruption sends only the requests that had not finished. A replay-only
cache raises :class:`~l2d_utils.llm.cache.CacheMissError` instead of sending any.

MIMIC-IV-Note is credentialed data (https://physionet.org/content/mimic-iv-note/).
Note text, the evidence spans and the response cache (whose replies quote the
notes) must stay on the machine where the data use agreement allows them:
never commit or publish them, and show counts, not sentences. PhysioNet's
guidance on LLMs (https://physionet.org/news/post/llm-responsible-use, September
2025) recommends a locally deployed LLM. Before using a cloud API, users must
verify that the service retains no data, does not train on it and has no
human review, so prefer the ``local`` backend unless that is verified.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from l2d_utils.consensus import vote
from l2d_utils.llm.generation import ChatPrompt, Generation, GenerationRequest, TextGenerator
from l2d_utils.llm.parsing import parse_label
from l2d_utils.outcomes import OUTCOME_CLASSES, outcome_split
from l2d_utils.splits import SPLITS

logger = logging.getLogger(__name__)

DISCHARGE_FILE = "discharge.csv.gz"
#: Columns that :func:`read_discharge_notes` needs. The release has more (``note_type``, ``note_seq``, ``storetime``).
NOTE_COLUMNS = ("note_id", "subject_id", "hadm_id", "charttime", "text")
#: Notes sampled in the paper.
PAPER_NOTES = 2000

_FIX = (
    "MIMIC-IV-Note needs credentialed access: once PhysioNet grants it, download note/discharge.csv.gz "
    "from https://physionet.org/content/mimic-iv-note/ and pass the path of that file or of its folder."
)


# Reading and sampling discharge notes


def find_discharge_file(path: str | Path) -> Path:
    """Resolve ``path`` to the discharge notes file.

    Args:
        path: The file itself (``.csv.gz`` or ``.csv``), or a folder that contains
            ``discharge.csv.gz`` directly or in a ``note/`` subfolder.

    Raises:
        FileNotFoundError: Naming the path that was searched and how to get the file.
    """
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        for inner in (candidate / DISCHARGE_FILE, candidate / "note" / DISCHARGE_FILE):
            if inner.is_file():
                return inner
        raise FileNotFoundError(f"Folder {candidate} contains no {DISCHARGE_FILE}, neither directly nor in note/. {_FIX}")
    if not candidate.is_file():
        raise FileNotFoundError(f"Discharge notes file {candidate} not found. {_FIX}")
    return candidate


def note_priority(note_ids: Sequence[str] | pd.Series, seed: int) -> np.ndarray:
    """Return a seeded pseudo-random priority per note id: the first 8 bytes of ``blake2b(f"{seed}:{note_id}")``.

    Sampling keeps the ``n`` notes of lowest priority (bottom-k sampling). That
    gives a uniform random sample without replacement that depends only on the
    seed and the set of note ids. Neither the file's row order nor the size of
    the chunks that it is read in changes it, and reading needs memory for ``n`` notes only.

    Returns:
        Unsigned 64-bit integers, shape ``(len(note_ids),)``.
    """
    priorities = np.empty(len(note_ids), dtype=np.uint64)
    for position, note_id in enumerate(note_ids):
        digest = hashlib.blake2b(f"{seed}:{note_id}".encode(), digest_size=8).digest()
        priorities[position] = int.from_bytes(digest, "big")
    return priorities


def _lowest_priority(notes: pd.DataFrame, n_notes: int | None, seed: int) -> pd.DataFrame:
    ranked = notes.assign(_priority=note_priority(notes["note_id"], seed))
    ranked = ranked.sort_values(["_priority", "note_id"], kind="stable")
    if n_notes is not None:
        ranked = ranked.head(n_notes)
    return ranked.drop(columns="_priority")


def _check_sample_size(n_notes: int | None) -> None:
    if n_notes is not None and (isinstance(n_notes, bool) or not isinstance(n_notes, (int, np.integer)) or n_notes < 1):
        raise ValueError(f"n_notes must be a positive whole number or None (all notes), got {n_notes!r}. The paper uses {PAPER_NOTES}.")


def _finish_sample(sample: pd.DataFrame, source: str) -> pd.DataFrame:
    """Sort by note id, and convert the id and time columns to ``Int64`` and datetime."""
    out = sample.sort_values("note_id", kind="stable").reset_index(drop=True)
    for column in ("subject_id", "hadm_id"):
        values = out[column].mask(out[column] == "")
        try:
            out[column] = pd.to_numeric(values, errors="raise").astype("Int64")
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: column {column} has a value that is not a whole number ({error}). {_FIX}") from error
    try:
        out["charttime"] = pd.to_datetime(out["charttime"].mask(out["charttime"] == ""), errors="raise")
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: column charttime has a value that is not a date and time ({error}).") from error
    return out


def sample_notes(notes: pd.DataFrame, n_notes: int | None = PAPER_NOTES, seed: int = 42) -> pd.DataFrame:
    """Draw the same sample from a frame in memory as :func:`read_discharge_notes` draws from the file.

    Rows whose ``text`` is empty or missing are skipped and counted, as the reader does.

    Args:
        notes: Frame with at least the columns in :data:`NOTE_COLUMNS`.
        n_notes: Notes to keep, or ``None`` for all. A number above the notes
            available keeps all, with a warning.
        seed: Seed of :func:`note_priority`.

    Returns:
        The sampled rows sorted by ``note_id``, with a new index, and with
        ``subject_id`` and ``hadm_id`` as ``Int64`` and ``charttime`` as datetime.
        ``frame.attrs`` contains ``notes_read`` (rows with text) and ``notes_without_text``.

    Raises:
        ValueError: When a column is missing or has an invalid value, a note id
            is empty or repeated, or ``n_notes`` is invalid.
    """
    _check_sample_size(n_notes)
    missing = [column for column in NOTE_COLUMNS if column not in notes.columns]
    if missing:
        raise ValueError(f"The notes frame lacks columns {missing}. It has {list(notes.columns)}.")
    note_ids = notes["note_id"].astype(str).str.strip()
    if (note_ids == "").any() or notes["note_id"].isna().any():
        raise ValueError("Some notes have no note_id. Every note needs one to be sampled and split by note.")
    repeated = note_ids[note_ids.duplicated()]
    if len(repeated):
        raise ValueError(f"{len(repeated)} note ids occur more than once (first: {repeated.iloc[0]!r}). Remove the duplicate rows first.")
    has_text = notes["text"].fillna("").astype(str).str.strip() != ""
    frame = notes.astype({"note_id": str}).assign(note_id=note_ids)[has_text]
    if n_notes is not None and n_notes > len(frame):
        logger.warning("Requested %d notes but only %d have text, so all are kept", n_notes, len(frame))
    sample = _finish_sample(_lowest_priority(frame, n_notes, seed), "notes frame")
    sample.attrs.update({"notes_read": len(frame), "notes_without_text": int((~has_text).sum())})
    return sample


def read_discharge_notes(
    path: str | Path,
    n_notes: int | None = PAPER_NOTES,
    seed: int = 42,
    chunk_rows: int = 20_000,
) -> pd.DataFrame:
    """Read a seeded random sample of MIMIC-IV-Note discharge summaries.

    The file is streamed in chunks of ``chunk_rows`` rows, and only the current
    best ``n_notes`` rows stay in memory (see :func:`note_priority`). Rows with an
    empty ``text`` are skipped and counted.

    Args:
        path: ``discharge.csv.gz``, or a folder that contains it (see :func:`find_discharge_file`).
        n_notes: Notes to keep, or ``None`` for all, which keeps every note in memory.
            A number above the notes available keeps all, with a warning.
        seed: Seed of the sample.
        chunk_rows: Rows read at a time.

    Returns:
        Frame with columns ``note_id`` (str), ``subject_id`` and ``hadm_id``
        (``Int64``), ``charttime`` (datetime) and ``text`` (str), sorted by
        ``note_id``. ``frame.attrs`` contains ``notes_read`` (rows with text),
        ``notes_without_text`` and ``source``.

    Raises:
        FileNotFoundError: When the file or folder does not exist.
        ValueError: When the file is not a readable CSV (or gzip-compressed CSV),
            lacks a column, has an empty or repeated ``note_id``, or ``n_notes``
            or ``chunk_rows`` is invalid.
    """
    _check_sample_size(n_notes)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}.")
    file = find_discharge_file(path)
    unreadable = (OSError, EOFError, UnicodeDecodeError, zlib.error, gzip.BadGzipFile, pd.errors.ParserError, pd.errors.EmptyDataError)

    try:
        header = list(pd.read_csv(file, nrows=0).columns)
    except unreadable as error:
        raise ValueError(f"{file} is not a readable CSV file ({type(error).__name__}: {error}). {_FIX}") from error
    missing = [column for column in NOTE_COLUMNS if column not in header]
    if missing:
        raise ValueError(f"{file} lacks columns {missing}. Its columns are {header}. Pass the discharge table of MIMIC-IV-Note. {_FIX}")

    seen: set[str] = set()
    notes_read = 0
    without_text = 0
    best: pd.DataFrame | None = None
    kept_chunks: list[pd.DataFrame] = []  # Every chunk when n_notes is None, so they are joined once at the end.
    try:
        reader = pd.read_csv(file, usecols=list(NOTE_COLUMNS), dtype=str, keep_default_na=False, chunksize=chunk_rows)
        for chunk in reader:
            chunk = chunk[list(NOTE_COLUMNS)]
            note_ids = chunk["note_id"].str.strip()
            if (note_ids == "").any():
                raise ValueError(f"{file} has rows without a note_id. Every discharge note has one in the release. {_FIX}")
            for note_id in note_ids:
                if note_id in seen:
                    raise ValueError(f"{file} contains note_id {note_id!r} more than once. Use the unmodified release. {_FIX}")
                seen.add(note_id)
            chunk = chunk.assign(note_id=note_ids)
            has_text = chunk["text"].str.strip() != ""
            without_text += int((~has_text).sum())
            notes_read += int(has_text.sum())
            if n_notes is None:
                kept_chunks.append(chunk[has_text])
                continue
            candidates = chunk[has_text] if best is None else pd.concat([best, chunk[has_text]], ignore_index=True)
            best = _lowest_priority(candidates, n_notes, seed)
    except unreadable as error:
        raise ValueError(f"{file} could not be read to the end ({type(error).__name__}: {error}). It may be truncated, so download it again. {_FIX}") from error

    if kept_chunks:
        best = _lowest_priority(pd.concat(kept_chunks, ignore_index=True), None, seed)
    if without_text:
        logger.warning("%s: skipped %d notes with empty text", file, without_text)
    if n_notes is not None and n_notes > notes_read:
        logger.warning("Requested %d notes but %s has only %d with text, so all are kept", n_notes, file, notes_read)
    if best is None or notes_read == 0:
        raise ValueError(f"{file} contains no notes with text. {_FIX}")
    sample = _finish_sample(best, str(file))
    sample.attrs.update({"notes_read": notes_read, "notes_without_text": without_text, "source": str(file)})
    logger.info("Sampled %d of %d discharge notes from %s (seed %d)", len(sample), notes_read, file, seed)
    return sample


# Prompts. Every example in them is invented for this book, and none comes from MIMIC.

_EXAMPLE_NOTE = """Brief Hospital Course:
# Community-acquired pneumonia: Started on ceftriaxone and azithromycin. Fever resolved by hospital day 2 and oxygen was weaned to room air.
# Drug rash: On hospital day 3 she developed a diffuse pruritic rash, attributed to vancomycin, which was stopped.
# Atrial fibrillation: Home metoprolol was continued for rate control.

Discharge Medications:
1. Apixaban 5 mg PO BID
2. Metoprolol succinate 50 mg PO daily"""

_EXAMPLE_TRIPLETS = [
    {
        "drug": "ceftriaxone",
        "condition": "community-acquired pneumonia",
        "outcome": "EFFECTIVE",
        "evidence": "Started on ceftriaxone and azithromycin. Fever resolved by hospital day 2 and oxygen was weaned to room air.",
    },
    {
        "drug": "azithromycin",
        "condition": "community-acquired pneumonia",
        "outcome": "EFFECTIVE",
        "evidence": "Started on ceftriaxone and azithromycin. Fever resolved by hospital day 2 and oxygen was weaned to room air.",
    },
    {
        "drug": "vancomycin",
        "condition": "diffuse pruritic rash",
        "outcome": "ADVERSE",
        "evidence": "On hospital day 3 she developed a diffuse pruritic rash, attributed to vancomycin, which was stopped.",
    },
    {
        "drug": "metoprolol",
        "condition": "atrial fibrillation",
        "outcome": "NEUTRAL",
        "evidence": "Home metoprolol was continued for rate control.",
    },
]

_EXAMPLE_NOTE_WITHOUT_OUTCOMES = """Social History: Lives with her husband. Former smoker, quit 10 years ago.
Family History: Mother with hypertension."""

#: Extraction prompt: one discharge note (or chunk) in, a JSON array of triplets out.
EXTRACTION_PROMPT = ChatPrompt(
    name="mimic-triplet-extraction",
    version="1",
    system=(
        "You read hospital discharge summaries and list the treatment outcomes they state. "
        "A treatment outcome links a drug the patient received to a disease or condition and says how the drug worked:\n"
        "EFFECTIVE: the drug treated, improved, controlled or resolved the condition.\n"
        "ADVERSE: the drug caused harm, such as a side effect, allergic reaction, toxicity or intolerance. "
        "The condition is then the harm.\n"
        "NEUTRAL: the drug was given, continued, changed or stopped for the condition with no benefit or harm stated, "
        "or the effect is unclear.\n\n"
        "Reply with only a JSON array and no text before or after it. Each element is an object with four string fields: "
        '"drug" (the drug name as written), "condition" (the disease, symptom or adverse effect), '
        '"outcome" (EFFECTIVE, ADVERSE or NEUTRAL) and "evidence" (the sentence or phrase of the note that states '
        "the outcome, copied exactly). List each drug and condition pair once. Leave out drugs that the note only lists, "
        "as in a medication list, without a condition. Reply [] when the note states no treatment outcome."
    ),
    examples=(
        (_EXAMPLE_NOTE, json.dumps(_EXAMPLE_TRIPLETS, indent=1)),
        (_EXAMPLE_NOTE_WITHOUT_OUTCOMES, "[]"),
    ),
)

#: Labeling prompt: one triplet with its evidence in, one outcome class name out.
LABELING_PROMPT = ChatPrompt(
    name="mimic-outcome-label",
    version="1",
    system=(
        "You label the outcome of one drug treatment described in a hospital discharge summary. "
        "The input names a drug, a condition and the evidence from the note. "
        "Decide what the evidence says about the drug for that condition:\n"
        "EFFECTIVE: the drug treated, improved, controlled or resolved the condition.\n"
        "ADVERSE: the drug caused harm, such as a side effect, allergic reaction, toxicity or intolerance, "
        "or it was stopped or reduced because of harm.\n"
        "NEUTRAL: the drug was given, continued, changed or stopped with no benefit or harm stated, or the effect is unclear.\n"
        "Reply with only one word: EFFECTIVE, ADVERSE or NEUTRAL."
    ),
    examples=(
        (
            "Drug: furosemide\nCondition: volume overload\n"
            "Evidence: Diuresed with IV furosemide with improvement in dyspnea and leg edema.",
            "EFFECTIVE",
        ),
        (
            "Drug: levothyroxine\nCondition: hypothyroidism\nEvidence: Continued home levothyroxine for hypothyroidism.",
            "NEUTRAL",
        ),
        (
            "Drug: lisinopril\nCondition: angioedema\n"
            "Evidence: Presented with tongue and lip swelling attributed to lisinopril, which was discontinued.",
            "ADVERSE",
        ),
    ),
)

#: User turn appended after a malformed reply. ``{problem}`` names what was wrong.
RETRY_REMINDER = (
    "Your reply could not be used: {problem} Reply again with only a JSON array of objects with the string fields "
    '"drug", "condition", "outcome" (EFFECTIVE, ADVERSE or NEUTRAL) and "evidence", or [] if the note states no '
    "treatment outcome. Write no text or code fences around it."
)


# Validating extraction replies


@dataclass(frozen=True)
class Triplet:
    """One extracted treatment outcome.

    Attributes:
        drug: Drug name as the model wrote it, stripped.
        condition: Disease, symptom or adverse effect, stripped.
        outcome: One of :data:`~l2d_utils.outcomes.OUTCOME_CLASSES`, upper case.
        evidence: Text of the note that states the outcome, stripped.
    """

    drug: str
    condition: str
    outcome: str
    evidence: str


class MalformedReplyError(ValueError):
    """An extraction reply that is not a valid JSON array of triplets."""


_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_CODE_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_FIELDS = ("drug", "condition", "outcome", "evidence")
_MAX_PROBLEMS = 5


def _item_problems(index: int, item: object) -> tuple[Triplet | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"element {index} is a {type(item).__name__}, not an object."]
    values = dict(item)
    if "condition" not in values and "disease" in values:
        values["condition"] = values["disease"]
    problems = []
    for name in _FIELDS:
        value = values.get(name)
        label = "condition (or disease)" if name == "condition" else name
        if value is None:
            problems.append(f"element {index} has no field {label}.")
        elif not isinstance(value, str):
            problems.append(f"element {index} field {label} is a {type(value).__name__}, not a string.")
        elif not value.strip():
            problems.append(f"element {index} field {label} is empty.")
    outcome = values.get("outcome")
    if isinstance(outcome, str) and outcome.strip() and outcome.strip().upper() not in OUTCOME_CLASSES:
        problems.append(f"element {index} outcome {outcome.strip()!r:.40} is not one of {', '.join(OUTCOME_CLASSES)}.")
    if problems:
        return None, problems
    return Triplet(values["drug"].strip(), values["condition"].strip(), outcome.strip().upper(), values["evidence"].strip()), []


def parse_triplets(reply: str | None) -> list[Triplet]:
    """Parse and validate an extraction reply.

    Accepted: a JSON array of objects, or an object whose ``triplets`` field is
    that array (servers in JSON mode return objects). The JSON may sit inside a
    Markdown code fence, and a ``<think>…</think>`` block before it is removed.
    Each object needs non-empty string fields ``drug``, ``condition`` (or
    ``disease``), ``outcome`` and ``evidence``. ``outcome`` is one of
    EFFECTIVE, ADVERSE or NEUTRAL in any letter case. Other fields are ignored.
    An empty array is valid.

    Returns:
        The triplets in reply order.

    Raises:
        MalformedReplyError: Naming up to five problems, e.g. invalid JSON, a
            missing or empty field, or an outcome outside the three classes.
    """
    if reply is None or not reply.strip():
        raise MalformedReplyError("the reply is empty.")
    text = _THINK_BLOCK.sub(" ", reply).strip()
    fenced = _CODE_FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise MalformedReplyError(f"it is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}).") from error

    if isinstance(document, dict):
        if not isinstance(document.get("triplets"), list):
            raise MalformedReplyError('it is a JSON object without a "triplets" array, but a JSON array was expected.')
        document = document["triplets"]
    if not isinstance(document, list):
        raise MalformedReplyError(f"it is a JSON {type(document).__name__}, but a JSON array was expected.")

    triplets: list[Triplet] = []
    problems: list[str] = []
    for index, item in enumerate(document):
        triplet, item_problems = _item_problems(index, item)
        problems.extend(item_problems)
        if triplet is not None:
            triplets.append(triplet)
    if problems:
        extra = f" ({len(problems) - _MAX_PROBLEMS} more problems)" if len(problems) > _MAX_PROBLEMS else ""
        raise MalformedReplyError(" ".join(problems[:_MAX_PROBLEMS]) + extra)
    return triplets


def normalize_span(text: str) -> str:
    """Case-fold and collapse whitespace runs to one space, for matching evidence against the note."""
    return " ".join(text.casefold().split())


def is_grounded(evidence: str, source: str) -> bool:
    """Check whether ``evidence`` occurs in ``source``, ignoring letter case and whitespace runs."""
    return normalize_span(evidence) in normalize_span(source)


# Extraction


def split_note(text: str, max_chars: int | None = None) -> list[str]:
    """Split a note into chunks of at most ``max_chars`` characters, at blank lines where possible.

    Paragraphs (text between blank lines) are packed into chunks in order. A
    paragraph longer than ``max_chars`` is split at line breaks, and a line
    longer than ``max_chars`` is cut into pieces of ``max_chars``. Chunks are stripped.

    Args:
        text: Note text.
        max_chars: Maximum chunk length, or ``None`` to return the whole note as one chunk.

    Raises:
        ValueError: When ``max_chars`` is below 1.
    """
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be at least 1 or None, got {max_chars}.")
    if max_chars is None or len(text) <= max_chars:
        return [text.strip()] if text.strip() else []

    pieces: list[str] = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        if len(paragraph) <= max_chars:
            pieces.append(paragraph)
            continue
        for line in paragraph.split("\n"):
            pieces.extend(line[start : start + max_chars] for start in range(0, max(len(line), 1), max_chars))

    chunks: list[str] = []
    current = ""
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        joined = f"{current}\n\n{piece}" if current else piece
        if len(joined) <= max_chars:
            current = joined
        else:
            chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def _retry_request(prompt: ChatPrompt, chunk: str, reply: str, problem: str) -> GenerationRequest:
    """Build the second request for a chunk: the first chat, the malformed reply, and a reminder."""
    messages = prompt.messages(chunk)
    if reply.strip():
        messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": RETRY_REMINDER.format(problem=problem[:300])})
    return GenerationRequest(prompt.identifier, tuple(messages))


@dataclass(frozen=True)
class ExtractionCounts:
    """Counts of one extraction run.

    Attributes:
        notes: Notes given.
        chunks: Chunks sent (one per note unless notes were split).
        requests: Requests including retries, whether read from the cache or sent.
        uncached_requests: Requests sent to the model in this run.
        malformed_replies: First replies that failed validation and were retried.
        failed_chunks: Chunks whose retry also failed validation, skipped.
        failed_note_ids: Notes with at least one failed chunk.
        ungrounded_triplets: Valid triplets dropped because their evidence is not text of the chunk.
        duplicate_triplets: Triplets dropped because the note already had the
            same drug, condition and evidence (ignoring case and whitespace).
        triplets: Triplets kept.
    """

    notes: int
    chunks: int
    requests: int
    uncached_requests: int
    malformed_replies: int
    failed_chunks: int
    failed_note_ids: tuple[str, ...]
    ungrounded_triplets: int
    duplicate_triplets: int
    triplets: int


#: Columns of the frame that :func:`extract_triplets` returns.
TRIPLET_COLUMNS = ("note_id", "subject_id", "hadm_id", "chunk_index", "drug", "condition", "extracted_outcome", "evidence")


def extract_triplets(
    notes: pd.DataFrame,
    generator: TextGenerator,
    prompt: ChatPrompt = EXTRACTION_PROMPT,
    max_chunk_chars: int | None = None,
    require_grounded_evidence: bool = True,
) -> tuple[pd.DataFrame, ExtractionCounts]:
    """Extract drug-condition-outcome triplets from each note.

    The first request of every chunk is sent in one batch, which the generator
    may run concurrently, and each reply is validated with
    :func:`parse_triplets`. Then the retries of all malformed replies are sent
    in a second batch.

    Args:
        notes: Frame with ``note_id`` and ``text``. Its ``subject_id`` and ``hadm_id`` are copied when present.
        generator: Extraction model. Its reply limit must fit a JSON array of
            several triplets, and a cut-off reply is malformed.
        prompt: Extraction prompt. Its system text must request the format that :func:`parse_triplets` accepts.
        max_chunk_chars: Split longer notes with :func:`split_note`, or ``None`` to send whole notes.
        require_grounded_evidence: Drop triplets whose evidence does not occur in the chunk (see :func:`is_grounded`).

    Returns:
        A frame with :data:`TRIPLET_COLUMNS`, one row per kept triplet in note
        order, and the counts.

    Raises:
        ValueError: When ``note_id`` or ``text`` is missing.
        CacheMissError: When the generator's cache is replay-only and lacks a reply.
        LLMRequestError: When a request failed permanently. Finished replies are stored.
    """
    missing = [column for column in ("note_id", "text") if column not in notes.columns]
    if missing:
        raise ValueError(f"The notes frame lacks columns {missing}. It has {list(notes.columns)}. Read it with read_discharge_notes().")

    chunk_rows: list[tuple[int, int, str]] = []  # (row position in notes, chunk index, chunk text)
    for row, text in enumerate(notes["text"]):
        for chunk_index, chunk in enumerate(split_note(str(text), max_chunk_chars)):
            chunk_rows.append((row, chunk_index, chunk))

    chunks = [chunk for _, _, chunk in chunk_rows]
    parsed, malformed, failed_positions, replies = _request_triplets(chunks, generator, prompt)
    frame, ungrounded, duplicates = _collect_triplets(notes, chunk_rows, parsed, require_grounded_evidence)

    failed_note_ids = tuple(sorted({str(notes.iloc[chunk_rows[position][0]]["note_id"]) for position in failed_positions}))
    counts = ExtractionCounts(
        notes=len(notes),
        chunks=len(chunk_rows),
        requests=len(replies),
        uncached_requests=sum(not reply.cached for reply in replies),
        malformed_replies=malformed,
        failed_chunks=len(failed_positions),
        failed_note_ids=failed_note_ids,
        ungrounded_triplets=ungrounded,
        duplicate_triplets=duplicates,
        triplets=len(frame),
    )
    if failed_positions:
        logger.warning(
            "%s: %d chunks of %d notes were still malformed after the retry and are skipped",
            generator.name,
            len(failed_positions),
            len(failed_note_ids),
        )
    if ungrounded:
        logger.warning("%s: dropped %d triplets whose evidence is not text of the note", generator.name, ungrounded)
    logger.info(
        "Extracted %d triplets from %d notes in %d chunks (%d requests, %d sent to the model)",
        counts.triplets,
        counts.notes,
        counts.chunks,
        counts.requests,
        counts.uncached_requests,
    )
    return frame, counts


def _request_triplets(
    chunks: list[str], generator: TextGenerator, prompt: ChatPrompt
) -> tuple[list[list[Triplet] | None], int, list[int], list[Generation]]:
    """Request triplets for every chunk, and once more for each malformed reply.

    Returns:
        The triplets per chunk (``None`` where the retry was malformed too), the
        number of malformed first replies, the positions of the failed chunks,
        and every reply, first requests before retries.
    """
    first_replies = generator.generate([GenerationRequest.from_prompt(prompt, chunk) for chunk in chunks])
    parsed: list[list[Triplet] | None] = []
    retries: dict[int, GenerationRequest] = {}
    for position, (chunk, reply) in enumerate(zip(chunks, first_replies)):
        try:
            parsed.append(parse_triplets(reply.text))
        except MalformedReplyError as error:
            parsed.append(None)
            retries[position] = _retry_request(prompt, chunk, reply.text, str(error))
    if retries:
        logger.warning("%s: %d of %d extraction replies were malformed and are requested once more", generator.name, len(retries), len(chunks))

    retry_replies = generator.generate(list(retries.values()))
    failed_positions: list[int] = []
    for position, reply in zip(retries, retry_replies):
        try:
            parsed[position] = parse_triplets(reply.text)
        except MalformedReplyError:
            failed_positions.append(position)
    return parsed, len(retries), failed_positions, [*first_replies, *retry_replies]


def _collect_triplets(
    notes: pd.DataFrame,
    chunk_rows: list[tuple[int, int, str]],
    parsed: list[list[Triplet] | None],
    require_grounded_evidence: bool,
) -> tuple[pd.DataFrame, int, int]:
    """Build the triplet frame, dropping ungrounded and repeated triplets.

    Returns:
        The frame with :data:`TRIPLET_COLUMNS`, the number of ungrounded
        triplets and the number of repeated triplets.
    """
    records = []
    seen: set[tuple[str, str, str, str]] = set()
    ungrounded = 0
    duplicates = 0
    for (row, chunk_index, chunk), triplets in zip(chunk_rows, parsed):
        if triplets is None:
            continue
        note = notes.iloc[row]
        note_id = str(note["note_id"])
        for triplet in triplets:
            if require_grounded_evidence and not is_grounded(triplet.evidence, chunk):
                ungrounded += 1
                continue
            identity = (note_id, normalize_span(triplet.drug), normalize_span(triplet.condition), normalize_span(triplet.evidence))
            if identity in seen:
                duplicates += 1
                continue
            seen.add(identity)
            records.append(
                {
                    "note_id": note_id,
                    "subject_id": note.get("subject_id"),
                    "hadm_id": note.get("hadm_id"),
                    "chunk_index": chunk_index,
                    "drug": triplet.drug,
                    "condition": triplet.condition,
                    "extracted_outcome": triplet.outcome,
                    "evidence": triplet.evidence,
                }
            )

    frame = pd.DataFrame.from_records(records, columns=list(TRIPLET_COLUMNS))
    for column in ("subject_id", "hadm_id"):
        if column in notes.columns:
            frame[column] = frame[column].astype(notes[column].dtype)
    return frame, ungrounded, duplicates


# Consensus labels


def triplet_input(drug: str, condition: str, evidence: str) -> str:
    """Render one triplet as the user message of :data:`LABELING_PROMPT`."""
    return f"Drug: {drug}\nCondition: {condition}\nEvidence: {evidence}"


def label_triplets(triplets: pd.DataFrame, generator: TextGenerator, prompt: ChatPrompt = LABELING_PROMPT) -> tuple[np.ndarray, int]:
    """Ask one labeler for the outcome of each triplet.

    Each reply is parsed with :func:`~l2d_utils.llm.parsing.parse_label`: it
    must name exactly one class of :data:`~l2d_utils.outcomes.OUTCOME_CLASSES`.

    Args:
        triplets: Frame with ``drug``, ``condition`` and ``evidence``.
        generator: The labeler. A few tokens suffice for the reply, but a
            reasoning model also spends its hidden reasoning tokens from the limit.
        prompt: Labeling prompt.

    Returns:
        Labels as indices into ``OUTCOME_CLASSES`` (-1 for an unparseable reply),
        shape ``(len(triplets),)``, and the number of requests sent to the model
        (the others came from the cache).
    """
    requests = [
        GenerationRequest.from_prompt(prompt, triplet_input(drug, condition, evidence))
        for drug, condition, evidence in zip(triplets["drug"], triplets["condition"], triplets["evidence"])
    ]
    replies = generator.generate(requests)
    labels = np.array([parse_label(reply.text, OUTCOME_CLASSES) for reply in replies], dtype=int)
    return labels, sum(not reply.cached for reply in replies)


def _check_labelers(labelers: Sequence[TextGenerator]) -> None:
    """Raise ValueError for fewer than two labelers or two with the same cache identity."""
    if len(labelers) < 2:
        raise ValueError(f"Consensus needs at least two labelers, got {len(labelers)}.")
    identities = [(labeler.provider, labeler.model, json.dumps(dict(labeler.parameters), sort_keys=True)) for labeler in labelers]
    if len(set(identities)) < len(identities):
        raise ValueError(
            "Two labelers have the same provider, model and parameters, so they share cache keys and would always agree. "
            f"Labelers: {[labeler.name for labeler in labelers]}. Use different models."
        )


@dataclass(frozen=True)
class ConsensusCounts:
    """Counts of one consensus labeling run.

    Attributes:
        labelers: ``provider/model`` of each labeler, in column order.
        triplets: Triplets labeled.
        agreed: Triplets on which every labeler gave the same parseable label.
        disagreed: Triplets with parseable labels that differ.
        with_unparseable: Triplets where at least one labeler's reply was unparseable.
        unparseable_labels: Unparseable replies per labeler.
        uncached_requests: Requests sent to the models in this run.
        agreement_rate: ``agreed / triplets``, or NaN without triplets.
    """

    labelers: tuple[str, ...]
    triplets: int
    agreed: int
    disagreed: int
    with_unparseable: int
    unparseable_labels: tuple[int, ...]
    uncached_requests: int
    agreement_rate: float


def consensus_labels(
    triplets: pd.DataFrame, labelers: Sequence[TextGenerator], prompt: ChatPrompt = LABELING_PROMPT
) -> tuple[pd.DataFrame, ConsensusCounts]:
    """Label every triplet with each labeler and mark where all agree.

    Args:
        triplets: Frame with ``drug``, ``condition`` and ``evidence``.
        labelers: Two or more generators with different models (the paper: GPT-5.2 and Claude 4.5).
        prompt: Labeling prompt.

    Returns:
        A copy of ``triplets`` with ``labeler1`` … ``labelerK`` (each
        labeler's label, -1 when unparseable), ``agreed`` (bool) and ``label``
        (the common label, -1 where they do not agree), and the counts.

    Raises:
        ValueError: With fewer than two labelers, or two with the same provider, model and parameters.
    """
    _check_labelers(labelers)
    names = [labeler.name for labeler in labelers]
    if len(set(names)) < len(names):
        logger.warning(
            "Labelers %s use the same model with different parameters, so their agreement does not show label quality", names
        )
    out = triplets.copy()
    columns = []
    uncached = 0
    for number, labeler in enumerate(labelers, start=1):
        labels, sent = label_triplets(triplets, labeler, prompt)
        column = f"labeler{number}"
        out[column] = labels
        columns.append(column)
        uncached += sent

    votes = out[columns].to_numpy(dtype=int).reshape(len(out), len(columns))
    parseable = (votes >= 0).all(axis=1)
    same = (votes == votes[:, :1]).all(axis=1)
    agreed, common = vote(votes)
    out["agreed"] = agreed
    out["label"] = common

    counts = ConsensusCounts(
        labelers=tuple(labeler.name for labeler in labelers),
        triplets=len(out),
        agreed=int(agreed.sum()),
        disagreed=int((parseable & ~same).sum()),
        with_unparseable=int((~parseable).sum()),
        unparseable_labels=tuple(int((votes[:, k] < 0).sum()) for k in range(len(columns))),
        uncached_requests=uncached,
        agreement_rate=float(agreed.mean()) if len(out) else float("nan"),
    )
    logger.info(
        "Consensus of %s: %d of %d triplets agree (%.1f%%), %d disagree, %d with an unparseable label",
        ", ".join(counts.labelers),
        counts.agreed,
        counts.triplets,
        100 * counts.agreement_rate if len(out) else float("nan"),
        counts.disagreed,
        counts.with_unparseable,
    )
    return out, counts


# Classifier input and the split by note

#: Markers around the drug and the condition in :func:`encoder_text`.
DRUG_MARKERS = ("[DRUG]", "[/DRUG]")
CONDITION_MARKERS = ("[COND]", "[/COND]")


def _find_name(name: str, text: str, excluded: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Find the first case-insensitive whole-word occurrence of ``name`` in ``text`` that does not overlap the span ``excluded``."""
    pattern = re.compile(r"(?<!\w)" + re.escape(name.strip()) + r"(?!\w)", re.IGNORECASE)
    for match in pattern.finditer(text):
        if excluded is None or match.end() <= excluded[0] or match.start() >= excluded[1]:
            return match.span()
    return None


def encoder_text(drug: str, condition: str, evidence: str) -> str:
    """Build the classifier's input: the evidence with the drug and the condition marked.

    The first whole-word occurrence of each name (ignoring case) is wrapped in
    :data:`DRUG_MARKERS` or :data:`CONDITION_MARKERS`. A name that does not
    occur in the evidence is put in front of it, inside its markers, so the
    input always names both.

    Example:
        >>> encoder_text("lisinopril", "cough", "Lisinopril was stopped because of a dry cough.")
        '[DRUG] Lisinopril [/DRUG] was stopped because of a dry [COND] cough [/COND].'
    """
    if not drug.strip() or not condition.strip():
        raise ValueError(f"encoder_text needs a non-empty drug and condition, got {drug!r} and {condition!r}.")
    drug_span = _find_name(drug, evidence)
    condition_span = _find_name(condition, evidence, excluded=drug_span)
    insertions = []
    if drug_span is not None:
        insertions.append((drug_span, DRUG_MARKERS))
    if condition_span is not None:
        insertions.append((condition_span, CONDITION_MARKERS))

    marked = evidence
    for (start, end), (opening, closing) in sorted(insertions, reverse=True):
        marked = f"{marked[:start]}{opening} {marked[start:end]} {closing}{marked[end:]}"
    prefix = []
    if drug_span is None:
        prefix.append(f"{DRUG_MARKERS[0]} {drug.strip()} {DRUG_MARKERS[1]}")
    if condition_span is None:
        prefix.append(f"{CONDITION_MARKERS[0]} {condition.strip()} {CONDITION_MARKERS[1]}")
    return " ".join([*prefix, marked])


def split_by_note(frame: pd.DataFrame, seed: int = 42, train_fraction: float = 0.8) -> pd.DataFrame:
    """Split triplets by note: ``train_fraction`` of the notes to train, the rest in halves.

    This is :func:`~l2d_utils.outcomes.outcome_split` with ``note_id`` as the
    group, so no note contributes to two splits and the assignment depends
    only on the set of note ids and ``seed``.

    Returns:
        A copy of ``frame`` in the same row order with a ``split`` column.

    Raises:
        ValueError: When ``note_id`` is missing or there are fewer than 3 notes.
    """
    if "note_id" not in frame.columns:
        raise ValueError(f"Frame lacks column 'note_id'. It has {list(frame.columns)}.")
    notes = frame["note_id"].nunique()
    if notes < 3:
        raise ValueError(f"Found {notes} notes, but a train/validation/test split by note needs at least 3.")
    groups = frame[["note_id"]].rename(columns={"note_id": "post_id"})
    out = frame.copy()
    out["split"] = outcome_split(groups, seed=seed, train_fraction=train_fraction)["split"].to_numpy()
    return out


# The whole pipeline


@dataclass(frozen=True)
class MimicReport:
    """Counts of one run of :func:`build_outcome_dataset`, with the paper's numbers in parentheses.

    Attributes:
        notes_read: Notes with text in the file or frame (MIMIC-IV-Note 2.2 has
            331,794 discharge summaries).
        notes_sampled: Notes sent to extraction (2,000).
        chunks: Extraction inputs, more than ``notes_sampled`` when notes were split.
        extraction_requests: Extraction requests including retries, cached or not.
        extraction_calls: Extraction requests sent to the model in this run.
        malformed_replies: Extraction replies that failed validation and were retried.
        failed_extractions: Chunks whose retry also failed, skipped.
        ungrounded_triplets: Triplets dropped because their evidence is not text of the note.
        duplicate_triplets: Repeated triplets of one note, dropped.
        candidate_triplets: Triplets sent to the labelers (3,321).
        labelers: ``provider/model`` of each labeler.
        labeling_calls: Labeling requests sent to the models in this run.
        unparseable_labels: Unparseable labels per labeler, counted as disagreement.
        agreed_triplets: Triplets kept (2,782).
        agreement_rate: ``agreed_triplets / candidate_triplets`` (0.838).
        extractor_agreement: Share of kept triplets whose consensus label equals the extraction's outcome.
        split_triplets: Triplets per split (train 2,225, validation 278, test 279).
        split_notes: Notes per split.
    """

    notes_read: int
    notes_sampled: int
    chunks: int
    extraction_requests: int
    extraction_calls: int
    malformed_replies: int
    failed_extractions: int
    ungrounded_triplets: int
    duplicate_triplets: int
    candidate_triplets: int
    labelers: tuple[str, ...]
    labeling_calls: int
    unparseable_labels: tuple[int, ...]
    agreed_triplets: int
    agreement_rate: float
    extractor_agreement: float
    split_triplets: dict[str, int] = field(default_factory=dict)
    split_notes: dict[str, int] = field(default_factory=dict)

    def as_series(self) -> pd.Series:
        """Return the counts as a Series for display, one row per field."""
        return pd.Series(asdict(self), dtype=object)


@dataclass(frozen=True)
class OutcomeDataset:
    """Result of :func:`build_outcome_dataset`.

    Attributes:
        triplets: The consensus triplets, one row each, with ``note_id``,
            ``subject_id``, ``hadm_id``, ``drug``, ``condition``, ``evidence``,
            ``extracted_outcome``, ``text`` (from :func:`encoder_text`),
            ``label`` (index into :data:`~l2d_utils.outcomes.OUTCOME_CLASSES`) and ``split``.
            Contains note text: never publish it.
        candidates: Every extracted triplet with each labeler's label, ``agreed`` and ``label``.
        report: The counts.
    """

    triplets: pd.DataFrame
    candidates: pd.DataFrame
    report: MimicReport


#: Columns of :attr:`OutcomeDataset.triplets`.
DATASET_COLUMNS = ("note_id", "subject_id", "hadm_id", "drug", "condition", "evidence", "extracted_outcome", "text", "label", "split")


def build_outcome_dataset(
    notes: str | Path | pd.DataFrame,
    extractor: TextGenerator,
    labelers: Sequence[TextGenerator],
    *,
    n_notes: int | None = PAPER_NOTES,
    seed: int = 42,
    split_seed: int = 42,
    max_chunk_chars: int | None = None,
    require_grounded_evidence: bool = True,
    extraction_prompt: ChatPrompt = EXTRACTION_PROMPT,
    labeling_prompt: ChatPrompt = LABELING_PROMPT,
) -> OutcomeDataset:
    """Sample notes, extract triplets, keep those the labelers agree on, and split by note.

    Args:
        notes: Path of ``discharge.csv.gz`` or its folder, read with
            :func:`read_discharge_notes`, or a frame of notes, sampled with
            :func:`sample_notes`. Both give the same sample.
        extractor: Extraction model.
        labelers: Two or more labeling models, different from each other.
        n_notes: Notes to sample, or ``None`` for all.
        seed: Seed of the note sample. The paper does not say how it drew its notes.
        split_seed: Seed of the split by note (the paper: 42).
        max_chunk_chars: Split notes longer than this (see :func:`split_note`), or ``None`` to send whole notes.
        require_grounded_evidence: Drop triplets whose evidence is not text of the note.
        extraction_prompt: Extraction prompt.
        labeling_prompt: Labeling prompt.

    Raises:
        FileNotFoundError: When the notes file is not found.
        ValueError: When the notes are invalid (see :func:`read_discharge_notes`),
            or when fewer than 3 notes have consensus triplets.
        CacheMissError: When a replay-only cache lacks a reply.
        LLMRequestError: When a request failed permanently. Rerunning resumes from the cache.
    """
    _check_labelers(labelers)
    if isinstance(notes, pd.DataFrame):
        sample = sample_notes(notes, n_notes, seed)
    else:
        sample = read_discharge_notes(notes, n_notes, seed)
    notes_read = int(sample.attrs["notes_read"])

    candidates, extraction = extract_triplets(sample, extractor, extraction_prompt, max_chunk_chars, require_grounded_evidence)
    labeled, consensus = consensus_labels(candidates, labelers, labeling_prompt)

    agreed = labeled[labeled["agreed"]].copy()
    agreed["text"] = [encoder_text(*values) for values in zip(agreed["drug"], agreed["condition"], agreed["evidence"])]
    agreed = split_by_note(agreed, seed=split_seed)
    triplets = agreed[list(DATASET_COLUMNS)].reset_index(drop=True)

    extracted_labels = triplets["extracted_outcome"].map(OUTCOME_CLASSES.index)
    report = MimicReport(
        notes_read=notes_read,
        notes_sampled=len(sample),
        chunks=extraction.chunks,
        extraction_requests=extraction.requests,
        extraction_calls=extraction.uncached_requests,
        malformed_replies=extraction.malformed_replies,
        failed_extractions=extraction.failed_chunks,
        ungrounded_triplets=extraction.ungrounded_triplets,
        duplicate_triplets=extraction.duplicate_triplets,
        candidate_triplets=consensus.triplets,
        labelers=consensus.labelers,
        labeling_calls=consensus.uncached_requests,
        unparseable_labels=consensus.unparseable_labels,
        agreed_triplets=consensus.agreed,
        agreement_rate=consensus.agreement_rate,
        extractor_agreement=float((extracted_labels == triplets["label"]).mean()),
        split_triplets={name: int((triplets["split"] == name).sum()) for name in SPLITS},
        split_notes={name: int(triplets.loc[triplets["split"] == name, "note_id"].nunique()) for name in SPLITS},
    )
    logger.info(
        "MIMIC outcome data: %d notes, %d candidate triplets, %d kept (%.1f%% agreement), split %s",
        report.notes_sampled,
        report.candidate_triplets,
        report.agreed_triplets,
        100 * report.agreement_rate,
        report.split_triplets,
    )
    return OutcomeDataset(triplets=triplets, candidates=labeled, report=report)
