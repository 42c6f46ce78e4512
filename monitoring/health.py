"""Health checks of the three components a user depends on: the broker, the store, the dashboard's live feed.

Each check does the real thing end to end (MQTT: connect, subscribe, publish, receive its own
message; store: the adapter's health, with InfluxDB's fallback; dashboard: a Socket.IO client
that waits for one `latest_data`) within a timeout, and explains a failure in one sentence that
names the setting to look at.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from rtds import mqtt
from rtds.schema import health_topic
from rtds.settings import Settings
from rtds.store import open_store

LIVE_EVENT = "latest_data"
ACL_GRANT = "pattern readwrite rtds/health/%u/#"


@dataclass(frozen=True)
class CheckResult:
    component: str
    ok: bool
    detail: str
    elapsed_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "ok": self.ok,
            "detail": self.detail,
            "elapsed_ms": round(self.elapsed_ms, 1),
            **self.extra,
        }


class _Timer:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def ms(self) -> float:
        return (time.monotonic() - self.started) * 1000


# --- MQTT ------------------------------------------------------------------------------------


def check_mqtt(settings: Settings, timeout_s: float = 5.0) -> CheckResult:
    """Connect with the settings (TLS, login), subscribe to a private topic, publish to it, get it back."""
    timer = _Timer()
    where = f"{settings.mqtt_broker_host}:{settings.mqtt_broker_port}"
    token = secrets.token_hex(8)
    client_id = f"rtds-check-{token}"
    topic = health_topic(settings.mqtt_username, client_id)
    state: dict[str, str] = {}
    done = threading.Event()

    def on_connect(client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            state["error"] = (
                f"the broker at {where} refused the connection: {mqtt.explain_connect_failure(reason_code)}"
            )
            done.set()
        else:
            client.subscribe(topic, qos=1)

    def on_subscribe(client: paho.Client, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if any(code.is_failure for code in reason_codes):
            state["error"] = f"the broker refused a subscription to {topic}; grant it in the ACL with `{ACL_GRANT}`"
            done.set()
        else:
            client.publish(topic, token.encode(), qos=1)

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if message.topic == topic and message.payload == token.encode():
            state["received"] = "yes"
            done.set()

    # A port that answers but not in MQTT (a web server) would otherwise look like a broker whose ACL denies us.
    failure = mqtt.diagnose_connection(settings, timeout_s=timeout_s)
    if failure:
        return CheckResult("mqtt", False, failure, timer.ms)
    client = mqtt.make_client(settings, client_id, clean_session=True)
    client.connect_timeout = timeout_s
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    # A failed TLS handshake leaves paho's SSL socket to be freed with the exception, which warns about it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client.connect(settings.mqtt_broker_host, settings.mqtt_broker_port, keepalive=settings.mqtt_keepalive_s)
        except Exception as exc:  # every way a connect fails gets its own sentence
            failure = mqtt.explain_connection_error(exc, settings)
    if failure:
        _close_socket(client)
        return CheckResult("mqtt", False, failure, timer.ms)
    client.loop_start()
    try:
        done.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
        _close_socket(client)
    if "received" in state:
        how = " over TLS" if settings.mqtt_use_tls else ""
        user = f" as {settings.mqtt_username}" if settings.mqtt_username else ""
        return CheckResult(
            "mqtt",
            True,
            f"connected to {where}{how}{user}, published and received a test message in {timer.ms:.0f} ms",
            timer.ms,
            {"broker": where, "tls": settings.mqtt_use_tls, "topic": topic},
        )
    reason = state.get(
        "error",
        f"connected to {where} but the test message on {topic} did not come back within {timeout_s:g} s "
        f"(the broker's ACL may deny it: grant it with `{ACL_GRANT}`; or the broker is overloaded)",
    )
    return CheckResult("mqtt", False, reason, timer.ms, {"broker": where})


def _close_socket(client: paho.Client) -> None:
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


# --- store -----------------------------------------------------------------------------------


def check_store(settings: Settings) -> CheckResult:
    """The store adapter's own health (SQLite: the file answers a query; InfluxDB: ping, with the fallback)."""
    timer = _Timer()
    if settings.store == "sqlite" and not Path(settings.sqlite_path).is_file():
        return CheckResult(
            "store",
            False,
            f"the SQLite file {settings.sqlite_path} does not exist; start the collector (it creates it) or fix SQLITE_PATH",
            timer.ms,
        )
    try:
        store = open_store(settings)
    except Exception as exc:
        return CheckResult("store", False, f"cannot open the {settings.store} store: {exc}", timer.ms)
    try:
        health = store.health()
        newest = max(store.last_seen().values(), default=None) if health.ok else None
    except Exception as exc:
        return CheckResult("store", False, f"the {settings.store} store failed a health query: {exc}", timer.ms)
    finally:
        store.close()
    extra = health.as_dict()
    extra.pop("ok", None)
    extra.pop("detail", None)
    extra["newest_point_age_s"] = None if newest is None else round(time.time() - newest, 3)
    detail = health.detail
    if health.ok and settings.store == "influxdb" and health.using_fallback:
        detail += f" (the primary {health.primary_url} is not answering)"
    if not health.ok and settings.store == "influxdb":
        detail += "; check INFLUXDB_URL, INFLUXDB_URL_FALLBACK, INFLUXDB_TOKEN and that InfluxDB is running"
    return CheckResult("store", health.ok, f"{settings.store}: {detail}", timer.ms, extra)


