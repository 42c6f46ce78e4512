"""The dashboard's REST API on SQLite and on InfluxDB (the fake server), through Flask's test client.

Each test builds the real app with `create_app(settings, store)`: its presence subscriber connects to
the test's Mosquitto, and its store holds records written as the collector writes them.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
import pytest
from dashboard_fixtures import (
    INFLUX_TOKEN,
    CallRecordingStore,
    StoreUnderTest,
    make_app,
    make_record,
    start_dashboard,
    store_under_test,
    write_records,
)
from flask import Flask
from flask.testing import FlaskClient
from influxdb_fake import FakeInfluxDB
from paho.mqtt.enums import CallbackAPIVersion
from werkzeug.security import check_password_hash, generate_password_hash

from dashboard.app import DevelopmentServerNotice, create_app
from dashboard.parameters import HISTORY_FIELDS
from dashboard.presence import Presence, device_state, parse_status
from rtds.broker import PROJECT_ROOT, MosquittoBroker
from rtds.errors import ConfigError, StoreUnavailable
from rtds.schema import STORED_FIELDS, status_topic
from rtds.settings import EXAMPLE_SECRET_KEY, Settings
from rtds.store.influxdb import InfluxStore
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, settings_env, wait_until

__all__ = ["make_app", "store_under_test"]  # fixtures used by name

USERNAME = "operator"
PASSWORD = "correct horse battery staple"
SECRET_KEY = "test-secret-key-0123456789abcdef"

# Values crafted to break out of a Flux string or a path; each must be refused before any store call.
BAD_REQUESTS = [
    '/api/devices/a"b/latest',
    "/api/devices/vehicle_01%22)%20%7C%3E%20drop()/latest",
    "/api/devices/x%0Ay/latest",
    "/api/devices/vehicle%2001/history",
    "/api/devices/" + "v" * 65 + "/latest",
    '/api/devices/to(bucket:"x")/history',
    "/api/devices/vehicle_01/history?duration=0s",
    "/api/devices/vehicle_01/history?duration=-5m",
    "/api/devices/vehicle_01/history?duration=5",
    "/api/devices/vehicle_01/history?duration=5%20m",
    "/api/devices/vehicle_01/history?duration=5m%0A",
    "/api/devices/vehicle_01/history?duration=31d",
    "/api/devices/vehicle_01/history?duration=1y",
    "/api/devices/vehicle_01/history?duration=",
    "/api/devices/vehicle_01/history?duration=5m)%20%7C%3E%20yield()",
    "/api/devices/vehicle_01/history?duration=5m&duration=1h",
    "/api/devices/vehicle_01/history?fields=speed%22",
    "/api/devices/vehicle_01/history?fields=to(",
    "/api/devices/vehicle_01/history?fields=speed,%7C%3Edrop()",
    "/api/devices/vehicle_01/history?fields=_measurement",
    "/api/devices/vehicle_01/history?fields=device_id",
    "/api/devices/vehicle_01/history?fields=",
    "/api/devices/vehicle_01/history?duration=05m",
    "/api/devices/vehicle_01/history?duration=0ms",
    "/api/devices/vehicle_01/history?duration=999999999d",
    "/api/devices/vehicle_01/history?fields=speed,",
    "/api/devices/a%2F%2Fb/latest",
    "/api/devices/vehicle_01/history?every=0s",
    "/api/devices/vehicle_01/history?duration=2h&fields=replayed",
    "/api/devices/vehicle_01/history?durration=5m",
    "/api/devices/vehicle_01/latest?fields=speed",
    "/api/devices/status?device=vehicle_01",
]


def login_settings(settings: Settings, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "dashboard_username": USERNAME,
        "dashboard_password_hash": generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"),
        "flask_secret_key": SECRET_KEY,
    }
    return settings.with_overrides(**(values | changes))


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, "the login form carries a CSRF token"
    return match.group(1)


def publish_status(broker: MosquittoBroker, device_id: str, status: str) -> None:
    """A retained status message, as a device (or its Last Will) publishes it."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"status-{device_id}-{time.monotonic_ns()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(status_topic(device_id), status.encode(), qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def status_of(client: FlaskClient, device_id: str) -> dict[str, Any]:
    response = client.get("/api/devices/status")
    assert response.status_code == 200
    return next(device for device in response.get_json()["devices"] if device["device_id"] == device_id)


# --- the page and the static files ------------------------------------------------------------


def test_page_is_served_with_security_headers_and_only_local_scripts(
    settings: Settings, make_app: Callable[..., Flask]
) -> None:
    client = make_app(settings, SQLiteStore(settings.sqlite_path)).test_client()
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert len(scripts) == 3
    for attributes, body in scripts:
        assert body.strip() == "", "no inline script"
        assert re.search(r'src="/static/', attributes), attributes
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    for path, marker in (
        ("/static/vendor/chart.js/chart.umd.js", "Chart.js v4"),
        ("/static/vendor/socket.io-client/socket.io.min.js", "Socket.IO v4"),
        ("/static/dashboard.js", "latest_data"),
    ):
        with client.get(path) as static:
            assert static.status_code == 200, path
            assert "javascript" in static.headers["Content-Type"]
            assert marker in static.get_data(as_text=True), path
    with client.get("/static/dashboard.js") as script:
        assert "innerHTML" not in script.get_data(as_text=True)


# --- health -----------------------------------------------------------------------------------


def test_health_reports_the_store_and_the_broker(
    store_under_test: StoreUnderTest, make_app: Callable[..., Flask]
) -> None:
    app = make_app(store_under_test.settings, store_under_test.store)
    app.extensions["rtds"].presence.wait_connected(10)
    response = app.test_client().get("/api/health")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["store"]["ok"] is True
    assert body["store"]["backend"] == store_under_test.kind
    if store_under_test.kind == "influxdb":
        assert body["store"]["url"] == store_under_test.settings.influxdb_url
        assert body["store"]["using_fallback"] is False
    else:
        assert body["store"]["url"] == store_under_test.settings.sqlite_path
    assert body["broker"]["ok"] is True
    assert (
        body["broker"]["broker"]
        == f"{store_under_test.settings.mqtt_broker_host}:{store_under_test.settings.mqtt_broker_port}"
    )
    assert body["live"]["clients"] == 0


def test_health_is_503_when_the_broker_goes_away(
    settings: Settings, broker: MosquittoBroker, make_app: Callable[..., Flask]
) -> None:
    app = make_app(settings, SQLiteStore(settings.sqlite_path))
    assert app.extensions["rtds"].presence.wait_connected(10)
    client = app.test_client()
    assert client.get("/api/health").status_code == 200
    broker.kill()
    response = wait_until(lambda: (r := client.get("/api/health")).status_code == 503 and r, 10)
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["broker"]["ok"] is False and body["store"]["ok"] is True


def test_health_is_503_when_influxdb_is_unhealthy_and_names_the_url(
    settings: Settings, make_app: Callable[..., Flask]
) -> None:
    with FakeInfluxDB(token=INFLUX_TOKEN) as fake:
        influx = settings.with_overrides(
            store="influxdb", influxdb_url=fake.url, influxdb_token=INFLUX_TOKEN, influxdb_health_interval_s=0.1
        )
        app = make_app(influx)  # opens the store itself, from the settings
        app.extensions["rtds"].presence.wait_connected(10)
        client = app.test_client()
        assert client.get("/api/health").status_code == 200
        fake.set_healthy(False)
        response = wait_until(lambda: (r := client.get("/api/health")).status_code == 503 and r, 10)
        body = response.get_json()
        assert body["status"] == "degraded"
        assert body["store"]["ok"] is False
        assert body["store"]["url"] == fake.url and body["store"]["primary_url"] == fake.url


# --- device status ----------------------------------------------------------------------------


def test_devices_status_is_online_until_data_is_older_than_the_limit(
    store_under_test: StoreUnderTest, make_app: Callable[..., Flask]
) -> None:
    now = time.time()
    write_records(
        store_under_test.store, [make_record("vehicle_fresh", now - 1), make_record("vehicle_stale", now - 30)]
    )
    client = make_app(store_under_test.settings, store_under_test.store).test_client()
    body = client.get("/api/devices/status").get_json()
    assert (body["total"], body["online"], body["offline"]) == (2, 1, 1)
    fresh, stale = body["devices"]
    assert fresh["device_id"] == "vehicle_fresh" and fresh["online"] is True and fresh["status"] == "online"
    assert 0.5 < fresh["seconds_since"] < 10
    assert fresh["last_seen"] == pytest.approx(now - 1, abs=0.001)
    assert stale["device_id"] == "vehicle_stale" and stale["online"] is False and stale["reason"] == "stale"
    assert 29 < stale["seconds_since"] < 40

    # The limit is a setting.
    patient = store_under_test.settings.with_overrides(dashboard_offline_after_s=60.0)
    body = make_app(patient, store_under_test.store).test_client().get("/api/devices/status").get_json()
    assert body["online"] == 2 and body["offline_after_s"] == 60.0


def test_retained_offline_status_marks_a_device_offline_at_once(
    settings: Settings, broker: MosquittoBroker, make_app: Callable[..., Flask]
) -> None:
    store = SQLiteStore(settings.sqlite_path)
    write_records(store, [make_record("vehicle_01", time.time() - 0.5), make_record("vehicle_02", time.time() - 0.5)])
    publish_status(broker, "vehicle_01", "offline")  # retained before the dashboard starts: its Last Will
    client = make_app(settings, store).test_client()
    assert wait_until(lambda: status_of(client, "vehicle_01")["reason"] == "status_offline", 10)
    assert status_of(client, "vehicle_01")["online"] is False
    assert status_of(client, "vehicle_02")["online"] is True

    # A retained offline arriving while the dashboard runs, for a device whose data is fresh.
    publish_status(broker, "vehicle_02", "offline")
    assert wait_until(lambda: status_of(client, "vehicle_02")["online"] is False, 10)

    # Back: data newer than the offline message, or an online status, makes it online again.
    write_records(store, [make_record("vehicle_01", time.time() + 0.2)])
    assert status_of(client, "vehicle_01")["online"] is True
    publish_status(broker, "vehicle_02", "online")
    assert wait_until(lambda: status_of(client, "vehicle_02")["online"] is True, 10)


# --- latest and history -----------------------------------------------------------------------


def test_latest_returns_the_newest_record_with_all_fields(
    store_under_test: StoreUnderTest, make_app: Callable[..., Flask]
) -> None:
    now = time.time()
    newest = make_record("vehicle_01", now - 1, seq=8, speed=88.5, detection_label="pedestrian")
    write_records(store_under_test.store, [make_record("vehicle_01", now - 2, seq=7), newest])
    response = (
        make_app(store_under_test.settings, store_under_test.store).test_client().get("/api/devices/vehicle_01/latest")
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["device_id"] == "vehicle_01" and body["online"] is True
    record = body["record"]
    assert set(STORED_FIELDS) <= set(record), set(STORED_FIELDS) - set(record)
    assert record["time"] == pytest.approx(newest.timestamp, abs=1e-3)
    assert record["seq"] == 8 and record["speed"] == 88.5 and record["detection_label"] == "pedestrian"
    for name in (
        "cpu_usage",
        "ram_usage",
        "memory_total",
        "disk_percent",
        "network_bytes_recv",
        "detection_confidence",
    ):
        assert record[name] == pytest.approx(getattr(newest, name)), name
    assert record["write_time"] == pytest.approx(newest.timestamp + 0.2, abs=1e-3)


def test_history_returns_speed_by_default_and_selected_fields(
    store_under_test: StoreUnderTest, make_app: Callable[..., Flask]
) -> None:
    now = time.time()
    records = [
        make_record("vehicle_01", now - 100 + i * 10, seq=i, speed=10.0 * i, cpu_usage=float(i)) for i in range(10)
    ]
    records.append(make_record("vehicle_02", now - 5))
    write_records(store_under_test.store, records)
    client = make_app(store_under_test.settings, store_under_test.store).test_client()

    body = client.get("/api/devices/vehicle_01/history?duration=5m").get_json()
    assert body["fields"] == ["speed"] and body["duration_s"] == 300 and body["every_s"] is None
    assert [point["speed"] for point in body["points"]] == [10.0 * i for i in range(10)]
    assert all(set(point) == {"time", "speed"} for point in body["points"])
    assert body["count"] == 10

    body = client.get("/api/devices/vehicle_01/history?duration=45s&fields=speed,cpu_usage").get_json()
    assert [(point["speed"], point["cpu_usage"]) for point in body["points"]] == [
        (60.0, 6.0),
        (70.0, 7.0),
        (80.0, 8.0),
        (90.0, 9.0),
    ]

    body = client.get("/api/devices/vehicle_01/history?duration=2m&every=50s").get_json()
    assert body["every_s"] == 50
    averaged = [point["speed"] for point in body["points"]]
    assert 2 <= len(averaged) <= 4 and sum(averaged) / len(averaged) == pytest.approx(45.0, abs=25)

    # Longer than an hour without `every`: averaged into about 1,000 windows.
    assert client.get("/api/devices/vehicle_01/history?duration=1d").get_json()["every_s"] == pytest.approx(86.4)


def test_unknown_devices_get_404(store_under_test: StoreUnderTest, make_app: Callable[..., Flask]) -> None:
    write_records(store_under_test.store, [make_record("vehicle_01", time.time() - 1)])
    client = make_app(store_under_test.settings, store_under_test.store).test_client()
    for path in ("/api/devices/vehicle_99/latest", "/api/devices/vehicle_99/history?duration=5m"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "vehicle_99" in response.get_json()["error"]


def test_bad_parameters_get_400_before_any_store_call(
    store_under_test: StoreUnderTest, make_app: Callable[..., Flask]
) -> None:
    write_records(store_under_test.store, [make_record("vehicle_01", time.time() - 1)])
    recording = CallRecordingStore(store_under_test.store)
    client = make_app(store_under_test.settings, recording).test_client()
    queries_before = len(store_under_test.fake.queries) if store_under_test.fake else 0
    for path in BAD_REQUESTS:
        response = client.get(path)
        assert response.status_code == 400, (path, response.status_code, response.get_data(as_text=True))
        message = response.get_json()["error"]
        assert len(message) > 20 and "Traceback" not in message, (path, message)
    assert recording.calls == []
    if store_under_test.fake:
        assert len(store_under_test.fake.queries) == queries_before
    # The same endpoints answer with good values, so the 400s were about the values.
    assert client.get("/api/devices/vehicle_01/history?duration=5m&fields=speed,cpu_usage&every=10s").status_code == 200


# --- errors never carry a stack trace -----------------------------------------------------------


def test_internal_errors_are_generic_json_and_logged(
    settings: Settings, make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "RuntimeError detail /etc/secret-path line 42"
    store = CallRecordingStore(
        SQLiteStore(settings.sqlite_path),
        failures={
            "latest": RuntimeError(secret),
            "last_seen": StoreUnavailable("InfluxDB at http://10.0.0.9:8086 refused"),
        },
    )
    client = make_app(settings, store).test_client()
    with caplog.at_level(logging.ERROR, logger="dashboard.security"):
        response = client.get("/api/devices/vehicle_01/latest")
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error; the details are in the dashboard's log"}
    text = response.get_data(as_text=True)
    assert secret not in text and "Traceback" not in text and "File " not in text
    assert any(secret in (record.exc_text or "") or record.exc_info for record in caplog.records)

    response = client.get("/api/devices/status")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "10.0.0.9" not in response.get_data(as_text=True)

    for method, path, status in (
        ("post", "/api/devices/status", 405),
        ("get", "/api/nothing", 404),
        ("get", "/nope", 404),
    ):
        response = getattr(client, method)(path)
        assert response.status_code == status and response.is_json and "error" in response.get_json()
        assert "<html" not in response.get_data(as_text=True).lower()


# --- the OpenAPI description ------------------------------------------------------------------


def test_openapi_describes_every_api_route(settings: Settings, make_app: Callable[..., Flask]) -> None:
    app = make_app(settings, SQLiteStore(settings.sqlite_path))
    response = app.test_client().get("/api/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    routes = {
        re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
    }
    assert set(document["paths"]) == routes
    history = document["paths"]["/api/devices/{device_id}/history"]["get"]
    assert {parameter["name"] for parameter in history["parameters"]} == {"device_id", "duration", "fields", "every"}
    assert set(history["responses"]) >= {"200", "400", "404"}
    assert document["components"]["schemas"]["History"]["properties"]["fields"]["items"]["enum"] == list(HISTORY_FIELDS)
    json.dumps(document)  # plain JSON all through


# --- rate limiting, login, secret key -------------------------------------------------------


def test_the_api_is_rate_limited_per_client_but_health_is_not(
    settings: Settings, make_app: Callable[..., Flask]
) -> None:
    client = make_app(
        settings.with_overrides(dashboard_rate_limit="5/minute"), SQLiteStore(settings.sqlite_path)
    ).test_client()
    codes = [client.get("/api/devices/status").status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    response = client.get("/api/devices/status")
    assert "too many" in response.get_json()["error"].lower() or "per 1 minute" in response.get_json()["error"]
    assert int(response.headers["Retry-After"]) > 0
    assert all(client.get("/api/health").status_code in (200, 503) for _ in range(8))


def test_with_login_everything_needs_a_session(settings: Settings, make_app: Callable[..., Flask]) -> None:
    store = SQLiteStore(settings.sqlite_path)
    write_records(store, [make_record("vehicle_01", time.time() - 1)])
    client = make_app(login_settings(settings), store).test_client()

    page = client.get("/")
    assert page.status_code == 302 and page.headers["Location"].endswith("/login")
    for path in (
        "/api/devices/status",
        "/api/devices/vehicle_01/latest",
        "/api/devices/vehicle_01/history",
        "/api/openapi.json",
    ):
        response = client.get(path)
        assert response.status_code == 401, path
        assert "login" in response.get_json()["error"]
    health = client.get("/api/health")
    assert set(health.get_json()) == {"status"}, "anonymous health shows only the status"

    # No CSRF token: refused. Wrong password: refused. Right one: in.
    assert client.post("/login", data={"username": USERNAME, "password": PASSWORD}).status_code == 400
    wrong = client.post("/login", data={"username": USERNAME, "password": "nope", "csrf_token": csrf_token(client)})
    assert wrong.status_code == 200 and "Wrong user name or password" in wrong.get_data(as_text=True)
    wrong_user = client.post(
        "/login", data={"username": "root", "password": PASSWORD, "csrf_token": csrf_token(client)}
    )
    assert "Wrong user name or password" in wrong_user.get_data(as_text=True)
    assert client.get("/api/devices/status").status_code == 401
    right = client.post("/login", data={"username": USERNAME, "password": PASSWORD, "csrf_token": csrf_token(client)})
    assert right.status_code == 302 and right.headers["Location"].endswith("/")
    assert client.get("/").status_code == 200
    assert client.get("/api/devices/status").get_json()["total"] == 1
    assert "store" in client.get("/api/health").get_json()

    # Sign out (CSRF-protected too) ends the session.
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/")}).status_code == 302
    assert client.get("/api/devices/status").status_code == 401


def test_login_attempts_are_rate_limited(settings: Settings, make_app: Callable[..., Flask]) -> None:
    client = make_app(login_settings(settings), SQLiteStore(settings.sqlite_path)).test_client()
    codes = [
        client.post(
            "/login", data={"username": USERNAME, "password": f"guess{i}", "csrf_token": csrf_token(client)}
        ).status_code
        for i in range(12)
    ]
    assert codes[:10] == [200] * 10 and codes[10:] == [429, 429]


def test_changing_the_password_ends_existing_sessions(settings: Settings, make_app: Callable[..., Flask]) -> None:
    store = SQLiteStore(settings.sqlite_path)
    first = make_app(login_settings(settings), store)
    client = first.test_client()
    client.post("/login", data={"username": USERNAME, "password": PASSWORD, "csrf_token": csrf_token(client)})
    assert client.get("/api/devices/status").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    rotated = make_app(
        login_settings(settings).with_overrides(dashboard_password_hash=generate_password_hash("another password")),
        store,
    )
    other = rotated.test_client()
    other.set_cookie("session", cookie.value)
    assert other.get("/api/devices/status").status_code == 401


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"flask_secret_key": EXAMPLE_SECRET_KEY}, "FLASK_SECRET_KEY"),
        ({"flask_secret_key": ""}, "FLASK_SECRET_KEY"),
        ({"flask_secret_key": "short"}, "FLASK_SECRET_KEY"),
        ({"dashboard_password_hash": "hunter2-plain-text"}, "--hash-password"),
        ({"dashboard_rate_limit": "lots"}, "DASHBOARD_RATE_LIMIT"),
    ],
)
def test_the_app_refuses_to_start_with_unsafe_settings(
    settings: Settings, changes: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        create_app(login_settings(settings, **changes), SQLiteStore(settings.sqlite_path))


def test_the_script_exits_with_the_fix_when_the_secret_key_is_the_example(settings: Settings) -> None:
    env = settings_env(login_settings(settings, flask_secret_key=EXAMPLE_SECRET_KEY))
    result = subprocess.run(
        [sys.executable, "dashboard/app.py"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "FLASK_SECRET_KEY" in result.stderr and "secrets.token_urlsafe" in result.stderr
    assert "Traceback" not in result.stderr


def test_hash_password_prints_a_hash_that_checks() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rtds.cli", "dashboard", "--hash-password"],
        cwd=PROJECT_ROOT,
        input="a long enough password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith(("scrypt:", "pbkdf2:")) and "a long enough password" not in result.stdout
    assert check_password_hash(hashed, "a long enough password")


def test_influx_store_reads_through_the_same_api_as_sqlite(settings: Settings, make_app: Callable[..., Flask]) -> None:
    """The same records written to both stores read back the same through the API."""
    now = time.time()
    records = [make_record(f"vehicle_{i:02d}", now - 2 + i * 0.1, seq=i) for i in range(3)]
    with FakeInfluxDB(token=INFLUX_TOKEN) as fake:
        influx_settings = settings.with_overrides(store="influxdb", influxdb_url=fake.url, influxdb_token=INFLUX_TOKEN)
        bodies = []
        for kind_settings, store in (
            (settings, SQLiteStore(settings.sqlite_path)),
            (influx_settings, InfluxStore.from_settings(influx_settings)),
        ):
            write_records(store, records)
            client = make_app(kind_settings, store).test_client()
            status = client.get("/api/devices/status").get_json()
            latest = client.get("/api/devices/vehicle_01/latest").get_json()
            bodies.append(
                (
                    [(d["device_id"], round(d["last_seen"], 3), d["online"]) for d in status["devices"]],
                    {k: v for k, v in latest["record"].items() if k != "time"},
                )
            )
        assert bodies[0] == bodies[1]


def test_status_messages_are_read_as_text_or_json_and_anything_else_is_ignored() -> None:
    assert parse_status(b"offline") == "offline" and parse_status(b" Online\n") == "online"
    assert parse_status(b'{"status": "offline", "at": 1}') == "offline"
    for junk in (b"", b"gone", b'{"state": "offline"}', b"[1]", b"{not json", b"\xff\xfe"):
        assert parse_status(junk) is None, junk
    offline_at = Presence("offline", received_at=100.0)
    assert device_state(99.0, offline_at, 101.0, 10.0).reason == "status_offline"
    assert device_state(100.5, offline_at, 101.0, 10.0).online is True, "data after the offline message"
    assert device_state(80.0, Presence("online", 100.0), 101.0, 10.0).reason == "stale"
    assert device_state(None, None, 101.0, 10.0).reason == "no_data"


def test_the_development_server_notice_is_not_printed_and_an_unset_secret_key_is_said_once(
    settings: Settings, spawn: Callable[..., ServiceProcess]
) -> None:
    assert settings.flask_secret_key == "", "no key ships as a default"
    dashboard = start_dashboard(spawn, settings)
    dashboard.process.terminate()
    log = dashboard.process.log_text()
    assert "production deployment" not in log, log
    assert log.count("FLASK_SECRET_KEY is empty: this run signs its cookies with a random key") == 1, log
    assert "dashboard stopped after" in log
    notice = DevelopmentServerNotice()
    other = logging.LogRecord("werkzeug", logging.WARNING, "", 0, "Address already in use", None, None)
    dropped = logging.LogRecord(
        "werkzeug", logging.WARNING, "", 0, DevelopmentServerNotice.NOTICE + ". Use a WSGI server.", None, None
    )
    assert notice.filter(other) and not notice.filter(dropped)


def test_every_example_leaves_the_secret_key_empty() -> None:
    for name in (".env.example", "env.example.device", "env.example.vps1-docker"):
        lines = (PROJECT_ROOT / name).read_text().splitlines()
        values = [line.split("=", 1)[1] for line in lines if line.lstrip("# ").startswith("FLASK_SECRET_KEY=")]
        assert values == [""], (name, values)
