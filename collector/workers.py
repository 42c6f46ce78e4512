"""`rtds collector --workers N`: N collector processes in one shared-subscription group, supervised.

One collector process is held to one core by the GIL (collector/service.py): its intake and its writer
take turns. N processes in a shared-subscription group ($share/<group>/device/#) split the
stream, each with its own persistent session (client id MQTT_CLIENT_ID-1 ... -N), and each acks only
what it stored itself. SQLite takes their transactions one after another; InfluxDB takes them at once.

The broker hands each member of the group its share even while that member is offline (its session
is persistent), so a worker that dies must come back: the supervisor restarts it, with a delay that
doubles from 1 s to 30 s while it keeps failing. A worker that exits with 2 (configuration) is not
restarted: every restart would fail the same way. SIGTERM or SIGINT reaches every worker, each writes
and acks what it holds, and the supervisor prints one summary line.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho

from collector.service import SHUTDOWN_TIMEOUT_S
from rtds import mqtt
from rtds.settings import Settings
from rtds.shutdown import StopRequest

log = logging.getLogger("collector.workers")

COLLECTOR_SCRIPT = Path(__file__).resolve().with_name("mqtt_collector.py")
DEFAULT_SHARED_GROUP = "rtds-collectors"
EXIT_CONFIG_ERROR = 2
RESTART_MIN_DELAY_S = 1.0
RESTART_MAX_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0  # a worker that ran this long starts its next restart delay from the minimum again
POLL_INTERVAL_S = 0.2
_PR_SET_PDEATHSIG = 1


def worker_client_ids(settings: Settings, count: int) -> list[str]:
    return [f"{settings.mqtt_client_id}-{number}" for number in range(1, count + 1)]


def shared_group(settings: Settings) -> str:
    return settings.collector_shared_group or DEFAULT_SHARED_GROUP


@dataclass
class Worker:
    number: int
    client_id: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    delay_s: float = RESTART_MIN_DELAY_S
    restarts: int = 0
    last_exit: int = 0


class WorkerSupervisor:
    """Start N collector processes, restart those that die, stop them all on request."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.group = shared_group(settings)
        self.workers = [
            Worker(number, client_id) for number, client_id in enumerate(worker_client_ids(settings, count), start=1)
        ]
        self._count = count
        self._stop = StopRequest()
        self._config_error = False

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; 0 when every worker stopped cleanly."""
        started = time.monotonic()
        self._stop.set_on_signals()
        log.info(
            "starting %d collector workers in shared group %r as client ids %s",
            self._count,
            self.group,
            ", ".join(worker.client_id for worker in self.workers),
        )
        for worker in self.workers:
            self._start(worker)
        while not self._stop.wait(POLL_INTERVAL_S):
            self._check_workers()
        codes = self._stop_all()
        self._stop.ignore_signals()
        restarts = sum(worker.restarts for worker in self.workers)
        log.info(
            "%d collector workers stopped after %.1f s: exit codes %s, %d restarts",
            self._count,
            time.monotonic() - started,
            codes,
            restarts,
        )
        if self._config_error:
            return EXIT_CONFIG_ERROR
        return 0 if all(code == 0 for code in codes) else 1

    def _start(self, worker: Worker) -> None:
        args = [
            sys.executable,
            str(COLLECTOR_SCRIPT),
            "--workers",
            "1",
            "--client-id",
            worker.client_id,
            "--shared-group",
            self.group,
            "--log-tag",
            f"worker {worker.number}/{self._count}",
        ]
        # Same working directory as ours: .env and relative paths (SQLITE_PATH=data/...) resolve alike.
        worker.process = subprocess.Popen(args, preexec_fn=_die_with_parent)
        worker.started_at = time.monotonic()
        worker.restart_at = None

    def _check_workers(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            process = worker.process
            if process is not None and process.poll() is not None:
                code = worker.last_exit = process.returncode
                worker.process = None
                if code == EXIT_CONFIG_ERROR:
                    log.error(
                        "collector worker %d (%s) stopped on a configuration error; stopping all workers "
                        "(fix the setting its log names above, then start again)",
                        worker.number,
                        worker.client_id,
                    )
                    self._config_error = True
                    self._stop.set()
                    return
                if now - worker.started_at >= HEALTHY_AFTER_S:
                    worker.delay_s = RESTART_MIN_DELAY_S
                worker.restart_at = now + worker.delay_s
                log.warning(
                    "collector worker %d (%s) %s; restarting it in %.0f s (the broker keeps its share of the "
                    "messages in its session until then)",
                    worker.number,
                    worker.client_id,
                    describe_exit(code),
                    worker.delay_s,
                )
                worker.delay_s = min(worker.delay_s * 2, RESTART_MAX_DELAY_S)
            elif process is None and worker.restart_at is not None and now >= worker.restart_at:
                worker.restarts += 1
                self._start(worker)

    def _stop_all(self) -> list[int]:
        """SIGTERM every running worker, wait for each to write and ack what it holds, SIGKILL stragglers."""
        running = [worker for worker in self.workers if worker.process is not None]
        for worker in running:
            assert worker.process is not None
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S + 2.0
        for worker in running:
            assert worker.process is not None
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("collector worker %d did not stop in time; killing it", worker.number)
                worker.process.kill()
                worker.process.wait()
            worker.last_exit = worker.process.returncode
        return [worker.last_exit for worker in self.workers]


def _die_with_parent() -> None:
    """In the child, before exec: have Linux send SIGTERM when the supervisor dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def forget_session(settings: Settings, client_id: str, timeout_s: float = 10.0) -> None:
    """Delete the broker's persistent session `client_id`: connect with a clean session, then disconnect.

    After a change of --workers the old client ids keep their subscriptions and go on queueing every
    message. Run this only once the new collectors are subscribed and the old one has stopped cleanly:
    what its session then holds reached the new ones too.
    """
    connected = threading.Event()
    refusal: list[str] = []

    def on_connect(
        client: paho.Client, userdata: object, flags: object, reason_code: object, properties: object
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            refusal.append(mqtt.explain_connect_failure(reason_code))
        connected.set()

    client = mqtt.make_client(settings, client_id, clean_session=True)
    client.on_connect = on_connect
    try:
        client.connect(settings.mqtt_broker_host, settings.mqtt_broker_port, keepalive=settings.mqtt_keepalive_s)
    except (OSError, ValueError) as exc:
        raise ConnectionError(mqtt.explain_connection_error(exc, settings)) from exc
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise ConnectionError(f"the broker did not answer within {timeout_s:.0f} s")
        if refusal:
            raise ConnectionError(f"the broker refused the connection: {refusal[0]}")
    finally:
        client.disconnect()
        client.loop_stop()


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def run_workers(settings: Settings, count: int) -> int:
    return WorkerSupervisor(settings, count).run()
