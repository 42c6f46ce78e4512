"""Latency statistics: the one place that turns stored point timings into numbers.

- end-to-end latency = write_time − publish_timestamp (the seed's definition),
- receive delay = collector_receive_time − publish_timestamp (device, network, broker),
- store delay = write_time − collector_receive_time (collector batching and the store write).

Percentiles interpolate linearly between the two nearest ranks (numpy's default, the same as a
spreadsheet's PERCENTILE.INC). Points replayed from a device's offline queue are counted apart
from live ones, and target compliance is judged on live points, so a replay after an outage
does not show up as a live latency problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitoring.samples import SampleSet

PERCENTILES = (50.0, 95.0, 99.0)
# The seed's targets besides P95, whose target is a setting (LATENCY_TARGET_P95_MS).
SEED_TARGET_P50_MS = 500.0
SEED_TARGET_P99_MS = 3000.0

Span = tuple[float, float]  # (first, last) Unix seconds


@dataclass(frozen=True, slots=True)
class DelayStats:
    """Distribution of one delay, in milliseconds. Values are None when `count` is 0."""

    count: int
    min_ms: float | None = None
    avg_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, **{name: _rounded(getattr(self, name)) for name in self.__slots__[1:]}}


def describe(delays_s: np.ndarray) -> DelayStats:
    """Stats of delays in seconds; NaN (a timing the store does not have) is left out."""
    values = delays_s[np.isfinite(delays_s)]
    if values.size == 0:
        return DelayStats(0)
    ms = values * 1000.0
    p50, p95, p99 = np.percentile(ms, PERCENTILES)
    return DelayStats(
        int(ms.size), float(ms.min()), float(ms.mean()), float(p50), float(p95), float(p99), float(ms.max())
    )


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of the points whose device time lies in [start, end)."""

    start: float
    end: float
    count: int
    replayed_count: int
    end_to_end: DelayStats
    live: DelayStats
    replayed: DelayStats
    receive: DelayStats
    store: DelayStats
    target_p95_ms: float
    messages_per_s: float | None  # over the time the points cover (see rate_over_covered_span)

    @property
    def compliant(self) -> bool | None:
        """Live P95 below the target; None without live points."""
        return None if self.live.p95_ms is None else self.live.p95_ms < self.target_p95_ms

    @property
    def compliant_all(self) -> bool | None:
        """P95 of all points (live and replayed) below the target."""
        return None if self.end_to_end.p95_ms is None else self.end_to_end.p95_ms < self.target_p95_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "window_s": _rounded(self.end - self.start),
            "count": self.count,
            "live_count": self.count - self.replayed_count,
            "replayed_count": self.replayed_count,
            "messages_per_s": _rounded(self.messages_per_s),
            "target_p95_ms": self.target_p95_ms,
            "compliant": self.compliant,
            "compliant_all": self.compliant_all,
            "end_to_end": self.end_to_end.as_dict(),
            "live": self.live.as_dict(),
            "replayed": self.replayed.as_dict(),
            "receive_delay": self.receive.as_dict(),
            "store_delay": self.store.as_dict(),
        }


def summarize(
    samples: SampleSet, start: float, end: float, target_p95_ms: float, *, covered: Span | None = None
) -> LatencySummary:
    """Statistics of `samples` (already limited to [start, end)). The rate is over the part of
    [start, end) that `covered` spans (default: from the first to the last of these points)."""
    end_to_end = samples.end_to_end_s
    replayed = samples.replayed
    return LatencySummary(
        start=start,
        end=end,
        count=len(samples),
        replayed_count=int(replayed.sum()),
        end_to_end=describe(end_to_end),
        live=describe(end_to_end[~replayed]),
        replayed=describe(end_to_end[replayed]),
        receive=describe(samples.receive_delay_s),
        store=describe(samples.store_delay_s),
        target_p95_ms=target_p95_ms,
        messages_per_s=rate_over_covered_span(samples.time, start, end, covered=covered),
    )


def window_edges(start: float, end: float, width_s: float) -> np.ndarray:
    """Window boundaries from `start`, each `width_s` wide; the last window may be shorter."""
    count = max(1, int(np.ceil((end - start) / width_s - 1e-9)))
    edges = start + width_s * np.arange(count + 1, dtype=np.float64)
    edges[-1] = end
    return edges


