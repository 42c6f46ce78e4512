"""Delivery completeness: did every seq each device produced end up in the store?

Per device, the expected seqs run from 0 (or the first stored seq) to the last stored seq. What
is not stored in that range is missing; the parts the device's own queue evicted (its
`evictions` table, read through `devices.offline_queue.read_evictions`) are reported as evicted
and still count as missing. A seq stored twice under different times means the device restarted
its counter. Seqs after the last stored one that the device says it produced (`next_seq` in its
stats) are the unconfirmed tail. The part of it the broker already acknowledged to the device
(`acked_through`, from its queue) is held upstream of the store, in the broker or the collector (while the
store is down, say), not lost; the rest is still in the device's queue or in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monitoring.samples import SampleSet

Ranges = list[tuple[int, int]]


def to_ranges(values: np.ndarray) -> Ranges:
    """Sorted unique integers -> contiguous (first, last) ranges."""
    if values.size == 0:
        return []
    breaks = np.nonzero(np.diff(values) > 1)[0]
    starts = np.concatenate([[values[0]], values[breaks + 1]])
    ends = np.concatenate([values[breaks], [values[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def merge_ranges(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def intersect_ranges(a: Ranges, b: Ranges) -> Ranges:
    result: Ranges = []
    for first_a, last_a in merge_ranges(a):
        for first_b, last_b in merge_ranges(b):
            first, last = max(first_a, first_b), min(last_a, last_b)
            if first <= last:
                result.append((first, last))
    return merge_ranges(result)


def subtract_ranges(a: Ranges, b: Ranges) -> Ranges:
    result: Ranges = []
    cut = merge_ranges(b)
    for first, last in merge_ranges(a):
        start = first
        for cut_first, cut_last in cut:
            if cut_last < start or cut_first > last:
                continue
            if cut_first > start:
                result.append((start, cut_first - 1))
            start = max(start, cut_last + 1)
        if start <= last:
            result.append((start, last))
    return result


def range_size(ranges: Ranges) -> int:
    return sum(last - first + 1 for first, last in ranges)


@dataclass
class DeviceDelivery:
    device_id: str
    stored: int
    without_seq: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    expected_first: int | None = None
    missing: Ranges = field(default_factory=list)
    evicted: Ranges = field(default_factory=list)
    unexplained: Ranges = field(default_factory=list)
    duplicates: Ranges = field(default_factory=list)
    duplicate_points: int = 0
    tail: Ranges = field(default_factory=list)
    held_upstream: Ranges = field(default_factory=list)
    queued: int | None = None

    @property
    def missing_count(self) -> int:
        return range_size(self.missing)

    @property
    def complete(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "stored": self.stored,
            "without_seq": self.without_seq,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "expected_first": self.expected_first,
            "missing_count": self.missing_count,
            "missing": [list(r) for r in self.missing],
            "evicted_count": range_size(self.evicted),
            "evicted": [list(r) for r in self.evicted],
            "unexplained_count": range_size(self.unexplained),
            "unexplained": [list(r) for r in self.unexplained],
            "duplicate_seqs": range_size(self.duplicates),
            "duplicate_points": self.duplicate_points,
            "duplicates": [list(r) for r in self.duplicates],
            "tail_count": range_size(self.tail),
            "tail": [list(r) for r in self.tail],
            "held_upstream_count": range_size(self.held_upstream),
            "held_upstream": [list(r) for r in self.held_upstream],
            "queued": self.queued,
            "complete": self.complete,
        }


@dataclass
class DeliveryReport:
    devices: list[DeviceDelivery]
    evictions_source: str  # where evictions came from, or why they are unknown

    @property
    def ok(self) -> bool:
        return all(device.complete for device in self.devices)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "devices_checked": len(self.devices),
            "devices_incomplete": sum(1 for d in self.devices if not d.complete),
            "missing_total": sum(d.missing_count for d in self.devices),
            "evicted_total": sum(range_size(d.evicted) for d in self.devices),
            "duplicate_points_total": sum(d.duplicate_points for d in self.devices),
            "tail_total": sum(range_size(d.tail) for d in self.devices),
            "held_upstream_total": sum(range_size(d.held_upstream) for d in self.devices),
            "evictions_source": self.evictions_source,
            "devices": [d.as_dict() for d in self.devices],
        }


def check_device(
    device_id: str,
    seqs: np.ndarray,
    *,
    stored: int,
    from_zero: bool,
    evictions: Ranges,
    next_seq: int | None = None,
    queued: int | None = None,
    acked_through: int | None = None,
    include_tail: bool = False,
) -> DeviceDelivery:
    """Compare one device's stored seqs (any order, -1 for points without one) with what it produced."""
    known = seqs[seqs >= 0]
    result = DeviceDelivery(device_id, stored=stored, without_seq=int(stored - known.size), queued=queued)
    unique, counts = np.unique(known, return_counts=True)
    evicted_all = merge_ranges(evictions)
    if unique.size:
        result.first_seq, result.last_seq = int(unique[0]), int(unique[-1])
        result.expected_first = 0 if from_zero else result.first_seq
        expected = [(min(result.expected_first, result.first_seq), result.last_seq)]
        result.duplicates = to_ranges(unique[counts > 1])
        result.duplicate_points = int((counts - 1).sum())
        holes = subtract_ranges(expected, to_ranges(unique))
        tail_start = result.last_seq + 1
    else:
        holes = []
        tail_start = 0
    # Evicted seqs are lost wherever they lie, even past the last stored seq.
    result.missing = merge_ranges(holes + evicted_all)
    if next_seq is not None and next_seq > tail_start:
        result.tail = subtract_ranges([(tail_start, next_seq - 1)], evicted_all)
        if acked_through is not None and acked_through >= tail_start:
            result.held_upstream = intersect_ranges(result.tail, [(tail_start, acked_through)])
        if include_tail:
            result.missing = merge_ranges(result.missing + result.tail)
    result.evicted = intersect_ranges(result.missing, evicted_all)
    result.unexplained = subtract_ranges(result.missing, evicted_all)
    return result


