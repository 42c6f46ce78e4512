"""`rtds up`: the whole pipeline with one command, on the embedded defaults.

It uses a broker already listening at MQTT_BROKER_HOST:MQTT_BROKER_PORT, or starts Mosquitto with
our config (or, with --docker, docker compose), then the collector, the devices and the dashboard,
each as its own process logging to data/logs/. Ctrl-C stops them in reverse order, so the devices
stop producing before the collector writes what it holds, and nothing is left running.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from rtds.broker import PROJECT_ROOT, MosquittoBroker, find_mosquitto, install_hint, port_open
from rtds.errors import ConfigError
from rtds.logs import configure_logging
from rtds.settings import Settings, load_settings
from rtds.store import open_store
from rtds.testkit import ServiceProcess

STATUS_INTERVAL_S = 5.0
COMPOSE_FILE = PROJECT_ROOT / "docker" / "docker-compose.yml"
COMPOSE_ENV = PROJECT_ROOT / "docker" / ".env"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtds up", description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "influxdb"), help="store to use (default: STORE, sqlite)")
    parser.add_argument("--devices", type=int, help="number of simulated vehicles (default: DEVICE_COUNT, 10)")
    parser.add_argument("--docker", action="store_true", help="start Mosquitto (and InfluxDB) with docker compose")
    parser.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    parser.add_argument("--data-dir", default="data", help="folder for the broker's data and the logs (default: data)")
    return parser


class Stack:
    """The processes of one `rtds up`, started in order and stopped in reverse."""

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
        self._start_broker()
        env = {"DEVICE_COUNT": str(self.device_count)}
        self._start_service("collector", ["collector/mqtt_collector.py"], env)
        self._wait_for_subscription()
        self._start_service("devices", ["devices/run_devices.py", "--count", str(self.device_count)], env)
        if self.with_dashboard:
            if port_open(self.settings.flask_host, self.settings.flask_port):
                raise ConfigError(
                    f"port {self.settings.flask_port} is already in use; set FLASK_PORT to a free port or use --no-dashboard"
                )
            self._start_service("dashboard", ["dashboard/app.py"], env)

    def _start_broker(self) -> None:
        host, port = self.settings.mqtt_broker_host, self.settings.mqtt_broker_port
        if port_open(host, port):
            print(f"broker     using the MQTT broker already listening at {host}:{port} (its own config applies)")
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

    def stop(self) -> None:
        for name, service in reversed(self.services):
            code = service.interrupt(timeout_s=30)
            print(f"stopped    {name} (exit {code})")
        if self.broker is not None:
            self.broker.stop()
            print("stopped    mosquitto")
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
    print("Ctrl-C stops everything.")


def _status_line(settings: Settings, started: float) -> str:
    store = open_store(settings)
    try:
        seen = store.last_seen()
        now = time.time()
        online = sum(1 for last in seen.values() if now - last <= settings.dashboard_offline_after_s)
        samples = store.latency_samples(now - STATUS_INTERVAL_S, limit=1_000_000)
    finally:
        store.close()
    rate = len(samples) / STATUS_INTERVAL_S
    return f"[{time.time() - started:6.0f} s] {online}/{len(seen)} vehicles online, {rate:,.0f} readings/s stored"


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
    try:
        stack.start()
        _describe(settings, stack)
        next_status = time.monotonic() + STATUS_INTERVAL_S
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
                print(_status_line(settings, started), flush=True)
                next_status += STATUS_INTERVAL_S
            time.sleep(0.2)
    finally:
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
