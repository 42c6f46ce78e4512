"""Simulated devices → Mosquitto → collector → SQLite: what the stored points say about the devices.

Which points are `replayed` (README, "The data"), checked on the rows and through `rtds latency`, and
whose computer the CPU, memory and disk readings describe (DEVICE_SYSTEM_METRICS).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from collector_harness import start_collector

from devices.offline_queue import read_stats
from devices.telemetry import BYTES_PER_MB
from monitoring import monitor_latency
from rtds.broker import MosquittoBroker
from rtds.settings import Settings
from rtds.testkit import ServiceProcess, isolated_settings, settings_env, wait_until

DEVICE_SCRIPT = "devices/device_simulator.py"
RUNNER = "devices/run_devices.py"
Spawn = Callable[..., ServiceProcess]


def stored(settings: Settings, columns: str, where: str = "1", parameters: tuple[Any, ...] = ()) -> list[tuple]:
    if not Path(settings.sqlite_path).exists():
        return []
    with sqlite3.connect(settings.sqlite_path, timeout=10) as connection:
        try:
            return connection.execute(
                f"SELECT {columns} FROM device_data WHERE {where} ORDER BY device_id, seq", parameters
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # the collector has not created the table yet


def points_per_device(settings: Settings) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (device_id,) in stored(settings, "device_id"):
        counts[device_id] = counts.get(device_id, 0) + 1
    return counts


def wait_until_stored(settings: Settings, device_ids: list[str]) -> None:
    """Until every seq the devices generated is stored (the devices have stopped)."""

    def everything() -> bool:
        produced = {d: s["next_seq"] for d, s in read_stats(settings.device_queue_dir).items() if d in device_ids}
        counts = points_per_device(settings)
        return set(produced) == set(device_ids) and all(counts.get(d) == n for d, n in produced.items())

    wait_until(everything, 60, message=lambda: f"stored {points_per_device(settings)}")


def test_a_clean_start_stores_no_replayed_point_and_rtds_latency_says_ok(
    settings: Settings,
    spawn: Spawn,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    ids = ["vehicle_01", "vehicle_02", "vehicle_03"]
    since = time.time()
    start_collector(spawn, settings)
    fleet = spawn(RUNNER, "--count", str(len(ids)), settings=settings)
    wait_until(
        lambda: all(points_per_device(settings).get(d, 0) >= 30 for d in ids),
        60,
        message=lambda: f"30 points of every device; stored {points_per_device(settings)}",
    )

    capsys.readouterr()
    code = monitor_latency.main(["--start", str(since), "--end", str(time.time()), "--json"])
    snapshot = json.loads(capsys.readouterr().out)
    assert (code, snapshot["verdict"], snapshot["reasons"]) == (0, "OK", [])
    assert snapshot["latency"]["replayed_count"] == 0

    assert fleet.terminate() == 0, fleet.log_text()
    wait_until_stored(settings, ids)
    assert stored(settings, "device_id, seq", "replayed") == []
    assert {row[0] for row in stored(settings, "device_id", "seq = 0")} == set(ids)


def test_a_broker_outage_mid_run_marks_exactly_the_readings_generated_during_it(
    tmp_path: Path, start_broker: Callable[..., MosquittoBroker], spawn: Spawn
) -> None:
    broker = start_broker(name="broker")
    settings = isolated_settings(tmp_path, broker, mqtt_client_id="collector-outage", device_publish_interval_s=0.05)
    start_collector(spawn, settings)
    device = spawn(DEVICE_SCRIPT, "vehicle_01", settings=settings)
    wait_until(lambda: points_per_device(settings).get("vehicle_01", 0) >= 40, 30, message="device publishing")

    def device_stats() -> dict[str, Any]:
        return read_stats(settings.device_queue_dir)["vehicle_01"]

    went_down = time.time()
    broker.stop()
    wait_until(lambda: device_stats()["state"] == "offline", 10, message="the device noticed the outage")
    noticed = time.time()  # the device noticed before this
    wait_until(lambda: device_stats()["queued"] >= 60, 20, message="the device queues during the outage")
    came_back = time.time()
    start_broker(name="broker", port=broker.port)  # same port, same data folder: the collector's session lives on
    wait_until(
        lambda: device_stats()["state"] == "online" and device_stats()["reconnects"] >= 1,
        30,
        message="the device reconnected",
    )
    reconnected = time.time()  # the device reconnected before this
    wait_until(
        lambda: len(stored(settings, "seq", "time > ?", (reconnected,))) >= 20, 30, message="live again after it"
    )
    assert device.terminate() == 0, device.log_text()
    wait_until_stored(settings, ["vehicle_01"])

    rows = stored(settings, "seq, time, replayed")
    before = [replayed for _, at, replayed in rows if at < went_down]
    during = [replayed for _, at, replayed in rows if noticed <= at < came_back]
    after = [replayed for _, at, replayed in rows if at > reconnected]
    assert before and set(before) == {0}, "readings from before the outage are live"
    assert len(during) >= 20 and set(during) == {1}, "readings generated during the outage are replayed"
    assert after and set(after) == {0}, "readings from after the reconnect are live"
    replayed_seqs = [seq for seq, _, replayed in rows if replayed]
    assert replayed_seqs == list(range(replayed_seqs[0], replayed_seqs[-1] + 1)), "one unbroken stretch: the outage"


def test_a_simulated_fleet_stores_a_different_computer_per_vehicle_and_a_lone_device_the_hosts(
    settings: Settings, spawn: Spawn
) -> None:
    ids = ["vehicle_01", "vehicle_02", "vehicle_03"]
    assert settings.device_system_metrics == "auto"
    start_collector(spawn, settings)
    fleet = spawn(RUNNER, "--count", str(len(ids)), settings=settings)
    lone = spawn(DEVICE_SCRIPT, "laptop_01", settings=settings)
    wait_until(
        lambda: all(points_per_device(settings).get(d, 0) >= 30 for d in [*ids, "laptop_01"]),
        60,
        message=lambda: f"30 points of every device; stored {points_per_device(settings)}",
    )
    assert fleet.terminate() == 0, fleet.log_text()
    assert lone.terminate() == 0, lone.log_text()

    columns = "cpu_usage, memory_total, memory_used, disk_total, disk_used"
    series = {d: stored(settings, columns, "device_id = ?", (d,)) for d in [*ids, "laptop_01"]}
    for one, other in itertools.combinations(ids, 2):
        assert series[one][0][1] != series[other][0][1], f"{one} and {other} report the same memory size"
        assert series[one][0][3] != series[other][0][3], f"{one} and {other} report the same disk size"
        assert [row[0] for row in series[one]] != [row[0] for row in series[other]], "the same CPU series"
    for device_id in ids:
        for cpu, memory_total, memory_used, disk_total, disk_used in series[device_id]:
            assert 0.0 <= cpu <= 100.0 and 0.0 <= memory_used <= memory_total and 0.0 <= disk_used <= disk_total

    host_memory_mb = round(psutil.virtual_memory().total / BYTES_PER_MB, 1)
    assert {row[1] for row in series["laptop_01"]} == {host_memory_mb}, "a lone device reports its host"
    assert "system readings: simulated" in fleet.log_text()
    assert "system readings: host" in lone.log_text()
