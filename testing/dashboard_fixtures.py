"""Fixtures and helpers of the dashboard tests: stores with data, running dashboards, headless Chromium.

Test modules import the fixtures they use by name (`from dashboard_fixtures import ...`).
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import socketio
from flask import Flask
from influxdb_fake import FakeInfluxDB

from dashboard.app import create_app
from rtds.broker import PROJECT_ROOT, free_port
from rtds.schema import TelemetryRecord
from rtds.settings import Settings
from rtds.store import Store, StoreReader
from rtds.store.influxdb import InfluxStore
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "testing" / "artifacts"
SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
INFLUX_TOKEN = "dashboard-test-token"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
STORE_KINDS = ("sqlite", "influxdb")


# --- records ---------------------------------------------------------------------------------


def make_record(device_id: str, timestamp: float, seq: int = 0, **values: Any) -> TelemetryRecord:
    """A record with every field set, so that reads can be checked field by field."""
    fields: dict[str, Any] = {
        "speed": 40.0 + seq % 50,
        "cpu_usage": 31.5,
        "ram_usage": 47.25,
        "memory_total": 8192.0,
        "memory_used": 3870.0,
        "memory_available": 4322.0,
        "memory_percent": 47.25,
        "disk_total": 500_000.0,
        "disk_used": 210_000.0,
        "disk_free": 290_000.0,
        "disk_percent": 42.0,
        "network_bytes_sent": 1_000_000.0,
        "network_bytes_recv": 2_000_000.0,
        "detection_label": "car",
        "detection_confidence": 0.875,
        "collector_receive_time": timestamp + 0.05,
    }
    fields.update(values)
    return TelemetryRecord(device_id=device_id, timestamp=timestamp, seq=seq, **fields)


def write_records(store: Store, records: Sequence[TelemetryRecord], *, delay_s: float = 0.2) -> None:
    """Store records as the collector would, with a write time `delay_s` after the newest one."""
    write_time = max(record.timestamp for record in records) + delay_s
    store.write(records, collector="python", write_time=write_time)


class StoreFeeder:
    """A thread that writes one fresh record per device every `interval_s`, like a fleet behind a collector."""

    def __init__(self, store: Store, device_ids: Sequence[str], interval_s: float = 1.0) -> None:
        self.store = store
        self.device_ids = list(device_ids)
        self.interval_s = interval_s
        self.seq = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-feeder", daemon=True)

    def start(self) -> StoreFeeder:
        self._write()
        self._thread.start()
        return self

    def _write(self) -> None:
        now = time.time()
        self.seq += 1
        records = [
            make_record(device_id, now - 0.3, self.seq, speed=float((self.seq * 7 + index * 13) % 120))
            for index, device_id in enumerate(self.device_ids)
        ]
        self.store.write(records, collector="python", write_time=now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# --- stores ----------------------------------------------------------------------------------


@dataclass
class StoreUnderTest:
    kind: str
    settings: Settings
    store: Store
    fake: FakeInfluxDB | None = None


@pytest.fixture(params=STORE_KINDS)
def store_under_test(request: pytest.FixtureRequest, settings: Settings) -> Iterator[StoreUnderTest]:
    """The SQLite store, then InfluxDB (the fake server), with settings pointing at it."""
    if request.param == "sqlite":
        store: Store = SQLiteStore(settings.sqlite_path)
        yield StoreUnderTest("sqlite", settings, store)
        store.close()
        return
    fake = FakeInfluxDB(token=INFLUX_TOKEN, org="my-org", buckets=("vehicle-data",))
    url = fake.start()
    influx_settings = settings.with_overrides(store="influxdb", influxdb_url=url, influxdb_token=INFLUX_TOKEN)
    store = InfluxStore.from_settings(influx_settings)
    yield StoreUnderTest("influxdb", influx_settings, store, fake)
    store.close()
    fake.stop()


class CallRecordingStore:
    """Wraps a store and records the name of every method called, so a test can prove none was."""

    def __init__(self, inner: StoreReader, failures: dict[str, BaseException] | None = None) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.failures = failures or {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in self.failures:
                raise self.failures[name]
            return attribute(*args, **kwargs)

        return call

    def count(self, name: str) -> int:
        return self.calls.count(name)


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """create_app(settings, store); every app's live feed and presence subscriber are stopped afterwards."""
    apps: list[Flask] = []

    def make(settings: Settings, store: StoreReader | None = None) -> Flask:
        app = create_app(settings, store)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["rtds"].close()


