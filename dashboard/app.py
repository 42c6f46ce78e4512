"""The live dashboard: a Flask + Flask-SocketIO app reading through the store interface (SQLite or InfluxDB).

Run it for development with `python dashboard/app.py` or `rtds dashboard` (Werkzeug's server with
debug off; the Werkzeug debugger is never enabled). In production, serve it with gunicorn, one worker
with threads (Socket.IO clients and the live feed live in that one process; do not use --preload,
which would start the feed before the fork):

    gunicorn -w 1 --threads 100 -b 0.0.0.0:5000 'dashboard.app:create_app()'

Several such processes (on one host or several) serve one site through DASHBOARD_MESSAGE_QUEUE, a
Redis they share, behind a proxy with sticky sessions; DEPLOYMENT.md says how (dashboard/group.py).

Create the login password hash with `rtds dashboard --hash-password` and put it in
DASHBOARD_PASSWORD_HASH next to DASHBOARD_USERNAME and a random FLASK_SECRET_KEY.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import getpass
import logging
import secrets
import signal
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, render_template, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import current_user
from flask_socketio import SocketIO, emit
from limits import parse_many
from socketio import RedisManager
from socketio.exceptions import ConnectionRefusedError as SocketConnectionRefused
from werkzeug.security import generate_password_hash

from dashboard.api import AnyTextConverter, make_api
from dashboard.auth import check_password_hash_setting, init_auth, session_user_id
from dashboard.group import REDIS_TIMEOUT_S, ROLE_ALONE, FeedGroup
from dashboard.live import LiveFeed, OrjsonCodec
from dashboard.presence import PresenceTracker
from dashboard.security import check_secret_key, init_security
from dashboard.sessions import Generations, OpenSockets, init_sessions, open_generations
from rtds.cli import command_prog
from rtds.errors import ConfigError
from rtds.logs import configure_logging
from rtds.settings import Settings, load_settings
from rtds.store import StoreReader, open_store

log = logging.getLogger("dashboard.app")

LIVE_EVENT = "latest_data"
# Past this many devices the page shows compact tiles without charts (the user can switch back).
COMPACT_AFTER_DEVICES = 50
MAX_REQUEST_BYTES = 16 * 1024


@dataclass
class Dashboard:
    """What one app instance runs; `close()` stops it (tests, shutdown)."""

    settings: Settings
    store: StoreReader
    presence: PresenceTracker
    feed: LiveFeed
    socketio: SocketIO
    owns_store: bool
    generations: Generations | None = None
    sockets: OpenSockets | None = None

    def close(self) -> None:
        self.feed.stop()
        self.presence.stop()
        if self.owns_store:
            self.store.close()
        if self.sockets is not None:
            self.sockets.stop()
        if self.generations is not None:
            self.generations.close()


def create_app(settings: Settings | None = None, store: StoreReader | None = None) -> Flask:
    """The dashboard app. Without arguments it reads settings from the environment and .env and opens STORE=."""
    settings = settings if settings is not None else load_settings()
    check_secret_key(settings)
    check_password_hash_setting(settings)
    rate_limits = _checked_rate_limit(settings.dashboard_rate_limit)

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.flask_secret_key or _random_secret_key(),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        # CSRF tokens are tied to the session; no clock on them, so a form left open for hours still works.
        WTF_CSRF_TIME_LIMIT=None,
        DEBUG=False,
        PROPAGATE_EXCEPTIONS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.merge_slashes = False  # a `//` in a device id is a 400 from the API, not a redirect
    app.url_map.converters["any_text"] = AnyTextConverter
    init_security(app)
    limiter = Limiter(get_remote_address, app=app, storage_uri="memory://", headers_enabled=True)

    owns_store = store is None
    store = store if store is not None else open_store(settings)
    presence = PresenceTracker(settings)
    socketio = SocketIO()
    generations = open_generations(settings) if settings.login_enabled else None
    sockets = (
        OpenSockets(
            expected_id=lambda: session_user_id(settings, generations.current(settings.dashboard_username)),
            disconnect=lambda sid: socketio.server.disconnect(sid, namespace="/"),
        )
        if generations is not None
        else None
    )
    init_auth(app, settings, limiter, generations, on_logout=sockets.close_all if sockets else lambda: None)
    socketio.init_app(
        app,
        client_manager=_message_queue(settings),
        async_mode="threading",
        cors_allowed_origins=_cors_origins(settings.dashboard_cors_origins),
        logger=False,
        engineio_logger=False,
        json=OrjsonCodec,
    )
    init_sessions(app, settings)  # after Socket.IO wrapped the app, so that ProxyFix is outermost
    group = (
        FeedGroup(
            settings.dashboard_message_queue, settings.dashboard_message_channel, settings.dashboard_push_interval_s
        )
        if settings.dashboard_message_queue
        else None
    )

    def emit_live(payload: dict[str, Any]) -> None:
        # While Redis cannot be reached each process serves its own clients; publishing would only log errors.
        socketio.emit(LIVE_EVENT, payload, ignore_queue=group is not None and group.role == ROLE_ALONE)

    feed = LiveFeed(store, presence, settings, emit=emit_live, group=group)

    api = make_api(store, presence, feed, settings)
    if rate_limits:
        # Health checks (load balancers, monitoring) are exempt; everything else under /api is limited per client.
        limiter.limit(settings.dashboard_rate_limit, exempt_when=lambda: request.endpoint == "api.health")(api)
    app.register_blueprint(api)

    @app.get("/")
    def page() -> str:
        return render_template(
            "dashboard.html",
            settings=settings,
            compact_after=COMPACT_AFTER_DEVICES,
        )

    @socketio.on("connect")
    def on_connect(auth: Any = None) -> None:
        if settings.login_enabled:
            if not current_user.is_authenticated:
                raise SocketConnectionRefused("login required; sign in at /login")
            assert sockets is not None
            sockets.opened(request.sid, current_user.get_id())  # type: ignore[attr-defined]
        emit(LIVE_EVENT, feed.client_connected(), ignore_queue=True)  # for this client, which is here

    @socketio.on("disconnect")
    def on_disconnect(*_: Any) -> None:
        if sockets is not None:
            sockets.closed(request.sid)  # type: ignore[attr-defined]
        feed.client_disconnected()

    # Threads start last, so a setting refused above leaves nothing running.
    presence.start()
    feed.start(socketio.start_background_task, socketio.sleep)
    if sockets is not None:
        socketio.start_background_task(sockets.run, socketio.sleep, settings.dashboard_push_interval_s)
    app.extensions["rtds"] = Dashboard(settings, store, presence, feed, socketio, owns_store, generations, sockets)
    return app


def _message_queue(settings: Settings) -> RedisManager | None:
    """python-socketio's Redis manager when DASHBOARD_MESSAGE_QUEUE is set (None: this process alone).

    Built here rather than by Flask-SocketIO's `message_queue=` so that connecting to an unreachable Redis
    gives up within a second instead of the system's TCP timeout (no read timeout: its listener idles).
    """
    if not settings.dashboard_message_queue:
        return None
    return RedisManager(
        settings.dashboard_message_queue,
        channel=settings.dashboard_message_channel,
        redis_options={"socket_connect_timeout": REDIS_TIMEOUT_S},
    )


def _random_secret_key() -> str:
    log.info(
        "FLASK_SECRET_KEY is empty: this run signs its cookies with a random key, so sessions end when the "
        "dashboard restarts (login needs a fixed key: set FLASK_SECRET_KEY)"
    )
    return secrets.token_urlsafe(32)


def _checked_rate_limit(text: str) -> bool:
    """True when a limit is set; a malformed one stops the app at start."""
    if not text.strip():
        return False
    try:
        parse_many(text)
    except ValueError:
        raise ConfigError(
            f"DASHBOARD_RATE_LIMIT={text!r} is not a rate limit; use e.g. 120/minute or '10/second;300/hour', "
            "or leave it empty for none"
        ) from None
    return True


def _cors_origins(text: str) -> list[str] | None:
    """None means same origin only (python-engineio's default)."""
    origins = [origin.strip() for origin in text.split(",") if origin.strip()]
    if "*" in origins:
        log.warning("DASHBOARD_CORS_ORIGINS contains '*': any web site may open Socket.IO connections to the dashboard")
    return origins or None


def hash_password() -> int:
    """Ask for a password twice and print its Werkzeug hash for DASHBOARD_PASSWORD_HASH."""
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat it: "):
            print("The two passwords differ; nothing was printed.", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("Use a password of at least 8 characters.", file=sys.stderr)
        return 1
    print(generate_password_hash(password))
    print(
        "Put it in .env in single quotes (its $ signs must stay as they are): DASHBOARD_PASSWORD_HASH='<hash>', "
        "with DASHBOARD_USERNAME and a random FLASK_SECRET_KEY.",
        file=sys.stderr,
    )
    return 0


def run(settings: Settings) -> int:
    app = create_app(settings)
    dashboard: Dashboard = app.extensions["rtds"]
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    werkzeug_log = logging.getLogger("werkzeug")
    if settings.log_level != "DEBUG":
        werkzeug_log.setLevel(logging.WARNING)  # one line per request is DEBUG detail
    werkzeug_log.addFilter(DevelopmentServerNotice())
    login = "on" if settings.login_enabled else "off (set DASHBOARD_USERNAME and DASHBOARD_PASSWORD_HASH to turn it on)"
    log.info(
        "dashboard at http://%s:%d, store %s, login %s", settings.flask_host, settings.flask_port, settings.store, login
    )
    try:
        dashboard.socketio.run(
            app,
            host=settings.flask_host,
            port=settings.flask_port,
            debug=False,
            use_reloader=False,
            log_output=settings.log_level == "DEBUG",
            allow_unsafe_werkzeug=True,
        )
    except KeyboardInterrupt:
        pass
    finally:
        stats = dashboard.feed.stats()
        dashboard.close()
        print(
            f"dashboard stopped after {time.monotonic() - started:.0f} s: {stats['ticks']} ticks, "
            f"{stats['connections']} client connections (peak {stats['peak_clients']} at once), "
            f"slowest refresh {stats['max_refresh_ms']:.0f} ms, {stats['store_errors']} store errors",
            flush=True,
        )
    return 0


class DevelopmentServerNotice(logging.Filter):
    """Drops the one warning Flask-SocketIO logs whenever `run()` uses Werkzeug without a terminal.

    `rtds dashboard` uses Werkzeug's server on purpose (allow_unsafe_werkzeug=True: `rtds up`, one site);
    the notice would print at every `rtds up`. Every other Werkzeug message passes. Production: gunicorn.
    """

    NOTICE = "Werkzeug appears to be used in a production deployment"

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOTICE)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=command_prog("dashboard"), description="Serve the live dashboard and its REST API."
    )
    parser.add_argument("--host", help="address to listen on (default: FLASK_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: FLASK_PORT, 5000)")
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="prompt for a password and print the hash to put in DASHBOARD_PASSWORD_HASH",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hash_password:
        return hash_password()
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        overrides = {key: value for key, value in (("flask_host", args.host), ("flask_port", args.port)) if value}
        return run(settings.with_overrides(**overrides))
    except ConfigError as exc:
        print(f"dashboard: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
