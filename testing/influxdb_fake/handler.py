"""The HTTP request handler of FakeInfluxDB: routing, authorization, and the write, query, health and ping endpoints."""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from . import flux
from .line_protocol import LineProtocolError, UInt, parse_batch
from .responses import HTTPError, Response, json_response
from .spec import check_parameters, media_type, query_body_problems

if TYPE_CHECKING:
    from .server import FakeInfluxDBServer

VERSION = "v2.7.11"
BUILD = "OSS"


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: FakeInfluxDBServer

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
            response = json_response(err.status, err.body, err.headers)
        except Exception as exc:
            response = json_response(500, {"code": "internal error", "message": f"fake influxdb bug: {exc!r}"})
        body = self._recorded_body if self._recorded_body is not None else raw
        fake._record(method, path, query, headers, body, response.status)
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

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Response:
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
            return self._ping()
        if not fake._is_healthy():
            raise HTTPError(503, "service unavailable", headers={"Retry-After": "1"})
        self._authorize()
        if path == "/api/v2/write":
            return self._handle_write(query, raw)
        return self._handle_query(query, raw)

    # endpoints
    def _health(self) -> Response:
        healthy = self.server.fake._is_healthy()
        body = {
            "name": "influxdb",
            "message": "ready for queries and writes" if healthy else "service unavailable",
            "status": "pass" if healthy else "fail",
            "checks": [],
            "version": VERSION,
            "commit": "fake",
        }
        return json_response(200 if healthy else 503, body)

    def _ping(self) -> Response:
        status = 204 if self.server.fake._is_healthy() else 503
        return Response(status, {"X-Influxdb-Build": BUILD, "X-Influxdb-Version": VERSION}, b"")

    def _authorize(self) -> None:
        value = self.headers.get("Authorization")
        if value is None:
            raise HTTPError(401, "unauthorized access", code="unauthorized")
        scheme, _, credential = value.partition(" ")
        if scheme != "Token" or credential != self.server.fake.token:
            raise HTTPError(401, "unauthorized access", code="unauthorized")

    def _handle_write(self, query: dict[str, str], raw: bytes) -> Response:
        fake = self.server.fake
        check_parameters("/api/v2/write", query, self.headers)
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
        return Response(204, {}, b"")

    def _handle_query(self, query: dict[str, str], raw: bytes) -> Response:
        fake = self.server.fake
        check_parameters("/api/v2/query", query, self.headers)
        content_type = self.headers.get("Content-Type", "")
        fake._resolve_org(query)
        extern: Any = None
        params: dict[str, Any] | None = None
        now_ns = time.time_ns()
        dialect = flux.Dialect()
        if media_type(content_type) == "application/vnd.flux":
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HTTPError(400, f"failed to decode request body: {exc}") from exc
        else:
            try:
                request = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise HTTPError(400, f"failed to decode request body: {exc}") from exc
            problems = query_body_problems(request)
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
        return Response(200, headers, payload)

    def _safe_record_query(self, request: Any) -> None:
        if isinstance(request, dict) and isinstance(request.get("query"), str):
            self.server.fake._record_query(request["query"], {})

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if response.status != 204:
            self.send_header("Content-Length", str(len(response.payload)))
        self.end_headers()
        if self.command != "HEAD" and response.status != 204:
            self.wfile.write(response.payload)


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
