"""`rtds up`: the whole pipeline with one command, on the embedded defaults.

It uses a broker already listening at MQTT_BROKER_HOST:MQTT_BROKER_PORT, or starts Mosquitto with
our config (or, with --docker, docker compose), then the collector, the devices and the dashboard,
each as its own process logging to data/logs/. Ctrl-C stops them in STOP_ORDER: the devices stop
producing (their queues keep what the broker has not acknowledged), then the collector writes and
acks what it holds, then the dashboard, then the broker, which saves its sessions; nothing is left running.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from rtds import mqtt
from rtds.broker import PROJECT_ROOT, SHIPPED_CONFIG, MosquittoBroker, find_mosquitto, install_hint, port_open
from rtds.errors import ConfigError, StoreError, StoreMisconfigured
from rtds.logs import configure_logging
from rtds.settings import Settings, duration_argument, load_settings
from rtds.store import open_store
from rtds.testkit import ServiceProcess

STATUS_INTERVAL_S = 5.0
# Devices first, so nothing new arrives; the collector next, so it writes and acks what it holds; the broker
# last, so it saves the sessions with whatever the collector had not received yet.
STOP_ORDER = ("devices", "collector", "dashboard", "broker")
# What reading the store can raise while it is away: the adapters' typed errors, and SQLite's own on reads.
STORE_READ_FAILURES = (StoreError, sqlite3.Error, OSError)
COMPOSE_FILE = PROJECT_ROOT / "docker" / "docker-compose.yml"
COMPOSE_ENV = PROJECT_ROOT / "docker" / ".env"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtds up", description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "influxdb"), help="store to use (default: STORE, sqlite)")
    parser.add_argument("--devices", type=int, help="number of simulated vehicles (default: DEVICE_COUNT, 10)")
    parser.add_argument("--docker", action="store_true", help="start Mosquitto (and InfluxDB) with docker compose")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    parser.add_argument("--data-dir", default="data", help="folder for the broker's data and the logs (default: data)")
    parser.add_argument(
        "--status-interval",
        type=duration_argument,
        default=STATUS_INTERVAL_S,
        help=f"how often to print the status line (default: {STATUS_INTERVAL_S:g}s)",
    )
    return parser


class Stack:
    """The processes of one `rtds up`, started in order and stopped in STOP_ORDER."""

    def __init__(self, settings: Settings, data_dir: Path, *, docker: bool, dashboard: bool, devices: int) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.logs_dir = data_dir / "logs"
        self.docker = docker
        self.with_dashboard = dashboard
        self.device_count = devices
        self.broker: MosquittoBroker | None = None
        self.compose_started = False
        self.services: list[tuple[str, ServiceProcess]] = []

    def start(self) -> None:
        # Before anything starts: a stop half-way through start-up interrupts services that are still starting.
        if self.with_dashboard and port_open(self.settings.flask_host, self.settings.flask_port):
            raise ConfigError(
                f"port {self.settings.flask_port} (FLASK_PORT) is taken by another program, so the dashboard cannot "
                f"listen there; choose a free port, e.g. FLASK_PORT={self.settings.flask_port + 50} in .env or the "
                "environment, or run without the dashboard: rtds up --no-dashboard"
            )
        self._start_broker()
        env = {"DEVICE_COUNT": str(self.device_count)}
        self._start_service("collector", ["collector/mqtt_collector.py"], env)
        self._wait_for_subscription()
        self._start_service("devices", ["devices/run_devices.py", "--count", str(self.device_count)], env)
        if self.with_dashboard:
            self._start_service("dashboard", ["dashboard/app.py"], env)

    def _start_broker(self) -> None:
        host, port = self.settings.mqtt_broker_host, self.settings.mqtt_broker_port
        if port_open(host, port):
            problem = mqtt.diagnose_connection(self.settings)
            if problem:
                raise ConfigError(
                    f"{problem} (to let rtds up start its own Mosquitto, set MQTT_BROKER_PORT to a free port)"
                )
            print(
                f"broker     using the MQTT broker already listening at {host}:{port}: its own configuration and "
                f"limits apply, not {SHIPPED_CONFIG.relative_to(PROJECT_ROOT)}'s (for rtds up's own broker, set "
                f"MQTT_BROKER_PORT to a free port in .env, e.g. MQTT_BROKER_PORT={port + 1})"
            )
            return
        if self.docker:
            services = ["mosquitto"] + (["influxdb"] if self.settings.store == "influxdb" else [])
            if not shutil.which("docker"):
                raise ConfigError("--docker needs Docker; install Docker, or drop --docker to run a local mosquitto")
            if not COMPOSE_ENV.is_file():
                raise ConfigError(
                    f"--docker needs {COMPOSE_ENV} with the compose secrets; copy docker/.env.compose.example "
                    "to docker/.env and fill in every empty value"
                )
            # The quick start's broker is the development config (anonymous, as `rtds up` is for one machine).
            compose_env = {**os.environ, "MOSQUITTO_CONFIG": "mosquitto.conf"}
            subprocess.run(
                ["docker", "compose", "-f", str(COMPOSE_FILE), "up", "-d", "--wait", *services],
                check=True,
                env=compose_env,
            )
            self.compose_started = True
            print(
                f"broker     docker compose: {', '.join(services)} (stop with: docker compose -f {COMPOSE_FILE} down)"
            )
            return
        if host not in ("localhost", "127.0.0.1", "::1"):
            raise ConfigError(
                f"no MQTT broker answers at {host}:{port}; start it there, or set MQTT_BROKER_HOST=localhost "
                "to let rtds up start one"
            )
        try:
            find_mosquitto()
        except ConfigError:
            raise ConfigError(
                f"no MQTT broker at {host}:{port} and the 'mosquitto' program is not installed. "
                f"Install it with: {install_hint()}   (or run: rtds up --docker)"
            ) from None
        self.broker = MosquittoBroker(self.data_dir / "mosquitto", port=port).start()
        print(f"broker     mosquitto on {self.broker.host}:{port} with docker/mosquitto/config/mosquitto.conf")

    def _start_service(self, name: str, args: list[str], env: dict[str, str]) -> None:
        script = str(PROJECT_ROOT / args[0])
        service = ServiceProcess(
            [script, *args[1:]], settings=self.settings, env=env, log_path=self.logs_dir / f"{name}.log", cwd=Path.cwd()
        )
        service.start()
        self.services.append((name, service))

    def _wait_for_subscription(self, timeout_s: float = 30.0) -> None:
        """On a first run the collector's session does not exist yet: readings published before it
        subscribes would reach nobody, so the devices start only once it has subscribed."""
        collector = self.services[-1][1]
        deadline = time.monotonic() + timeout_s
        while collector.log_text().count("subscribed to") < self.settings.collector_workers:
            if not collector.running():
                raise ConfigError(f"the collector stopped at start; see {collector.log_path}")
            if time.monotonic() > deadline:
                raise ConfigError(f"the collector did not subscribe within {timeout_s:.0f} s; see {collector.log_path}")
            time.sleep(0.05)

    def crashed(self) -> list[str]:
        return [name for name, service in self.services if not service.running()]

    def started_any(self) -> bool:
        return bool(self.services) or self.broker is not None

    def stop(self) -> None:
        services = dict(self.services)
        for name in STOP_ORDER:
            if name in services:
                code = services[name].interrupt(timeout_s=30)
                note = ""
                if name == "collector" and code:
                    note = (
                        ": it could not write everything it held, and acknowledged none of that, so the broker "
                        f"keeps it for the next start; see {services[name].log_path}"
                    )
                print(f"stopped    {name} (exit {code}{note})")
        if self.broker is not None:
            self.broker.stop()
            print("stopped    broker (mosquitto)")
        if self.compose_started:
            print(f"docker services keep running; stop them with: docker compose -f {COMPOSE_FILE} down")


def _describe(settings: Settings, stack: Stack) -> None:
    store = settings.sqlite_path if settings.store == "sqlite" else settings.influxdb_url
    print(f"store      {settings.store}: {store}")
    workers = settings.collector_workers
    sessions = (
        f"{workers} workers, client ids {settings.mqtt_client_id}-1 ... -{workers}"
        if workers > 1
        else f"as {settings.mqtt_client_id!r}"
    )
    print(f"collector  subscribed {sessions}; log {stack.logs_dir / 'collector.log'}")
    print(f"devices    {stack.device_count} vehicles; log {stack.logs_dir / 'devices.log'}")
    if stack.with_dashboard:
        print(
            f"dashboard  http://{settings.flask_host}:{settings.flask_port}/ ; log {stack.logs_dir / 'dashboard.log'}"
        )
    print(f"Ctrl-C stops everything in order ({', '.join(STOP_ORDER)}).")


class StatusReport:
    """The status line, read from the store. A store that does not answer is said once when it goes away and
    once when it is back; meanwhile the collector holds the readings and retries, and so does this."""

    def __init__(self, settings: Settings, interval_s: float) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.started = time.time()
        self.away_since: float | None = None

    def lines(self) -> list[str]:
        try:
            status = self._status()
        except STORE_READ_FAILURES as exc:
            if self.away_since is not None:
                return []
            self.away_since = time.monotonic()
            return [f"store      {self._unreachable(exc)}"]
        if self.away_since is None:
            return [status]
        away_s, self.away_since = time.monotonic() - self.away_since, None
        return [f"store      answers again (it did not for {away_s:.0f} s)", status]

    def _status(self) -> str:
        store = open_store(self.settings)
        try:
            seen = store.last_seen()
            now = time.time()
            online = sum(1 for last in seen.values() if now - last <= self.settings.dashboard_offline_after_s)
            samples = store.latency_samples(now - self.interval_s, limit=1_000_000)
        finally:
            store.close()
        rate = len(samples) / self.interval_s
        elapsed_s = time.time() - self.started
        return f"[{elapsed_s:6.0f} s] {online}/{len(seen)} vehicles online, {rate:,.0f} readings/s stored"

    def _unreachable(self, exc: BaseException) -> str:
        meanwhile = "rtds up keeps running; the collector holds the readings and retries until the store is back"
        if isinstance(exc, StoreMisconfigured):
            return f"{exc}; {meanwhile}"
        if self.settings.store == "influxdb":
            check = "check INFLUXDB_URL and that InfluxDB runs there (rtds up --docker starts one)"
        else:
            check = f"check SQLITE_PATH ({self.settings.sqlite_path})"
        return f"{exc}; {meanwhile}; {check}"


def run(settings: Settings, args: argparse.Namespace) -> int:
    stack = Stack(
        settings,
        Path(args.data_dir),
        docker=args.docker,
        dashboard=not args.no_dashboard,
        devices=args.devices or settings.device_count,
    )
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    started = time.time()
    exit_code = 0
    report = StatusReport(settings, args.status_interval)
    try:
        stack.start()
        _describe(settings, stack)
        next_status = time.monotonic() + report.interval_s
        while not stopping:
            crashed = stack.crashed()
            if crashed:
                for name in crashed:
                    print(f"{name} stopped unexpectedly; last lines of its log:", file=sys.stderr)
                    log = dict(stack.services)[name].log_text().splitlines()[-15:]
                    print("\n".join(f"    {line}" for line in log), file=sys.stderr)
                exit_code = 1
                break
            if time.monotonic() >= next_status:
                for line in report.lines():
                    print(line, flush=True)
                next_status = time.monotonic() + report.interval_s
            time.sleep(0.2)
    finally:
        if stack.started_any():
            print("stopping …", flush=True)
        stack.stop()
    print(
        f"rtds up ran for {time.time() - started:.0f} s; data is in {settings.sqlite_path if settings.store == 'sqlite' else settings.influxdb_url}"
    )
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.store:
        os.environ["STORE"] = args.store
    settings = load_settings()
    configure_logging(settings.log_level)
    return run(settings, args)
