"""A persistent SQLite cache of LLM responses.

Every finished call is committed before the next one starts, so a run that is
killed midway resumes and pays only for the calls it had not finished. A cache
opened with ``replay_only=True`` raises :class:`CacheMissError` instead of
letting a caller make a new call. Book builds that must not call an API use it.

The key hashes the provider, the model, the prompt template's name, version and
fingerprint, the rendered messages and every sampling parameter. Nothing
secret goes into a key or a record: callers pass settings without API keys.

A cache opened with a ``run`` name (by default the ``L2D_USAGE_RUN``
environment variable, which the book runner sets to ``<profile>/<chapter>``
for each chapter) also notes which responses that run read or stored.
:meth:`ResponseCache.usage` then sums tokens and the original latency per
run, so the book can report what each chapter requested from the LLM, whether the
calls were made in this build or an earlier one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    template TEXT NOT NULL,
    raw_reply TEXT NOT NULL,
    label INTEGER NOT NULL,
    probabilities TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_ms REAL NOT NULL,
    request_id TEXT,
    created_at REAL NOT NULL
)
"""
USAGE_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    run TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (run, key)
)
"""
#: Environment variable naming the run whose reads and writes :class:`ResponseCache` notes.
USAGE_RUN_ENV = "L2D_USAGE_RUN"


class CacheMissError(LookupError):
    """A replay-only cache had no response for a request."""


@dataclass(frozen=True)
class CachedResponse:
    """One stored LLM response.

    Attributes:
        raw_reply: Text the model returned (for scoring backends: the chosen answer).
        label: Parsed class index; -1 when the reply could not be parsed.
        probabilities: Per-class probabilities when the backend provides them.
        prompt_tokens: Input tokens billed or counted.
        completion_tokens: Output tokens billed or counted.
        latency_ms: Wall time of the original call in milliseconds.
        request_id: Provider's request id, if any.
        created_at: Unix time of the original call.
    """

    raw_reply: str
    label: int
    probabilities: tuple[float, ...] | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_ms: float
    request_id: str | None
    created_at: float


def request_key(
    provider: str,
    model: str,
    template_id: str,
    messages: Sequence[Mapping[str, str]],
    parameters: Mapping[str, Any],
) -> str:
    """Return the sha256 cache key of one request.

    Args:
        provider: Backend name, e.g. ``local``, ``openai``, ``azure``.
        model: Model or deployment name.
        template_id: ``name:version:fingerprint`` of the prompt template.
        messages: The rendered chat messages.
        parameters: Every sampling parameter (temperature, max tokens, ...).
    """
    payload = json.dumps(
        {"provider": provider, "model": model, "template": template_id, "messages": list(messages), "parameters": dict(parameters)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """SQLite-backed response cache; safe to share between threads of one process.

    Args:
        path: Database file; its folder is created if needed.
        replay_only: Raise :class:`CacheMissError` on a miss instead of returning ``None``.
        run: Name under which reads and writes are noted for :meth:`usage`;
            default ``L2D_USAGE_RUN``, and nothing is noted when neither is set.
    """

    def __init__(self, path: str | Path, replay_only: bool = False, run: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.replay_only = replay_only
        self.run = (run if run is not None else os.environ.get(USAGE_RUN_ENV)) or None
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(SCHEMA)
        self._connection.execute(USAGE_SCHEMA)
        self._connection.commit()

    def _note(self, key: str) -> None:
        """Record that this cache's run used ``key``; the caller holds the lock and commits."""
        if self.run is not None:
            self._connection.execute("INSERT OR IGNORE INTO usage VALUES (?, ?)", (self.run, key))

    def get(self, key: str) -> CachedResponse | None:
        """Return the stored response for ``key``, or ``None`` on a miss.

        Raises:
            CacheMissError: On a miss when the cache is replay-only.
        """
        with self._lock:
            row = self._connection.execute(
                "SELECT raw_reply, label, probabilities, prompt_tokens, completion_tokens, latency_ms, request_id, created_at "
                "FROM responses WHERE key = ?",
                (key,),
            ).fetchone()
            if row is not None and self.run is not None:
                self._note(key)
                self._connection.commit()
        if row is None:
            if self.replay_only:
                raise CacheMissError(
                    f"No cached response for request {key[:12]}… in {self.path}, and the cache is replay-only. "
                    "Run once without replay_only (this makes LLM calls) or use the cache file of that run."
                )
            return None
        probabilities = tuple(json.loads(row[2])) if row[2] is not None else None
        return CachedResponse(row[0], int(row[1]), probabilities, row[3], row[4], float(row[5]), row[6], float(row[7]))

    def __contains__(self, key: object) -> bool:
        """Return True when ``key`` is stored. Unlike :meth:`get`, it does not raise on a miss in a replay-only cache."""
        with self._lock:
            row = self._connection.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone()
        return row is not None

    def put(
        self,
        key: str,
        response: CachedResponse,
        provider: str,
        model: str,
        template_id: str,
    ) -> None:
        """Store one response and commit at once."""
        probabilities = json.dumps(list(response.probabilities)) if response.probabilities is not None else None
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    provider,
                    model,
                    template_id,
                    response.raw_reply,
                    response.label,
                    probabilities,
                    response.prompt_tokens,
                    response.completion_tokens,
                    response.latency_ms,
                    response.request_id,
                    response.created_at or time.time(),
                ),
            )
            self._note(key)
            self._connection.commit()

    def forget_usage(self, run_prefix: str) -> int:
        """Drop the usage notes of every run whose name starts with ``run_prefix``; return how many.

        The book runner calls it before a chapter runs, so the notes describe the latest execution.
        """
        if not run_prefix:
            raise ValueError("run_prefix must not be empty; it would drop the usage notes of every run.")
        with self._lock:
            deleted = self._connection.execute("DELETE FROM usage WHERE substr(run, 1, ?) = ?", (len(run_prefix), run_prefix)).rowcount
            self._connection.commit()
        return int(deleted)

    def usage(self, run_prefix: str = "") -> list[dict[str, Any]]:
        """Sum the responses each run used, per run, provider and model.

        Every response counts once per run however often the run read it.
        Tokens and latency are those of the original call, made by this run
        or an earlier one.

        Args:
            run_prefix: Keep only runs whose name starts with it, e.g. ``laptop/``.

        Returns:
            One dict per (run, provider, model) with ``run, provider, model,
            calls, prompt_tokens, completion_tokens, latency_ms`` (summed), sorted by run.
        """
        with self._lock:
            rows = self._connection.execute(
                "SELECT usage.run, responses.provider, responses.model, COUNT(*), "
                "COALESCE(SUM(responses.prompt_tokens), 0), COALESCE(SUM(responses.completion_tokens), 0), "
                "SUM(responses.latency_ms) FROM usage JOIN responses ON usage.key = responses.key "
                "WHERE substr(usage.run, 1, ?) = ? GROUP BY usage.run, responses.provider, responses.model ORDER BY usage.run",
                (len(run_prefix), run_prefix),
            ).fetchall()
        names = ("run", "provider", "model", "calls", "prompt_tokens", "completion_tokens", "latency_ms")
        return [dict(zip(names, row)) for row in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()
