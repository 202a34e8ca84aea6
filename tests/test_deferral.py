"""Specification of l2d_utils.deferral and l2d_utils.baselines: when to send an input to the LLM."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedKFold

from l2d_utils.baselines import (
    FIXED_THRESHOLDS,
    PAPER_TABLE1,
    fixed_threshold_deferral,
    oracle_deferral,
    random_deferral_scores,
    results_table,
    with_paper_values,
)
from l2d_utils.deferral import (
    deferral_target,
    logistic_deferral_model,
    out_of_fold_scores,
    standardized_coefficients,
    threshold_sweep,
    tune_threshold,
)
from l2d_utils.metrics import class_f1, score_system

UNPARSEABLE = -1
TABLE_METHODS = ["bert_only", "llm_only", "random", "fixed_0.6", "fixed_0.7", "fixed_0.8", "fixed_0.9", "fixed_0.95", "l2d", "oracle"]


def manual_out_of_fold(features: np.ndarray, target: np.ndarray, n_splits: int, seed: int = 42) -> np.ndarray:
    """The cross-validation loop that out_of_fold_scores is specified to run."""
    scores = np.full(len(target), np.nan)
    for train_index, test_index in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(features, target):
        model = logistic_deferral_model().fit(features[train_index], target[train_index])
        scores[test_index] = model.predict_proba(features[test_index])[:, 1]
    return scores


class MemorizingClassifier(ClassifierMixin, BaseEstimator):
    """Scores 1 for a row it was fitted on and 0 for any other row."""

    def fit(self, features: np.ndarray, target: np.ndarray) -> MemorizingClassifier:
        self.classes_ = np.unique(target)
        self.seen_ = {tuple(row) for row in np.asarray(features)}
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        seen = np.array([tuple(row) in self.seen_ for row in np.asarray(features)], dtype=float)
        return np.column_stack([1.0 - seen, seen])


@pytest.fixture(scope="module")
def error_data() -> tuple[np.ndarray, np.ndarray]:
    """200 inputs with 3 features, where BERT errs more often when feature 0 is high."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3))
    target = (features[:, 0] + rng.normal(scale=0.8, size=200) > 0.8).astype(int)
    return features, target


# deferral_target


def test_deferral_target_marks_errors() -> None:
    target = deferral_target([1, 0, 1, 0], [1, 1, 0, 0])

    assert target.tolist() == [0, 1, 1, 0]


def test_deferral_target_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        deferral_target([1, 0, 1], [1, 0])


# out_of_fold_scores


def test_out_of_fold_shape_and_range(error_data: tuple[np.ndarray, np.ndarray]) -> None:
    features, target = error_data

    scores = out_of_fold_scores(features, target)

    assert scores.shape == (200,)
    assert np.all((scores >= 0.0) & (scores <= 1.0))


def test_out_of_fold_matches_manual_loop(error_data: tuple[np.ndarray, np.ndarray]) -> None:
    features, target = error_data

    scores = out_of_fold_scores(features, target, n_splits=5, seed=42)

    np.testing.assert_allclose(scores, manual_out_of_fold(features, target, n_splits=5), rtol=0, atol=1e-12)


def test_out_of_fold_never_scores_training_row(error_data: tuple[np.ndarray, np.ndarray]) -> None:
    features, target = error_data

    scores = out_of_fold_scores(features, target, model=MemorizingClassifier())

    assert scores.tolist() == [0.0] * 200


def test_out_of_fold_accepts_frame(error_data: tuple[np.ndarray, np.ndarray]) -> None:
    features, target = error_data
    frame = pd.DataFrame(features, columns=["a", "b", "c"])

    np.testing.assert_array_equal(out_of_fold_scores(frame, target), out_of_fold_scores(features, target))


def test_out_of_fold_leaves_model_unfitted(error_data: tuple[np.ndarray, np.ndarray]) -> None:
    features, target = error_data
    model = logistic_deferral_model()

    out_of_fold_scores(features, target, model=model)

    assert not hasattr(model[-1], "coef_")


def test_out_of_fold_seed_changes_folds(error_data: tuple[np.ndarray, np.ndarray]) -> None:
    features, target = error_data

    assert not np.allclose(out_of_fold_scores(features, target, seed=1), out_of_fold_scores(features, target, seed=2))


