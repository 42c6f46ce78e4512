"""The InfluxDB adapter (rtds/store/influxdb.py) against the fake InfluxDB, and optionally a real one.

The fake (testing/influxdb_fake) checks every request against InfluxDB's OpenAPI description, parses
line protocol strictly and evaluates the Flux subset the adapter uses. The read/write tests compare
every answer with SQLiteStore's for the same records, so both stores keep one meaning.

Set RTDS_REAL_INFLUXDB_URL and RTDS_REAL_INFLUXDB_TOKEN (RTDS_REAL_INFLUXDB_ORG and
RTDS_REAL_INFLUXDB_BUCKET default to my-org and vehicle-data) to run the tests marked "either" against
a real InfluxDB 2.7 too; docs/influxdb.md has the commands.
"""

from __future__ import annotations

import email.utils
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from influxdb_fake import FakeInfluxDB, flux_lint

from rtds.errors import StoreMisconfigured, StoreRejected, StoreUnavailable
from rtds.schema import FIELD_TYPES, MEASUREMENT, STORED_FIELDS, TelemetryRecord
from rtds.settings import load_settings
from rtds.store import StoreReader, StoreWriter, open_store
from rtds.store import influxdb_flux as flux
from rtds.store.influxdb import InfluxStore, _retry_after_s
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import wait_until

TOKEN = "test-token"
ORG = "my-org"
BUCKET = "vehicle-data"
REAL_URL_VARIABLE = "RTDS_REAL_INFLUXDB_URL"
LABELS = ("car", "pickup truck", "a,b=c d", None)  # a space, a comma and an equals sign need escaping
QUERY_TEXTS = set(flux.PARAMETERS)


@dataclass
class Server:
    url: str
    token: str
    org: str
    bucket: str
    fake: FakeInfluxDB | None

    def store(self, **kwargs: Any) -> InfluxStore:
        return InfluxStore(self.url, token=self.token, org=self.org, bucket=self.bucket, **kwargs)


@pytest.fixture
def fake() -> Iterator[FakeInfluxDB]:
    with FakeInfluxDB(token=TOKEN, org=ORG, buckets=(BUCKET,)) as server:
        yield server


