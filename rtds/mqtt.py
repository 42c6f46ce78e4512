"""The MQTT connection every service uses: paho-mqtt 2.x, MQTT 3.1.1, persistent sessions.

`make_client` applies the seed's TLS and login variables in one place. It does not connect;
callers set their callbacks, then call `start(client, settings)`, which connects in the
background and keeps reconnecting from the very first attempt. When to try again is
`ReconnectPolicy`'s decision, for paho's own thread, the fleet's selector loop
(devices/network.py) and the collector's intake (collector/intake.py) alike.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from rtds.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_MIN_DELAY_S = 1.0
# One broker: a client is back within 10 s of the broker's return (at 30 s, a 31 s broker restart kept devices
# away 10-20 s more in docs/report-example's run); the fleet's jitter spreads the attempts of many devices.
RECONNECT_MAX_DELAY_S = 10.0
CLUSTER_RECONNECT_MAX_DELAY_S = 5.0  # several nodes (MQTT_BROKER_FALLBACK_HOSTS): the wait after a whole round failed
STABLE_CONNECTION_S = 1.0  # a connection that lasted this long starts the backoff afresh when it is lost

# CONNACK return codes of MQTT 3.1.1, explained for people.
CONNACK_EXPLANATIONS = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker rejected the client id",
    3: "the broker is unavailable",
    4: "the user name or password is wrong (check MQTT_USERNAME / MQTT_PASSWORD)",
    5: "not authorised (check MQTT_USERNAME / MQTT_PASSWORD and the broker's ACL)",
}

_insecure_warned = False


class ReconnectPolicy:
    """How long a client waits before its next connection attempt, after a failed one or a lost connection.

    With one broker: 1, 2, 4, 8, then 10 s. With several nodes every attempt goes to the next one
    (`follow_brokers`), and a node that is dead or failed is no reason to wait before asking the next:
    the next node is tried at once, and only when a whole round of nodes has failed does the client
    wait, 1, 2, 4, then 5 s per round. A connection that lasted STABLE_CONNECTION_S starts afresh; one
    lost sooner counts as a failed attempt, so a broker that accepts and then drops a client (two
    clients sharing a client id take each other's session over) is not asked again in a tight loop.
    """

    def __init__(self, nodes: int) -> None:
        self.nodes = max(1, nodes)
        self.failures = 0  # failed attempts and short-lived connections since the last stable connection
        self._connected_at: float | None = None

    def connected(self, now: float) -> None:
        """A CONNACK accepted the connection (calling it again for the same connection changes nothing)."""
        if self._connected_at is None:
            self._connected_at = now

    def failed(self, now: float) -> float:
        """An attempt failed or the connection was lost: the seconds to wait before the next attempt."""
        if self._connected_at is not None and now - self._connected_at >= STABLE_CONNECTION_S:
            self.failures = 0
        self._connected_at = None
        self.failures += 1
        if self.nodes == 1:
            return min(RECONNECT_MIN_DELAY_S * 2 ** (self.failures - 1), RECONNECT_MAX_DELAY_S)
        if self.failures % self.nodes:
            return 0.0
        rounds = self.failures // self.nodes
        return min(RECONNECT_MIN_DELAY_S * 2 ** (rounds - 1), CLUSTER_RECONNECT_MAX_DELAY_S)


class PolicyClient(paho.Client):
    """paho's client, waiting between connection attempts as its `ReconnectPolicy` says.

    paho's own delay doubles from the last success whichever node failed, so a client going round a
    cluster waited 1, 2, 4, 8 s between nodes (DEPLOYMENT.md, "A node dies"). paho's loop (`loop_start`,
    `loop_forever`) calls `_reconnect_wait` between attempts, whatever ended the last one, and
    `_handle_connack` for the broker's answer. The wait itself stays paho's, which ends early on
    `disconnect()` and `loop_stop()`. Clients driven by another loop (devices/network.py) use
    `reconnect_policy` directly.
    """

    def __init__(self, *args: Any, reconnect_policy: ReconnectPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reconnect_policy = reconnect_policy
        self._attempted = False

    def reconnect(self) -> MQTTErrorCode:
        self._attempted = True
        return super().reconnect()

    def _handle_connack(self) -> MQTTErrorCode:
        result = super()._handle_connack()
        if self.is_connected():
            self.reconnect_policy.connected(time.monotonic())
        return result

    def _reconnect_wait(self) -> None:
        if not self._attempted:
            return  # after a failed first connect paho's loop asks twice; the policy answers once per attempt
        self._attempted = False
        delay_s = self.reconnect_policy.failed(time.monotonic())
        self.reconnect_delay_set(delay_s, delay_s)  # paho's next wait is its minimum
        super()._reconnect_wait()


def make_client(
    settings: Settings,
    client_id: str,
    *,
    clean_session: bool = False,
    manual_ack: bool = False,
    max_inflight: int = 20,
    will: tuple[str, bytes] | None = None,
) -> paho.Client:
    """A paho client configured from settings, not yet connected.

    `will` is (topic, payload) for a retained QoS 1 Last Will.
    """
    client = PolicyClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=paho.MQTTv311,
        manual_ack=manual_ack,
        reconnect_policy=ReconnectPolicy(len(settings.mqtt_brokers)),
    )
    client.max_inflight_messages_set(max_inflight)
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password or None)
    if settings.mqtt_use_tls:
        client.tls_set_context(tls_context(settings))
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    return client


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS setup of MQTT_CA_CERTS, MQTT_CERTFILE/KEYFILE and MQTT_TLS_INSECURE, for paho and the collector."""
    global _insecure_warned
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # certificate and host name checks on
    if settings.mqtt_ca_certs:
        context.load_verify_locations(settings.mqtt_ca_certs)
    else:
        context.load_default_certs()
    if settings.mqtt_certfile:
        context.load_cert_chain(settings.mqtt_certfile, settings.mqtt_keyfile or None)
    if settings.mqtt_tls_insecure:
        if not _insecure_warned:
            log.warning(
                "MQTT_TLS_INSECURE=true: the broker's certificate host name is NOT checked, so anyone in the "
                "network path can impersonate the broker. Use it only for local tests."
            )
            _insecure_warned = True
        context.check_hostname = False
    return context