@pytest.mark.parametrize("wrong", [3, 47])
def test_out_of_fold_lowers_folds(caplog: pytest.LogCaptureFixture, wrong: int) -> None:
    """With 3 inputs in the smaller class (3 errors, or 3 correct predictions), 3 folds are used."""
    features = np.random.default_rng(1).normal(size=(50, 2))
    target = np.array([1] * wrong + [0] * (50 - wrong))

    with caplog.at_level(logging.WARNING, logger="l2d_utils.deferral"):
        scores = out_of_fold_scores(features, target, n_splits=5)

    assert "using 3 folds instead of 5" in caplog.text
    np.testing.assert_allclose(scores, manual_out_of_fold(features, target, n_splits=3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("target", [[0] * 20, [1] + [0] * 19, [1] * 20, [0] + [1] * 19])
def test_out_of_fold_rejects_too_few_errors(target: list[int]) -> None:
    features = np.random.default_rng(2).normal(size=(20, 2))

    with pytest.raises(ValueError, match="at least 2 wrong and 2 right inputs"):
        out_of_fold_scores(features, target)


@pytest.mark.parametrize(
    ("features", "target"),
    [
        (np.zeros(10), [0, 1] * 5),
        (np.zeros((9, 2)), [0, 1] * 5),
        (np.zeros((10, 2, 1)), [0, 1] * 5),
    ],
)
def test_out_of_fold_rejects_shape(features: np.ndarray, target: list[int]) -> None:
    with pytest.raises(ValueError, match=r"must be \(N, F\)"):
        out_of_fold_scores(features, target)


# threshold_sweep and tune_threshold

# BERT errs on rows 0 (false negative) and 1 (false positive), and the LLM errs
# on row 5 only. Deferring rows 0 and 1 gives F1 1.0 (tau 0.7). Deferring rows
# 2-4 as well changes nothing (taus 0.5 and 0.3). Deferring row 5 adds a false
# positive (tau 0.1).
Y_TRUE = np.array([1, 0, 1, 0, 1, 0])
BERT = np.array([0, 1, 1, 0, 1, 0])
LLM = np.array([1, 0, 1, 0, 1, 1])
SCORES = np.array([0.9, 0.7, 0.5, 0.3, 0.3, 0.1])


def test_sweep_first_row_defers_nothing() -> None:
    sweep = threshold_sweep(SCORES, Y_TRUE, BERT, LLM)

    first = sweep.iloc[0]
    assert first["tau"] == np.inf
    assert first["llm_rate"] == 0.0
    assert first["f1"] == class_f1(Y_TRUE, BERT)


def test_sweep_one_row_per_distinct_score() -> None:
    sweep = threshold_sweep(SCORES, Y_TRUE, BERT, LLM)

    assert sweep["tau"].tolist() == [np.inf, 0.9, 0.7, 0.5, 0.3, 0.1]
    assert sweep["llm_rate"].tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 5 / 6, 1])


def test_sweep_scores_each_threshold() -> None:
    sweep = threshold_sweep(SCORES, Y_TRUE, BERT, LLM)

    assert sweep["f1"].tolist() == pytest.approx([4 / 6, 6 / 7, 1.0, 1.0, 1.0, 6 / 7])
    assert sweep["accuracy"].tolist() == pytest.approx([4 / 6, 5 / 6, 1.0, 1.0, 1.0, 5 / 6])


def test_sweep_columns() -> None:
    sweep = threshold_sweep(SCORES, Y_TRUE, BERT, LLM)

    assert list(sweep.columns) == ["tau", "f1", "accuracy", "llm_rate"]


def test_tune_picks_max_f1() -> None:
    choice = tune_threshold(SCORES, Y_TRUE, BERT, LLM)

    assert choice.f1 == 1.0
    assert choice.accuracy == 1.0


def test_tune_ties_to_fewest_deferrals() -> None:
    """Taus 0.7, 0.5 and 0.3 all give F1 1.0, and the largest of them defers the fewest inputs."""
    choice = tune_threshold(SCORES, Y_TRUE, BERT, LLM)

    assert choice.tau == 0.7
    assert choice.llm_rate == pytest.approx(2 / 6)


def test_tune_ties_to_fewest_deferrals_unsorted_scores() -> None:
    """The order of the inputs does not change the choice."""
    order = np.array([5, 3, 1, 0, 4, 2])

    choice = tune_threshold(SCORES[order], Y_TRUE[order], BERT[order], LLM[order])

    assert choice.tau == 0.7
    assert choice.llm_rate == pytest.approx(2 / 6)


