"""The `latest_data` push: real Socket.IO clients against the dashboard, in process and as a real server."""

from __future__ import annotations

import itertools
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from dashboard_fixtures import (
    INFLUX_TOKEN,
    CallRecordingStore,
    EventLog,
    StoreFeeder,
    http_json,
    http_status,
    make_app,
    make_record,
    session_opener,
    start_dashboard,
)
from flask import Flask
from influxdb_fake import FakeInfluxDB
from werkzeug.security import generate_password_hash

from dashboard.fleet import FleetFigures, FleetSummary
from rtds.broker import free_port
from rtds.settings import Settings
from rtds.store import LatencySample, influxdb_flux
from rtds.store.influxdb import InfluxStore
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

__all__ = ["make_app"]  # fixtures used by name

DEVICES = [f"vehicle_{i:02d}" for i in range(1, 6)]


def backfill(store: SQLiteStore, seconds: int, latency_s: float = 0.3) -> None:
    """`seconds` of past data at 1 msg/s per device, each written `latency_s` after it was sent."""
    now = time.time()
    for age in range(seconds, 0, -1):
        records = [make_record(device_id, now - age, seq=seconds - age) for device_id in DEVICES]
        store.write(records, collector="python", write_time=now - age + latency_s)


def test_new_clients_get_the_state_at_once_and_the_store_is_read_once_per_tick(
    settings: Settings, make_app: Callable[..., Flask]
) -> None:
    store = CallRecordingStore(SQLiteStore(settings.sqlite_path))
    backfill(store.inner, 3)
    app = make_app(settings.with_overrides(dashboard_push_interval_s=0.5), store)
    server = app.extensions["rtds"].socketio
    clients = [server.test_client(app) for _ in range(20)]
    try:
        for client in clients:
            assert client.is_connected()
        first = clients[-1].get_received()
        assert [event["name"] for event in first] == ["latest_data"], "the state arrives with the connection"
        assert {device["device_id"] for device in first[0]["args"][0]["devices"]} == set(DEVICES)
        connect_reads = store.count("latest")
        assert connect_reads <= 2, "20 clients connecting together share one read"

        feed = app.extensions["rtds"].feed
        wait_until(lambda: feed.emits >= 5, 10, message=lambda: f"{feed.emits} ticks")
        emits, reads = feed.emits, store.count("latest")
        assert reads <= emits + connect_reads, f"{reads} store reads for {emits} ticks to 20 clients"
        for client in clients:
            received = [event for event in client.get_received() if event["name"] == "latest_data"]
            assert len(received) >= 4
            for event in received:
                assert {device["device_id"] for device in event["args"][0]["devices"]} == set(DEVICES)
    finally:
        for client in clients:
            if client.is_connected():
                client.disconnect()
    assert wait_until(lambda: feed.clients == 0, 5)
    # With nobody connected, the feed stops reading the store.
    reads, ticks, loops = store.count("latest"), feed.ticks, feed.loops
    wait_until(lambda: feed.loops >= loops + 2, 5)
    assert store.count("latest") == reads and feed.ticks == ticks


