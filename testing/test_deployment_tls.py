"""The production broker config (mosquitto.secure.conf + acl) under real mosquitto processes.

Certificates come from docker/mosquitto/make_dev_certs.py and users from add_device.py, run as a
user would run them; the broker starts from the shipped secure config with its paths moved to a
temporary copy of the config folder. The end-to-end tests run the real device simulator and
collector (the collector through its own MQTT session, collector/intake.py, with the same TLS and
login settings); the others connect through rtds.mqtt.make_client, as the devices do.
"""

from __future__ import annotations

import gc
import logging
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from rtds import mqtt
from rtds.broker import CONFIG_DIR, PROJECT_ROOT, MosquittoBroker, free_port
from rtds.schema import TelemetryRecord, data_topic, encode_payload, status_topic
from rtds.settings import Settings, load_settings
from rtds.testkit import ServiceProcess, Witness, isolated_settings, wait_until

SECURE_CONFIG = CONFIG_DIR / "mosquitto.secure.conf"
MAKE_CERTS = PROJECT_ROOT / "docker" / "mosquitto" / "make_dev_certs.py"
ADD_DEVICE = PROJECT_ROOT / "docker" / "mosquitto" / "add_device.py"
DEVICES = ("vehicle_01", "vehicle_02")
SERVICES = ("collector", "dashboard")
TLS_PORT = 8883
CONNECT_TIMEOUT_S = 5.0
STORE_TIMEOUT_S = 15.0

BrokerFactory = Callable[..., MosquittoBroker]


@dataclass(frozen=True)
class SecureSetup:
    """A config folder as DEPLOYMENT.md builds it: certificates, password file and the shipped ACL."""

    config_dir: Path
    rogue_dir: Path
    passwords: dict[str, str]

    @property
    def certs(self) -> Path:
        return self.config_dir / "certs"

    def client_cert(self, name: str, *, rogue: bool = False) -> tuple[str, str]:
        folder = (self.rogue_dir if rogue else self.certs) / "clients"
        return str(folder / f"{name}.crt"), str(folder / f"{name}.key")


