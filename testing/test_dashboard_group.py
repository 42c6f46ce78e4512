"""Several dashboard processes through Redis (DASHBOARD_MESSAGE_QUEUE): real processes, the real Redis on
127.0.0.1:6379 (a channel of each test's own), real Socket.IO clients.

One process leads: it reads the store once per tick and the message queue brings its payloads to the
clients of every process. Killed with SIGKILL, it is replaced within the leader lock's TTL, and its clients,
reconnecting to the survivor as a load balancer would send them, go on receiving.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import socketio
from dashboard_fixtures import DashboardProcess, EventLog, StoreFeeder, http_json, start_dashboard
from test_dashboard_sessions import csrf_token, request, sign_in, socket_client, with_login

from dashboard.group import LEADER_TTL_MIN_S
from rtds.broker import PROJECT_ROOT, free_port, port_open
from rtds.settings import Settings
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
DEVICES = [f"vehicle_{i:02d}" for i in range(1, 4)]
PUSH_INTERVAL_S = 0.5
CLIENTS_PER_PROCESS = 3
SHIPPED_NGINX = PROJECT_ROOT / "cloudflare" / "nginx" / "rtds-dashboard.conf"
SHIPPED_UPSTREAM_PORTS = (5010, 5011)
LEADER_LOG_LINE = "this dashboard process reads the store for the group"


@pytest.fixture
def group_settings(settings: Settings) -> Iterator[Settings]:
    """Settings for a group of dashboards on the machine's Redis, on a channel no other test uses."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc}); start it the way .ci/run does")
    channel = f"rtds-test-{uuid.uuid4().hex[:12]}"
    yield settings.with_overrides(
        dashboard_message_queue=REDIS_URL,
        dashboard_message_channel=channel,
        dashboard_push_interval_s=PUSH_INTERVAL_S,
    )
    keys = list(client.scan_iter(match=f"{channel}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def live_stats(dashboard: DashboardProcess) -> dict[str, Any]:
    status, body = http_json(dashboard.url + "/api/health")
    assert status == 200, body
    return dict(body["live"])


def role(dashboard: DashboardProcess) -> str | None:
    try:
        return str(live_stats(dashboard)["group"]["role"])
    except (AssertionError, OSError, KeyError):
        return None


def ticks(log: EventLog, *, since: float = 0.0) -> list[int]:
    return [payload["tick"] for at, payload in log.snapshot() if at >= since]


def start_leader_and_follower(
    spawn: Callable[..., ServiceProcess], settings: Settings, second_settings: Settings | None = None
) -> tuple[DashboardProcess, DashboardProcess]:
    """Dashboard A, which takes the leader lock, then dashboard B (`second_settings` if given), which follows."""
    first = start_dashboard(spawn, settings, name="dashboard-a")
    wait_until(lambda: LEADER_LOG_LINE in first.process.log_text(), 10, message="dashboard A leads")
    second = start_dashboard(spawn, second_settings or settings, name="dashboard-b")
    if not settings.login_enabled:  # with login on, /api/health tells anonymous callers only the status
        wait_until(lambda: role(second) == "follower", 10, message=lambda: f"B follows: {live_stats(second)}")
    return first, second


def assert_same_ticks(logs: list[EventLog], *, since: float) -> int:
    """Every client got the same ticks (the same payloads) since `since`, each once and in order; their number."""
    seen = [ticks(log, since=since) for log in logs]
    low = max(each[0] for each in seen)
    high = min(each[-1] for each in seen)
    windows = [[tick for tick in each if low <= tick <= high] for each in seen]
    assert len(windows[0]) >= 3 and all(window == windows[0] for window in windows), windows
    assert windows[0] == sorted(set(windows[0])), "each tick once, in order"
    payloads: dict[int, dict[str, Any]] = {}
    for log in logs:
        for _, payload in log.snapshot():
            if low <= payload["tick"] <= high:
                assert payload == payloads.setdefault(payload["tick"], payload), "one payload per tick everywhere"
                assert {device["device_id"] for device in payload["devices"]} == set(DEVICES)
    return len(windows[0])


def test_two_processes_share_one_feed_and_the_survivor_takes_over(
    group_settings: Settings, spawn: Callable[..., ServiceProcess]
) -> None:
    store = SQLiteStore(group_settings.sqlite_path)
    feeder = StoreFeeder(store, DEVICES).start()
    first, second = start_leader_and_follower(spawn, group_settings)
    logs_a = [EventLog().connect(first.url) for _ in range(CLIENTS_PER_PROCESS)]
    logs_b = [EventLog().connect(second.url) for _ in range(CLIENTS_PER_PROCESS)]
    everyone = logs_a + logs_b
    try:
        # Every client has its connect payload at once, also from the process that does not lead.
        for log in everyone:
            wait_until(lambda log=log: log.snapshot(), 2, message="a payload at connect")

        # Both sides receive the same ticks, and only the leader reads the store for them.
        reads_b = live_stats(second)["ticks"]
        reads_a = live_stats(first)["ticks"]
        window_start = time.monotonic()
        wait_until(lambda: min(len(ticks(log, since=window_start)) for log in everyone) >= 6, 15)
        reads_a_after, reads_b_after = live_stats(first)["ticks"], live_stats(second)["ticks"]
        assert reads_b_after == reads_b, "the follower read the store"
        tick_count = assert_same_ticks(everyone, since=window_start)
        assert reads_a_after - reads_a >= tick_count, "the leader built the ticks everyone received"

        # kill -9 the leader: the other takes over within the lock's TTL and its clients go on receiving.
        last_tick = max(max(ticks(log)) for log in everyone)
        first.process.kill()
        killed_at = time.monotonic()
        wait_until(lambda: role(second) == "leader", LEADER_TTL_MIN_S + 5, message=lambda: str(live_stats(second)))
        takeover_s = time.monotonic() - killed_at
        assert takeover_s < LEADER_TTL_MIN_S + 2 * PUSH_INTERVAL_S + 1.0, f"takeover took {takeover_s:.1f} s"
        for log in logs_b:
            wait_until(lambda log=log: len(ticks(log, since=killed_at)) >= 4, 10)
            after = ticks(log, since=killed_at)
            assert after == sorted(set(after)) and after[0] > last_tick - 1, "the tick numbers go on, no restart"
            gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(log.snapshot())]
            assert max(gaps) < LEADER_TTL_MIN_S + 2.0, f"longest silence {max(gaps):.1f} s"

        # The killed process's clients, sent to the survivor as a load balancer would, go on receiving.
        wait_until(lambda: not any(log.client.connected for log in logs_a), 10, message="A's clients see it gone")
        for log in logs_a:
            log.close()
        moved = [EventLog().connect(second.url) for _ in logs_a]
        everyone += moved
        reconnected_at = time.monotonic()
        for log in moved:
            wait_until(lambda log=log: len(ticks(log, since=reconnected_at)) >= 3, 10)
            assert min(ticks(log)) > last_tick, "the moved clients get the group's current ticks"
    finally:
        for log in everyone:
            if log.client.connected:
                log.close()
        feeder.stop()
        store.close()
    # The survivor is now the only process reading the store; its own log says it took over.
    assert LEADER_LOG_LINE in second.process.log_text()


def test_without_redis_each_process_serves_its_own_clients_and_says_why(
    settings: Settings, spawn: Callable[..., ServiceProcess]
) -> None:
    store = SQLiteStore(settings.sqlite_path)
    feeder = StoreFeeder(store, DEVICES).start()
    nowhere = settings.with_overrides(
        dashboard_message_queue=f"redis://127.0.0.1:{free_port()}/0", dashboard_push_interval_s=PUSH_INTERVAL_S
    )
    dashboard = start_dashboard(spawn, nowhere)
    log = EventLog().connect(dashboard.url)
    try:
        wait_until(lambda: len(log.snapshot()) >= 4, 10, message=lambda: dashboard.process.log_text()[-2000:])
    finally:
        log.close()
        feeder.stop()
        store.close()
    assert role(dashboard) == "alone"
    assert {device["device_id"] for device in log.snapshot()[-1][1]["devices"]} == set(DEVICES)
    text = dashboard.process.log_text()
    assert text.count("DASHBOARD_MESSAGE_QUEUE cannot be reached") == 1, "one warning, not one per tick"
    assert "Cannot publish to redis" not in text, "nothing is published while Redis is away"


# --- behind the shipped nginx config -------------------------------------------------------------


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[Callable[[list[int]], str]]:
    """The shipped cloudflare/nginx/rtds-dashboard.conf, on a free port in front of the given dashboard ports."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing; install it with: apt-get install -y nginx-light (as .ci/run does)")
    processes: list[subprocess.Popen[bytes]] = []

    def start(upstream_ports: list[int]) -> str:
        site = SHIPPED_NGINX.read_text()
        for shipped, port in zip(SHIPPED_UPSTREAM_PORTS, upstream_ports, strict=True):
            assert f"server 127.0.0.1:{shipped} " in site
            site = site.replace(f"server 127.0.0.1:{shipped} ", f"server 127.0.0.1:{port} ")
        port = free_port()
        assert "listen 127.0.0.1:5000;" in site
        site = site.replace("listen 127.0.0.1:5000;", f"listen 127.0.0.1:{port};")
        prefix = tmp_path / "nginx"
        prefix.mkdir(exist_ok=True)
        (prefix / "site.conf").write_text(site)
        (prefix / "nginx.conf").write_text(
            f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{}}\n"
            f"http {{\n    access_log off;\n    include {prefix}/site.conf;\n}}\n"
        )
        command = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30, check=False)
        assert checked.returncode == 0, checked.stderr
        process = subprocess.Popen([*command, "-g", "daemon off;"], stderr=subprocess.PIPE)
        processes.append(process)
        wait_until(lambda: port_open("127.0.0.1", port) or process.poll() is not None, 10, message="nginx listening")
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        process.communicate(timeout=10)


def test_behind_the_shipped_nginx_sessions_stick_and_move_to_the_survivor(
    group_settings: Settings, spawn: Callable[..., ServiceProcess], start_nginx: Callable[[list[int]], str]
) -> None:
    """Browsers' way: long-polling first, then the WebSocket upgrade, each session sticking to its process.
    Clients come from several addresses (CF-Connecting-IP, as cloudflared sends it), so both processes have some."""
    store = SQLiteStore(group_settings.sqlite_path)
    feeder = StoreFeeder(store, DEVICES).start()
    first, second = start_leader_and_follower(spawn, group_settings)
    site = start_nginx([first.port, second.port])
    logs: list[EventLog] = []
    try:
        for index in range(40):
            log = EventLog(reconnection=True)
            log.connect(site, transports=("polling", "websocket"), headers={"CF-Connecting-IP": f"203.0.113.{index}"})
            logs.append(log)
            wait_until(lambda: live_stats(first)["clients"] + live_stats(second)["clients"] == len(logs), 5)
            if len(logs) >= 6 and min(live_stats(first)["clients"], live_stats(second)["clients"]) >= 2:
                break
        on_first = live_stats(first)["clients"]
        assert min(on_first, live_stats(second)["clients"]) >= 2, "the address hash spreads clients over both"
        wait_until(lambda: all(log.client.transport() == "websocket" for log in logs), 10, message="upgraded")
        window_start = time.monotonic()
        wait_until(lambda: min(len(ticks(log, since=window_start)) for log in logs) >= 4, 15)
        assert_same_ticks(logs, since=window_start)

        # kill -9 the leader: its clients reconnect through nginx, which sends them to the survivor.
        last_tick = max(max(ticks(log)) for log in logs)
        first.process.kill()
        killed_at = time.monotonic()
        wait_until(lambda: live_stats(second)["clients"] == len(logs), 20, message=lambda: str(live_stats(second)))
        for log in logs:
            wait_until(lambda log=log: len(ticks(log, since=killed_at)) >= 3, 15)
            assert min(ticks(log, since=killed_at)) > last_tick - 1, "the group's ticks go on"
        assert role(second) == "leader"
        moved_at = time.monotonic()
        wait_until(lambda: min(len(ticks(log, since=moved_at)) for log in logs) >= 3, 15)
        assert_same_ticks(logs, since=moved_at)
    finally:
        for log in logs:
            log.client.reconnection = False
            if log.client.connected:
                log.close()
        feeder.stop()
        store.close()
    assert on_first >= 2


# --- login across the group ----------------------------------------------------------------------


def test_a_session_works_in_every_process_and_logout_in_one_ends_it_in_all(
    group_settings: Settings, spawn: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    """As on two hosts: each process has its own DASHBOARD_SESSION_PATH, so only Redis carries the logout."""
    store = SQLiteStore(group_settings.sqlite_path)
    feeder = StoreFeeder(store, DEVICES).start()
    secured = with_login(group_settings)
    first, second = start_leader_and_follower(
        spawn,
        secured.with_overrides(dashboard_session_path=str(tmp_path / "host-a" / "sessions.db")),
        secured.with_overrides(dashboard_session_path=str(tmp_path / "host-b" / "sessions.db")),
    )
    cookie, _ = sign_in(first)
    clients: list[socketio.Client] = []
    try:
        assert request(second, "GET", "/api/devices/status", cookie=cookie).status == 200, "signed in at A, valid at B"
        on_first, received_first = socket_client(first, cookie)
        on_second, received_second = socket_client(second, cookie)
        clients += [on_first, on_second]
        wait_until(lambda: len(received_first) >= 2 and len(received_second) >= 2, 10, message="both receive")
        closed_first, closed_second = threading.Event(), threading.Event()
        on_first.on("disconnect", closed_first.set)
        on_second.on("disconnect", closed_second.set)

        page = request(second, "GET", "/", cookie=cookie)
        logged_out = request(second, "POST", "/logout", cookie=cookie, form={"csrf_token": csrf_token(page.body)})
        assert logged_out.status == 302, logged_out
        wait_until(closed_second.is_set, 5, message="logout closes the session's socket in its own process")
        wait_until(closed_first.is_set, 5, message="... and, within a push interval, in the other process")
        for dashboard in (first, second):
            replayed = request(dashboard, "GET", "/api/devices/status", cookie=cookie)
            assert replayed.status == 401, (dashboard.url, replayed)
            with pytest.raises(socketio.exceptions.ConnectionError):
                clients.append(socket_client(dashboard, cookie)[0])
        again, _ = sign_in(second)
        assert request(first, "GET", "/api/devices/status", cookie=again).status == 200, "a new login works everywhere"
    finally:
        for client in clients:
            if client.connected:
                client.disconnect()
        feeder.stop()
        store.close()
