"""Health checks against a real broker, store and dashboard, and the one-line reason when each is down."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dashboard_fixtures import start_dashboard
from influxdb_fake import FakeInfluxDB
from werkzeug.security import generate_password_hash

from monitoring import health_checks
from rtds.broker import CONFIG_DIR, PROJECT_ROOT, MosquittoBroker, free_port
from rtds.schema import TelemetryRecord
from rtds.settings import Settings
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, settings_env, wait_until

BrokerFactory = Callable[..., MosquittoBroker]
SECURE_CONFIG = CONFIG_DIR / "mosquitto.secure.conf"
MAKE_CERTS = PROJECT_ROOT / "docker" / "mosquitto" / "make_dev_certs.py"
ADD_DEVICE = PROJECT_ROOT / "docker" / "mosquitto" / "add_device.py"


def use(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)


def check(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    code = health_checks.main([*args, "--json", "--timeout", "5s"])
    return code, json.loads(capsys.readouterr().out)


def one_line_failure(args: list[str], capsys: pytest.CaptureFixture[str], timeout: str = "3s") -> str:
    capsys.readouterr()
    assert health_checks.main([*args, "--timeout", timeout]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def with_a_point(settings: Settings) -> Settings:
    store = SQLiteStore(settings.sqlite_path)
    store.write(
        [TelemetryRecord("vehicle_01", time.time() - 1, 42.0, seq=0)], collector="python", write_time=time.time()
    )
    store.close()
    return settings


def test_a_healthy_stack_passes_every_check(
    settings: Settings,
    spawn: Callable[..., ServiceProcess],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dashboard = start_dashboard(spawn, with_a_point(settings))
    checked = settings.with_overrides(flask_host="127.0.0.1", flask_port=dashboard.port)
    use(monkeypatch, checked)
    code, result = check(["all"], capsys)
    assert code == 0 and result["ok"], result
    mqtt, store, socket = result["checks"]
    assert mqtt["component"] == "mqtt" and mqtt["topic"].startswith("rtds/health/")
    assert store["backend"] == "sqlite" and store["newest_point_age_s"] < 60
    assert socket["devices"] == 1 and socket["store_ok"] is True
    # The socket check leaves nothing in the dashboard's log that looks like a fault.
    assert werkzeug_errors_before_a_marker(dashboard.process, dashboard.port) == []

    # The seed's script name, as a real process, prints one OK line.
    completed = subprocess.run(
        [sys.executable, "monitoring/check_mqtt_connection.py"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings_env(checked)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("mqtt: OK: connected to 127.0.0.1:")


def werkzeug_errors_before_a_marker(dashboard: ServiceProcess, port: int) -> list[str]:
    """The dashboard's Werkzeug ERROR lines up to one provoked here: a request line that is no HTTP, sent after
    whatever came before it. Werkzeug logs no successful request, so a bad one is the only line to wait for."""
    marker = f"marker-{time.monotonic_ns()}"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as probe:
        probe.sendall(f"{marker}\r\n\r\n".encode())
        probe.recv(1024)
    wait_until(lambda: marker in dashboard.log_text(), 10, message=lambda: dashboard.log_text()[-2000:])
    before = dashboard.log_text().split(marker)[0].splitlines()[:-1]
    return [line for line in before if "ERROR" in line and "werkzeug" in line]


def test_each_check_fails_with_a_clear_reason_when_its_component_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], settings: Settings
) -> None:
    nothing = free_port()
    down = settings.with_overrides(
        mqtt_broker_port=nothing, sqlite_path=str(tmp_path / "absent.db"), flask_host="127.0.0.1", flask_port=nothing
    )
    use(monkeypatch, down)
    assert one_line_failure(["mqtt"], capsys) == (
        f"mqtt: FAILED: cannot connect to the MQTT broker at 127.0.0.1:{nothing}: connection refused; "
        "is Mosquitto running there? (MQTT_BROKER_HOST / MQTT_BROKER_PORT)"
    )
    assert one_line_failure(["store"], capsys) == (
        f"store: FAILED: the SQLite file {tmp_path / 'absent.db'} does not exist; "
        "start the collector (it creates it) or fix SQLITE_PATH"
    )
    assert not (tmp_path / "absent.db").exists()  # checking did not create it
    assert one_line_failure(["socket"], capsys) == (
        f"socket: FAILED: cannot connect to the dashboard at http://127.0.0.1:{nothing}: connection refused; "
        "is `rtds dashboard` running there? (FLASK_HOST / FLASK_PORT, or --url)"
    )


def test_mqtt_check_names_a_service_that_does_not_speak_mqtt(
    web_server: http.server.ThreadingHTTPServer,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = web_server.server_address[1]
    use(monkeypatch, settings.with_overrides(mqtt_broker_host="127.0.0.1", mqtt_broker_port=port))
    assert one_line_failure(["mqtt"], capsys) == (
        f"mqtt: FAILED: the service at 127.0.0.1:{port} does not speak MQTT: it answered an MQTT CONNECT with "
        "'<!DOCTYPE HTML>'; check MQTT_BROKER_HOST / MQTT_BROKER_PORT"
    )


def test_mqtt_check_explains_a_refused_login(
    start_broker: BrokerFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = start_broker(name="closed", extra_lines=("allow_anonymous false",))
    use(monkeypatch, settings.with_overrides(mqtt_broker_port=closed.port))
    assert one_line_failure(["mqtt"], capsys) == (
        f"mqtt: FAILED: the broker at 127.0.0.1:{closed.port} refused the connection: "
        "not authorised (check MQTT_USERNAME / MQTT_PASSWORD and the broker's ACL)"
    )


def test_store_check_uses_the_influxdb_fallback_and_fails_when_both_are_down(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with FakeInfluxDB(token="t0ken", org="my-org", buckets=("vehicle-data",)) as fake:
        influx = settings.with_overrides(
            store="influxdb", influxdb_url=dead, influxdb_url_fallback=fake.url, influxdb_token="t0ken"
        )
        use(monkeypatch, influx)
        code, result = check(["store"], capsys)
        assert code == 0, result
        [store] = result["checks"]
        assert store["using_fallback"] is True and store["url"] == fake.url
        assert f"the primary {dead} is not answering" in store["detail"]
    line = one_line_failure(["store"], capsys)
    assert line.startswith("store: FAILED: influxdb: ")
    assert line.endswith("check INFLUXDB_URL, INFLUXDB_URL_FALLBACK, INFLUXDB_TOKEN and that InfluxDB is running")


def test_socket_check_signs_in_when_the_dashboard_has_a_login(
    settings: Settings,
    spawn: Callable[..., ServiceProcess],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secured = with_a_point(settings).with_overrides(
        dashboard_username="operator",
        dashboard_password_hash=generate_password_hash("a long enough password", method="pbkdf2:sha256:1000"),
        flask_secret_key="health-check-secret-0123456789",
    )
    dashboard = start_dashboard(spawn, secured)
    use(monkeypatch, secured.with_overrides(flask_host="127.0.0.1", flask_port=dashboard.port))
    assert one_line_failure(["socket"], capsys) == (
        f"socket: FAILED: the dashboard at {dashboard.url} refused the Socket.IO connection: "
        "login required; sign in at /login; pass --username and --password"
    )
    code, result = check(["socket", "--password", "a long enough password"], capsys)
    assert code == 0 and result["checks"][0]["devices"] == 1
    line = one_line_failure(["socket", "--password", "wrong password"], capsys)
    assert line.startswith(f"socket: FAILED: signing in to {dashboard.url} as 'operator' failed")
    assert line.endswith("check the user name and password")


def test_mqtt_check_over_tls_names_certificate_and_acl_problems(
    start_broker: BrokerFactory,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config_dir = tmp_path / "secure"
    config_dir.mkdir()
    shipped_acl = (CONFIG_DIR / "acl").read_text()
    assert "pattern readwrite rtds/health/%u/#" in shipped_acl
    (config_dir / "acl").write_text(shipped_acl.replace("pattern readwrite rtds/health/%u/#", ""))
    for script, *args in (
        (MAKE_CERTS, "--out", config_dir / "certs", "vehicle_01"),
        (MAKE_CERTS, "--out", tmp_path / "rogue", "vehicle_01"),
        (ADD_DEVICE, "vehicle_01", "--password-file", config_dir / "passwd"),
        (ADD_DEVICE, "dashboard", "--password-file", config_dir / "passwd"),
    ):
        subprocess.run(
            [sys.executable, str(script), *map(str, args)], cwd=PROJECT_ROOT, check=True, capture_output=True
        )
    tls_port = free_port()
    start_broker(SECURE_CONFIG, name="secure", extra_ports={8883: tls_port}, config_dir=config_dir)
    device = settings.with_overrides(
        mqtt_broker_host="localhost",
        mqtt_broker_port=tls_port,
        mqtt_use_tls=True,
        mqtt_ca_certs=str(config_dir / "certs" / "ca.crt"),
        mqtt_certfile=str(config_dir / "certs" / "clients" / "vehicle_01.crt"),
        mqtt_keyfile=str(config_dir / "certs" / "clients" / "vehicle_01.key"),
        mqtt_username="vehicle_01",  # as add_device.py prints it; the broker takes it from the certificate
    )
    # Connected over TLS with its certificate, but without the health grant a device reads nothing.
    use(monkeypatch, device)
    line = one_line_failure(["mqtt"], capsys, timeout="1s")
    assert line.startswith(
        f"mqtt: FAILED: connected to localhost:{tls_port} but the test message on rtds/health/vehicle_01/"
    )
    assert line.endswith(
        "(the broker's ACL may deny it: grant it with `pattern readwrite rtds/health/%u/#`; or the broker is overloaded)"
    )
    # A CA the client does not trust for this broker.
    use(monkeypatch, device.with_overrides(mqtt_ca_certs=str(tmp_path / "rogue" / "ca.crt")))
    line = one_line_failure(["mqtt"], capsys)
    assert line.startswith(f"mqtt: FAILED: the broker's TLS certificate at localhost:{tls_port} was not accepted")
    assert line.endswith("check MQTT_CA_CERTS")
    # With the grant the message names (as the shipped ACL has it), the check passes over TLS.
    with (config_dir / "acl").open("a") as acl:
        acl.write("\npattern readwrite rtds/health/%u/#\n")
    granted_port = free_port()
    start_broker(SECURE_CONFIG, name="granted", extra_ports={8883: granted_port}, config_dir=config_dir)
    use(monkeypatch, device.with_overrides(mqtt_broker_port=granted_port))
    code, result = check(["mqtt"], capsys)
    assert code == 0 and result["checks"][0]["tls"] is True, result