def test_tune_defers_nothing_when_bert_is_best() -> None:
    choice = tune_threshold(SCORES, Y_TRUE, Y_TRUE, 1 - Y_TRUE)

    assert choice.tau == np.inf
    assert choice.llm_rate == 0.0
    assert choice.f1 == 1.0


def test_tune_unparseable_falls_back_to_bert() -> None:
    """Deferring to an unparseable reply keeps BERT's label, so it neither helps nor hurts."""
    llm = np.array([UNPARSEABLE] * 6)

    choice = tune_threshold(SCORES, Y_TRUE, BERT, llm)

    assert choice.tau == np.inf
    assert choice.f1 == class_f1(Y_TRUE, BERT)


# standardized_coefficients


def test_coefficient_signs() -> None:
    rng = np.random.default_rng(4)
    features = pd.DataFrame(
        {"raises_error": rng.normal(size=400), "lowers_error": rng.normal(size=400), "noise": rng.normal(size=400)}
    )
    logit = 2.0 * features["raises_error"] - 1.0 * features["lowers_error"]
    target = (logit + rng.logistic(size=400) > 0).astype(int)

    coefficients = standardized_coefficients(features, target)

    assert coefficients["raises_error"] > 0
    assert coefficients["lowers_error"] < 0
    assert coefficients.index.tolist() == ["raises_error", "lowers_error", "noise"]
    assert coefficients.name == "coefficient"


def test_coefficients_per_standard_deviation() -> None:
    """Rescaling a feature leaves its coefficient unchanged, because features are z-scored."""
    rng = np.random.default_rng(5)
    features = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300)})
    target = (features["x"] + rng.logistic(size=300) > 0).astype(int)
    rescaled = features.assign(x=features["x"] * 1000.0)

    original = standardized_coefficients(features, target)
    scaled = standardized_coefficients(rescaled, target)

    assert scaled["x"] == pytest.approx(original["x"], rel=1e-4)


# fixed_threshold_deferral


@pytest.mark.parametrize(
    ("theta", "expected"),
    [
        (0.6, [True, False, False, False]),
        (0.95, [True, True, False, False]),
        (1.0, [True, True, True, False]),
    ],
)
def test_fixed_threshold_defers_below_theta(theta: float, expected: list[bool]) -> None:
    confidence = [0.55, 0.6, 0.95, 1.0]

    assert fixed_threshold_deferral(confidence, theta).tolist() == expected


@pytest.mark.parametrize("theta", [0.0, -0.1, 1.01, 95])
def test_fixed_threshold_rejects_theta(theta: float) -> None:
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        fixed_threshold_deferral([0.7, 0.8], theta)


# oracle_deferral


def test_oracle_defers_where_only_llm_right() -> None:
    y_true = [1, 0, 1, 0, 1, 1]
    bert = [0, 0, 1, 1, 0, 1]
    llm = [1, 1, 0, 0, UNPARSEABLE, 1]

    assert oracle_deferral(y_true, bert, llm).tolist() == [True, False, False, True, False, False]


# random_deferral_scores


@pytest.fixture(scope="module")
def routing_data() -> dict[str, np.ndarray]:
    """300 inputs: BERT right on about 90%, the LLM on about 80%, no unparseable reply."""
    rng = np.random.default_rng(6)
    y_true = (rng.random(300) < 0.3).astype(int)
    bert = np.where(rng.random(300) < 0.9, y_true, 1 - y_true)
    llm = np.where(rng.random(300) < 0.8, y_true, 1 - y_true)
    confidence = np.where(bert == y_true, rng.uniform(0.7, 1.0, 300), rng.uniform(0.5, 0.9, 300))
    l2d_defer = confidence < 0.75
    return {"y_true": y_true, "bert": bert, "llm": llm, "confidence": confidence, "l2d_defer": l2d_defer}


@pytest.mark.parametrize("n_deferred", [0, 1, 40, 300])
def test_random_defers_exact_count(routing_data: dict[str, np.ndarray], n_deferred: int) -> None:
    draws = random_deferral_scores(routing_data["y_true"], routing_data["bert"], routing_data["llm"], n_deferred, seeds=50)

    assert len(draws) == 50
    assert (draws["llm_rate"] * 300).round().eq(n_deferred).all()


def test_random_columns(routing_data: dict[str, np.ndarray]) -> None:
    draws = random_deferral_scores(routing_data["y_true"], routing_data["bert"], routing_data["llm"], 40, seeds=5)

    assert list(draws.columns) == ["f1", "accuracy", "llm_rate"]


