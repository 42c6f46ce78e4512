"""The fleet summary: messages per second and end-to-end latency P50/P95 over the last minute.

Querying a whole minute of points every second would cost more than everything else the dashboard
does at 1,000 devices, so the summary is kept incrementally: each refresh reads only the points since
the previous one (plus a few seconds of overlap, for points written late), files them into one bucket
per second of device time keyed by (device_id, time) so overlaps do not count twice, and drops buckets
older than the window. Until a minute of data has been seen, the window starts at the oldest point
read, and `window_s` says how long it is; the rate is shown once that span reaches MIN_SPAN_S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rtds.store import LatencySample, StoreReader

WINDOW_S = 60.0
OVERLAP_S = 5.0
# The first refresh reads this much; the window then grows to WINDOW_S.
FIRST_READ_S = 15.0
# A rate over a shorter span would be skewed by the points not yet written; until then it is None.
MIN_SPAN_S = 8.0
# Percentiles are estimated from an even subset past this many samples.
MAX_PERCENTILE_SAMPLES = 20_000
# Bounds one refresh's read (rows) if the store suddenly holds a burst.
MAX_ROWS_PER_REFRESH = 200_000


@dataclass(frozen=True, slots=True)
class FleetFigures:
    window_s: float
    messages: int
    messages_per_s: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_samples: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_s": round(self.window_s, 1),
            "messages": self.messages,
            "messages_per_s": None if self.messages_per_s is None else round(self.messages_per_s, 2),
            "latency_p50_ms": None if self.latency_p50_ms is None else round(self.latency_p50_ms, 1),
            "latency_p95_ms": None if self.latency_p95_ms is None else round(self.latency_p95_ms, 1),
            "latency_samples": self.latency_samples,
        }


EMPTY_FIGURES = FleetFigures(0.0, 0, None, None, None, 0)


def latency_ms(sample: LatencySample) -> float | None:
    """Store write time minus device publish time; None when unknown or replayed from an offline queue."""
    if sample.replayed or sample.write_time is None:
        return None
    return (sample.write_time - sample.publish_timestamp) * 1000.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("no values")
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


class FleetSummary:
    """Rolling per-second buckets of (device_id, time) -> latency, refreshed from the store."""

    def __init__(self, window_s: float = WINDOW_S, overlap_s: float = OVERLAP_S, first_read_s: float = FIRST_READ_S):
        self.window_s = window_s
        self.overlap_s = overlap_s
        self.first_read_s = first_read_s
        self._buckets: dict[int, dict[tuple[str, float], float | None]] = {}
        self._covered_since: float | None = None
        self._read_until: float | None = None
        self.figures = EMPTY_FIGURES

    def refresh(self, store: StoreReader, now: float) -> FleetFigures:
        if self._read_until is None:
            since = now - min(self.first_read_s, self.window_s)
        else:
            since = max(now - self.window_s, self._read_until - self.overlap_s)
        samples = store.latency_samples(since, None, limit=MAX_ROWS_PER_REFRESH)
        self._read_until = now
        if self._covered_since is None and samples:
            # The window starts at the oldest point read so far, so a fleet that started 3 s ago
            # shows its rate over those 3 s rather than diluted over FIRST_READ_S.
            self._covered_since = min(sample.time for sample in samples)
        self.add(samples)
        self.figures = self.compute(now)
        return self.figures

    def add(self, samples: list[LatencySample]) -> None:
        buckets = self._buckets
        for sample in samples:
            second = int(sample.time)
            bucket = buckets.get(second)
            if bucket is None:
                bucket = buckets[second] = {}
            bucket[(sample.device_id, sample.time)] = latency_ms(sample)

    def compute(self, now: float) -> FleetFigures:
        start = now - self.window_s
        for second in [s for s in self._buckets if s + 1 <= start]:
            del self._buckets[second]
        if self._covered_since is None:
            return EMPTY_FIGURES
        # Points strictly after the span's start count, so N points a second apart make N-1 intervals.
        span_start = max(start, self._covered_since)
        span_s = now - span_start
        messages = 0
        latencies: list[float] = []
        for second, bucket in self._buckets.items():
            if second <= span_start:  # the oldest bucket straddles the span's start
                items = [value for (_, time), value in bucket.items() if span_start < time]
            else:
                items = list(bucket.values())
            messages += len(items)
            latencies.extend(value for value in items if value is not None)
        p50 = p95 = None
        count = len(latencies)
        if latencies:
            if count > MAX_PERCENTILE_SAMPLES:
                latencies = latencies[:: math.ceil(count / MAX_PERCENTILE_SAMPLES)]
            latencies.sort()
            p50, p95 = percentile(latencies, 0.50), percentile(latencies, 0.95)
        rate = messages / span_s if span_s >= MIN_SPAN_S else None
        return FleetFigures(span_s, messages, rate, p50, p95, count)
