"""Which devices are online, and whether the store and broker answer: the bodies of /api/devices/status
and of the health check, shared by the dashboard's API and the status service.

The status service (`python collector/device_status_api.py`, the seed's device status API) is a
small Flask app with only those two endpoints, on DEVICE_STATUS_PORT: for a monitor or a load
balancer that needs the fleet's state without the dashboard's page, Socket.IO or login.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from werkzeug.serving import make_server

from dashboard.parameters import BadParameter, check_only
from dashboard.presence import PresenceTracker, device_state
from dashboard.security import error_response, init_security
from rtds.settings import Settings
from rtds.shutdown import StopRequest
from rtds.store import StoreHealth, StoreReader, open_store

log = logging.getLogger(__name__)


def devices_status(store: StoreReader, presence: PresenceTracker | None, offline_after_s: float) -> dict[str, Any]:
    """Every device the store knows, online or offline, with the counts."""
    now = time.time()
    last_seen = store.last_seen()
    statuses = presence.snapshot() if presence is not None else {}
    devices = []
    for device_id in sorted(last_seen):
        state = device_state(last_seen[device_id], statuses.get(device_id), now, offline_after_s)
        devices.append({"device_id": device_id, **state.as_dict()})
    online = sum(1 for device in devices if device["online"])
    return {
        "time": now,
        "offline_after_s": offline_after_s,
        "total": len(devices),
        "online": online,
        "offline": len(devices) - online,
        "devices": devices,
    }


def health_status(store: StoreReader, presence: PresenceTracker | None) -> tuple[dict[str, Any], bool]:
    """The health body (status, time, store, broker) and whether everything is healthy."""
    store_health = _store_health(store)
    broker = presence.health() if presence is not None else {"ok": False, "detail": "no presence subscriber"}
    healthy = store_health.ok and broker["ok"]
    body = {
        "status": "ok" if healthy else "degraded",
        "time": time.time(),
        "store": store_health.as_dict(),
        "broker": broker,
    }
    return body, healthy


def _store_health(store: StoreReader) -> StoreHealth:
    try:
        return store.health()
    except Exception as exc:
        return StoreHealth(False, type(store).__name__, f"health check failed: {type(exc).__name__}: {exc}")


# --- the status service ---------------------------------------------------------------------------


def create_status_app(settings: Settings, store: StoreReader, presence: PresenceTracker) -> Flask:
    app = Flask(__name__)
    app.config.update(DEBUG=False, PROPAGATE_EXCEPTIONS=False)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    init_security(app)
    routes = Blueprint("status", __name__)

    @routes.errorhandler(BadParameter)
    def bad_parameter(error: BadParameter) -> Response:
        return error_response(400, str(error))

    @routes.get("/api/devices/status")
    def status() -> Response:
        check_only(request.args, ())
        return jsonify(devices_status(store, presence, settings.dashboard_offline_after_s))

    @routes.get("/health")
    def health() -> tuple[Response, int]:
        check_only(request.args, ())
        body, healthy = health_status(store, presence)
        return jsonify(body), 200 if healthy else 503

    app.register_blueprint(routes)
    return app


def run_status_service(settings: Settings, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT, then print a summary."""
    if settings.login_enabled and not _is_loopback(host):
        log.warning(
            "the status service has no login: anyone who reaches %s:%d sees every device's status; "
            "bind it to 127.0.0.1 (--host or FLASK_HOST) or put it behind your proxy's access control",
            host,
            port,
        )
    if settings.log_level != "DEBUG":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is DEBUG detail
    store = open_store(settings)
    presence = PresenceTracker(settings)
    app = create_status_app(settings, store, presence)
    requests = 0

    @app.after_request
    def count(response: Response) -> Response:
        nonlocal requests
        requests += 1
        return response

    started = time.monotonic()
    try:
        server = make_server(host, port, app, threaded=True)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s; set DEVICE_STATUS_PORT (or --port) to a free port", host, port, exc)
        store.close()
        return 1
    stop = StopRequest()
    stop.set_on_signals()
    presence.start()
    thread = threading.Thread(target=server.serve_forever, name="status-http", daemon=True)
    thread.start()
    log.info("device status at http://%s:%d/api/devices/status and /health, store %s", host, port, settings.store)
    try:
        stop.wait()
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        presence.stop()
        store.close()
        stop.ignore_signals()
    print(f"device status service stopped after {time.monotonic() - started:.0f} s: {requests} requests", flush=True)
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
