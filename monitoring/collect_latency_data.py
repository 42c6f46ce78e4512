"""Sample latency statistics from the store into a JSON file (`rtds collect-latency`).

Once:        python monitoring/collect_latency_data.py --duration 5m
Continuous:  python monitoring/collect_latency_data.py --continuous --duration 16h
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitoring.cli_support import (
    ProgressCallback,
    console,
    duration_argument,
    format_datetime,
    format_duration,
    format_ms,
    format_rate,
    format_time,
    load_tool_settings,
    print_json,
    progress,
    tool_parser,
)
from monitoring.collected import append_collected, sample_record
from monitoring.latency import summarize
from monitoring.samples import read_samples
from rtds.settings import Settings, parse_duration_s
from rtds.shutdown import STOP_SIGNALS, StopRequest
from rtds.store import StoreReader, open_store

PROG = "collect_latency_data"
PROGRESS_STEP_S = 0.5  # how often a continuous run's progress bar moves between samples


def build_parser() -> argparse.ArgumentParser:
    parser = tool_parser(
        "collect-latency",
        "Sample end-to-end latency statistics (count, msg/s, min/avg/P50/P95/P99/max, P95 target compliance)\n"
        "from the store and append them to LATENCY_DATA_PATH, keeping LATENCY_RETENTION_DURATION of samples.",
        epilog="Without --continuous, one sample covers the last --duration. With --continuous, one sample of\n"
        "the last --window is taken every --interval, and a last one when --duration has passed, so the run\n"
        "lasts --duration whatever the interval (Ctrl-C stops early); the file then keeps at least --duration\n"
        "of samples so the run can be reported.",
    )
    parser.add_argument(
        "--duration", type=duration_argument, default=300.0, help="window (once) or run time (--continuous); default 5m"
    )
    parser.add_argument(
        "--continuous", action="store_true", help="keep sampling every --interval until --duration has passed"
    )
    parser.add_argument(
        "--interval", type=duration_argument, help="time between samples (default: LATENCY_COLLECT_INTERVAL)"
    )
    parser.add_argument(
        "--window", type=duration_argument, help="period each continuous sample covers (default: --interval)"
    )
    parser.add_argument(
        "--retention", type=duration_argument, help="keep samples this long (default: LATENCY_RETENTION_DURATION)"
    )
    parser.add_argument("--output", help="JSON file (default: LATENCY_DATA_PATH)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_tool_settings(args)
    interval_s = args.interval or float(settings.latency_collect_interval)
    retention_s = args.retention or parse_duration_s(settings.latency_retention_duration)
    if args.continuous:
        retention_s = max(retention_s, args.duration)
    output = Path(args.output or settings.latency_data_path)
    stop = StopRequest()
    with stop_on_signals(stop) if args.continuous else nullcontext():
        result = run(
            settings,
            output=output,
            continuous=args.continuous,
            duration_s=args.duration,
            interval_s=interval_s,
            window_s=args.window or (interval_s if args.continuous else args.duration),
            retention_s=retention_s,
            stop=stop,
            show=not args.json,
        )
    if args.json:
        print_json(result)
    else:
        print_summary(result)
    return 0


def run(
    settings: Settings,
    *,
    output: Path,
    continuous: bool,
    duration_s: float,
    interval_s: float,
    window_s: float,
    retention_s: float,
    stop: StopRequest | threading.Event,
    show: bool = True,
) -> dict[str, Any]:
    """One sample of the last `window_s`; or, `continuous`, one every `interval_s` and a last one when
    `duration_s` has passed (so the run lasts `duration_s` whatever the interval), unless `stop` is set."""
    store = open_store(settings)
    collected: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    started = time.time()
    interrupted = False

    def take_sample(on_progress: ProgressCallback | None = None) -> None:
        nonlocal kept
        now = time.time()
        record = collect_sample(store, settings, now - window_s, now, on_progress=on_progress)
        collected.append(record)
        kept = append_collected(output, [record], retention_s=retention_s, now=now)

    try:
        if not continuous:
            with progress(f"reading {format_duration(window_s)} of points", enabled=show) as update:
                take_sample(update)
        else:
            with progress(f"sampling every {format_duration(interval_s)}", enabled=show) as update:
                began = time.monotonic()
                deadline, next_at = began + duration_s, began
                while True:
                    take_sample()
                    update((time.monotonic() - began) / duration_s, f"{len(collected)} sample(s)")
                    if show:
                        console().print(sample_line(collected[-1]))
                    if time.monotonic() >= deadline:
                        break
                    while next_at <= time.monotonic():  # a sample slower than the interval skips a turn
                        next_at += interval_s
                    wake = min(next_at, deadline)
                    while (remaining := wake - time.monotonic()) > 0 and not interrupted:
                        interrupted = stop.wait(min(remaining, PROGRESS_STEP_S))
                        update((time.monotonic() - began) / duration_s, f"{len(collected)} sample(s)")
                    if interrupted:
                        break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        store.close()
    return {
        "output": str(output),
        "continuous": continuous,
        "started": started,
        "stopped": time.time(),
        "interrupted": interrupted,
        "retention_s": retention_s,
        "samples_collected": len(collected),
        "samples_in_file": len(kept),
        "samples": collected,
    }


def collect_sample(
    store: StoreReader, settings: Settings, since: float, until: float, *, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    samples = read_samples(store, since, until, on_progress=on_progress)
    return sample_record(summarize(samples, since, until, settings.latency_target_p95_ms), collected_at=until)


def sample_line(record: dict[str, Any]) -> str:
    verdict = {True: "[green]meets the target[/]", False: "[red]over the target[/]", None: "[yellow]no live points[/]"}
    return (
        f"{format_time(record['time'])}  {record['count']:>7,} pts  {format_rate(record['messages_per_s']):>8} msg/s  "
        f"all: P50 {format_ms(record['p50_ms'])}  P95 {format_ms(record['p95_ms'])}  P99 {format_ms(record['p99_ms'])}  "
        f"max {format_ms(record['max_ms'])}  replayed {record['replayed_count']:,}  "
        f"live P95 {format_ms(record['live']['p95_ms'])} {verdict[record['compliant']]}"
    )


def print_summary(result: dict[str, Any]) -> None:
    out = console()
    samples = result["samples"]
    if not result["continuous"] and samples:  # a continuous run printed each sample as it came
        record = samples[0]
        out.print(f"[bold]Latency {format_datetime(record['start'])} → {format_time(record['end'])}[/]")
        out.print(sample_line(record))
    compliant = sum(1 for s in samples if s["compliant"])
    judged = sum(1 for s in samples if s["compliant"] is not None)
    stopped = " (stopped early)" if result["interrupted"] else ""
    out.print(
        f"{len(samples)} sample(s) collected over {format_duration(result['stopped'] - result['started'])}{stopped}; "
        f"{compliant}/{judged} had a live P95 under "
        f"{format_ms(samples[0]['target_p95_ms']) if samples else '-'}; "
        f"{result['samples_in_file']} kept in {result['output']} (retention {format_duration(result['retention_s'])})"
    )


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` (main thread only), so a continuous run ends cleanly with its summary."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    stop.set_on_signals()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
