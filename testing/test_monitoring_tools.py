"""Each monitoring tool, run through its `main([...])` (or as a real process) with `--json`, on points
written straight into a store, where every timing is known; numbers are checked against the rows."""

from __future__ import annotations

import importlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devices.offline_queue import QueueDatabase, device_file
from monitoring import (
    check_delivery,
    check_influxdb_performance,
    collect_latency_data,
    generate_latency_report,
    monitor_latency,
)
from monitoring.delivery import check_device, subtract_ranges
from monitoring.latency import find_gaps
from monitoring.samples import sample_set_from
from monitoring.spikes import find_spikes
from rtds import cli
from rtds.broker import PROJECT_ROOT
from rtds.schema import TelemetryRecord
from rtds.settings import Settings
from rtds.store import LatencySample
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import isolated_settings, settings_env, wait_until

DEVICES = ("car_0", "car_1", "car_2", "car_3")
STEP_S = 0.25
OUTAGE_FROM_S, OUTAGE_TO_S = 60.0, 40.0  # seconds before now
REPLAY_AT_S = 40.5  # the devices reconnected just before the end of the outage window


@dataclass
class Scenario:
    settings: Settings
    now: float
    outage: tuple[float, float]  # device times whose points were queued offline
    last_live_receive: float  # the last receive before the outage
    replay_receive: float
    env_file: Path

    def rows(self, since: float = 0.0, until: float = float("inf")) -> list[tuple]:
        with sqlite3.connect(self.settings.sqlite_path) as connection:
            return connection.execute(
                "SELECT device_id, time, seq, publish_timestamp, collector_receive_time, write_time, replayed "
                "FROM device_data WHERE time >= ? AND time < ? ORDER BY time",
                (since, until),
            ).fetchall()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return isolated_settings(tmp_path, **overrides)


def use_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)


def write_fleet(store: SQLiteStore, now: float, *, skip: dict[str, set[int]] | None = None) -> tuple[float, float]:
    """4 devices every 0.25 s from now-90 s to now-5 s; points from now-60 to now-40 are replayed from now-40.5."""
    rng = random.Random(3)
    outage_start, outage_end = now - OUTAGE_FROM_S, now - OUTAGE_TO_S
    live: list[TelemetryRecord] = []
    replay: list[TelemetryRecord] = []
    last_live_receive = 0.0
    for step in range(int(85 / STEP_S)):
        t = now - 90 + step * STEP_S
        for index, device_id in enumerate(DEVICES):
            if step in (skip or {}).get(device_id, set()):
                continue
            if outage_start <= t < outage_end:
                receive = now - REPLAY_AT_S + len(replay) * 0.001
                replay.append(
                    TelemetryRecord(device_id, t, 50.0, seq=step, replayed=True, collector_receive_time=receive)
                )
                continue
            receive = t + rng.uniform(0.002, 0.030) * (1 + index)
            if t < outage_start:
                last_live_receive = max(last_live_receive, receive)
            live.append(TelemetryRecord(device_id, t, 50.0, seq=step, collector_receive_time=receive))
        if step % 2 and live:
            store.write(live, collector="python", write_time=max(r.collector_receive_time for r in live) + 0.3)
            live = []
    for first in range(0, len(replay), 40):
        batch = replay[first : first + 40]
        store.write(batch, collector="python", write_time=batch[-1].collector_receive_time + 0.05)
    return last_live_receive, now - REPLAY_AT_S


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Scenario]:
    settings = make_settings(tmp_path)
    now = time.time()
    store = SQLiteStore(settings.sqlite_path)
    last_live, replay = write_fleet(store, now)
    store.close()
    use_settings(monkeypatch, settings)
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    yield Scenario(settings, now, (now - OUTAGE_FROM_S, now - OUTAGE_TO_S), last_live, replay, env_file)


