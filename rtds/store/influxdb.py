"""InfluxDB 2.x, the production store, through influxdb-client.

Writes are synchronous: one HTTP request per batch, no client-side batching and no urllib3
retries, so the collector learns at once whether InfluxDB answered 204 and does the retrying and
acking itself. Nothing is ever buffered here, so closing cannot lose points.

Reads run the constant Flux texts of `influxdb_flux` with every value passed through `params`;
device ids and field names are also checked against the schema before any request is made.

With INFLUXDB_URL_FALLBACK set, `/health` of the primary is checked at most every
INFLUXDB_HEALTH_INTERVAL_S (and at once after a connection error): while it fails, reads and
writes go to the fallback, and they return to the primary when it passes again.
"""

from __future__ import annotations

import email.utils
import logging
import math
import threading
import time as clock
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.flux_csv_parser import FluxCsvParserException, FluxQueryException
from influxdb_client.client.query_api import QueryApi
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.rest import ApiException
from influxdb_client.service.health_service import HealthService

from rtds.errors import ConfigError, StoreError, StoreMisconfigured, StoreRejected, StoreUnavailable
from rtds.schema import FIELD_TYPES, TelemetryRecord
from rtds.settings import Settings
from rtds.store import LatencySample, StoreHealth
from rtds.store import influxdb_flux as flux
from rtds.store.line_protocol import UnwritableRecord, encode_batch

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

_HEALTH_TIMEOUT_MS = 2_000
_REQUEST_FAILURES = (InfluxDBError, FluxQueryException, FluxCsvParserException, urllib3.exceptions.HTTPError, OSError)


@dataclass(eq=False)
class _Endpoint:
    """One InfluxDB URL with its client and what its last health check said."""

    url: str
    client: InfluxDBClient
    write_api: WriteApi
    query_api: QueryApi
    healthy: bool | None = None
    detail: str = "not checked yet"
    checked_at: float | None = None


