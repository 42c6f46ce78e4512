"""A simulated vehicle's on-board computer: its CPU, memory, disk and network readings.

In a simulated fleet every vehicle reports its own computer (DEVICE_SYSTEM_METRICS, README "The
data") instead of the host's psutil readings, which would make every vehicle look the same. Like
devices/physics.py it does no I/O and reads no clock: the random generator, the elapsed time and
what the vehicle is doing are passed in, so a seed replays the same series.

Each vehicle draws its hardware and habits once (memory and disk size, idle load, how much work
speed and a driver-monitoring episode add). The load then follows what the vehicle does:
perception and planning work grows with speed, and an episode (a label other than `normal`)
runs the in-cabin classifier harder, buffers and records a clip and uploads it.
"""

from __future__ import annotations

import math
import random

from devices.physics import NORMAL_LABEL
from devices.telemetry import SystemReading

MB_PER_GB = 1024.0
MEMORY_SIZES_MB = (4096.0, 8192.0, 16384.0)
MEMORY_RESERVED_MB = (150.0, 450.0)  # firmware and kernel: the OS reports a little less than the chips hold
DISK_SIZES_GB = (64.0, 128.0, 256.0)
DISK_USABLE_SHARE = (0.90, 0.94)  # what the file system leaves of the nominal size
IDLE_CPU_PERCENT = (5.0, 15.0)
CPU_PERCENT_PER_KMH = (0.15, 0.30)
EPISODE_CPU_PERCENT = (10.0, 25.0)
CPU_SETTLE_S = 2.0  # the load follows its causes with this time constant
CPU_NOISE_PERCENT = 2.0
IDLE_MEMORY_SHARE = (0.30, 0.50)
MEMORY_MB_PER_KMH = (1.0, 3.0)  # map tiles and sensor buffers
EPISODE_MEMORY_MB = (150.0, 600.0)  # the clip buffer
MEMORY_SETTLE_S = 5.0
MEMORY_NOISE_MB = 8.0
MAX_MEMORY_SHARE = 0.97
START_DISK_SHARE = (0.25, 0.70)
LOG_MB_PER_S = (0.01, 0.05)
CLIP_MB_PER_S = (1.0, 4.0)  # while an episode is recorded
DISK_CLEANUP_AT_SHARE = 0.90  # old logs and clips are deleted down to CLEANUP_TO_SHARE
CLEANUP_TO_SHARE = (0.50, 0.65)
UPLINK_BYTES_PER_S = (2_000.0, 6_000.0)
CLIP_UPLOAD_BYTES_PER_S = (50_000.0, 200_000.0)
DOWNLINK_BYTES_PER_S = (500.0, 3_000.0)
BYTES_SINCE_BOOT = (1e6, 5e7)


class OnboardComputerSimulator:
    """One vehicle's computer. `step` advances it and returns a reading in the host readings' units (MB, %)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.memory_total_mb = rng.choice(MEMORY_SIZES_MB) - rng.uniform(*MEMORY_RESERVED_MB)
        self.disk_total_mb = rng.choice(DISK_SIZES_GB) * MB_PER_GB * rng.uniform(*DISK_USABLE_SHARE)
        self._idle_cpu = rng.uniform(*IDLE_CPU_PERCENT)
        self._cpu_per_kmh = rng.uniform(*CPU_PERCENT_PER_KMH)
        self._episode_cpu = rng.uniform(*EPISODE_CPU_PERCENT)
        self._idle_memory_mb = self.memory_total_mb * rng.uniform(*IDLE_MEMORY_SHARE)
        self._memory_per_kmh = rng.uniform(*MEMORY_MB_PER_KMH)
        self._episode_memory_mb = rng.uniform(*EPISODE_MEMORY_MB)
        self._log_mb_per_s = rng.uniform(*LOG_MB_PER_S)
        self._clip_mb_per_s = rng.uniform(*CLIP_MB_PER_S)
        self._uplink = rng.uniform(*UPLINK_BYTES_PER_S)
        self._clip_upload = rng.uniform(*CLIP_UPLOAD_BYTES_PER_S)
        self._downlink = rng.uniform(*DOWNLINK_BYTES_PER_S)
        self._cpu = self._idle_cpu
        self._memory_mb = self._idle_memory_mb
        self._disk_used_mb = self.disk_total_mb * rng.uniform(*START_DISK_SHARE)
        self._bytes_sent = rng.uniform(*BYTES_SINCE_BOOT)
        self._bytes_recv = rng.uniform(*BYTES_SINCE_BOOT)

    def step(self, dt_s: float, *, speed_kmh: float, detection_label: str) -> SystemReading:
        """Advance by `dt_s` seconds of driving at `speed_kmh` with the camera seeing `detection_label`."""
        rng = self._rng
        dt_s = max(dt_s, 0.0)
        episode = detection_label != NORMAL_LABEL
        speed_kmh = max(speed_kmh, 0.0)

        cpu_target = self._idle_cpu + self._cpu_per_kmh * speed_kmh + (self._episode_cpu if episode else 0.0)
        self._cpu += (cpu_target - self._cpu) * (1.0 - math.exp(-dt_s / CPU_SETTLE_S))
        memory_target = (
            self._idle_memory_mb + self._memory_per_kmh * speed_kmh + (self._episode_memory_mb if episode else 0.0)
        )
        self._memory_mb += (memory_target - self._memory_mb) * (1.0 - math.exp(-dt_s / MEMORY_SETTLE_S))
        self._disk_used_mb += (self._log_mb_per_s + (self._clip_mb_per_s if episode else 0.0)) * dt_s
        if self._disk_used_mb > self.disk_total_mb * DISK_CLEANUP_AT_SHARE:
            self._disk_used_mb = self.disk_total_mb * rng.uniform(*CLEANUP_TO_SHARE)
        self._bytes_sent += (self._uplink + (self._clip_upload if episode else 0.0)) * dt_s
        self._bytes_recv += self._downlink * dt_s * rng.uniform(0.5, 1.5)

        cpu = min(max(self._cpu + rng.gauss(0.0, CPU_NOISE_PERCENT), 0.0), 100.0)
        memory_used = self._memory_mb + rng.gauss(0.0, MEMORY_NOISE_MB)
        memory_used = min(max(memory_used, 0.0), self.memory_total_mb * MAX_MEMORY_SHARE)
        memory_percent = round(100.0 * memory_used / self.memory_total_mb, 1)
        return SystemReading(
            cpu_usage=round(cpu, 1),
            ram_usage=memory_percent,
            memory_total=round(self.memory_total_mb, 1),
            memory_used=round(memory_used, 1),
            memory_available=round(self.memory_total_mb - memory_used, 1),
            memory_percent=memory_percent,
            disk_total=round(self.disk_total_mb, 1),
            disk_used=round(self._disk_used_mb, 1),
            disk_free=round(self.disk_total_mb - self._disk_used_mb, 1),
            disk_percent=round(100.0 * self._disk_used_mb / self.disk_total_mb, 1),
            network_bytes_sent=float(round(self._bytes_sent)),
            network_bytes_recv=float(round(self._bytes_recv)),
        )
