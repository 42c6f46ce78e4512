"""The collector's counters and the one-line summary it logs every COLLECTOR_SUMMARY_INTERVAL_S and at exit.

Each count has one writing thread (the MQTT thread counts what arrives, the writer thread what
is stored), so plain integers are enough; a summary may be a message or two behind, never wrong.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class CollectorCounters:
    received: int = 0
    written: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    batch_size_max: int = 0
    write_seconds_total: float = 0.0
    write_seconds_max: float = 0.0
    # Maxima since the last periodic summary; `take_window` hands them over and starts new ones.
    window_batch_size_max: int = 0
    window_write_seconds_max: float = 0.0
    # Written, but received on a connection that has since dropped: left for the broker to redeliver.
    left_for_redelivery: int = 0
    # device/status/<id> presence messages, which the subscription to device/# brings too: acked, not kept.
    presence: int = 0
    # Dead letters deleted, oldest first, to keep the dead-letter file under DEAD_LETTER_MAX_MB.
    dead_letters_evicted: int = 0
    # Reasons are new keys in a dict that two threads touch; the lock keeps a snapshot from seeing it grow.
    _rejected_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_rejected(self, reason: str, count: int = 1) -> None:
        with self._rejected_lock:
            self.rejected[reason] += count

    def count_batch(self, size: int, seconds: float) -> None:
        self.batches += 1
        self.written += size
        self.write_seconds_total += seconds
        self.batch_size_max = max(self.batch_size_max, size)
        self.write_seconds_max = max(self.write_seconds_max, seconds)
        self.window_batch_size_max = max(self.window_batch_size_max, size)
        self.window_write_seconds_max = max(self.window_write_seconds_max, seconds)

    def snapshot(self) -> CollectorCounters:
        with self._rejected_lock:
            rejected = Counter(self.rejected)
        values = {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}
        return CollectorCounters(**{**values, "rejected": rejected})

    def take_window(self, earlier: CollectorCounters) -> tuple[CollectorCounters, CollectorCounters]:
        """(the counts added since `earlier`, a snapshot to pass next time); the window's maxima restart here."""
        now = self.snapshot()
        window = CollectorCounters(
            received=now.received - earlier.received,
            written=now.written - earlier.written,
            rejected=now.rejected - earlier.rejected,
            dead_lettered=now.dead_lettered - earlier.dead_lettered,
            retries=now.retries - earlier.retries,
            batches=now.batches - earlier.batches,
            batch_size_max=now.window_batch_size_max,
            write_seconds_total=now.write_seconds_total - earlier.write_seconds_total,
            write_seconds_max=now.window_write_seconds_max,
            left_for_redelivery=now.left_for_redelivery - earlier.left_for_redelivery,
            presence=now.presence - earlier.presence,
            dead_letters_evicted=now.dead_letters_evicted - earlier.dead_letters_evicted,
        )
        self.window_batch_size_max = 0
        self.window_write_seconds_max = 0.0
        return window, now


def describe(counts: CollectorCounters, elapsed_s: float, *, buffered: int) -> str:
    """One line: rates, rejections by reason, retries, batch sizes and write latency."""
    elapsed_s = max(elapsed_s, 1e-9)
    rejected = sum(counts.rejected.values())
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items()) if n)
    batch_avg = counts.written / counts.batches if counts.batches else 0.0
    write_avg_ms = 1000 * counts.write_seconds_total / counts.batches if counts.batches else 0.0
    parts = [
        f"received {counts.received} ({counts.received / elapsed_s:.1f}/s)",
        f"written {counts.written} ({counts.written / elapsed_s:.1f}/s)",
        f"rejected {rejected}" + (f" ({reasons})" if reasons else ""),
        f"dead-lettered {counts.dead_lettered}",
        f"retries {counts.retries}",
        f"batches {counts.batches} (avg {batch_avg:.1f}, max {counts.batch_size_max})",
        f"write ms avg {write_avg_ms:.2f} max {1000 * counts.write_seconds_max:.2f}",
        f"buffered {buffered}",
    ]
    if counts.left_for_redelivery:
        parts.append(f"left for redelivery {counts.left_for_redelivery}")
    if counts.dead_letters_evicted:
        parts.append(f"oldest dead letters deleted at the cap {counts.dead_letters_evicted}")
    return ", ".join(parts)
