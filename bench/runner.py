"""`rtds bench [--quick] [--json-only] [scenario ...]`: run the benchmarks, print the table, keep the JSON.

Every scenario runs against real processes (our Mosquitto config, our services, the SQLite
store) in a temporary folder. The results, with a description of the machine, go to
bench/results/<UTC timestamp>.json and bench/results/latest.json (`--quick` runs write
...-quick.json and latest-quick.json, so a smoke run never replaces the full figures), each with
a PNG chart of the same name (bench/plots.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from bench.plots import plot_results
from rtds.broker import PROJECT_ROOT, find_mosquitto

SCENARIOS: dict[str, tuple[str, str]] = {
    "drain": ("bench.drain", "backlog drain: ours vs bare paho, mosquitto_sub and a naive collector"),
    "latency": ("bench.live_latency", "publish → durable write at 100, 1,000 and 10,000 msg/s"),
    "fleet": ("bench.fleet", "1,000 devices in one process vs one process per device"),
    "dashboard": ("bench.dashboard_load", "1,000 devices x 50 Socket.IO clients"),
    "report": ("bench.report_scale", "latency report over 1,000,000 points"),
    "poison": ("bench.poison", "half the backlog poison from one device vs all good, drain rates in the same run"),
    "recovery": ("bench.recovery", "store back after an outage -> backlogs of 10,000 and 100,000 stored"),
    "cluster": ("bench.cluster", "backlog drain through a 3-node NATS cluster vs one NATS node, same run"),
}
PACKAGES = ("paho-mqtt", "orjson", "flask-socketio", "python-socketio", "influxdb-client", "flask", "psutil")
RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtds bench",
        description="Run the benchmarks against real processes and compare them with baselines and targets.",
        epilog="scenarios: " + "; ".join(f"{name}: {text}" for name, (_, text) in SCENARIOS.items()),
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="scenario", help=f"any of {', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (about a minute in all)")
    parser.add_argument("--json-only", action="store_true", help="print the JSON document instead of the table")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown (for the README)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where to write the JSON results")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, databases) afterwards")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="print the table of an earlier results file; run nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(width=200) if not sys.stdout.isatty() else Console()
    if args.render:
        document = json.loads(args.render.read_text())
        console.print(results_table(document))
        print(markdown_table(document))
        console.print(f"chart: {plot_results(document, args.render.with_suffix('.png'))}")
        return 0
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        print(
            f"rtds bench: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr
        )
        return 2
    names = args.scenarios or list(SCENARIOS)
    workdir = Path(tempfile.mkdtemp(prefix="rtds-bench-"))
    document: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "rtds bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick,
        "machine": describe_machine(),
        "scenarios": {},
    }
    try:
        for name in names:
            if not args.json_only:
                console.print(f"[bold]{name}[/]: {SCENARIOS[name][1]}{' (quick)' if args.quick else ''} ...")
            document["scenarios"][name] = run_scenario(name, workdir / name, quick=args.quick)
            if not args.json_only:
                outcome = document["scenarios"][name]
                state = "[red]failed[/]" if "error" in outcome else f"done in {outcome['elapsed_s']:.0f} s"
                console.print(f"  {state}")
    finally:
        if args.keep:
            console.print(f"working folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    paths = write_results(document, args.results_dir, quick=args.quick)
    if args.json_only:
        print(json.dumps(document, indent=2))
    else:
        console.print(results_table(document))
        console.print(f"results: {paths[0]} (and {paths[1].name}); chart: {paths[0].with_suffix('.png')}")
    if args.markdown:
        print(markdown_table(document))
    return 1 if any("error" in outcome for outcome in document["scenarios"].values()) else 0


def run_scenario(name: str, workdir: Path, *, quick: bool) -> dict[str, Any]:
    """One scenario's result, with its run time and the load on the machine around it; errors are kept, not raised."""
    module = importlib.import_module(SCENARIOS[name][0])
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        result = module.run(workdir, quick=quick)
    except Exception as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["load_average_before"] = [round(value, 2) for value in load_before]
    result["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
    return result


def describe_machine() -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "mosquitto": _mosquitto_version(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "packages": packages,
        "git_commit": _git_commit(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mosquitto_version() -> str | None:
    try:
        completed = subprocess.run([find_mosquitto(), "-h"], capture_output=True, timeout=10, check=False)
    except Exception:
        return None
    first = (completed.stdout or completed.stderr).decode(errors="replace").splitlines()
    return first[0].replace("mosquitto version", "").strip() if first else None


def _git_commit() -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, timeout=10, check=False
        )
    except OSError:
        return None
    return completed.stdout.decode().strip() or None


def write_results(document: dict[str, Any], folder: Path, *, quick: bool) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else ""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(document, indent=2) + "\n"
    dated = folder / f"{stamp}{suffix}.json"
    latest = folder / f"latest{suffix}.json"
    for path in (dated, latest):
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(text)
        temporary.replace(path)
    chart = plot_results(document, dated.with_suffix(".png"))
    shutil.copyfile(chart, latest.with_suffix(".png"))
    return dated, latest


def _rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, outcome in document["scenarios"].items():
        if "error" in outcome:
            rows.append(
                {
                    "scenario": name,
                    "figure": f"ERROR {outcome['error']}",
                    "baselines": "",
                    "ratios": "",
                    "target": "",
                    "met": None,
                }
            )
        else:
            rows += outcome["rows"]
    return rows


def _met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


def results_table(document: dict[str, Any]) -> Table:
    machine = document["machine"]
    title = (
        f"rtds bench{' --quick' if document['quick'] else ''}: {machine['logical_cores']} cores "
        f"({machine['cpu_model']}), Python {machine['python']}, Mosquitto {machine['mosquitto']}"
    )
    table = Table(title=title, show_lines=True)
    for column in ("scenario", "our figure", "baselines", "ratios", "target", "met?"):
        table.add_column(column, overflow="fold")
    for row in _rows(document):
        met = _met_text(row["met"])
        style = {"yes": "green", "NO": "red"}.get(met, "")
        table.add_row(
            row["scenario"],
            row["figure"],
            row["baselines"],
            row["ratios"],
            row["target"],
            f"[{style}]{met}[/]" if style else met,
        )
    return table


def markdown_table(document: dict[str, Any]) -> str:
    lines = ["| scenario | our figure | baselines | ratios | target | met? |", "| --- | --- | --- | --- | --- | --- |"]
    for row in _rows(document):
        cells = [row["scenario"], row["figure"], row["baselines"], row["ratios"], row["target"], _met_text(row["met"])]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
