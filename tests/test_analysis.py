"""Specification of l2d_utils.analysis: protocols, seed sensitivity, error breakdown, cost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from l2d_utils.analysis import (
    RESIDUAL_KINDS,
    CostModel,
    cross_validated_l2d,
    daily_load,
    deferral_diagnostics,
    error_kinds,
    held_out_l2d,
    pareto_front,
    residual_errors,
    seed_sensitivity,
    system_cost,
)
from l2d_utils.metrics import combine_predictions, score_system

FEATURES = ["signal", "noise"]


def synthetic_inputs(count: int, seed: int) -> pd.DataFrame:
    """Sentences where BERT errs where ``signal`` is high and the LLM is right on 85%."""
    rng = np.random.default_rng(seed)
    label = (rng.random(count) < 0.3).astype(int)
    signal = rng.normal(size=count)
    bert_wrong = signal + 0.5 * rng.normal(size=count) > 1.3
    bert_label = np.where(bert_wrong, 1 - label, label)
    llm_label = np.where(rng.random(count) < 0.85, label, 1 - label)
    confidence = np.clip(0.95 - 0.1 * signal, 0.5, 1.0)
    return pd.DataFrame(
        {
            "row_id": np.arange(count),
            "label": label,
            "bert_label": bert_label,
            "llm_label": llm_label,
            "confidence": confidence,
            "signal": signal,
            "noise": rng.normal(size=count),
        }
    )


@pytest.fixture(scope="module")
def inputs() -> pd.DataFrame:
    return synthetic_inputs(500, seed=1)


def bert_f1(frame: pd.DataFrame) -> float:
    return score_system(frame["label"], frame["bert_label"], frame["llm_label"], np.zeros(len(frame), bool)).f1


# protocols


def test_cross_validated_l2d_improves_on_learnable_errors(inputs: pd.DataFrame) -> None:
    run = cross_validated_l2d(inputs, FEATURES)

    assert run.f1 > bert_f1(inputs) + 0.05
    assert 0.0 < run.llm_rate < 0.5
    assert run.defer.tolist() == (run.scores >= run.tau).tolist()
    assert run.tuning_f1 == run.f1


def test_cross_validated_l2d_scores_agree_with_defer_mask(inputs: pd.DataFrame) -> None:
    run = cross_validated_l2d(inputs, FEATURES)
    rescored = score_system(inputs["label"], inputs["bert_label"], inputs["llm_label"], run.defer)

    assert rescored.f1 == pytest.approx(run.f1)
    assert rescored.llm_rate == pytest.approx(run.llm_rate)


def test_held_out_l2d_scores_evaluation_once(inputs: pd.DataFrame) -> None:
    evaluation = synthetic_inputs(400, seed=2)
    run = held_out_l2d(inputs, evaluation, FEATURES)
    rescored = score_system(evaluation["label"], evaluation["bert_label"], evaluation["llm_label"], run.defer)

    assert run.scores.shape == (400,)
    assert rescored.f1 == pytest.approx(run.f1)
    assert run.f1 > bert_f1(evaluation) + 0.03


def test_held_out_l2d_does_not_read_evaluation_labels(inputs: pd.DataFrame) -> None:
    evaluation = synthetic_inputs(300, seed=3)
    flipped = evaluation.assign(label=1 - evaluation["label"])

    first = held_out_l2d(inputs, evaluation, FEATURES)
    second = held_out_l2d(inputs, flipped, FEATURES)

    assert first.tau == second.tau
    assert np.array_equal(first.defer, second.defer)


def test_noise_held_out_gains_less() -> None:
    # When the features carry no signal, tuning tau on the evaluation scores
    # still finds a lucky threshold; a held-out threshold cannot.
    tuning = synthetic_inputs(500, seed=4).assign(signal=lambda f: np.random.default_rng(9).normal(size=len(f)))
    evaluation = synthetic_inputs(500, seed=5).assign(signal=lambda f: np.random.default_rng(10).normal(size=len(f)))

    tuned = cross_validated_l2d(evaluation, FEATURES)
    held = held_out_l2d(tuning, evaluation, FEATURES)

    assert tuned.f1 - bert_f1(evaluation) >= held.f1 - bert_f1(evaluation)


@pytest.mark.parametrize("model", ["random_forest", "gradient_boosting"])
def test_l2d_with_tree_models(inputs: pd.DataFrame, model: str) -> None:
    run = cross_validated_l2d(inputs, FEATURES, model=model)

    assert run.f1 > bert_f1(inputs)


def test_l2d_with_complementarity_target(inputs: pd.DataFrame) -> None:
    run = cross_validated_l2d(inputs, FEATURES, target="complementarity")

    assert run.f1 > bert_f1(inputs)


def test_missing_columns_are_named(inputs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="llm_label"):
        cross_validated_l2d(inputs.drop(columns=["llm_label"]), FEATURES)
    with pytest.raises(ValueError, match="absent"):
        cross_validated_l2d(inputs, ["absent"])


# sensitivity


def test_seed_sensitivity_rows_and_gain() -> None:
    pool = synthetic_inputs(900, seed=6)
    table = seed_sensitivity(pool, 300, seeds=range(5), features=FEATURES)

    assert table["seed"].tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(table["gain"], table["l2d_f1"] - table["bert_f1"])
    assert (table["oracle_f1"] >= table["l2d_f1"] - 1e-12).all()
    assert table["bert_f1"].nunique() > 1  # each seed draws different sentences


def test_seed_sensitivity_held_out_columns() -> None:
    pool = synthetic_inputs(900, seed=6)
    tuning = synthetic_inputs(400, seed=11)
    table = seed_sensitivity(pool, 300, seeds=range(3), features=FEATURES, tuning=tuning)

    assert np.allclose(table["held_out_gain"], table["held_out_f1"] - table["bert_f1"])
    assert table["held_out_llm_rate"].between(0, 1).all()
    assert table["held_out_gain"].mean() > 0  # the synthetic errors are learnable


def test_seed_sensitivity_seed_matches_single_run() -> None:
    from l2d_utils.splits import llm_subset

    pool = synthetic_inputs(900, seed=6)
    table = seed_sensitivity(pool, 300, seeds=[42], features=FEATURES)
    single = cross_validated_l2d(llm_subset(pool, 300, seed=42), FEATURES, seed=42)

    assert table.loc[0, "l2d_f1"] == pytest.approx(single.f1)


def test_seed_sensitivity_rejects_oversized_subset() -> None:
    with pytest.raises(ValueError, match="subset_size=600"):
        seed_sensitivity(synthetic_inputs(100, seed=7), 600, seeds=[0], features=FEATURES)


# error breakdown


def test_residual_errors_partition_the_system_errors() -> None:
    rng = np.random.default_rng(8)
    y_true = rng.integers(0, 2, 400)
    bert = np.where(rng.random(400) < 0.85, y_true, 1 - y_true)
    llm = np.where(rng.random(400) < 0.7, y_true, 1 - y_true)
    llm[:10] = -1
    defer = rng.random(400) < 0.3
    counts = residual_errors(y_true, bert, llm, defer)
    kinds = error_kinds(y_true, bert, llm, defer)
    wrong = combine_predictions(bert, llm, defer) != y_true

    assert counts[list(RESIDUAL_KINDS)].sum() == counts["total"] == wrong.sum()
    assert np.array_equal(kinds != "", wrong)


def test_residual_error_kinds_by_case() -> None:
    y_true = np.array([1, 1, 0, 1, 1])
    bert = np.array([0, 1, 0, 0, 0])
    llm = np.array([0, 0, 1, 1, -1])
    defer = np.array([True, True, False, False, True])

    assert error_kinds(y_true, bert, llm, defer).tolist() == ["both_wrong", "false_deferral", "", "missed_deferral", "both_wrong"]


def test_deferral_diagnostics() -> None:
    y_true = np.array([1, 1, 0, 0, 1, 0])
    bert = np.array([0, 0, 0, 0, 1, 1])
    llm = np.array([1, 0, 0, 1, 1, 0])
    defer = np.array([True, True, True, False, False, False])
    diagnostics = deferral_diagnostics(y_true, bert, llm, defer)

    assert diagnostics["deferred"] == 3
    assert diagnostics["deferral_precision"] == pytest.approx(2 / 3)
    assert diagnostics["bert_error_recall"] == pytest.approx(2 / 3)
    assert diagnostics["llm_accuracy_deferred"] == pytest.approx(2 / 3)
    assert diagnostics["llm_accuracy_overall"] == pytest.approx(4 / 6)


def test_deferral_diagnostics_nothing_deferred_gives_nan() -> None:
    diagnostics = deferral_diagnostics([1, 0], [1, 1], [1, 0], [False, False])

    assert np.isnan(diagnostics["deferral_precision"])
    assert diagnostics["deferred"] == 0


# cost and latency


def test_system_cost_reproduces_paper_appendix() -> None:
    # Appendix 8.2: 7% deferral gives about 4.4x cost and 71 ms; 16.8% gives 9.4x and about 153 ms.
    cost, latency = system_cost(0.07)
    assert cost == pytest.approx(4.5)
    assert latency == pytest.approx(71.5)
    cost, latency = system_cost(0.168)
    assert cost == pytest.approx(9.4)
    assert latency == pytest.approx(154.8)


def test_system_cost_llm_only_and_router() -> None:
    model = CostModel(router_ms=2.0)

    assert system_cost(1.0, model, uses_bert=False, uses_router=False) == (50.0, 850.0)
    assert system_cost(0.0, model, uses_router=False) == (1.0, 12.0)
    assert system_cost(0.0, model) == (1.0, 14.0)


@pytest.mark.parametrize("field", ["llm_cost", "bert_ms", "llm_ms", "router_ms"])
def test_cost_model_rejects_negative(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CostModel(**{field: -1.0})


def test_system_cost_rejects_rate_outside_unit_interval() -> None:
    with pytest.raises(ValueError, match="llm_rate=1.5"):
        system_cost(1.5)


def test_daily_load() -> None:
    table = daily_load({"bert_only": 0.0, "llm_only": 1.0, "l2d": 0.07}, volume=10_000)

    assert table.loc["l2d", "llm_calls_per_day"] == pytest.approx(700)
    assert table.loc["llm_only", "cost_per_day"] == pytest.approx(500_000)
    assert table.loc["l2d", "cost_vs_llm_only"] == pytest.approx(45_000 / 500_000)
    assert table.loc["bert_only", "mean_latency_ms"] == pytest.approx(12.0)
    with pytest.raises(ValueError, match="volume=0"):
        daily_load({"l2d": 0.1}, volume=0)


def test_pareto_front() -> None:
    cost = np.array([1.0, 2.0, 2.0, 3.0, 50.0])
    score = np.array([0.90, 0.92, 0.91, 0.92, 0.80])

    assert pareto_front(cost, score).tolist() == [True, True, False, False, False]


def test_pareto_front_keeps_exact_ties() -> None:
    assert pareto_front([1.0, 1.0], [0.5, 0.5]).tolist() == [True, True]
