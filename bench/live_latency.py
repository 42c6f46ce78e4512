"""Scenario 2, live latency: publish → durable write at fixed total rates, and loss.

One collector runs for the whole scenario. For each rate, publisher processes send QoS 1
messages on a fixed schedule from devices publishing 10 msg/s each (10, 100 and 1,000 devices),
stamping `timestamp` with `time.time()` just before `publish()`. The collector stamps `write_time`
with `time.time()` on the same machine, so latency = write_time − publish_timestamp, read back
from the stored rows. Loss = messages the broker acknowledged to the publishers − rows stored.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.harness import bench_settings, fresh_dir, start_broker, start_service, target, wait_for_collector
from bench.measurement import ResourceSampler, summarise_ms, wait_for_count
from bench.publishers import run_publishers, split_plans

COLLECTOR_SCRIPT = "collector/mqtt_collector.py"
RATES = (100, 1_000, 10_000)
SEED_P95_MS = 500.0
DEVICE_RATE = 10.0  # msg/s per simulated device
# One Python publisher process manages about 10,000 msg/s at 85 % of a core: spread the top rate.
PUBLISHERS = {100: 1, 1_000: 1, 10_000: 3}
FULL = {"duration_s": 60.0}
QUICK = {"duration_s": 3.0}
# rate -> {percentile: limit in ms}
TARGETS_MS: dict[int, dict[str, float]] = {
    100: {"p50_ms": 5.0, "p95_ms": 15.0, "p99_ms": 30.0},
    1_000: {"p95_ms": 30.0},
    10_000: {"p95_ms": 100.0},
}


def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    params: dict[str, Any] = dict(QUICK if quick else FULL)
    params.update({"rates": list(RATES), "publishers": PUBLISHERS, "device_rate": DEVICE_RATE, "qos": 1})
    workdir = fresh_dir(workdir)
    broker = start_broker(workdir, "broker")
    settings = bench_settings(workdir, broker)
    params["sqlite_synchronous"] = settings.sqlite_synchronous
    db = Path(settings.sqlite_path)
    collector = start_service(COLLECTOR_SCRIPT, settings, workdir, "collector")
    figures: dict[str, Any] = {}
    try:
        wait_for_collector(broker, db, collector)
        for rate in RATES:
            figures[str(rate)] = _measure(broker, db, collector.pid, rate, params["duration_s"])
    finally:
        collector.terminate()
        broker.kill()

    targets = []
    rows = []
    for rate, limits in TARGETS_MS.items():
        found = figures[str(rate)]
        rate_targets = [
            target(f"{rate} msg/s {name[:-3].upper()}", found[name], limit, at_least=False, unit="ms")
            for name, limit in limits.items()
        ]
        rate_targets.append(target(f"{rate} msg/s loss", found["lost"], 0, at_least=False, unit="msgs"))
        targets += rate_targets
        rows.append(
            {
                "scenario": f"live latency {rate:,} msg/s",
                "figure": (
                    f"P50 {_ms(found['p50_ms'])} / P95 {_ms(found['p95_ms'])} / P99 {_ms(found['p99_ms'])} / "
                    f"max {_ms(found['max_ms'])} ms, lost {found['lost']} of {found['acked']:,} "
                    f"(achieved {found['achieved_msgs_per_s']:,.0f} msg/s)"
                ),
                "baselines": f"seed's table (never measured): P95 ~{SEED_P95_MS:g} ms",
                "ratios": f"P95 = {found['p95_ms'] / SEED_P95_MS:.2g} x the seed's" if found["p95_ms"] else "",
                "target": ", ".join(f"{name[:-3].upper()} <= {limit:g} ms" for name, limit in limits.items())
                + ", loss 0",
                "met": all(item["met"] for item in rate_targets),
            }
        )
    return {"parameters": params, "figures": figures, "baselines": {}, "ratios": {}, "targets": targets, "rows": rows}


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _measure(broker: Any, db: Path, collector_pid: int, rate: int, duration_s: float) -> dict[str, Any]:
    prefix = f"live{rate}_"
    plans = split_plans(
        broker.host,
        broker.port,
        prefix=prefix,
        devices=max(1, int(rate / DEVICE_RATE)),
        processes=PUBLISHERS[rate],
        rate=float(rate),
        duration_s=duration_s,
        start_at=time.time() + 1.0,
    )
    sampler = ResourceSampler([collector_pid], interval_s=0.5).start()
    results = run_publishers(plans, timeout_s=duration_s + 120)
    acked = sum(result.acked for result in results)
    like = (prefix.replace("_", "\\_") + "%",)
    stored = wait_for_count(
        db,
        acked,
        timeout_s=60,
        stall_s=10,
        query="SELECT COUNT(*) FROM device_data WHERE device_id LIKE ? ESCAPE '\\'",
        parameters=like,
    )
    usage = sampler.stop()
    latencies = _latencies(db, like[0])
    first = min(result.first_publish for result in results)
    last = max(result.last_publish for result in results)
    published = sum(result.published for result in results)
    return {
        **summarise_ms(latencies),
        "published": published,
        "acked": acked,
        "stored": stored,
        "lost": acked - stored,
        "publish_errors": sum(result.errors for result in results),
        "achieved_msgs_per_s": round(published / (last - first), 1) if last > first else None,
        "publisher_cpu_share": round(sum(result.cpu_s for result in results) / max(last - first, 1e-9), 3),
        "collector": usage.as_dict(),
    }


def _latencies(db: Path, pattern: str) -> list[float]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [
            row[0]
            for row in connection.execute(
                "SELECT write_time - publish_timestamp FROM device_data WHERE device_id LIKE ? ESCAPE '\\'", (pattern,)
            )
        ]
    finally:
        connection.close()