class InfluxStore:
    """The store interface over InfluxDB 2.x, with an optional fallback URL."""

    def __init__(
        self,
        url: str,
        *,
        token: str,
        org: str,
        bucket: str,
        fallback_url: str = "",
        health_interval_s: float = 5.0,
        timeout_ms: int = 10_000,
        max_clock_skew_s: float = 86_400.0,
    ) -> None:
        for key, value in (("INFLUXDB_URL", url), ("INFLUXDB_URL_FALLBACK", fallback_url)):
            if value and not value.startswith(("http://", "https://")):
                raise ConfigError(f"{key}={value!r} is not a URL; use http://host:8086 or https://host")
        if not url:
            raise ConfigError("INFLUXDB_URL is empty; set it to your InfluxDB, e.g. http://localhost:8086")
        if not token:
            raise ConfigError(
                "INFLUXDB_TOKEN is empty; set it in .env (docker compose: DOCKER_INFLUXDB_INIT_ADMIN_TOKEN)"
            )
        self.org = org
        self.bucket = bucket
        self._token = token
        self._timeout_ms = timeout_ms
        self._health_interval_s = health_interval_s
        # History ends this far ahead of now: the collector refuses device times further off than this,
        # and a near stop keeps aggregateWindow's windows few.
        self._history_horizon_s = max_clock_skew_s + 60.0
        self._primary = self._connect(url)
        self._fallback = self._connect(fallback_url) if fallback_url and fallback_url != url else None
        self._active = self._primary
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> InfluxStore:
        return cls(
            settings.influxdb_url,
            token=settings.influxdb_token,
            org=settings.influxdb_org,
            bucket=settings.influxdb_bucket,
            fallback_url=settings.influxdb_url_fallback,
            health_interval_s=settings.influxdb_health_interval_s,
            timeout_ms=settings.influxdb_timeout_ms,
            max_clock_skew_s=settings.collector_max_clock_skew_s,
        )

    def _connect(self, url: str) -> _Endpoint:
        # retries=False is the client's default; said here because the collector relies on it.
        client = InfluxDBClient(url=url, token=self._token, org=self.org, timeout=self._timeout_ms, retries=False)
        return _Endpoint(url, client, client.write_api(write_options=SYNCHRONOUS), client.query_api())

    # --- writing -------------------------------------------------------------------------

    def write(self, records: Sequence[TelemetryRecord], *, collector: str, write_time: float) -> None:
        if not records:
            return
        try:
            body = encode_batch(records, collector=collector, write_time=write_time)
        except UnwritableRecord as exc:
            raise StoreRejected(f"cannot write this batch to InfluxDB: {exc}") from None
        self._call(
            "write",
            lambda endpoint: endpoint.write_api.write(
                bucket=self.bucket, org=self.org, record=body, write_precision=WritePrecision.US
            ),
        )

    def ready(self) -> bool:
        """Whether /health of the primary (or, with a fallback, of either) passes now: one small GET."""
        return bool(self._select(force=True).healthy)

    # --- reading -------------------------------------------------------------------------

    def latest(self, device_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        wanted = None if device_ids is None else {flux.checked_device_id(device_id) for device_id in device_ids}
        if wanted is not None and not wanted:
            return []
        found = self._query(flux.LATEST, {"_start": flux.EPOCH, "_stop": flux.END_OF_TIME})
        # Points without a device_id tag (written by some other tool) are nobody's latest.
        rows = [flux.point_row(values) for values in found if values.get("device_id")]
        return sorted(
            (row for row in rows if wanted is None or row["device_id"] in wanted), key=lambda row: row["device_id"]
        )

    def history(
        self, device_id: str, since: float, fields: Sequence[str] = ("speed",), every_s: float | None = None
    ) -> list[dict[str, Any]]:
        device_id = flux.checked_device_id(device_id)
        names = flux.checked_fields(fields)
        params: dict[str, Any] = {
            "_device": device_id,
            "_start": flux.time_param(since, "since"),
            "_stop": flux.time_param(clock.time() + self._history_horizon_s, "stop"),
        }
        text = flux.HISTORY
        if every_s is not None:
            params["_every"] = flux.checked_window(every_s)
            text = flux.HISTORY_AGGREGATED
            averaged = [name for name in names if FIELD_TYPES[name] is bool]
            if averaged:
                raise ValueError(f"field(s) {averaged} are true/false and cannot be averaged; leave out every_s")
        by_time: dict[float, dict[str, Any]] = {}
        for name in names:
            for values in self._query(text, {**params, "_field": name}):
                moment = flux.seconds(values["_time"])
                row = by_time.setdefault(moment, {"time": moment, **dict.fromkeys(names)})
                row[name] = values["_value"] if every_s is not None else flux.typed(name, values["_value"])
        return [by_time[moment] for moment in sorted(by_time)]

    def last_seen(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for values in self._query(flux.LAST_SEEN, {"_start": flux.EPOCH, "_stop": flux.END_OF_TIME}):
            if not values.get("device_id"):
                continue
            moment = flux.seconds(values["_time"])
            seen[values["device_id"]] = max(moment, seen.get(values["device_id"], moment))
        return seen

    def latency_samples(
        self, since: float, until: float | None = None, *, limit: int = 100_000, device_id: str | None = None
    ) -> list[LatencySample]:
        if limit <= 0:
            return []
        params: dict[str, Any] = {
            "_start": flux.time_param(since, "since"),
            "_stop": flux.END_OF_TIME if until is None else flux.time_param(until, "until"),
            "_limit": int(limit),
        }
        text = flux.LATENCY_SAMPLES
        if device_id is not None:
            params["_device"] = flux.checked_device_id(device_id)
            text = flux.LATENCY_SAMPLES_OF_DEVICE
        samples = []
        for values in self._query(text, params):
            if not values.get("device_id"):
                continue
            moment = flux.seconds(values["_time"])
            publish = values.get("publish_timestamp")
            samples.append(
                LatencySample(
                    values["device_id"],
                    moment,
                    flux.typed("seq", values.get("seq")),
                    float(publish) if publish is not None else moment,
                    flux.typed("collector_receive_time", values.get("collector_receive_time")),
                    flux.typed("write_time", values.get("write_time")),
                    bool(values.get("replayed")),
                )
            )
        return samples

    def _query(self, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        arguments = {"_bucket": self.bucket, **params}
        tables = self._call("query", lambda endpoint: endpoint.query_api.query(text, org=self.org, params=arguments))
        return [record.values for table in tables for record in table.records]

    # --- primary and fallback ------------------------------------------------------------

    def health(self) -> StoreHealth:
        active = self._active
        stale = active.checked_at is None or clock.monotonic() - active.checked_at >= self._health_interval_s
        active = self._select(force=stale)
        extra: dict[str, Any] = {"org": self.org, "bucket": self.bucket, "primary_detail": self._primary.detail}
        if self._fallback is not None:
            extra["fallback_detail"] = self._fallback.detail
        where = "the fallback" if active is self._fallback else "the primary"
        return StoreHealth(
            bool(active.healthy),
            "influxdb",
            f"using {where} {active.url}: {active.detail}",
            url=active.url,
            primary_url=self._primary.url,
            fallback_url=self._fallback.url if self._fallback else None,
            using_fallback=active is self._fallback,
            extra=extra,
        )

    def _select(self, *, force: bool = False) -> _Endpoint:
        """The endpoint to use now, re-checking health when it is due (or forced)."""
        with self._lock:
            now = clock.monotonic()
            if not force and (self._fallback is None or now < self._next_check):
                return self._active
            self._next_check = now + self._health_interval_s
            candidates = [self._primary] if self._fallback is None else [self._primary, self._fallback]
            chosen = next((endpoint for endpoint in candidates if self._check(endpoint)), self._primary)
            if chosen is not self._active:
                if chosen is self._fallback:
                    _LOG.warning(
                        "InfluxDB at %s failed its health check (%s); reads and writes now go to the fallback %s",
                        self._primary.url,
                        self._primary.detail,
                        chosen.url,
                    )
                else:
                    _LOG.warning("InfluxDB at %s is healthy again; reads and writes are back on it", chosen.url)
                self._active = chosen
            return chosen

    def _check(self, endpoint: _Endpoint) -> bool:
        try:
            answer = HealthService(endpoint.client.api_client).get_health(
                _request_timeout=min(_HEALTH_TIMEOUT_MS, self._timeout_ms)
            )
            endpoint.healthy = answer.status == "pass"
            endpoint.detail = f"health {answer.status}" + (f": {answer.message}" if answer.message else "")
        except ApiException as exc:
            endpoint.healthy = False
            endpoint.detail = f"health answered {exc.status}: {_server_message(exc)}"
        except Exception as exc:  # a health check reports; it never raises
            endpoint.healthy = False
            endpoint.detail = f"health check failed: {_short(exc)}"
        endpoint.checked_at = clock.monotonic()
        return endpoint.healthy

    def _call(self, action: str, operation: Callable[[_Endpoint], T]) -> T:
        """Run one request on the active endpoint; after a connection failure, look again and retry once."""
        endpoint = self._select()
        try:
            return operation(endpoint)
        except _REQUEST_FAILURES as exc:
            error = self._store_error(exc, endpoint, action)
            if not _is_connection_failure(exc):
                if isinstance(error, StoreUnavailable):
                    self._next_check = 0.0
                raise error from exc
            first_failure: Exception = exc
        retry_on = self._select(force=True)
        slow_endpoint_again = retry_on is endpoint and isinstance(first_failure, urllib3.exceptions.ReadTimeoutError)
        if not retry_on.healthy or slow_endpoint_again:
            raise error from first_failure
        try:
            return operation(retry_on)
        except _REQUEST_FAILURES as exc:
            raise self._store_error(exc, retry_on, action) from exc

    def _store_error(self, exc: Exception, endpoint: _Endpoint, action: str) -> StoreError:
        status = getattr(exc, "status", None) if isinstance(exc, ApiException) else None
        where = f"InfluxDB at {endpoint.url}"
        if not status:
            if isinstance(exc, (FluxQueryException, FluxCsvParserException)):
                return StoreRejected(f"{where} could not run the {action}: {exc}")
            return StoreUnavailable(f"cannot reach {where} for the {action}: {_short(exc)}")
        message = _server_message(exc)
        if status == 429 or status >= 500:
            return StoreUnavailable(
                f"{where} answered {status} to the {action}: {message}", retry_after=_retry_after_s(exc)
            )
        if status == 401:
            return StoreMisconfigured(
                f"{where} refused the token (401: {message}). Set INFLUXDB_TOKEN to a token of org "
                f"{self.org!r} with read and write access to bucket {self.bucket!r} "
                "(docker compose: DOCKER_INFLUXDB_INIT_ADMIN_TOKEN) and restart, or give this token that access"
            )
        if status == 403:
            return StoreMisconfigured(
                f"{where} says the token may not do this (403: {message}). Give INFLUXDB_TOKEN read and write "
                f"access to bucket {self.bucket!r} in org {self.org!r}, or set a token that has it"
            )
        if status == 404:
            return StoreMisconfigured(
                f"{where} has no such org or bucket (404: {message}). Check INFLUXDB_ORG={self.org!r} and "
                f"INFLUXDB_BUCKET={self.bucket!r}: create the bucket (influx bucket create --name {self.bucket} "
                f"--org {self.org}) or fix the names in .env"
            )
        return StoreRejected(f"{where} rejected the {action} ({status}): {message}")

    def close(self) -> None:
        """Close the clients. Writes are synchronous, so nothing is left to flush."""
        with self._lock:
            endpoints = [endpoint for endpoint in (self._primary, self._fallback) if endpoint is not None]
            if self._closed:
                return
            self._closed = True
        for endpoint in endpoints:
            endpoint.write_api.close()
            endpoint.client.close()


def _is_connection_failure(exc: Exception) -> bool:
    if isinstance(exc, ApiException):
        return not exc.status
    return isinstance(exc, urllib3.exceptions.HTTPError | OSError)


def _server_message(exc: ApiException) -> str:
    message = getattr(exc, "message", None) or exc.reason or "no message"
    return str(message).strip()


def _retry_after_s(exc: ApiException) -> float | None:
    """Retry-After in seconds, given as a number of seconds or as an HTTP date."""
    text = getattr(exc, "retry_after", None)
    if not text:
        return None
    text = str(text).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - clock.time()
        except (TypeError, ValueError):
            return None
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
