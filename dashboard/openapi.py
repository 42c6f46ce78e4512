"""The OpenAPI 3.1 description of the REST API, served at /api/openapi.json.

It is built from the same constants the API checks against (field names, the device id pattern,
the duration limits), so the description cannot drift from what the code accepts.
"""

from __future__ import annotations

from typing import Any

from dashboard.parameters import DEFAULT_HISTORY_DURATION, DURATION_PATTERN, HISTORY_FIELDS, RAW_HISTORY_MAX_S
from rtds.schema import DEVICE_ID_PATTERN, STORED_FIELDS
from rtds.settings import Settings

_ERROR = {"$ref": "#/components/schemas/Error"}
_DEVICE_ID = {
    "name": "device_id",
    "in": "path",
    "required": True,
    "description": "The vehicle's id, as it publishes it (e.g. vehicle_01).",
    "schema": {"type": "string", "pattern": DEVICE_ID_PATTERN.pattern},
}


def _error_response(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": _ERROR}}}


def _json(schema_name: str, text: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    common_errors = {
        "400": _error_response("A parameter is not valid; the message says what to send."),
        "401": _error_response("Login is on and the request has no session; sign in at /login."),
        "429": _error_response(f"Too many requests (limit {settings.dashboard_rate_limit or 'none'} per client)."),
        "500": _error_response("Internal error; details are in the server log only."),
        "503": _error_response("The store is unavailable; see /api/health."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "realtime-datastreaming dashboard API",
            "version": "1",
            "description": (
                "Vehicle telemetry read through the store interface (SQLite or InfluxDB). Live updates are "
                "pushed over Socket.IO: event `latest_data`, once per DASHBOARD_PUSH_INTERVAL_S, with the "
                "latest record of every device and a fleet summary. With login on, every endpoint except "
                "/api/health (which then returns only its status) needs the session cookie from /login."
            ),
        },
        "paths": {
            "/api/health": {
                "get": {
                    "summary": "Health of the store (URL in use, primary/fallback) and the broker connection.",
                    "responses": {
                        "200": _json("Health", "Everything works."),
                        "503": _json("Health", "Degraded: the store or the broker is unreachable."),
                    },
                }
            },
            "/api/devices/status": {
                "get": {
                    "summary": "Every device the store knows, online or offline.",
                    "description": (
                        f"A device is offline after DASHBOARD_OFFLINE_AFTER_S ({settings.dashboard_offline_after_s:g} s)"
                        " without data, or at once when a retained `offline` arrives on device/status/{id}"
                        " (its Last Will) after its newest data."
                    ),
                    "responses": {"200": _json("DeviceStatusList", "The devices.")}
                    | _pick(common_errors, "401", "429", "500", "503"),
                }
            },
            "/api/devices/{device_id}/latest": {
                "get": {
                    "summary": "The newest stored record of one device, with all fields.",
                    "parameters": [_DEVICE_ID],
                    "responses": {
                        "200": _json("Latest", "The record."),
                        "404": _error_response("The store has no data for this device."),
                    }
                    | common_errors,
                }
            },
            "/api/devices/{device_id}/history": {
                "get": {
                    "summary": "A series of one device's fields over a recent duration, oldest first.",
                    "parameters": [
                        _DEVICE_ID,
                        {
                            "name": "duration",
                            "in": "query",
                            "description": "How far back: a number and a unit (ms, s, m, h, d), above 0, at most 30d.",
                            "schema": {
                                "type": "string",
                                "pattern": DURATION_PATTERN,
                                "default": DEFAULT_HISTORY_DURATION,
                            },
                        },
                        {
                            "name": "fields",
                            "in": "query",
                            "description": "Comma-separated field names (or the parameter repeated); default speed.",
                            "schema": {
                                "type": "array",
                                "items": {"enum": list(HISTORY_FIELDS)},
                                "minItems": 1,
                                "default": ["speed"],
                            },
                            "style": "form",
                            "explode": False,
                        },
                        {
                            "name": "every",
                            "in": "query",
                            "description": (
                                "Average the points per window of this length (one window when it is longer than "
                                "duration). Without it, durations over "
                                f"{RAW_HISTORY_MAX_S / 3600:g} h are averaged into about 1,000 windows."
                            ),
                            "schema": {"type": "string", "pattern": DURATION_PATTERN},
                        },
                    ],
                    "responses": {
                        "200": _json("History", "The series."),
                        "404": _error_response("The store has no data for this device."),
                    }
                    | common_errors,
                }
            },
            "/api/openapi.json": {
                "get": {"summary": "This document.", "responses": {"200": {"description": "OpenAPI 3.1 JSON."}}}
            },
        },
        "components": {"schemas": _schemas()},
    }


def _pick(responses: dict[str, Any], *codes: str) -> dict[str, Any]:
    return {code: responses[code] for code in codes}


def _schemas() -> dict[str, Any]:
    number_or_null = {"type": ["number", "null"]}
    record_properties: dict[str, Any] = {
        "device_id": {"type": "string"},
        "time": {"type": "number", "description": "Device event time, Unix seconds."},
        "collector": {"type": "string"},
        "detection_label": {"type": ["string", "null"]},
    }
    record_properties.update({name: number_or_null for name in STORED_FIELDS})
    record_properties["seq"] = {"type": ["integer", "null"]}
    record_properties["replayed"] = {"type": "boolean"}
    state = {
        "online": {"type": "boolean"},
        "status": {"enum": ["online", "offline"]},
        "last_seen": number_or_null,
        "seconds_since": number_or_null,
        "reason": {
            "enum": ["data", "stale", "status_offline", "no_data"],
            "description": "Why: recent data, data too old, an `offline` status message, or no data.",
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What is wrong and how to fix it."}},
        },
        "Record": {"type": "object", "properties": record_properties},
        "DeviceStatus": {"type": "object", "properties": {"device_id": {"type": "string"}, **state}},
        "DeviceStatusList": {
            "type": "object",
            "properties": {
                "time": {"type": "number"},
                "offline_after_s": {"type": "number"},
                "total": {"type": "integer"},
                "online": {"type": "integer"},
                "offline": {"type": "integer"},
                "devices": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceStatus"}},
            },
        },
        "Latest": {
            "type": "object",
            "properties": {"device_id": {"type": "string"}, **state, "record": {"$ref": "#/components/schemas/Record"}},
        },
        "History": {
            "type": "object",
            "properties": {
                "device_id": {"type": "string"},
                "duration_s": {"type": "number"},
                "since": {"type": "number"},
                "until": {"type": "number"},
                "every_s": number_or_null,
                "fields": {"type": "array", "items": {"enum": list(HISTORY_FIELDS)}},
                "count": {"type": "integer"},
                "points": {
                    "type": "array",
                    "items": {"type": "object", "description": "`time` plus the requested fields."},
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"enum": ["ok", "degraded"]},
                "time": {"type": "number"},
                "store": {
                    "type": "object",
                    "description": "store.health(): ok, backend, detail, url in use, primary_url, fallback_url, using_fallback.",
                },
                "broker": {"type": "object", "description": "The presence subscriber's MQTT connection."},
                "live": {"type": "object", "description": "The live feed's counters (clients, ticks, refresh time)."},
            },
        },
    }
