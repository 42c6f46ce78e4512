"""The monitoring tools on real runs: simulated devices → Mosquitto → collector → SQLite.

Every number a tool reports is checked against an independent calculation from the stored rows.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devices.offline_queue import read_evictions, read_stats
from monitoring import (
    check_delivery,
    check_influxdb_performance,
    collect_latency_data,
    generate_latency_report,
    investigate_spike,
    monitor_latency,
)
from rtds.broker import MosquittoBroker
from rtds.settings import Settings
from rtds.testkit import ServiceProcess, settings_env, wait_until

FLEET = [f"vehicle_{n:02d}" for n in range(1, 11)]
OUTAGE_S = 30.0
SPIKE_WINDOW_S = 10.0


def rows(settings: Settings, since: float = 0.0, until: float = float("inf")) -> list[tuple]:
    with sqlite3.connect(settings.sqlite_path) as connection:
        return connection.execute(
            "SELECT device_id, time, seq, publish_timestamp, collector_receive_time, write_time, replayed "
            "FROM device_data WHERE time >= ? AND time < ? ORDER BY time",
            (since, until),
        ).fetchall()


def points_per_device(settings: Settings) -> dict[str, int]:
    if not Path(settings.sqlite_path).exists():
        return {}
    with sqlite3.connect(settings.sqlite_path) as connection:
        try:
            return dict(connection.execute("SELECT device_id, COUNT(*) FROM device_data GROUP BY device_id"))
        except sqlite3.OperationalError:
            return {}


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def stats_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "count": len(ms),
        "min_ms": min(ms),
        "p50_ms": p(ms, 50),
        "p95_ms": p(ms, 95),
        "p99_ms": p(ms, 99),
        "max_ms": max(ms),
    }


def assert_same(reported: dict[str, Any], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        assert reported[key] == pytest.approx(value, abs=0.01), key


def tool(main: Callable[[list[str]], int], args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    capsys.readouterr()
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def start_collector(spawn: Callable[..., ServiceProcess], settings: Settings) -> ServiceProcess:
    """The collector, once its subscription stands (a message published before it would have no subscriber)."""
    collector = spawn("collector/mqtt_collector.py", settings=settings)
    wait_until(
        lambda: "subscribed to" in collector.log_text() or not collector.running(),
        30,
        message=lambda: f"collector subscription: {collector.log_text()[-2000:]}",
    )
    assert collector.running(), collector.log_text()
    return collector


def start_pipeline(spawn: Callable[..., ServiceProcess], settings: Settings, minimum: int) -> ServiceProcess:
    """Collector and a 10-device fleet; returns the fleet once every device has `minimum` points stored."""
    start_collector(spawn, settings)
    fleet = spawn("devices/run_devices.py", "--count", "10", settings=settings)
    wait_until(
        lambda: all(points_per_device(settings).get(d, 0) >= minimum for d in FLEET),
        90,
        message=lambda: f"{minimum} points of every device; stored: {points_per_device(settings)}",
    )
    return fleet


def drain(settings: Settings, fleet: ServiceProcess) -> None:
    """Stop the devices and wait until every seq they produced is stored."""
    assert fleet.terminate() == 0, fleet.log_text()[-3000:]

    def stored_everything() -> bool:
        produced = {d: s["next_seq"] for d, s in read_stats(settings.device_queue_dir).items()}
        counts = points_per_device(settings)
        return set(produced) == set(FLEET) and all(counts.get(d) == n for d, n in produced.items())

    wait_until(stored_everything, 60, message=lambda: f"stored {points_per_device(settings)}")


def check_tools_against_rows(settings: Settings, since: float, until: float, tmp_path: Path, capsys: Any) -> dict:
    """Run each tool on [since, until) and compare it with the rows; returns the report's JSON."""
    window = ["--start", str(since), "--end", str(until)]
    raw = rows(settings, since, until)
    live = [w - pub for _, _, _, pub, _, w, rep in raw if not rep]
    replayed = [w - pub for _, _, _, pub, _, w, rep in raw if rep]

    code, report = tool(generate_latency_report.main, [*window, "--output-dir", str(tmp_path / "report")], capsys)
    assert code == 0
    overall = report["overall"]
    assert overall["count"] == len(raw) and overall["replayed_count"] == len(replayed)
    assert_same(overall["live"], stats_ms(live))
    if replayed:
        assert_same(overall["replayed"], stats_ms(replayed))
    assert_same(overall["receive_delay"], stats_ms([r - pub for _, _, _, pub, r, _, _ in raw]))
    assert_same(overall["store_delay"], stats_ms([w - r for _, _, _, _, r, w, _ in raw]))
    for chart in report["charts"].values():
        assert Path(chart).read_bytes()[:4] == b"\x89PNG"

    code, snapshot = tool(monitor_latency.main, window, capsys)
    assert snapshot["latency"]["count"] == len(raw)
    assert_same(snapshot["latency"]["live"], stats_ms(live))
    assert set(snapshot["devices"]) == set(FLEET)
    assert all(
        snapshot["fields"][name]["devices_without"] == 0
        for name in ("seq", "write_time", "collector_receive_time", "cpu_usage")
    )

    # collect-latency samples the last DURATION up to now: reach back past `since`, however long the tools above took.
    reach_back_s = math.ceil(time.time() - since) + 1
    code, collected = tool(collect_latency_data.main, ["--duration", f"{reach_back_s}s"], capsys)
    assert code == 0 and collected["samples"][0]["count"] > 0

    code, perf = tool(check_influxdb_performance.main, [*window, "--window", "5s"], capsys)
    assert code == 0
    write_times = [row[5] for row in raw]
    assert perf["batches"] == len(set(write_times))
    assert perf["batch_sizes"]["max"] == max(write_times.count(w) for w in set(write_times))
    assert_same(perf["store_delay"], stats_ms([w - r for _, _, _, _, r, w, _ in raw]))

    code, spikes = tool(investigate_spike.main, [*window, "--window", f"{SPIKE_WINDOW_S:g}s"], capsys)
    assert code == 0
    hot = []
    start = since
    while start < until:
        end = min(start + SPIKE_WINDOW_S, until)
        inside = [(w - pub) * 1000 for _, t, _, pub, _, w, _ in raw if start <= t < end]
        if len(inside) >= 2 and p(inside, 95) > settings.latency_target_p95_ms:
            hot.append((start, end))
        start = end
    covered = [(s["start"], s["end"]) for s in spikes["spikes"]]
    assert all(any(a <= s and e <= b for a, b in covered) for s, e in hot)
    assert sum(b - a for a, b in covered) == pytest.approx(sum(e - s for s, e in hot), abs=1e-6)
    report["spike_result"] = spikes
    return report