@pytest.fixture(params=["fake", "real"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The fake always; a real InfluxDB 2.x when RTDS_REAL_INFLUXDB_URL is set."""
    if request.param == "real":
        url = os.environ.get(REAL_URL_VARIABLE)
        if not url:
            pytest.skip(f"no real InfluxDB: set {REAL_URL_VARIABLE} and RTDS_REAL_INFLUXDB_TOKEN (docs/influxdb.md)")
        yield Server(
            url,
            os.environ.get("RTDS_REAL_INFLUXDB_TOKEN", ""),
            os.environ.get("RTDS_REAL_INFLUXDB_ORG", ORG),
            os.environ.get("RTDS_REAL_INFLUXDB_BUCKET", BUCKET),
            None,
        )
        return
    with FakeInfluxDB(token=TOKEN, org=ORG, buckets=(BUCKET,)) as fake_server:
        yield Server(fake_server.url, TOKEN, ORG, BUCKET, fake_server)


@pytest.fixture
def store(fake: FakeInfluxDB) -> Iterator[InfluxStore]:
    adapter = InfluxStore(fake.url, token=TOKEN, org=ORG, bucket=BUCKET)
    yield adapter
    adapter.close()


def fleet(prefix: str, now: float) -> list[TelemetryRecord]:
    """Three devices, eight points each, cycling through labels so each device's newest point has a
    label (or none) that differs from its older points; some floats are integral, one point replayed."""
    records = []
    for device in range(3):
        for step in range(8):
            moment = now - 60 + step * 5 + device * 0.123457
            label = LABELS[(step + device) % len(LABELS)]
            records.append(
                TelemetryRecord(
                    device_id=f"{prefix}_{device}",
                    timestamp=moment,
                    speed=float(30 + step) if step % 2 else 30.25 + step,
                    seq=step,
                    cpu_usage=12.5 + device,
                    ram_usage=40.0,
                    memory_total=8192.0,
                    memory_used=4915.5,
                    network_bytes_sent=1_000_000.0 + step,
                    detection_label=label,
                    detection_confidence=0.9 if label else None,
                    replayed=step == 3,
                    collector_receive_time=moment + 0.05,
                )
            )
    return records


def sqlite_rows(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """SQLite's table, keyed by (device_id, time in microseconds)."""
    connection = sqlite3.connect(path)
    connection.row_factory = sqlite3.Row
    try:
        rows = [dict(row) for row in connection.execute(f"SELECT * FROM {MEASUREMENT}")]
    finally:
        connection.close()
    return {(row["device_id"], round(row["time"] * 1_000_000)): row for row in rows}


def assert_point_matches_row(point: Any, row: dict[str, Any]) -> None:
    """A point the fake accepted carries exactly the tags and typed fields of SQLite's row."""
    assert point.measurement == MEASUREMENT
    expected_tags = {"device_id": row["device_id"], "collector": row["collector"]}
    if row["detection_label"] is not None:
        expected_tags["detection_label"] = row["detection_label"]
    assert point.tags == expected_tags
    expected_fields = {name: row[name] for name in STORED_FIELDS if row[name] is not None}
    expected_fields["replayed"] = bool(row["replayed"])
    assert point.fields == expected_fields
    for name, value in point.fields.items():
        assert type(value) is FIELD_TYPES[name], f"{name}={value!r} is not a {FIELD_TYPES[name].__name__}"
    assert point.time_ns == round(row["time"] * 1_000_000) * 1_000


def write_requests(fake: FakeInfluxDB) -> list[Any]:
    return [request for request in fake.requests if request.path == "/api/v2/write"]


# --- writes ------------------------------------------------------------------------------------


def test_a_batch_is_one_valid_request_whose_points_match_the_sqlite_table(
    fake: FakeInfluxDB, store: InfluxStore, tmp_path: Path
) -> None:
    records = fleet("w", time.time())
    write_time = time.time()
    store.write(records, collector="python", write_time=write_time)

    requests = wait_until(lambda: write_requests(fake), 5, message="the write request was recorded")
    assert len(requests) == 1
    request = requests[0]
    assert (request.method, request.status) == ("POST", 204)
    assert request.query == {"org": ORG, "bucket": BUCKET, "precision": "us"}
    assert request.header("Authorization") == f"Token {TOKEN}"
    assert request.header("Content-Type") in ("text/plain", "text/plain; charset=utf-8")  # both in the spec
    assert len(request.body.splitlines()) == len(records)
    assert rb"detection_label=a\,b\=c\ d," in request.body

    sqlite = SQLiteStore(tmp_path / "same.db")
    sqlite.write(records, collector="python", write_time=write_time)
    sqlite.close()
    rows = sqlite_rows(tmp_path / "same.db")
    points = fake.points
    assert len(points) == len(rows) == len(records)
    for point in points:
        assert_point_matches_row(point, rows[(point.tags["device_id"], point.time_ns // 1_000)])


def test_a_redelivered_batch_replaces_its_points(fake: FakeInfluxDB, store: InfluxStore) -> None:
    records = fleet("again", time.time())
    store.write(records, collector="python", write_time=1.0)
    store.write(records, collector="python", write_time=2.0)
    assert len(fake.points) == len(records)
    assert {point.fields["write_time"] for point in fake.points} == {2.0}


def test_a_label_line_protocol_cannot_carry_is_refused_before_sending(fake: FakeInfluxDB, store: InfluxStore) -> None:
    record = TelemetryRecord(device_id="v1", timestamp=time.time(), speed=1.0, detection_label="ends with \\")
    with pytest.raises(StoreRejected, match="backslash"):
        store.write([record], collector="python", write_time=time.time())
    assert not fake.requests


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, StoreRejected),
        (413, StoreRejected),
        (422, StoreRejected),
        (401, StoreMisconfigured),
        (403, StoreMisconfigured),
        (404, StoreMisconfigured),
        (429, StoreUnavailable),
        (500, StoreUnavailable),
        (503, StoreUnavailable),
    ],
)
def test_each_answer_becomes_the_store_error_the_collector_acts_on(
    fake: FakeInfluxDB, store: InfluxStore, status: int, error_class: type[Exception]
) -> None:
    fake.fail_next(status, retry_after=7, message=f"the server's own words for {status}")
    record = TelemetryRecord(device_id="v1", timestamp=time.time(), speed=1.0)
    with pytest.raises(error_class) as caught:
        store.write([record], collector="python", write_time=time.time())
    assert f"the server's own words for {status}" in str(caught.value)
    if error_class is StoreUnavailable:
        assert caught.value.retry_after == 7
    wait_until(lambda: write_requests(fake), 5)
    assert [request.status for request in write_requests(fake)] == [status], "one request, no client retries"
    assert not fake.points


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"token": "wrong-token"}, "INFLUXDB_TOKEN"),
        ({"bucket": "no-such-bucket"}, "INFLUXDB_BUCKET"),
        ({"org": "no-such-org"}, "INFLUXDB_ORG"),
    ],
)
def test_configuration_errors_name_the_setting_to_fix(server: Server, change: dict[str, str], names: str) -> None:
    arguments = {"token": server.token, "org": server.org, "bucket": server.bucket, **change}
    adapter = InfluxStore(server.url, **arguments)
    try:
        with pytest.raises(StoreMisconfigured, match=names):
            adapter.write([TelemetryRecord("v1", time.time(), 1.0)], collector="python", write_time=time.time())
        with pytest.raises(StoreMisconfigured, match=names):
            adapter.last_seen()
    finally:
        adapter.close()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0.5", 0.5), (None, None), ("soon", None), ("-3", 0.0), ("http-date", 30.0)],
)
def test_retry_after_is_read_as_seconds_or_as_a_date(header: str | None, seconds: float | None) -> None:
    if header == "http-date":
        header = email.utils.formatdate(time.time() + 30, usegmt=True)
    answer = SimpleNamespace(retry_after=header)
    assert _retry_after_s(answer) == (None if seconds is None else pytest.approx(seconds, abs=1.5))  # type: ignore[arg-type]


