"""The deferral model's 18 input features: 5 from BERT's probabilities, 13 from the text.

The paper (arXiv:2604.13285, section 3.2) names confidence, entropy and margin,
two length features, and ADE keyword groups for causal language, severity
terms and common ADE terminology, and counts "18 features (5 uncertainty + 13
text)" without listing the rest. This module completes the set and documents
every feature in :data:`FEATURES`:

* Uncertainty (5): the three named ones plus BERT's probability of each class.
  For two classes that is ``p_negative`` and ``p_positive``.
* Text (13): the two length features, the three named keyword groups, and
  eight more chosen for this book (marked ``added`` in :data:`FEATURES`).
  Hedging and negation come from the paper's examples, which blame implicit
  negation and hedged language for BioBERT's errors. The others are outcome
  and drug-exposure wording, case-report wording, a leading section label
  such as ``METHODS:``, a digit, and an abbreviation.

With two classes several uncertainty features are exact linear functions of
each other (``margin = 2 * confidence - 1`` and ``p_negative = 1 - p_positive``),
so their separate coefficients cannot be read one by one.
:data:`NON_REDUNDANT_FEATURES` drops ``margin`` and ``p_negative``; see
:func:`linear_redundancy`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Feature:
    """One deferral feature.

    Attributes:
        name: Column name.
        group: ``uncertainty`` or ``text``.
        description: What the value means, with its unit or range.
        source: ``paper`` if the paper names it, ``added`` if this book adds it.
    """

    name: str
    group: str
    description: str
    source: str


def _keyword_pattern(terms: Sequence[str]) -> re.Pattern[str]:
    """Compile a case-insensitive pattern that matches any term as whole words."""
    alternatives = "|".join(re.escape(term).replace(r"\ ", r"\s+") for term in terms)
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


#: Keyword groups of the binary text features: name -> (terms, source).
KEYWORD_GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    "has_causal": (("induced", "caused by", "due to", "after", "following", "associated with", "secondary to"), "paper"),
    "has_severity": (("severe", "fatal", "life-threatening", "serious", "death"), "paper"),
    "has_ade_term": (("toxicity", "reaction", "syndrome", "adverse", "side effect", "side effects", "hypersensitivity"), "paper"),
    "has_hedging": (("may", "might", "possibly", "possible", "probably", "probable", "suspected", "likely", "suggest", "suggests", "could"), "added"),
    "has_negation": (("no", "not", "without", "denied", "absence", "negative", "neither", "nor"), "added"),
    "has_outcome": (("discontinued", "discontinuation", "withdrawn", "withdrawal", "improved", "resolved", "recovered", "intolerance"), "added"),
    "has_drug_exposure": (("treated with", "treatment with", "therapy", "administered", "administration", "received", "dose", "doses"), "added"),
    "has_case_report": (("patient", "patients", "case", "year-old", "woman", "man", "boy", "girl"), "added"),
}
_PATTERNS = {name: _keyword_pattern(terms) for name, (terms, _) in KEYWORD_GROUPS.items()}
_SECTION_LABEL = re.compile(r"^\s*[A-Z][A-Z ]{2,}:")
_DIGIT = re.compile(r"\d")
_ABBREVIATION = re.compile(r"\b[A-Z]{2,}[A-Z0-9-]*\b")

FEATURES: tuple[Feature, ...] = (
    Feature("confidence", "uncertainty", "max_k p_k, BERT's probability of its predicted class (0 to 1)", "paper"),
    Feature("entropy", "uncertainty", "-sum_k p_k log p_k in nats (0 to log K)", "paper"),
    Feature("margin", "uncertainty", "difference between the two largest probabilities (0 to 1)", "paper"),
    Feature("p_negative", "uncertainty", "BERT's probability of class 0, no ADE (0 to 1)", "added"),
    Feature("p_positive", "uncertainty", "BERT's probability of class 1, ADE (0 to 1)", "added"),
    Feature("log_chars", "text", "log(1 + number of characters)", "paper"),
    Feature("log_words", "text", "log(1 + number of whitespace-separated words)", "paper"),
    *(
        Feature(name, "text", "1 if the sentence contains any of: " + ", ".join(terms), source)
        for name, (terms, source) in KEYWORD_GROUPS.items()
    ),
    Feature("has_section_label", "text", "1 if the sentence starts with an upper-case label and colon, e.g. 'METHODS:'", "added"),
    Feature("has_digit", "text", "1 if the sentence contains a digit (doses, ages, lab values)", "added"),
    Feature("has_abbreviation", "text", "1 if the sentence contains an upper-case abbreviation of 2+ letters, e.g. 'ALT'", "added"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
UNCERTAINTY_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group == "uncertainty")
TEXT_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.group == "text")
#: Features left after dropping the exact linear duplicates of the two-class case.
NON_REDUNDANT_FEATURES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in ("margin", "p_negative"))


def probability_columns(num_classes: int, class_names: Sequence[str] | None = None) -> list[str]:
    """Name the per-class probability columns of the uncertainty features.

    Two classes without names give the ADE columns ``p_negative, p_positive``.
    Otherwise each column is ``p_<name>`` in lower case, with ``class<k>`` as
    the name of class ``k`` when no names are given.

    Raises:
        ValueError: When ``num_classes < 2``, or the names do not match it.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be at least 2.")
    if class_names is None:
        if num_classes == 2:
            return ["p_negative", "p_positive"]
        class_names = [f"class{k}" for k in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names {list(class_names)} for {num_classes} classes; give one name per class.")
    columns = ["p_" + re.sub(r"\W+", "_", str(name).strip().lower()) for name in class_names]
    if len(set(columns)) != len(columns):
        raise ValueError(f"Class names {list(class_names)} give repeated columns {columns}; use distinct names.")
    return columns


def uncertainty_features(probabilities: np.ndarray, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Compute the uncertainty features from BERT's softmax output.

    Args:
        probabilities: Shape ``(N, K)`` with ``K >= 2``, rows summing to 1.
        class_names: Names of the ``K`` classes, for the probability columns
            (see :func:`probability_columns`).

    Returns:
        Frame with columns ``confidence, entropy, margin`` and one probability
        column per class; for two classes without names, ``p_negative, p_positive``.
        Entropy is in nats, margin is the top probability minus the second.

    Raises:
        ValueError: When the array is not ``(N, K)`` or its rows do not sum to 1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (N, K) with K >= 2 classes; got {probabilities.shape}.")
    if probabilities.size and (probabilities.min() < 0.0 or probabilities.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1]; pass softmax outputs, not logits.")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("Each row of probabilities must sum to 1; pass softmax outputs, not logits.")
    columns = probability_columns(probabilities.shape[1], class_names)
    ordered = np.sort(probabilities, axis=1)[:, ::-1]
    clipped = np.clip(probabilities, 1e-12, 1.0)
    frame = pd.DataFrame(
        {
            "confidence": ordered[:, 0],
            "entropy": -(probabilities * np.log(clipped)).sum(axis=1),
            "margin": ordered[:, 0] - ordered[:, 1],
        }
    )
    for index, column in enumerate(columns):
        frame[column] = probabilities[:, index]
    return frame


def text_features(texts: Sequence[str]) -> pd.DataFrame:
    """Compute the 13 text features.

    Args:
        texts: Sentences, length N.

    Returns:
        Frame with the columns of :data:`TEXT_FEATURES`, floats.
    """
    texts = list(texts)
    columns: dict[str, Callable[[str], float]] = {
        "log_chars": lambda text: float(np.log1p(len(text))),
        "log_words": lambda text: float(np.log1p(len(text.split()))),
        **{name: (lambda text, pattern=pattern: float(bool(pattern.search(text)))) for name, pattern in _PATTERNS.items()},
        "has_section_label": lambda text: float(bool(_SECTION_LABEL.match(text))),
        "has_digit": lambda text: float(bool(_DIGIT.search(text))),
        "has_abbreviation": lambda text: float(bool(_ABBREVIATION.search(text))),
    }
    frame = pd.DataFrame({name: [compute(text) for text in texts] for name, compute in columns.items()})
    return frame[list(TEXT_FEATURES)]


def feature_names(num_classes: int = 2, class_names: Sequence[str] | None = None) -> list[str]:
    """Return the deferral feature columns for ``num_classes`` classes, in model order.

    For two classes without names this is :data:`FEATURE_NAMES`, the paper's 18.
    """
    return ["confidence", "entropy", "margin", *probability_columns(num_classes, class_names), *TEXT_FEATURES]


def deferral_features(texts: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Compute the uncertainty and text features, in the order of :func:`feature_names`.

    Args:
        texts: Sentences, length N.
        probabilities: BERT softmax output, shape ``(N, K)``.
        class_names: Names of the ``K`` classes (see :func:`probability_columns`).

    Returns:
        Frame of shape ``(N, 16 + K)``: the 18 columns of :data:`FEATURE_NAMES` for two classes.
    """
    texts = list(texts)
    if len(texts) != len(probabilities):
        raise ValueError(f"{len(texts)} texts but {len(probabilities)} probability rows; they must match.")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    frame = pd.concat([uncertainty_features(probabilities, class_names), text_features(texts)], axis=1)
    num_classes = probabilities.shape[1] if probabilities.ndim == 2 else 2
    return frame[feature_names(num_classes, class_names)]


def feature_table() -> pd.DataFrame:
    """Return :data:`FEATURES` as a table for the book."""
    return pd.DataFrame([vars(feature) for feature in FEATURES])


def linear_redundancy(features: pd.DataFrame, columns: Sequence[str] = UNCERTAINTY_FEATURES) -> pd.DataFrame:
    """Show which standardized columns are exact linear functions of others.

    For each column, fit it by least squares on the other listed columns
    (plus an intercept) and report the R^2. An R^2 of 1 means the column adds
    nothing once the others are known, so its logistic-regression coefficient
    is not identified by the data; only the L2 penalty decides how the weight
    is shared.

    Returns:
        Frame with ``feature, r_squared_from_others`` and the matrix ``rank`` of
        the listed columns (one value, repeated) beside their count.
    """
    values = features[list(columns)].to_numpy(dtype=np.float64)
    standardized = (values - values.mean(axis=0)) / np.where(values.std(axis=0) > 0, values.std(axis=0), 1.0)
    rows = []
    for index, name in enumerate(columns):
        others = np.delete(standardized, index, axis=1)
        design = np.column_stack([np.ones(len(others)), others])
        coefficients, *_ = np.linalg.lstsq(design, standardized[:, index], rcond=None)
        residual = standardized[:, index] - design @ coefficients
        total = float(np.sum(standardized[:, index] ** 2))
        rows.append({"feature": name, "r_squared_from_others": 1.0 - float(residual @ residual) / total if total else float("nan")})
    table = pd.DataFrame(rows)
    # Probabilities from a float32 softmax make exact identities hold only to
    # about 1e-7, so singular values below 1e-6 per unit column norm count as zero.
    table["rank"] = int(np.linalg.matrix_rank(standardized, tol=1e-6 * np.sqrt(len(standardized))))
    table["columns"] = len(columns)
    return table
