"""The device's durable outbox: every message is written here before it goes to the broker.

One SQLite file holds the queues of one device (`{DEVICE_QUEUE_DIR}/{id}_queue.db`, one process
per device) or of a whole in-process fleet (`fleet_queue.db`, per-device rows), so a thousand
devices do not need a thousand open files.

Durability: WAL mode with synchronous=NORMAL. A committed transaction is in the WAL file, which
the operating system keeps when the process dies, so `kill -9` of the device loses nothing it
committed. A power loss or kernel crash can lose the last transactions before a checkpoint;
synchronous=FULL would cover that at an fsync per commit, which a simulator does not need.

Tables:
- `messages(device_id, seq, payload)`: what waits for a PUBACK, oldest seq first.
- `sequences(device_id, next_seq)`: advanced in the same transaction as the insert, so `seq`
  survives restarts without gaps or repeats.
- `evictions(device_id, first_seq, last_seq, count, at)`: the seq ranges dropped because the
  queue was full; the monitoring delivery check subtracts them from what it expects.
- `device_stats(...)`: counters the fleet status table and the monitoring tools read.

A `QueueDatabase` and its `OfflineQueue`s belong to one thread (the device's driver loop);
the module-level readers open their own connections.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rtds.logs import RateLimitedLog

log = logging.getLogger(__name__)
_eviction_log = RateLimitedLog(log, interval_s=10.0)

FLEET_FILE_NAME = "fleet_queue.db"
BUSY_TIMEOUT_MS = 5_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sequences (
    device_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evictions (
    device_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evictions_device ON evictions (device_id, last_seq);
CREATE TABLE IF NOT EXISTS device_stats (
    device_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    generated INTEGER NOT NULL,
    sent INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    queued INTEGER NOT NULL,
    evicted INTEGER NOT NULL,
    reconnects INTEGER NOT NULL,
    skipped_slots INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
"""


def device_file(queue_dir: str | Path, device_id: str) -> Path:
    return Path(queue_dir) / f"{device_id}_queue.db"


def fleet_file(queue_dir: str | Path) -> Path:
    return Path(queue_dir) / FLEET_FILE_NAME


@dataclass(slots=True)
class DeviceStats:
    """One device's counters. generated/sent/acked/evicted/reconnects count since the queue was created."""

    device_id: str
    state: str = "starting"
    generated: int = 0
    sent: int = 0
    acked: int = 0
    queued: int = 0
    evicted: int = 0
    reconnects: int = 0
    skipped_slots: int = 0
    next_seq: int = 0
    pid: int = 0
    updated_at: float = 0.0


_STATS_COLUMNS = tuple(DeviceStats.__dataclass_fields__)
_UPSERT_STATS = (
    f"INSERT OR REPLACE INTO device_stats ({', '.join(_STATS_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _STATS_COLUMNS)})"
)


