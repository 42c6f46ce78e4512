"""Who runs the devices' MQTT clients: one paho thread per client, or one selector loop for all.

`ThreadedNetwork` is paho's own `connect_async` + `loop_start`: a network thread per client that
reconnects with backoff, the very first connect included. It suits a device process. It cannot
carry a large fleet: paho's thread waits with `select.select()`, which refuses file descriptors
of 1024 and above, and each client holds three (its socket and a wake-up pair). Measured: of
1,000 clients in one process only 338 ever connected; the rest failed in a loop.

`SelectorNetwork` drives every client from the `DeviceLoop` thread with `selectors` (epoll) and
paho's external-loop API (`loop_read`, `loop_write`, `loop_misc` and the socket callbacks). It
reconnects when the client's `rtds.mqtt.ReconnectPolicy` says, with jitter on each wait (so 1,000
clients do not reconnect in step after a broker restart), making the blocking TCP/TLS connects in a
few worker threads so that an unreachable broker never stalls the loop. Paho's socket callbacks may
fire in those workers, so they only post events, which the loop thread applies to the selector in order.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import random
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as paho

from rtds import mqtt
from rtds.settings import Settings

log = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0  # keepalive bookkeeping (paho's loop_misc) for every client
CONNECT_WORKERS = 8
DISCONNECT_DRAIN_S = 2.0


class Network(Protocol):
    """What `DeviceLoop` needs from whatever runs the MQTT clients."""

    def start(self, client: paho.Client) -> None: ...

    def wait(self, timeout_s: float) -> None:
        """Block until woken or `timeout_s` passed; may run network I/O and paho callbacks."""

    def wake(self) -> None:
        """Safe from any thread."""

    def stop(self, clients: list[paho.Client]) -> None:
        """Disconnect every client and release the network's resources."""


