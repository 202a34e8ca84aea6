"""Specification of parse_label: which model replies map to which class."""

from __future__ import annotations

import pytest

from l2d_utils.llm.base import UNPARSEABLE
from l2d_utils.llm.parsing import parse_label
from l2d_utils.llm.prompts import ADE_PAPER_PROMPT

ANSWERS = ADE_PAPER_PROMPT.answers  # ("0", "1")
CLASS_NAMES = ADE_PAPER_PROMPT.class_names  # ("no ADE", "ADE")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1", 1),
        ("0", 0),
        (" 1\n", 1),
        ("\t0  ", 0),
        ("1.", 1),
        ("0!", 0),
        ("(1)", 1),
        ('"0"', 0),
        ("**1**", 1),
        ("`0`", 0),
        ("Label: 1", 1),
        ("label:0", 0),
        ("Answer: **1**", 1),
        ("ANSWER - 0.", 0),
        ("The answer is 1.", 1),
        ("<answer>0</answer>", 0),
        ("1 (contains ADE)", 1),
        ("0 (no ADE)", 0),
        ("1\n1", 1),
    ],
)
def test_parse_answer_amid_formatting(reply: str, expected: int) -> None:
    assert parse_label(reply, ANSWERS, CLASS_NAMES) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("ADE", 1),
        ("ade", 1),
        ("No ADE", 0),
        ("no ade.", 0),
        ("This sentence contains an ADE.", 1),
        ("There is no ADE in this sentence.", 0),
        ("There is no ADE, so 0.", 0),
        ("ADE: yes, 1", 1),
    ],
)
def test_parse_class_name_in_sentence(reply: str, expected: int) -> None:
    assert parse_label(reply, ANSWERS, CLASS_NAMES) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "0 or 1",
        "1 ... 0",
        "1, or maybe 0",
        "0-1",
        "ADE? No ADE.",
        "1 (no ADE)",
        "0 because of the ADE",
    ],
)
def test_parse_two_classes_unparseable(reply: str) -> None:
    assert parse_label(reply, ANSWERS, CLASS_NAMES) == UNPARSEABLE


@pytest.mark.parametrize(
    "reply",
    [
        "10 mg",
        "The dose was 100 mg daily.",
        "1.5",
        "0.8",
        "0,1",
        "1st",
        "2",
        "ADEs",
        "ADE1",
    ],
)
def test_parse_digits_inside_words_ignored(reply: str) -> None:
    assert parse_label(reply, ANSWERS, CLASS_NAMES) == UNPARSEABLE


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        None,
        "maybe",
        "I cannot tell.",
        "Yes",
    ],
)
def test_parse_no_class_unparseable(reply: str | None) -> None:
    assert parse_label(reply, ANSWERS, CLASS_NAMES) == UNPARSEABLE


@pytest.mark.parametrize(
    "reply",
    [
        "This sentence does not contain an ADE.",
        "It isn't an ADE",
        "Not 1",
        "There is no evidence of an ADE",
    ],
)
def test_parse_negated_mention_unparseable(reply: str) -> None:
    assert parse_label(reply, ANSWERS, CLASS_NAMES) == UNPARSEABLE


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<think>It could be 0 or 1, but azithromycin caused it.</think>\n1", 1),
        ("<think>\nno ADE? The drug induced it.\n</think>0", 0),
        ("<think>0 or 1, still thinking", UNPARSEABLE),
    ],
)
def test_parse_ignores_think_block(reply: str, expected: int) -> None:
    assert parse_label(reply, ANSWERS, CLASS_NAMES) == expected


def test_parse_without_class_names_ignores_names() -> None:
    assert parse_label("ADE", ANSWERS) == UNPARSEABLE


def test_parse_without_class_names_reads_answers() -> None:
    assert parse_label("Label: 1", ANSWERS) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes.", 0),
        ("no", 1),
        ("Positive", 0),
        ("yes, positive", 0),
        ("yes or no", UNPARSEABLE),
        ("yesterday", UNPARSEABLE),
    ],
)
def test_parse_word_answers(reply: str, expected: int) -> None:
    assert parse_label(reply, ("yes", "no"), ("positive", "negative")) == expected


def test_parse_three_classes() -> None:
    assert parse_label("Class: 2", ("0", "1", "2")) == 2


def test_parse_mismatched_class_names_raises() -> None:
    with pytest.raises(ValueError, match="one name per answer"):
        parse_label("1", ANSWERS, ("ADE",))


def test_parse_empty_answer_raises() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        parse_label("1", ("0", ""))


# The three-class treatment-outcome template


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("2", 2), (" 1.", 1), ("Label: 0", 0), ("EFFECTIVE", 2), ("The outcome is adverse.", 1), ("neutral", 0)],
)
def test_parse_outcome_replies(reply: str, expected: int) -> None:
    from l2d_utils.llm.prompts import OUTCOME_PAPER_PROMPT

    assert parse_label(reply, OUTCOME_PAPER_PROMPT.answers, OUTCOME_PAPER_PROMPT.class_names) == expected


def test_outcome_reply_naming_two_classes_unparseable() -> None:
    from l2d_utils.llm.prompts import OUTCOME_PAPER_PROMPT

    assert parse_label("ADVERSE or EFFECTIVE", OUTCOME_PAPER_PROMPT.answers, OUTCOME_PAPER_PROMPT.class_names) == -1


def test_outcome_template_has_one_example_per_class() -> None:
    from l2d_utils.llm.prompts import OUTCOME_PAPER_PROMPT, TEMPLATES
    from l2d_utils.outcomes import OUTCOME_CLASSES

    assert sorted(answer for _, answer in OUTCOME_PAPER_PROMPT.examples) == ["0", "1", "2"]
    assert OUTCOME_PAPER_PROMPT.class_names == OUTCOME_CLASSES
    assert TEMPLATES["outcome-paper"] is OUTCOME_PAPER_PROMPT
