"""A fake InfluxDB OSS 2.x HTTP server for tests, checked against InfluxData's OpenAPI description.

`FakeInfluxDB` holds the state (points, recorded requests, injected failures) and the server's lifecycle;
`handler.RequestHandler` answers the requests. `load_spec`, `response_schema` and `validate` (from `spec`)
are re-exported here for tests that check the fake's answers against the spec.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .handler import RequestHandler
from .line_protocol import FieldValue, ParsedLine, field_type
from .responses import HTTPError
from .spec import load_spec, response_schema, validate

# ----------------------------------------------------------------------------- public data


@dataclass(frozen=True)
class Point:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str | bool]
    time_ns: int


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class _Failure:
    status: int
    paths: tuple[str, ...]
    remaining: int | None
    until: float | None
    retry_after: int | None
    message: str | None


@dataclass
class _Stored:
    point: Point
    bucket: str


# ----------------------------------------------------------------------------- the fake


class FakeInfluxDB:
    """InfluxDB OSS 2.x stand-in: /api/v2/write, /api/v2/query, /health, /ping."""

    def __init__(
        self,
        token: str = "test-token",
        org: str = "my-org",
        buckets: Sequence[str] = ("vehicle-data",),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = 10 * 1024 * 1024,
    ) -> None:
        self.token = token
        self.org = org
        self.org_id = _make_id("org", org)
        self.bucket_ids = {name: _make_id("bucket", org, name) for name in buckets}
        self.max_body_bytes = max_body_bytes
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._store: dict[tuple[str, str, tuple[tuple[str, str], ...], int], _Stored] = {}
        self._field_types: dict[tuple[str, str, str], str] = {}
        self._requests: list[RecordedRequest] = []
        self._queries: list[tuple[str, dict[str, Any]]] = []
        self._failures: list[_Failure] = []
        self._healthy = True
        self._server: FakeInfluxDBServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("FakeInfluxDB is already running")
        server = FakeInfluxDBServer((self._host, self._port), RequestHandler, self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=functools.partial(server.serve_forever, poll_interval=0.05), name="fake-influxdb", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Close the listening socket and every open connection; stored points are kept (start() again)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeInfluxDB:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    # inspection
    @property
    def points(self) -> list[Point]:
        """Accepted points of every bucket, in first-arrival order of their identity (copies)."""
        with self._lock:
            return [_copy(s.point) for s in self._store.values()]

    def identities(self, measurement: str, tag: str, field: str) -> set[tuple[str, FieldValue]]:
        """(tag value, field value) of every accepted point of `measurement`, without copying the points: cheap
        enough to poll while writes arrive (copying 15,000 points under the lock held writes back for 100 ms)."""
        with self._lock:
            return {
                (stored.point.tags[tag], stored.point.fields[field])
                for stored in self._store.values()
                if stored.point.measurement == measurement and tag in stored.point.tags and field in stored.point.fields
            }

    def points_in(self, bucket: str) -> list[Point]:
        with self._lock:
            return [_copy(s.point) for s in self._store.values() if s.bucket == bucket]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def queries(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self._queries)

    def reset(self) -> None:
        """Forget points, recorded requests, queries, injected failures; become healthy."""
        with self._lock:
            self._store.clear()
            self._field_types.clear()
            self._requests.clear()
            self._queries.clear()
            self._failures.clear()
            self._healthy = True

    # fault injection
    def fail_next(self, status: int, count: int = 1, *, retry_after: int | None = None, message: str | None = None,
                  paths: Iterable[str] = ("/api/v2/write",)) -> None:  # fmt: skip
        with self._lock:
            self._failures.append(_Failure(status, tuple(paths), count, None, retry_after, message))

    def fail_for(self, seconds: float, status: int = 503, *, retry_after: int = 1,
                 paths: Iterable[str] = ("/api/v2/write",)) -> None:  # fmt: skip
        with self._lock:
            until = time.monotonic() + seconds
            self._failures.append(_Failure(status, tuple(paths), None, until, retry_after, None))

    def set_healthy(self, healthy: bool) -> None:
        with self._lock:
            self._healthy = healthy

    # internals used by the handler
    def _take_failure(self, path: str) -> _Failure | None:
        now = time.monotonic()
        with self._lock:
            self._failures = [
                f for f in self._failures
                if (f.remaining is None or f.remaining > 0) and (f.until is None or f.until > now)
            ]  # fmt: skip
            for failure in self._failures:
                if path in failure.paths:
                    if failure.remaining is not None:
                        failure.remaining -= 1
                    return failure
        return None

    def _is_healthy(self) -> bool:
        with self._lock:
            return self._healthy

    def _record(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes, status: int
    ) -> None:
        with self._lock:
            self._requests.append(RecordedRequest(method, path, query, headers, body, status))

    def _record_query(self, text: str, params: dict[str, Any]) -> None:
        with self._lock:
            self._queries.append((text, params))

    def _resolve_org(self, query: Mapping[str, str]) -> None:
        org, org_id = query.get("org"), query.get("orgID")
        if org is None and org_id is None:
            raise HTTPError(400, "Please provide either orgID or org")
        if org is not None and org not in {self.org, self.org_id}:
            raise HTTPError(404, f'organization name "{org}" not found')
        if org_id is not None and org_id != self.org_id:
            raise HTTPError(404, "organization not found")

    def _resolve_bucket(self, name_or_id: str) -> str | None:
        if name_or_id in self.bucket_ids:
            return name_or_id
        for name, bucket_id in self.bucket_ids.items():
            if bucket_id == name_or_id:
                return name
        return None

    def _write(self, bucket: str, lines: list[ParsedLine]) -> list[str]:
        """Store points; returns one message per point rejected for a field type conflict."""
        rejected: list[str] = []
        with self._lock:
            for line in lines:
                conflict = None
                for key, value in line.fields.items():
                    known = self._field_types.get((bucket, line.measurement, key))
                    if known is not None and known != field_type(value):
                        conflict = (
                            f'input field "{key}" on measurement "{line.measurement}" is type '
                            f"{field_type(value)}, already exists as type {known}"
                        )
                        break
                if conflict:
                    rejected.append(conflict)
                    continue
                for key, value in line.fields.items():
                    self._field_types[(bucket, line.measurement, key)] = field_type(value)
                identity = (bucket, line.measurement, tuple(sorted(line.tags.items())), line.time_ns)
                fields: dict[str, FieldValue] = dict(line.fields)
                existing = self._store.get(identity)
                if existing is not None:
                    fields = {**existing.point.fields, **fields}
                point = Point(line.measurement, dict(line.tags), fields, line.time_ns)
                self._store[identity] = _Stored(point, bucket)
        return rejected

    def _bucket_points(self, bucket: str) -> list[Point] | None:
        name = self._resolve_bucket(bucket)
        if name is None:
            return None
        return self.points_in(name)


def _copy(point: Point) -> Point:
    return Point(point.measurement, dict(point.tags), dict(point.fields), point.time_ns)


def _make_id(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- HTTP plumbing


class FakeInfluxDBServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], fake: FakeInfluxDB) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


__all__ = ["FakeInfluxDB", "Point", "RecordedRequest", "load_spec", "response_schema", "validate"]
