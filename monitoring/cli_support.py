"""What every monitoring command shares: common options, settings, time windows, progress and output.

Each tool prints a readable summary by default, or one JSON document on stdout with `--json`.
Progress bars go to stderr and only when it is a terminal, so `--json` output stays clean.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from monitoring.samples import SampleSet, read_samples
from rtds.cli import command_prog
from rtds.errors import ConfigError
from rtds.logs import configure_logging
from rtds.settings import STORE_NAMES, Settings, duration_argument, load_settings
from rtds.store import StoreReader

ProgressCallback = Callable[[float, str], None]


def tool_parser(
    command: str, description: str, epilog: str | None = None, *, prog: str | None = None
) -> argparse.ArgumentParser:
    """The parser of the tool `rtds COMMAND` runs; it names itself `rtds COMMAND` there and its script's name
    when started as a script (or `prog`, when given)."""
    parser = argparse.ArgumentParser(
        prog=prog or command_prog(command),
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env-file", default=".env", help="settings file to read (default: .env)")
    parser.add_argument("--store", choices=STORE_NAMES, help="read this store instead of STORE= from the settings")
    parser.add_argument("--json", action="store_true", help="print one JSON document for machines instead of text")
    return parser


def add_window_arguments(parser: argparse.ArgumentParser, *, default_duration: str) -> None:
    parser.add_argument(
        "--duration",
        default=default_duration,
        type=duration_argument,
        help=f"how far back to look from --end or now, e.g. 90s, 5m, 16h (default: {default_duration})",
    )
    parser.add_argument("--start", type=time_argument, help="period start: ISO time (local) or Unix seconds")
    parser.add_argument("--end", type=time_argument, help="period end: ISO time (local) or Unix seconds (default: now)")


def time_argument(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_time(text: str) -> float:
    """'1718000000', '2024-06-10T14:30:00' (local time), '2024-06-10 14:30:00+00:00' -> Unix seconds."""
    stripped = text.strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(stripped).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is not a time; use ISO 8601 (2024-06-10T14:30:00) or Unix seconds") from None


def resolve_window(args: argparse.Namespace, now: float | None = None) -> tuple[float, float]:
    """(since, until) from --start/--end/--duration; --start wins over --duration."""
    until = args.end if args.end is not None else (time.time() if now is None else now)
    since = args.start if args.start is not None else until - args.duration
    if since >= until:
        raise SystemExit(
            f"the period is empty: start {format_datetime(since)} is not before end {format_datetime(until)}"
        )
    return since, until


def load_tool_settings(args: argparse.Namespace) -> Settings:
    """Settings from --env-file and the environment; a bad value ends the command with its explanation."""
    try:
        settings = load_settings(env_file=args.env_file)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "store", None):
        settings = settings.with_overrides(store=args.store)
    configure_logging(settings.log_level)
    return settings


def format_time(timestamp: float | None) -> str:
    if timestamp is None or not math.isfinite(timestamp):
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def format_datetime(timestamp: float | None) -> str:
    if timestamp is None or not math.isfinite(timestamp):
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def format_ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.1f} ms" if abs(value) < 100 else f"{value:.0f} ms"


def format_rate(per_s: float | None) -> str:
    """A rate with one decimal; "-" when there is none (no points, or all at one instant)."""
    if per_s is None or not math.isfinite(per_s):
        return "-"
    return f"{per_s:.1f}"


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_ranges(ranges: list[tuple[int, int]], limit: int = 8) -> str:
    parts = [str(first) if first == last else f"{first}-{last}" for first, last in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... (+{len(ranges) - limit} more)")
    return ", ".join(parts) if parts else "-"


def console() -> Console:
    """Standard output; wide when it is not a terminal, so tables in logs and pipes do not wrap."""
    out = Console(highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = 160
    return out


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=_json_default, allow_nan=False) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def clean_number(value: float | None, digits: int = 3) -> float | None:
    """A JSON-safe rounded float: NaN and infinities become None."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


@contextmanager
def progress(description: str, enabled: bool = True) -> Iterator[ProgressCallback]:
    """A progress bar on stderr (terminal only); yields `update(fraction_done, text)`."""
    err = Console(stderr=True)
    if not enabled or not err.is_terminal:
        yield lambda fraction, text: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=1.0, detail="")

        def update(fraction: float, text: str) -> None:
            bar.update(task, completed=min(max(fraction, 0.0), 1.0), detail=text)

        yield update


def report_failure(prog: str, message: str) -> int:
    """One line on stderr naming the problem; exit status 1."""
    print(f"{prog}: {message}", file=sys.stderr)
    return 1


def read_samples_with_progress(store: StoreReader, since: float, until: float, *, show: bool = True) -> SampleSet:
    """Every point's timings in [since, until), with a progress bar while they are read."""
    with progress("reading points", enabled=show) as update:
        return read_samples(store, since, until, on_progress=update)
