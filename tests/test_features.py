"""Specification of l2d_utils.features: the 18 inputs of the deferral model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from l2d_utils.features import (
    FEATURE_NAMES,
    NON_REDUNDANT_FEATURES,
    TEXT_FEATURES,
    UNCERTAINTY_FEATURES,
    deferral_features,
    feature_table,
    linear_redundancy,
    text_features,
    uncertainty_features,
)


def random_binary_probabilities(rows: int, seed: int = 0) -> np.ndarray:
    p_positive = np.random.default_rng(seed).uniform(size=rows)
    return np.column_stack([1.0 - p_positive, p_positive])


def text_feature(text: str, name: str) -> float:
    return float(text_features([text]).loc[0, name])


# Feature names


def test_feature_count() -> None:
    assert len(FEATURE_NAMES) == 18
    assert len(set(FEATURE_NAMES)) == 18


def test_uncertainty_feature_names() -> None:
    assert UNCERTAINTY_FEATURES == ("confidence", "entropy", "margin", "p_negative", "p_positive")


def test_text_feature_names() -> None:
    assert TEXT_FEATURES == (
        "log_chars",
        "log_words",
        "has_causal",
        "has_severity",
        "has_ade_term",
        "has_hedging",
        "has_negation",
        "has_outcome",
        "has_drug_exposure",
        "has_case_report",
        "has_section_label",
        "has_digit",
        "has_abbreviation",
    )


def test_feature_order_uncertainty_first() -> None:
    assert FEATURE_NAMES == UNCERTAINTY_FEATURES + TEXT_FEATURES


def test_non_redundant_features() -> None:
    assert NON_REDUNDANT_FEATURES == tuple(name for name in FEATURE_NAMES if name not in ("margin", "p_negative"))


def test_feature_table_sources() -> None:
    table = feature_table()

    assert table["name"].tolist() == list(FEATURE_NAMES)
    assert table["group"].value_counts().to_dict() == {"text": 13, "uncertainty": 5}
    assert set(table.loc[table["source"] == "paper", "name"]) == {
        "confidence",
        "entropy",
        "margin",
        "log_chars",
        "log_words",
        "has_causal",
        "has_severity",
        "has_ade_term",
    }
    assert set(table["source"]) == {"paper", "added"}


# Uncertainty features on hand-computed rows


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ([0.5, 0.5], {"confidence": 0.5, "entropy": math.log(2), "margin": 0.0, "p_negative": 0.5, "p_positive": 0.5}),
        ([1.0, 0.0], {"confidence": 1.0, "entropy": 0.0, "margin": 1.0, "p_negative": 1.0, "p_positive": 0.0}),
        ([0.0, 1.0], {"confidence": 1.0, "entropy": 0.0, "margin": 1.0, "p_negative": 0.0, "p_positive": 1.0}),
        (
            [0.2, 0.8],
            {
                "confidence": 0.8,
                "entropy": -(0.2 * math.log(0.2) + 0.8 * math.log(0.8)),  # 0.5004 nats
                "margin": 0.6,
                "p_negative": 0.2,
                "p_positive": 0.8,
            },
        ),
        (
            [0.9, 0.1],
            {
                "confidence": 0.9,
                "entropy": -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)),  # 0.3251 nats
                "margin": 0.8,
                "p_negative": 0.9,
                "p_positive": 0.1,
            },
        ),
    ],
)
def test_uncertainty_values(row: list[float], expected: dict[str, float]) -> None:
    features = uncertainty_features(np.array([row]))

    assert list(features.columns) == list(UNCERTAINTY_FEATURES)
    for name, value in expected.items():
        assert features.loc[0, name] == pytest.approx(value, abs=1e-12), name


def test_entropy_in_nats() -> None:
    features = uncertainty_features(np.array([[0.5, 0.5]]))

    assert features.loc[0, "entropy"] == pytest.approx(0.6931471805599453)


def test_margin_is_linear_in_confidence() -> None:
    features = uncertainty_features(random_binary_probabilities(1000))

    np.testing.assert_allclose(features["margin"], 2 * features["confidence"] - 1, rtol=0, atol=1e-12)


def test_uncertainty_accepts_lists() -> None:
    features = uncertainty_features([[0.25, 0.75], [0.6, 0.4]])

    assert features["confidence"].tolist() == pytest.approx([0.75, 0.6])


def test_uncertainty_tolerates_float32_rounding() -> None:
    probabilities = np.array([[0.3, 0.7 + 5e-5]], dtype=np.float32)

    features = uncertainty_features(probabilities)

    assert features.loc[0, "p_positive"] == pytest.approx(0.70005, abs=1e-6)


@pytest.mark.parametrize(
    ("probabilities", "fragment"),
    [
        (np.array([0.2, 0.8]), "shape"),
        (np.array([[1.0], [1.0]]), "shape"),  # one class
        (np.ones((2, 2, 2)) / 2, "shape"),
        (np.array([[0.5, 0.6]]), "sum to 1"),
        (np.array([[0.2, 0.8], [0.3, 0.3]]), "sum to 1"),
        (np.array([[2.0, -1.5]]), r"lie in \[0, 1\]"),  # logits
        (np.array([[1.5, -0.5]]), r"lie in \[0, 1\]"),  # sums to 1 but is no distribution
        (np.array([[np.nan, 1.0]]), "sum to 1"),
    ],
)
def test_uncertainty_rejects_bad_input(probabilities: np.ndarray, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        uncertainty_features(probabilities)


# Text features


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("Drug-induced hepatitis.", "has_causal", 1.0),
        ("INDUCED hepatitis.", "has_causal", 1.0),
        ("The inducedx marker was measured.", "has_causal", 0.0),
        ("Hepatitis caused by isoniazid.", "has_causal", 1.0),
        ("Hepatitis caused   by isoniazid.", "has_causal", 1.0),
        ("Hepatitis caused\nby isoniazid.", "has_causal", 1.0),
        ("Hepatitis causedby isoniazid.", "has_causal", 0.0),
        ("Rash secondary to penicillin.", "has_causal", 1.0),
        ("Afterwards the rash faded.", "has_causal", 0.0),
        ("A fatal outcome.", "has_severity", 1.0),
        ("A life-threatening rash.", "has_severity", 1.0),
        ("A seriously ill child.", "has_severity", 0.0),
        ("Side   effects were mild.", "has_ade_term", 1.0),
        ("Stevens-Johnson syndrome.", "has_ade_term", 1.0),
        ("This MAY be related.", "has_hedging", 1.0),
        ("Seen at the Mayo Clinic.", "has_hedging", 0.0),
        ("There was no rash.", "has_negation", 1.0),
        ("Nothing notable was seen.", "has_negation", 0.0),
        ("The drug was withdrawn.", "has_outcome", 1.0),
        ("She was treated  with steroids.", "has_drug_exposure", 1.0),
        ("A 45-year-old woman.", "has_case_report", 1.0),
        ("Two PATIENTS recovered.", "has_case_report", 1.0),
        ("A manuscript was submitted.", "has_case_report", 0.0),
    ],
)
def test_keyword_features(text: str, name: str, expected: float) -> None:
    assert text_feature(text, name) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("METHODS: We reviewed charts.", 1.0),
        ("  RESULTS AND CONCLUSIONS: None.", 1.0),
        ("Methods: We reviewed charts.", 0.0),
        ("AB: Too short a label.", 0.0),
        ("The METHODS: section.", 0.0),
    ],
)
def test_section_label(text: str, expected: float) -> None:
    assert text_feature(text, "has_section_label") == expected


@pytest.mark.parametrize(("text", "expected"), [("A dose of 5 mg.", 1.0), ("No numbers here.", 0.0)])
def test_digit(text: str, expected: float) -> None:
    assert text_feature(text, "has_digit") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Raised ALT levels.", 1.0),
        ("An HIV-1 infection.", 1.0),
        ("Raised alt levels.", 0.0),
        ("Serum Ca was low.", 0.0),
        ("A rash.", 0.0),
    ],
)
def test_abbreviation(text: str, expected: float) -> None:
    assert text_feature(text, "has_abbreviation") == expected


def test_length_features() -> None:
    features = text_features(["a  b\tc"])

    assert features.loc[0, "log_chars"] == pytest.approx(math.log1p(6))
    assert features.loc[0, "log_words"] == pytest.approx(math.log1p(3))


def test_text_features_columns() -> None:
    features = text_features(["One.", "Two."])

    assert list(features.columns) == list(TEXT_FEATURES)
    assert len(features) == 2
    assert (features.dtypes == np.float64).all()


# All 18 features


def test_deferral_features_shape() -> None:
    features = deferral_features(["Drug-induced rash.", "No rash."], np.array([[0.1, 0.9], [0.7, 0.3]]))

    assert features.shape == (2, 18)
    assert list(features.columns) == list(FEATURE_NAMES)
    assert features["has_causal"].tolist() == [1.0, 0.0]
    assert features["confidence"].tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize("texts", [["One."], ["One.", "Two.", "Three."]])
def test_deferral_features_length_mismatch(texts: list[str]) -> None:
    probabilities = np.array([[0.1, 0.9], [0.7, 0.3]])

    with pytest.raises(ValueError, match=f"{len(texts)} texts but 2 probability rows"):
        deferral_features(texts, probabilities)


# Linear redundancy of the two-class uncertainty features


@pytest.fixture(scope="module")
def redundancy() -> pd.DataFrame:
    features = uncertainty_features(random_binary_probabilities(500))
    return linear_redundancy(features).set_index("feature")


@pytest.mark.parametrize("name", ["margin", "p_negative", "confidence", "p_positive"])
def test_redundant_columns(redundancy: pd.DataFrame, name: str) -> None:
    assert redundancy.loc[name, "r_squared_from_others"] == pytest.approx(1.0, abs=1e-9)


def test_entropy_not_linear(redundancy: pd.DataFrame) -> None:
    assert redundancy.loc["entropy", "r_squared_from_others"] < 0.99


def test_redundancy_rank(redundancy: pd.DataFrame) -> None:
    assert (redundancy["rank"] == 3).all()
    assert (redundancy["columns"] == 5).all()


def test_non_redundant_full_rank() -> None:
    probabilities = random_binary_probabilities(500)
    features = uncertainty_features(probabilities)
    identified = [name for name in UNCERTAINTY_FEATURES if name in NON_REDUNDANT_FEATURES]

    table = linear_redundancy(features, identified)

    assert (table["rank"] == len(identified)).all()
    assert (table["r_squared_from_others"] < 0.99).all()


# More than two classes (the treatment-outcome task)

OUTCOME_NAMES = ("NEUTRAL", "ADVERSE", "EFFECTIVE")


def test_three_class_uncertainty_columns() -> None:
    probabilities = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    frame = uncertainty_features(probabilities, OUTCOME_NAMES)

    assert list(frame.columns) == ["confidence", "entropy", "margin", "p_neutral", "p_adverse", "p_effective"]
    assert frame["confidence"].tolist() == pytest.approx([0.5, 0.9])
    assert frame["margin"].tolist() == pytest.approx([0.2, 0.85])
    assert frame.loc[0, "entropy"] == pytest.approx(-(0.2 * np.log(0.2) + 0.5 * np.log(0.5) + 0.3 * np.log(0.3)))


def test_uniform_three_class_entropy_is_log_three() -> None:
    frame = uncertainty_features(np.full((1, 3), 1 / 3), OUTCOME_NAMES)

    assert frame.loc[0, "entropy"] == pytest.approx(np.log(3))
    assert frame.loc[0, "margin"] == pytest.approx(0.0)


def test_three_class_deferral_features_order() -> None:
    from l2d_utils.features import TEXT_FEATURES, feature_names

    frame = deferral_features(["Sertraline helped a lot.", "No change."], np.array([[0.1, 0.1, 0.8], [0.7, 0.2, 0.1]]), OUTCOME_NAMES)

    assert list(frame.columns) == feature_names(3, OUTCOME_NAMES)
    assert frame.shape == (2, 3 + 3 + len(TEXT_FEATURES))


def test_binary_feature_names_unchanged() -> None:
    from l2d_utils.features import feature_names

    assert feature_names() == list(FEATURE_NAMES)


def test_unnamed_classes_get_index_names() -> None:
    from l2d_utils.features import probability_columns

    assert probability_columns(3) == ["p_class0", "p_class1", "p_class2"]


@pytest.mark.parametrize(
    ("num_classes", "names", "match"),
    [(1, None, "at least 2"), (3, ("a", "b"), "one name per class"), (2, ("Yes", "yes"), "distinct names")],
)
def test_probability_columns_rejects_bad_names(num_classes, names, match) -> None:
    from l2d_utils.features import probability_columns

    with pytest.raises(ValueError, match=match):
        probability_columns(num_classes, names)
