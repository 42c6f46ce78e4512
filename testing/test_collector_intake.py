"""The collector's own MQTT session (collector/intake.py) against a real Mosquitto.

The collector tests prove the whole path (ack after durable write, redelivery, TLS); these pin down
what the session itself promises: a backlog in order, acks that empty the broker's session, redelivery
of what was not acked, a packet larger than one read, keep-alive, and a broker that stops answering.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from collector_harness import session_backlog
from conftest import BrokerFactory

from collector.intake import SubscriberSession
from collector.mqtt_wire import Delivery
from rtds.broker import MosquittoBroker
from rtds.schema import DATA_SUBSCRIPTIONS, data_topic
from rtds.testkit import isolated_settings, publish_all, wait_until


@dataclass
class Recorder:
    """An IntakeListener that keeps what it is told."""

    deliveries: list[Delivery] = field(default_factory=list)
    connected: list[bool] = field(default_factory=list)
    subscribed: list[list[int]] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    lost: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_connected(self, session_present: bool) -> None:
        self.connected.append(session_present)

    def on_subscribed(self, granted_qos: list[int]) -> None:
        self.subscribed.append(granted_qos)

    def on_messages(self, deliveries: list[Delivery]) -> None:
        with self.lock:
            self.deliveries.extend(deliveries)

    def on_refused(self, return_code: int) -> None:
        self.refused.append(return_code)

    def on_unreachable(self, reason: str) -> None:
        self.unreachable.append(reason)

    def on_lost(self, reason: str, acks_unsent: int) -> None:
        self.lost.append((reason, acks_unsent))

    def take(self) -> list[Delivery]:
        with self.lock:
            taken, self.deliveries = self.deliveries, []
        return taken


@contextmanager
def running_session(
    broker: MosquittoBroker, folder: Path, client_id: str, *, keepalive_s: int = 30
) -> Iterator[tuple[SubscriberSession, Recorder]]:
    settings = isolated_settings(folder, broker, mqtt_client_id=client_id, mqtt_keepalive_s=keepalive_s)
    recorder = Recorder()
    session = SubscriberSession(settings, client_id, DATA_SUBSCRIPTIONS, recorder)
    session.start()
    try:
        wait_until(lambda: recorder.subscribed, 10, message=lambda: f"subscribed; {recorder}")
        yield session, recorder
    finally:
        session.stop()


def numbered(count: int) -> list[tuple[str, bytes]]:
    return [(data_topic(f"v{index % 7}"), f"message {index}".encode()) for index in range(count)]


def test_a_backlog_arrives_whole_and_in_order_and_acking_it_empties_the_session(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    with running_session(broker, tmp_path, "intake-backlog"):
        pass  # the broker now keeps a session for this client id
    sent = numbered(5_000)
    publish_all(broker.host, broker.port, sent)

    with running_session(broker, tmp_path, "intake-backlog") as (session, recorder):
        assert recorder.connected == [True], "the broker resumed the persistent session"
        received: list[Delivery] = []

        def all_received() -> bool:
            batch = recorder.take()
            received.extend(batch)
            # Ack as the collector does: only what it has, in batches, while more keeps arriving.
            assert session.ack(batch) == 0
            return len(received) >= len(sent)

        wait_until(all_received, 30, message=lambda: f"{len(received)} of {len(sent)}")
    assert [(topic, payload) for topic, payload, *_ in received] == sent
    assert {qos for *_, qos, _ in received} == {1}
    assert session_backlog(broker.host, broker.port, "intake-backlog") == []


def test_what_was_not_acked_comes_again_after_a_reconnect_and_old_ids_are_not_acked(
    start_broker: BrokerFactory, tmp_path: Path
) -> None:
    broker = start_broker(extra_lines=("log_type debug",))
    with running_session(broker, tmp_path, "intake-redeliver") as (session, recorder):
        publish_all(broker.host, broker.port, numbered(10))
        wait_until(lambda: len(recorder.deliveries) == 10, 10)
        first = recorder.take()
        assert session.ack(first[:4]) == 0
        # The acks are on the wire once the broker's session shows the other six alone: cut the connection.
        wait_until(lambda: broker.log_text().count("Received PUBACK from intake-redeliver") >= 4, 10)
        connection = session.socket()
        assert connection is not None
        connection.shutdown(socket.SHUT_RDWR)
        wait_until(lambda: len(recorder.subscribed) == 2, 10, message=lambda: str(recorder))
        wait_until(lambda: len(recorder.deliveries) == 6, 10, message=lambda: str(recorder.deliveries))
        again = recorder.take()
        assert [payload for _, payload, *_ in again] == [payload for _, payload, *_ in first[4:]]
        assert session.ack(first[4:]) == 6, "ids of the earlier connection are refused, not sent"
        assert session.ack(again) == 0
    assert recorder.lost and recorder.connected == [False, True]
    assert session_backlog(broker.host, broker.port, "intake-redeliver") == []


def test_a_message_larger_than_one_read_arrives_byte_for_byte(start_broker: BrokerFactory, tmp_path: Path) -> None:
    # The shipped configs refuse payloads over 64 KiB; the intake must still take whatever a broker allows.
    broker = start_broker(extra_lines=("message_size_limit 2000000",))
    large = os.urandom(1_500_000)  # about six reads of 256 KiB
    with running_session(broker, tmp_path, "intake-large") as (_, recorder):
        publish_all(
            broker.host,
            broker.port,
            [(data_topic("small"), b"before"), (data_topic("large"), large), (data_topic("small"), b"after")],
        )
        wait_until(lambda: len(recorder.deliveries) == 3, 20)
        payloads = [payload for _, payload, *_ in recorder.take()]
    assert payloads == [b"before", large, b"after"]


def test_an_idle_connection_is_kept_alive_by_pings(start_broker: BrokerFactory, tmp_path: Path) -> None:
    broker = start_broker(extra_lines=("log_type debug",))
    with running_session(broker, tmp_path, "intake-idle", keepalive_s=1) as (_, recorder):
        # Mosquitto drops a client silent for 1.5 x its keep-alive; four pings span well over that.
        wait_until(lambda: broker.log_text().count("Received PINGREQ from intake-idle") >= 4, 15)
        assert recorder.lost == [] and recorder.connected == [False]


def test_a_broker_that_stops_answering_is_dropped_and_reconnected_when_it_answers_again(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    assert broker.process is not None
    with running_session(broker, tmp_path, "intake-frozen", keepalive_s=1) as (_, recorder):
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: recorder.lost, 10, message="the frozen broker noticed")
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert "did not answer a ping within 1 s" in recorder.lost[0][0]
        wait_until(lambda: len(recorder.subscribed) == 2, 30, message=lambda: str(recorder))
        assert recorder.connected[-1] is True


def test_an_unreachable_broker_is_reported_and_retried(tmp_path: Path, broker: MosquittoBroker) -> None:
    broker.stop()
    settings = isolated_settings(tmp_path, broker, mqtt_client_id="intake-unreachable")
    recorder = Recorder()
    session = SubscriberSession(settings, "intake-unreachable", DATA_SUBSCRIPTIONS, recorder)
    session.start()
    try:
        wait_until(lambda: len(recorder.unreachable) >= 2, 10, message=lambda: str(recorder))
        assert "refused" in recorder.unreachable[0].lower()
        broker.start()
        wait_until(lambda: recorder.subscribed, 40, message=lambda: str(recorder))
    finally:
        session.stop()