class ThreadedNetwork:
    """paho's network thread per client (connect_async + loop_start).

    The loop thread sleeps on a socket pair rather than a `threading.Event`: `wake()` is called
    from signal handlers, and an Event's lock taken in a handler can deadlock against the same
    thread already holding it.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    def start(self, client: paho.Client) -> None:
        mqtt.start(client, self.settings)

    def wait(self, timeout_s: float) -> None:
        if self._selector.select(max(0.0, timeout_s)):
            _drain(self._wake_r)

    def wake(self) -> None:
        _send_wake_byte(self._wake_w)

    def stop(self, clients: list[paho.Client]) -> None:
        for client in clients:
            client.disconnect()
        for client in clients:
            client.loop_stop()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


def _send_wake_byte(sock: socket.socket) -> None:
    try:
        sock.send(b"\0")
    except OSError:
        pass  # the buffer is full (already awake) or the network is stopped


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


@dataclass(eq=False)
class _Link:
    client: paho.Client
    policy: mqtt.ReconnectPolicy
    sock: Any = None
    writing: bool = False
    connecting: bool = False
    stopped: bool = False
    handle: int = field(default_factory=itertools.count().__next__)


class SelectorNetwork:
    """Every client's I/O in the calling thread; connects in worker threads."""

    def __init__(self, settings: Settings, *, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._links: dict[paho.Client, _Link] = {}
        self._posted: collections.deque[tuple[str, _Link, Any]] = collections.deque()
        self._due: list[tuple[float, int, _Link]] = []
        self._workers = ThreadPoolExecutor(CONNECT_WORKERS, thread_name_prefix="mqtt-connect")
        self._loop_thread: int | None = None
        self._stopping = False
        self._selecting = False
        self._next_misc = time.monotonic() + MISC_INTERVAL_S

    @property
    def open_sockets(self) -> int:
        return sum(1 for link in self._links.values() if link.sock is not None)

    def start(self, client: paho.Client) -> None:
        self._loop_thread = threading.get_ident()
        if isinstance(client, mqtt.PolicyClient):
            policy = client.reconnect_policy
        else:
            policy = mqtt.ReconnectPolicy(len(self.settings.mqtt_brokers))
        link = _Link(client, policy)
        self._links[client] = link
        client.on_socket_open = lambda c, u, sock: self._post("open", link, sock)
        client.on_socket_close = lambda c, u, sock: self._post("close", link, sock)
        client.on_socket_register_write = lambda c, u, sock: self._post("write_on", link, sock)
        client.on_socket_unregister_write = lambda c, u, sock: self._post("write_off", link, sock)
        host, port = mqtt.follow_brokers(client, self.settings)
        client.connect_async(host, port, self.settings.mqtt_keepalive_s)
        heapq.heappush(self._due, (time.monotonic(), link.handle, link))

    def wake(self) -> None:
        if threading.get_ident() == self._loop_thread and not self._selecting:
            return  # the loop thread looks at its events before it waits again (signal handlers run while selecting)
        _send_wake_byte(self._wake_w)

    def wait(self, timeout_s: float) -> None:
        self._loop_thread = threading.get_ident()
        self._apply_posted()
        now = time.monotonic()
        self._start_due_connects(now)
        if self._due:
            timeout_s = min(timeout_s, self._due[0][0] - now)
        timeout_s = max(0.0, min(timeout_s, self._next_misc - now))
        self._selecting = True
        try:
            ready = self._selector.select(timeout_s)
        finally:
            self._selecting = False
        for key, mask in ready:
            link = key.data
            if link is None:
                _drain(self._wake_r)
                continue
            self._handle_io(link, mask)
        self._apply_posted()
        if time.monotonic() >= self._next_misc:
            for link in list(self._links.values()):
                if link.sock is not None:
                    link.client.loop_misc()
            self._next_misc = time.monotonic() + MISC_INTERVAL_S
            self._apply_posted()

    def stop(self, clients: list[paho.Client]) -> None:
        self._stopping = True
        self._workers.shutdown(wait=True, cancel_futures=True)
        self._apply_posted()
        for client in clients:
            link = self._links.get(client)
            if link is not None:
                link.stopped = True
            client.disconnect()
        deadline = time.monotonic() + DISCONNECT_DRAIN_S
        while self.open_sockets and time.monotonic() < deadline:
            self.wait(0.05)
        for link in self._links.values():
            if link.sock is not None:
                self._unregister(link)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop thread ---------------------------------------------------------------------

    def _handle_io(self, link: _Link, mask: int) -> None:
        client = link.client
        if mask & selectors.EVENT_READ:
            client.loop_read()
            sock = client.socket()
            # TLS may hold decrypted bytes that select() cannot see.
            while sock is not None and getattr(sock, "pending", lambda: 0)() > 0 and client.socket() is sock:
                client.loop_read()
            if client.is_connected():
                link.policy.connected(time.monotonic())
        if mask & selectors.EVENT_WRITE and client.socket() is not None:
            client.loop_write()

    def _apply_posted(self) -> None:
        while self._posted:
            event, link, sock = self._posted.popleft()
            if event == "open":
                link.connecting = False
                link.sock = sock
                link.writing = False
                if sock.fileno() >= 0:  # else it closed already; its "close" event follows
                    self._selector.register(sock, selectors.EVENT_READ, link)
            elif event == "failed":
                link.connecting = False
                self._schedule_reconnect(link)
            elif link.sock is None or link.sock is not sock:
                continue  # an event for a socket that is already gone
            elif event == "close":
                self._unregister(link)
                self._schedule_reconnect(link)
            elif event in ("write_on", "write_off"):
                writing = event == "write_on"
                if writing != link.writing and sock.fileno() >= 0:
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
                    self._selector.modify(sock, events, link)
                    link.writing = writing

    def _unregister(self, link: _Link) -> None:
        try:
            self._selector.unregister(link.sock)
        except (KeyError, ValueError, OSError):
            pass
        link.sock = None
        link.writing = False

    def _schedule_reconnect(self, link: _Link) -> None:
        if self._stopping or link.stopped:
            return
        # Jitter over the upper half keeps the policy's doubling but spreads a fleet's retries.
        delay = link.policy.failed(time.monotonic()) * self._rng.uniform(0.5, 1.0)
        heapq.heappush(self._due, (time.monotonic() + delay, link.handle, link))

    def _start_due_connects(self, now: float) -> None:
        while self._due and self._due[0][0] <= now and not self._stopping:
            _, _, link = heapq.heappop(self._due)
            if link.stopped or link.connecting or link.sock is not None:
                continue
            link.connecting = True
            self._workers.submit(self._connect, link)

    # -- worker threads -----------------------------------------------------------------------

    def _connect(self, link: _Link) -> None:
        client = link.client
        try:
            client.reconnect()
        except Exception as exc:  # OSError for refused/unreachable/TLS; anything else must not kill the worker
            log.debug("connect attempt failed: %s", exc)
            self._post("failed", link, None)
            if client.on_connect_fail is not None:
                try:
                    client.on_connect_fail(client, client.user_data_get())
                except Exception:
                    log.exception("on_connect_fail raised")

    def _post(self, event: str, link: _Link, sock: Any) -> None:
        self._posted.append((event, link, sock))
        self.wake()