def test_an_unreachable_server_is_unavailable_at_once(fake: FakeInfluxDB, store: InfluxStore) -> None:
    fake.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot reach InfluxDB"):
        store.write([TelemetryRecord("v1", time.time(), 1.0)], collector="python", write_time=time.time())
    assert time.monotonic() - started < 3


def test_open_store_builds_the_adapter_from_settings(fake: FakeInfluxDB) -> None:
    settings = load_settings(env_file=None, environ={"STORE": "influxdb", "INFLUXDB_TOKEN": TOKEN}).with_overrides(
        influxdb_url=fake.url
    )
    adapter = open_store(settings)
    try:
        assert isinstance(adapter, InfluxStore)
        assert isinstance(adapter, StoreWriter) and isinstance(adapter, StoreReader)
        adapter.write([TelemetryRecord("v1", time.time(), 1.0)], collector="python", write_time=time.time())
        adapter.close()
        assert len(fake.points) == 1, "written synchronously: nothing was left in a buffer at close()"
    finally:
        adapter.close()


# --- reads, compared with SQLite (fake, and a real InfluxDB when configured) ---------------------


@pytest.fixture
def both(server: Server, tmp_path: Path) -> Iterator[tuple[InfluxStore, SQLiteStore, list[TelemetryRecord]]]:
    """The same fleet written through the adapter and into SQLite."""
    records = fleet(f"r{uuid.uuid4().hex[:8]}", time.time())
    influx = server.store()
    sqlite = SQLiteStore(tmp_path / "reference.db")
    write_time = time.time()
    influx.write(records, collector="python", write_time=write_time)
    sqlite.write(records, collector="python", write_time=write_time)
    yield influx, sqlite, records
    influx.close()
    sqlite.close()


def assert_same_rows(influx_rows: list[dict[str, Any]], sqlite_rows_: list[dict[str, Any]]) -> None:
    assert len(influx_rows) == len(sqlite_rows_)
    for got, expected in zip(influx_rows, sqlite_rows_, strict=True):
        assert got.keys() == expected.keys()
        assert got["time"] == pytest.approx(expected["time"], abs=1e-6)
        assert {k: v for k, v in got.items() if k != "time"} == {k: v for k, v in expected.items() if k != "time"}


def test_latest_is_the_newest_point_whatever_its_label(
    both: tuple[InfluxStore, SQLiteStore, list[TelemetryRecord]],
) -> None:
    influx, sqlite, records = both
    devices = sorted({record.device_id for record in records})
    mine = [row for row in influx.latest() if row["device_id"] in devices]
    expected = sqlite.latest()
    assert [row["seq"] for row in expected] == [7, 7, 7]
    assert {row["detection_label"] for row in expected} == {None, "car", "pickup truck"}
    assert_same_rows(mine, expected)
    assert_same_rows(influx.latest([devices[1]]), sqlite.latest([devices[1]]))
    assert influx.latest([]) == []


