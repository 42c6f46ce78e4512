"""Several dashboard processes through Redis (DASHBOARD_MESSAGE_QUEUE): real processes, the real Redis on
127.0.0.1:6379 (a channel of each test's own), real Socket.IO clients.

One process leads: it reads the store once per tick and the message queue brings its payloads to the
clients of every process. Killed with SIGKILL, it is replaced within the leader lock's TTL, and its clients,
reconnecting to the survivor as a load balancer would send them, go on receiving.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from dashboard_fixtures import DashboardProcess, EventLog, StoreFeeder, http_json, start_dashboard

from dashboard.group import LEADER_TTL_MIN_S
from rtds.settings import Settings
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
DEVICES = [f"vehicle_{i:02d}" for i in range(1, 4)]
PUSH_INTERVAL_S = 0.5
CLIENTS_PER_PROCESS = 3


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


def test_two_processes_share_one_feed_and_the_survivor_takes_over(
    group_settings: Settings, spawn: Callable[..., ServiceProcess]
) -> None:
    store = SQLiteStore(group_settings.sqlite_path)
    feeder = StoreFeeder(store, DEVICES).start()
    first = start_dashboard(spawn, group_settings, name="dashboard-a")
    wait_until(lambda: role(first) == "leader", 10, message=lambda: f"dashboard A leads: {live_stats(first)}")
    second = start_dashboard(spawn, group_settings, name="dashboard-b")
    wait_until(lambda: role(second) == "follower", 10, message=lambda: f"dashboard B follows: {live_stats(second)}")
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
        shared = [ticks(log, since=window_start) for log in everyone]
        low = max(seen[0] for seen in shared)
        high = min(seen[-1] for seen in shared)
        windows = [[tick for tick in seen if low <= tick <= high] for seen in shared]
        assert len(windows[0]) >= 4 and all(window == windows[0] for window in windows), windows
        assert windows[0] == sorted(set(windows[0])), "each tick once, in order"
        assert reads_a_after - reads_a >= len(windows[0]), "the leader built the ticks everyone received"
        payloads = {}
        for log in everyone:
            for _, payload in log.snapshot():
                if low <= payload["tick"] <= high:
                    payloads.setdefault(payload["tick"], payload)
                    assert payload == payloads[payload["tick"]], "one payload per tick, the same on both sides"
        assert all(
            {device["device_id"] for device in payload["devices"]} == set(DEVICES) for payload in payloads.values()
        )

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
    assert "this dashboard process reads the store for the group" in second.process.log_text()
