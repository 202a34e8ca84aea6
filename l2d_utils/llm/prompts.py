"""Versioned few-shot prompt templates.

A :class:`PromptTemplate` renders chat messages: the system text, one user and
assistant turn per few-shot example, then the input as the last user turn.
Its ``name`` and ``version`` are part of every response-cache key, so editing a
template's text without raising its version would be caught by
:func:`PromptTemplate.fingerprint` in the key as well.

The ADE system text follows the paper's description (arXiv:2604.13285, section
4.2): reply 1 for a sentence that contains an adverse drug event, 0 otherwise,
with five examples (two positive, three negative, near the corpus's 29% positive
share). The paper quotes two of its five examples. The other three are
sentences written for this book, so no example comes from ADE Corpus V2
except the one the paper itself quotes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTemplate:
    """A system text, few-shot examples and the allowed answers of one task.

    Attributes:
        name: Stable identifier, e.g. ``ade-paper``.
        version: Raised whenever the text or examples change.
        system: System message.
        examples: ``(input text, answer)`` pairs shown as earlier chat turns.
        answers: Allowed answers in class order: ``answers[k]`` is class ``k``.
        class_names: Readable names of the classes, same order as ``answers``.
    """

    name: str
    version: str
    system: str
    examples: tuple[tuple[str, str], ...]
    answers: tuple[str, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.answers) != len(self.class_names) or len(self.answers) < 2:
            raise ValueError(
                f"Template {self.name!r}: answers {self.answers} and class_names {self.class_names} "
                "must have the same length, at least 2."
            )
        for text, answer in self.examples:
            if answer not in self.answers:
                raise ValueError(f"Template {self.name!r}: example answer {answer!r} is not one of {self.answers}.")

    def prefix_messages(self) -> list[dict[str, str]]:
        """Return the system message and few-shot turns, shared by every input."""
        messages = [{"role": "system", "content": self.system}]
        for text, answer in self.examples:
            messages.append({"role": "user", "content": text})
            messages.append({"role": "assistant", "content": answer})
        return messages

    def messages(self, text: str) -> list[dict[str, str]]:
        """Return the full chat for one input sentence."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"Input text must be a non-empty string, got {text!r}.")
        return [*self.prefix_messages(), {"role": "user", "content": text}]

    def fingerprint(self) -> str:
        """Return a short hash of everything that shapes the prompt."""
        payload = json.dumps([self.name, self.version, self.system, self.examples, self.answers], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


ADE_PAPER_PROMPT = PromptTemplate(
    name="ade-paper",
    version="1",
    system="You classify sentences for adverse drug events. Reply with only 1 (contains ADE) or 0 (no ADE).",
    examples=(
        # Quoted in the paper as a positive example (it is also a corpus sentence).
        ("Intravenous azithromycin-induced ototoxicity.", "1"),
        # Quoted in the paper as a negative example.
        ("Methotrexate is commonly used for rheumatoid arthritis.", "0"),
        # Written for this book.
        ("A 54-year-old man developed acute kidney injury two days after starting high-dose vancomycin.", "1"),
        ("Serum potassium was measured weekly during the first month of treatment.", "0"),
        ("Lithium was continued at the same dose throughout the two years of follow-up.", "0"),
    ),
    answers=("0", "1"),
    class_names=("no ADE", "ADE"),
)

OUTCOME_PAPER_PROMPT = PromptTemplate(
    name="outcome-paper",
    version="1",
    system=(
        "You classify what a text says about the outcome of a drug treatment. Reply with only one digit: "
        "2 (EFFECTIVE: the drug helped the condition it was given for), 1 (ADVERSE: the drug caused harm, "
        "a side effect or a withdrawal symptom), or 0 (NEUTRAL: neither, or no outcome is stated)."
    ),
    # One example per class, as the paper describes. All three are written for this
    # book, so no restricted sentence (PsyTAR, MIMIC-IV) appears in a prompt.
    examples=(
        ("Since starting escitalopram my mood has lifted and I sleep through the night.", "2"),
        ("Metformin was stopped after she developed lactic acidosis.", "1"),
        ("He was started on sertraline 50 mg daily at discharge.", "0"),
    ),
    answers=("0", "1", "2"),
    class_names=("NEUTRAL", "ADVERSE", "EFFECTIVE"),
)

# Two labeler prompts for the consensus check on PsyTAR. When only one local
# model is installed, the two labelers are that model with these two prompts,
# which differ in framing, answer letters and examples. Neither shares an
# example with OUTCOME_PAPER_PROMPT, and every example is written for this book.
OUTCOME_LABELER_PROMPT_A = PromptTemplate(
    name="outcome-labeler-a",
    version="1",
    system=(
        "You are a clinical NLP assistant. Based on the text, classify the treatment outcome into one of three "
        "categories: EFFECTIVE, ADVERSE or NEUTRAL. Reply with the first letter of the category only: "
        "E, A or N."
    ),
    examples=(
        ("The rash cleared within a week of starting the cream.", "E"),
        ("I gained twenty pounds on this medication.", "A"),
        ("My doctor switched me to the extended-release tablets.", "N"),
    ),
    answers=("N", "A", "E"),
    class_names=("NEUTRAL", "ADVERSE", "EFFECTIVE"),
)

OUTCOME_LABELER_PROMPT_B = PromptTemplate(
    name="outcome-labeler-b",
    version="1",
    system=(
        "Read one sentence written by a patient or a clinician about a medicine. Decide what it reports. "
        "B: a benefit, meaning symptoms improved or the medicine worked. "
        "H: harm, meaning a side effect, an adverse reaction or a withdrawal symptom. "
        "X: neither, for example dosing, background, questions or feelings unrelated to the medicine. "
        "Answer with one letter: B, H or X."
    ),
    examples=(
        ("Coming off it gave me brain zaps for two weeks.", "H"),
        ("After a month the panic attacks were far less frequent.", "B"),
        ("I take it every morning with breakfast.", "X"),
    ),
    answers=("X", "H", "B"),
    class_names=("NEUTRAL", "ADVERSE", "EFFECTIVE"),
)

#: Templates by name, for settings files and the command line.
TEMPLATES: dict[str, PromptTemplate] = {
    template.name: template
    for template in (ADE_PAPER_PROMPT, OUTCOME_PAPER_PROMPT, OUTCOME_LABELER_PROMPT_A, OUTCOME_LABELER_PROMPT_B)
}