def summarize_windows(
    samples: SampleSet, start: float, end: float, width_s: float, target_p95_ms: float
) -> list[LatencySummary]:
    """One summary per window of device time, empty windows included (count 0). The last window also
    holds the points at `end`, so windows over a data span [first, last] hold every point. Each window's
    rate is over the part of it that all the samples cover, so a window the data half fills is not halved."""
    edges = window_edges(start, end, width_s)
    bounds = np.searchsorted(samples.time, edges, side="left")
    bounds[-1] = np.searchsorted(samples.time, edges[-1], side="right")
    covered = covered_span(samples.time)
    return [
        summarize(
            samples.select(slice(int(bounds[i]), int(bounds[i + 1]))),
            float(edges[i]),
            float(edges[i + 1]),
            target_p95_ms,
            covered=covered,
        )
        for i in range(len(edges) - 1)
    ]


def summarize_devices(samples: SampleSet, target_p95_ms: float, start: float, end: float) -> dict[str, LatencySummary]:
    """device id -> summary of that device's points."""
    order = np.argsort(samples.device, kind="stable")
    codes = samples.device[order]
    present = np.unique(codes)
    bounds = np.searchsorted(codes, np.append(present, np.iinfo(np.int32).max), side="left")
    result = {
        samples.device_ids[code]: summarize(samples.select(order[bounds[i] : bounds[i + 1]]), start, end, target_p95_ms)
        for i, code in enumerate(present)
    }
    return dict(sorted(result.items()))


def covered_span(times: np.ndarray) -> Span | None:
    """(first, last) of the finite `times`; None when there is none."""
    finite = times[np.isfinite(times)]
    if finite.size == 0:
        return None
    return float(finite.min()), float(finite.max())


def counts_over_covered_span(
    times: np.ndarray, edges: np.ndarray, *, covered: Span | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(events, seconds) of each window [edges[i], edges[i+1]) within the covered span: from the first
    event time up to the last (or `covered`), the last excluded, so n evenly spaced events over a span
    count n - 1 intervals in it. NaN times are left out."""
    finite = np.sort(times[np.isfinite(times)])
    span = covered if covered is not None else covered_span(finite)
    if span is None:
        return np.zeros(edges.size - 1, dtype=np.int64), np.zeros(edges.size - 1)
    low = np.maximum(edges[:-1], span[0])
    high = np.minimum(edges[1:], span[1])
    seconds = np.maximum(high - low, 0.0)
    counts = np.searchsorted(finite, high, side="left") - np.searchsorted(finite, low, side="left")
    return np.where(seconds > 0, counts, 0), seconds


def rates_over_covered_span(times: np.ndarray, edges: np.ndarray, *, covered: Span | None = None) -> np.ndarray:
    """Events per second in each window between `edges`, over the part of the window that the events
    cover (see counts_over_covered_span): six minutes of points in a 16 h period give the rate of those
    six minutes, not their count spread over 16 h. A window the events do not cover is NaN."""
    counts, seconds = counts_over_covered_span(times, edges, covered=covered)
    rates = np.full(seconds.size, np.nan)
    np.divide(counts, seconds, out=rates, where=seconds > 0)
    return rates


def rate_over_covered_span(
    times: np.ndarray, start: float = -math.inf, end: float = math.inf, *, covered: Span | None = None
) -> float | None:
    """Events per second over the part of [start, end) the events cover; None when they cover no time
    (no event, or all at one instant)."""
    [rate] = rates_over_covered_span(times, np.array([start, end], dtype=np.float64), covered=covered)
    return float(rate) if np.isfinite(rate) else None


def data_windows(span: Span | None, width_s: float | None, *, since: float, until: float) -> tuple[float, np.ndarray]:
    """(width, edges) of windows that tile the data's span [first, last], `width_s` wide (default: about
    120 windows over the span; the last may be shorter), so the data covers every window whole.
    Without data, the windows of [since, until)."""
    first, last = span if span is not None else (since, until)
    width = width_s or choose_window_s(last - first)
    return width, window_edges(first, last, width)


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch with no point received by the collector at all."""

    start: float
    end: float

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "duration_s": _rounded(self.duration_s)}


def find_gaps(times: np.ndarray, min_gap_s: float) -> list[Gap]:
    """Silences longer than `min_gap_s` between consecutive (sorted) times, e.g. receive times."""
    finite = np.sort(times[np.isfinite(times)])
    if finite.size < 2:
        return []
    steps = np.diff(finite)
    where = np.nonzero(steps > min_gap_s)[0]
    return [Gap(float(finite[i]), float(finite[i + 1])) for i in where]


def choose_window_s(duration_s: float, target_windows: int = 120) -> float:
    """A round window width giving about `target_windows` windows over `duration_s`."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400):
        if duration_s / width <= target_windows:
            return float(width)
    return 86400.0


def _rounded(value: float | None, digits: int = 3) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
