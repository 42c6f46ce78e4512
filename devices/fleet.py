"""Up to 1,000 simulated vehicles in one process: `rtds devices --in-process --count 1000`.

Each device keeps its own MQTT client (client id `device_{id}`, persistent session, Last Will)
and its own durable queue rows; the rows of all devices share one SQLite file,
`{DEVICE_QUEUE_DIR}/fleet_queue.db`, so the fleet needs one file, not one per device, and one
transaction per tick for every device's insert.
"""

from __future__ import annotations

import logging
import random
import resource
from collections.abc import Sequence

from devices.device import DeviceSimulator
from devices.device_loop import DeviceLoop
from devices.network import SelectorNetwork
from devices.offline_queue import DeviceStats, QueueDatabase, device_file, fleet_file
from devices.telemetry import DeviceTelemetry, system_metrics_mode
from rtds.errors import ConfigError
from rtds.settings import Settings

log = logging.getLogger(__name__)

MAX_FLEET_SIZE = 1_000
FILES_PER_DEVICE = 1  # the MQTT socket (the selector loop needs no per-client wake-up pair)


def raise_open_file_limit(needed: int) -> None:
    """Lift the soft RLIMIT_NOFILE towards the hard limit; fail with the fix if that is not enough."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(max(needed, soft), hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise ConfigError(
            f"{needed} open files are needed but the limit is {soft}; raise it (ulimit -n {needed}) or run fewer devices"
        )


class Fleet:
    """Many devices, one queue file, one driver thread."""

    def __init__(self, settings: Settings, device_ids: Sequence[str], *, seed: int | None = None) -> None:
        if not 0 < len(device_ids) <= MAX_FLEET_SIZE:
            raise ConfigError(f"an in-process fleet runs 1 to {MAX_FLEET_SIZE} devices, not {len(device_ids)}")
        raise_open_file_limit(len(device_ids) * FILES_PER_DEVICE + 64)
        stray = [d for d in device_ids if device_file(settings.device_queue_dir, d).exists()]
        if stray:
            log.warning(
                "%d device(s) also have a per-device queue file (e.g. %s) from one-process-per-device mode; "
                "the fleet keeps its own queue and seq in %s, so their seq starts over there",
                len(stray),
                device_file(settings.device_queue_dir, stray[0]),
                fleet_file(settings.device_queue_dir),
            )
        self.database = QueueDatabase(fleet_file(settings.device_queue_dir))
        self.system_metrics = system_metrics_mode(settings, fleet=True)
        telemetry = DeviceTelemetry() if self.system_metrics == "host" else None
        rng = random.Random(seed)
        self.devices = [
            DeviceSimulator(
                device_id,
                settings,
                self.database.queue(device_id, settings.device_queue_max_messages),
                telemetry=telemetry,
                rng=random.Random(rng.random()),
            )
            for device_id in device_ids
        ]
        self.network = SelectorNetwork(settings)
        self.loop = DeviceLoop(self.devices, self.database, self.network, interval_s=settings.device_publish_interval_s)

    def run(self) -> list[DeviceStats]:
        """Drive the fleet until `request_stop()`; returns every device's final stats."""
        try:
            self.loop.run()
            return [device.snapshot() for device in self.devices]
        finally:
            self.database.close()

    def request_stop(self) -> None:
        self.loop.request_stop()