def run_main(main: Callable[[list[str]], int], args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def p(values: list[float], q: int) -> float:
    """Percentile by the standard library (linear interpolation, inclusive), independent of numpy."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def latencies_ms(rows: list[tuple], replayed: bool | None = None) -> list[float]:
    return [(w - pub) * 1000 for _, _, _, pub, _, w, rep in rows if replayed is None or bool(rep) == replayed]


# --- collect_latency_data ------------------------------------------------------------------


def test_collect_once_appends_a_sample_that_matches_the_rows(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(scenario.settings.latency_data_path)
    old = {"time": time.time() - 3600, "start": 0, "end": 1, "count": 1}
    path.write_text(json.dumps({"version": 1, "samples": [old]}))

    code, result = run_main(
        collect_latency_data.main, ["--duration", "2m", "--env-file", str(scenario.env_file)], capsys
    )
    assert code == 0
    sample = result["samples"][0]
    rows = scenario.rows(sample["start"], sample["end"])
    assert sample["count"] == len(rows) == len(DEVICES) * 340
    assert sample["p95_ms"] == pytest.approx(p(latencies_ms(rows), 95), abs=0.01)
    assert sample["p50_ms"] == pytest.approx(p(latencies_ms(rows), 50), abs=0.01)
    assert sample["live"]["p99_ms"] == pytest.approx(p(latencies_ms(rows, False), 99), abs=0.01)
    assert sample["replayed_count"] == len(latencies_ms(rows, True)) == 80 * len(DEVICES)
    # Over the 85 s the points cover, not the 120 s asked for.
    assert sample["messages_per_s"] == pytest.approx(len(DEVICES) / STEP_S, rel=1e-3)
    assert sample["compliant"] is True and sample["target_p95_ms"] == 2000
    # Retention (LATENCY_RETENTION_DURATION=10m) dropped the hour-old sample.
    stored = json.loads(path.read_text())["samples"]
    assert [s["time"] for s in stored] == [sample["time"]]


def test_collect_continuous_stops_cleanly_on_ctrl_c(scenario: Scenario, tmp_path: Path) -> None:
    output = tmp_path / "continuous.json"
    env = {**os.environ, **settings_env(scenario.settings)}
    process = subprocess.Popen(
        [
            sys.executable,
            "monitoring/collect_latency_data.py",
            *("--continuous", "--duration", "10m", "--interval", "1s"),
            *("--output", str(output), "--env-file", str(scenario.env_file)),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(
            lambda: output.exists() and len(json.loads(output.read_text())["samples"]) >= 2,
            30,
            message="two latency samples collected",
        )
        process.send_signal(2)  # SIGINT, as Ctrl-C
        out, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, out
    samples = json.loads(output.read_text())["samples"]
    assert len(samples) >= 2
    assert "stopped early" in out and f"kept in {output}" in out


@pytest.mark.parametrize(("interval", "at_least"), [("700ms", 5), (None, 2)])
def test_collect_continuous_samples_until_its_duration_has_passed(
    scenario: Scenario, tmp_path: Path, interval: str | None, at_least: int
) -> None:
    """With an interval that does not divide the duration, or the default LATENCY_COLLECT_INTERVAL
    (here 5 s) longer than it, the run still lasts --duration and prints each sample once."""
    duration_s = 3.0
    output = tmp_path / "run.json"
    settings = scenario.settings.with_overrides(latency_collect_interval=5)
    began = time.monotonic()
    completed = subprocess.run(
        [
            sys.executable,
            "monitoring/collect_latency_data.py",
            *("--continuous", "--duration", f"{duration_s:g}s", "--window", "2m"),
            *(("--interval", interval) if interval else ()),
            *("--output", str(output), "--env-file", str(scenario.env_file)),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - began
    assert completed.returncode == 0, completed.stderr
    samples = json.loads(output.read_text())["samples"]
    assert len(samples) >= at_least and all(s["count"] > 0 for s in samples)
    # From the first sample to the last, the run spans the duration: not less, and not an interval more.
    assert duration_s - 0.01 <= samples[-1]["time"] - samples[0]["time"] < duration_s + 1.0
    assert took >= duration_s
    printed = [line for line in completed.stdout.splitlines() if " pts " in line]
    assert len(printed) == len(samples), completed.stdout
    assert f"{len(samples)} sample(s) collected over 3." in completed.stdout


# --- generate_latency_report ---------------------------------------------------------------


def test_report_from_the_store(scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "report"
    code, result = run_main(
        generate_latency_report.main, ["--duration", "2m", "--output-dir", str(folder), "--window", "5s"], capsys
    )
    assert code == 0
    rows = scenario.rows(result["start"], result["end"])
    overall = result["overall"]
    assert overall["count"] == len(rows)
    assert overall["live"]["p95_ms"] == pytest.approx(p(latencies_ms(rows, False), 95), abs=0.01)
    assert overall["replayed"]["p50_ms"] == pytest.approx(p(latencies_ms(rows, True), 50), abs=0.01)
    assert overall["replayed_count"] == 80 * len(DEVICES)
    # The outage shows as a silence in receive times, and the one spike is explained by it.
    [gap] = result["gaps"]
    assert gap["start"] == pytest.approx(scenario.last_live_receive, abs=1e-3)
    assert gap["end"] == pytest.approx(scenario.replay_receive, abs=1e-3)
    [spike] = result["spikes"]
    assert spike["cause"].startswith("replayed backlog after a broker/network outage")
    # Every chart is a PNG, and the Markdown page embeds each one.
    markdown = Path(result["markdown"]).read_text()
    assert set(result["charts"]) == {"percentiles", "distribution", "devices", "throughput", "live_vs_replayed"}
    for chart in result["charts"].values():
        data = Path(chart).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"]({Path(chart).name})" in markdown
    assert "**Outage**" in markdown and "misses" not in markdown.split("## Latency")[0]


def test_report_from_collected_samples(scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = tmp_path / "samples.json"
    for window in ("90s", "30s"):
        code, _ = run_main(collect_latency_data.main, ["--duration", window, "--output", str(samples)], capsys)
        assert code == 0
    folder = tmp_path / "collected"
    code, result = run_main(
        generate_latency_report.main,
        ["--source", "collected", "--input", str(samples), "--duration", "5m", "--output-dir", str(folder)],
        capsys,
    )
    assert code == 0
    assert result["samples"] == 2 and result["samples_judged"] == 2
    assert set(result["charts"]) == {"percentiles", "throughput", "live_vs_replayed"}
    markdown = Path(result["markdown"]).read_text()
    assert all(f"]({Path(chart).name})" in markdown for chart in result["charts"].values())


def test_report_on_an_empty_period_fails_with_a_reason(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = generate_latency_report.main(["--end", str(scenario.now - 3600), "--output-dir", str(tmp_path / "r")])
    assert code == 1
    assert "no points stored between" in capsys.readouterr().err


# --- monitor_latency, investigate_spike, write-perf ----------------------------------------


def test_monitor_latency_snapshot(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run_main(monitor_latency.main, ["--duration", "30s"], capsys)
    assert code == 0
    rows = scenario.rows(result["start"], result["end"])
    assert result["latency"]["count"] == len(rows) > 0
    assert result["latency"]["live"]["p95_ms"] == pytest.approx(p(latencies_ms(rows, False), 95), abs=0.01)
    assert result["fields"]["write_time"]["devices_with"] == len(DEVICES)
    assert result["fields"]["cpu_usage"]["devices_without"] == len(DEVICES)
    assert set(result["devices"]) == set(DEVICES)
    assert result["verdict"] == "OK"

    code, result = run_main(monitor_latency.main, ["--end", str(scenario.now - 3600)], capsys)
    assert code == 1 and result["verdict"] == "FAIL" and "no points stored" in result["reasons"][0]


def test_investigate_spike_names_the_outage_as_a_real_process(scenario: Scenario) -> None:
    completed = subprocess.run(
        [sys.executable, "monitoring/investigate_spike.py", "--end", str(scenario.now), "--duration", "2m", "--json"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings_env(scenario.settings)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    [spike] = result["spikes"]
    start = time.strftime("%H:%M:%S", time.localtime(scenario.last_live_receive))
    end = time.strftime("%H:%M:%S", time.localtime(scenario.replay_receive))
    assert spike["cause"].startswith(f"replayed backlog after a broker/network outage from {start} to {end}")
    assert spike["replayed_share"] >= 0.5
    assert {d["device_id"] for d in spike["devices"]} == set(DEVICES)
    assert spike["start"] <= scenario.outage[0] and spike["end"] >= scenario.outage[1]
    assert spike["published_per_s"] == pytest.approx(len(DEVICES) / STEP_S)
    assert spike["baseline_per_s"] == pytest.approx(len(DEVICES) / STEP_S, rel=0.02)
    assert spike["receive_delay_p95_ms"] > 10 * spike["baseline_receive_delay_p95_ms"]


def test_spike_causes_store_slow_and_collector_down() -> None:
    samples: list[LatencySample] = []
    for step in range(400):
        t = 1000.0 + step * 0.25
        for device_id in DEVICES:
            receive, write = t + 0.01, t + 0.3
            if 30 <= t - 1000 < 40:  # store slow: written 3 s late
                write = receive + 3.0
            if 70 <= t - 1000 < 80:  # collector down: the broker held live messages until 81 s
                receive = 1081.0
                write = receive + 0.3
            samples.append(LatencySample(device_id, t, step, t, receive, write, False))
    sample_set = sample_set_from(samples)
    gaps = find_gaps(sample_set.receive, 5.0)
    spikes = find_spikes(sample_set, 1000, 1100, threshold_ms=2000, window_s=5, gaps=gaps, target_p95_ms=2000)
    assert [(s.start, s.end) for s in spikes] == [(1030, 1040), (1070, 1080)]
    assert spikes[0].cause.startswith("store slow")
    assert spikes[1].cause.startswith("the collector received nothing from")


def test_write_perf_finds_batches_and_the_outage(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run_main(check_influxdb_performance.main, ["--duration", "2m", "--window", "10s"], capsys)
    assert code == 0
    rows = scenario.rows(result["start"], result["end"])
    write_times = [row[5] for row in rows]
    sizes = [write_times.count(w) for w in sorted(set(write_times))]
    assert result["batches"] == len(set(write_times))
    assert result["batch_sizes"]["max"] == max(sizes) and result["batch_sizes"]["min"] == min(sizes)
    store_delays = [(w - r) * 1000 for _, _, _, _, r, w, _ in rows]
    assert result["store_delay"]["p95_ms"] == pytest.approx(p(store_delays, 95), abs=0.01)
    [gap] = result["write_gaps"]
    assert gap["duration_s"] > 15
    assert "outage upstream" in result["findings"][0]
    assert result["bottleneck"]
    assert result["health"]["ok"] is True


# --- check_delivery ------------------------------------------------------------------------


def test_delivery_complete(scenario: Scenario, capsys: pytest.CaptureFixture[str]) -> None:
    code, result = run_main(check_delivery.main, [], capsys)
    assert code == 0
    assert result["ok"] and result["missing_total"] == 0 and result["devices_checked"] == len(DEVICES)
    assert all(d["first_seq"] == 0 and d["last_seq"] == 339 for d in result["devices"])


def test_delivery_names_missing_evicted_and_restarted_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path)
    store = SQLiteStore(settings.sqlite_path)
    write_fleet(store, time.time(), skip={"car_1": {0, 1, 2, 100, 101, 102, 103, 200}, "car_2": set(range(150, 160))})
    # car_3 restarted its seq counter: seqs 0-4 again, at later times.
    store.write(
        [TelemetryRecord("car_3", time.time() - 1 + i * 0.01, 50.0, seq=i) for i in range(5)],
        collector="python",
        write_time=time.time(),
    )
    store.close()
    # car_2's offline queue evicted seqs 150-159 (its real queue code, with a tiny cap).
    database = QueueDatabase(device_file(settings.device_queue_dir, "car_2"))
    queue = database.queue("car_2", max_messages=5)
    queue.next_seq = 150
    for _ in range(15):
        queue.append(lambda seq: b"{}")
    database.close()
    use_settings(monkeypatch, settings)

    code, result = run_main(check_delivery.main, [], capsys)
    assert code == 1 and not result["ok"]
    devices = {d["device_id"]: d for d in result["devices"]}
    assert devices["car_1"]["missing"] == [[0, 2], [100, 103], [200, 200]]
    assert devices["car_1"]["unexplained"] == devices["car_1"]["missing"]
    assert devices["car_2"]["missing"] == [[150, 159]] and devices["car_2"]["evicted"] == [[150, 159]]
    assert devices["car_2"]["unexplained"] == []
    assert devices["car_3"]["duplicates"] == [[0, 4]] and devices["car_3"]["duplicate_points"] == 5
    assert devices["car_0"]["complete"] and devices["car_3"]["complete"]
    assert result["missing_total"] == 8 + 10 and result["evicted_total"] == 10

    # The readable summary names the ranges.
    capsys.readouterr()
    assert check_delivery.main([]) == 1
    text = capsys.readouterr().out
    assert "0-2, 100-103, 200" in text and "150-159" in text and "MISSING" in text


def test_delivery_ranges() -> None:
    seqs = np.array([5, 6, 7, 9, 9, 12, -1])
    device = check_device("d", seqs, stored=7, from_zero=True, evictions=[(10, 10), (20, 22)], next_seq=25)
    assert device.missing == [(0, 4), (8, 8), (10, 11), (20, 22)]
    assert device.evicted == [(10, 10), (20, 22)]
    assert device.unexplained == [(0, 4), (8, 8), (11, 11)]
    assert device.duplicates == [(9, 9)] and device.without_seq == 1
    assert device.tail == [(13, 19), (23, 24)]
    assert device.held_upstream == [], "nothing beyond the stored seqs was acknowledged: all still at the device"
    held = check_device("d", seqs, stored=7, from_zero=True, evictions=[(20, 22)], next_seq=25, acked_through=21)
    assert held.held_upstream == [(13, 19)], "acked by the broker, not yet stored, evictions aside"
    from_first = check_device("d", seqs, stored=7, from_zero=False, evictions=[])
    assert from_first.missing == [(8, 8), (10, 11)]
    assert subtract_ranges([(0, 10)], [(2, 3), (5, 5), (9, 20)]) == [(0, 1), (4, 4), (6, 8)]
    # Seqs beyond a double's exact integers (the schema allows up to 2**63 - 1) stay exact.
    big = sample_set_from(
        [LatencySample("d", float(i), seq, i, None, None, False) for i, seq in enumerate((2**62, 2**62 + 2, None))]
    )
    huge = check_device("d", big.seq, stored=3, from_zero=False, evictions=[])
    assert huge.missing == [(2**62 + 1, 2**62 + 1)] and huge.without_seq == 1


# --- all of them ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["latency", "collect-latency", "report", "spike", "write-perf", "delivery", "check"]
)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--json" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["check_mqtt_connection", "check_influxdb_connection", "check_socket"])
def test_the_seed_health_scripts_have_help(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"monitoring.{script}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert f"usage: {script}" in capsys.readouterr().out


def test_tools_read_influxdb_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from influxdb_fake import FakeInfluxDB

    from rtds.store import open_store

    with FakeInfluxDB(token="t0ken", org="my-org", buckets=("vehicle-data",)) as fake:
        settings = make_settings(tmp_path, store="influxdb", influxdb_url=fake.url, influxdb_token="t0ken")
        store = open_store(settings)
        now = time.time()
        write_fleet(store, now)
        store.close()
        use_settings(monkeypatch, settings)

        code, report = run_main(
            generate_latency_report.main, ["--duration", "2m", "--output-dir", str(tmp_path / "r")], capsys
        )
        assert code == 0 and report["backend"] == "influxdb"
        assert report["overall"]["count"] == len(DEVICES) * 340
        assert report["overall"]["replayed_count"] == 80 * len(DEVICES)
        [spike] = report["spikes"]
        assert spike["cause"].startswith("replayed backlog after a broker/network outage")
        code, delivery = run_main(check_delivery.main, [], capsys)
        assert code == 0 and delivery["ok"] and delivery["devices_checked"] == len(DEVICES)
        code, perf = run_main(check_influxdb_performance.main, ["--duration", "2m"], capsys)
        assert code == 0 and perf["health"]["backend"] == "influxdb" and perf["batches"] > 100