def test_random_deterministic(routing_data: dict[str, np.ndarray]) -> None:
    arguments = (routing_data["y_true"], routing_data["bert"], routing_data["llm"], 40)

    first = random_deferral_scores(*arguments, seeds=50, random_state=3)
    second = random_deferral_scores(*arguments, seeds=50, random_state=3)
    other = random_deferral_scores(*arguments, seeds=50, random_state=4)

    pd.testing.assert_frame_equal(first, second)
    assert not first["f1"].equals(other["f1"])


def test_random_draws_differ(routing_data: dict[str, np.ndarray]) -> None:
    draws = random_deferral_scores(routing_data["y_true"], routing_data["bert"], routing_data["llm"], 40, seeds=50)

    assert draws["f1"].nunique() > 1


@pytest.mark.parametrize("n_deferred", [-1, 301])
def test_random_rejects_count(routing_data: dict[str, np.ndarray], n_deferred: int) -> None:
    with pytest.raises(ValueError, match=f"n_deferred={n_deferred} must lie between 0 and the number of inputs 300"):
        random_deferral_scores(routing_data["y_true"], routing_data["bert"], routing_data["llm"], n_deferred, seeds=5)


# results_table and with_paper_values


@pytest.fixture(scope="module")
def table(routing_data: dict[str, np.ndarray]) -> pd.DataFrame:
    return results_table(
        routing_data["y_true"],
        routing_data["bert"],
        routing_data["llm"],
        routing_data["confidence"],
        routing_data["l2d_defer"],
        random_seeds=200,
    ).set_index("method")


def test_table_method_keys(table: pd.DataFrame) -> None:
    assert table.index.tolist() == TABLE_METHODS


def test_table_fixed_keys_follow_thresholds() -> None:
    assert [f"fixed_{theta:g}" for theta in FIXED_THRESHOLDS] == TABLE_METHODS[3:8]


def test_table_columns(table: pd.DataFrame) -> None:
    assert list(table.reset_index().columns) == [
        "method", "f1", "f1_low", "f1_high", "accuracy", "accuracy_low", "accuracy_high", "llm_rate"
    ]


def test_table_intervals_contain_values(table: pd.DataFrame) -> None:
    for metric in ("f1", "accuracy"):
        assert (table[f"{metric}_low"] <= table[metric] + 1e-12).all()
        assert (table[metric] <= table[f"{metric}_high"] + 1e-12).all()


def test_table_intervals_have_width(table: pd.DataFrame) -> None:
    # 300 sentences: a 95% interval of F1 is several points wide, never a point.
    widths = table["f1_high"] - table["f1_low"]
    assert (widths > 0.02).all()
    assert (widths < 0.3).all()


def test_table_interval_matches_bootstrap_interval(routing_data: dict[str, np.ndarray], table: pd.DataFrame) -> None:
    from l2d_utils.uncertainty import bootstrap_interval

    expected = bootstrap_interval(class_f1, routing_data["y_true"], routing_data["bert"], random_state=0)

    assert table.loc["bert_only", "f1_low"] == pytest.approx(expected.low)
    assert table.loc["bert_only", "f1_high"] == pytest.approx(expected.high)


def test_table_random_interval_covers_draw_spread(routing_data: dict[str, np.ndarray], table: pd.DataFrame) -> None:
    # Random deferral's interval adds the spread of the draws to that of the sentences.
    draws = random_deferral_scores(routing_data["y_true"], routing_data["bert"], routing_data["llm"], int(routing_data["l2d_defer"].sum()), seeds=200)

    assert table.loc["random", "f1_low"] <= draws["f1"].quantile(0.025)
    assert table.loc["random", "f1_high"] >= draws["f1"].quantile(0.975)


def test_table_rejects_mismatched_shapes(routing_data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="l2d_defer"):
        results_table(routing_data["y_true"], routing_data["bert"], routing_data["llm"], routing_data["confidence"], routing_data["l2d_defer"][:-1])


def test_table_llm_rate_in_unit_interval(table: pd.DataFrame) -> None:
    assert table["llm_rate"].between(0.0, 1.0).all()


def test_table_single_model_rates(table: pd.DataFrame) -> None:
    assert table.loc["bert_only", "llm_rate"] == 0.0
    assert table.loc["llm_only", "llm_rate"] == 1.0


