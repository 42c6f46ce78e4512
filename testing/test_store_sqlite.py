"""The SQLite store (rtds/store/sqlite.py) and the dead-letter table (rtds/store/deadletter.py), on real files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtds.errors import StoreMisconfigured, StoreRejected, StoreUnavailable
from rtds.schema import MEASUREMENT, STORED_FIELDS, TelemetryRecord
from rtds.settings import load_settings
from rtds.store import StoreReader, StoreWriter, open_store
from rtds.store.deadletter import DeadLetter, DeadLetterStore
from rtds.store.sqlite import COLUMNS, SQLiteStore

T0 = 1_704_204_000.0


def reading(device_id: str, t: float, speed: float = 50.0, **fields: object) -> TelemetryRecord:
    return TelemetryRecord(device_id=device_id, timestamp=t, speed=speed, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "telemetry.db")
    yield opened
    opened.close()


def row_count(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {MEASUREMENT}").fetchone()[0]


def test_open_store_builds_the_sqlite_adapter_with_the_schema_in_wal_mode(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, environ={}).with_overrides(sqlite_path=str(tmp_path / "sub" / "t.db"))
    opened = open_store(settings)
    try:
        assert isinstance(opened, SQLiteStore)
        assert isinstance(opened, StoreWriter) and isinstance(opened, StoreReader)
        connection = sqlite3.connect(tmp_path / "sub" / "t.db")
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in connection.execute(f"PRAGMA table_info({MEASUREMENT})")]
        assert columns == list(COLUMNS)
        assert set(STORED_FIELDS) <= set(columns)
        connection.close()
    finally:
        opened.close()


@pytest.mark.parametrize(("setting", "pragma_value"), [("full", 2), ("normal", 1)])
def test_synchronous_setting_reaches_the_writer(tmp_path: Path, setting: str, pragma_value: int) -> None:
    opened = SQLiteStore(tmp_path / "t.db", synchronous=setting)
    opened.write([reading("a", T0)], collector="python", write_time=T0)
    assert opened._writer is not None
    assert opened._writer.execute("PRAGMA synchronous").fetchone()[0] == pragma_value
    opened.close()


def test_a_point_is_stored_with_tags_fields_and_timing(store: SQLiteStore) -> None:
    record = reading("vehicle_01", T0, 65.5, seq=3, cpu_usage=12.0, detection_label="car", replayed=True)
    record.collector_receive_time = T0 + 0.01
    store.write([record], collector="python", write_time=T0 + 0.02)
    (row,) = store.latest()
    assert row["device_id"] == "vehicle_01" and row["collector"] == "python" and row["detection_label"] == "car"
    assert row["time"] == T0 and row["publish_timestamp"] == T0
    assert row["speed"] == 65.5 and row["cpu_usage"] == 12.0 and row["memory_total"] is None
    assert row["seq"] == 3 and row["replayed"] is True
    assert row["collector_receive_time"] == T0 + 0.01 and row["write_time"] == T0 + 0.02


def test_writing_the_same_device_and_time_again_replaces_the_row(store: SQLiteStore) -> None:
    store.write([reading("a", T0, 10.0, seq=1), reading("a", T0 + 1, 11.0, seq=2)], collector="python", write_time=1.0)
    store.write([reading("a", T0, 99.0, seq=1)], collector="python", write_time=2.0)
    assert row_count(store.path) == 2
    rows = store.history("a", T0, fields=("speed", "seq", "write_time"))
    assert [(row["speed"], row["seq"], row["write_time"]) for row in rows] == [(99.0, 1, 2.0), (11.0, 2, 1.0)]
    # The same time on another device is another point.
    store.write([reading("b", T0)], collector="python", write_time=3.0)
    assert row_count(store.path) == 3


def test_large_batches_and_repeats_within_one_batch(store: SQLiteStore) -> None:
    """Batches are written as a few multi-row statements; the last of two equal keys in a batch wins."""
    batch = [reading(f"d{i % 7}", T0 + i, float(i), seq=i) for i in range(1_000)]
    batch.append(reading("d0", T0, 123.0, seq=9_999))
    store.write(batch, collector="python", write_time=0)
    assert row_count(store.path) == 1_000
    assert store.history("d0", T0, fields=("speed", "seq"))[0] == {"time": T0, "speed": 123.0, "seq": 9_999}
    assert store.last_seen() == {f"d{k}": T0 + max(i for i in range(1_000) if i % 7 == k) for k in range(7)}


def test_latest_is_the_newest_point_of_each_device_even_when_written_out_of_order(store: SQLiteStore) -> None:
    store.write([reading("a", T0 + 5, 5.0), reading("b", T0 + 1, 1.0)], collector="python", write_time=1.0)
    store.write([reading("a", T0 + 2, 2.0), reading("c", T0, 0.5)], collector="python", write_time=2.0)
    assert [(row["device_id"], row["speed"]) for row in store.latest()] == [("a", 5.0), ("b", 1.0), ("c", 0.5)]
    assert [row["device_id"] for row in store.latest(["c", "a", "zzz"])] == ["a", "c"]
    assert store.latest([]) == []


def test_history_since_a_time_oldest_first_and_averaged_per_window(store: SQLiteStore) -> None:
    store.write(
        [reading("a", T0 + i, float(i), cpu_usage=2.0 * i) for i in range(10)], collector="python", write_time=0
    )
    store.write([reading("b", T0 + 3, 100.0)], collector="python", write_time=0)
    rows = store.history("a", T0 + 7)
    assert rows == [{"time": T0 + 7, "speed": 7.0}, {"time": T0 + 8, "speed": 8.0}, {"time": T0 + 9, "speed": 9.0}]
    averaged = store.history("a", T0, fields=("speed", "cpu_usage"), every_s=5)
    assert [(row["speed"], row["cpu_usage"]) for row in averaged] == [(2.0, 4.0), (7.0, 14.0)]
    assert [row["time"] for row in averaged] == sorted(row["time"] for row in averaged)
    assert store.history("nobody", T0) == []


def test_history_refuses_names_that_are_not_fields(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="unknown field"):
        store.history("a", T0, fields=("speed); DROP TABLE device_data; --",))
    with pytest.raises(ValueError):
        store.history("a", T0, fields=())


def test_last_seen_is_each_devices_newest_time(store: SQLiteStore) -> None:
    store.write([reading("a", T0 + 1), reading("a", T0 + 3), reading("b", T0 + 2)], collector="python", write_time=0)
    store.write([reading("a", T0 + 2)], collector="python", write_time=0)
    assert store.last_seen() == {"a": T0 + 3, "b": T0 + 2}


def test_latency_samples_window_limit_and_device(store: SQLiteStore) -> None:
    records = []
    for i in range(6):
        record = reading("a" if i % 2 else "b", T0 + i, seq=i, replayed=i == 5)
        record.collector_receive_time = T0 + i + 0.001
        records.append(record)
    store.write(records, collector="python", write_time=T0 + 10)
    samples = store.latency_samples(T0 + 1, T0 + 5)
    assert [sample.seq for sample in samples] == [1, 2, 3, 4]  # since included, until excluded, oldest first
    first = samples[0]
    assert (first.device_id, first.time, first.publish_timestamp) == ("a", T0 + 1, T0 + 1)
    assert first.collector_receive_time == pytest.approx(T0 + 1.001) and first.write_time == T0 + 10
    assert [s.seq for s in store.latency_samples(T0, limit=2)] == [0, 1]
    assert [s.seq for s in store.latency_samples(T0, device_id="a")] == [1, 3, 5]
    assert [s.replayed for s in store.latency_samples(T0 + 4)] == [False, True]


def test_health_counts_devices(store: SQLiteStore) -> None:
    assert store.health().ok
    store.write([reading("a", T0), reading("b", T0)], collector="python", write_time=0)
    health = store.health()
    assert health.ok and health.backend == "sqlite" and "2 devices" in health.detail


def test_a_locked_database_is_unavailable_and_the_next_write_succeeds(store: SQLiteStore) -> None:
    store.write([reading("a", T0)], collector="python", write_time=0)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as raised:
            store.write([reading("a", T0 + 1)], collector="python", write_time=0)
        assert raised.value.retryable and "locked" in str(raised.value)
        assert time.monotonic() - started < 10
        # Readers are not blocked by a writer's lock in WAL mode.
        assert store.last_seen() == {"a": T0}
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.write([reading("a", T0 + 1)], collector="python", write_time=0)
    assert store.last_seen() == {"a": T0 + 1}


def test_a_value_sqlite_cannot_hold_rejects_the_batch_and_writes_none_of_it(store: SQLiteStore) -> None:
    batch = [reading("a", T0, seq=1), reading("a", T0 + 1, seq=2**64)]
    with pytest.raises(StoreRejected) as raised:
        store.write(batch, collector="python", write_time=0)
    assert not raised.value.retryable
    assert row_count(store.path) == 0
    store.write(batch[:1], collector="python", write_time=0)
    assert row_count(store.path) == 1


def test_a_file_that_is_not_a_database_is_misconfigured_not_a_bad_batch(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    opened = SQLiteStore(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(b"this is a text file, not SQLite " * 200)
    with pytest.raises(StoreMisconfigured) as raised:
        opened.write([reading("a", T0)], collector="python", write_time=0)
    assert raised.value.retryable and "SQLITE_PATH" in str(raised.value)
    opened.close()


READER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from rtds.store.sqlite import SQLiteStore
    store = SQLiteStore(sys.argv[1])
    print("ready", flush=True)
    seen, errors, deadline = [], 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            count = sum(len(store.history(row["device_id"], 0)) for row in store.latest())
            seen.append(count)
        except Exception as exc:
            errors += 1
            print("error", exc, flush=True)
        if seen and seen[-1] >= int(sys.argv[2]):
            break
    print("done", len(seen), len(set(seen)), seen[-1] if seen else -1, errors, flush=True)
    """
)


