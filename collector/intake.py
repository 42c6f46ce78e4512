"""The collector's MQTT intake: a subscribe-only MQTT 3.1.1 session built to drain a backlog fast.

paho reads every packet with three or more recv() calls after a select(), and queues each PUBACK as a
packet of its own behind a wake-up byte: about 22 µs of CPU per QoS 1 message, which alone held a
bare paho subscriber near 45,000 msg/s and the collector, with parsing and storage in the same
process, at 24,000 (bench/README.md). This session reads up to 256 KiB per recv(), splits out every
complete packet (collector/mqtt_wire.py), hands the messages to the collector as one list, and sends
the PUBACKs of a stored batch in one write. Devices, the dashboard and the tools keep paho (rtds/mqtt.py).

It does what the collector needs and no more, all in one thread that makes every socket call (an SSL
socket must not be read and written from two threads at once):
- CONNECT on a persistent session (clean session off) with the user name, password and TLS settings
  that rtds.mqtt uses for paho;
- SUBSCRIBE at QoS 1; PUBLISH in at QoS 0 and 1; PUBACK out, only on the connection that delivered
  the message (a packet id names a message only there; see `ack`);
- PINGREQ keep-alive, dropping a connection whose broker stops answering;
- reconnection from the very first attempt, when rtds.mqtt.ReconnectPolicy says (the next node at
  once; a wait only after a whole round of nodes, or the one broker, failed); DISCONNECT on stop.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from collector.mqtt_wire import (
    CONNACK,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    SUBACK,
    Delivery,
    ProtocolViolation,
    connect_packet,
    parse_connack,
    parse_suback,
    puback_packets,
    publish_packet,
    read_packets,
    subscribe_packet,
)
from rtds import mqtt
from rtds.settings import Settings

log = logging.getLogger(__name__)

RECV_BYTES = 256 * 1024
SOCKET_TIMEOUT_S = 10.0  # connect, TLS handshake, CONNACK, and any one send
STOP_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0
SUBSCRIBE_PACKET_ID = 1
RESYNCED = "resynced"  # _serve's answer when it ended the connection to open the session again


class IntakeListener(Protocol):
    """What the session tells its owner. Each call runs in the session's thread; an exception is logged."""

    def on_connected(self, session_present: bool) -> None: ...
    def on_subscribed(self, granted_qos: list[int]) -> None: ...
    def on_messages(self, deliveries: list[Delivery]) -> None: ...
    def on_refused(self, return_code: int) -> None: ...
    def on_unreachable(self, reason: str) -> None: ...
    def on_lost(self, reason: str, acks_unsent: int) -> None: ...


class ConnectionRefused(Exception):
    def __init__(self, return_code: int) -> None:
        super().__init__(mqtt.explain_connect_failure(return_code))
        self.return_code = return_code