def start(client: paho.Client, settings: Settings) -> None:
    """Connect in the background; paho's loop retries until a broker answers (the next node after a failure)."""
    host, port = follow_brokers(client, settings)
    client.connect_async(host, port, keepalive=settings.mqtt_keepalive_s)
    client.loop_start()


def follow_brokers(client: paho.Client, settings: Settings) -> tuple[str, int]:
    """With MQTT_BROKER_FALLBACK_HOSTS, make every reconnect of `client` go to the next broker node; return the first.

    paho calls on_pre_connect before each attempt. After the first, an attempt means the previous one
    failed or its connection was lost, so the client moves on; a cluster keeps the persistent session, so
    it resumes on whichever node it reaches.
    """
    brokers = settings.mqtt_brokers
    if len(brokers) == 1:
        return brokers[0]
    attempts = 0

    def next_broker(client: paho.Client, userdata: Any) -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            # paho calls this with the connection already marked as connecting, when its `host` and `port`
            # setters refuse a change; the attributes behind them are what reconnect() reads next.
            client._host, client._port = brokers[(attempts - 1) % len(brokers)]
            log.info(
                "connecting to the MQTT broker at %s:%d (the next of %d nodes)", client.host, client.port, len(brokers)
            )

    client.on_pre_connect = next_broker
    return brokers[0]


def stop(client: paho.Client) -> None:
    client.disconnect()
    client.loop_stop()


def set_nodelay(client: paho.Client) -> None:
    """Turn off Nagle on the client's socket; without it small QoS 0/1 packets wait up to 40 ms."""
    sock: Any = client.socket()
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def explain_connect_failure(reason_code: Any) -> str:
    """A sentence for a failed CONNACK, for logs and health checks."""
    value = getattr(reason_code, "value", reason_code)
    if isinstance(value, int) and value in CONNACK_EXPLANATIONS:
        return CONNACK_EXPLANATIONS[value]
    text = str(reason_code)
    if "not authori" in text.lower():
        return CONNACK_EXPLANATIONS[5]
    if "bad user name or password" in text.lower():
        return CONNACK_EXPLANATIONS[4]
    return text


