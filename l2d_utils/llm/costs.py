"""Token, latency and cost accounting for a frame of LLM results.

Both functions take the frame of :func:`~l2d_utils.llm.base.results_frame` and
split it into the calls made by this run (``cached`` False) and the calls
replayed from the response cache (``cached`` True). Cached rows carry the
usage and latency of their original call, so the ``cached`` row shows what
those calls cost when they were made, not a new expense.

Prices change and differ between providers, Azure regions and contracts, so
this module ships no prices: :data:`DEFAULT_PRICES` is empty, and
:func:`cost_table` needs the caller's :class:`Prices`, taken from the
provider's current price list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import pandas as pd

#: Columns of :func:`~l2d_utils.llm.base.results_frame` that these functions read.
REQUIRED_COLUMNS = ("prompt_tokens", "completion_tokens", "latency_ms", "cached")


@dataclass(frozen=True)
class Prices:
    """Prices of one model in USD per million tokens.

    Attributes:
        input_usd_per_million: Price of one million prompt (input) tokens.
        output_usd_per_million: Price of one million completion (output) tokens,
            which for reasoning models include the hidden reasoning tokens.
    """

    input_usd_per_million: float
    output_usd_per_million: float

    def __post_init__(self) -> None:
        for name in ("input_usd_per_million", "output_usd_per_million"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Prices.{name} must be a finite number of USD, 0 or more, got {value!r}.")


#: Prices by model name. Empty on purpose, because no price is verified here.
#: Callers pass their own table or :class:`Prices` to :func:`cost_table`.
DEFAULT_PRICES: dict[str, Prices] = {}


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(
            f"The results frame lacks the columns {missing}. Build it with l2d_utils.llm.base.results_frame(results)."
        )


def _usage_row(rows: pd.DataFrame) -> dict[str, float | int]:
    prompt_tokens = pd.to_numeric(rows["prompt_tokens"], errors="coerce")
    completion_tokens = pd.to_numeric(rows["completion_tokens"], errors="coerce")
    latency_ms = pd.to_numeric(rows["latency_ms"], errors="coerce")
    known_latency = latency_ms[latency_ms > 0]
    return {
        "calls": len(rows),
        "prompt_tokens": int(prompt_tokens.sum()),
        "completion_tokens": int(completion_tokens.sum()),
        "total_tokens": int(prompt_tokens.sum() + completion_tokens.sum()),
        "calls_without_usage": int((prompt_tokens.isna() | completion_tokens.isna()).sum()),
        "total_latency_ms": float(known_latency.sum()),
        "mean_latency_ms": float(known_latency.mean()) if len(known_latency) else math.nan,
        "calls_without_latency": int(len(rows) - len(known_latency)),
    }


def usage_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Sum tokens and latencies of the new, the cached and all calls of a results frame.

    Args:
        frame: Output of :func:`~l2d_utils.llm.base.results_frame`.

    Returns:
        A frame indexed by ``new``, ``cached`` and ``all``, with the columns
        ``calls``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
        ``calls_without_usage`` (rows whose token counts are missing and count
        as 0 in the sums), ``total_latency_ms``, ``mean_latency_ms`` and
        ``calls_without_latency``. The latency columns use the wall time of
        each original call. ``total_latency_ms`` is their sum, not the run's
        wall time, because calls overlap when they run concurrently. Rows with
        ``latency_ms`` of 0 or less, which are results loaded from the Batch
        API, are left out of both and counted in ``calls_without_latency``.
        ``mean_latency_ms`` is NaN when no row has a latency.

    Raises:
        ValueError: If a column of :data:`REQUIRED_COLUMNS` is missing.
    """
    _check_columns(frame)
    cached = frame["cached"].astype(bool)
    parts = {"new": frame[~cached], "cached": frame[cached], "all": frame}
    return pd.DataFrame.from_dict({name: _usage_row(rows) for name, rows in parts.items()}, orient="index")


def cost_table(
    frame: pd.DataFrame,
    model: str,
    prices: Prices | Mapping[str, Prices] | None = None,
) -> pd.DataFrame:
    """Compute the USD cost of the new, the cached and all calls of a results frame.

    The cost is ``prompt_tokens * input price + completion_tokens * output
    price``, per million tokens. Provider discounts that the results frame
    cannot show are not applied: cached-input (prompt caching) discounts and
    the Batch API discount. For Batch API results, pass the batch prices.

    Args:
        frame: Output of :func:`~l2d_utils.llm.base.results_frame` for one model.
        model: Model or deployment name, looked up in ``prices`` when it is a mapping.
        prices: The model's :class:`Prices`, or a table of them by model name.
            ``None`` uses :data:`DEFAULT_PRICES`, which is empty, so it always
            raises unless the caller filled that table.

    Returns:
        The columns of :func:`usage_summary` plus ``input_usd``, ``output_usd``
        and ``total_usd``, indexed by ``new``, ``cached`` and ``all``.

    Raises:
        KeyError: If the price table has no entry for ``model``.
        ValueError: If a column of :data:`REQUIRED_COLUMNS` is missing.
    """
    if prices is None:
        prices = DEFAULT_PRICES
    if isinstance(prices, Prices):
        model_prices = prices
    elif model in prices:
        model_prices = prices[model]
    else:
        raise KeyError(
            f"No prices for model {model!r} (known: {sorted(prices)}). Pass prices=Prices(input_usd_per_million=..., "
            "output_usd_per_million=...) with the provider's current prices for this model."
        )

    table = usage_summary(frame)
    table["input_usd"] = table["prompt_tokens"] * model_prices.input_usd_per_million / 1_000_000
    table["output_usd"] = table["completion_tokens"] * model_prices.output_usd_per_million / 1_000_000
    table["total_usd"] = table["input_usd"] + table["output_usd"]
    return table


def chapter_usage(usage: list[Mapping[str, object]], prices: Mapping[str, Prices | None] | None = None) -> pd.DataFrame:
    """Turn the usage notes of a response cache into one row per run and model, with costs.

    Args:
        usage: Output of :meth:`~l2d_utils.llm.cache.ResponseCache.usage`,
            with runs named ``<profile>/<chapter>`` by the book runner.
        prices: :class:`Prices` by model name; a model that is missing or
            mapped to ``None`` (a local model) gets NaN costs.

    Returns:
        Frame with ``chapter, provider, model, calls, prompt_tokens,
        completion_tokens, llm_minutes`` (the summed wall time of the original
        calls) and ``total_usd``, sorted by chapter.
    """
    prices = prices or {}
    rows = []
    for entry in usage:
        model = str(entry["model"])
        model_prices = prices.get(model)
        prompt_tokens = int(entry["prompt_tokens"])
        completion_tokens = int(entry["completion_tokens"])
        cost = math.nan
        if model_prices is not None:
            cost = (
                prompt_tokens * model_prices.input_usd_per_million + completion_tokens * model_prices.output_usd_per_million
            ) / 1_000_000
        rows.append(
            {
                "chapter": str(entry["run"]).rsplit("/", 1)[-1],
                "provider": entry["provider"],
                "model": model,
                "calls": int(entry["calls"]),
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "llm_minutes": float(entry["latency_ms"] or 0.0) / 60_000,
                "total_usd": cost,
            }
        )
    columns = ["chapter", "provider", "model", "calls", "prompt_tokens", "completion_tokens", "llm_minutes", "total_usd"]
    return pd.DataFrame(rows, columns=columns).sort_values("chapter", kind="stable").reset_index(drop=True)