class SubscriberSession:
    """One MQTT session that subscribes to `topic_filters` at QoS 1 and acks what its owner says is stored."""

    def __init__(
        self, settings: Settings, client_id: str, topic_filters: Sequence[str], listener: IntakeListener
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._topic_filters = list(topic_filters)
        self._listener = listener
        self._tls = mqtt.tls_context(settings) if settings.mqtt_use_tls else None
        self._keepalive_s = settings.mqtt_keepalive_s
        self._brokers = settings.mqtt_brokers
        self._broker_index = 0  # the node of the current or next connection; a failure moves to the next
        self._lock = threading.Lock()
        self._connection = 0  # odd while a connection is up; every change invalidates older packet ids
        self._acks: list[int] = []  # packet ids stored and not yet sent, all of the current connection
        self._outgoing: list[bytes] = []  # QoS 0 packets to send on the current connection
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._woken = False
        self._resync_requested = False
        self._stopping = threading.Event()
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="collector-intake", daemon=True)

    # --- the owner's side (any thread) -----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        """Queue PUBACKs for stored messages; return how many came on a connection that has since ended.

        Those are not acked: the broker delivers them again after the reconnect, and the store's upsert
        on (device_id, time) makes the second write harmless.
        """
        needing_ack = [item for item in deliveries if item[4]]  # QoS 0 messages have no ack
        with self._lock:
            current = self._connection
            live = current % 2 == 1
            packet_ids = [item[3] for item in needing_ack if item[5] == current] if live else []
            stale = len(needing_ack) - len(packet_ids)
            if packet_ids:
                self._acks.extend(packet_ids)
                self._wake()
        return stale

    def publish(self, topic: str, payload: bytes) -> None:
        """Send one QoS 0 message on the current connection (dropped if there is none: QoS 0 promises nothing)."""
        with self._lock:
            self._outgoing.append(publish_packet(topic, payload))
            self._wake()

    def resync(self) -> None:
        """End this connection cleanly (queued acks first) and open the session again at once.

        On a reconnect the broker resends every message of the session that is unacked or still queued:
        the one way, in MQTT 3.1.1, to get back messages a broker holds on a healthy connection and does
        not send (README: "When the store goes away").
        """
        with self._lock:
            self._resync_requested = True
            self._wake()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Send the queued acks and a DISCONNECT, close the connection and end the thread."""
        with self._lock:
            self._stopping.set()
            self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if not self._thread.is_alive():  # a thread still connecting keeps selecting on the wake socket
            self._wake_reader.close()
            self._wake_writer.close()

    def socket(self) -> socket.socket | None:
        """The current connection's socket (tests cut it to play a network failure)."""
        return self._socket

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            try:
                self._wake_writer.send(b"\0")
            except OSError:
                pass  # the buffer is full, so the thread is already due to wake

    # --- the session's thread --------------------------------------------------------------

    def _run(self) -> None:
        policy = mqtt.ReconnectPolicy(len(self._brokers))
        while not self._stopping.is_set():
            try:
                sock, session_present, leftover = self._connect()
            except ConnectionRefused as exc:
                self._notify(self._listener.on_refused, exc.return_code)
                self._next_broker()
            except (OSError, ProtocolViolation) as exc:
                self._notify(self._listener.on_unreachable, describe_failure(exc, self._settings, self.broker))
                self._next_broker()
            else:
                policy.connected(time.monotonic())
                reason = self._serve(sock, session_present, leftover)
                with self._lock:
                    self._connection += 1
                    acks_unsent = len(self._acks)
                    self._acks.clear()
                    self._outgoing.clear()
                    self._socket = None
                sock.close()
                if reason is RESYNCED:
                    continue
                if reason is not None:
                    self._notify(self._listener.on_lost, reason, acks_unsent)
                    self._next_broker()  # the session lives in the cluster, not in the node that dropped it
            if self._stopping.wait(policy.failed(time.monotonic())):
                return

    @property
    def broker(self) -> tuple[str, int]:
        """(host, port) of the broker node this session is connected to, or will try next."""
        return self._brokers[self._broker_index]

    def _next_broker(self) -> None:
        """Move on to the next node of MQTT_BROKER_FALLBACK_HOSTS (with one broker, stay)."""
        self._broker_index = (self._broker_index + 1) % len(self._brokers)

    def _connect(self) -> tuple[socket.socket, bool, bytes]:
        """TCP, TLS, CONNECT and CONNACK; (socket, session present, bytes read past the CONNACK)."""
        settings = self._settings
        host, port = self.broker
        sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=host)
            sock.sendall(
                connect_packet(
                    self._client_id,
                    keepalive_s=self._keepalive_s,
                    clean_session=False,
                    username=settings.mqtt_username,
                    password=settings.mqtt_password,
                )
            )
            received = b""
            while len(received) < 4:
                chunk = sock.recv(RECV_BYTES)
                if not chunk:
                    raise ConnectionError("the broker closed the connection before its CONNACK")
                received += chunk
            if received[0] != CONNACK or received[1] != 2:
                raise ProtocolViolation(f"the broker answered CONNECT with packet type {received[0] >> 4}")
            session_present, return_code = parse_connack(received[2:4])
            if return_code:
                raise ConnectionRefused(return_code)
        except BaseException:
            sock.close()
            raise
        return sock, session_present, received[4:]

    def _serve(self, sock: socket.socket, session_present: bool, buffered: bytes) -> str | None:
        """Run one connection until it drops (return why), the session stops (None) or resyncs (RESYNCED)."""
        with self._lock:
            self._connection += 1
            connection = self._connection
            self._socket = sock
            self._resync_requested = False  # a new connection has just been sent everything the session holds
        self._notify(self._listener.on_connected, session_present)
        keepalive_s = self._keepalive_s
        ping_sent_at: float | None = None
        partial = buffered  # the start of a packet still arriving
        tls = isinstance(sock, ssl.SSLSocket)
        try:
            sock.sendall(subscribe_packet(SUBSCRIBE_PACKET_ID, self._topic_filters, 1))
            last_sent = time.monotonic()
            while True:
                with self._lock:
                    packet_ids, self._acks = self._acks, []
                    outgoing, self._outgoing = self._outgoing, []
                    self._woken = False
                    stopping = self._stopping.is_set()
                    resync, self._resync_requested = self._resync_requested, False
                if packet_ids or outgoing:
                    sock.sendall(b"".join(outgoing) + (puback_packets(packet_ids) if packet_ids else b""))
                    last_sent = time.monotonic()
                if stopping or resync:
                    sock.sendall(DISCONNECT)
                    self._close_gracefully(sock)
                    return None if stopping else RESYNCED
                now = time.monotonic()
                if keepalive_s:
                    if ping_sent_at is not None and now - ping_sent_at > keepalive_s:
                        return f"the broker did not answer a ping within {keepalive_s} s"
                    if ping_sent_at is None and now - last_sent >= keepalive_s:
                        sock.sendall(PINGREQ)
                        last_sent = ping_sent_at = now
                    wait_s = max(0.0, min(keepalive_s - (now - last_sent), 1.0))
                else:
                    wait_s = 1.0
                # OpenSSL may hold decrypted bytes that select() cannot see.
                pending = tls and cast(ssl.SSLSocket, sock).pending() > 0
                ready = pending or sock in select.select([sock, self._wake_reader], [], [], wait_s)[0]
                self._drain_wake()
                if not ready:
                    continue
                chunk = sock.recv(RECV_BYTES)
                if not chunk:
                    return "the broker closed the connection"
                data = partial + chunk if partial else chunk
                deliveries, controls, used = read_packets(data, time.time(), connection)
                partial = data[used:]
                for header, body in controls:
                    if header == PINGRESP:
                        ping_sent_at = None
                    else:
                        self._handle_control(header, body)
                if deliveries:
                    self._notify(self._listener.on_messages, deliveries)
        except (OSError, ProtocolViolation) as exc:
            return describe_loss(exc)

    def _close_gracefully(self, sock: socket.socket) -> None:
        """Half-close, then read until the broker closes: closing with unread bytes would send a TCP reset,
        and a reset makes the broker's kernel discard our last acks before Mosquitto reads them."""
        unread = 0
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(CLOSE_TIMEOUT_S)
            while chunk := sock.recv(RECV_BYTES):
                unread += len(chunk)
        except OSError:
            pass  # the broker closed first, or TLS ended without a close_notify: either way it read everything
        log.debug("closed the MQTT connection; %d bytes arrived after our DISCONNECT", unread)

    def _handle_control(self, header: int, body: bytes) -> None:
        if header == SUBACK:
            _, granted = parse_suback(body)
            self._notify(self._listener.on_subscribed, granted)
        elif header == CONNACK:
            raise ProtocolViolation("the broker sent a second CONNACK")
        else:
            log.debug("ignored an MQTT packet of type %d", header >> 4)

    def _drain_wake(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except OSError:
            pass  # BlockingIOError: nothing (more) to read

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("unexpected error in the collector's %s", getattr(callback, "__name__", callback))


def describe_failure(exc: BaseException, settings: Settings, broker: tuple[str, int]) -> str:
    """Why a connection to `broker` could not be made."""
    if isinstance(exc, ProtocolViolation):
        return describe_loss(exc)
    return mqtt.explain_connection_error(exc, settings, broker)


def describe_loss(exc: BaseException) -> str:
    """Why an established connection ended."""
    if isinstance(exc, ProtocolViolation):
        return f"the broker broke the MQTT protocol: {exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"the broker took over {SOCKET_TIMEOUT_S:.0f} s to take our bytes"
    return str(exc) or type(exc).__name__
