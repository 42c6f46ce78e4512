"""HTTP answers: the `Error` body InfluxDB sends (`code` from the `ErrorCode` enum) and a response value."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUS_CODES = {
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


class HTTPError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, extra: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"code": code or STATUS_CODES.get(status, "internal error"), "message": message}
        self.body.update(extra or {})
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    payload: bytes


def json_response(status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    payload = json.dumps(body).encode()
    return Response(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, payload)
