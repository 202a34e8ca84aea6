"""Map a chat model's free-text reply to a class index.

Models asked to "reply with only 0 or 1" often add words, punctuation or
markdown. :func:`parse_label` accepts those replies when they name exactly one
class and returns :data:`~l2d_utils.llm.base.UNPARSEABLE` otherwise, so that an
ambiguous reply is counted as a failure instead of being mapped to a class.
"""

from __future__ import annotations

import re
from typing import Sequence

from l2d_utils.llm.base import UNPARSEABLE

# Reasoning models served through OpenAI-compatible servers (for example
# DeepSeek-R1 or Qwen3 under vLLM or Ollama) may put their reasoning before the
# answer inside <think> tags. That text often mentions every class.
_THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)

# A negation before an answer or class name in the same clause ("does not
# contain an ADE", "not 1") makes the whole reply unparseable.
_NEGATION = re.compile(r"\b(?:not|no|never|without|neither|nor|none|cannot)\b|n't\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.;:!?,\n]")


def _token_pattern(token: str) -> re.Pattern[str]:
    """Compile a pattern that finds ``token`` as a whole word, case-insensitively.

    A token that starts or ends with a digit must not be part of a longer
    number either, so the answer ``1`` does not match ``10 mg``, ``1.5`` or ``0,1``.
    """
    before = r"(?<!\w)"
    after = r"(?!\w)"
    if token[0].isdigit():
        before += r"(?<!\d[.,])"
    if token[-1].isdigit():
        after += r"(?![.,]\d)"
    return re.compile(before + re.escape(token) + after, re.IGNORECASE)


def _is_negated(reply: str, start: int) -> bool:
    """Return True when the clause before ``start`` contains a negation word."""
    clause_start = 0
    for match in _CLAUSE_END.finditer(reply, 0, start):
        clause_start = match.end()
    return _NEGATION.search(reply, clause_start, start) is not None


def parse_label(reply: str | None, answers: Sequence[str], class_names: Sequence[str] | None = None) -> int:
    """Parse a model reply into a class index, or return ``UNPARSEABLE`` (-1).

    The reply counts as class ``k`` when it contains ``answers[k]`` or
    ``class_names[k]`` as a whole word or phrase (case-insensitive), and no
    other class. Text around the match is ignored: whitespace, punctuation, a
    prefix such as ``Label:``, markdown such as ``**1**``, or a whole sentence.
    A ``<think>…</think>`` block is removed first.

    These replies return ``UNPARSEABLE``:

    * a reply that names no class, or that is empty or ``None``;
    * a reply that names two different classes, such as ``0 or 1``;
    * a reply that mentions a class after a negation word in the same clause,
      such as ``does not contain an ADE``.

    A digit answer must not be part of a longer number, so ``10 mg`` or ``1.5``
    is not the answer ``1``. Where names overlap, the longest match wins and the
    text it covers is not matched again, so ``no ADE`` counts only for the class
    ``no ADE`` and not also for ``ADE``.

    Args:
        reply: The model's text.
        answers: Allowed answers in class order, e.g. ``("0", "1")``.
        class_names: Readable class names in the same order, e.g. ``("no ADE", "ADE")``.

    Returns:
        The class index, or ``UNPARSEABLE``.

    Raises:
        ValueError: If ``answers`` is empty, contains an empty string, or has a
            different length than ``class_names``.

    Examples:
        >>> answers, names = ("0", "1"), ("no ADE", "ADE")
        >>> parse_label(" **1**\\n", answers, names)
        1
        >>> parse_label("Label: 0.", answers, names)
        0
        >>> parse_label("This sentence contains an ADE.", answers, names)
        1
        >>> parse_label("No ADE here.", answers, names)
        0
        >>> parse_label("0 or 1", answers, names)
        -1
        >>> parse_label("The dose was 10 mg.", answers, names)
        -1
        >>> parse_label("It does not describe an ADE.", answers, names)
        -1
    """
    if not answers or any(not answer.strip() for answer in answers):
        raise ValueError(f"answers must be non-empty strings, got {tuple(answers)!r}.")
    if class_names is not None and len(class_names) != len(answers):
        raise ValueError(f"class_names {tuple(class_names)!r} must have one name per answer in {tuple(answers)!r}.")
    if not reply:
        return UNPARSEABLE

    text = _THINK_BLOCK.sub(" ", reply)
    candidates: list[tuple[int, int, int]] = []  # (start, end, class index)
    for class_index, answer in enumerate(answers):
        for token in (answer, class_names[class_index] if class_names is not None else None):
            if token is None or not token.strip():
                continue
            for match in _token_pattern(token.strip()).finditer(text):
                candidates.append((match.start(), match.end(), class_index))

    # Longest match first, so that "no ADE" claims its span before "ADE" can.
    candidates.sort(key=lambda candidate: (-(candidate[1] - candidate[0]), candidate[0]))
    claimed: list[tuple[int, int, int]] = []
    for start, end, class_index in candidates:
        if any(start < claimed_end and claimed_start < end for claimed_start, claimed_end, _ in claimed):
            continue
        claimed.append((start, end, class_index))

    # Blank out the matched names before looking for negations, so that the
    # "no" of "no ADE" does not negate a later "0".
    masked = list(text)
    for start, end, _ in claimed:
        masked[start:end] = " " * (end - start)
    masked_text = "".join(masked)
    if any(_is_negated(masked_text, start) for start, _, _ in claimed):
        return UNPARSEABLE

    classes = {class_index for _, _, class_index in claimed}
    if len(classes) != 1:
        return UNPARSEABLE
    return classes.pop()