# --- dashboard Socket.IO ---------------------------------------------------------------------


def dashboard_url(settings: Settings) -> str:
    host = settings.flask_host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{settings.flask_port}"


def check_socket(
    url: str, timeout_s: float = 5.0, *, username: str | None = None, password: str | None = None
) -> CheckResult:
    """Connect a Socket.IO client to the dashboard and wait for one `latest_data`."""
    timer = _Timer()
    try:
        import socketio
    except ImportError:
        return CheckResult(
            "socket",
            False,
            "python-socketio is not installed; install it with: uv add 'python-socketio[client]'",
            timer.ms,
        )
    headers: dict[str, str] = {}
    if username and password:
        cookie, problem = _login(url, username, password, timeout_s)
        if problem:
            return CheckResult("socket", False, problem, timer.ms)
        headers["Cookie"] = cookie
    received: dict[str, Any] = {}
    done = threading.Event()
    client = socketio.Client(reconnection=False)

    @client.on(LIVE_EVENT)
    def on_latest(payload: Any) -> None:
        received.setdefault("payload", payload)
        done.set()

    @client.on("connect_error")
    def on_connect_error(data: Any) -> None:
        received["refused"] = data.get("message") if isinstance(data, dict) else str(data)

    try:
        # Long-polling only: plain HTTP requests. After a WebSocket session ends, the client's closing frame
        # reaches Werkzeug's development server as the next "HTTP request", which it logs as an ERROR
        # ("Bad request syntax", "Bad HTTP/0.9 request type") in the dashboard's log at every check.
        client.connect(url, headers=headers, transports=["polling"], wait_timeout=timeout_s)
    except socketio.exceptions.ConnectionError as exc:
        refused = received.get("refused")
        if refused and str(exc).startswith("One or more namespaces failed"):
            hint = "" if password else "; pass --username and --password"
            return CheckResult(
                "socket", False, f"the dashboard at {url} refused the Socket.IO connection: {refused}{hint}", timer.ms
            )
        text = str(refused or exc)
        short = "connection refused" if "refused" in text.lower() else text[:200]
        return CheckResult(
            "socket",
            False,
            f"cannot connect to the dashboard at {url}: {short}; is `rtds dashboard` running there? "
            "(FLASK_HOST / FLASK_PORT, or --url)",
            timer.ms,
        )
    try:
        done.wait(max(0.0, timeout_s - timer.ms / 1000))
    finally:
        client.disconnect()
    payload = received.get("payload")
    if payload is None:
        return CheckResult(
            "socket",
            False,
            f"connected to {url} but no {LIVE_EVENT} event came within {timeout_s:g} s",
            timer.ms,
            {"url": url},
        )
    devices = len(payload.get("devices", [])) if isinstance(payload, dict) else 0
    store_ok = payload.get("store", {}).get("ok") if isinstance(payload, dict) else None
    return CheckResult(
        "socket",
        True,
        f"connected to {url} and received {LIVE_EVENT} in {timer.ms:.0f} ms ({devices} device(s))",
        timer.ms,
        {"url": url, "devices": devices, "store_ok": store_ok},
    )


def _login(url: str, username: str, password: str, timeout_s: float) -> tuple[str, str | None]:
    """Sign in through the login form; returns (cookie header, problem)."""
    import requests

    session = requests.Session()
    try:
        page = session.get(f"{url}/login", timeout=timeout_s)
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
        answer = session.post(
            f"{url}/login",
            data={"username": username, "password": password, "csrf_token": match.group(1) if match else ""},
            timeout=timeout_s,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return "", f"cannot reach the dashboard's login page at {url}/login: {exc}"
    if answer.status_code not in (302, 303):
        return (
            "",
            f"signing in to {url} as {username!r} failed (the login form answered HTTP {answer.status_code}, "
            "not a redirect); check the user name and password",
        )
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items()), None
