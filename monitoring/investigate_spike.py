"""Find latency spikes and explain them (`rtds spike`).

python monitoring/investigate_spike.py                      # the last hour
python monitoring/investigate_spike.py --start 2024-06-10T14:00 --end 2024-06-10T14:30
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
    format_time,
    load_tool_settings,
    print_json,
    read_samples_with_progress,
    resolve_window,
    tool_parser,
)
from monitoring.latency import find_gaps, summarize
from monitoring.spikes import find_spikes
from rtds.settings import Settings
from rtds.store import open_store

PROG = "investigate_spike"


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "spike",
        "Find the windows whose end-to-end P95 exceeded a threshold and, for each spike, show the devices\n"
        "involved, the share of points replayed from device offline queues, whether the receive delay or\n"
        "the store delay grew, the throughput at the time, and the likely cause.",
    )
    add_window_arguments(parser, default_duration="1h")
    parser.add_argument("--threshold-ms", type=float, help="P95 above this is a spike (default: LATENCY_TARGET_P95_MS)")
    parser.add_argument("--window", type=duration_argument, default=10.0, help="window width (default 10s)")
    parser.add_argument(
        "--gap",
        type=duration_argument,
        default=5.0,
        help="a silence in receive times longer than this is an outage (default 5s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_tool_settings(args)
    since, until = resolve_window(args)
    threshold = args.threshold_ms if args.threshold_ms is not None else settings.latency_target_p95_ms
    result = run(
        settings, since, until, threshold_ms=threshold, window_s=args.window, gap_s=args.gap, show=not args.json
    )
    if args.json:
        print_json(result)
    else:
        print_summary(result)
    return 0


def run(
    settings: Settings,
    since: float,
    until: float,
    *,
    threshold_ms: float,
    window_s: float,
    gap_s: float,
    show: bool = True,
) -> dict[str, Any]:
    store = open_store(settings)
    try:
        samples = read_samples_with_progress(store, since, until, show=show)
    finally:
        store.close()
    gaps = find_gaps(samples.receive, gap_s)
    spikes = find_spikes(
        samples,
        since,
        until,
        threshold_ms=threshold_ms,
        window_s=window_s,
        gaps=gaps,
        target_p95_ms=settings.latency_target_p95_ms,
    )
    return {
        "start": since,
        "end": until,
        "threshold_ms": threshold_ms,
        "window_s": window_s,
        "points": len(samples),
        "overall": summarize(samples, since, until, settings.latency_target_p95_ms).as_dict(),
        "outages": [gap.as_dict() for gap in gaps],
        "spikes": [spike.as_dict() for spike in spikes],
    }


def print_summary(result: dict[str, Any]) -> None:
    out = console()
    out.print(
        f"[bold]Spikes {format_datetime(result['start'])} → {format_datetime(result['end'])}[/]: "
        f"{result['points']:,} points, windows of {format_duration(result['window_s'])}, "
        f"threshold P95 > {format_ms(result['threshold_ms'])}"
    )
    for gap in result["outages"]:
        out.print(
            f"  outage: nothing received {format_time(gap['start'])} → {format_time(gap['end'])} ({format_duration(gap['duration_s'])})"
        )
    if not result["spikes"]:
        p95 = result["overall"]["end_to_end"]["p95_ms"]
        out.print(
            f"[green]No spike[/]: no window had a P95 over the threshold (P95 over the period: {format_ms(p95)})."
        )
        return
    for number, spike in enumerate(result["spikes"], 1):
        latency = spike["latency"]
        out.print(
            f"\n[bold red]Spike {number}[/]: {format_time(spike['start'])} → {format_time(spike['end'])} "
            f"({format_duration(spike['duration_s'])}), P95 {format_ms(spike['p95_ms'])}, max {format_ms(spike['max_ms'])}"
        )
        out.print(
            f"  points: {spike['count']:,}, replayed {spike['replayed_count']:,} ({spike['replayed_share']:.0%}); live P95 {format_ms(latency['live']['p95_ms'])}"
        )
        named = ", ".join(f"{d['device_id']} ({d['over_threshold']:,} over)" for d in spike["devices"][:8])
        out.print(f"  devices over the threshold: {spike['devices_involved']} of {spike['devices_present']}: {named}")
        out.print(
            f"  receive delay P95 {format_ms(spike['receive_delay_p95_ms'])} (normally {format_ms(spike['baseline_receive_delay_p95_ms'])}); "
            f"store delay P95 {format_ms(spike['store_delay_p95_ms'])} (normally {format_ms(spike['baseline_store_delay_p95_ms'])})"
        )
        out.print(
            f"  throughput: {format_rate(spike['published_per_s'])} msg/s published, "
            f"{format_rate(spike['stored_per_s'])} msg/s stored (normally {format_rate(spike['baseline_per_s'])} msg/s)"
        )
        for note in spike["notes"]:
            out.print(f"  note: {note}")
        out.print(f"  [bold]cause[/]: {spike['cause']}")


if __name__ == "__main__":
    sys.exit(main())
