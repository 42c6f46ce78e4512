"""Write a latency report: PNG charts and a Markdown page embedding them (`rtds report`).

python monitoring/generate_latency_report.py --duration 16h --sample-limit 50000
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
    progress,
    read_samples_with_progress,
    report_failure,
    resolve_window,
    tool_parser,
)
from monitoring.collected import load_collected
from monitoring.collected_report import collected_markdown, collected_summary, draw_collected_charts, select_records
from monitoring.report import MARKDOWN_FILE, build_store_report, draw_store_charts, store_markdown
from rtds.settings import Settings
from rtds.store import open_store

PROG = "generate_latency_report"
DEFAULT_OUTPUT_DIR = "reports"


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "report",
        "Write PNG charts (latency percentiles over time with the P95 target line, histogram/CDF, per-device box\n"
        "plot, throughput, live vs replayed) and a Markdown summary embedding them.",
    )
    add_window_arguments(parser, default_duration="1h")
    parser.add_argument(
        "--source",
        choices=("store", "collected"),
        default="store",
        help="points in the store (default) or the collected JSON samples",
    )
    parser.add_argument("--input", help="collected JSON file for --source collected (default: LATENCY_DATA_PATH)")
    parser.add_argument(
        "--sample-limit",
        type=int,
        default=50_000,
        help="most points drawn in scatter and box plots; statistics always use every point (default 50000)",
    )
    parser.add_argument(
        "--window",
        type=duration_argument,
        help="width of the windows over time (default: about 120 windows over the time the points cover)",
    )
    parser.add_argument(
        "--gap",
        type=duration_argument,
        default=5.0,
        help="a silence in receive times longer than this is an outage (default 5s)",
    )
    parser.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help=f"folder for the PNGs and {MARKDOWN_FILE} (default: {DEFAULT_OUTPUT_DIR}/)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_tool_settings(args)
    since, until = resolve_window(args)
    folder = Path(args.output_dir)
    if args.source == "collected":
        result = run_collected(settings, Path(args.input or settings.latency_data_path), since, until, folder)
    else:
        result = run_store(
            settings,
            since,
            until,
            folder,
            window_s=args.window,
            gap_s=args.gap,
            sample_limit=args.sample_limit,
            show=not args.json,
        )
    if "error" in result:
        return report_failure(PROG, result["error"])
    if args.json:
        print_json(result)
    else:
        print_summary(result)
    return 0


def store_label(settings: Settings) -> str:
    if settings.store == "sqlite":
        return f"sqlite store {settings.sqlite_path}"
    return f"influxdb store {settings.influxdb_url}, bucket {settings.influxdb_bucket}"


def run_store(
    settings: Settings,
    since: float,
    until: float,
    folder: Path,
    *,
    window_s: float | None,
    gap_s: float,
    sample_limit: int,
    show: bool = True,
) -> dict[str, Any]:
    store = open_store(settings)
    try:
        samples = read_samples_with_progress(store, since, until, show=show)
    finally:
        store.close()
    if not len(samples):
        return {
            "error": f"no points stored between {format_datetime(since)} and {format_datetime(until)} in the "
            f"{store_label(settings)}; is the collector running? Try a longer --duration."
        }
    report = build_store_report(
        samples,
        since,
        until,
        backend=settings.store,
        target_p95_ms=settings.latency_target_p95_ms,
        window_s=window_s,
        gap_s=gap_s,
        sample_limit=sample_limit,
    )
    with progress("drawing charts", enabled=show) as update:
        update(0.1, "")
        chart_paths = draw_store_charts(report, folder)
    markdown = folder / MARKDOWN_FILE
    markdown.write_text(store_markdown(report, chart_paths, store_label=store_label(settings)))
    return {**report.as_dict(), "markdown": str(markdown), "charts": {k: str(v) for k, v in chart_paths.items()}}


def run_collected(settings: Settings, path: Path, since: float, until: float, folder: Path) -> dict[str, Any]:
    try:
        records = select_records(load_collected(path), since, until)
    except ValueError as exc:
        return {"error": str(exc)}
    if not records:
        return {
            "error": f"{path} has no samples between {format_datetime(since)} and {format_datetime(until)}; "
            "run collect_latency_data first, or use --source store"
        }
    summary = collected_summary(records)
    target = settings.latency_target_p95_ms
    chart_paths = draw_collected_charts(records, folder, target_ms=target)
    markdown = folder / MARKDOWN_FILE
    markdown.write_text(collected_markdown(records, summary, chart_paths, source_label=str(path), target_ms=target))
    return {
        **summary,
        "start": since,
        "end": until,
        "input": str(path),
        "markdown": str(markdown),
        "charts": {k: str(v) for k, v in chart_paths.items()},
    }


def print_summary(result: dict[str, Any]) -> None:
    out = console()
    if result["source"] == "store":
        overall = result["overall"]
        live, replayed = overall["live"], overall["replayed"]
        out.print(
            f"[bold]Latency {format_datetime(result['start'])} → {format_datetime(result['end'])}[/] ({result['backend']})"
        )
        out.print(
            f"  {overall['count']:,} points ({overall['live_count']:,} live, {overall['replayed_count']:,} replayed) "
            f"covering {format_duration(result['covered']['duration_s'])}, {format_rate(overall['messages_per_s'])} msg/s"
        )
        out.print(
            f"  live      P50 {format_ms(live['p50_ms'])}  P95 {format_ms(live['p95_ms'])}  P99 {format_ms(live['p99_ms'])}  max {format_ms(live['max_ms'])}"
        )
        if replayed["count"]:
            out.print(
                f"  replayed  P50 {format_ms(replayed['p50_ms'])}  P95 {format_ms(replayed['p95_ms'])}  max {format_ms(replayed['max_ms'])}"
            )
        verdict = {True: "[green]meets[/]", False: "[red]misses[/]", None: "[yellow]cannot judge[/]"}[
            overall["compliant"]
        ]
        out.print(
            f"  live P95 {verdict} the {format_ms(overall['target_p95_ms'])} target; {len(result['gaps'])} outage(s), {len(result['spikes'])} spike(s)"
        )
        for spike in result["spikes"]:
            out.print(f"  spike: {spike['cause']}")
    else:
        out.print(
            f"[bold]{result['samples']} collected samples[/] from {result['input']}: "
            f"{result['samples_compliant']}/{result['samples_judged']} met the P95 target"
        )
    out.print(f"Report: {result['markdown']} ({len(result['charts'])} charts)")


if __name__ == "__main__":
    sys.exit(main())
