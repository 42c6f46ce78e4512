"""One simulated vehicle as a process: `python devices/device_simulator.py vehicle_01` or `rtds device vehicle_01`.

It publishes a reading every DEVICE_PUBLISH_INTERVAL_S to `device/data/{id}` (and the legacy
`vehicle/speed/{id}` when DEVICE_TOPICS=both), QoS 1, through its durable offline queue at
`{DEVICE_QUEUE_DIR}/{id}_queue.db`. SIGTERM or Ctrl-C stops it cleanly: it announces `offline`,
waits briefly for outstanding PUBACKs, prints a summary and exits 0.

The parts live in their own modules and are re-exported here, where the seed names them:
`VehicleSpeedSimulator` and `DetectionLabelSimulator` (devices/physics.py), `DeviceTelemetry`
(devices/telemetry.py; alone, a device reports the host's readings, or its own simulated on-board
computer, devices/onboard_computer.py, with DEVICE_SYSTEM_METRICS=simulated), `OfflineQueue`
(devices/offline_queue.py), `DeviceSimulator` (devices/device.py) and the loop that drives it
(devices/device_loop.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devices.device import DeviceSimulator
from devices.device_loop import DeviceLoop
from devices.network import ThreadedNetwork
from devices.offline_queue import DeviceStats, OfflineQueue, QueueDatabase, device_file
from devices.physics import DetectionLabelSimulator, VehicleSpeedSimulator
from devices.telemetry import DeviceTelemetry, system_metrics_mode
from rtds.cli import command_prog
from rtds.errors import ConfigError
from rtds.logs import configure_logging
from rtds.schema import DEVICE_ID_PATTERN, is_valid_device_id
from rtds.settings import Settings, load_settings

__all__ = [
    "DetectionLabelSimulator",
    "DeviceSimulator",
    "DeviceTelemetry",
    "OfflineQueue",
    "VehicleSpeedSimulator",
    "main",
    "run",
]


def install_stop_signals(request_stop: Callable[[], None]) -> None:
    """The first SIGTERM or SIGINT asks for a clean stop; later ones are ignored.

    Ignored rather than handled: a device often gets two (Ctrl-C reaches the whole process group,
    and run_devices forwards a SIGTERM), and Python's finalisation puts handled signals back to
    their default action, so a second SIGTERM while a cleanly stopped process exits would kill
    it with -15. The clean stop is bounded (a few seconds); SIGKILL still works.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, frame: object) -> None:
        for ignored in (signal.SIGTERM, signal.SIGINT):
            signal.signal(ignored, signal.SIG_IGN)
        request_stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)


def summary_line(stats: DeviceStats) -> str:
    last = stats.next_seq - 1
    return (
        f"{stats.device_id}: stopped; generated {stats.generated} (seq up to {last}), sent {stats.sent}, "
        f"acked {stats.acked}, still queued {stats.queued}, evicted {stats.evicted}, reconnects {stats.reconnects}, "
        f"skipped slots {stats.skipped_slots}"
    )


def run(settings: Settings, device_id: str) -> int:
    """Run one device until SIGTERM/SIGINT; returns the exit code."""
    if not is_valid_device_id(device_id):
        raise ConfigError(f"device id {device_id!r} must match {DEVICE_ID_PATTERN.pattern}, e.g. vehicle_01")
    database = QueueDatabase(device_file(settings.device_queue_dir, device_id))
    try:
        queue = database.queue(device_id, settings.device_queue_max_messages)
        system_metrics = system_metrics_mode(settings, fleet=False)
        telemetry = DeviceTelemetry() if system_metrics == "host" else None
        device = DeviceSimulator(device_id, settings, queue, telemetry=telemetry)
        loop = DeviceLoop([device], database, ThreadedNetwork(settings), interval_s=settings.device_publish_interval_s)
        install_stop_signals(loop.request_stop)
        print(
            f"{device_id}: publishing every {settings.device_publish_interval_s} s to "
            f"{settings.mqtt_broker_host}:{settings.mqtt_broker_port} from seq {queue.next_seq} "
            f"({queue.size} queued in {database.path}); system readings: {system_metrics} (DEVICE_SYSTEM_METRICS)",
            flush=True,
        )
        loop.run()
        print(summary_line(device.snapshot()), flush=True)
    finally:
        database.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command_prog("device"),
        description="Run one simulated vehicle that publishes telemetry over MQTT (settings from .env / environment).",
    )
    parser.add_argument("device_id", help="the vehicle's id, e.g. vehicle_01")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        return run(settings, args.device_id)
    except ConfigError as exc:
        print(f"device_simulator: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
