"""The dead-letter store: every message we refused, with its reason, for inspection.

It is always a local SQLite file (DEAD_LETTER_PATH), whichever store holds the telemetry, so a
store that rejects a batch can never also lose the evidence. It is bounded, because what it keeps
comes from whoever can publish: of each payload the first 4 KiB are kept with its full size and its
SHA-256, and once the rows take more than DEAD_LETTER_MAX_MB the oldest are deleted, counted in the
file itself.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtds.settings import Settings
from rtds.store.sqlite import connect

PAYLOAD_PREFIX_BYTES = 4096
MAX_TOPIC_CHARS = 1024
MAX_DETAIL_CHARS = 1024
# Eviction deletes down to this share of the cap, so a full file does not delete on every insert.
EVICT_TO_SHARE = 0.9

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_size INTEGER,
    payload_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason);
CREATE TABLE IF NOT EXISTS dead_letter_evictions (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    evicted INTEGER NOT NULL,
    last_at REAL NOT NULL
);
"""
# Files written before payloads were bounded lack the two columns; they are added in place.
_ADDED_COLUMNS = (("payload_size", "INTEGER"), ("payload_sha256", "TEXT"))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused message. `payload` is what was received (or, read back, its first 4 KiB)."""

    received_at: float
    reason: str
    detail: str
    topic: str
    payload: bytes
    payload_size: int = -1  # the whole payload's size; -1: len(payload)
    payload_sha256: str = ""  # of the whole payload; "": computed from payload

    def __post_init__(self) -> None:
        if self.payload_size < 0:
            object.__setattr__(self, "payload_size", len(self.payload))
        if not self.payload_sha256:
            object.__setattr__(self, "payload_sha256", hashlib.sha256(self.payload).hexdigest())


class DeadLetterStore:
    def __init__(self, path: str | Path, *, max_bytes: int = 100 * 2**20) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._connection = connect(self.path, busy_timeout_ms=10_000, schema=SCHEMA)
        self._lock = threading.Lock()
        self._add_missing_columns()

    @classmethod
    def from_settings(cls, settings: Settings) -> DeadLetterStore:
        return cls(settings.dead_letter_path, max_bytes=int(settings.dead_letter_max_mb * 2**20))

    def _add_missing_columns(self) -> None:
        present = {row[1] for row in self._connection.execute("PRAGMA table_info(dead_letters)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in present:
                try:
                    self._connection.execute(f"ALTER TABLE dead_letters ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process added it first
                        raise

    def add(self, letters: Iterable[DeadLetter]) -> int:
        """Keep the letters (bounded); return how many of the oldest were deleted to stay under the cap."""
        rows = [
            (
                letter.received_at,
                letter.reason,
                letter.detail[:MAX_DETAIL_CHARS],
                letter.topic[:MAX_TOPIC_CHARS],
                letter.payload[:PAYLOAD_PREFIX_BYTES],
                letter.payload_size,
                letter.payload_sha256,
            )
            for letter in letters
        ]
        if not rows:
            return 0
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.executemany(
                    "INSERT INTO dead_letters (received_at, reason, detail, topic, payload, payload_size, "
                    "payload_sha256) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                evicted = self._evict_oldest()
                self._connection.execute("COMMIT")
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
        return evicted

    def _used_bytes(self) -> int:
        pages = self._connection.execute("PRAGMA page_count").fetchone()[0]
        free = self._connection.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._connection.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def _evict_oldest(self) -> int:
        """Inside the caller's transaction: delete the oldest rows until they fit in EVICT_TO_SHARE of the cap."""
        used = self._used_bytes()
        if used <= self.max_bytes:
            return 0
        evicted = 0
        goal = self.max_bytes * EVICT_TO_SHARE
        while used > goal:
            count = self._connection.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
            if count <= 1:
                break
            take = max(1, min(count - 1, int(count * (used - goal) / used) + 1))
            self._connection.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)", (take,)
            )
            evicted += take
            used = self._used_bytes()
        self._connection.execute(
            "INSERT INTO dead_letter_evictions (id, evicted, last_at) VALUES (1, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET evicted = evicted + excluded.evicted, last_at = excluded.last_at",
            (evicted, time.time()),
        )
        return evicted

    def recent(self, limit: int = 100, reason: str | None = None) -> list[DeadLetter]:
        query = "SELECT received_at, reason, detail, topic, payload, payload_size, payload_sha256 FROM dead_letters"
        parameters: list[Any] = []
        if reason is not None:
            query += " WHERE reason = ?"
            parameters.append(reason)
        query += " ORDER BY id DESC LIMIT ?"
        parameters.append(limit)
        with self._lock:
            rows = self._connection.execute(query, parameters).fetchall()
        return [
            DeadLetter(row[0], row[1], row[2], row[3], bytes(row[4]), -1 if row[5] is None else row[5], row[6] or "")
            for row in rows
        ]

    def count_by_reason(self) -> dict[str, int]:
        with self._lock:
            rows = self._connection.execute("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason").fetchall()
        return dict(rows)

    def evicted(self) -> int:
        """How many dead letters were deleted, oldest first, to keep the file under its cap (ever)."""
        with self._lock:
            row = self._connection.execute("SELECT evicted FROM dead_letter_evictions WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._connection.close()
