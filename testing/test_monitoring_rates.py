"""Every tool's messages per second is over the time the points cover, not over the period asked for:
six minutes of data read with `--duration 16h` (the README's report line) give the fleet's rate."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitoring import (
    check_influxdb_performance,
    collect_latency_data,
    generate_latency_report,
    investigate_spike,
    monitor_latency,
)
from rtds.schema import TelemetryRecord
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import isolated_settings, settings_env

DEVICES = 4
STEP_S = 0.5
DATA_S = 360.0
RATE_PER_S = DEVICES / STEP_S
SLOW_FROM_S, SLOW_TO_S = 200.0, 220.0  # seconds into the data: the store writes 3 s late (a spike)
WINDOW = ["--duration", "16h"]


@pytest.fixture
def six_minutes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> float:
    """4 devices every 0.5 s for the 6 minutes before now - 5 s, each instant written as one batch;
    returns the last point's time."""
    settings = isolated_settings(tmp_path)
    store = SQLiteStore(settings.sqlite_path)
    rng = random.Random(11)
    last = time.time() - 5
    first = last - DATA_S
    for step in range(int(DATA_S / STEP_S) + 1):
        t = first + step * STEP_S
        records = [
            TelemetryRecord(f"car_{d}", t, 30.0, seq=step, collector_receive_time=t + rng.uniform(0.002, 0.03))
            for d in range(DEVICES)
        ]
        delay = 3.0 if SLOW_FROM_S <= t - first < SLOW_TO_S else 0.005
        store.write(records, collector="python", write_time=max(r.collector_receive_time for r in records) + delay)
    store.close()
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    return last


def run_json(main: Callable[[list[str]], int], args: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    capsys.readouterr()
    main([*args, "--json"])
    return json.loads(capsys.readouterr().out)


def test_rates_are_over_the_time_the_points_cover(
    six_minutes: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_json(generate_latency_report.main, [*WINDOW, "--output-dir", str(tmp_path / "r")], capsys)
    assert report["overall"]["count"] == DEVICES * (DATA_S / STEP_S + 1)
    assert report["overall"]["messages_per_s"] == pytest.approx(RATE_PER_S, rel=1e-3)
    assert report["covered"]["duration_s"] == pytest.approx(DATA_S, abs=0.01)
    assert report["window_s"] == 5  # about 120 windows over the 6 minutes, not over 16 h
    generate_latency_report.main([*WINDOW, "--output-dir", str(tmp_path / "r")])
    assert "covering 6.0 min, 8.0 msg/s" in capsys.readouterr().out
    markdown = (tmp_path / "r" / "latency_report.md").read_text()
    assert "8.0 msg/s over the time they cover" in markdown and "(6.0 min)" in markdown

    snapshot = run_json(monitor_latency.main, WINDOW, capsys)
    assert snapshot["latency"]["messages_per_s"] == pytest.approx(RATE_PER_S, rel=1e-3)

    [sample] = run_json(collect_latency_data.main, WINDOW, capsys)["samples"]
    assert sample["messages_per_s"] == pytest.approx(RATE_PER_S, rel=1e-3)

    perf = run_json(check_influxdb_performance.main, WINDOW, capsys)
    assert perf["points_per_s"]["mean"] == pytest.approx(RATE_PER_S, rel=1e-3)
    assert perf["points_per_s"]["window_s"] == 5
    # Every window the writes cover, the slow stretch aside, has the fleet's rate (a write is one instant).
    steady = [w["points_per_s"] for w in perf["points_per_s"]["series"] if w["points_per_s"] is not None]
    assert len(steady) >= DATA_S / 5 - 1
    assert sorted(steady)[len(steady) // 2] == pytest.approx(RATE_PER_S, rel=0.05)

    spikes = run_json(investigate_spike.main, WINDOW, capsys)
    assert spikes["overall"]["messages_per_s"] == pytest.approx(RATE_PER_S, rel=1e-3)
    [spike] = spikes["spikes"]
    assert spike["cause"].startswith("store slow")
    assert spike["published_per_s"] == pytest.approx(RATE_PER_S, rel=1e-3)
    assert spike["baseline_per_s"] == pytest.approx(RATE_PER_S, rel=1e-3)
