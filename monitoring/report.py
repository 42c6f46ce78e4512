"""The latency report: numbers, charts and a Markdown page, from the store or from the collected JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from monitoring import charts
from monitoring.cli_support import format_datetime, format_duration, format_ms, format_rate, format_time
from monitoring.latency import (
    SEED_TARGET_P50_MS,
    SEED_TARGET_P99_MS,
    DelayStats,
    Gap,
    LatencySummary,
    Span,
    covered_span,
    data_windows,
    find_gaps,
    rates_over_covered_span,
    summarize,
    summarize_devices,
    summarize_windows,
)
from monitoring.samples import SampleSet
from monitoring.spikes import Spike, find_spikes

CHART_FILES = {
    "percentiles": "latency_percentiles.png",
    "distribution": "latency_distribution.png",
    "devices": "latency_by_device.png",
    "throughput": "throughput.png",
    "live_vs_replayed": "live_vs_replayed.png",
}
MARKDOWN_FILE = "latency_report.md"


@dataclass
class StoreReport:
    since: float
    until: float
    covered: Span  # first and last device time of the points: what the charts and rates are over
    backend: str
    window_s: float
    overall: LatencySummary
    windows: list[LatencySummary]
    devices: dict[str, LatencySummary]
    gaps: list[Gap]
    spikes: list[Spike]
    edges: np.ndarray
    produced_per_s: np.ndarray
    stored_per_s: np.ndarray
    live_per_s: np.ndarray
    replayed_per_s: np.ndarray
    drawn: SampleSet
    sample_limit: int
    all_latency_ms: tuple[np.ndarray, np.ndarray]  # (live, replayed) end-to-end latency of every point

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": "store",
            "backend": self.backend,
            "start": self.since,
            "end": self.until,
            "covered": {
                "start": self.covered[0],
                "end": self.covered[1],
                "duration_s": round(self.covered[1] - self.covered[0], 3),
            },
            "window_s": self.window_s,
            "overall": self.overall.as_dict(),
            "gaps": [gap.as_dict() for gap in self.gaps],
            "spikes": [spike.as_dict() for spike in self.spikes],
            "devices": {name: summary.as_dict() for name, summary in self.devices.items()},
            "windows": [w.as_dict() for w in self.windows if w.count],
            "points_drawn": len(self.drawn),
            "sample_limit": self.sample_limit,
        }


def build_store_report(
    samples: SampleSet,
    since: float,
    until: float,
    *,
    backend: str,
    target_p95_ms: float,
    window_s: float | None,
    gap_s: float,
    sample_limit: int,
) -> StoreReport:
    """The report of `samples` (not empty) over [since, until). Windows and rates are over the time
    the points cover, so six minutes of data in a 16 h period are reported as six minutes; `window_s`
    defaults to about 120 windows over that time."""
    covered = covered_span(samples.time)
    if covered is None:
        raise ValueError("a report needs at least one point")
    width_s, edges = data_windows(covered, window_s, since=since, until=until)
    start, end = covered
    gaps = find_gaps(samples.receive, gap_s)
    latency_ms = samples.end_to_end_s * 1000
    return StoreReport(
        since=since,
        until=until,
        covered=covered,
        backend=backend,
        window_s=width_s,
        overall=summarize(samples, since, until, target_p95_ms),
        windows=summarize_windows(samples, start, end, width_s, target_p95_ms),
        devices=summarize_devices(samples, target_p95_ms, since, until),
        gaps=gaps,
        spikes=find_spikes(
            samples, start, end, threshold_ms=target_p95_ms, window_s=width_s, gaps=gaps, target_p95_ms=target_p95_ms
        ),
        edges=edges,
        produced_per_s=rates_over_covered_span(samples.time, edges),
        stored_per_s=rates_over_covered_span(samples.write, edges),
        live_per_s=rates_over_covered_span(samples.time[~samples.replayed], edges, covered=covered),
        replayed_per_s=rates_over_covered_span(samples.time[samples.replayed], edges, covered=covered),
        drawn=_drawn(samples, sample_limit),
        sample_limit=sample_limit,
        all_latency_ms=(latency_ms[~samples.replayed], latency_ms[samples.replayed]),
    )


def _drawn(samples: SampleSet, limit: int) -> SampleSet:
    """Up to `limit` points for scatter and box plots; replayed points keep up to half of it."""
    replayed_index = np.nonzero(samples.replayed)[0]
    live_index = np.nonzero(~samples.replayed)[0]
    replayed_keep = min(replayed_index.size, limit // 2)
    live_keep = min(live_index.size, limit - replayed_keep)
    chosen = np.concatenate([_spread(live_index, live_keep), _spread(replayed_index, replayed_keep)])
    return samples.select(np.sort(chosen))


def _spread(index: np.ndarray, keep: int) -> np.ndarray:
    if keep >= index.size:
        return index
    return index[np.linspace(0, index.size - 1, num=keep).astype(np.int64)]


def store_figures(report: StoreReport) -> dict[str, Figure]:
    """The report's charts as laid-out figures, by CHART_FILES name (save them with charts.save)."""
    target = report.overall.target_p95_ms
    first, last = report.covered
    # Each window's dot sits in the middle of the part of it the data covers, inside the time axis.
    mids = np.array([(max(w.start, first) + min(w.end, last)) / 2 for w in report.windows])
    live = [w.live for w in report.windows]
    drawn = report.drawn
    latency_ms = drawn.end_to_end_s * 1000
    live_by_device = {
        name: latency_ms[(drawn.device == code) & ~drawn.replayed]
        for code, name in sorted(enumerate(drawn.device_ids), key=lambda item: item[1])
    }
    replayed_p95 = {name: s.replayed.p95_ms for name, s in report.devices.items() if s.replayed.p95_ms is not None}
    return {
        "percentiles": charts.plot_percentiles(
            mids,
            _column(live, "p50_ms"),
            _column(live, "p95_ms"),
            _column(live, "p99_ms"),
            target_ms=target,
            span=report.covered,
            gaps=report.gaps,
            title=f"End-to-end latency of live points per {charts.width_label(report.window_s)} window",
        ),
        "distribution": charts.plot_distribution(*report.all_latency_ms, target_ms=target),
        "devices": charts.plot_device_boxes(live_by_device, target_ms=target, replayed_p95_ms=replayed_p95),
        "throughput": charts.plot_throughput(
            report.edges,
            report.produced_per_s,
            report.stored_per_s,
            span=report.covered,
            window_s=report.window_s,
            gaps=report.gaps,
        ),
        "live_vs_replayed": charts.plot_live_vs_replayed(
            target_ms=target,
            edges=report.edges,
            live_per_s=report.live_per_s,
            replayed_per_s=report.replayed_per_s,
            points=(drawn.time, latency_ms, drawn.replayed),
            span=report.covered,
            gaps=report.gaps,
        ),
    }


