"""Sessions that logout really ends, and cookies that are Secure when the page is served over HTTPS.

Flask keeps the session in a signed cookie, so the server has nothing to forget at logout: a copied cookie
would go on working. Each user has a session generation instead, kept in a small SQLite file
(DASHBOARD_SESSION_PATH) that every dashboard process of the host reads, or, for a group of dashboard
processes (DASHBOARD_MESSAGE_QUEUE, possibly on several hosts), in their Redis; the generation is part of
the session's user id, and logout moves it on, which ends every session of that user, in every process.
Each process also closes, within a push interval, the Socket.IO connections of sessions that ended
elsewhere (OpenSockets); the process that logged out closes its own at once.

The cookie's Secure flag follows DASHBOARD_SECURE_COOKIE: `auto` sets it when the request came over
HTTPS, which behind a reverse proxy is what its X-Forwarded-Proto says, believed only for
DASHBOARD_TRUSTED_PROXIES hops (Werkzeug's ProxyFix).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from redis.exceptions import RedisError
from werkzeug.middleware.proxy_fix import ProxyFix

from dashboard.group import redis_client
from rtds.logs import RateLimitedLog
from rtds.settings import Settings
from rtds.store.sqlite import connect

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS session_generations (
    username TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
) WITHOUT ROWID;
"""


class Generations(Protocol):
    """username -> the generation its valid sessions carry; `end_sessions` moves it on."""

    def current(self, username: str) -> str: ...

    def end_sessions(self, username: str) -> None: ...

    def close(self) -> None: ...


def open_generations(settings: Settings) -> Generations:
    """In the group's Redis when there is one (DASHBOARD_MESSAGE_QUEUE), else in DASHBOARD_SESSION_PATH."""
    if settings.dashboard_message_queue:
        return RedisGenerations(settings.dashboard_message_queue, settings.dashboard_message_channel)
    return SessionGenerations(settings.dashboard_session_path)


class SessionGenerations:
    """Generations in a SQLite file, shared by the dashboard processes of one host: a count per user."""

    def __init__(self, path: str | Path) -> None:
        self._connection = connect(path, busy_timeout_ms=5_000, schema=SCHEMA)
        self._lock = threading.Lock()

    def current(self, username: str) -> str:
        with self._lock:
            row = self._connection.execute(
                "SELECT generation FROM session_generations WHERE username = ?", (username,)
            ).fetchone()
        return str(row[0]) if row else "0"

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


class RedisGenerations:
    """Generations in the group's Redis (`<channel>:sessions`), for dashboard processes on several hosts.

    A generation here is a random token, not a count: if Redis loses it (a restart without persistence),
    a new one is drawn and every session ends, where a count would start again at 0 and revive old cookies.
    While Redis cannot be read, no session is valid (the page asks to sign in again).
    """

    def __init__(self, url: str, channel: str) -> None:
        self._redis = redis_client(url)
        self._key = f"{channel}:sessions"
        self._warn = RateLimitedLog(log, 30.0)

    def current(self, username: str) -> str:
        try:
            stored = self._redis.hget(self._key, username)
            if stored is None:
                self._redis.hsetnx(self._key, username, secrets.token_hex(8))
                stored = self._redis.hget(self._key, username)
        except RedisError as exc:
            self._warn.warning(
                "redis", "sessions: DASHBOARD_MESSAGE_QUEUE cannot be read (%s); no session is valid", exc
            )
            return "unavailable-" + secrets.token_hex(8)
        return stored.decode() if isinstance(stored, bytes) else str(stored)

    def end_sessions(self, username: str) -> None:
        self._redis.hset(self._key, username, secrets.token_hex(8))

    def close(self) -> None:
        self._redis.close()


class OpenSockets:
    """The Socket.IO connections of signed-in sessions, each with the session's user id, so that a session
    ended by a logout in another process has its connections closed here too (`close_ended`, every loop)."""

    def __init__(self, expected_id: Callable[[], str], disconnect: Callable[[str], Any]) -> None:
        self._expected_id = expected_id
        self._disconnect = disconnect
        self._user_ids: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def opened(self, sid: str, user_id: str) -> None:
        with self._lock:
            self._user_ids[sid] = user_id

    def closed(self, sid: str) -> None:
        with self._lock:
            self._user_ids.pop(sid, None)

    def close_all(self) -> None:
        """Logout in this process ended every session of the account: close their connections at once."""
        with self._lock:
            sids, self._user_ids = list(self._user_ids), {}
        for sid in sids:
            self._disconnect(sid)

    def close_ended(self) -> None:
        with self._lock:
            if not self._user_ids:
                return
        expected = self._expected_id()
        with self._lock:
            ended = [sid for sid, user_id in self._user_ids.items() if user_id != expected]
            for sid in ended:
                del self._user_ids[sid]
        for sid in ended:
            self._disconnect(sid)

    def run(self, sleep: Callable[[float], Any], interval_s: float) -> None:
        while not self._stopping.is_set():
            sleep(interval_s)
            try:
                self.close_ended()
            except Exception:
                log.exception("sessions: checking the open Socket.IO connections failed; the next loop tries again")

    def stop(self) -> None:
        self._stopping.set()


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
