"""SQLite, the embedded default store: one WAL-mode file, one writing process, many readers.

Table `device_data` has one row per point, unique on (device_id, time) where time is the
device's event time, so a redelivered message replaces its row. Table `device_latest` keeps
each device's newest time so that "latest per device" stays cheap with millions of rows.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
import threading
import time as clock
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rtds.errors import StoreMisconfigured, StoreRejected, StoreUnavailable
from rtds.schema import FIELD_TYPES, MEASUREMENT, STORED_FIELDS, TelemetryRecord
from rtds.settings import Settings
from rtds.store import LatencySample, StoreHealth

_SQL_TYPES = {float: "REAL", int: "INTEGER", bool: "INTEGER"}
COLUMNS = ("device_id", "time", "collector", "detection_label", *STORED_FIELDS)

# A rowid table with a UNIQUE index, not a WITHOUT ROWID table clustered on (device_id, time): rows from many
# devices then append to the table instead of landing on a different leaf page each (page writes per row 2.7 ->
# 1.6; 14 -> 8 µs of CPU per row). INSERT OR REPLACE still replaces a redelivered point. A file created with the
# earlier WITHOUT ROWID table keeps it (CREATE ... IF NOT EXISTS) and works unchanged, at the earlier speed.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {MEASUREMENT} (
    device_id TEXT NOT NULL,
    time REAL NOT NULL,
    collector TEXT NOT NULL,
    detection_label TEXT,
    {", ".join(f"{name} {_SQL_TYPES[kind]}" for name, kind in FIELD_TYPES.items())},
    UNIQUE (device_id, time)
);
CREATE INDEX IF NOT EXISTS {MEASUREMENT}_time ON {MEASUREMENT} (time);
CREATE TABLE IF NOT EXISTS device_latest (
    device_id TEXT PRIMARY KEY,
    time REAL NOT NULL
) WITHOUT ROWID;
"""

_INSERT = f"INSERT OR REPLACE INTO {MEASUREMENT} ({', '.join(COLUMNS)}) VALUES "
_UPSERT_LATEST = "INSERT INTO device_latest (device_id, time) VALUES "
_UPSERT_LATEST_CONFLICT = (
    " ON CONFLICT (device_id) DO UPDATE SET time = excluded.time WHERE excluded.time > device_latest.time"
)
# Rows per INSERT statement. Python's sqlite3 releases the GIL around every step, and executemany steps
# once per row: with the collector's MQTT thread busy, a 250-row executemany then took 10x longer, waiting
# for the GIL 250 times. Multi-row statements of power-of-two sizes need a few steps and a few cached plans.
_MAX_ROWS_PER_STATEMENT = 256
# The writer's page cache and WAL size. With SQLite's defaults (2 MB cache, a checkpoint every 1,000 pages)
# a 200,000-row drain re-read index pages from the OS and checkpointed every few batches: 36 µs per row on the
# benchmark machine, 21 µs with these (bench/README.md). Readers keep the default cache.
_WRITER_PRAGMAS = ("PRAGMA cache_size = -65536", "PRAGMA wal_autocheckpoint = 10000")
_WRITE_BUSY_TIMEOUT_MS = 2_000
_READ_BUSY_TIMEOUT_MS = 5_000
_RETRYABLE_MESSAGES = ("locked", "busy", "readonly", "read-only", "disk i/o", "unable to open", "full")
# The file is not ours, or not our schema: no retry helps and no batch is to blame; an operator must act.
_MISCONFIGURED_MESSAGES = ("not a database", "file is encrypted", "no such table", "no such column", "has no column")


def connect(
    path: str | Path, *, busy_timeout_ms: int, synchronous: str = "full", schema: str = SCHEMA
) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place, safe while other processes open the same file.

    Switching a new file to WAL and creating its tables are writes that SQLite may refuse at once with
    "database is locked" while another process does the same (no busy wait for a journal-mode change,
    nor for a read lock that wants to become a write lock): seen with `--workers 2` on a new file. The
    switch is retried until the busy timeout, and a schema refused that way is created again in a write
    transaction from the start, which does wait.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        deadline = clock.monotonic() + busy_timeout_ms / 1000
        while True:
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or clock.monotonic() > deadline:
                    raise
                clock.sleep(0.01)
        connection.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
        try:
            connection.executescript(schema)  # nothing to write, and no lock to take, once the schema exists
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            connection.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")
    except BaseException:
        connection.close()
        raise
    return connection


