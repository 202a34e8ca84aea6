"""A persistent SQLite cache of LLM responses.

Every finished call is committed before the next one starts, so a run that is
killed midway resumes and pays only for the calls it had not finished. A cache
opened with ``replay_only=True`` raises :class:`CacheMissError` instead of
letting a caller make a new call. Book builds that must not call an API use it.

The key hashes the provider, the model, the prompt template's name, version and
fingerprint, the rendered messages and every sampling parameter. Nothing
secret goes into a key or a record: callers pass settings without API keys.
"""

from __future__ import annotations

import hashlib
import json
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
    """

    def __init__(self, path: str | Path, replay_only: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.replay_only = replay_only
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(self.path, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(SCHEMA)
        self._connection.commit()

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
            self._connection.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._connection.close()
