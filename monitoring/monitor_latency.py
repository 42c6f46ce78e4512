"""One latency snapshot with a verdict (`rtds latency`).

python monitoring/monitor_latency.py                 # the last 5 minutes
python monitoring/monitor_latency.py --duration 1m --json
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.table import Table

from monitoring.cli_support import (
    add_window_arguments,
    console,
    format_datetime,
    format_duration,
    format_ms,
    format_rate,
    load_tool_settings,
    print_json,
    read_samples_with_progress,
    resolve_window,
    tool_parser,
)
from monitoring.latency import summarize
from rtds.schema import MEASUREMENT_FIELDS, STORED_FIELDS
from rtds.settings import Settings
from rtds.store import open_store

PROG = "monitor_latency"
TIMING_CAUSES = {
    "publish_timestamp": "points carry no publish time (written by an older collector); latency is measured from the point time",
    "collector_receive_time": "the collector does not stamp its receive time (e.g. Telegraf); receive and store delay cannot be told apart",
    "write_time": "the collector does not stamp its write time (e.g. Telegraf); end-to-end latency cannot be computed",
    "seq": "devices send no seq (older firmware or the legacy vehicle/speed payload); the delivery check cannot work",
}
OPTIONAL_CAUSE = "devices do not report it (legacy speed-only payload, or the reading is off); optional"


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "latency",
        "One snapshot: latency percentiles of the last minutes (live and replayed apart), which expected fields\n"
        "the stored points carry (and the likely cause of each missing one), when each device was last seen,\n"
        "and a verdict. Exit status 1 when the verdict is FAIL.",
    )
    add_window_arguments(parser, default_duration="5m")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_tool_settings(args)
    since, until = resolve_window(args)
    result = run(settings, since, until, show=not args.json)
    if args.json:
        print_json(result)
    else:
        print_summary(result)
    return 1 if result["verdict"] == "FAIL" else 0


def run(settings: Settings, since: float, until: float, *, show: bool = True) -> dict[str, Any]:
    store = open_store(settings)
    try:
        samples = read_samples_with_progress(store, since, until, show=show)
        latest = store.latest()
        last_seen = store.last_seen()
    finally:
        store.close()
    summary = summarize(samples, since, until, settings.latency_target_p95_ms)
    fields = field_presence(latest)
    now = time.time()
    devices = {
        device_id: {
            "last_seen": seen,
            "age_s": round(now - seen, 3),
            "online": now - seen <= settings.dashboard_offline_after_s,
        }
        for device_id, seen in sorted(last_seen.items())
    }
    verdict, reasons = judge(summary.as_dict(), fields, devices)
    return {
        "start": since,
        "end": until,
        "backend": settings.store,
        "latency": summary.as_dict(),
        "fields": fields,
        "devices": devices,
        "verdict": verdict,
        "reasons": reasons,
    }


def field_presence(latest_rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each expected field: how many devices' newest point carry it, and why it may be missing."""
    expected = ("detection_label", *STORED_FIELDS)
    result: dict[str, dict[str, Any]] = {}
    for name in expected:
        present = sum(1 for row in latest_rows if row.get(name) is not None)
        missing = len(latest_rows) - present
        entry: dict[str, Any] = {"devices_with": present, "devices_without": missing, "required": name in TIMING_CAUSES}
        if missing:
            entry["cause"] = TIMING_CAUSES.get(
                name, OPTIONAL_CAUSE if name in (*MEASUREMENT_FIELDS, "detection_label") else ""
            )
        result[name] = entry
    return result


def judge(
    latency: dict[str, Any], fields: dict[str, dict[str, Any]], devices: dict[str, dict[str, Any]]
) -> tuple[str, list[str]]:
    fail: list[str] = []
    warn: list[str] = []
    if latency["count"] == 0:
        fail.append("no points stored in the period: is the collector running, and are devices publishing?")
    elif latency["compliant"] is False:
        fail.append(
            f"live P95 {format_ms(latency['live']['p95_ms'])} is over the {format_ms(latency['target_p95_ms'])} target"
        )
    elif latency["compliant"] is None:
        warn.append("only replayed points in the period: devices are catching up after an outage")
    offline = [name for name, device in devices.items() if not device["online"]]
    if offline:
        warn.append(f"{len(offline)} device(s) not seen recently: {', '.join(offline[:8])}")
    for name, entry in fields.items():
        if entry["required"] and entry["devices_without"]:
            warn.append(f"{entry['devices_without']} device(s) lack {name}: {entry['cause']}")
    if latency["replayed_count"]:
        warn.append(
            f"{latency['replayed_count']:,} replayed point(s) (P95 {format_ms(latency['replayed']['p95_ms'])}), reported apart from live"
        )
    if fail:
        return "FAIL", fail + warn
    return ("WARN" if warn else "OK"), warn


def print_summary(result: dict[str, Any]) -> None:
    out = console()
    latency = result["latency"]
    out.print(
        f"[bold]Latency snapshot[/] {format_datetime(result['start'])} → {format_datetime(result['end'])} "
        f"({format_duration(result['end'] - result['start'])}, {result['backend']})"
    )
    out.print(
        f"  {latency['count']:,} points, {format_rate(latency['messages_per_s'])} msg/s over the time they cover, "
        f"{latency['replayed_count']:,} replayed"
    )
    table = Table(show_edge=False)
    for column in ("", "points", "min", "avg", "P50", "P95", "P99", "max"):
        table.add_column(column, justify="left" if not column else "right")
    for label, key in (
        ("live", "live"),
        ("replayed", "replayed"),
        ("receive delay", "receive_delay"),
        ("store delay", "store_delay"),
    ):
        stats = latency[key]
        table.add_row(
            label,
            f"{stats['count']:,}",
            *(format_ms(stats[k]) for k in ("min_ms", "avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")),
        )
    out.print(table)
    missing = [(name, entry) for name, entry in result["fields"].items() if entry["devices_without"]]
    present = [
        name for name, entry in result["fields"].items() if entry["devices_with"] and not entry["devices_without"]
    ]
    out.print(f"Fields on every device's newest point: {', '.join(present) if present else 'none'}")
    for name, entry in missing:
        if entry["required"]:
            out.print(f"  [yellow]missing {name}[/] on {entry['devices_without']} device(s): {entry['cause']}")
    optional = [name for name, entry in missing if not entry["required"]]
    if optional:
        out.print(f"  missing optional fields on some devices: {', '.join(optional)} ({OPTIONAL_CAUSE})")
    seen = ", ".join(
        f"{name} {device['age_s']:.0f} s ago" + ("" if device["online"] else " [red](offline)[/]")
        for name, device in result["devices"].items()
    )
    out.print(f"Last seen: {seen or 'no device'}")
    colour = {"OK": "green", "WARN": "yellow", "FAIL": "red"}[result["verdict"]]
    out.print(f"Verdict: [{colour}]{result['verdict']}[/]")
    for reason in result["reasons"]:
        out.print(f"  - {reason}")


if __name__ == "__main__":
    sys.exit(main())