def check_delivery(
    samples: SampleSet,
    *,
    from_zero: bool,
    evictions: dict[str, Ranges],
    device_stats: dict[str, dict[str, Any]],
    evictions_source: str,
    include_tail: bool = False,
) -> DeliveryReport:
    order = np.argsort(samples.device, kind="stable")
    codes = samples.device[order]
    seqs_by_device: dict[str, np.ndarray] = {}
    for code in np.unique(codes):
        first, last = np.searchsorted(codes, [code, code + 1])
        seqs_by_device[samples.device_ids[code]] = samples.seq[order[first:last]]
    names = sorted(set(seqs_by_device) | set(evictions) | set(device_stats))
    devices = []
    for name in names:
        seqs = seqs_by_device.get(name, np.empty(0, dtype=np.int64))
        stats = device_stats.get(name, {})
        devices.append(
            check_device(
                name,
                seqs,
                stored=int(seqs.size),
                from_zero=from_zero,
                evictions=evictions.get(name, []),
                next_seq=stats.get("next_seq"),
                queued=stats.get("queued"),
                acked_through=stats.get("acked_through"),
                include_tail=include_tail,
            )
        )
    return DeliveryReport(devices, evictions_source)


def load_device_queues(queue_dir: str) -> tuple[dict[str, Ranges], dict[str, dict[str, Any]], str]:
    """(evictions, device stats, source description) from the devices' queue files, when there are any."""
    folder = Path(queue_dir)
    if not folder.is_dir():
        return {}, {}, f"no device queue folder at {folder} (DEVICE_QUEUE_DIR): evictions unknown"
    from devices.offline_queue import read_evictions, read_stats

    return read_evictions(folder), read_stats(folder), f"device queues in {folder}"
