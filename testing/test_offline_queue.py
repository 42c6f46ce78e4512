"""The durable offline queue: seq, order, the cap and its evictions, durability across kill -9."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devices.offline_queue import (
    QueueDatabase,
    device_file,
    fleet_file,
    read_evictions,
    read_stats,
)
from rtds.broker import PROJECT_ROOT


def payload(seq: int) -> bytes:
    return f'{{"seq": {seq}}}'.encode()


def open_queue(path: Path, device_id: str = "vehicle_01", cap: int = 100):
    database = QueueDatabase(path)
    return database, database.queue(device_id, cap)


def test_seq_starts_at_0_rises_by_one_and_survives_reopening(tmp_path: Path) -> None:
    path = device_file(tmp_path, "vehicle_01")
    database, queue = open_queue(path)
    assert [queue.append(payload) for _ in range(5)] == [0, 1, 2, 3, 4]
    queue.remove([0, 1])
    database.close()

    database, queue = open_queue(path)
    assert queue.next_seq == 5
    assert queue.size == 3
    assert queue.append(payload) == 5
    assert queue.peek_unsent(10) == [(seq, payload(seq)) for seq in (2, 3, 4, 5)]
    database.close()


def test_rows_handed_to_the_client_are_not_read_again_until_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    database, queue = open_queue(path)
    for _ in range(4):
        queue.append(payload)
    first = queue.peek_unsent(2)
    queue.mark_sent(first[-1][0])
    assert [seq for seq, _ in queue.peek_unsent(10)] == [2, 3]
    database.close()

    # A new process cannot know what the old one's MQTT client delivered: it sends every row again.
    database, queue = open_queue(path)
    assert [seq for seq, _ in queue.peek_unsent(10)] == [0, 1, 2, 3]
    database.close()


def test_a_full_queue_evicts_the_oldest_counts_them_and_records_the_seq_range(tmp_path: Path) -> None:
    database, queue = open_queue(device_file(tmp_path, "vehicle_01"), cap=5)
    for _ in range(12):
        queue.append(payload)

    assert queue.size == 5
    assert queue.evicted == 7
    assert queue.all_seqs() == [7, 8, 9, 10, 11]
    # One row for the contiguous range, not one per message.
    rows = database.connection.execute("SELECT device_id, first_seq, last_seq, count FROM evictions").fetchall()
    assert rows == [("vehicle_01", 0, 6, 7)]
    assert read_evictions(tmp_path) == {"vehicle_01": [(0, 6)]}
    database.close()


def test_eviction_spares_rows_already_handed_to_the_mqtt_client(tmp_path: Path) -> None:
    database, queue = open_queue(tmp_path / "q.db", cap=5)
    for _ in range(5):
        queue.append(payload)
    queue.mark_sent(1)  # seq 0 and 1 are in flight: paho holds them and resends them itself
    for _ in range(3):
        queue.append(payload)

    assert queue.all_seqs() == [0, 1, 5, 6, 7]
    assert queue.evicted == 3
    assert database.connection.execute("SELECT first_seq, last_seq FROM evictions").fetchall() == [(2, 4)]
    database.close()


def test_the_eviction_is_logged_once_per_burst(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    database, queue = open_queue(tmp_path / "q.db", device_id="vehicle_log", cap=2)
    with caplog.at_level("WARNING", logger="devices.offline_queue"):
        for _ in range(50):
            queue.append(payload)
    warnings = [record for record in caplog.records if "offline queue is full" in record.getMessage()]
    assert len(warnings) == 1
    assert "vehicle_log" in warnings[0].getMessage()
    assert queue.evicted == 48
    database.close()


def test_a_fleet_file_keeps_each_devices_rows_seq_and_evictions_apart(tmp_path: Path) -> None:
    database = QueueDatabase(fleet_file(tmp_path))
    first, second = database.queue("vehicle_01", 3), database.queue("vehicle_02", 3)
    with database.transaction():  # a fleet tick: every device's insert in one transaction
        for _ in range(4):
            first.append(payload)
        second.append(payload)
    assert (first.next_seq, second.next_seq) == (4, 1)
    assert first.all_seqs() == [1, 2, 3] and second.all_seqs() == [0]
    database.close()
    assert read_evictions(tmp_path) == {"vehicle_01": [(0, 0)]}


def test_a_failed_transaction_neither_stores_the_row_nor_advances_the_seq(tmp_path: Path) -> None:
    database, queue = open_queue(tmp_path / "q.db")

    def broken(seq: int) -> bytes:
        raise RuntimeError("cannot build")

    with pytest.raises(RuntimeError):
        queue.append(broken)
    assert queue.append(payload) == 0
    assert queue.all_seqs() == [0]
    database.close()


def test_read_stats_finds_every_device_in_every_queue_file(tmp_path: Path) -> None:
    single = QueueDatabase(device_file(tmp_path, "vehicle_01"))
    fleet = QueueDatabase(fleet_file(tmp_path))
    stats_one = single.load_stats("vehicle_01")
    stats_one.sent, stats_one.state = 12, "online"
    single.save_stats([stats_one])
    stats_two = fleet.load_stats("vehicle_02")
    stats_two.evicted, stats_two.state = 3, "offline"
    fleet.save_stats([stats_two])
    (tmp_path / "notes.db").write_bytes(b"")  # not a queue: skipped

    stats = read_stats(tmp_path)

    assert stats["vehicle_01"]["sent"] == 12 and stats["vehicle_01"]["state"] == "online"
    assert stats["vehicle_02"]["evicted"] == 3 and stats["vehicle_02"]["state"] == "offline"
    assert read_stats(tmp_path / "missing") == {}
    single.close()
    fleet.close()


def test_committed_rows_and_seq_survive_kill_minus_9(tmp_path: Path) -> None:
    path = device_file(tmp_path, "vehicle_01")
    script = textwrap.dedent(
        f"""
        import os, signal
        from devices.offline_queue import QueueDatabase
        queue = QueueDatabase({str(path)!r}).queue("vehicle_01", 1000)
        for _ in range(200):
            queue.append(lambda seq: b"x" * 300)
        queue.remove(list(range(50)))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == -9

    database, queue = open_queue(path, cap=1000)
    assert queue.next_seq == 200
    assert queue.all_seqs() == list(range(50, 200))
    database.close()