def draw_store_charts(report: StoreReport, folder: Path) -> dict[str, Path]:
    return {name: charts.save(figure, folder / CHART_FILES[name]) for name, figure in store_figures(report).items()}


def _column(stats: list[DelayStats], name: str) -> np.ndarray:
    return np.array([np.nan if getattr(s, name) is None else getattr(s, name) for s in stats], dtype=np.float64)


def store_markdown(report: StoreReport, chart_paths: dict[str, Path], *, store_label: str) -> str:
    overall = report.overall
    first, last = report.covered
    lines = [
        "# Latency report",
        "",
        f"- Period: {format_datetime(report.since)} → {format_datetime(report.until)} "
        f"({format_duration(report.until - report.since)}), by device time; the points cover "
        f"{format_datetime(first)} → {format_datetime(last)} ({format_duration(last - first)})",
        f"- Source: {store_label}; generated {format_datetime(time.time())}",
        f"- Points: {overall.count:,} ({overall.count - overall.replayed_count:,} live, "
        f"{overall.replayed_count:,} replayed from device offline queues), "
        f"{format_rate(overall.messages_per_s)} msg/s over the time they cover, from {len(report.devices)} device(s)",
        "- Latency = write time − device publish time. Receive delay = collector receive − publish; "
        "store delay = write − collector receive.",
        "",
        "## Verdict",
        "",
        *_verdict_lines(overall),
        "",
        "## Latency",
        "",
        "| | points | min | avg | P50 | P95 | P99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        _stats_row("end-to-end, all points", overall.end_to_end),
        _stats_row("end-to-end, live", overall.live),
        _stats_row("end-to-end, replayed", overall.replayed),
        _stats_row("receive delay (publish → collector)", overall.receive),
        _stats_row("store delay (collector → written)", overall.store),
        "",
        "## Outages and spikes",
        "",
        *_outage_lines(report),
        "",
        "## Charts",
        "",
    ]
    captions = {
        "percentiles": "Latency percentiles of live points over time, with the P95 target (red dashed line)",
        "distribution": "Distribution of end-to-end latency: histogram and cumulative share",
        "devices": "Latency per device",
        "throughput": "Messages per second, published (device time) and stored (write time)",
        "live_vs_replayed": "Live vs replayed points: latency and rate",
    }
    for name, path in chart_paths.items():
        lines += [f"### {captions[name]}", "", f"![{captions[name]}]({path.name})", ""]
    if len(report.drawn) < overall.count:
        lines += [
            f"_The scatter and box plots draw {len(report.drawn):,} of {overall.count:,} points (--sample-limit); "
            "every statistic uses all points._",
            "",
        ]
    lines += [
        "## Devices",
        "",
        "| device | points | replayed | live P50 | live P95 | live P99 | live max | replayed P95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, summary in report.devices.items():
        live = summary.live
        lines.append(
            f"| {name} | {summary.count:,} | {summary.replayed_count:,} | {format_ms(live.p50_ms)} | "
            f"{format_ms(live.p95_ms)} | {format_ms(live.p99_ms)} | {format_ms(live.max_ms)} | "
            f"{format_ms(summary.replayed.p95_ms)} |"
        )
    return "\n".join(lines) + "\n"


def _verdict_lines(overall: LatencySummary) -> list[str]:
    live = overall.live
    if live.count == 0:
        return ["- **No live points** in this period: nothing to judge."]
    checks = (
        ("P50", live.p50_ms, SEED_TARGET_P50_MS),
        ("P95", live.p95_ms, overall.target_p95_ms),
        ("P99", live.p99_ms, SEED_TARGET_P99_MS),
    )
    lines = []
    for name, value, target in checks:
        met = value is not None and value < target
        lines.append(
            f"- Live {name} {format_ms(value)}: {'meets' if met else '**misses**'} the target of < {format_ms(target)}"
        )
    if overall.replayed_count:
        lines.append(
            f"- Replayed points (P95 {format_ms(overall.replayed.p95_ms)}) are reported apart: they waited in a "
            "device's offline queue, so their latency measures the outage, not the pipeline."
        )
    return lines


def _outage_lines(report: StoreReport) -> list[str]:
    lines = []
    for gap in report.gaps:
        lines.append(
            f"- **Outage**: nothing received from {format_time(gap.start)} to {format_time(gap.end)} "
            f"({format_duration(gap.duration_s)})."
        )
    if not report.gaps:
        lines.append("- No silence in the collector's receive times.")
    for spike in report.spikes:
        lines.append(
            f"- **Spike** {format_time(spike.start)}–{format_time(spike.end)}: P95 "
            f"{format_ms(spike.summary.end_to_end.p95_ms)}, {spike.summary.count:,} points, "
            f"{spike.replayed_share:.0%} replayed. Cause: {spike.cause}."
        )
    if not report.spikes:
        lines.append(f"- No {format_duration(report.window_s)} window had a P95 over the target.")
    return lines


def _stats_row(label: str, stats: DelayStats) -> str:
    values = (stats.min_ms, stats.avg_ms, stats.p50_ms, stats.p95_ms, stats.p99_ms, stats.max_ms)
    return f"| {label} | {stats.count:,} | " + " | ".join(format_ms(v) for v in values) + " |"