def test_a_real_fleet_run(
    settings: Settings,
    spawn: Callable[..., ServiceProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    since = time.time()
    fleet = start_pipeline(spawn, settings, minimum=50)
    drain(settings, fleet)
    until = time.time()

    check_tools_against_rows(settings, since, until, tmp_path, capsys)
    code, delivery = tool(check_delivery.main, ["--include-tail"], capsys)
    assert code == 0 and delivery["ok"], delivery
    per_device = {d["device_id"]: d for d in delivery["devices"]}
    for device_id in FLEET:
        seqs = [row[2] for row in rows(settings) if row[0] == device_id]
        assert per_device[device_id]["stored"] == len(seqs)
        assert per_device[device_id]["last_seq"] == max(seqs) and per_device[device_id]["first_seq"] == 0 == min(seqs)


@pytest.mark.slow
def test_a_30_second_broker_outage_is_reported_as_replayed_backlog(
    settings: Settings,
    broker: MosquittoBroker,
    spawn: Callable[..., ServiceProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    since = time.time()
    fleet = start_pipeline(spawn, settings, minimum=30)
    outage_start = time.time()
    broker.stop()
    time.sleep(OUTAGE_S)  # the outage itself, not a wait for a result
    restarted = MosquittoBroker(broker.data_dir, port=broker.port)
    try:
        restarted.start()
        outage_end = time.time()
        # Back to live: every device has a live point from after the restart stored. A device sends in seq order,
        # so its backlog went out before that point, and stopping it now leaves nothing queued. (A point merely
        # timed after the restart may still be backlog: the devices reconnect a few seconds after the broker.)
        wait_until(
            lambda: {r[0] for r in rows(settings, outage_end) if not r[6]} >= set(FLEET),
            90,
            message=lambda: f"live points after the restart; stored {points_per_device(settings)}",
        )
        drain(settings, fleet)
    finally:
        restarted.kill()
    until = time.time()

    report = check_tools_against_rows(settings, since, until, tmp_path, capsys)
    assert report["overall"]["replayed_count"] > 10 * 20  # most of 30 s at 10 msg/s per device was queued
    [gap] = [g for g in report["gaps"] if g["end"] > outage_start and g["start"] < outage_end]
    assert gap["duration_s"] >= OUTAGE_S - 1
    markdown = Path(report["markdown"]).read_text()
    assert "**Outage**" in markdown and "replayed backlog after a broker/network outage" in markdown

    spikes = report["spike_result"]["spikes"]
    outage_spikes = [s for s in spikes if s["cause"].startswith("replayed backlog after a broker/network outage from")]
    assert outage_spikes, [s["cause"] for s in spikes]
    assert all(s["start"] < outage_end + 60 and s["end"] > outage_start - SPIKE_WINDOW_S for s in spikes)
    gap_text = f"from {time.strftime('%H:%M:%S', time.localtime(gap['start']))} to {time.strftime('%H:%M:%S', time.localtime(gap['end']))}"
    assert gap_text in outage_spikes[0]["cause"]

    code, delivery = tool(check_delivery.main, ["--include-tail"], capsys)
    assert code == 0 and delivery["ok"] and delivery["missing_total"] == 0, delivery


def test_a_device_whose_queue_evicted_fails_the_delivery_check(
    settings: Settings,
    broker: MosquittoBroker,
    spawn: Callable[..., ServiceProcess],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = settings.with_overrides(device_queue_max_messages=20, device_publish_interval_s=0.05)
    for key, value in settings_env(small).items():
        monkeypatch.setenv(key, value)
    start_collector(spawn, small)
    device = spawn("devices/device_simulator.py", "evictor", settings=small)
    wait_until(lambda: points_per_device(small).get("evictor", 0) >= 20, 60, message="the device's first points")
    broker.stop()
    wait_until(lambda: read_evictions(small.device_queue_dir).get("evictor"), 30, message="the queue evicting")
    restarted = MosquittoBroker(broker.data_dir, port=broker.port)
    try:
        restarted.start()
        back = time.time()
        # Two seconds of live points after the restart: the queue's backlog has been flushed by then.
        wait_until(lambda: len(rows(small, back + 1)) >= 40, 60, message="live points after the restart")
        assert device.terminate() == 0
        stats = read_stats(small.device_queue_dir)["evictor"]
        evicted = read_evictions(small.device_queue_dir)["evictor"]
        lost = sum(last - first + 1 for first, last in evicted)
        # What the device still holds at stop (its newest, unacknowledged) is the unconfirmed tail, not lost.
        expected = stats["next_seq"] - lost - stats["queued"]
        wait_until(
            lambda: points_per_device(small)["evictor"] == expected,
            30,
            message=lambda: f"{expected} stored; stored {points_per_device(small)}, device stats {stats}",
        )
    finally:
        restarted.kill()

    code, result = tool(check_delivery.main, [], capsys)
    assert code == 1 and not result["ok"]
    [report] = result["devices"]
    assert report["missing"] == [list(r) for r in evicted] == report["evicted"]
    assert report["unexplained"] == [] and report["missing_count"] == lost > 0
    capsys.readouterr()
    assert check_delivery.main([]) == 1
    text = capsys.readouterr().out
    first, last = evicted[0]
    assert f"{first}-{last}" in text and "evicted by device queues" in text
