"""Stored point timings as numpy columns, read from any store in time-ordered chunks.

A million points take about 50 MB here, against several hundred MB as `LatencySample` objects,
so the report and the spike search can work on long periods. Reading goes through the
`StoreReader` protocol only, so SQLite and InfluxDB behave the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import takewhile

import numpy as np

from rtds.store import LatencySample, StoreReader

DEFAULT_CHUNK_SIZE = 50_000
FIRST_SLICE_S = 60.0
MIN_SLICE_S = 0.001


@dataclass(frozen=True)
class SampleSet:
    """One row per stored point, ordered by device time. Missing timings are NaN, a missing seq is -1."""

    device_ids: tuple[str, ...]  # code -> device id
    device: np.ndarray  # int32 codes into device_ids
    time: np.ndarray  # device event time (the store's time), Unix seconds
    seq: np.ndarray  # int64 (seqs go up to 2**63 - 1, beyond a float's exact integers); -1 when missing
    publish: np.ndarray
    receive: np.ndarray
    write: np.ndarray
    replayed: np.ndarray  # bool

    def __len__(self) -> int:
        return int(self.time.size)

    @property
    def end_to_end_s(self) -> np.ndarray:
        """write_time − publish_timestamp."""
        return self.write - self.publish

    @property
    def receive_delay_s(self) -> np.ndarray:
        """collector_receive_time − publish_timestamp."""
        return self.receive - self.publish

    @property
    def store_delay_s(self) -> np.ndarray:
        """write_time − collector_receive_time."""
        return self.write - self.receive

    def select(self, mask_or_index: np.ndarray | slice) -> SampleSet:
        return SampleSet(
            self.device_ids,
            self.device[mask_or_index],
            self.time[mask_or_index],
            self.seq[mask_or_index],
            self.publish[mask_or_index],
            self.receive[mask_or_index],
            self.write[mask_or_index],
            self.replayed[mask_or_index],
        )

    def between(self, since: float, until: float) -> SampleSet:
        """Points with device time in [since, until); relies on the time order."""
        first, last = np.searchsorted(self.time, [since, until], side="left")
        return self.select(slice(int(first), int(last)))

    def devices_present(self) -> list[str]:
        return [self.device_ids[code] for code in np.unique(self.device)]

    def downsample(self, limit: int) -> SampleSet:
        """At most `limit` points, evenly spread over the set (for drawing, never for statistics)."""
        if limit <= 0 or len(self) <= limit:
            return self
        index = np.linspace(0, len(self) - 1, num=limit).astype(np.int64)
        return self.select(index)


def empty_sample_set() -> SampleSet:
    floats = np.empty(0, dtype=np.float64)
    return SampleSet(
        (),
        np.empty(0, dtype=np.int32),
        floats,
        np.empty(0, dtype=np.int64),
        floats,
        floats,
        floats,
        np.empty(0, dtype=bool),
    )


def sample_set_from(samples: Sequence[LatencySample]) -> SampleSet:
    """Columns from a list of samples (tests and small reads)."""
    builder = _Builder()
    builder.add(samples)
    return builder.build()


def read_samples(
    store: StoreReader,
    since: float,
    until: float,
    *,
    device_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: Callable[[float, str], None] | None = None,
) -> SampleSet:
    """Every point with device time in [since, until), read at most `chunk_size` at a time in time order.

    Each query covers a time slice sized to hold about half a chunk (so InfluxDB never sorts the
    whole period for one chunk). A slice that fills a chunk is continued from its last time; the
    points at exactly that time that were already read are skipped by device id, since a device
    has one point per time.
    """
    builder = _Builder()
    cursor, slice_end = since, min(until, since + FIRST_SLICE_S)
    seen_at_cursor: set[str] = set()
    while cursor < until:
        chunk = store.latency_samples(cursor, slice_end, limit=chunk_size, device_id=device_id)
        fresh = [s for s in chunk if not (s.time == cursor and s.device_id in seen_at_cursor)]
        builder.add(fresh)
        if on_progress is not None:
            on_progress((cursor - since) / (until - since), f"{builder.count:,} points")
        if len(chunk) < chunk_size:
            # The slice is complete: size the next one from this slice's density.
            width = slice_end - cursor
            per_s = len(chunk) / width if width > 0 else 0.0
            next_width = chunk_size / 2 / per_s if per_s > 0 else width * 4
            cursor, seen_at_cursor = slice_end, set()
            slice_end = min(until, cursor + max(MIN_SLICE_S, next_width))
            continue
        last_time = chunk[-1].time
        if not fresh:
            # More points share this instant than a chunk holds: read it again with room for all of them.
            chunk_size *= 2
            continue
        at_last = {s.device_id for s in takewhile(lambda s, t=last_time: s.time == t, reversed(chunk))}
        if last_time == cursor:
            at_last |= seen_at_cursor
        cursor, seen_at_cursor = last_time, at_last
    if on_progress is not None:
        on_progress(1.0, f"{builder.count:,} points")
    return builder.build()


class _Builder:
    """Collects chunks as numpy arrays, mapping device ids to small integer codes."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.count = 0

    def add(self, samples: Sequence[LatencySample]) -> None:
        if not samples:
            return
        devices, times, seqs, publish, receive, write, replayed = zip(*samples, strict=True)
        codes = self.codes
        device = np.fromiter((codes.setdefault(d, len(codes)) for d in devices), dtype=np.int32, count=len(devices))
        self.parts.append(
            (
                device,
                np.array(times, dtype=np.float64),
                np.fromiter((-1 if q is None else q for q in seqs), dtype=np.int64, count=len(seqs)),
                np.array(publish, dtype=np.float64),
                np.array(receive, dtype=np.float64),
                np.array(write, dtype=np.float64),
                np.array(replayed, dtype=bool),
            )
        )
        self.count += len(samples)

    def build(self) -> SampleSet:
        if not self.parts:
            return empty_sample_set()
        columns = [np.concatenate(column) for column in zip(*self.parts, strict=True)]
        self.parts.clear()
        device_ids = tuple(sorted(self.codes, key=self.codes.__getitem__))
        result = SampleSet(device_ids, *columns)
        # Stores return time order; sort anyway (stable) so `between` is always right.
        if result.time.size > 1 and np.any(np.diff(result.time) < 0):
            result = result.select(np.argsort(result.time, kind="stable"))
        return result