class SQLiteStore:
    """The store interface over one SQLite file."""

    def __init__(self, path: str | Path, *, synchronous: str = "full") -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Creating the file and schema up front makes a read-only start (dashboard first) work.
        connect(self.path, busy_timeout_ms=_READ_BUSY_TIMEOUT_MS, synchronous=synchronous).close()

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLiteStore:
        return cls(settings.sqlite_path, synchronous=settings.sqlite_synchronous)

    # --- writing -------------------------------------------------------------------------

    def write(self, records: Sequence[TelemetryRecord], *, collector: str, write_time: float) -> None:
        rows = [_row(record, collector, write_time) for record in records]
        newest: dict[str, float] = {}
        for record in records:
            if record.timestamp > newest.get(record.device_id, float("-inf")):
                newest[record.device_id] = record.timestamp
        with self._write_lock:
            try:
                if self._writer is None:
                    self._writer = connect(
                        self.path, busy_timeout_ms=_WRITE_BUSY_TIMEOUT_MS, synchronous=self._synchronous
                    )
                    for pragma in _WRITER_PRAGMAS:
                        self._writer.execute(pragma)
                writer = self._writer
                writer.execute("BEGIN IMMEDIATE")
                try:
                    largest = _rows_per_statement(writer)
                    for chunk in _chunks(rows, largest):
                        writer.execute(_values_sql(_INSERT, len(COLUMNS), len(chunk)), _flat(chunk))
                    for chunk in _chunks(list(newest.items()), largest):
                        sql = _values_sql(_UPSERT_LATEST, 2, len(chunk)) + _UPSERT_LATEST_CONFLICT
                        writer.execute(sql, _flat(chunk))
                    writer.execute("COMMIT")
                except BaseException:
                    if writer.in_transaction:
                        writer.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._drop_writer_if_broken(exc)
                message = f"SQLite write to {self.path} failed: {exc}"
                if _is_misconfigured(exc):
                    raise StoreMisconfigured(
                        f"{message}. SQLITE_PATH must name an SQLite file written by this project; "
                        "move the file away or point SQLITE_PATH at a new one"
                    ) from exc
                if _is_retryable(exc):
                    raise StoreUnavailable(message) from exc
                raise StoreRejected(message) from exc
            except (OverflowError, ValueError, TypeError) as exc:
                # A value SQLite cannot bind (an integer beyond 64 bits): the batch's content is at fault.
                raise StoreRejected(f"SQLite cannot store this batch: {exc}") from exc
            except OSError as exc:
                raise StoreUnavailable(f"cannot open {self.path} for writing: {exc}") from exc

    def ready(self) -> bool:
        """SQLite has nothing cheaper to ask than the write itself: a locked or unwritable file shows only then."""
        return True

    def _drop_writer_if_broken(self, exc: sqlite3.Error) -> None:
        if self._writer is not None and not isinstance(exc, sqlite3.IntegrityError):
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None

    # --- reading -------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._readers, "connection", None)
        if connection is None:
            connection = connect(self.path, busy_timeout_ms=_READ_BUSY_TIMEOUT_MS, synchronous=self._synchronous)
            connection.row_factory = sqlite3.Row
            self._readers.connection = connection
            with self._readers_lock:
                self._all_readers.append(connection)
        return connection

    def latest(self, device_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        query = (
            f"SELECT d.* FROM device_latest AS l JOIN {MEASUREMENT} AS d "
            "ON d.device_id = l.device_id AND d.time = l.time"
        )
        parameters: list[Any] = []
        if device_ids is not None:
            if not device_ids:
                return []
            query += f" WHERE l.device_id IN ({', '.join('?' for _ in device_ids)})"
            parameters.extend(device_ids)
        query += " ORDER BY l.device_id"
        return [_row_dict(row) for row in self._reader().execute(query, parameters)]

    def history(
        self, device_id: str, since: float, fields: Sequence[str] = ("speed",), every_s: float | None = None
    ) -> list[dict[str, Any]]:
        columns = _checked_fields(fields)
        if every_s:
            selected = ", ".join(f"AVG({name}) AS {name}" for name in columns)
            query = (
                f"SELECT MAX(time) AS time, {selected} FROM {MEASUREMENT} "
                "WHERE device_id = ? AND time >= ? GROUP BY CAST(time / ? AS INTEGER) ORDER BY time"
            )
            parameters: tuple[Any, ...] = (device_id, since, every_s)
        else:
            query = (
                f"SELECT time, {', '.join(columns)} FROM {MEASUREMENT} WHERE device_id = ? AND time >= ? ORDER BY time"
            )
            parameters = (device_id, since)
        return [dict(row) for row in self._reader().execute(query, parameters)]

    def last_seen(self) -> dict[str, float]:
        return {row[0]: row[1] for row in self._reader().execute("SELECT device_id, time FROM device_latest")}

    def latency_samples(
        self, since: float, until: float | None = None, *, limit: int = 100_000, device_id: str | None = None
    ) -> list[LatencySample]:
        query = (
            "SELECT device_id, time, seq, publish_timestamp, collector_receive_time, write_time, replayed "
            f"FROM {MEASUREMENT} WHERE time >= ?"
        )
        parameters: list[Any] = [since]
        if until is not None:
            query += " AND time < ?"
            parameters.append(until)
        if device_id is not None:
            query += " AND device_id = ?"
            parameters.append(device_id)
        query += " ORDER BY time LIMIT ?"
        parameters.append(int(limit))
        cursor = self._reader().execute(query, parameters)
        cursor.row_factory = None
        return [
            LatencySample(
                row[0], row[1], row[2], row[3] if row[3] is not None else row[1], row[4], row[5], bool(row[6])
            )
            for row in cursor
        ]

    def health(self) -> StoreHealth:
        started = clock.monotonic()
        try:
            count = self._reader().execute("SELECT COUNT(*) FROM device_latest").fetchone()[0]
        except sqlite3.Error as exc:
            return StoreHealth(False, "sqlite", f"cannot read {self.path}: {exc}", url=str(self.path))
        elapsed_ms = (clock.monotonic() - started) * 1000
        return StoreHealth(
            True,
            "sqlite",
            f"{count} devices in {self.path}",
            url=str(self.path),
            extra={"query_ms": round(elapsed_ms, 2)},
        )

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        with self._readers_lock:
            for connection in self._all_readers:
                with contextlib.suppress(sqlite3.ProgrammingError):
                    connection.close()
            self._all_readers.clear()
        self._readers = threading.local()


def _rows_per_statement(connection: sqlite3.Connection) -> int:
    """The largest power of two up to 256 whose rows fit SQLite's bound-variable limit (999 before 3.32)."""
    fitting = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS)
    size = _MAX_ROWS_PER_STATEMENT
    while size > max(fitting, 1):
        size //= 2
    return size