def test_history_raw_and_averaged(both: tuple[InfluxStore, SQLiteStore, list[TelemetryRecord]]) -> None:
    influx, sqlite, records = both
    device = records[0].device_id
    since = records[2].timestamp  # range() includes its start
    fields = ("speed", "seq", "detection_confidence", "replayed")
    assert_same_rows(influx.history(device, since, fields), sqlite.history(device, since, fields))
    assert len(influx.history(device, since)) == 6

    every_s = 10.0
    averaged = influx.history(device, since, ("speed", "seq"), every_s=every_s)
    expected = sqlite.history(device, since, ("speed", "seq"), every_s=every_s)
    assert len(averaged) == len(expected) >= 3
    for got, want in zip(averaged, expected, strict=True):
        assert got["speed"] == pytest.approx(want["speed"])
        assert got["seq"] == pytest.approx(want["seq"])
        # Flux stamps a window with its end; SQLite with its newest point.
        assert got["time"] == pytest.approx((want["time"] // every_s + 1) * every_s, abs=1e-6)


def test_last_seen_per_device(both: tuple[InfluxStore, SQLiteStore, list[TelemetryRecord]]) -> None:
    influx, sqlite, _records = both
    expected = sqlite.last_seen()
    mine = {device: moment for device, moment in influx.last_seen().items() if device in expected}
    assert mine.keys() == expected.keys() and len(mine) == 3
    for device, moment in expected.items():
        assert mine[device] == pytest.approx(moment, abs=1e-6)


def test_latency_samples(both: tuple[InfluxStore, SQLiteStore, list[TelemetryRecord]]) -> None:
    influx, sqlite, records = both
    devices = {record.device_id for record in records}
    since, until = records[0].timestamp - 1, records[-1].timestamp - 10

    def same(got: list[Any], expected: list[Any]) -> None:
        assert len(got) == len(expected) > 0
        for mine, theirs in zip(got, expected, strict=True):
            assert mine.time == pytest.approx(theirs.time, abs=1e-6)
            assert mine._replace(time=0.0) == theirs._replace(time=0.0)

    everything = [sample for sample in influx.latency_samples(since, until) if sample.device_id in devices]
    same(everything, sqlite.latency_samples(since, until))
    device = records[8].device_id
    same(
        influx.latency_samples(since, limit=5, device_id=device),
        sqlite.latency_samples(since, limit=5, device_id=device),
    )
    assert influx.latency_samples(since, limit=0) == []


# --- no Flux is built from input -------------------------------------------------------------------

CRAFTED_IDS = [
    'v1" or r._value > 0 or "',
    'v1")\n  |> to(bucket: "other")',
    'v1\n|> drop(columns: ["_value"])',
    "v1 |> yield()",
    "to(",
    "v1'",
    "",
    "x" * 65,
]


@pytest.mark.parametrize("crafted", CRAFTED_IDS)
def test_crafted_device_ids_are_refused_before_any_request(
    fake: FakeInfluxDB, store: InfluxStore, crafted: str
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.latest([crafted]),
        lambda: store.history(crafted, 0.0),
        lambda: store.history(crafted, 0.0, every_s=60),
        lambda: store.latency_samples(0.0, device_id=crafted),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="device id"):
            call()
    assert fake.queries == [] and fake.requests == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"fields": ('speed") |> to(bucket: "other")',)},
        {"fields": ("speed\n|> drop()",)},
        {"fields": ()},
        {"every_s": '5m) |> to(bucket: "x")'},
        {"every_s": "1h\n|> drop()"},
        {"every_s": 0},
        {"every_s": -60},
        {"every_s": float("nan")},
        {"every_s": 31 * 86_400},
        {"every_s": 60, "fields": ("replayed",)},
        {"since": '-5m) |> to(bucket: "x")'},
        {"since": float("inf")},
    ],
)
def test_crafted_fields_windows_and_times_are_refused_before_any_request(
    fake: FakeInfluxDB, store: InfluxStore, arguments: dict[str, Any]
) -> None:
    call = {"device_id": "vehicle_01", "since": 0.0, **arguments}
    with pytest.raises(ValueError):
        store.history(**call)
    assert fake.queries == [] and fake.requests == []


def test_queries_are_constant_texts_with_values_only_in_params(fake: FakeInfluxDB, store: InfluxStore) -> None:
    device = "probe_device_7"
    store.write([TelemetryRecord(device, time.time() - 5, 3.0, cpu_usage=1.5)], collector="python", write_time=0.0)
    store.latest([device])
    store.history(device, time.time() - 60, ("cpu_usage", "network_bytes_recv"))
    store.history(device, time.time() - 60, ("cpu_usage",), every_s=15)
    store.last_seen()
    store.latency_samples(time.time() - 60, time.time(), limit=17, device_id=device)
    store.latency_samples(time.time() - 60)

    queries = fake.queries
    assert len(queries) == 7
    for text, params in queries:
        assert text in QUERY_TEXTS, "every query is one of the constant texts"
        assert set(params) == flux.PARAMETERS[text]
        for value in (device, BUCKET, "cpu_usage", "network_bytes_recv", "17", "15"):
            assert value not in text
        assert params["_bucket"] == BUCKET
        if "_device" in params:
            assert params["_device"] == device
    assert {params.get("_field") for _, params in queries} >= {"cpu_usage", "network_bytes_recv"}
    assert any(params.get("_limit") == 17 for _, params in queries)