def explain_connection_error(exc: BaseException, settings: Settings, broker: tuple[str, int] | None = None) -> str:
    """A sentence for a failed TCP or TLS connection to the broker (default: the first), naming the setting to check."""
    host, port = broker or (settings.mqtt_broker_host, settings.mqtt_broker_port)
    where = f"{host}:{port}"
    settings_hint = f"({_broker_variables(settings, broker)})"
    if isinstance(exc, ConnectionRefusedError):
        return f"cannot connect to the MQTT broker at {where}: connection refused; is Mosquitto running there? {settings_hint}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the MQTT broker host {host!r}: {exc.strerror}; check {settings_hint[1:-1]}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker's TLS certificate at {where} was not accepted: {exc.verify_message}; check MQTT_CA_CERTS"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed ({exc.reason}); is that port a TLS listener? (MQTT_USE_TLS, MQTT_BROKER_PORT)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer from the MQTT broker at {where} (timed out); check the address, port and firewall {settings_hint}"
    return f"cannot connect to the MQTT broker at {where}: {exc} {settings_hint}"


def _broker_variables(settings: Settings, broker: tuple[str, int] | None) -> str:
    """The variables that name `broker`."""
    if broker in (None, settings.mqtt_brokers[0]):
        return "MQTT_BROKER_HOST / MQTT_BROKER_PORT"
    return "MQTT_BROKER_FALLBACK_HOSTS"


def diagnose_connection(
    settings: Settings, broker: tuple[str, int] | None = None, timeout_s: float = 3.0
) -> str | None:
    """Why connecting to `broker` (default: the first) fails, found by one TCP (and TLS) connection of our own
    that sends an anonymous MQTT CONNECT: paho's reconnect loop reports that a connection failed, not why, and
    a port that answers but not in MQTT looks to paho like a broker that is slow to answer. None when a CONNACK
    comes back, accepting or refusing (either way an MQTT broker listens there)."""
    host, port = broker or settings.mqtt_brokers[0]
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            if settings.mqtt_use_tls:
                with tls_context(settings).wrap_socket(sock, server_hostname=host) as tls:
                    problem = _answer_to_connect(tls, timeout_s)
            else:
                problem = _answer_to_connect(sock, timeout_s)
    except (OSError, ValueError) as exc:
        return explain_connection_error(exc, settings, (host, port))
    if problem is None:
        return None
    return f"the service at {host}:{port} does not speak MQTT: {problem}; check {_broker_variables(settings, broker)}"


# An anonymous MQTT 3.1.1 CONNECT (clean session, empty client id, keep-alive 10 s). A broker answers it with a
# CONNACK, refusing or accepting. The keep-alive's low byte, 10, is a newline, so a line-based service (HTTP,
# SMTP, ...) reads a complete line and answers at once instead of waiting for more.
PROBE_CONNECT = bytes((0x10, 12, 0, 4)) + b"MQTT" + bytes((4, 0x02, 0, 10, 0, 0))
CONNACK_HEADER = bytes((0x20, 2))
DISCONNECT = bytes((0xE0, 0))


def _answer_to_connect(sock: socket.socket, timeout_s: float) -> str | None:
    """None when `sock` answers PROBE_CONNECT with a CONNACK; otherwise what it did instead."""
    sock.settimeout(timeout_s)
    sock.sendall(PROBE_CONNECT)
    try:
        answer = sock.recv(256)
    except TimeoutError:
        return f"it did not answer an MQTT CONNECT within {timeout_s:g} s"
    if answer.startswith(CONNACK_HEADER):
        with contextlib.suppress(OSError):
            sock.sendall(DISCONNECT)
        return None
    if not answer:
        return "it closed the connection when sent an MQTT CONNECT"
    lines = answer.decode("ascii", "replace").strip().splitlines()
    if lines and lines[0].isprintable():
        return f"it answered an MQTT CONNECT with {lines[0][:60]!r}"
    return f"it answered an MQTT CONNECT with {answer[:16]!r}"
