"""One PNG per `rtds bench` run: every target's headroom, the drain against its baselines, latency by rate.

Drawn from the results document alone (matplotlib's Agg backend), so `rtds bench --render FILE`
draws an earlier run the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

MET_COLOR = "#2ca02c"
MISSED_COLOR = "#d62728"
OURS_COLOR = "#1f77b4"
BASELINE_COLOR = "#9e9e9e"
PERCENTILE_COLORS = {"p50_ms": "#9ecae1", "p95_ms": "#3182bd", "p99_ms": "#08519c"}
DRAIN_NAMES = {
    "paho_batched_ack": "bare paho, batched acks",
    "paho_auto_ack": "bare paho, auto ack",
    "mosquitto_sub": "mosquitto_sub > /dev/null",
    "naive_collector": "naive collector (PoC design)",
}


def plot_results(document: dict[str, Any], path: Path) -> Path:
    """Write the run's chart to `path`; panels for scenarios that did not run (or failed) are left out."""
    scenarios = {name: outcome for name, outcome in document.get("scenarios", {}).items() if "error" not in outcome}
    panels = [_plot_targets]
    if "drain" in scenarios:
        panels.append(_plot_drain)
    if "latency" in scenarios:
        panels.append(_plot_latency)
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 4.2 * len(panels)), squeeze=False)
    for draw, axis in zip(panels, axes[:, 0], strict=True):
        draw(axis, scenarios)
    machine = document.get("machine", {})
    figure.suptitle(
        f"rtds bench{' --quick' if document.get('quick') else ''}, {document.get('started_at', '')[:16]} UTC: "
        f"{machine.get('logical_cores', '?')} cores ({machine.get('cpu_model', '?')}), "
        f"Python {machine.get('python', '?')}, Mosquitto {machine.get('mosquitto', '?')}, "
        f"commit {str(machine.get('git_commit') or '?')[:7]}",
        fontsize=11,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def budget_used(target: dict[str, Any]) -> float | None:
    """How much of a target's allowance a figure uses: above 1 is missed. None for a limit of 0 (loss)."""
    value, limit = target.get("value"), target.get("limit")
    if value is None or not limit:
        return None
    if target.get("op") == ">=":
        return float(limit) / float(value) if value else float("inf")
    return float(value) / float(limit)


def _plot_targets(axis: Axes, scenarios: dict[str, Any]) -> None:
    names: list[str] = []
    used: list[float] = []
    colors: list[str] = []
    zero_limits: list[str] = []
    for outcome in scenarios.values():
        for target in outcome.get("targets", []):
            share = budget_used(target)
            if share is None:
                zero_limits.append(f"{target['value']:g}")
                continue
            names.append(f"{target['name']} ({_value_text(target)})")
            used.append(min(share, 3.0))
            colors.append(MET_COLOR if target.get("met") else MISSED_COLOR)
    positions = range(len(names))
    axis.barh(list(positions), used, color=colors)
    axis.axvline(1.0, color="black", linewidth=1, linestyle="--")
    axis.set_yticks(list(positions), names, fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("share of the target's allowance used (1 = at the target; beyond it, missed)")
    title = "Targets: green met, red missed"
    if zero_limits:
        title += f"  ·  loss at each rate (must be 0): {' / '.join(zero_limits)}"
    axis.set_title(title, fontsize=10, loc="left")


def _value_text(target: dict[str, Any]) -> str:
    unit = f" {target['unit']}" if target.get("unit") else ""
    return f"{_number_text(target['value'])}{unit} {target['op']} {_number_text(target['limit'])}"


def _number_text(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _plot_drain(axis: Axes, scenarios: dict[str, Any]) -> None:
    drain = scenarios["drain"]
    figures = drain["figures"]
    bars: list[tuple[str, float | None, float | None, str]] = [
        ("ours, one process", figures.get("msgs_per_s"), figures.get("cpu_us_per_msg"), OURS_COLOR)
    ]
    workers = figures.get("workers_run")
    if workers:
        label = f"ours, --workers {workers['workers']}"
        bars.append((label, workers.get("msgs_per_s"), workers.get("cpu_us_per_msg"), OURS_COLOR))
    for key, result in drain.get("baselines", {}).items():
        bars.append((DRAIN_NAMES.get(key, key), result.get("msgs_per_s"), result.get("cpu_us_per_msg"), BASELINE_COLOR))
    rates = [rate or 0.0 for _, rate, _, _ in bars]
    positions = list(range(len(bars)))
    axis.barh(positions, rates, color=[color for *_, color in bars])
    for position, (_, rate, cpu, _) in zip(positions, bars, strict=True):
        if rate:
            cpu_text = f", {cpu:.0f} µs CPU/msg" if cpu else ""
            axis.text(rate, position, f" {rate:,.0f} msg/s{cpu_text}", va="center", fontsize=8)
    for target in drain.get("targets", []):
        if target.get("unit") == "msg/s":
            axis.axvline(target["limit"], color=MISSED_COLOR, linewidth=1, linestyle="--")
            break
    axis.set_yticks(positions, [name for name, *_ in bars], fontsize=9)
    axis.invert_yaxis()
    axis.set_xlim(0, max([*rates, 1.0]) * 1.6)
    messages = drain.get("parameters", {}).get("messages")
    axis.set_xlabel("messages drained per second (dashed: the 40,000 msg/s target)")
    axis.set_title(
        f"Drain of {messages:,} queued QoS 1 messages, each consumer on a fresh broker" if messages else "Drain",
        fontsize=10,
        loc="left",
    )


def _plot_latency(axis: Axes, scenarios: dict[str, Any]) -> None:
    latency = scenarios["latency"]
    rates = sorted(latency["figures"], key=float)
    width = 0.25
    for offset, (key, color) in enumerate(PERCENTILE_COLORS.items()):
        values = [latency["figures"][rate].get(key) or 0.0 for rate in rates]
        positions = [index + (offset - 1) * width for index in range(len(rates))]
        axis.bar(positions, values, width, color=color, label=key.removesuffix("_ms").upper())
    for index, rate in enumerate(rates):
        for target in latency.get("targets", []):
            if target["name"] == f"{rate} msg/s P95":
                axis.hlines(target["limit"], index - 1.5 * width, index + 1.5 * width, color=MISSED_COLOR)
    axis.set_yscale("log")
    labels = []
    for rate in rates:
        figure = latency["figures"][rate]
        labels.append(
            f"{int(float(rate)):,} msg/s offered\n{figure.get('achieved_msgs_per_s', 0):,.0f} achieved, "
            f"{figure.get('lost', '?')} lost"
        )
    axis.set_xticks(range(len(rates)), labels, fontsize=9)
    axis.set_ylabel("publish → durable write, ms")
    axis.legend(loc="upper left", fontsize=8)
    axis.set_title("Live latency by offered rate (red lines: the P95 targets)", fontsize=10, loc="left")
