"""`rtds up`, the quick start's first command, from an empty folder."""

from __future__ import annotations

import http.server
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil
import pytest
from influxdb_fake import FakeInfluxDB

from rtds.broker import PROJECT_ROOT, MosquittoBroker, free_port
from rtds.testkit import wait_until

pytestmark = pytest.mark.slow

BrokerFactory = Callable[..., MosquittoBroker]


class RtdsUp:
    """`rtds up` as a child process in its own session, started in `folder`; its output is read as it comes."""

    def __init__(self, folder: Path, *args: str, **env: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rtds.cli", "up", *args],
            cwd=folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="rtds-up-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        return sum(1 for line in list(self.lines) if re.search(pattern, line))

    def wait_for(self, pattern: str, timeout_s: float, *, times: int = 1) -> None:
        wait_until(
            lambda: self.count(pattern) >= times,
            timeout_s,
            message=lambda: f"{times} line(s) matching {pattern!r}; running: {self.running()}; output:\n{self.output}",
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def exit_code(self, timeout_s: float = 60) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(10)
        return code

    def interrupt(self, timeout_s: float = 60) -> int:
        """Ctrl-C, as a terminal sends it: to the whole process group."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.exit_code(timeout_s)

    def __enter__(self) -> RtdsUp:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.running():
            # Our services run in sessions of their own: a failed test must not leave them behind.
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._reader.join(10)


def _devices_with_rows(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute("SELECT COUNT(DISTINCT device_id) FROM device_data").fetchone()[0]
    except sqlite3.Error:
        return 0


def _readme_stop_order() -> list[str]:
    match = re.search(r"Ctrl-C stops\s+everything\s+in\s+order\s+\(([^)]*)\)", (PROJECT_ROOT / "README.md").read_text())
    assert match, "README.md says in which order Ctrl-C stops the services"
    return [name.strip() for name in match.group(1).split(",")]


def test_rtds_up_stores_ten_devices_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    with RtdsUp(tmp_path, MQTT_BROKER_PORT=str(free_port()), FLASK_PORT=str(free_port())) as up:
        wait_until(
            lambda: _devices_with_rows(tmp_path / "data" / "telemetry.db") == 10,
            15,
            message=lambda: f"rows for 10 devices; rtds up running: {up.running()}",
        )
        descendants = psutil.Process(up.process.pid).children(recursive=True)
        assert any("mosquitto" in p.name() for p in descendants)
        assert up.interrupt() == 0, up.output
    assert "http://" in up.output
    still_running = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert still_running == []
    # The order README.md promises is the order announced and the order the services stop in.
    promised = _readme_stop_order()
    assert f"Ctrl-C stops everything in order ({', '.join(promised)})." in up.lines
    stopped = [line.split()[1] for line in up.lines if line.startswith("stopped ")]
    assert stopped == promised == ["devices", "collector", "dashboard", "broker"]
    # Devices stopped by Ctrl-C exited as asked: nothing to warn about.
    devices_log = (tmp_path / "data" / "logs" / "devices.log").read_text()
    assert "exited cleanly" not in devices_log
    assert "WARNING" not in devices_log and "Traceback" not in up.output


def test_rtds_up_says_once_that_the_store_is_away_and_keeps_running_until_it_is_back(tmp_path: Path) -> None:
    influxdb = FakeInfluxDB(token="t0ken", org="my-org", buckets=("vehicle-data",), port=free_port())
    away = rf"^store      cannot reach InfluxDB at {re.escape(influxdb.url)} .*; rtds up keeps running; .*INFLUXDB_URL"
    back = r"^store      answers again"
    online = r"^\[ *\d+ s\] 2/2 vehicles online"
    # Each outage lasts this long: a dozen status lines' worth, in which the store is said to be away once.
    outage_s = 3.0
    with RtdsUp(
        tmp_path,
        *("--no-dashboard", "--devices", "2", "--status-interval", "250ms"),
        MQTT_BROKER_PORT=str(free_port()),
        STORE="influxdb",
        INFLUXDB_URL=influxdb.url,
        INFLUXDB_TOKEN="t0ken",
    ) as up:
        try:
            up.wait_for(away, 30)  # no InfluxDB at start
            time.sleep(outage_s)
            assert up.running(), up.output
            influxdb.start()
            up.wait_for(back, 30)
            up.wait_for(online, 30)
            influxdb.stop()  # and now mid-run
            up.wait_for(away, 30, times=2)
            time.sleep(outage_s)
            assert up.running(), up.output
            seen_online = up.count(online)
            influxdb.start()
            up.wait_for(back, 30, times=2)
            up.wait_for(online, 30, times=seen_online + 1)
            influxdb.stop()  # and away when Ctrl-C comes
            up.wait_for(away, 30, times=3)
            assert up.interrupt() == 0, up.output
        finally:
            influxdb.stop()
    assert up.count(away) == 3, up.output
    assert up.count(back) == 2, up.output
    assert "Traceback" not in up.output
    # The collector could not write what it held at the end; said so that nobody fears it lost.
    assert up.count(r"^stopped    collector \(exit 1: it could not write everything it held, and acknowledged") == 1
    assert {point.tags["device_id"] for point in influxdb.points} == {"vehicle_01", "vehicle_02"}


def test_rtds_up_stops_at_once_when_the_broker_port_is_not_mqtt(
    tmp_path: Path, web_server: http.server.ThreadingHTTPServer
) -> None:
    port = web_server.server_address[1]
    with RtdsUp(tmp_path, MQTT_BROKER_HOST="127.0.0.1", MQTT_BROKER_PORT=str(port), FLASK_PORT=str(free_port())) as up:
        assert up.exit_code(30) == 2, up.output
    assert up.lines == [
        f"rtds up: configuration error: the service at 127.0.0.1:{port} does not speak MQTT: it answered an MQTT "
        "CONNECT with '<!DOCTYPE HTML>'; check MQTT_BROKER_HOST / MQTT_BROKER_PORT (to let rtds up start its own "
        "Mosquitto, set MQTT_BROKER_PORT to a free port)"
    ]
    assert not (tmp_path / "data" / "logs").exists()  # nothing was started


def test_rtds_up_on_a_running_broker_says_whose_limits_apply_and_how_to_get_its_own(
    tmp_path: Path, start_broker: BrokerFactory
) -> None:
    broker = start_broker()
    with RtdsUp(
        tmp_path, "--no-dashboard", "--devices", "1", MQTT_BROKER_HOST="127.0.0.1", MQTT_BROKER_PORT=str(broker.port)
    ) as up:
        up.wait_for("^Ctrl-C stops everything", 30)
        assert up.interrupt() == 0, up.output
    assert up.lines[0] == (
        f"broker     using the MQTT broker already listening at 127.0.0.1:{broker.port}: its own configuration and "
        "limits apply, not docker/mosquitto/config/mosquitto.conf's (for rtds up's own broker, set "
        f"MQTT_BROKER_PORT to a free port in .env, e.g. MQTT_BROKER_PORT={broker.port + 1})"
    )
    assert up.count("^stopped    broker") == 0  # not ours to stop


def test_rtds_up_starts_nothing_when_the_dashboard_port_is_taken(
    tmp_path: Path, web_server: http.server.ThreadingHTTPServer
) -> None:
    port = web_server.server_address[1]
    with RtdsUp(tmp_path, MQTT_BROKER_PORT=str(free_port()), FLASK_PORT=str(port)) as up:
        assert up.exit_code(30) == 2, up.output
    assert up.lines == [
        f"rtds up: configuration error: port {port} (FLASK_PORT) is taken by another program, so the dashboard "
        f"cannot listen there; choose a free port, e.g. FLASK_PORT={port + 50} in .env or the environment, or run "
        "without the dashboard: rtds up --no-dashboard"
    ]
    assert not (tmp_path / "data" / "logs").exists()  # nothing was started, so nothing was interrupted
