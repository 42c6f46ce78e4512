"""The REST API: health, device status, each device's latest record and history, and its OpenAPI description.

Every parameter is checked by `dashboard.parameters` before the store is called; a bad one is a 400
that says what to send, an unknown device a 404. The blueprint is built per app (`make_api`), so
each app's rate limit and store stay its own.
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request
from flask_login import current_user
from werkzeug.routing import BaseConverter

from dashboard.live import LiveFeed
from dashboard.openapi import openapi_document
from dashboard.parameters import BadParameter, check_device_id, check_only, history_query
from dashboard.presence import PresenceTracker, device_state
from dashboard.security import error_response
from dashboard.status import devices_status, health_status
from rtds.settings import Settings
from rtds.store import StoreReader


class AnyTextConverter(BaseConverter):
    """Any text, slashes included: a device id with an encoded `/` (a%2Fb, decoded before routing) reaches
    check_device_id and its JSON 400, where the default converter would end in a 404, or Werkzeug's 308 for `//`.
    Register it as `any_text` in the app's url_map before the blueprint."""

    regex = r"[\s\S]+?"
    part_isolating = False


def make_api(store: StoreReader, presence: PresenceTracker | None, feed: LiveFeed, settings: Settings) -> Blueprint:
    api = Blueprint("api", __name__, url_prefix="/api")

    @api.errorhandler(BadParameter)
    def bad_parameter(error: BadParameter) -> Response:
        return error_response(400, str(error))

    @api.get("/health")
    def health() -> tuple[Response, int]:
        check_only(request.args, ())
        body, healthy = health_status(store, presence)
        # With login on, anonymous callers (load balancers) learn only the status, not the URLs inside.
        if settings.login_enabled and not current_user.is_authenticated:
            body = {"status": body["status"]}
        else:
            body["live"] = feed.stats()
        return jsonify(body), 200 if healthy else 503

    @api.get("/devices/status")
    def status() -> Response:
        check_only(request.args, ())
        return jsonify(devices_status(store, presence, settings.dashboard_offline_after_s))

    @api.get("/devices/<any_text:device_id>/latest")
    def device_latest(device_id: str) -> Response:
        check_only(request.args, ())
        check_device_id(device_id)
        rows = store.latest([device_id])
        if not rows:
            return _unknown_device(device_id)
        record = rows[0]
        presence_status = presence.get(device_id) if presence is not None else None
        state = device_state(record.get("time"), presence_status, time.time(), settings.dashboard_offline_after_s)
        return jsonify(device_id=device_id, **state.as_dict(), record=record)

    @api.get("/devices/<any_text:device_id>/history")
    def device_history(device_id: str) -> Response:
        query = history_query(device_id, request.args.to_dict(flat=False))
        if not store.latest([query.device_id]):
            return _unknown_device(query.device_id)
        now = time.time()
        since = now - query.duration_s
        points = store.history(query.device_id, since, query.fields, query.every_s)
        return jsonify(
            device_id=query.device_id,
            duration_s=query.duration_s,
            since=since,
            until=now,
            every_s=query.every_s,
            fields=list(query.fields),
            count=len(points),
            points=points,
        )

    @api.get("/openapi.json")
    def openapi() -> Response:
        check_only(request.args, ())
        return jsonify(openapi_document(settings))

    return api


def _unknown_device(device_id: str) -> Response:
    return error_response(
        404, f"no data for device {device_id!r}; GET /api/devices/status lists the devices the store knows"
    )
