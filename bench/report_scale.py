"""Scenario 5, report: `generate_latency_report` over a store holding many points.

The store is filled directly (through the store's own schema, sorted inserts, one transaction
per 50,000 rows) with points from 100 devices over the last hour: latencies around 5 ms with a
long tail, 1 % replayed after an outage, so every chart has something to draw. Then
`python monitoring/generate_latency_report.py --duration 2h --sample-limit 50000 --json` runs as
its own process; its wall time and peak memory (psutil sampling of the process tree, and the
kernel's ru_maxrss from wait4) are the figures.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.harness import fresh_dir, target
from bench.measurement import ResourceSampler
from rtds.broker import PROJECT_ROOT
from rtds.settings import load_settings
from rtds.store.sqlite import COLUMNS, connect
from rtds.testkit import settings_env

REPORT_SCRIPT = "monitoring/generate_latency_report.py"
FULL = {"points": 1_000_000}
QUICK = {"points": 50_000}
DEVICES = 100
SPAN_S = 3600.0
SAMPLE_LIMIT = 50_000
TARGET_WALL_S = 20.0
TARGET_PEAK_MB = 1024.0
INSERT_CHUNK = 50_000


def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    params: dict[str, Any] = dict(QUICK if quick else FULL)
    params.update({"devices": DEVICES, "span_s": SPAN_S, "sample_limit": SAMPLE_LIMIT, "duration_arg": "2h"})
    workdir = fresh_dir(workdir)
    db = workdir / "telemetry.db"
    fill_started = time.monotonic()
    fill_store(db, params["points"], time.time() - 10)
    params["fill_s"] = round(time.monotonic() - fill_started, 2)
    params["db_mb"] = round(db.stat().st_size / 2**20, 1)
    settings = load_settings(env_file=None, environ={}).with_overrides(
        sqlite_path=str(db), dead_letter_path=str(workdir / "dead_letters.db"), log_level="WARNING"
    )
    args = [
        sys.executable,
        REPORT_SCRIPT,
        "--duration",
        "2h",
        "--sample-limit",
        str(SAMPLE_LIMIT),
        "--output-dir",
        str(workdir / "report"),
        "--json",
    ]
    log_path = workdir / "report.log"
    env = {**os.environ, **settings_env(settings)}
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = ResourceSampler([process.pid], interval_s=0.05).start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        sampled = sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{REPORT_SCRIPT} exited {process.returncode}: {log_path.read_text()[-2000:]}")
    # ru_maxrss is in KiB on Linux; it covers the process itself, psutil also its children.
    peak_mb = max(usage.ru_maxrss / 1024, sampled.peak_rss_bytes / 2**20)
    figures = {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "points_per_s": round(params["points"] / wall),
        "charts": len(list((workdir / "report").glob("*.png"))),
    }
    targets = [
        target("report wall time", figures["wall_s"], TARGET_WALL_S, at_least=False, unit="s"),
        target("report peak memory", figures["peak_rss_mb"], TARGET_PEAK_MB, at_least=False, unit="MB"),
    ]
    rows = [
        {
            "scenario": f"report over {params['points']:,} points",
            "figure": f"{figures['wall_s']:.1f} s, peak {figures['peak_rss_mb']:.0f} MB, {figures['charts']} charts",
            "baselines": "",
            "ratios": "",
            "target": f"<= {TARGET_WALL_S:g} s, <= {TARGET_PEAK_MB / 1024:g} GB",
            "met": all(item["met"] for item in targets),
        }
    ]
    return {"parameters": params, "figures": figures, "baselines": {}, "ratios": {}, "targets": targets, "rows": rows}


def fill_store(path: Path, points: int, end: float) -> None:
    """`points` rows over the hour before `end`, through the store's schema (what the collector writes)."""
    connection = connect(path, busy_timeout_ms=5_000, synchronous="normal")
    insert = f"INSERT OR REPLACE INTO device_data ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    try:
        rows = _rows(points, end)
        while True:
            chunk = [row for _, row in zip(range(INSERT_CHUNK), rows, strict=False)]
            if not chunk:
                break
            connection.execute("BEGIN")
            connection.executemany(insert, chunk)
            connection.execute("COMMIT")
        connection.execute(
            "INSERT OR REPLACE INTO device_latest (device_id, time) SELECT device_id, MAX(time) FROM device_data "
            "GROUP BY device_id"
        )
    finally:
        connection.close()


def _rows(points: int, end: float) -> Iterator[tuple[Any, ...]]:
    """Rows in primary-key order (device, then time), so the inserts append."""
    rng = random.Random(5)
    per_device = points // DEVICES
    step = SPAN_S / per_device
    start = end - SPAN_S
    outage = (start + SPAN_S * 0.6, start + SPAN_S * 0.61)
    for device in range(DEVICES):
        device_id = f"report_{device:03d}"
        count = per_device + (1 if device < points % DEVICES else 0)
        for seq in range(count):
            published = start + seq * step + device * 1e-4
            replayed = outage[0] <= published < outage[1]
            receive = outage[1] + rng.uniform(0, 2) if replayed else published + rng.lognormvariate(-7.5, 0.6)
            written = receive + rng.lognormvariate(-6.0, 0.8)
            speed = rng.uniform(0, 120)
            yield (
                device_id, published, "python", "vehicle",
                speed, rng.uniform(0, 100), rng.uniform(0, 100), 8192.0, 4000.0, 4192.0, 50.0,
                500000.0, 250000.0, 250000.0, 50.0, 1e6, 2e6, rng.random(),
                seq, int(replayed), published, receive, written,
            )  # fmt: skip
