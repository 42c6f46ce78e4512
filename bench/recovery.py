"""Scenario recovery: how soon after the store comes back is a backlog that waited for it stored?

For each backlog size a fresh broker (shipped config) and a running collector (SQLite, shipped retry
settings) meet a store that is away: another connection holds SQLite's write lock while N messages are
published. The collector holds what fits in its buffer, unacknowledged, and the broker the rest. Then the
lock goes, and the clock runs from that moment to the first new write and to the last of the N.

Beside it, in the same run, the same N drained by a collector started after the backlog was queued (the
drain scenario's method): recovery should cost that drain time plus at most a retry step.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.drain import BENCH_ROWS, drain_ours
from bench.harness import bench_settings, drain_leftovers, fresh_dir, ratio, start_broker, start_service, target
from bench.harness import wait_for_collector as wait_for_writes
from bench.measurement import sqlite_count, wait_for_count
from bench.publishers import preload

COLLECTOR_SCRIPT = "collector/mqtt_collector.py"
FULL = {"backlogs": [10_000, 100_000], "publishers": 3}
QUICK = {"backlogs": [2_000, 10_000], "publishers": 2}
TARGET_FIRST_WRITE_S = 3.0  # the retry cap (COLLECTOR_MAX_RETRY_DELAY_MS, 2 s) plus one write
TARGET_EXTRA_S = 5.0  # recovery may take the backlog's drain time plus this much


def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    params = dict(QUICK if quick else FULL)
    figures: dict[str, Any] = {}
    baselines: dict[str, Any] = {}
    ratios: dict[str, float | None] = {}
    targets = []
    rows = []
    for backlog in params["backlogs"]:
        recovered = _recover(workdir / f"recovery_{backlog}", backlog, params["publishers"])
        drained = drain_ours(workdir / f"drain_{backlog}", backlog, params["publishers"])
        drain_s = backlog / drained["msgs_per_s"] if drained["msgs_per_s"] else None
        figures[str(backlog)] = recovered
        baselines[f"drain_{backlog}"] = {**drained, "drain_s": round(drain_s, 2) if drain_s else None}
        ratios[f"recovery_vs_drain_{backlog}"] = ratio(recovered["msgs_per_s"], drained["msgs_per_s"])
        first = target(
            f"{backlog:,}: store back -> first write", recovered["first_write_s"], TARGET_FIRST_WRITE_S, at_least=False
        )
        whole = target(
            f"{backlog:,}: store back -> all stored",
            recovered["all_stored_s"],
            (drain_s or 0.0) + TARGET_EXTRA_S,
            at_least=False,
            unit="s",
        )
        targets += [first, whole]
        rows.append(
            {
                "scenario": f"recovery {backlog:,}",
                "figure": (
                    f"store back -> first write {recovered['first_write_s']:.2f} s, all {backlog:,} stored "
                    f"{recovered['all_stored_s']:.2f} s ({recovered['msgs_per_s']:,.0f} msg/s); "
                    f"{recovered['left_unacked_on_broker']} left unacked"
                ),
                "baselines": f"drain of the same {backlog:,} queued: {drained['msgs_per_s']:,.0f} msg/s ({drain_s:.2f} s)"
                if drain_s
                else "drain: n/a",
                "ratios": f"recovery rate / drain rate {ratios[f'recovery_vs_drain_{backlog}']}",
                "target": f"first write <= {TARGET_FIRST_WRITE_S:g} s; all <= drain time + {TARGET_EXTRA_S:g} s",
                "met": first["met"] and whole["met"],
            }
        )
    return {
        "parameters": params,
        "figures": figures,
        "baselines": baselines,
        "ratios": ratios,
        "targets": targets,
        "rows": rows,
    }


def _recover(workdir: Path, backlog: int, publishers: int) -> dict[str, Any]:
    workdir = fresh_dir(workdir)
    broker = start_broker(workdir, "broker")
    settings = bench_settings(workdir, broker)
    db = Path(settings.sqlite_path)
    count_query = f"SELECT COUNT(*) {BENCH_ROWS}"
    try:
        collector = start_service(COLLECTOR_SCRIPT, settings, workdir, "collector")
        wait_for_writes(broker, db, collector)
        holder = sqlite3.connect(db, isolation_level=None, timeout=30)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            preload(broker, total=backlog, processes=publishers)
            if sqlite_count(db, count_query):
                raise RuntimeError("rows were written while the store was locked")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        back = time.monotonic()
        # The write_time of the first batch is when the collector began it, which can be before the lock went
        # (a write waits out SQLite's busy timeout): the first rows are looked for instead.
        wait_for_count(db, 1, timeout_s=60.0, interval_s=0.01, stall_s=60.0, query=count_query)
        first_write_s = time.monotonic() - back
        stored = wait_for_count(
            db, backlog, timeout_s=max(120.0, backlog / 1000), interval_s=0.05, stall_s=30.0, query=count_query
        )
        all_stored_s = time.monotonic() - back
        collector.terminate()
        leftover = drain_leftovers(broker.host, broker.port, settings.mqtt_client_id)
        log = collector.log_text()
    finally:
        broker.kill()
    if stored < backlog:
        raise RuntimeError(f"recovery of {backlog}: only {stored} stored: {log[-2000:]}")
    return {
        "backlog": backlog,
        "stored": stored,
        "first_write_s": round(first_write_s, 3),
        "all_stored_s": round(all_stored_s, 3),
        "msgs_per_s": round(backlog / all_stored_s, 1),
        "left_unacked_on_broker": leftover,
        "outage_logged": "the store is unavailable" in log and "the store is back after" in log,
    }