def test_latest_data_arrives_about_every_second_with_every_device(
    settings: Settings, spawn: Callable[..., ServiceProcess]
) -> None:
    store = SQLiteStore(settings.sqlite_path)
    backfill(store, 20)
    feeder = StoreFeeder(store, DEVICES).start()
    # FLASK_DEBUG must not switch on the Werkzeug debugger.
    dashboard = start_dashboard(spawn, settings, env={"FLASK_DEBUG": "1"})
    log = EventLog().connect(dashboard.url)
    try:
        wait_until(lambda: len(log.snapshot()) >= 6, 15, message=lambda: f"{len(log.snapshot())} events")
    finally:
        log.close()
        feeder.stop()
    events = log.snapshot()
    assert log.connected_at is not None and events[0][0] - log.connected_at < 1.0, "the first payload comes at once"
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(events[1:])]
    assert 0.85 < statistics.median(gaps) < 1.15 and all(0.5 < gap < 1.6 for gap in gaps), gaps
    ticks = [payload["tick"] for _, payload in events[1:]]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    for _, payload in events:
        assert {device["device_id"] for device in payload["devices"]} == set(DEVICES)
        assert all(device["online"] for device in payload["devices"])
        assert payload["store"]["ok"] is True
    last = events[-1][1]
    device = last["devices"][0]
    assert {"speed", "cpu_usage", "ram_usage", "disk_percent", "detection_label", "detection_confidence"} <= set(device)
    summary = last["summary"]
    assert summary["devices"] == summary["online"] == len(DEVICES)
    assert summary["messages_per_s"] == pytest.approx(len(DEVICES), rel=0.25)
    assert summary["latency_p50_ms"] == pytest.approx(300, abs=60)
    assert summary["latency_p95_ms"] >= summary["latency_p50_ms"]

    # Socket.IO is same-origin by default: a page on another site cannot connect.
    # (websocket-client sends the Origin of the URL it connects to, as a browser on the page would.)
    with pytest.raises(socketio.exceptions.ConnectionError):
        EventLog(websocket_extra_options={"origin": "http://evil.example"}).connect(dashboard.url)
    EventLog(websocket_extra_options={"origin": dashboard.url}).connect(dashboard.url).close()

    # No Werkzeug debugger, whatever FLASK_DEBUG says.
    debugger_probe = dashboard.url + "/?__debugger__=yes&cmd=resource&f=debugger.js"
    assert http_status(debugger_probe) == 200
    status, body = http_json(dashboard.url + "/api/nothing")
    assert status == 404 and set(body) == {"error"}
    assert "Debugger PIN" not in dashboard.process.log_text()


def test_many_clients_one_query_per_tick_on_influxdb(settings: Settings, spawn: Callable[..., ServiceProcess]) -> None:
    with FakeInfluxDB(token=INFLUX_TOKEN) as fake:
        influx = settings.with_overrides(store="influxdb", influxdb_url=fake.url, influxdb_token=INFLUX_TOKEN)
        store = InfluxStore.from_settings(influx)
        feeder = StoreFeeder(store, DEVICES).start()
        dashboard = start_dashboard(spawn, influx)
        logs = [EventLog().connect(dashboard.url) for _ in range(10)]
        try:
            start = len(fake.queries)
            began = time.monotonic()
            wait_until(lambda: min(len(log.snapshot()) for log in logs) >= 5, 15)
            elapsed = time.monotonic() - began
            latest_queries = [text for text, _ in fake.queries[start:] if text == influxdb_flux.LATEST]
        finally:
            for log in logs:
                log.close()
            feeder.stop()
            store.close()
        assert len(latest_queries) <= elapsed / 1.0 + 2, (
            f"{len(latest_queries)} LATEST queries in {elapsed:.1f} s for 10 clients"
        )
        for log in logs:
            for _, payload in log.snapshot():
                assert {device["device_id"] for device in payload["devices"]} == set(DEVICES)


