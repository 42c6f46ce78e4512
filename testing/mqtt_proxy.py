"""A TCP proxy in front of a real broker that can hold back PUBLISH packets on a live connection.

It plays a broker that keeps messages of a healthy session and does not send them (Mosquitto issue #2362,
fixed around 2.0.13): the broker believes it sent them, so it resends them only when the client
reconnects. Bytes from the client pass through untouched; bytes from the broker are split into MQTT
packets by their fixed header, and while `hold_publishes` has a count left, PUBLISH packets are dropped.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from rtds.broker import free_port

PUBLISH = 0x30


class HoldingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.held = 0
        self.connections = 0
        self._to_hold = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server((self.host, self.port))
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def hold_publishes(self, count: int) -> None:
        """Drop the next `count` PUBLISH packets the broker sends through this proxy."""
        with self._lock:
            self._to_hold += count

    def held_all(self) -> bool:
        with self._lock:
            return self._to_hold == 0

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [client, upstream]
                self.connections += 1
            threading.Thread(target=self._copy, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._filter, args=(upstream, client), daemon=True).start()

    def _copy(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        _close(source, target)

    def _filter(self, source: socket.socket, target: socket.socket) -> None:
        buffer = b""
        try:
            while chunk := source.recv(65536):
                buffer += chunk
                passed, buffer = self._split(buffer)
                if passed:
                    target.sendall(passed)
        except OSError:
            pass
        _close(source, target)

    def _split(self, data: bytes) -> tuple[bytes, bytes]:
        """(the bytes of whole packets to pass on, the start of a packet still arriving)."""
        passed = bytearray()
        start = 0
        while len(data) - start >= 2:
            length, shift, index = 0, 0, start + 1
            while index < len(data):
                byte = data[index]
                index += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            else:
                break
            end = index + length
            if end > len(data):
                break
            with self._lock:
                hold = data[start] & 0xF0 == PUBLISH and self._to_hold > 0
                if hold:
                    self._to_hold -= 1
                    self.held += 1
            if not hold:
                passed += data[start:end]
            start = end
        return bytes(passed), data[start:]

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def __enter__(self) -> HoldingProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
