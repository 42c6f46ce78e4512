"""The one thread that drives devices: the publish schedule, the queue and the stats.

A device process runs one `DeviceLoop` with one device; the in-process fleet runs one loop with
all of its devices on a shared queue file, so each tick's inserts for every device commit in
one transaction.

The schedule is `start + k * interval` on the monotonic clock, so it does not drift however
long it runs. When the loop falls behind (a stalled disk, a busy machine) it skips to the next
slot instead of bursting the missed readings; skipped slots are counted per device.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Sequence

from devices.device import DeviceSimulator
from devices.network import Network
from devices.offline_queue import QueueDatabase

log = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0
STOP_GRACE_S = 3.0  # how long a clean stop waits for outstanding PUBACKs


class DeviceLoop:
    """Runs devices that share one `QueueDatabase` until `request_stop()`."""

    def __init__(
        self,
        devices: Sequence[DeviceSimulator],
        database: QueueDatabase,
        network: Network,
        *,
        interval_s: float,
        stats_interval_s: float = STATS_INTERVAL_S,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        self.devices = list(devices)
        self.database = database
        self.network = network
        self.interval_s = interval_s
        self.stats_interval_s = stats_interval_s
        self.stop_grace_s = stop_grace_s
        self._ready: collections.deque[DeviceSimulator] = collections.deque()
        self._stop_requested = False  # a plain flag: set from signal handlers, which must not take locks
        for device in self.devices:
            device.notify = self.notify

    def notify(self, device: DeviceSimulator) -> None:
        """Called from paho's threads: this device has acks or a connection change to handle."""
        self._ready.append(device)
        self.network.wake()

    def request_stop(self) -> None:
        """Safe from a signal handler or another thread: no locks."""
        self._stop_requested = True
        self.network.wake()

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    def run(self) -> None:
        """Start every device's network, drive them until stopped, then stop them cleanly."""
        for device in self.devices:
            self.network.start(device.client)
        start = time.monotonic()
        next_slot = 0
        last_tick: float | None = None
        next_stats = start
        while not self._stop_requested:
            now = time.monotonic()
            tick_due = now >= start + next_slot * self.interval_s
            if tick_due:
                dt_s = self.interval_s if last_tick is None else now - last_tick
                last_tick = now
                wall = time.time()
                with self.database.transaction():
                    for device in self.devices:
                        device.generate(wall, dt_s)
                slot = math.floor((now - start) / self.interval_s) + 1
                if slot > next_slot + 1:
                    for device in self.devices:
                        device.stats.skipped_slots += slot - next_slot - 1
                next_slot = slot
            self._pump(self.devices if tick_due else self._take_ready())
            if now >= next_stats:
                self.database.save_stats(device.snapshot() for device in self.devices)
                next_stats = now + self.stats_interval_s
            timeout = start + next_slot * self.interval_s - time.monotonic()
            self.network.wait(max(0.0, min(timeout, self.stats_interval_s)))
        self._shutdown()

    def _take_ready(self) -> list[DeviceSimulator]:
        ready: dict[int, DeviceSimulator] = {}
        while self._ready:
            device = self._ready.popleft()
            ready[id(device)] = device
        return list(ready.values())

    def _pump(self, devices: Sequence[DeviceSimulator]) -> None:
        if not devices:
            return
        if devices is self.devices:
            self._ready.clear()
        with self.database.transaction():
            for device in devices:
                device.pump()

    def _shutdown(self) -> None:
        for device in self.devices:
            device.begin_stop()
        deadline = time.monotonic() + self.stop_grace_s
        while time.monotonic() < deadline:
            self._pump(self._take_ready())
            if all(device.stop_complete() for device in self.devices):
                break
            self.network.wait(0.05)
        self.network.stop([device.client for device in self.devices])
        self._pump(self._take_ready())
        self.database.save_stats(device.snapshot() for device in self.devices)
