"""The dead-letter store: every message we refused, with its reason and raw payload, for inspection.

It is always a local SQLite file (DEAD_LETTER_PATH), whichever store holds the telemetry, so a
store that rejects a batch can never also lose the evidence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtds.settings import Settings
from rtds.store.sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: float
    reason: str
    detail: str
    topic: str
    payload: bytes


class DeadLetterStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connection = connect(self.path, busy_timeout_ms=10_000, schema=SCHEMA)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> DeadLetterStore:
        return cls(settings.dead_letter_path)

    def add(self, letters: Iterable[DeadLetter]) -> None:
        rows = [(d.received_at, d.reason, d.detail, d.topic, d.payload) for d in letters]
        if not rows:
            return
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.executemany(
                    "INSERT INTO dead_letters (received_at, reason, detail, topic, payload) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise

    def recent(self, limit: int = 100, reason: str | None = None) -> list[DeadLetter]:
        query = "SELECT received_at, reason, detail, topic, payload FROM dead_letters"
        parameters: list[Any] = []
        if reason is not None:
            query += " WHERE reason = ?"
            parameters.append(reason)
        query += " ORDER BY id DESC LIMIT ?"
        parameters.append(limit)
        with self._lock:
            rows = self._connection.execute(query, parameters).fetchall()
        return [DeadLetter(row[0], row[1], row[2], row[3], bytes(row[4])) for row in rows]

    def count_by_reason(self) -> dict[str, int]:
        with self._lock:
            rows = self._connection.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason").fetchall()
        return dict(rows)

    def close(self) -> None:
        with self._lock:
            self._connection.close()
