"""The host's CPU, memory, disk and network readings, which a vehicle reports with DEVICE_SYSTEM_METRICS=host.

psutil is read without blocking (`cpu_percent(interval=None)` measures since the previous call)
and at most once per `max_age_s`; one `DeviceTelemetry` is shared by every device in a process,
so a fleet of 1,000 devices reads the host once a second, not 1,000 times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from rtds.settings import Settings

BYTES_PER_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SystemReading:
    """Memory and disk sizes in MB, as in the seed's payload example; network counters in bytes."""

    cpu_usage: float
    ram_usage: float
    memory_total: float
    memory_used: float
    memory_available: float
    memory_percent: float
    disk_total: float
    disk_used: float
    disk_free: float
    disk_percent: float
    network_bytes_sent: float
    network_bytes_recv: float


class DeviceTelemetry:
    """A cached, thread-safe view of the host's system readings."""

    def __init__(
        self,
        *,
        max_age_s: float = 1.0,
        disk_path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_age_s = max_age_s
        self._disk_path = disk_path or Path.cwd().anchor or "/"
        self._clock = clock
        self._lock = threading.Lock()
        self._reading: SystemReading | None = None
        self._read_at = float("-inf")
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def read(self) -> SystemReading:
        with self._lock:
            now = self._clock()
            if self._reading is None or now - self._read_at >= self._max_age_s:
                self._reading = self._sample()
                self._read_at = now
            return self._reading

    def _sample(self) -> SystemReading:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(self._disk_path)
        network = psutil.net_io_counters()
        return SystemReading(
            cpu_usage=float(psutil.cpu_percent(interval=None)),
            ram_usage=float(memory.percent),
            memory_total=round(memory.total / BYTES_PER_MB, 1),
            memory_used=round(memory.used / BYTES_PER_MB, 1),
            memory_available=round(memory.available / BYTES_PER_MB, 1),
            memory_percent=float(memory.percent),
            disk_total=round(disk.total / BYTES_PER_MB, 1),
            disk_used=round(disk.used / BYTES_PER_MB, 1),
            disk_free=round(disk.free / BYTES_PER_MB, 1),
            disk_percent=float(disk.percent),
            network_bytes_sent=float(network.bytes_sent if network else 0),
            network_bytes_recv=float(network.bytes_recv if network else 0),
        )


def system_metrics_mode(settings: Settings, *, fleet: bool) -> str:
    """'host' or 'simulated': DEVICE_SYSTEM_METRICS, where auto is host for a lone device and simulated for a fleet."""
    if settings.device_system_metrics == "auto":
        return "simulated" if fleet else "host"
    return settings.device_system_metrics
