"""Run a fleet of simulated vehicles: `python devices/run_devices.py --count 10` or `rtds devices`.

By default each device is its own process (`devices/device_simulator.py <id>`), as in the seed.
A device that crashes is restarted with exponential backoff (1 s doubling to 30 s, back to 1 s
after a minute of healthy running); a device that exits 0 stopped on purpose and stays stopped.
Every DEVICE_STATUS_INTERVAL_S a table shows each device's state, sent, acked, queued, evicted
and reconnects, read from the queue files' `device_stats`. SIGTERM or Ctrl-C stops every
device cleanly and prints a summary.

`--in-process` runs up to 1,000 devices in this one process instead (devices/fleet.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from devices.device_simulator import install_stop_signals
from devices.offline_queue import read_stats
from devices.telemetry import system_metrics_mode
from rtds.cli import command_prog
from rtds.errors import ConfigError
from rtds.logs import configure_logging
from rtds.schema import is_valid_device_id
from rtds.settings import Settings, load_settings

log = logging.getLogger(__name__)

DEVICE_SCRIPT = Path(__file__).resolve().parent / "device_simulator.py"
RESTART_MIN_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0  # a child that ran this long starts its backoff over
STOP_TIMEOUT_S = 15.0
POLL_INTERVAL_S = 0.2
DETAILED_TABLE_MAX_ROWS = 50
COUNTERS = ("generated", "sent", "acked", "queued", "evicted", "reconnects")
TABLE_WIDTH_WHEN_PIPED = 130


def device_ids(prefix: str, count: int) -> list[str]:
    """vehicle_01 ... vehicle_10; wider numbers when the fleet needs them (vehicle_0001 ... vehicle_1000)."""
    width = max(2, len(str(count)))
    ids = [f"{prefix}{number:0{width}d}" for number in range(1, count + 1)]
    bad = [device_id for device_id in ids if not is_valid_device_id(device_id)]
    if bad:
        raise ConfigError(
            f"--prefix {prefix!r} makes invalid device ids such as {bad[0]!r}; use letters, digits, _ . -"
        )
    return ids


@dataclass
class DeviceProcess:
    """One child process and its restart bookkeeping."""

    device_id: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay_s: float = 0.0
    restart_at: float | None = None
    exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Starts one process per device, restarts crashed ones, prints the status table."""

    def __init__(self, settings: Settings, ids: list[str], *, console: Console | None = None) -> None:
        self.settings = settings
        self.children = [DeviceProcess(device_id) for device_id in ids]
        self.console = console or Console()
        self._stop_requested = False
        self.system_metrics = system_metrics_mode(settings, fleet=True)
        # A device process alone would report the host's readings under auto; in a fleet it simulates its own.
        self._child_env = {**os.environ, "DEVICE_SYSTEM_METRICS": self.system_metrics}

    def request_stop(self) -> None:
        """Called from the signal handler: a plain flag, no locks (an Event could deadlock there)."""
        self._stop_requested = True

    def run(self) -> int:
        for child in self.children:
            self._spawn(child)
        self.console.print(
            f"started {len(self.children)} devices ({self.children[0].device_id} ... {self.children[-1].device_id}), "
            f"one process each, system readings: {self.system_metrics} (DEVICE_SYSTEM_METRICS); "
            f"status every {self.settings.device_status_interval_s:g} s, Ctrl-C to stop"
        )
        next_status = time.monotonic() + self.settings.device_status_interval_s
        while not self._stop_requested:
            time.sleep(POLL_INTERVAL_S)
            if self._stop_requested:
                # Ctrl-C reaches the devices too (one process group): their clean exits are no news.
                break
            now = time.monotonic()
            for child in self.children:
                self._watch(child, now)
            if now >= next_status:
                self.console.print(self.status_table())
                next_status = now + self.settings.device_status_interval_s
        self._stop_children()
        self.console.print(self.status_table(title="final status"))
        self.console.print(self.summary())
        return 0

    def _spawn(self, child: DeviceProcess) -> None:
        # Same process group: Ctrl-C in a terminal reaches the devices too, and they stop cleanly.
        child.process = subprocess.Popen(
            [sys.executable, str(DEVICE_SCRIPT), child.device_id], stdout=subprocess.DEVNULL, env=self._child_env
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        child.exit_code = None

    def _watch(self, child: DeviceProcess, now: float) -> None:
        if child.restart_at is not None:
            if now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)
            return
        if child.process is None or child.process.poll() is None or child.exit_code is not None:
            return
        child.exit_code = child.process.returncode
        if child.exit_code == 0:
            log.warning("%s exited cleanly (code 0); not restarting it", child.device_id)
            return
        if now - child.started_at >= HEALTHY_AFTER_S:
            child.delay_s = 0.0
        child.delay_s = RESTART_MIN_DELAY_S if not child.delay_s else min(child.delay_s * 2, RESTART_MAX_DELAY_S)
        child.restart_at = now + child.delay_s
        log.warning(
            "%s (pid %s) died with code %s; restarting in %.0f s",
            child.device_id,
            child.pid,
            child.exit_code,
            child.delay_s,
        )

    def _stop_children(self) -> None:
        for child in self.children:
            child.restart_at = None
            if child.running and child.process is not None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", child.device_id, STOP_TIMEOUT_S)
                child.process.kill()
                child.process.wait()
            child.exit_code = child.process.returncode

    def _state(self, child: DeviceProcess, stats: dict[str, Any] | None) -> str:
        if child.restart_at is not None:
            return f"restarting in {max(0.0, child.restart_at - time.monotonic()):.0f} s"
        if not child.running:
            return "stopped" if child.exit_code == 0 else f"exited ({child.exit_code})"
        return str(stats["state"]) if stats else "starting"

    def status_table(self, title: str = "devices") -> Table:
        all_stats = read_stats(self.settings.device_queue_dir)
        table = Table(title=f"{title} at {time.strftime('%H:%M:%S')}")
        for column in ("device", "pid", "state", *COUNTERS, "restarts"):
            table.add_column(column, justify="left" if column in ("device", "state") else "right")
        for child in self.children:
            stats = all_stats.get(child.device_id)
            counters = [str(stats[name]) if stats else "-" for name in COUNTERS]
            table.add_row(
                child.device_id, str(child.pid or "-"), self._state(child, stats), *counters, str(child.restarts)
            )
        return table

    def summary(self) -> str:
        all_stats = read_stats(self.settings.device_queue_dir)
        totals = {
            name: sum(int(all_stats[c.device_id][name]) for c in self.children if c.device_id in all_stats)
            for name in COUNTERS
        }
        restarts = sum(child.restarts for child in self.children)
        clean = sum(1 for child in self.children if child.exit_code == 0)
        return (
            f"stopped {len(self.children)} devices ({clean} cleanly): generated {totals['generated']}, sent {totals['sent']}, "
            f"acked {totals['acked']}, still queued {totals['queued']}, evicted {totals['evicted']}, "
            f"reconnects {totals['reconnects']}, restarts {restarts}"
        )