def run_script(*args: str | Path) -> str:
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{args} failed: {result.stdout}{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def secure_setup(tmp_path_factory: pytest.TempPathFactory) -> SecureSetup:
    root = tmp_path_factory.mktemp("secure")
    config_dir = root / "config"
    config_dir.mkdir()
    shutil.copy(CONFIG_DIR / "acl", config_dir / "acl")
    output = run_script(MAKE_CERTS, "--out", config_dir / "certs", "vehicle_01", "vehicle_02")
    assert "DEVELOPMENT CERTIFICATES ONLY" in output
    # Another CA, which the broker does not trust, issuing a certificate with the same device name.
    run_script(MAKE_CERTS, "--out", root / "rogue", "vehicle_01")
    passwords = {user: secrets.token_urlsafe(16) for user in SERVICES}
    for user, password in passwords.items():
        run_script(ADD_DEVICE, user, "--password", password, "--password-file", config_dir / "passwd")
    for device in DEVICES:  # devices get no password: their certificate is their login
        run_script(ADD_DEVICE, device, "--password-file", config_dir / "passwd", "--certs-dir", config_dir / "certs")
    return SecureSetup(config_dir, root / "rogue", passwords)


@pytest.fixture
def secure_broker(start_broker: BrokerFactory, secure_setup: SecureSetup) -> MosquittoBroker:
    return start_broker(
        SECURE_CONFIG, name="secure", extra_ports={TLS_PORT: free_port()}, config_dir=secure_setup.config_dir
    )


def base_settings(tmp_path: Path) -> Settings:
    return isolated_settings(tmp_path, collector_summary_interval_s=5.0)


def device_settings(
    tmp_path: Path, broker: MosquittoBroker, setup: SecureSetup, name: str, **overrides: Any
) -> Settings:
    """A device as add_device.py prints it: TLS to localhost with its certificate and no password."""
    certfile, keyfile = setup.client_cert(name)
    values: dict[str, Any] = {
        "mqtt_broker_host": "localhost",
        "mqtt_broker_port": broker.ports[TLS_PORT],
        "mqtt_use_tls": True,
        "mqtt_ca_certs": str(setup.certs / "ca.crt"),
        "mqtt_certfile": certfile,
        "mqtt_keyfile": keyfile,
        "mqtt_username": name,
        "mqtt_client_id": f"device_{name}",
    }
    values.update(overrides)
    return base_settings(tmp_path).with_overrides(**values)


def service_settings(tmp_path: Path, broker: MosquittoBroker, setup: SecureSetup, user: str) -> Settings:
    """A service on the broker's host: the plain listener (127.0.0.1 only), with its password."""
    return base_settings(tmp_path).with_overrides(
        mqtt_broker_host=broker.host,
        mqtt_broker_port=broker.port,
        mqtt_username=user,
        mqtt_password=setup.passwords[user],
        mqtt_client_id=f"{user}-{tmp_path.name}",
    )


@dataclass
class ConnectOutcome:
    connected: bool
    reason: str


def try_connect(settings: Settings) -> ConnectOutcome:
    """Connect once, as a device would, and report whether the broker let it in and, if not, why."""
    client = mqtt.make_client(settings, settings.mqtt_client_id, clean_session=True)
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger(f"test.paho.{secrets.token_hex(4)}")
    logger.propagate = False
    logger.addHandler(Collect())
    logger.setLevel(logging.DEBUG)
    client.enable_logger(logger)
    outcome: dict[str, Any] = {}
    client.on_connect = lambda c, u, flags, reason_code, props: outcome.setdefault("connack", reason_code)
    client.on_disconnect = lambda c, u, flags, reason_code, props: outcome.setdefault("disconnect", reason_code)
    handshake_error = ""
    # paho leaves the TLS socket of a failed handshake to the garbage collector, which warns about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client.connect(settings.mqtt_broker_host, settings.mqtt_broker_port)
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while not outcome and time.monotonic() < deadline:
                client.loop(0.05)
        except OSError as exc:  # ssl.SSLError is an OSError
            handshake_error = str(exc)
        finally:
            client.disconnect()
            sock = client.socket()
            if sock is not None:
                sock.close()
        gc.collect()
    if handshake_error:
        return ConnectOutcome(False, handshake_error)
    connack = outcome.get("connack")
    if connack is not None and not connack.is_failure:
        return ConnectOutcome(True, "connected")
    if connack is not None:
        return ConnectOutcome(False, mqtt.explain_connect_failure(connack))
    errors = [text for text in messages if "fail" in text or "error" in text.lower()]
    return ConnectOutcome(False, "; ".join(errors) or f"no CONNACK: {outcome}")


def connected_client(settings: Settings) -> paho.Client:
    client = mqtt.make_client(settings, settings.mqtt_client_id, clean_session=True)
    client.connect(settings.mqtt_broker_host, settings.mqtt_broker_port)
    client.loop_start()
    wait_until(client.is_connected, CONNECT_TIMEOUT_S, message=f"{settings.mqtt_username} connects")
    return client


def publish(client: paho.Client, topic: str, payload: bytes) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(CONNECT_TIMEOUT_S)


def reading(device_id: str, seq: int) -> bytes:
    return encode_payload(TelemetryRecord(device_id=device_id, timestamp=time.time(), speed=42.0 + seq, seq=seq))


def stored_rows(database: Path) -> set[tuple[str, int]]:
    """(device_id, seq) of every stored row; empty until the collector has created its table."""
    if not database.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            return {(row[0], row[1]) for row in connection.execute("SELECT device_id, seq FROM device_data")}
    except sqlite3.OperationalError:
        return set()


def start_collector(spawn: Callable[..., ServiceProcess], settings: Settings) -> ServiceProcess:
    return spawn("collector/mqtt_collector.py", settings=settings, name="collector")


def store_a_tls_device(
    tmp_path: Path,
    broker: MosquittoBroker,
    setup: SecureSetup,
    spawn: Callable[..., ServiceProcess],
    collector: ServiceProcess,
    collector_settings: Settings,
    *,
    rows: int,
) -> ServiceProcess:
    """Start the real simulator as vehicle_01 over TLS and wait until the collector stored `rows` of its readings."""
    device_config = device_settings(tmp_path, broker, setup, "vehicle_01")
    device = spawn("devices/device_simulator.py", "vehicle_01", settings=device_config, name="vehicle_01")
    database = Path(collector_settings.sqlite_path)
    wait_until(
        lambda: len(stored_rows(database)) >= rows,
        STORE_TIMEOUT_S,
        message=lambda: f"device:\n{device.log_text()[-1500:]}\ncollector:\n{collector.log_text()[-1500:]}",
    )
    assert {device_id for device_id, _ in stored_rows(database)} == {"vehicle_01"}
    return device


def test_a_device_with_valid_tls_and_credentials_is_stored_end_to_end(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup, spawn: Callable[..., ServiceProcess]
) -> None:
    """The real device simulator over TLS (its certificate) -> broker -> the real collector -> SQLite."""
    collector_settings = service_settings(tmp_path, secure_broker, secure_setup, "collector")
    collector = start_collector(spawn, collector_settings)
    device = store_a_tls_device(tmp_path, secure_broker, secure_setup, spawn, collector, collector_settings, rows=3)
    assert device.running() and collector.running()
    log_text = secure_broker.log_text()
    assert f"on port {secure_broker.ports[TLS_PORT]}." in log_text
    assert "u'vehicle_01'" in log_text
    assert "Denied PUBLISH" not in log_text


def test_collector_workers_in_a_shared_group_pass_the_acl_and_store_a_tls_device(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup, spawn: Callable[..., ServiceProcess]
) -> None:
    """`--workers 2` subscribes to $share/<group>/device/# as user `collector`: the ACL on device/# must let
    both workers in, and their shared-subscription probe on rtds/health/collector/ must come back."""
    collector_settings = service_settings(tmp_path, secure_broker, secure_setup, "collector").with_overrides(
        collector_workers=2
    )
    collector = start_collector(spawn, collector_settings)
    wait_until(
        lambda: collector.log_text().count("subscribed to $share/rtds-collectors/device/#") == 2,
        STORE_TIMEOUT_S,
        message=lambda: collector.log_text()[-3000:],
    )
    store_a_tls_device(tmp_path, secure_broker, secure_setup, spawn, collector, collector_settings, rows=6)
    assert "refused" not in collector.log_text()
    assert "Denied" not in secure_broker.log_text()


def test_the_settings_add_device_prints_let_the_device_in_and_give_it_no_password(
    tmp_path: Path, start_broker: BrokerFactory, secure_setup: SecureSetup
) -> None:
    config_dir = tmp_path / "config"
    shutil.copytree(secure_setup.config_dir, config_dir)
    password_file = config_dir / "passwd"
    # A password left from an earlier setup, where devices had one, is removed.
    run_script(ADD_DEVICE, "vehicle_01", "--password-login", "--password-file", password_file)
    assert "vehicle_01:" in password_file.read_text()
    printed = run_script(
        ADD_DEVICE, "vehicle_01", "--password-file", password_file, "--certs-dir", config_dir / "certs"
    )
    assert "vehicle_01:" not in password_file.read_text() and "removed 'vehicle_01'" in printed
    assert password_file.stat().st_mode & 0o777 == 0o640
    env_file = tmp_path / "device.env"
    env_file.write_text(printed)
    broker = start_broker(SECURE_CONFIG, name="printed", extra_ports={TLS_PORT: free_port()}, config_dir=config_dir)
    settings = load_settings(env_file=env_file, environ={"MQTT_BROKER_PORT": str(broker.ports[TLS_PORT])})
    assert settings.mqtt_use_tls and not settings.mqtt_tls_insecure
    assert not settings.mqtt_password
    assert try_connect(settings.with_overrides(mqtt_client_id="printed")).connected
    refused = run_script_failing(ADD_DEVICE, "vehicle_02", "--password", "x", "--password-file", password_file)
    assert "logs in with its certificate" in refused


def run_script_failing(*args: str | Path) -> str:
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0, f"{args} succeeded: {result.stdout}"
    return result.stdout + result.stderr


def test_a_wrong_password_is_refused_and_the_error_says_so(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    settings = service_settings(tmp_path, secure_broker, secure_setup, "dashboard").with_overrides(mqtt_password="no")
    outcome = try_connect(settings)
    assert not outcome.connected
    assert "MQTT_USERNAME / MQTT_PASSWORD" in outcome.reason
    assert "disconnected, not authorised" in secure_broker.log_text()


def test_a_collector_with_a_wrong_password_keeps_retrying_and_says_which_setting_to_fix(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup, spawn: Callable[..., ServiceProcess]
) -> None:
    settings = service_settings(tmp_path, secure_broker, secure_setup, "collector").with_overrides(
        mqtt_password="wrong"
    )
    collector = start_collector(spawn, settings)
    refusal = "the broker refused the connection: "
    wait_until(lambda: collector.log_text().count(refusal) >= 2, 15, message=collector.log_text)
    assert "check MQTT_USERNAME / MQTT_PASSWORD" in collector.log_text()
    assert collector.running()


def test_a_device_without_a_client_certificate_is_refused_and_the_broker_says_why(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    settings = device_settings(tmp_path, secure_broker, secure_setup, "vehicle_01", mqtt_certfile="", mqtt_keyfile="")
    outcome = try_connect(settings)
    assert not outcome.connected, outcome
    # The client only sees the connection close during the handshake; the broker's log names the cause.
    wait_until(
        lambda: "peer did not return a certificate" in secure_broker.log_text(),
        CONNECT_TIMEOUT_S,
        message=secure_broker.log_text,
    )


def test_a_certificate_from_an_untrusted_ca_is_refused_and_the_broker_says_why(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    certfile, keyfile = secure_setup.client_cert("vehicle_01", rogue=True)
    settings = device_settings(
        tmp_path, secure_broker, secure_setup, "vehicle_01", mqtt_certfile=certfile, mqtt_keyfile=keyfile
    )
    outcome = try_connect(settings)
    assert not outcome.connected, outcome
    # The client sees "unknown ca" or only the connection closing, depending on timing; the broker's log is certain.
    wait_until(
        lambda: "certificate verify failed" in secure_broker.log_text(),
        CONNECT_TIMEOUT_S,
        message=secure_broker.log_text,
    )


def test_a_device_that_does_not_trust_the_broker_refuses_to_connect(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    settings = device_settings(
        tmp_path, secure_broker, secure_setup, "vehicle_01", mqtt_ca_certs=str(secure_setup.rogue_dir / "ca.crt")
    )
    outcome = try_connect(settings)
    assert not outcome.connected
    assert "certificate verify failed" in outcome.reason, outcome


def test_a_device_simulator_that_does_not_trust_the_broker_says_so_in_its_log(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup, spawn: Callable[..., ServiceProcess]
) -> None:
    """paho's reconnect loop only says that a connection failed; the device finds out why and names the setting."""
    trusted_nothing = device_settings(tmp_path, secure_broker, secure_setup, "vehicle_01").with_overrides(
        mqtt_ca_certs=""  # the system's CAs, which never signed the broker's certificate
    )
    device = spawn("devices/device_simulator.py", "vehicle_01", settings=trusted_nothing, name="vehicle_01")
    wait_until(
        lambda: "TLS certificate" in device.log_text(), CONNECT_TIMEOUT_S, message=lambda: device.log_text()[-2000:]
    )
    assert f"TLS certificate at localhost:{secure_broker.ports[TLS_PORT]} was not accepted:" in device.log_text()
    assert "check MQTT_CA_CERTS; queueing and retrying" in device.log_text()


def test_clients_without_credentials_cannot_connect_on_any_listener(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    anonymous_plain = base_settings(tmp_path).with_overrides(
        mqtt_broker_host=secure_broker.host, mqtt_broker_port=secure_broker.port, mqtt_client_id="anonymous-plain"
    )
    # An enrolled device has no password, so the services' plain listener is closed to it too.
    device_on_plain = anonymous_plain.with_overrides(mqtt_username="vehicle_01", mqtt_client_id="device-plain")
    for settings in (anonymous_plain, device_on_plain):
        outcome = try_connect(settings)
        assert not outcome.connected
        assert "not authorised" in outcome.reason or "MQTT_PASSWORD" in outcome.reason, outcome


def test_a_device_cannot_publish_as_another_and_the_broker_logs_the_attempt(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup, spawn: Callable[..., ServiceProcess]
) -> None:
    collector_settings = service_settings(tmp_path, secure_broker, secure_setup, "collector")
    collector = start_collector(spawn, collector_settings)
    database = Path(collector_settings.sqlite_path)
    device = connected_client(device_settings(tmp_path, secure_broker, secure_setup, "vehicle_01"))
    try:
        publish(device, data_topic("vehicle_02"), reading("vehicle_02", 1))
        # A reading of its own, published after the forged one, marks when the forged one would have arrived.
        seq = 100

        def own_reading_stored() -> bool:
            nonlocal seq
            seq += 1
            publish(device, data_topic("vehicle_01"), reading("vehicle_01", seq))
            return any(device_id == "vehicle_01" for device_id, _ in stored_rows(database))

        wait_until(own_reading_stored, STORE_TIMEOUT_S, interval_s=0.2, message=lambda: collector.log_text()[-2000:])
        publish(device, data_topic("vehicle_02"), reading("vehicle_02", 2))
        publish(device, data_topic("vehicle_01"), reading("vehicle_01", 999))
        wait_until(lambda: ("vehicle_01", 999) in stored_rows(database), STORE_TIMEOUT_S)
    finally:
        mqtt.stop(device)
    assert {device_id for device_id, _ in stored_rows(database)} == {"vehicle_01"}
    log_text = secure_broker.log_text()
    assert "Denied PUBLISH from vehicle_01" in log_text
    assert "'device/data/vehicle_02'" in log_text


def test_service_users_cannot_publish_device_data(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    for user in ("collector", "dashboard"):
        client = connected_client(service_settings(tmp_path, secure_broker, secure_setup, user))
        try:
            for topic in (data_topic("vehicle_01"), data_topic(user), status_topic(user)):
                publish(client, topic, reading("vehicle_01", 1))
        finally:
            mqtt.stop(client)
        for topic in (data_topic("vehicle_01"), data_topic(user), status_topic(user)):
            wait_until(
                lambda t=topic, u=user: (
                    f"Denied PUBLISH from {u}-{tmp_path.name}" in secure_broker.log_text()
                    and f"'{t}'" in secure_broker.log_text()
                ),
                CONNECT_TIMEOUT_S,
                message=f"{user} denied on {topic}",
            )


def test_only_the_collector_reads_device_data_and_only_the_dashboard_reads_presence(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    def witness(user: str) -> Witness:
        return Witness(
            secure_broker.host, secure_broker.port, ("#",), username=user, password=secure_setup.passwords[user]
        )

    tls = device_settings(tmp_path, secure_broker, secure_setup, "vehicle_02")
    other = Witness(
        "localhost", tls.mqtt_broker_port, ("#",), tls=lambda client: client.tls_set_context(mqtt.tls_context(tls))
    )
    with witness("collector") as collector, witness("dashboard") as dashboard, other as other_device:
        device = connected_client(device_settings(tmp_path, secure_broker, secure_setup, "vehicle_01"))
        try:
            publish(device, status_topic("vehicle_01"), b"online")
            publish(device, data_topic("vehicle_01"), reading("vehicle_01", 1))
        finally:
            mqtt.stop(device)
        wait_until(lambda: any(m.topic == data_topic("vehicle_01") for m in collector.snapshot()), CONNECT_TIMEOUT_S)
        wait_until(lambda: dashboard.snapshot(), CONNECT_TIMEOUT_S, message="dashboard receives presence")
        # Deliveries to one broker happen in order of publication; the marker below arrives after both.
        marker = connected_client(device_settings(tmp_path, secure_broker, secure_setup, "vehicle_02"))
        try:
            publish(marker, status_topic("vehicle_02"), b"online")
        finally:
            mqtt.stop(marker)
        wait_until(lambda: len(dashboard.snapshot()) == 2, CONNECT_TIMEOUT_S, message="dashboard sees the marker")
    # The collector reads all of device/# (to dead-letter what it cannot store), so presence too.
    assert {m.topic for m in collector.snapshot()} == {
        data_topic("vehicle_01"),
        *map(status_topic, ("vehicle_01", "vehicle_02")),
    }
    assert {m.topic for m in dashboard.snapshot()} == {status_topic("vehicle_01"), status_topic("vehicle_02")}
    assert other_device.snapshot() == []


def with_optional_block(config: Path, name: str, destination: Path) -> Path:
    """The config with its commented-out `# OPTIONAL[name]` block switched on, as a user would uncomment it."""
    lines = config.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# OPTIONAL[{name}]"))
    enabled = 0
    for index in range(start + 1, len(lines)):
        line = lines[index]
        if not line.strip():
            break
        if line.startswith("#") and not line.startswith("# "):
            lines[index] = line[1:]
            enabled += 1
    assert enabled, f"no commented settings after OPTIONAL[{name}] in {config.name}"
    destination.write_text("\n".join(lines) + "\n")
    return destination


def test_the_optional_websockets_listener_requires_a_password(
    tmp_path: Path, start_broker: BrokerFactory, secure_setup: SecureSetup
) -> None:
    config = with_optional_block(SECURE_CONFIG, "websockets", tmp_path / "websockets.conf")
    broker = start_broker(
        config, name="ws", extra_ports={TLS_PORT: free_port(), 9001: free_port()}, config_dir=secure_setup.config_dir
    )

    def connack(username: str | None, password: str | None) -> Any:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"ws-{username}", transport="websockets")
        if username:
            client.username_pw_set(username, password)
        result: list[Any] = []
        client.on_connect = lambda c, u, flags, reason_code, props: result.append(reason_code)
        client.connect(broker.host, broker.ports[9001])
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not result and time.monotonic() < deadline:
            client.loop(0.05)
        client.disconnect()
        assert result, "no CONNACK over websockets"
        return result[0]

    assert not connack("dashboard", secure_setup.passwords["dashboard"]).is_failure
    assert connack("dashboard", "wrong").is_failure
    assert connack(None, None).is_failure


def rogue_vehicle_01(tmp_path: Path, broker: MosquittoBroker, setup: SecureSetup, **overrides: Any) -> paho.Client:
    """vehicle_01 with its own certificate, claiming someone else's client id, user name or password; it keeps
    reconnecting as paho does, so a broker that let it take over a session would see the two fight."""
    settings = device_settings(tmp_path, broker, setup, "vehicle_01", **overrides)
    client = mqtt.make_client(settings, settings.mqtt_client_id, clean_session=False)
    mqtt.start(client, settings)
    wait_until(client.is_connected, CONNECT_TIMEOUT_S, message="vehicle_01 connects")
    return client


def test_a_device_cannot_take_over_the_collectors_client_id(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup, spawn: Callable[..., ServiceProcess]
) -> None:
    collector_settings = service_settings(tmp_path, secure_broker, secure_setup, "collector")
    collector = start_collector(spawn, collector_settings)
    wait_until(lambda: "subscribed to" in collector.log_text(), STORE_TIMEOUT_S, message=collector.log_text)
    rogue = rogue_vehicle_01(tmp_path, secure_broker, secure_setup, mqtt_client_id=collector_settings.mqtt_client_id)
    try:
        victim = connected_client(device_settings(tmp_path, secure_broker, secure_setup, "vehicle_02"))
        try:
            infos = [victim.publish(data_topic("vehicle_02"), reading("vehicle_02", seq), qos=1) for seq in range(100)]
            for info in infos:
                info.wait_for_publish(STORE_TIMEOUT_S)
        finally:
            mqtt.stop(victim)
        database = Path(collector_settings.sqlite_path)
        wait_until(
            lambda: len(stored_rows(database)) == 100, STORE_TIMEOUT_S, message=lambda: collector.log_text()[-2000:]
        )
    finally:
        mqtt.stop(rogue)
    assert stored_rows(database) == {("vehicle_02", seq) for seq in range(100)}
    assert "lost the connection" not in collector.log_text(), "the collector kept its connection"
    log_text = secure_broker.log_text()
    assert "as vehicle_01 (p2, c0" in log_text, "the broker gave vehicle_01 its own client id"
    assert f"Client {collector_settings.mqtt_client_id} already connected" not in log_text


def test_a_device_cannot_take_over_another_devices_client_id(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup
) -> None:
    victim = connected_client(device_settings(tmp_path, secure_broker, secure_setup, "vehicle_02"))
    dropped: list[Any] = []
    victim.on_disconnect = lambda c, u, flags, reason_code, props: dropped.append(reason_code)
    try:
        for claimed in ("vehicle_02", "device_vehicle_02"):
            rogue = rogue_vehicle_01(tmp_path, secure_broker, secure_setup, mqtt_client_id=claimed)
            mqtt.stop(rogue)
        assert victim.is_connected() and not dropped, dropped
    finally:
        mqtt.stop(victim)
    assert "Client vehicle_02 already connected" not in secure_broker.log_text()


def test_a_certificate_with_another_devices_user_name_and_password_speaks_only_for_its_own_device(
    tmp_path: Path, secure_broker: MosquittoBroker, secure_setup: SecureSetup, spawn: Callable[..., ServiceProcess]
) -> None:
    collector_settings = service_settings(tmp_path, secure_broker, secure_setup, "collector")
    collector = start_collector(spawn, collector_settings)
    wait_until(lambda: "subscribed to" in collector.log_text(), STORE_TIMEOUT_S, message=collector.log_text)
    impostor = rogue_vehicle_01(
        tmp_path, secure_broker, secure_setup, mqtt_username="vehicle_02", mqtt_password="vehicle_02's password"
    )
    database = Path(collector_settings.sqlite_path)
    try:
        publish(impostor, data_topic("vehicle_02"), reading("vehicle_02", 1))
        publish(impostor, data_topic("vehicle_01"), reading("vehicle_01", 2))  # after the forged one
        wait_until(lambda: stored_rows(database), STORE_TIMEOUT_S, message=lambda: collector.log_text()[-2000:])
    finally:
        mqtt.stop(impostor)
    assert stored_rows(database) == {("vehicle_01", 2)}, "its certificate made it vehicle_01, whatever it claimed"
    assert "Denied PUBLISH from vehicle_01" in secure_broker.log_text()
    assert "u'vehicle_01'" in secure_broker.log_text()