# --- a dashboard process ---------------------------------------------------------------------


@dataclass
class DashboardProcess:
    url: str
    process: ServiceProcess
    port: int


def start_dashboard(
    spawn: Callable[..., ServiceProcess],
    settings: Settings,
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    name: str = "dashboard",
) -> DashboardProcess:
    """`python dashboard/app.py` on a free port; returns once /api/health answers."""

    def launch(chosen: int) -> ServiceProcess:
        chosen_settings = settings.with_overrides(flask_host="127.0.0.1", flask_port=chosen)
        return spawn("dashboard/app.py", settings=chosen_settings, name=name, env=env or {})

    process, url, port = launch_dashboard(launch, port)
    return DashboardProcess(url, process, port)


PORT_ATTEMPTS = 3


def launch_dashboard(
    launch: Callable[[int], ServiceProcess], port: int | None, *, health_path: str = "/api/health"
) -> tuple[ServiceProcess, str, int]:
    """Start a dashboard (or the status service) with `launch(port)` and wait for `health_path`: (process, url, port).

    A port from free_port() is free when chosen but may be taken (as some process's outgoing port)
    before the dashboard binds it; then a new port is tried, unless the caller asked for this one.
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        chosen = port or free_port()
        process = launch(chosen)
        url = f"http://127.0.0.1:{chosen}"
        wait_until(
            lambda p=process, u=url: not p.running() or http_status(u + health_path) is not None,
            30,
            message=lambda p=process, u=url: f"dashboard answering on {u}; log:\n{p.log_text()[-3000:]}",
        )
        if process.running():
            return process, url, chosen
        if port is not None or "Address already in use" not in process.log_text() or attempt == PORT_ATTEMPTS:
            break
    raise AssertionError(f"the dashboard exited; log:\n{process.log_text()[-3000:]}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


def http_json(url: str, opener: urllib.request.OpenerDirector | None = None) -> tuple[int, Any]:
    opener = opener or urllib.request.build_opener()
    try:
        with opener.open(url, timeout=5) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read() or b"null")


def session_opener() -> tuple[urllib.request.OpenerDirector, http.cookiejar.CookieJar]:
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


# --- Socket.IO clients ---------------------------------------------------------------------


class EventLog:
    """A python-socketio client that records every `latest_data` with its arrival time."""

    def __init__(self, *, reconnection: bool = False, **client_options: Any) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.connected_at: float | None = None
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=reconnection, **client_options)
        self.client.on("latest_data", self._on_data)

    def _on_data(self, payload: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((time.monotonic(), payload))

    def connect(self, url: str, *, transports: Sequence[str] = ("websocket",), **options: Any) -> EventLog:
        """WebSocket only unless told (a browser starts with HTTP long-polling, then upgrades)."""
        self.connected_at = time.monotonic()
        self.client.connect(url, transports=list(transports), wait_timeout=10, **options)
        return self

    def snapshot(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        # Werkzeug's server never answers websocket-client's close frame, which then waits 3 s for it;
        # dropping the socket first ends the wait (gunicorn answers, see the gunicorn test).
        websocket = getattr(self.client.eio, "ws", None)
        if websocket is not None:
            websocket.abort()
        self.client.disconnect()


# --- headless Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a browser Playwright downloads)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing; install Debian's browser with: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@dataclass
class PageWatch:
    """What a page did that a test may want to deny: outside requests, errors, dialogs."""

    page: Any
    outside_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[PageWatch]:
    """A fresh page whose network reaches only 127.0.0.1: anything else is aborted and recorded."""
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    watch = PageWatch(page)

    def route(route: Any) -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            watch.outside_requests.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", route)
    page.on("console", lambda message: message.type == "error" and watch.console_errors.append(message.text))
    page.on("pageerror", lambda error: watch.page_errors.append(str(error)))
    page.on("requestfailed", lambda request: watch.failed_requests.append(request.url))

    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield watch
    context.close()


def save_screenshot(page: Any, name: str, *, publish: bool = False, full_page: bool = False) -> Path:
    """Into testing/artifacts/; with `publish` and RTDS_PUBLISH_SCREENSHOTS=1, also into docs/screenshots/
    (committed, shown in the README), so that an ordinary test run leaves the work tree clean."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if publish and os.environ.get("RTDS_PUBLISH_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")
    return path