def fleet_table(stats: list[dict[str, Any]], title: str) -> Table:
    """Per device for a small fleet; per state (with totals) for a large one."""
    table = Table(title=f"{title} at {time.strftime('%H:%M:%S')}")
    if len(stats) <= DETAILED_TABLE_MAX_ROWS:
        for column in ("device", "state", *COUNTERS):
            table.add_column(column, justify="left" if column in ("device", "state") else "right")
        for entry in stats:
            table.add_row(entry["device_id"], entry["state"], *(str(entry[name]) for name in COUNTERS))
        return table
    for column in ("state", "devices", *COUNTERS):
        table.add_column(column, justify="left" if column == "state" else "right")
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in stats:
        groups.setdefault(entry["state"], []).append(entry)
    for state, entries in sorted(groups.items()):
        table.add_row(state, str(len(entries)), *(str(sum(int(e[name]) for e in entries)) for name in COUNTERS))
    table.add_row("all", str(len(stats)), *(str(sum(int(e[name]) for e in stats)) for name in COUNTERS))
    return table


def run_in_process(settings: Settings, ids: list[str], console: Console) -> int:
    from devices.fleet import Fleet

    fleet = Fleet(settings, ids)
    install_stop_signals(fleet.request_stop)
    console.print(
        f"started {len(ids)} devices in this process ({ids[0]} ... {ids[-1]}), queue {fleet.database.path}, "
        f"system readings: {fleet.system_metrics}; status every {settings.device_status_interval_s:g} s, Ctrl-C to stop"
    )
    outcome: list[BaseException] = []

    def drive() -> None:
        try:
            fleet.run()
        except BaseException as exc:
            outcome.append(exc)
            raise

    thread = threading.Thread(target=drive, name="fleet")
    thread.start()
    while thread.is_alive():
        thread.join(settings.device_status_interval_s)
        if thread.is_alive():
            current = read_stats(settings.device_queue_dir)
            console.print(fleet_table([current[i] for i in ids if i in current], "fleet"))
    if outcome:
        raise outcome[0]
    final = [device.snapshot() for device in fleet.devices]
    rows = [{name: getattr(s, name) for name in ("device_id", "state", *COUNTERS)} for s in final]
    console.print(fleet_table(rows, "final status"))
    console.print(
        f"stopped {len(ids)} devices: "
        + ", ".join(f"{name} {sum(int(row[name]) for row in rows)}" for name in COUNTERS)
    )
    return 0


def run(settings: Settings, *, count: int, prefix: str, in_process: bool) -> int:
    ids = device_ids(prefix, count)
    console = Console()
    if not console.is_terminal:
        console = Console(width=TABLE_WIDTH_WHEN_PIPED)
    if in_process:
        return run_in_process(settings, ids, console)
    supervisor = Supervisor(settings, ids, console=console)
    install_stop_signals(supervisor.request_stop)
    return supervisor.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=command_prog("devices"), description="Run a fleet of simulated vehicles.")
    parser.add_argument("--count", type=int, help="how many devices (default DEVICE_COUNT, 10)")
    parser.add_argument("--prefix", help="device id prefix (default DEVICE_PREFIX, vehicle_)")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every device in this process (up to 1,000) instead of one process each",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        count = settings.device_count if args.count is None else args.count
        if count < 1:
            raise ConfigError(f"--count {count} must be 1 or more")
        prefix = settings.device_prefix if args.prefix is None else args.prefix
        return run(settings, count=count, prefix=prefix, in_process=args.in_process)
    except ConfigError as exc:
        print(f"run_devices: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