def test_flux_texts_name_the_schema_measurement() -> None:
    for text in QUERY_TEXTS:
        assert f'r._measurement == "{MEASUREMENT}"' in text


# The parameters as InfluxDB receives them (extern), so the language server can type-check each query.
FLUX_PARAMETER_EXAMPLES = {
    "_bucket": "vehicle-data",
    "_start": datetime(2024, 1, 1, tzinfo=UTC),
    "_stop": datetime(2200, 1, 1, tzinfo=UTC),
    "_device": "vehicle_01",
    "_field": "speed",
    "_every": timedelta(seconds=10),
    "_limit": 17,
}


@pytest.mark.skipif(not flux_lint.available(), reason=f"needs Node and {flux_lint.PACKAGE} (.ci/run installs them)")
def test_flux_texts_pass_influxdatas_flux_language_server() -> None:
    """Syntax, functions, arguments and types, checked by InfluxData's own Flux language server."""
    texts = list(flux.PARAMETERS)
    control = 'from(bucket: "b") |> range(start: -1h) |> last(colum: "_value")'
    *diagnostics, control_diagnostics = flux_lint.lint_many([*texts, control], FLUX_PARAMETER_EXAMPLES)
    assert control_diagnostics, "the language server reports a wrong argument"
    assert diagnostics == [[] for _ in texts]


# --- primary and fallback ----------------------------------------------------------------------------


@pytest.fixture
def fallback() -> Iterator[FakeInfluxDB]:
    with FakeInfluxDB(token=TOKEN, org=ORG, buckets=(BUCKET,)) as server:
        yield server


def test_reads_and_writes_follow_the_primary_health(fake: FakeInfluxDB, fallback: FakeInfluxDB) -> None:
    interval_s = 0.3
    adapter = InfluxStore(
        fake.url, token=TOKEN, org=ORG, bucket=BUCKET, fallback_url=fallback.url, health_interval_s=interval_s
    )
    counter = iter(range(1_000))

    def write_one() -> str:
        device = f"v{next(counter)}"
        adapter.write([TelemetryRecord(device, time.time(), 1.0)], collector="python", write_time=time.time())
        return device

    def stored_in(server: FakeInfluxDB) -> set[str]:
        return {point.tags["device_id"] for point in server.points}

    try:
        first = write_one()
        assert stored_in(fake) == {first} and not fallback.points
        assert adapter.health().using_fallback is False

        fake.set_healthy(False)
        wait_until(lambda: adapter.health().using_fallback, 5, message="switched to the fallback")
        health = adapter.health()
        assert (health.url, health.primary_url, health.fallback_url) == (fallback.url, fake.url, fallback.url)
        during = write_one()
        assert during in stored_in(fallback) and during not in stored_in(fake)
        assert [row["device_id"] for row in adapter.latest()] == [during], "reads go to the fallback too"

        fake.set_healthy(True)
        wait_until(lambda: not adapter.health().using_fallback, 5, message="back on the primary")
        after = write_one()
        assert after in stored_in(fake) and after not in stored_in(fallback)
        assert {row["device_id"] for row in adapter.latest()} == {first, after}

        # A primary that stops answering fails over within the same call, without waiting for the interval.
        fake.stop()
        lost = write_one()
        assert lost in stored_in(fallback)
        assert adapter.health().using_fallback is True
        fake.start()
        wait_until(lambda: not adapter.health().using_fallback, 5, message="back on the restarted primary")
        assert write_one() in stored_in(fake)
    finally:
        adapter.close()


def test_without_a_fallback_health_reports_the_primary(fake: FakeInfluxDB) -> None:
    adapter = InfluxStore(fake.url, token=TOKEN, org=ORG, bucket=BUCKET, health_interval_s=0.1)
    try:
        health = adapter.health()
        assert (health.ok, health.backend, health.url, health.using_fallback) == (True, "influxdb", fake.url, False)
        assert health.as_dict()["fallback_url"] is None
        assert TOKEN not in str(health.as_dict())
        fake.set_healthy(False)
        wait_until(lambda: not adapter.health().ok, 5, message="health() noticed the failing /health")
        assert "503" in adapter.health().detail
    finally:
        adapter.close()
