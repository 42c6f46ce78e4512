"""Latency spikes: windows whose P95 exceeds a threshold, merged into periods, each with a likely cause.

A cause is judged from what the stored timings show: the share of points replayed from device
offline queues, silences in the collector's receive times (an outage), and whether the receive
delay (device → collector) or the store delay (collector → written) grew against the rest of
the period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitoring.cli_support import clean_number, format_duration, format_ms, format_time
from monitoring.latency import (
    DelayStats,
    Gap,
    LatencySummary,
    counts_over_covered_span,
    covered_span,
    describe,
    rate_over_covered_span,
    summarize,
    summarize_windows,
)
from monitoring.samples import SampleSet

REPLAY_DOMINATES = 0.5  # share of replayed points above which a spike is a replay
# With a silence in receive times, this share of replayed points means the devices were cut off too
# (a broker or network outage), not only the collector (whose outage leaves points live).
REPLAY_WITH_OUTAGE = 0.2
GROWTH_FACTOR = 2.0  # a delay "grew" when its P95 is at least this many times the baseline
GROWTH_MIN_MS = 50.0  # ... and at least this much higher
MAX_DEVICES_NAMED = 5


@dataclass(frozen=True)
class DeviceShare:
    device_id: str
    points: int
    over_threshold: int
    replayed: int
    p95_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "p95_ms": clean_number(self.p95_ms)}


@dataclass(frozen=True)
class Spike:
    start: float
    end: float
    summary: LatencySummary
    devices: list[DeviceShare]
    devices_present: int
    baseline_receive: DelayStats
    baseline_store: DelayStats
    stored_per_s: float | None
    baseline_per_s: float
    outage: Gap | None
    cause: str
    notes: list[str] = field(default_factory=list)

    @property
    def replayed_share(self) -> float:
        return self.summary.replayed_count / self.summary.count if self.summary.count else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "duration_s": clean_number(self.end - self.start),
            "count": self.summary.count,
            "replayed_count": self.summary.replayed_count,
            "replayed_share": clean_number(self.replayed_share),
            "p95_ms": self.summary.end_to_end.as_dict()["p95_ms"],
            "max_ms": self.summary.end_to_end.as_dict()["max_ms"],
            "latency": self.summary.as_dict(),
            "devices": [d.as_dict() for d in self.devices],
            "devices_involved": len(self.devices),
            "devices_present": self.devices_present,
            "receive_delay_p95_ms": self.summary.receive.as_dict()["p95_ms"],
            "baseline_receive_delay_p95_ms": self.baseline_receive.as_dict()["p95_ms"],
            "store_delay_p95_ms": self.summary.store.as_dict()["p95_ms"],
            "baseline_store_delay_p95_ms": self.baseline_store.as_dict()["p95_ms"],
            "published_per_s": clean_number(self.summary.messages_per_s),
            "stored_per_s": clean_number(self.stored_per_s),
            "baseline_per_s": clean_number(self.baseline_per_s),
            "outage": self.outage.as_dict() if self.outage else None,
            "cause": self.cause,
            "notes": self.notes,
        }


def find_spikes(
    samples: SampleSet,
    since: float,
    until: float,
    *,
    threshold_ms: float,
    window_s: float,
    gaps: list[Gap],
    target_p95_ms: float,
) -> list[Spike]:
    """Periods of consecutive windows (by device time) whose P95 of all points exceeds `threshold_ms`."""
    windows = summarize_windows(samples, since, until, window_s, target_p95_ms)
    hot = [w.end_to_end.p95_ms is not None and w.end_to_end.p95_ms > threshold_ms for w in windows]
    periods: list[tuple[float, float]] = []
    for window, is_hot in zip(windows, hot, strict=True):
        if not is_hot:
            continue
        if periods and periods[-1][1] >= window.start:
            periods[-1] = (periods[-1][0], window.end)
        else:
            periods.append((window.start, window.end))

    calm = np.ones(len(samples), dtype=bool)
    for start, end in periods:
        first, last = np.searchsorted(samples.time, [start, end])
        calm[first:last] = False
    baseline = samples.select(calm)
    # The rate between spikes, over the time the data covers, so an idle start does not dilute it:
    # the even windows between these edges are the calm ones.
    edges = np.array([-np.inf, *(bound for period in periods for bound in period), np.inf])
    counts, seconds = counts_over_covered_span(samples.time, edges)
    calm_seconds = float(seconds[::2].sum())
    baseline_per_s = float(counts[::2].sum()) / calm_seconds if calm_seconds > 0 else 0.0
    present = len(samples.devices_present())
    return [
        _explain(samples, start, end, baseline, baseline_per_s, present, gaps, threshold_ms, target_p95_ms)
        for start, end in periods
    ]


def _explain(
    samples: SampleSet,
    start: float,
    end: float,
    baseline: SampleSet,
    baseline_per_s: float,
    devices_present: int,
    gaps: list[Gap],
    threshold_ms: float,
    target_p95_ms: float,
) -> Spike:
    inside = samples.between(start, end)
    summary = summarize(inside, start, end, target_p95_ms, covered=covered_span(samples.time))
    base_receive, base_store = describe(baseline.receive_delay_s), describe(baseline.store_delay_s)
    stored_per_s = rate_over_covered_span(samples.write, start, end)
    devices = _devices_over(inside, threshold_ms)
    outage = _overlapping_gap(gaps, start, end)
    spike = Spike(
        start,
        end,
        summary,
        devices,
        devices_present,
        base_receive,
        base_store,
        stored_per_s,
        baseline_per_s,
        outage,
        "",
    )
    cause, notes = _cause(spike, inside, threshold_ms)
    return Spike(**{**spike.__dict__, "cause": cause, "notes": notes})


def _devices_over(inside: SampleSet, threshold_ms: float) -> list[DeviceShare]:
    latency_ms = inside.end_to_end_s * 1000
    over = latency_ms > threshold_ms
    shares = []
    for code in np.unique(inside.device[over]):
        mine = inside.device == code
        finite = latency_ms[mine & np.isfinite(latency_ms)]
        shares.append(
            DeviceShare(
                inside.device_ids[code],
                int(mine.sum()),
                int((mine & over).sum()),
                int((mine & inside.replayed).sum()),
                float(np.percentile(finite, 95)) if finite.size else None,
            )
        )
    return sorted(shares, key=lambda share: (-share.over_threshold, share.device_id))


def _overlapping_gap(gaps: list[Gap], start: float, end: float) -> Gap | None:
    """The receive silence that overlaps the spike most (points produced during an outage are the late ones)."""
    best, best_overlap = None, 0.0
    for gap in gaps:
        overlap = min(gap.end, end) - max(gap.start, start)
        if overlap > best_overlap:
            best, best_overlap = gap, overlap
    return best


def _grew(spike: DelayStats, baseline: DelayStats) -> float:
    """How much the P95 grew in ms, or 0 when it did not grow noticeably."""
    if spike.p95_ms is None:
        return 0.0
    base = baseline.p95_ms or 0.0
    growth = spike.p95_ms - base
    return growth if growth >= GROWTH_MIN_MS and spike.p95_ms >= GROWTH_FACTOR * max(base, 0.001) else 0.0


def _cause(spike: Spike, inside: SampleSet, threshold_ms: float) -> tuple[str, list[str]]:
    notes: list[str] = []
    summary = spike.summary
    names = ", ".join(d.device_id for d in spike.devices[:MAX_DEVICES_NAMED])
    if len(spike.devices) > MAX_DEVICES_NAMED:
        names += f" and {len(spike.devices) - MAX_DEVICES_NAMED} more"
    receive_growth = _grew(summary.receive, spike.baseline_receive)
    store_growth = _grew(summary.store, spike.baseline_store)
    negative = np.count_nonzero(inside.receive_delay_s < 0)
    if negative:
        notes.append(f"{negative} point(s) were received before their publish time: a device clock runs ahead")
    if spike.outage:
        notes.append(
            f"nothing was received from {format_time(spike.outage.start)} to {format_time(spike.outage.end)} "
            f"({format_duration(spike.outage.duration_s)})"
        )
    receive_text = _compared("receive delay", summary.receive, spike.baseline_receive)
    store_text = _compared("store delay", summary.store, spike.baseline_store)

    if spike.outage and spike.replayed_share >= REPLAY_WITH_OUTAGE:
        gap = spike.outage
        live = summary.live
        if live.p95_ms is not None and live.p95_ms > threshold_ms:
            notes.append(
                f"live points waited too (live P95 {format_ms(live.p95_ms)}): the collector reconnected after the devices"
            )
        return (
            f"replayed backlog after a broker/network outage from {format_time(gap.start)} to {format_time(gap.end)} "
            f"({format_duration(gap.duration_s)}): devices queued their messages offline and sent them "
            f"when the connection came back ({spike.replayed_share:.0%} of the points were replayed)",
            notes,
        )
    if spike.replayed_share >= REPLAY_DOMINATES:
        return (
            f"replayed backlog from the offline queues of {names}: those devices lost their connection "
            f"while the collector kept receiving from others ({spike.replayed_share:.0%} replayed)",
            notes,
        )
    if spike.outage and receive_growth:
        gap = spike.outage
        return (
            f"the collector received nothing from {format_time(gap.start)} to {format_time(gap.end)} "
            f"({format_duration(gap.duration_s)}) while devices kept publishing live: the collector was down or "
            f"disconnected and the broker held the messages for it ({receive_text})",
            notes,
        )
    if store_growth > receive_growth:
        return f"store slow: {store_text} (collector batching/flush or slow store writes)", notes
    if receive_growth:
        if spike.devices_present > 1 and len(spike.devices) <= spike.devices_present // 2:
            return f"slow delivery from {names} only: {receive_text} (device network or device clock)", notes
        return f"slow delivery through the network or broker: {receive_text}", notes
    return f"unclear: neither receive nor store delay stands out ({receive_text}; {store_text})", notes


def _compared(name: str, spike: DelayStats, baseline: DelayStats) -> str:
    if baseline.count == 0:
        return f"{name} P95 {format_ms(spike.p95_ms)} (no calm window to compare with)"
    return f"{name} P95 {format_ms(spike.p95_ms)} vs {format_ms(baseline.p95_ms)} normally"