def test_table_random_matches_l2d_rate(table: pd.DataFrame) -> None:
    assert table.loc["random", "llm_rate"] == pytest.approx(table.loc["l2d", "llm_rate"])


def test_table_l2d_row(table: pd.DataFrame, routing_data: dict[str, np.ndarray]) -> None:
    expected = score_system(routing_data["y_true"], routing_data["bert"], routing_data["llm"], routing_data["l2d_defer"])

    assert table.loc["l2d", "f1"] == expected.f1
    assert table.loc["l2d", "accuracy"] == expected.accuracy
    assert table.loc["l2d", "llm_rate"] == expected.llm_rate


def test_table_fixed_rates_grow_with_theta(table: pd.DataFrame) -> None:
    rates = table.loc[TABLE_METHODS[3:8], "llm_rate"]

    assert rates.is_monotonic_increasing


def test_table_oracle_is_upper_bound(table: pd.DataFrame) -> None:
    oracle_f1 = table.loc["oracle", "f1"]

    assert oracle_f1 >= table.loc["bert_only", "f1"]
    assert oracle_f1 >= table.loc["llm_only", "f1"]
    assert oracle_f1 >= table.loc["l2d", "f1"]
    assert table.loc["oracle", "accuracy"] >= table["accuracy"].max()


def test_table_llm_only_counts_unparseable_as_wrong(routing_data: dict[str, np.ndarray]) -> None:
    llm = routing_data["llm"].copy()
    llm[:30] = UNPARSEABLE

    table = results_table(
        routing_data["y_true"], routing_data["bert"], llm, routing_data["confidence"], routing_data["l2d_defer"], random_seeds=5
    ).set_index("method")

    assert table.loc["llm_only", "accuracy"] == pytest.approx(np.mean(llm == routing_data["y_true"]))


def test_paper_values_columns(table: pd.DataFrame) -> None:
    with_paper = with_paper_values(table.reset_index())

    assert list(with_paper.columns)[-3:] == ["paper_f1", "paper_accuracy", "paper_llm_rate"]


def test_paper_values_filled_where_reported(table: pd.DataFrame) -> None:
    with_paper = with_paper_values(table.reset_index()).set_index("method")

    assert tuple(with_paper.loc["l2d", ["paper_f1", "paper_accuracy", "paper_llm_rate"]]) == PAPER_TABLE1["l2d"]
    assert with_paper.loc["fixed_0.6", ["paper_f1", "paper_accuracy", "paper_llm_rate"]].isna().all()
    assert with_paper.loc["fixed_0.95", "paper_f1"] == 0.921


def test_paper_values_keep_input(table: pd.DataFrame) -> None:
    frame = table.reset_index()

    with_paper_values(frame)

    assert "paper_f1" not in frame.columns


# complementarity target and alternative deferral models


def test_complementarity_target_marks_only_rescuable() -> None:
    from l2d_utils.deferral import complementarity_target

    y_true = np.array([1, 1, 0, 0, 1])
    bert = np.array([0, 0, 0, 1, 1])
    llm = np.array([1, 0, 1, 0, UNPARSEABLE])

    assert complementarity_target(y_true, bert, llm).tolist() == [1, 0, 0, 1, 0]


def test_make_target_names() -> None:
    from l2d_utils.deferral import make_target

    y_true, bert, llm = np.array([1, 0]), np.array([0, 0]), np.array([0, 1])

    assert make_target("bert_error", y_true, bert, llm).tolist() == [1, 0]
    assert make_target("complementarity", y_true, bert, llm).tolist() == [0, 0]
    with pytest.raises(ValueError, match="complementarity"):
        make_target("oracle", y_true, bert, llm)


@pytest.mark.parametrize("name", ["logistic", "random_forest", "gradient_boosting"])
def test_deferral_models_rank_errors(name: str) -> None:
    from l2d_utils.deferral import make_deferral_model

    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 3))
    target = (features[:, 0] + 0.3 * rng.normal(size=400) > 1.0).astype(int)
    scores = out_of_fold_scores(features, target, n_splits=5, model=make_deferral_model(name))

    assert scores.shape == (400,)
    assert scores[target == 1].mean() > scores[target == 0].mean() + 0.2


def test_unknown_deferral_model_names_choices() -> None:
    from l2d_utils.deferral import make_deferral_model

    with pytest.raises(ValueError, match="random_forest"):
        make_deferral_model("svm")
