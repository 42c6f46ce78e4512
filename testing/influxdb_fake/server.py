"""A fake InfluxDB OSS 2.x HTTP server for tests, checked against InfluxData's OpenAPI description."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import socket
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import yaml

from . import flux
from .line_protocol import (
    FieldValue,
    LineProtocolError,
    ParsedLine,
    UInt,
    field_type,
    parse_batch,
)

SPEC_PATH = Path(__file__).with_name("openapi.yaml")
VERSION = "v2.7.11"
BUILD = "OSS"

_STATUS_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request too large",
    415: "unsupported media type",
    422: "unprocessable entity",
    429: "too many requests",
    500: "internal error",
    501: "not implemented",
    503: "unavailable",
}


# ----------------------------------------------------------------------------- the OpenAPI description


@functools.cache
def load_spec() -> dict[str, Any]:
    """The OpenAPI document, parsed once per process."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open("rb") as fh:
        return yaml.load(fh, Loader=loader)


def resolve(node: Any) -> Any:
    spec = load_spec()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"external $ref not supported: {ref}")
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def operation(path: str, method: str) -> dict[str, Any]:
    return load_spec()["paths"][path][method.lower()]


def operation_parameters(path: str, method: str) -> list[dict[str, Any]]:
    return [resolve(p) for p in operation(path, method).get("parameters", [])]


def response_schema(path: str, method: str, status: int, media_type: str = "application/json") -> Any:
    responses = operation(path, method)["responses"]
    response = resolve(responses.get(str(status), responses.get("default")))
    if response is None:
        return None
    content = response.get("content", {}).get(media_type)
    return None if content is None else content.get("schema")


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def validate(instance: Any, schema: Any, path: str = "$") -> list[str]:
    """Validate against an OpenAPI 3.0 schema object.

    `oneOf` is checked as `anyOf`: the Flux AST schemas in this spec have no `required` keys or
    discriminators, so an AST node matches several alternatives at once.
    """
    schema = resolve(schema)
    if not isinstance(schema, dict):
        return []
    errors: list[str] = []
    for sub in schema.get("allOf", []):
        errors += validate(instance, sub, path)
    alternatives = schema.get("oneOf") or schema.get("anyOf")
    if alternatives and all(validate(instance, sub, path) for sub in alternatives):
        errors.append(f"{path}: does not match any allowed schema")
    expected = schema.get("type")
    if expected:
        types = _JSON_TYPES[expected]
        if not isinstance(instance, types) or (isinstance(instance, bool) and expected != "boolean"):
            if not (instance is None and schema.get("nullable")):
                return [*errors, f"{path}: expected {expected}, got {_json_type(instance)}"]
            return errors
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "minLength" in schema and len(instance) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if schema.get("format") == "date-time":
            try:
                flux.parse_rfc3339(instance)
            except flux.FluxError:
                errors.append(f"{path}: {instance!r} is not an RFC3339 date-time")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            if key not in instance:
                errors.append(f"{path}: missing required property {key!r}")
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in properties:
                errors += validate(value, properties[key], f"{path}.{key}")
            elif additional is False:
                errors.append(f"{path}: unexpected property {key!r}")
            elif isinstance(additional, dict):
                errors += validate(value, additional, f"{path}.{key}")
    if isinstance(instance, list):
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += validate(item, schema["items"], f"{path}[{i}]")
        if schema.get("uniqueItems"):
            seen = [json.dumps(i, sort_keys=True) for i in instance]
            if len(set(seen)) != len(seen):
                errors.append(f"{path}: items are not unique")
    return errors


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for name, types in _JSON_TYPES.items():
        if isinstance(value, types) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return type(value).__name__


def _media_type(value: str) -> str:
    return ";".join(part.strip().lower() for part in value.split(";") if part.strip())


def _media_type_allowed(value: str, allowed: Iterable[str]) -> bool:
    """Exact enum match, or an enum's bare media type plus a UTF-8 charset (the documented default)."""
    normalized = _media_type(value)
    enum = {_media_type(v) for v in allowed}
    bare, _, parameters = normalized.partition(";")
    return normalized in enum or (bare in enum and parameters in {"", "charset=utf-8"})


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


class HTTPError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, extra: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"code": code or _STATUS_CODES.get(status, "internal error"), "message": message}
        self.body.update(extra or {})
        self.headers = dict(headers or {})


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
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("FakeInfluxDB is already running")
        server = _Server((self._host, self._port), _Handler, self)
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

    def _record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(entry)

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


