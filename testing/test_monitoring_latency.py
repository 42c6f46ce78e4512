"""The latency statistics against an independent calculation from the raw stored rows."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from monitoring.latency import choose_window_s, find_gaps, summarize, summarize_devices, summarize_windows
from monitoring.samples import read_samples
from rtds.schema import TelemetryRecord
from rtds.store.sqlite import SQLiteStore

START = 1_700_000_000.0
TARGET_MS = 2000.0


def reference_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks, written out by hand."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def reference_stats(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "count": len(ms),
        "min_ms": min(ms),
        "avg_ms": sum(ms) / len(ms),
        "p50_ms": reference_percentile(ms, 50),
        "p95_ms": reference_percentile(ms, 95),
        "p99_ms": reference_percentile(ms, 99),
        "max_ms": max(ms),
    }


def assert_stats(actual: dict, expected: dict) -> None:
    assert actual["count"] == expected["count"]
    for key in ("min_ms", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
        assert actual[key] == pytest.approx(expected[key], abs=0.002), key


@pytest.fixture
def stored(tmp_path: Path) -> tuple[SQLiteStore, Path]:
    """6 devices at 2 Hz for 120 s, all devices on the same instants; a 20 s outage replayed afterwards;
    some points without a receive time."""
    rng = random.Random(7)
    path = tmp_path / "telemetry.db"
    store = SQLiteStore(path)
    batch: list[TelemetryRecord] = []
    replay: list[TelemetryRecord] = []
    for step in range(240):
        t = START + step * 0.5
        for device in range(6):
            device_id = f"car_{device}"
            if START + 60 <= t < START + 80:
                replay.append(
                    TelemetryRecord(device_id, t, 10.0, seq=step, replayed=True, collector_receive_time=START + 81)
                )
                continue
            receive = None if rng.random() < 0.05 else t + rng.uniform(0.001, 0.050) * (1 + device)
            batch.append(TelemetryRecord(device_id, t, 10.0, seq=step, collector_receive_time=receive))
        if step % 2:
            store.write(batch, collector="python", write_time=t + 0.3 + rng.uniform(0.0, 0.4))
            batch = []
    store.write(replay, collector="python", write_time=START + 81.5)
    yield store, path
    store.close()


def raw_rows(path: Path, since: float, until: float) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT device_id, time, publish_timestamp, collector_receive_time, write_time, replayed "
            "FROM device_data WHERE time >= ? AND time < ?",
            (since, until),
        ).fetchall()


def test_summary_equals_the_independent_calculation(stored: tuple[SQLiteStore, Path]) -> None:
    store, path = stored
    since, until = START, START + 120
    # A chunk of 7 never lines up with the 6 points per instant, so paging crosses instants.
    samples = read_samples(store, since, until, chunk_size=7)
    rows = raw_rows(path, since, until)
    assert len(samples) == len(rows) == 1440

    summary = summarize(samples, since, until, TARGET_MS).as_dict()
    end_to_end = [write - publish for _, _, publish, _, write, _ in rows]
    live = [write - publish for _, _, publish, _, write, replayed in rows if not replayed]
    replayed = [write - publish for _, _, publish, _, write, was_replayed in rows if was_replayed]
    receive = [r - p for _, _, p, r, _, _ in rows if r is not None]
    store_delay = [w - r for _, _, _, r, w, _ in rows if r is not None]

    assert_stats(summary["end_to_end"], reference_stats(end_to_end))
    assert_stats(summary["live"], reference_stats(live))
    assert_stats(summary["replayed"], reference_stats(replayed))
    assert_stats(summary["receive_delay"], reference_stats(receive))
    assert_stats(summary["store_delay"], reference_stats(store_delay))
    assert summary["replayed_count"] == len(replayed) == 240
    assert summary["messages_per_s"] == pytest.approx(len(rows) / 120)
    # Live P95 is well under 2 s while the replayed points waited about 20 s: compliance follows the live ones.
    assert summary["compliant"] is True
    assert summary["compliant_all"] is (reference_percentile([v * 1000 for v in end_to_end], 95) < TARGET_MS)


def test_windows_and_devices_equal_the_independent_calculation(stored: tuple[SQLiteStore, Path]) -> None:
    store, path = stored
    since, until = START - 20, START + 130
    samples = read_samples(store, since, until, chunk_size=50)
    windows = summarize_windows(samples, since, until, 15.0, TARGET_MS)
    assert [w.start for w in windows] == [since + 15 * i for i in range(10)]
    assert windows[-1].end == until
    for window in windows:
        rows = raw_rows(path, window.start, window.end)
        assert window.count == len(rows)
        if rows:
            assert_stats(window.end_to_end.as_dict(), reference_stats([w - p for _, _, p, _, w, _ in rows]))
        else:
            assert window.end_to_end.p95_ms is None
    assert windows[0].count == 0  # before the first point

    devices = summarize_devices(samples, TARGET_MS, since, until)
    assert sorted(devices) == [f"car_{i}" for i in range(6)]
    for name, summary in devices.items():
        mine = [w - p for device, _, p, _, w, _ in raw_rows(path, since, until) if device == name]
        assert_stats(summary.end_to_end.as_dict(), reference_stats(mine))


def test_a_limit_smaller_than_one_instant_still_reads_every_point_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    records = [TelemetryRecord(f"d{i:02d}", START + step, 1.0, seq=step) for step in range(3) for i in range(5)]
    store.write(records, collector="python", write_time=START + 10)
    samples = read_samples(store, START, START + 5, chunk_size=2)
    store.close()
    pairs = sorted(zip((samples.device_ids[c] for c in samples.device), samples.time, strict=True))
    assert pairs == sorted((r.device_id, r.timestamp) for r in records)


def test_gaps_are_silences_longer_than_the_threshold() -> None:
    times = np.array([0.0, 1.0, 2.0, 9.5, 10.0, np.nan, 30.0])
    gaps = find_gaps(times, 5.0)
    assert [(g.start, g.end) for g in gaps] == [(2.0, 9.5), (10.0, 30.0)]
    assert find_gaps(times, 25.0) == []


def test_window_width_is_round_and_bounded() -> None:
    assert choose_window_s(60) == 1
    assert choose_window_s(16 * 3600) == 600
    assert 16 * 3600 / choose_window_s(16 * 3600) <= 120
