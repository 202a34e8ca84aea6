"""Specification of token, latency and cost accounting over results frames."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from l2d_utils.llm.base import LLMResult, results_frame
from l2d_utils.llm.costs import DEFAULT_PRICES, Prices, cost_table, usage_summary

# The prices are made up for the arithmetic. They are no provider's prices.
TEST_PRICES = Prices(input_usd_per_million=2.0, output_usd_per_million=8.0)


def make_result(prompt_tokens: int | None, completion_tokens: int | None, latency_ms: float, cached: bool) -> LLMResult:
    return LLMResult(
        label=1,
        raw_reply="1",
        probabilities=None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        latency_ms=latency_ms,
        request_id="chatcmpl-1",
        cached=cached,
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return results_frame(
        [
            make_result(100, 1, 200.0, cached=False),
            make_result(300, 3, 400.0, cached=False),
            make_result(1000, 10, 50.0, cached=True),
            make_result(2000, 20, 0.0, cached=True),  # Loaded from the Batch API: latency unknown.
        ]
    )


# usage_summary


def test_usage_rows_and_columns(frame) -> None:
    summary = usage_summary(frame)

    assert list(summary.index) == ["new", "cached", "all"]
    assert list(summary.columns) == [
        "calls",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "calls_without_usage",
        "total_latency_ms",
        "mean_latency_ms",
        "calls_without_latency",
    ]


def test_usage_counts_new_and_cached(frame) -> None:
    summary = usage_summary(frame)

    assert summary.loc["new", "calls"] == 2
    assert summary.loc["cached", "calls"] == 2
    assert summary.loc["all", "calls"] == 4


def test_usage_sums_tokens(frame) -> None:
    summary = usage_summary(frame)

    assert summary.loc["new", "prompt_tokens"] == 400
    assert summary.loc["new", "completion_tokens"] == 4
    assert summary.loc["cached", "prompt_tokens"] == 3000
    assert summary.loc["all", "total_tokens"] == 3000 + 400 + 30 + 4


def test_usage_latency_skips_unknown(frame) -> None:
    summary = usage_summary(frame)

    assert summary.loc["new", "total_latency_ms"] == 600.0
    assert summary.loc["new", "mean_latency_ms"] == 300.0
    assert summary.loc["cached", "mean_latency_ms"] == 50.0
    assert summary.loc["cached", "calls_without_latency"] == 1
    assert summary.loc["all", "mean_latency_ms"] == pytest.approx(650.0 / 3)


def test_usage_missing_tokens_counted() -> None:
    frame = results_frame([make_result(None, None, 10.0, cached=False), make_result(100, 1, 10.0, cached=False)])

    summary = usage_summary(frame)

    assert summary.loc["new", "calls_without_usage"] == 1
    assert summary.loc["new", "prompt_tokens"] == 100


def test_usage_empty_frame() -> None:
    summary = usage_summary(results_frame([]))

    assert summary.loc["all", "calls"] == 0
    assert summary.loc["all", "prompt_tokens"] == 0
    assert math.isnan(summary.loc["all", "mean_latency_ms"])


def test_usage_missing_column_raises(frame) -> None:
    with pytest.raises(ValueError, match="prompt_tokens.*results_frame"):
        usage_summary(frame.drop(columns=["prompt_tokens"]))


# cost_table


def test_cost_from_prices(frame) -> None:
    table = cost_table(frame, "some-model", TEST_PRICES)

    assert table.loc["new", "input_usd"] == pytest.approx(400 * 2.0 / 1e6)
    assert table.loc["new", "output_usd"] == pytest.approx(4 * 8.0 / 1e6)
    assert table.loc["cached", "total_usd"] == pytest.approx((3000 * 2.0 + 30 * 8.0) / 1e6)
    assert table.loc["all", "total_usd"] == pytest.approx(table.loc["new", "total_usd"] + table.loc["cached", "total_usd"])


def test_cost_keeps_usage_columns(frame) -> None:
    table = cost_table(frame, "some-model", TEST_PRICES)

    assert table.loc["all", "calls"] == 4
    assert table.loc["all", "prompt_tokens"] == 3400


def test_cost_looks_up_model_in_table(frame) -> None:
    prices = {"model-a": TEST_PRICES, "model-b": Prices(0.0, 0.0)}

    assert cost_table(frame, "model-a", prices).loc["all", "total_usd"] > 0
    assert cost_table(frame, "model-b", prices).loc["all", "total_usd"] == 0


def test_cost_unknown_model_raises(frame) -> None:
    with pytest.raises(KeyError, match="No prices for model 'model-c'.*Prices\\(input_usd_per_million"):
        cost_table(frame, "model-c", {"model-a": TEST_PRICES})


def test_default_prices_empty_and_raise(frame) -> None:
    assert DEFAULT_PRICES == {}

    with pytest.raises(KeyError, match="No prices for model 'gpt-4o-mini'"):
        cost_table(frame, "gpt-4o-mini")


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "2.5"])
def test_invalid_price_raises(value) -> None:
    with pytest.raises(ValueError, match="input_usd_per_million"):
        Prices(input_usd_per_million=value, output_usd_per_million=1.0)


def test_chapter_usage_prices_only_priced_models() -> None:
    from l2d_utils.llm.costs import chapter_usage

    usage = [
        {"run": "paper/03_llm_prompting", "provider": "azure", "model": "gpt-5-nano", "calls": 2,
         "prompt_tokens": 2_000_000, "completion_tokens": 1_000_000, "latency_ms": 120_000.0},
        {"run": "laptop/03_llm_prompting", "provider": "local", "model": "packaged:qwen", "calls": 5,
         "prompt_tokens": 1000, "completion_tokens": 0, "latency_ms": 60_000.0},
    ]  # fmt: skip
    table = chapter_usage(usage, {"gpt-5-nano": Prices(0.5, 4.0), "packaged:qwen": None})
    priced = table.set_index("model")
    assert priced.loc["gpt-5-nano", "total_usd"] == pytest.approx(2 * 0.5 + 1 * 4.0)
    assert math.isnan(priced.loc["packaged:qwen", "total_usd"])
    assert priced.loc["gpt-5-nano", "llm_minutes"] == pytest.approx(2.0)
    assert table["chapter"].tolist() == ["03_llm_prompting", "03_llm_prompting"]
    assert chapter_usage([]).empty
