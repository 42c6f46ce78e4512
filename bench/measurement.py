"""Measuring processes and stores from outside: CPU and memory sampling, percentiles, row counts."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass
class ResourceUsage:
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    mean_rss_bytes: float

    @property
    def cpu_share(self) -> float:
        """CPU time over wall time: 1.0 is one core fully busy."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_share_of_one_core": round(self.cpu_share, 4),
            "peak_rss_mb": round(self.peak_rss_bytes / 2**20, 1),
            "mean_rss_mb": round(self.mean_rss_bytes / 2**20, 1),
        }


class ResourceSampler:
    """Samples RSS and CPU time of some processes and all their descendants, in a thread."""

    def __init__(self, pids: Iterable[int], *, interval_s: float = 0.2, descendants: bool = True) -> None:
        self._roots = [psutil.Process(pid) for pid in pids]
        self._descendants = descendants
        self._interval_s = interval_s
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._started = 0.0
        self._stopped = 0.0

    def _processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for root in self._roots:
            try:
                found[root.pid] = root
                for child in root.children(recursive=True) if self._descendants else ():
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def _sample(self) -> None:
        total_rss = 0
        for process in self._processes():
            try:
                with process.oneshot():
                    cpu = process.cpu_times()
                    rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            used = cpu.user + cpu.system
            if process.pid not in self._cpu_first:
                # A process born during the window counts from zero.
                born_inside = self._started and process.create_time() > self._started
                self._cpu_first[process.pid] = 0.0 if born_inside else used
            self._cpu_last[process.pid] = used
            total_rss += rss
        self._rss.append(total_rss)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> ResourceSampler:
        self._started = time.time()
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> ResourceUsage:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._stopped = time.time()
        cpu = sum(self._cpu_last[pid] - self._cpu_first[pid] for pid in self._cpu_last)
        rss = self._rss or [0]
        return ResourceUsage(self._stopped - self._started, cpu, max(rss), sum(rss) / len(rss))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, interpolating between neighbours."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def summarise_ms(values_s: Iterable[float]) -> dict[str, float]:
    """P50/P95/P99/max of durations given in seconds, in milliseconds."""
    ordered = sorted(value * 1000 for value in values_s)
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p95_ms": round(percentile(ordered, 95), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "max_ms": round(ordered[-1], 3) if ordered else float("nan"),
    }


def sqlite_count(path: Path | str, query: str = "SELECT COUNT(*) FROM device_data", parameters: tuple = ()) -> int:
    """A count through a short-lived read connection, so the writer is never held up by ours."""
    if not Path(path).exists():
        return 0
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return int(connection.execute(query, parameters).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        connection.close()


def wait_for_count(
    path: Path | str,
    target: int,
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    stall_s: float = 30.0,
    query: str = "SELECT COUNT(*) FROM device_data",
    parameters: tuple = (),
) -> int:
    """Poll the store until it holds `target` rows; returns the last count (may be short at the deadline)."""
    count = 0
    deadline = time.monotonic() + timeout_s
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        now_count = sqlite_count(path, query, parameters)
        if now_count != count:
            count, last_change = now_count, time.monotonic()
        if count >= target:
            return count
        if time.monotonic() - last_change > stall_s:
            return count
        time.sleep(interval_s)
    return count
