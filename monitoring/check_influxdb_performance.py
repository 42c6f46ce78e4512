"""Analyse how the collector writes to the store (`rtds write-perf`); works for InfluxDB and SQLite.

python monitoring/check_influxdb_performance.py --duration 15m
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.cli_support import (
    add_window_arguments,
    console,
    duration_argument,
    format_datetime,
    format_duration,
    format_ms,
    format_rate,
    load_tool_settings,
    print_json,
    read_samples_with_progress,
    report_failure,
    resolve_window,
    tool_parser,
)
from monitoring.write_pattern import analyse_writes
from rtds.settings import Settings
from rtds.store import open_store

PROG = "check_influxdb_performance"


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "write-perf",
        "Write pattern of the store (InfluxDB or SQLite, per STORE= or --store), read back from the stored\n"
        "points: points/s over time, batch sizes and intervals (points sharing a write_time are one batch),\n"
        "store delay percentiles, silences, and the bottleneck they point to.",
    )
    add_window_arguments(parser, default_duration="15m")
    parser.add_argument(
        "--window",
        type=duration_argument,
        help="width of the points/s windows (default: about 120 windows over the time the writes cover)",
    )
    parser.add_argument(
        "--gap", type=duration_argument, default=5.0, help="no write for longer than this is a silence (default 5s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_tool_settings(args)
    since, until = resolve_window(args)
    result = run(settings, since, until, window_s=args.window, gap_s=args.gap, show=not args.json)
    if not result["points"]:
        return report_failure(
            PROG,
            f"no points stored between {format_datetime(since)} and {format_datetime(until)} "
            f"in the {settings.store} store; is the collector running? Try a longer --duration.",
        )
    if args.json:
        print_json(result)
    else:
        print_summary(result)
    return 0


def run(
    settings: Settings, since: float, until: float, *, window_s: float | None, gap_s: float, show: bool = True
) -> dict[str, Any]:
    store = open_store(settings)
    try:
        samples = read_samples_with_progress(store, since, until, show=show)
        health = store.health()
    finally:
        store.close()
    pattern = analyse_writes(
        samples,
        since,
        until,
        batch_size=settings.collector_batch_size,
        flush_interval_ms=settings.collector_flush_interval_ms,
        window_s=window_s,
        gap_s=gap_s,
    )
    return {"start": since, "end": until, "backend": settings.store, "health": health.as_dict(), **pattern.as_dict()}


def print_summary(result: dict[str, Any]) -> None:
    out = console()
    out.print(
        f"[bold]Write pattern of the {result['backend']} store[/] {format_datetime(result['start'])} → {format_datetime(result['end'])}"
    )
    out.print(f"  store: {result['health']['detail']}")
    rate = result["points_per_s"]
    out.print(
        f"  {result['points_with_write_time']:,} points in {result['batches']:,} batches; "
        f"points/s {format_rate(rate['mean'])} over the time they cover, peak {format_rate(rate['max'])} "
        f"(windows of {format_duration(rate['window_s'])})"
    )
    sizes = result["batch_sizes"]
    out.print(
        f"  batch size: min {sizes['min']}, median {sizes['p50']}, mean {sizes['mean']}, P95 {sizes['p95']}, max {sizes['max']} "
        f"(COLLECTOR_BATCH_SIZE={result['batch_size_setting']}, {result['full_batch_share']:.0%} full)"
    )
    interval = result["batch_interval"]
    out.print(
        f"  between batches: median {format_ms(interval['p50_ms'])}, P95 {format_ms(interval['p95_ms'])}, max {format_ms(interval['max_ms'])} "
        f"(COLLECTOR_FLUSH_INTERVAL_MS={result['flush_interval_ms']})"
    )
    for label, key in (("store delay (receive → write)", "store_delay"), ("receive delay (live)", "receive_delay")):
        stats = result[key]
        out.print(
            f"  {label}: P50 {format_ms(stats['p50_ms'])}, P95 {format_ms(stats['p95_ms'])}, P99 {format_ms(stats['p99_ms'])}, max {format_ms(stats['max_ms'])}"
        )
    for finding in result["findings"]:
        out.print(f"  - {finding}")
    out.print(f"[bold]Bottleneck[/]: {result['bottleneck']}")


if __name__ == "__main__":
    sys.exit(main())
