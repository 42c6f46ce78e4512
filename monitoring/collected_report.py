"""The latency report built from the collected JSON file (samples taken by collect_latency_data).

Collected samples hold per-window statistics, not points, so this report draws the charts that
need only those (percentiles, throughput, live vs replayed over time); the distribution and
per-device charts need the store (`--source store`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from monitoring import charts
from monitoring.cli_support import format_datetime, format_duration, format_ms, format_rate, format_time
from monitoring.report import CHART_FILES


def select_records(records: list[dict[str, Any]], since: float, until: float) -> list[dict[str, Any]]:
    return [r for r in records if since <= r["time"] <= until]


def _values(records: list[dict[str, Any]], *path: str) -> np.ndarray:
    values = []
    for record in records:
        node: Any = record
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        values.append(np.nan if node is None else float(node))
    return np.array(values, dtype=np.float64)


def collected_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    judged = [r for r in records if r.get("compliant") is not None]
    live_p95 = _values(records, "live", "p95_ms")
    finite = live_p95[np.isfinite(live_p95)]
    return {
        "source": "collected",
        "samples": len(records),
        "points": int(sum(r.get("count", 0) for r in records)),
        "replayed_points": int(sum(r.get("replayed_count", 0) for r in records)),
        "samples_compliant": sum(1 for r in judged if r["compliant"]),
        "samples_judged": len(judged),
        "median_live_p95_ms": float(np.median(finite)) if finite.size else None,
        "worst_live_p95_ms": float(np.max(finite)) if finite.size else None,
        "worst_sample_time": records[int(np.nanargmax(live_p95))]["time"] if finite.size else None,
    }


def draw_collected_charts(records: list[dict[str, Any]], folder: Path, *, target_ms: float) -> dict[str, Path]:
    starts, ends = _values(records, "start"), _values(records, "end")
    times = (starts + ends) / 2  # drawn mid-window, like the store report
    edges = np.append(starts, ends[-1])
    # Each sample's rate is over the time its points cover; live and replayed split it by their shares.
    rate, count = _values(records, "messages_per_s"), np.maximum(_values(records, "count"), 1)
    live_rate = rate * _values(records, "live_count") / count
    replayed_rate = rate * _values(records, "replayed_count") / count
    span = (float(starts[0]), float(ends[-1]))  # the samples' windows, end to end
    figures = {
        "percentiles": charts.plot_percentiles(
            times,
            _values(records, "live", "p50_ms"),
            _values(records, "live", "p95_ms"),
            _values(records, "live", "p99_ms"),
            target_ms=target_ms,
            span=span,
            title="End-to-end latency of live points per collected sample",
        ),
        "throughput": charts.plot_throughput(edges, _values(records, "messages_per_s"), None, span=span),
        "live_vs_replayed": charts.plot_live_vs_replayed(
            target_ms=target_ms,
            edges=edges,
            live_per_s=np.nan_to_num(live_rate),
            replayed_per_s=np.nan_to_num(replayed_rate),
            window_p95=(times, _values(records, "live", "p95_ms"), _values(records, "replayed", "p95_ms")),
            span=span,
        ),
    }
    return {name: charts.save(figure, folder / CHART_FILES[name]) for name, figure in figures.items()}


def collected_markdown(
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    chart_paths: dict[str, Path],
    *,
    source_label: str,
    target_ms: float,
) -> str:
    first, last = records[0], records[-1]
    lines = [
        "# Latency report (collected samples)",
        "",
        f"- Period: {format_datetime(first['start'])} → {format_datetime(last['end'])} "
        f"({format_duration(last['end'] - first['start'])})",
        f"- Source: {source_label}; generated {format_datetime(time.time())}",
        f"- {summary['samples']} samples covering {summary['points']:,} points "
        f"({summary['replayed_points']:,} replayed from device offline queues)",
        "",
        "## Verdict",
        "",
        f"- {summary['samples_compliant']} of {summary['samples_judged']} samples had a live P95 below the "
        f"{format_ms(target_ms)} target.",
        f"- Live P95: median {format_ms(summary['median_live_p95_ms'])}, worst {format_ms(summary['worst_live_p95_ms'])} "
        f"(sample at {format_time(summary['worst_sample_time'])}).",
        "- Distribution and per-device charts and outage detection need the points: run with `--source store`.",
        "",
        "## Samples over the target",
        "",
        "| time | points | msg/s | live P50 | live P95 | live P99 | replayed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    over = [r for r in records if r.get("compliant") is False]
    for record in over[:50]:
        live = record.get("live", {})
        lines.append(
            f"| {format_datetime(record['time'])} | {record['count']:,} | {format_rate(record['messages_per_s'])} | "
            f"{format_ms(live.get('p50_ms'))} | {format_ms(live.get('p95_ms'))} | {format_ms(live.get('p99_ms'))} | "
            f"{record.get('replayed_count', 0):,} |"
        )
    if not over:
        lines.append("| none | | | | | | |")
    lines += ["", "## Charts", ""]
    for name, path in chart_paths.items():
        lines += [f"### {name.replace('_', ' ').capitalize()}", "", f"![{name}]({path.name})", ""]
    return "\n".join(lines) + "\n"