class QueueDatabase:
    """One SQLite file holding the offline queues of one or many devices."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.connection.execute("PRAGMA journal_mode = WAL")
        self.connection.execute("PRAGMA synchronous = NORMAL")
        self.connection.executescript(SCHEMA)
        self._depth = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction; nested uses join the outer one (a fleet batches all devices per tick)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.connection
            finally:
                self._depth -= 1
            return
        self.connection.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self.connection
        except BaseException:
            self._depth = 0
            self.connection.execute("ROLLBACK")
            raise
        self._depth = 0
        self.connection.execute("COMMIT")

    def queue(self, device_id: str, max_messages: int) -> OfflineQueue:
        return OfflineQueue(self, device_id, max_messages)

    def load_stats(self, device_id: str) -> DeviceStats:
        row = self.connection.execute(
            f"SELECT {', '.join(_STATS_COLUMNS)} FROM device_stats WHERE device_id = ?", (device_id,)
        ).fetchone()
        return DeviceStats(*row) if row else DeviceStats(device_id)

    def save_stats(self, stats: Iterable[DeviceStats]) -> None:
        rows = [tuple(asdict(item).values()) for item in stats]
        with self.transaction() as connection:
            connection.executemany(_UPSERT_STATS, rows)

    def close(self) -> None:
        self.connection.close()


class OfflineQueue:
    """One device's rows in a `QueueDatabase`: append, read in seq order, remove on PUBACK.

    `sent_through` is the highest seq handed to the MQTT client in this process. Eviction never
    takes those rows: the client already holds them and resends them itself after a reconnect,
    so they cannot be lost by the queue any more, while dropping their rows would make a
    `kill -9` lose them. The cap therefore applies to the messages not yet handed over, and the
    queue may briefly hold `max_messages` plus the in-flight window.
    """

    def __init__(self, database: QueueDatabase, device_id: str, max_messages: int) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.database = database
        self.device_id = device_id
        self.max_messages = max_messages
        self.sent_through = -1
        self.evicted = 0
        connection = database.connection
        row = connection.execute("SELECT next_seq FROM sequences WHERE device_id = ?", (device_id,)).fetchone()
        self.next_seq: int = row[0] if row else 0
        self.size: int = connection.execute(
            "SELECT COUNT(*) FROM messages WHERE device_id = ?", (device_id,)
        ).fetchone()[0]
        oldest = connection.execute("SELECT MIN(seq) FROM messages WHERE device_id = ?", (device_id,)).fetchone()[0]
        # Rows from before a restart are older than anything sent in this process: send them again.
        self.sent_through = (oldest - 1) if oldest is not None else self.next_seq - 1

    @property
    def unsent(self) -> int:
        """Rows not yet handed to the MQTT client (the backlog a flush works through)."""
        connection = self.database.connection
        row = connection.execute(
            "SELECT COUNT(*) FROM messages WHERE device_id = ? AND seq > ?", (self.device_id, self.sent_through)
        ).fetchone()
        return int(row[0])

    def append(self, build_payload: Callable[[int], bytes], *, now: float | None = None) -> int:
        """Store the message for the next seq (built by `build_payload(seq)`); return that seq.

        The insert, the seq counter and any eviction commit together.
        """
        with self.database.transaction() as connection:
            seq = self.next_seq
            connection.execute(
                "INSERT INTO messages (device_id, seq, payload) VALUES (?, ?, ?)",
                (self.device_id, seq, build_payload(seq)),
            )
            connection.execute(
                "INSERT INTO sequences (device_id, next_seq) VALUES (?, ?) "
                "ON CONFLICT (device_id) DO UPDATE SET next_seq = excluded.next_seq",
                (self.device_id, seq + 1),
            )
            self.size += 1
            if self.size > self.max_messages:
                self._evict_oldest_unsent(
                    connection, self.size - self.max_messages, time.time() if now is None else now
                )
        self.next_seq = seq + 1
        return seq

    def peek_unsent(self, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` rows after `sent_through`, oldest first."""
        if limit <= 0:
            return []
        rows = self.database.connection.execute(
            "SELECT seq, payload FROM messages WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (self.device_id, self.sent_through, limit),
        ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def mark_sent(self, seq: int) -> None:
        self.sent_through = max(self.sent_through, seq)

    def remove(self, seqs: Sequence[int]) -> int:
        """Delete acknowledged rows; returns how many existed."""
        if not seqs:
            return 0
        with self.database.transaction() as connection:
            before = connection.total_changes
            connection.executemany(
                "DELETE FROM messages WHERE device_id = ? AND seq = ?", [(self.device_id, seq) for seq in seqs]
            )
            removed = connection.total_changes - before
        self.size -= removed
        return removed

    def all_seqs(self) -> list[int]:
        rows = self.database.connection.execute(
            "SELECT seq FROM messages WHERE device_id = ? ORDER BY seq", (self.device_id,)
        ).fetchall()
        return [int(row[0]) for row in rows]

    def _evict_oldest_unsent(self, connection: sqlite3.Connection, count: int, now: float) -> None:
        victims = [
            int(row[0])
            for row in connection.execute(
                "SELECT seq FROM messages WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (self.device_id, self.sent_through, count),
            )
        ]
        if not victims:
            return
        connection.executemany(
            "DELETE FROM messages WHERE device_id = ? AND seq = ?", [(self.device_id, seq) for seq in victims]
        )
        self.size -= len(victims)
        self.evicted += len(victims)
        for first, last in _ranges(victims):
            self._record_eviction(connection, first, last, now)
        _eviction_log.warning(
            f"evict:{self.device_id}",
            "%s: offline queue is full (%d messages); evicted the oldest unsent, up to seq %d (%d evicted since start). "
            "The broker has been unreachable for a while; raise DEVICE_QUEUE_MAX_MESSAGES to keep more.",
            self.device_id,
            self.max_messages,
            victims[-1],
            self.evicted,
        )

    def _record_eviction(self, connection: sqlite3.Connection, first: int, last: int, now: float) -> None:
        count = last - first + 1
        # Evictions during one outage are contiguous: extend the range rather than add a row per message.
        extended = connection.execute(
            "UPDATE evictions SET last_seq = ?, count = count + ?, at = ? WHERE device_id = ? AND last_seq = ?",
            (last, count, now, self.device_id, first - 1),
        ).rowcount
        if not extended:
            connection.execute(
                "INSERT INTO evictions (device_id, first_seq, last_seq, count, at) VALUES (?, ?, ?, ?, ?)",
                (self.device_id, first, last, count, now),
            )


def _ranges(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted seqs -> contiguous (first, last) ranges."""
    ranges: list[tuple[int, int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def _queue_files(queue_dir: str | Path) -> list[Path]:
    folder = Path(queue_dir)
    return sorted(folder.glob("*.db")) if folder.is_dir() else []


def _read_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error:
        return []
    try:
        return connection.execute(sql).fetchall()
    except sqlite3.Error as exc:
        log.debug("skipping %s: %s", path, exc)
        return []
    finally:
        connection.close()


def read_stats(queue_dir: str | Path) -> dict[str, dict[str, Any]]:
    """device_id -> its device_stats row (plus the exact next_seq and acked_through), from every queue file."""
    stats: dict[str, dict[str, Any]] = {}
    # next_seq and generated come from `sequences`, which commits with every insert; the other
    # counters are saved about once a second, so after a kill -9 they trail by up to a second.
    columns = ", ".join(f"s.{name}" for name in _STATS_COLUMNS if name not in ("next_seq", "generated"))
    # Messages leave the queue only on their PUBACK and go out in seq order, so every seq below the oldest one
    # still queued was acknowledged by the broker (or evicted): `acked_through`, -1 before the first.
    sql = (
        f"SELECT {columns}, COALESCE(q.next_seq, s.next_seq) AS next_seq, COALESCE(q.next_seq, s.generated), "
        "COALESCE((SELECT MIN(m.seq) FROM messages AS m WHERE m.device_id = s.device_id), "
        "COALESCE(q.next_seq, s.next_seq)) - 1 "
        "FROM device_stats AS s LEFT JOIN sequences AS q ON q.device_id = s.device_id"
    )
    names = (
        *(name for name in _STATS_COLUMNS if name not in ("next_seq", "generated")),
        "next_seq",
        "generated",
        "acked_through",
    )
    for path in _queue_files(queue_dir):
        for row in _read_rows(path, sql):
            entry = dict(zip(names, row, strict=True))
            previous = stats.get(entry["device_id"])
            if previous is None or entry["updated_at"] > previous["updated_at"]:
                stats[entry["device_id"]] = entry
    return stats


def read_evictions(queue_dir: str | Path) -> dict[str, list[tuple[int, int]]]:
    """device_id -> the (first_seq, last_seq) ranges its queue evicted, from every queue file."""
    evictions: dict[str, list[tuple[int, int]]] = {}
    for path in _queue_files(queue_dir):
        for device_id, first, last in _read_rows(path, "SELECT device_id, first_seq, last_seq FROM evictions"):
            evictions.setdefault(device_id, []).append((int(first), int(last)))
    for ranges in evictions.values():
        ranges.sort()
    return evictions