def test_a_reader_in_another_process_reads_consistently_while_this_one_writes(store: SQLiteStore) -> None:
    batches, per_batch = 60, 50
    store.write([reading("warmup", T0)], collector="python", write_time=0)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(store.path), str(batches * per_batch + 1)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        for batch in range(batches):
            records = [reading(f"d{i % 5}", T0 + batch + i / 1000) for i in range(per_batch)]
            store.write(records, collector="python", write_time=0)
        out, _ = reader.communicate(timeout=30)
    finally:
        reader.kill()
    words = out.split()
    assert words[0] == "done", out
    reads, distinct_counts, last_count, errors = map(int, words[1:])
    assert errors == 0, out
    assert last_count == batches * per_batch + 1
    assert distinct_counts > 1, "the reader saw the table grow while it was being written"
    assert reads >= distinct_counts


def test_readers_in_threads_of_one_store_while_it_writes(store: SQLiteStore) -> None:
    failures: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                store.latest()
                store.last_seen()
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for batch in range(30):
        store.write([reading(f"d{i}", T0 + batch) for i in range(20)], collector="python", write_time=0)
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(store.last_seen()) == 20


# --- the dead-letter table ------------------------------------------------------------------


def test_dead_letters_keep_reason_detail_topic_and_raw_payload(tmp_path: Path) -> None:
    letters = DeadLetterStore(tmp_path / "dead.db")
    raw = b"\xff\x00not json"
    letters.add([DeadLetter(T0, "not_json", "the payload is not JSON", "device/data/a", raw)])
    letters.add([DeadLetter(T0 + 1, "wrong_type", "speed", "device/data/b", b"{}") for _ in range(2)])
    letters.add([])
    assert letters.count_by_reason() == {"not_json": 1, "wrong_type": 2}
    (oldest,) = letters.recent(reason="not_json")
    assert oldest == DeadLetter(T0, "not_json", "the payload is not JSON", "device/data/a", raw)
    assert [letter.reason for letter in letters.recent(limit=2)] == ["wrong_type", "wrong_type"]
    letters.close()
    reopened = DeadLetterStore(tmp_path / "dead.db")
    assert reopened.count_by_reason() == {"not_json": 1, "wrong_type": 2}
    reopened.close()


def test_a_dead_letter_file_of_the_earlier_schema_is_read_and_written_in_place(tmp_path: Path) -> None:
    """Files written before payloads were bounded keep every row; their payloads are whole, so size and hash
    are those of the payload."""
    path = tmp_path / "dead.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, received_at REAL NOT NULL, reason TEXT NOT NULL, "
        "detail TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL);"
    )
    old.execute("INSERT INTO dead_letters (received_at, reason, detail, topic, payload) VALUES (?, ?, ?, ?, ?)",
                (T0, "not_json", "old", "device/data/a", b"{"))  # fmt: skip
    old.commit()
    old.close()
    letters = DeadLetterStore(path)
    letters.add([DeadLetter(T0 + 1, "not_json", "new", "device/data/a", b"x" * 10_000)])
    newest, oldest = letters.recent()
    letters.close()
    assert oldest == DeadLetter(T0, "not_json", "old", "device/data/a", b"{")
    assert (newest.payload, newest.payload_size) == (b"x" * 4096, 10_000)
