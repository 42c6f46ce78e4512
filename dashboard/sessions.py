"""Sessions that logout really ends, and cookies that are Secure when the page is served over HTTPS.

Flask keeps the session in a signed cookie, so the server has nothing to forget at logout: a copied cookie
would go on working. Each user has a session generation instead, kept in a small SQLite file
(DASHBOARD_SESSION_PATH) that every dashboard process of the host reads; the generation is part of the
session's user id, and logout raises it, which ends every session of that user, in every process.

The cookie's Secure flag follows DASHBOARD_SECURE_COOKIE: `auto` sets it when the request came over
HTTPS, which behind a reverse proxy is what its X-Forwarded-Proto says, believed only for
DASHBOARD_TRUSTED_PROXIES hops (Werkzeug's ProxyFix).
"""

from __future__ import annotations

import threading
from pathlib import Path

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from rtds.settings import Settings
from rtds.store.sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS session_generations (
    username TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
) WITHOUT ROWID;
"""


class SessionGenerations:
    """username -> the generation its valid sessions carry; logout moves it on."""

    def __init__(self, path: str | Path) -> None:
        self._connection = connect(path, busy_timeout_ms=5_000, schema=SCHEMA)
        self._lock = threading.Lock()

    def current(self, username: str) -> int:
        with self._lock:
            row = self._connection.execute(
                "SELECT generation FROM session_generations WHERE username = ?", (username,)
            ).fetchone()
        return int(row[0]) if row else 0

    def end_sessions(self, username: str) -> None:
        with self._lock:
            self._connection.execute(
                "INSERT INTO session_generations (username, generation) VALUES (?, 1) "
                "ON CONFLICT (username) DO UPDATE SET generation = generation + 1",
                (username,),
            )

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class CookieSecurity(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the Secure flag decided per request."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def get_cookie_secure(self, app: Flask) -> bool:
        if self.mode == "always":
            return True
        if self.mode == "never":
            return False
        return request.is_secure


def init_sessions(app: Flask, settings: Settings) -> None:
    """Per-request Secure cookies, and ProxyFix for the trusted proxies (call after Socket.IO wrapped the app)."""
    app.session_interface = CookieSecurity(settings.dashboard_secure_cookie)
    hops = settings.dashboard_trusted_proxies
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]
