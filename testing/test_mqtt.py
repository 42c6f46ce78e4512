"""When our MQTT clients try to connect again (rtds/mqtt.py's ReconnectPolicy), and that all three ways of
running a client follow it: paho's own thread, the fleet's selector loop and the collector's intake."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from collector.intake import SubscriberSession
from collector.mqtt_wire import Delivery
from devices.network import SelectorNetwork
from rtds import mqtt
from rtds.broker import MosquittoBroker, free_port
from rtds.schema import DATA_SUBSCRIPTIONS
from rtds.settings import Settings
from rtds.testkit import isolated_settings, wait_until


def waits(policy: mqtt.ReconnectPolicy, failures: int, now: float = 0.0) -> list[float]:
    return [policy.failed(now) for _ in range(failures)]


def test_with_one_broker_the_wait_doubles_from_1_s_up_to_10_s() -> None:
    assert waits(mqtt.ReconnectPolicy(1), 7) == [1, 2, 4, 8, 10, 10, 10]


def test_with_several_nodes_the_next_is_tried_at_once_and_only_a_whole_failed_round_waits_up_to_5_s() -> None:
    assert waits(mqtt.ReconnectPolicy(3), 15) == [0, 0, 1, 0, 0, 2, 0, 0, 4, 0, 0, 5, 0, 0, 5]


def test_a_connection_that_lasted_starts_afresh_and_one_dropped_at_once_counts_as_a_failure() -> None:
    policy = mqtt.ReconnectPolicy(1)
    assert waits(policy, 3) == [1, 2, 4]
    policy.connected(100.0)
    policy.connected(104.0)  # the same connection: its start stays
    assert policy.failed(100.0 + mqtt.STABLE_CONNECTION_S) == 1, "lasted: the backoff starts again"
    policy.connected(200.0)
    assert policy.failed(200.5) == 2, "a broker that drops the client at once is not asked again every second"
    cluster = mqtt.ReconnectPolicy(2)
    for started in (0.0, 1.0, 2.0, 3.0):
        cluster.connected(started)
        cluster.failed(started + 0.1)
    assert cluster.failures == 4, "two nodes that each accept and drop at once wait between rounds"


def dead_nodes(count: int) -> str:
    """MQTT_BROKER_FALLBACK_HOSTS of ports where nothing listens: each attempt is refused at once."""
    return ",".join(f"127.0.0.1:{free_port()}" for _ in range(count))


Connected = Callable[[], bool]


@contextmanager
def paho_thread(settings: Settings) -> Iterator[Connected]:
    client = mqtt.make_client(settings, "policy-paho", clean_session=True)
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    mqtt.start(client, settings)
    try:
        yield connected.is_set
    finally:
        mqtt.stop(client)


@contextmanager
def selector_loop(settings: Settings) -> Iterator[Connected]:
    network = SelectorNetwork(settings)
    client = mqtt.make_client(settings, "policy-selector", clean_session=True)
    network.start(client)

    def connected() -> bool:
        network.wait(0.02)  # the loop runs in the caller's thread
        return client.is_connected()

    try:
        yield connected
    finally:
        network.stop([client])


class Listener:
    def __init__(self) -> None:
        self.connected = threading.Event()

    def on_connected(self, session_present: bool) -> None:
        self.connected.set()

    def on_subscribed(self, granted_qos: list[int]) -> None: ...
    def on_messages(self, deliveries: list[Delivery]) -> None: ...
    def on_refused(self, return_code: int) -> None: ...
    def on_unreachable(self, reason: str) -> None: ...
    def on_lost(self, reason: str, acks_unsent: int) -> None: ...


@contextmanager
def collector_intake(settings: Settings) -> Iterator[Connected]:
    listener = Listener()
    session = SubscriberSession(settings, "policy-intake", DATA_SUBSCRIPTIONS, listener)
    session.start()
    try:
        yield listener.connected.is_set
    finally:
        session.stop()


@pytest.mark.parametrize("running", [paho_thread, selector_loop, collector_intake], ids=lambda run: run.__name__)
def test_past_three_dead_nodes_the_fourth_is_reached_at_once(
    running: Callable[[Settings], Any], tmp_path: Path, broker: MosquittoBroker
) -> None:
    """The doubling from 1 s that every client had waited 1 + 2 + 4 s here (the fleet's jitter: at least 3.5 s)."""
    settings = isolated_settings(tmp_path).with_overrides(
        mqtt_broker_host="127.0.0.1",
        mqtt_broker_port=free_port(),
        mqtt_broker_fallback_hosts=f"{dead_nodes(2)},{broker.host}:{broker.port}",
    )
    started = time.monotonic()
    with running(settings) as connected:
        wait_until(connected, 2.0, interval_s=0.01, message="connected to the live node")
    print(f"{running.__name__}: connected past three dead nodes in {time.monotonic() - started:.2f} s")


def test_when_every_node_is_down_a_client_waits_between_rounds(tmp_path: Path) -> None:
    settings = isolated_settings(tmp_path).with_overrides(
        mqtt_broker_host="127.0.0.1", mqtt_broker_port=free_port(), mqtt_broker_fallback_hosts=dead_nodes(1)
    )
    attempts: list[float] = []
    client = mqtt.make_client(settings, "policy-down", clean_session=True)
    client.on_connect_fail = lambda *_: attempts.append(time.monotonic())
    mqtt.start(client, settings)
    try:
        wait_until(lambda: len(attempts) >= 6, 15, message=lambda: str(attempts))
    finally:
        mqtt.stop(client)
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)][:5]
    # Two nodes: both at once, then 1 s, both, then 2 s, both.
    assert gaps[1] >= 0.9 and gaps[3] >= 1.9, gaps
    assert max(gaps[0], gaps[2], gaps[4]) < 0.5, gaps