def test_with_login_the_socket_needs_a_session(settings: Settings, spawn: Callable[..., ServiceProcess]) -> None:
    store = SQLiteStore(settings.sqlite_path)
    store.write([make_record("vehicle_01", time.time() - 1)], collector="python", write_time=time.time())
    secured = settings.with_overrides(
        dashboard_username="operator",
        dashboard_password_hash=generate_password_hash("a long enough password", method="pbkdf2:sha256:1000"),
        flask_secret_key="socket-test-secret-0123456789",
    )
    dashboard = start_dashboard(spawn, secured)
    refused = EventLog()
    reasons: list[Any] = []
    refused.client.on("connect_error", reasons.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(dashboard.url)
    assert reasons and "login required" in str(reasons[0])
    assert refused.snapshot() == []

    opener, jar = session_opener()
    with opener.open(dashboard.url + "/login", timeout=5) as response:
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', response.read().decode())
    assert token
    form = f"username=operator&password=a+long+enough+password&csrf_token={token.group(1)}".encode()
    with opener.open(dashboard.url + "/login", data=form, timeout=5) as response:
        assert response.url == dashboard.url + "/"
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    log = EventLog().connect(dashboard.url, headers={"Cookie": cookie})
    try:
        wait_until(lambda: log.snapshot(), 5)
    finally:
        log.close()
    assert log.snapshot()[0][1]["devices"][0]["device_id"] == "vehicle_01"


def test_gunicorn_serves_the_page_and_socketio(settings: Settings, spawn: Callable[..., ServiceProcess]) -> None:
    """The production command of the README: gunicorn -w 1 --threads 100 'dashboard.app:create_app()'."""
    store = SQLiteStore(settings.sqlite_path)
    store.write([make_record("vehicle_01", time.time() - 1)], collector="python", write_time=time.time())
    port = free_port()
    gunicorn = spawn(
        "-m", "gunicorn", "-w", "1", "--threads", "100", "-b", f"127.0.0.1:{port}",
        "--control-socket", str(Path(settings.sqlite_path).parent / "gunicorn.ctl"),
        "dashboard.app:create_app()",
        settings=settings,
        name="gunicorn",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_status(url + "/") == 200, 30, message=gunicorn.log_text)
    log = EventLog().connect(url)
    try:
        wait_until(lambda: len(log.snapshot()) >= 2, 10)
    finally:
        log.close()
    assert log.snapshot()[-1][1]["devices"][0]["device_id"] == "vehicle_01"


def test_the_fleet_summary_counts_overlapping_reads_once_and_forgets_old_points() -> None:
    """The summary in every payload: rate and latency over the last minute, kept incrementally."""

    class Samples:
        def __init__(self) -> None:
            self.rows: list[LatencySample] = []
            self.reads: list[float] = []
            self.now = 0.0

        def latency_samples(self, since: float, until: float | None = None, **_: Any) -> list[LatencySample]:
            """Points from `since` on that were written by now."""
            self.reads.append(since)
            return [row for row in self.rows if row.time >= since and (row.write_time or 0) <= self.now]

        def refresh(self, summary: FleetSummary, now: float) -> FleetFigures:
            self.now = now
            return summary.refresh(self, now)  # type: ignore[arg-type]

    store = Samples()
    summary = FleetSummary()
    for second in range(0, 100):  # 5 devices at 1 msg/s, each written 250 ms (device 0: 1 s) after it was sent
        for device in range(5):
            delay = 1.0 if device == 0 else 0.25
            store.rows.append(
                LatencySample(
                    f"d{device}", 1000.0 + second, second, 1000.0 + second, None, 1000.0 + second + delay, False
                )
            )
    figures = [store.refresh(summary, 1000.0 + now) for now in (20, 25, 30, 35, 40, 70, 100)]
    assert store.reads[1] == pytest.approx(1000.0 + 20 - 5), "after the first read, only new points and a 5 s overlap"
    assert figures[0].messages_per_s == pytest.approx(5, rel=0.1)
    assert figures[-1].window_s == 60 and figures[-1].messages == 5 * 60 - 5
    assert figures[-1].messages_per_s == pytest.approx(5, rel=0.02)
    assert figures[-1].latency_p50_ms == pytest.approx(250) and figures[-1].latency_p95_ms == pytest.approx(1000)
    # Replayed points (from a device's offline queue) count as messages but not in the latency.
    store.rows.append(LatencySample("d9", 1099.5, 1, 1099.5, None, 1100.2, True))
    late = store.refresh(summary, 1100.5)
    assert late.messages - late.latency_samples == 1
    assert figures[-1].messages == figures[-1].latency_samples
