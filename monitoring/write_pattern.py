"""The store's write pattern, read back from the stored points.

The collector stamps one `write_time` on every point of a batch, so the points grouped by
write_time are the batches: their sizes, the intervals between them, the rate over time and the
silences. Together with the store delay (write − receive) that names the likely bottleneck.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitoring.cli_support import clean_number, format_duration, format_ms, format_time
from monitoring.latency import (
    DelayStats,
    Gap,
    covered_span,
    data_windows,
    describe,
    find_gaps,
    rate_over_covered_span,
    rates_over_covered_span,
)
from monitoring.samples import SampleSet


@dataclass
class WritePattern:
    points: int
    points_with_write_time: int
    batches: int
    batch_sizes: dict[str, float | None]
    full_batch_share: float
    batch_size_setting: int
    flush_interval_ms: int
    intervals: DelayStats  # between consecutive batches
    store_delay: DelayStats
    receive_delay: DelayStats  # live points only
    window_s: float
    edges: np.ndarray
    points_per_s: np.ndarray  # per window, over the part of it the writes cover
    mean_points_per_s: float | None  # over the time the writes cover
    write_gaps: list[Gap]
    receive_gaps: list[Gap]
    bottleneck: str
    findings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "points_with_write_time": self.points_with_write_time,
            "batches": self.batches,
            "batch_sizes": self.batch_sizes,
            "full_batch_share": clean_number(self.full_batch_share),
            "batch_size_setting": self.batch_size_setting,
            "flush_interval_ms": self.flush_interval_ms,
            "batch_interval": self.intervals.as_dict(),
            "store_delay": self.store_delay.as_dict(),
            "receive_delay": self.receive_delay.as_dict(),
            "points_per_s": {
                "window_s": clean_number(self.window_s),
                "mean": clean_number(self.mean_points_per_s),
                "max": clean_number(float(np.nanmax(self.points_per_s)))
                if np.isfinite(self.points_per_s).any()
                else None,
                "series": [
                    {"start": clean_number(float(start)), "points_per_s": clean_number(float(rate))}
                    for start, rate in zip(self.edges[:-1], self.points_per_s, strict=True)
                ],
            },
            "write_gaps": [gap.as_dict() for gap in self.write_gaps],
            "bottleneck": self.bottleneck,
            "findings": self.findings,
        }


def analyse_writes(
    samples: SampleSet,
    since: float,
    until: float,
    *,
    batch_size: int,
    flush_interval_ms: int,
    window_s: float | None,
    gap_s: float,
) -> WritePattern:
    """`window_s` defaults to about 120 windows over the time the writes cover."""
    written = samples.write[np.isfinite(samples.write)]
    batch_times, sizes = np.unique(written, return_counts=True)
    width_s, edges = data_windows(covered_span(written), window_s, since=since, until=until)
    intervals = describe(np.diff(batch_times))
    pattern = WritePattern(
        points=len(samples),
        points_with_write_time=int(written.size),
        batches=int(batch_times.size),
        batch_sizes=_size_stats(sizes),
        full_batch_share=float(np.mean(sizes >= batch_size)) if sizes.size else 0.0,
        batch_size_setting=batch_size,
        flush_interval_ms=flush_interval_ms,
        intervals=intervals,
        store_delay=describe(samples.store_delay_s),
        receive_delay=describe(samples.receive_delay_s[~samples.replayed]),  # replays measure outages
        window_s=width_s,
        edges=edges,
        points_per_s=rates_over_covered_span(written, edges),
        mean_points_per_s=rate_over_covered_span(written),
        write_gaps=find_gaps(batch_times, gap_s),
        receive_gaps=find_gaps(samples.receive, gap_s),
        bottleneck="",
    )
    pattern.bottleneck, pattern.findings = _diagnose(pattern)
    return pattern


def _size_stats(sizes: np.ndarray) -> dict[str, float | None]:
    if sizes.size == 0:
        return {"min": None, "p50": None, "mean": None, "p95": None, "max": None}
    p50, p95 = np.percentile(sizes, [50, 95])
    return {
        "min": int(sizes.min()),
        "p50": clean_number(float(p50)),
        "mean": clean_number(float(sizes.mean())),
        "p95": clean_number(float(p95)),
        "max": int(sizes.max()),
    }


def _diagnose(pattern: WritePattern) -> tuple[str, list[str]]:
    findings: list[str] = []
    if pattern.points_with_write_time == 0:
        return "unknown: no stored point carries write_time (written by a collector that does not stamp it)", findings
    flush_ms = pattern.flush_interval_ms
    store, receive = pattern.store_delay, pattern.receive_delay
    for gap in pattern.write_gaps:
        upstream = any(r.start <= gap.start + 1 and r.end >= gap.end - 1 for r in pattern.receive_gaps)
        why = (
            "the collector received nothing either (outage upstream)"
            if upstream
            else "the collector had data but did not write (store down, or retries)"
        )
        findings.append(
            f"writes stopped {format_time(gap.start)} → {format_time(gap.end)} ({format_duration(gap.duration_s)}): {why}"
        )
    store_p50 = store.p50_ms or 0.0
    store_p95 = store.p95_ms or 0.0
    receive_p95 = receive.p95_ms or 0.0
    if pattern.full_batch_share >= 0.5:
        findings.append(f"{pattern.full_batch_share:.0%} of batches are full ({pattern.batch_size_setting} points)")
        bottleneck = (
            f"the collector's batch size: {pattern.full_batch_share:.0%} of batches reach COLLECTOR_BATCH_SIZE="
            f"{pattern.batch_size_setting}, so the collector writes as fast as batches fill; raise it if latency grows"
        )
    elif store_p95 > 2 * flush_ms + 100:
        bottleneck = (
            f"the store: store delay P95 {format_ms(store_p95)} is far above COLLECTOR_FLUSH_INTERVAL_MS={flush_ms}; "
            "writes are slow or retried (check the store's health and the collector's retry warnings)"
        )
    elif receive_p95 > store_p95:
        bottleneck = (
            f"upstream of the collector (devices, network, broker): receive delay P95 {format_ms(receive_p95)} "
            f"exceeds store delay P95 {format_ms(store_p95)}"
        )
    elif store_p50 >= 0.3 * flush_ms:
        bottleneck = (
            f"the flush timer: batches are mostly partial (median {pattern.batch_sizes['p50']} points) and wait for "
            f"COLLECTOR_FLUSH_INTERVAL_MS={flush_ms}; store delay P50 {format_ms(store_p50)}. Lower it for lower "
            "latency, at the cost of more, smaller writes"
        )
    else:
        bottleneck = f"none visible: store delay P95 {format_ms(store_p95)}, receive delay P95 {format_ms(receive_p95)}"
    if pattern.intervals.p95_ms is not None and pattern.intervals.p95_ms > 2 * flush_ms:
        findings.append(
            f"intervals between batches reach {format_ms(pattern.intervals.p95_ms)} (P95), over twice the flush interval"
        )
    return bottleneck, findings
