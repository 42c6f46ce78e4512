"""Protections that are always on: a real secret key with login, security headers, and errors without traces.

The Content-Security-Policy allows scripts, styles and connections only from the app's own origin, so
an injected `<img onerror=...>` or `<script>` cannot run even if some text ever reached the page as
HTML. Error handlers answer every failure, 500 included, with a short JSON message; the exception goes
to the log, never to the client.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from rtds.errors import ConfigError, StoreError
from rtds.settings import EXAMPLE_SECRET_KEY, Settings

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MIN_SECRET_KEY_LENGTH = 16


def check_secret_key(settings: Settings) -> None:
    """With login on, sessions are signed with FLASK_SECRET_KEY: refuse the example value or a short one."""
    if not settings.login_enabled:
        return
    key = settings.flask_secret_key
    if not key or key == EXAMPLE_SECRET_KEY:
        raise ConfigError(
            "login is on (DASHBOARD_USERNAME and DASHBOARD_PASSWORD_HASH are set) but FLASK_SECRET_KEY is "
            + ("empty" if not key else "the example value")
            + "; anyone could forge a session. Set FLASK_SECRET_KEY to a long random string, e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if len(key) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(
            f"FLASK_SECRET_KEY is {len(key)} characters; use at least {MIN_SECRET_KEY_LENGTH} random characters, "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def init_security(app: Flask) -> None:
    app.after_request(_add_headers)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(StoreError, _store_error)
    app.register_error_handler(Exception, _unexpected_error)


def _add_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def error_response(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    if status >= 500:
        return _unexpected_error(getattr(error, "original_exception", None) or error)
    message = {
        404: "not found; the API is described at /api/openapi.json",
        405: f"method {request.method} is not allowed here",
    }.get(status, error.description or error.name)
    response = error_response(status, message)
    for name, value in error.get_headers():  # Allow (405), Retry-After (429), ...
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _store_error(error: StoreError) -> Response:
    log.warning("%s %s: the store failed: %s", request.method, request.path, error)
    response = error_response(503, "the store is unavailable right now; see /api/health and try again shortly")
    response.headers["Retry-After"] = str(int(error.retry_after or 5))
    return response


def _unexpected_error(error: BaseException) -> Response:
    log.error("%s %s failed", request.method, request.path, exc_info=error)
    return error_response(500, "internal error; the details are in the dashboard's log")