class _Server(ThreadingHTTPServer):
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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def version_string(self) -> str:
        return f"fake-influxdb/{VERSION}"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    _ROUTES: ClassVar[dict[str, frozenset[str]]] = {
        "/api/v2/write": frozenset({"POST"}),
        "/api/v2/query": frozenset({"POST"}),
        "/health": frozenset({"GET"}),
        "/ping": frozenset({"GET", "HEAD"}),
    }

    def _dispatch(self, method: str) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k: v for k, v in self.headers.items()}
        raw = b""
        self._recorded_body: bytes | None = None
        try:
            raw = self._read_body()
            response = self._route(method, path, query, raw)
        except HTTPError as err:
            response = _json_response(err.status, err.body, err.headers)
        except Exception as exc:
            response = _json_response(500, {"code": "internal error", "message": f"fake influxdb bug: {exc!r}"})
        body = self._recorded_body if self._recorded_body is not None else raw
        fake._record(RecordedRequest(method, path, query, headers, body, response.status))
        self._send(response)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> _Response:
        fake = self.server.fake
        allowed = self._ROUTES.get(path)
        if allowed is None:
            raise HTTPError(404, f"path not found: {path}")
        if method not in allowed:
            raise HTTPError(
                405, f"method {method} not allowed on {path}", headers={"Allow": ", ".join(sorted(allowed))}
            )
        failure = fake._take_failure(path)
        if failure is not None:
            extra = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            raise HTTPError(failure.status, failure.message or f"injected failure ({failure.status})", headers=extra)
        if path == "/health":
            return self._health()
        if path == "/ping":
            return self._ping(method)
        if not fake._is_healthy():
            raise HTTPError(503, "service unavailable", headers={"Retry-After": "1"})
        self._authorize()
        if path == "/api/v2/write":
            return self._handle_write(query, raw)
        return self._handle_query(query, raw)

    # endpoints
    def _health(self) -> _Response:
        healthy = self.server.fake._is_healthy()
        body = {
            "name": "influxdb",
            "message": "ready for queries and writes" if healthy else "service unavailable",
            "status": "pass" if healthy else "fail",
            "checks": [],
            "version": VERSION,
            "commit": "fake",
        }
        return _json_response(200 if healthy else 503, body)

    def _ping(self, method: str) -> _Response:
        status = 204 if self.server.fake._is_healthy() else 503
        return _Response(status, {"X-Influxdb-Build": BUILD, "X-Influxdb-Version": VERSION}, b"")

    def _authorize(self) -> None:
        value = self.headers.get("Authorization")
        if value is None:
            raise HTTPError(401, "unauthorized access", code="unauthorized")
        scheme, _, credential = value.partition(" ")
        if scheme != "Token" or credential != self.server.fake.token:
            raise HTTPError(401, "unauthorized access", code="unauthorized")

    def _check_parameters(self, spec_path: str, query: Mapping[str, str]) -> None:
        """Query parameters and content headers, checked against the operation's `parameters`."""
        for param in operation_parameters(spec_path, "post"):
            name, location = param["name"], param["in"]
            schema = resolve(param.get("schema", {}))
            if location == "query":
                if name not in query:
                    if param.get("required") and not (name == "org" and "orgID" in query):
                        if name == "org":
                            raise HTTPError(400, "Please provide either orgID or org")
                        raise HTTPError(400, f'missing required query parameter "{name}"')
                    continue
                problems = validate(query[name], schema, name)
                if problems:
                    raise HTTPError(400, f"invalid query parameter {name}: {'; '.join(problems)}")
            elif location == "header" and name in {"Content-Type", "Content-Encoding"} and "enum" in schema:
                value = self.headers.get(name)
                if value is None:
                    if "default" in schema:
                        continue
                    raise HTTPError(415, f"missing {name} header; expected one of {schema['enum']}")
                if not _media_type_allowed(value, schema["enum"]):
                    raise HTTPError(415, f"unsupported {name} {value!r}; expected one of {schema['enum']}")

    def _handle_write(self, query: dict[str, str], raw: bytes) -> _Response:
        fake = self.server.fake
        self._check_parameters("/api/v2/write", query)
        fake._resolve_org(query)
        bucket = fake._resolve_bucket(query["bucket"])
        if bucket is None:
            raise HTTPError(404, f'bucket "{query["bucket"]}" not found')
        too_large = HTTPError(413, "unable to read data: points batch is too large", code="invalid")
        if len(raw) > fake.max_body_bytes:
            raise too_large
        body = raw
        if (self.headers.get("Content-Encoding") or "identity").lower() == "gzip":
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                body = decompressor.decompress(raw, fake.max_body_bytes + 1)
                if decompressor.unconsumed_tail:
                    raise too_large
                if not decompressor.eof:
                    raise zlib.error("truncated gzip stream")
            except zlib.error as exc:
                raise HTTPError(400, f"unable to decompress gzip body: {exc}") from exc
            self._recorded_body = body
        if len(body) > fake.max_body_bytes:
            raise too_large
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HTTPError(400, f"line protocol is not valid UTF-8: {exc}") from exc
        precision = query.get("precision", "ns")
        try:
            lines = parse_batch(text, precision, time.time_ns())
        except LineProtocolError as exc:
            raise HTTPError(400, str(exc), extra={"line": exc.first_line}) from exc
        if not lines:
            raise HTTPError(400, "writing requires points")
        rejected = fake._write(bucket, lines)
        if rejected:
            message = f"partial write: field type conflict: {rejected[0]} dropped={len(rejected)}"
            raise HTTPError(422, message)
        return _Response(204, {}, b"")

    def _handle_query(self, query: dict[str, str], raw: bytes) -> _Response:
        fake = self.server.fake
        self._check_parameters("/api/v2/query", query)
        content_type = self.headers.get("Content-Type", "")
        fake._resolve_org(query)
        extern: Any = None
        params: dict[str, Any] | None = None
        now_ns = time.time_ns()
        dialect = flux.Dialect()
        if _media_type(content_type) == "application/vnd.flux":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HTTPError(400, f"failed to decode request body: {exc}") from exc
        else:
            try:
                request = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise HTTPError(400, f"failed to decode request body: {exc}") from exc
            problems = validate(request, {"$ref": "#/components/schemas/Query"}, "body")
            if isinstance(request, dict) and "params" in request and not isinstance(request["params"], dict):
                problems.append("body.params: expected object")
            if problems:
                self._safe_record_query(request)
                raise HTTPError(400, "failed to decode request body: " + "; ".join(problems))
            text = request["query"]
            extern = request.get("extern")
            params = request.get("params")
            if "now" in request:
                now_ns = flux.parse_rfc3339(request["now"])
            dialect = _dialect(request.get("dialect") or {})
        recorded: dict[str, Any] = {}
        try:
            recorded.update({k: _to_python(v) for k, v in flux.extern_bindings(extern).items()})
        except flux.FluxError:
            pass
        recorded.update(params or {})
        fake._record_query(text, recorded)
        try:
            results = flux.run(text, now_ns=now_ns, load_bucket=fake._bucket_points, extern=extern, params=params)
        except flux.FluxError as exc:
            raise HTTPError(exc.status, str(exc), code=exc.code) from exc
        payload = flux.encode_csv(results, dialect)
        headers = {"Content-Type": "text/csv; charset=utf-8", "Vary": "Accept-Encoding"}
        if _accepts_gzip(self.headers.get("Accept-Encoding")):
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        return _Response(200, headers, payload)

    def _safe_record_query(self, request: Any) -> None:
        if isinstance(request, dict) and isinstance(request.get("query"), str):
            self.server.fake._record_query(request["query"], {})

    def _send(self, response: _Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if response.status != 204:
            self.send_header("Content-Length", str(len(response.payload)))
        self.end_headers()
        if self.command != "HEAD" and response.status != 204:
            self.wfile.write(response.payload)


@dataclass(frozen=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    payload: bytes


def _json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> _Response:
    payload = json.dumps(body).encode()
    return _Response(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, payload)


def _dialect(raw: Mapping[str, Any]) -> flux.Dialect:
    return flux.Dialect(
        header=raw.get("header", True),
        delimiter=raw.get("delimiter", ","),
        annotations=tuple(raw.get("annotations") or ()),
    )


def _accepts_gzip(value: str | None) -> bool:
    for item in (value or "").split(","):
        coding, _, qualifier = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            q = qualifier.strip()
            return not (q.startswith("q=") and float(q[2:] or 0) == 0)
    return False


def _to_python(value: Any) -> Any:
    if isinstance(value, flux.Time):
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value.ns // 1000)
    if isinstance(value, flux.Duration):
        return timedelta(microseconds=value.ns // 1000)
    if isinstance(value, UInt):
        return int(value)
    if isinstance(value, list):
        return [_to_python(v) for v in value]
    return value


__all__ = ["FakeInfluxDB", "Point", "RecordedRequest", "load_spec", "response_schema", "validate"]
