"""Check that every device's seq range is in the store (`rtds delivery`). Exits 1 when anything is missing.

python monitoring/check_delivery.py              # all stored history, seqs expected from 0
python monitoring/check_delivery.py --duration 1h
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.table import Table

from monitoring.cli_support import (
    console,
    duration_argument,
    format_datetime,
    format_ranges,
    load_tool_settings,
    print_json,
    progress,
    time_argument,
    tool_parser,
)
from monitoring.delivery import check_delivery, load_device_queues
from monitoring.samples import read_samples
from rtds.settings import Settings
from rtds.store import open_store

PROG = "check_delivery"


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "delivery",
        "Per device, compare the expected seq range with the stored seqs: missing ranges, ranges the device's\n"
        "offline queue evicted (from DEVICE_QUEUE_DIR), seqs stored twice (a restarted counter), and the\n"
        "unconfirmed tail the device produced but the store does not have yet. Exit status 1 when anything\n"
        "is missing, evicted ranges included.",
    )
    parser.add_argument(
        "--duration", type=duration_argument, help="check only points of the last DURATION (default: all history)"
    )
    parser.add_argument("--start", type=time_argument, help="check only points from this time (ISO or Unix seconds)")
    parser.add_argument("--end", type=time_argument, help="check only points before this time")
    parser.add_argument(
        "--from",
        dest="expect_from",
        choices=("zero", "first"),
        help="expected seqs start at 0 or at the first stored seq (default: zero for all history, first for a period)",
    )
    parser.add_argument(
        "--include-tail",
        action="store_true",
        help="count seqs the devices produced after their last stored seq as missing (run after the devices drained)",
    )
    parser.add_argument("--queue-dir", help="device queue folder with evictions and stats (default: DEVICE_QUEUE_DIR)")
    parser.add_argument("--device", help="check one device only")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_tool_settings(args)
    whole_history = args.duration is None and args.start is None and args.end is None
    until = args.end if args.end is not None else time.time() + settings.collector_max_clock_skew_s
    if args.start is not None:
        since = args.start
    elif args.duration is not None:
        since = (args.end if args.end is not None else time.time()) - args.duration
    else:
        since = 0.0
    from_zero = (args.expect_from or ("zero" if whole_history else "first")) == "zero"
    result = run(
        settings,
        since,
        until,
        from_zero=from_zero,
        include_tail=args.include_tail,
        queue_dir=args.queue_dir or settings.device_queue_dir,
        device_id=args.device,
        show=not args.json,
    )
    if args.json:
        print_json(result)
    else:
        print_summary(result)
    return 0 if result["ok"] else 1


def run(
    settings: Settings,
    since: float,
    until: float,
    *,
    from_zero: bool,
    include_tail: bool,
    queue_dir: str,
    device_id: str | None = None,
    show: bool = True,
) -> dict[str, Any]:
    store = open_store(settings)
    try:
        with progress("reading seqs", enabled=show) as update:
            samples = read_samples(store, since, until, device_id=device_id, on_progress=update)
    finally:
        store.close()
    evictions, stats, source = load_device_queues(queue_dir)
    if device_id is not None:
        evictions = {k: v for k, v in evictions.items() if k == device_id}
        stats = {k: v for k, v in stats.items() if k == device_id}
    report = check_delivery(
        samples,
        from_zero=from_zero,
        evictions=evictions,
        device_stats=stats,
        evictions_source=source,
        include_tail=include_tail,
    )
    return {
        **report.as_dict(),
        "start": since if since > 0 else None,
        "end": until,
        "expected_from": "zero" if from_zero else "first stored seq",
        "include_tail": include_tail,
        "points": len(samples),
    }


def print_summary(result: dict[str, Any]) -> None:
    out = console()
    period = "all history" if result["start"] is None else f"from {format_datetime(result['start'])}"
    out.print(
        f"[bold]Delivery check[/] ({period}; {result['points']:,} points; seqs expected from {result['expected_from']})"
    )
    out.print(f"Evictions: {result['evictions_source']}")
    table = Table(show_edge=False)
    for column in ("device", "stored", "seqs", "missing", "of which evicted", "stored twice", "not yet stored"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for device in result["devices"]:
        seq_range = "-" if device["first_seq"] is None else f"{device['first_seq']}-{device['last_seq']}"
        missing = (
            "0"
            if not device["missing_count"]
            else f"[red]{device['missing_count']:,}[/] ({format_ranges(device['missing'], 4)})"
        )
        evicted = (
            "0"
            if not device["evicted_count"]
            else f"{device['evicted_count']:,} ({format_ranges(device['evicted'], 4)})"
        )
        twice = (
            "0"
            if not device["duplicate_points"]
            else f"[yellow]{device['duplicate_points']:,}[/] ({format_ranges(device['duplicates'], 3)})"
        )
        tail = "-" if not device["tail_count"] else f"{device['tail_count']:,} (queued {device['queued']})"
        if device["held_upstream_count"]:
            tail = (
                f"{device['tail_count']:,} (held upstream {device['held_upstream_count']:,}, queued {device['queued']})"
            )
        table.add_row(device["device_id"], f"{device['stored']:,}", seq_range, missing, evicted, twice, tail)
    out.print(table)
    if result["duplicate_points_total"]:
        out.print(
            "[yellow]Seqs stored twice under different times: a device restarted its seq counter (lost its queue file).[/]"
        )
    if result["held_upstream_total"]:
        out.print(
            f"{result['held_upstream_total']:,} seq(s) the broker acknowledged to their device are not stored yet: "
            "they are held upstream of the store (the broker's session or the collector's buffer, e.g. while the "
            "store is down), not lost. The collector writes them when the store takes them; check its log."
        )
    if result["tail_total"] and not result["include_tail"]:
        out.print(
            f"{result['tail_total']:,} seq(s) produced but not stored yet (queued or in flight); "
            "run again with --include-tail after the devices drained to count them."
        )
    if result["ok"]:
        out.print(f"[green]OK[/]: {result['devices_checked']} device(s), nothing missing.")
    else:
        evicted = f", {result['evicted_total']:,} of them evicted by device queues" if result["evicted_total"] else ""
        out.print(
            f"[red]MISSING[/]: {result['missing_total']:,} seq(s) on {result['devices_incomplete']} device(s){evicted}."
        )


if __name__ == "__main__":
    sys.exit(main())