def _chunks(rows: Sequence[tuple[Any, ...]], largest: int) -> Iterator[Sequence[tuple[Any, ...]]]:
    """Slices of power-of-two lengths, largest first (250 rows -> 128, 64, 32, 16, 8, 2)."""
    start = 0
    size = largest
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        yield rows[start : start + size]
        start += size


@functools.cache
def _values_sql(prefix: str, columns: int, rows: int) -> str:
    row = "(" + ", ".join("?" * columns) + ")"
    return prefix + ", ".join([row] * rows)


def _flat(rows: Sequence[tuple[Any, ...]]) -> list[Any]:
    return list(itertools.chain.from_iterable(rows))


def _row(record: TelemetryRecord, collector: str, write_time: float) -> tuple[Any, ...]:
    return (
        record.device_id,
        record.timestamp,
        collector,
        record.detection_label,
        record.speed,
        record.cpu_usage,
        record.ram_usage,
        record.memory_total,
        record.memory_used,
        record.memory_available,
        record.memory_percent,
        record.disk_total,
        record.disk_used,
        record.disk_free,
        record.disk_percent,
        record.network_bytes_sent,
        record.network_bytes_recv,
        record.detection_confidence,
        record.seq,
        int(record.replayed),
        record.timestamp,
        record.collector_receive_time,
        write_time,
    )


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    values = dict(row)
    values["replayed"] = bool(values.get("replayed"))
    return values


def _checked_fields(names: Sequence[str]) -> list[str]:
    unknown = [name for name in names if name not in FIELD_TYPES]
    if unknown or not names:
        raise ValueError(f"unknown field(s) {unknown}; choose from {', '.join(STORED_FIELDS)}")
    return list(names)


def _is_misconfigured(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(words in text for words in _MISCONFIGURED_MESSAGES)


def _is_retryable(exc: sqlite3.Error) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return True
    text = str(exc).lower()
    return any(word in text for word in _RETRYABLE_MESSAGES)
