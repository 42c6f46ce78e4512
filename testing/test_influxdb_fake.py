"""Tests of the fake InfluxDB itself: line protocol, Flux subset, annotated CSV and the HTTP contract."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from influxdb_client import InfluxDBClient, WriteOptions
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_fake import FakeInfluxDB, Point, flux, flux_lint
from influxdb_fake.line_protocol import LineProtocolError, UInt, parse_batch
from influxdb_fake.server import load_spec, response_schema, validate

TOKEN = "test-token"
AUTH = {"Authorization": f"Token {TOKEN}"}
T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
SEC = 10**9
WRITE_QS = "/api/v2/write?org=my-org&bucket=vehicle-data"


# ----------------------------------------------------------------------------- helpers and fixtures


@pytest.fixture
def fake() -> Iterator[FakeInfluxDB]:
    with FakeInfluxDB(token=TOKEN, org="my-org", buckets=("vehicle-data", "other")) as server:
        yield server


@pytest.fixture
def client(fake: FakeInfluxDB) -> Iterator[InfluxDBClient]:
    with InfluxDBClient(url=fake.url, token=TOKEN, org="my-org", timeout=10_000) as c:
        yield c


def send(
    fake: FakeInfluxDB, method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(fake.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def write(fake: FakeInfluxDB, body: bytes | str, path: str = WRITE_QS, **headers: str) -> tuple[int, dict, bytes]:
    return send(fake, "POST", path, body, {**AUTH, "Content-Type": "text/plain; charset=utf-8", **headers})


def query_json(fake: FakeInfluxDB, payload: Any, path: str = "/api/v2/query?org=my-org", **headers: str):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return send(fake, "POST", path, body, {**AUTH, "Content-Type": "application/json", **headers})


def assert_spec_body(path: str, method: str, status: int, body: bytes) -> dict[str, Any]:
    """The answer body validates against the response schema the OpenAPI file gives for that status."""
    decoded = json.loads(body)
    schema = response_schema(path, method, status)
    assert schema is not None, f"spec has no JSON schema for {method} {path} {status}"
    assert validate(decoded, schema) == []
    return decoded


def wait_for(condition, timeout: float = 5.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(interval)


def P(measurement: str, tags: dict[str, str], fields: dict[str, Any], t: int) -> Point:
    return Point(measurement, tags, fields, t)


DATA = [
    P("device_data", {"device_id": "vehicle_01"}, {"speed": 10.0, "status": "ok", "odometer": 100}, T0 + 1 * SEC),
    P("device_data", {"device_id": "vehicle_02"}, {"speed": 20.0, "status": "ok", "odometer": 200}, T0 + 2 * SEC),
    P("device_data", {"device_id": "vehicle_01"}, {"speed": 11.5, "status": "idle", "odometer": 101}, T0 + 3 * SEC),
    P("device_data", {"device_id": "vehicle_02"}, {"speed": 21.0, "status": "ok", "odometer": 205}, T0 + 4 * SEC),
    P("device_data", {"device_id": "vehicle_01"}, {"speed": 12.0, "status": "ok", "odometer": 103}, T0 + 9 * SEC),
]


def run(query: str, points: list[Point] = DATA, now: int = T0 + 60 * SEC, **kwargs: Any):
    return flux.run(query, now_ns=now, load_bucket=lambda b: points if b == "vehicle-data" else None, **kwargs)


def values(results, *columns: str) -> list[list[tuple]]:
    """Per table, the rows as tuples of the given columns."""
    ((_, tables),) = results
    return [[tuple(row.get(c) for c in columns) for row in t.rows] for t in tables]


# ----------------------------------------------------------------------------- line protocol


@pytest.mark.parametrize(
    ("line", "measurement", "tags", "fields"),
    [
        (r"my\ Meas\,urement f=1", "my Meas,urement", {}, {"f": 1.0}),
        (r"m=x f=1", "m=x", {}, {"f": 1.0}),
        (r"m,tag\ k\,e\=y=v\ a\,l\=ue f=1", "m", {"tag k,e=y": "v a,l=ue"}, {"f": 1.0}),
        (r"m,z=1,a=2 f=1", "m", {"z": "1", "a": "2"}, {"f": 1.0}),
        (r'm f\ k\,e\=y="x"', "m", {}, {"f k,e=y": "x"}),
        (r'm s="a \"q\" \\ b \d, c=d"', "m", {}, {"s": 'a "q" \\ b \\d, c=d'}),
        (r"m,t=a\b f=1", "m", {"t": "a\\b"}, {"f": 1.0}),
        (
            "m i=-42i,u=7u,f=-1.5e+3,g=.5,h=1.,e=1E-3,z=0",
            "m",
            {},
            {"i": -42, "u": 7, "f": -1500.0, "g": 0.5, "h": 1.0, "e": 0.001, "z": 0.0},
        ),
        (
            "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE",
            "m",
            {},
            dict(zip("abcdefghij", [True] * 5 + [False] * 5, strict=True)),
        ),
        ('m,loc=🍭 s="Launch 🚀"', "m", {"loc": "🍭"}, {"s": "Launch 🚀"}),
        (
            "m max=9223372036854775807i,min=-9223372036854775808i,u=18446744073709551615u",
            "m",
            {},
            {"max": 2**63 - 1, "min": -(2**63), "u": 2**64 - 1},
        ),
    ],
)
def test_line_protocol_accepts_documented_syntax(line: str, measurement: str, tags: dict, fields: dict) -> None:
    (point,) = parse_batch(line, "ns", default_time_ns=5)
    assert (point.measurement, point.tags, point.fields, point.time_ns) == (measurement, tags, fields, 5)
    for key, value in fields.items():
        assert type(point.fields[key]) is type(value) or isinstance(point.fields[key], UInt)


def test_line_protocol_types_and_timestamps() -> None:
    lines = parse_batch(
        "# comment\n\n   \t m,t=a i=1i,u=1u,f=1 1700000000  \n\tm g=2 -5\nm h=3   7\nm k=4 \n",
        "s",
        default_time_ns=1_999_999_999,
    )
    assert [p.line_number for p in lines] == [3, 4, 5, 6]
    assert lines[0].time_ns == 1_700_000_000 * SEC
    assert lines[1].time_ns == -5 * SEC
    assert lines[2].time_ns == 7 * SEC
    assert lines[3].time_ns == 1 * SEC, "a missing timestamp is server time truncated to the precision"
    assert isinstance(lines[0].fields["u"], UInt)
    assert type(lines[0].fields["i"]) is int and type(lines[0].fields["f"]) is float


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("m", "missing fields"),
        ("m,t=a", "missing fields"),
        (",t=a f=1", "missing measurement"),
        ("m,t= f=1", "missing tag value"),
        ("m,t=a,=b f=1", "missing tag key"),
        ("m,t f=1", "missing tag value"),
        ("m,t=a=b f=1", "invalid tag format"),
        ("m,t=a,t=b f=1", "duplicate tags"),
        ("m f=1,f=2", "duplicate field key"),
        ("m f=", "missing field value"),
        ("m f=1,", "missing field key"),
        ("m =1", "missing field key"),
        ("m f", "invalid field format"),
        ("m f=1i2", "invalid number"),
        ("m f=1.5i", "invalid number"),
        ("m f=-1u", "invalid number"),
        ("m f=1.2.3", "invalid number"),
        ("m f=9223372036854775808i", "out of range"),
        ("m f=18446744073709551616u", "out of range"),
        ("m f=1e400", "invalid float"),
        ("m f=NaN", "NaN and Inf"),
        ("m f=Inf", "NaN and Inf"),
        ("m f=-Inf", "invalid number"),
        ("m f=tru", "invalid boolean"),
        ("m f=abc", "strings must be double-quoted"),
        ('m f="abc', "unbalanced quotes"),
        ('m f="a"b', "invalid field format"),
        ("_m f=1", "reserved"),
        ("m,_t=a f=1", "reserved"),
        ("m _f=1", "reserved"),
        ("m f=1 12x", "bad timestamp"),
        ("m f=1 1.5", "bad timestamp"),
        ("m f=1 1 2", "unexpected text after the timestamp"),
        ("m f=1\r", "invalid number"),
        ('m s="line\nbreak"', "contains a newline"),
    ],
)
def test_line_protocol_rejects(line: str, reason: str) -> None:
    with pytest.raises(LineProtocolError) as info:
        parse_batch(line, "ns", 0)
    assert reason in str(info.value)
    assert info.value.first_line == 1


def test_line_protocol_timestamp_must_fit_precision() -> None:
    assert parse_batch("m f=1 9223372036", "s", 0)[0].time_ns == 9_223_372_036 * SEC
    with pytest.raises(LineProtocolError, match="time outside range"):
        parse_batch("m f=1 9223372037", "s", 0)
    with pytest.raises(LineProtocolError, match="out of range"):
        parse_batch("m f=1 9223372036854775808", "ns", 0)


def test_line_protocol_error_names_every_bad_line() -> None:
    with pytest.raises(LineProtocolError) as info:
        parse_batch("m f=1\nm,t= f=1\nm f=2\nm f=x", "ns", 0)
    assert info.value.first_line == 2
    assert [e.line_number for e in info.value.errors] == [2, 4]
    assert "line 2: unable to parse 'm,t= f=1': missing tag value" in str(info.value)


# ----------------------------------------------------------------------------- Flux evaluator


SEED_QUERY = """
from(bucket: "vehicle-data")
  |> range(start: -1h)
  |> filter(fn: (r) => r["_measurement"] == "device_data")
  |> filter(fn: (r) => r["_field"] == "speed")
  |> group(columns: ["device_id"])
  |> last()
"""


def test_flux_seed_query_latest_per_device() -> None:
    results = run(SEED_QUERY)
    ((name, tables),) = results
    assert name == "_result"
    assert [t.key for t in tables] == [["device_id"], ["device_id"]]
    assert values(results, "device_id", "_value", "_time") == [
        [("vehicle_01", 12.0, T0 + 9 * SEC)],
        [("vehicle_02", 21.0, T0 + 4 * SEC)],
    ]


def test_flux_initial_tables_are_one_per_series_sorted_by_key() -> None:
    results = run('from(bucket: "vehicle-data") |> range(start: 0)')
    tables = results[0][1]
    assert [(t.key_values["device_id"], t.key_values["_field"]) for t in tables] == [
        ("vehicle_01", "odometer"),
        ("vehicle_01", "speed"),
        ("vehicle_01", "status"),
        ("vehicle_02", "odometer"),
        ("vehicle_02", "speed"),
        ("vehicle_02", "status"),
    ]
    assert tables[0].columns == [
        ("_start", "time"),
        ("_stop", "time"),
        ("_time", "time"),
        ("_value", "int"),
        ("_field", "string"),
        ("_measurement", "string"),
        ("device_id", "string"),
    ]
    assert tables[0].key == ["_start", "_stop", "_field", "_measurement", "device_id"]
    assert [r["_time"] for r in tables[0].rows] == [T0 + SEC, T0 + 3 * SEC, T0 + 9 * SEC]


def test_flux_range_start_inclusive_stop_exclusive() -> None:
    query = (
        'from(bucket: "vehicle-data") |> range(start: 2024-01-01T00:00:03Z, stop: 2024-01-01T00:00:09Z)'
        ' |> filter(fn: (r) => r._field == "speed")'
    )
    assert values(run(query), "_time") == [[(T0 + 3 * SEC,)], [(T0 + 4 * SEC,)]]
    assert values(run(query.replace("range(start: 2024-01-01T00:00:03Z", "range(start: 1704067203")), "_time") == [
        [(T0 + 3 * SEC,)],
        [(T0 + 4 * SEC,)],
    ]
    edge = run('from(bucket: "vehicle-data") |> range(start: -50s)', now=T0 + 59 * SEC)[0][1]
    assert [row["_time"] for t in edge for row in t.rows] == [T0 + 9 * SEC] * 3
    assert run('from(bucket: "vehicle-data") |> range(start: -50s)', now=T0 + 60 * SEC)[0][1] == []


@pytest.mark.parametrize(
    ("predicate", "expected"),
    [
        ('r.device_id == "vehicle_01" and r._value > 10', [11.5, 12.0]),
        ('r.device_id != "vehicle_01" or r._value < 10.5', [10.0, 20.0, 21.0]),
        ("not (r._value >= 12)", [10.0, 11.5]),
        ('contains(value: r.device_id, set: ["vehicle_02", "x"])', [20.0, 21.0]),
        ("exists r.device_id and not exists r.missing", [10.0, 11.5, 12.0, 20.0, 21.0]),
        ('r.missing == "x"', []),
        ("r._value <= 11.5 and r._time > 2024-01-01T00:00:01Z", [11.5]),
    ],
)
def test_flux_filter_expressions(predicate: str, expected: list[float]) -> None:
    query = f'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._field == "speed") |> filter(fn: (r) => {predicate}) |> group()'
    got = [v for table in values(run(query), "_value") for (v,) in table]
    assert sorted(got) == expected


def test_flux_keep_drop_sort_limit_tail_first() -> None:
    base = 'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._field == "speed")'
    kept = run(base + ' |> keep(columns: ["_time", "_value", "device_id"])')[0][1]
    assert kept[0].columns == [("_time", "time"), ("_value", "float"), ("device_id", "string")]
    assert [t.key for t in kept] == [["device_id"], ["device_id"]]
    merged = run(base + ' |> drop(columns: ["device_id"])')[0][1]
    assert len(merged) == 1 and [r["_value"] for r in merged[0].rows] == [10.0, 11.5, 12.0, 20.0, 21.0]
    ordered = run(base + ' |> group() |> sort(columns: ["_value"], desc: true) |> limit(n: 2)')
    assert values(ordered, "_value") == [[(21.0,), (20.0,)]]
    assert values(run(base + " |> tail(n: 1)"), "_value") == [[(12.0,)], [(21.0,)]]
    assert values(run(base + " |> first()"), "_value") == [[(10.0,)], [(20.0,)]]
    assert values(run(base + " |> limit(n: 1, offset: 1)"), "_value") == [[(11.5,)], [(21.0,)]]
    assert values(run(base + " |> mean()"), "_value") == [[(11.166666666666666,)], [(20.5,)]]
    assert values(run(base + " |> max()"), "_value", "_time") == [[(12.0, T0 + 9 * SEC)], [(21.0, T0 + 4 * SEC)]]
    assert values(run(base + ' |> min() |> keep(columns: ["_value"])'), "_value") == [[(10.0,), (20.0,)]]
    summed = run(base.replace('"speed"', '"odometer"') + " |> sum()")
    assert values(summed, "_value") == [[(304,)], [(405,)]] and summed[0][1][0].col_type("_value") == "int"


def test_flux_group_does_not_sort_rows() -> None:
    results = run(
        'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._field == "speed") |> group()'
    )
    assert values(results, "_time") == [
        [(T0 + SEC,), (T0 + 3 * SEC,), (T0 + 9 * SEC,), (T0 + 2 * SEC,), (T0 + 4 * SEC,)]
    ]
    resorted = run(
        'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._field == "speed")'
        ' |> group() |> sort(columns: ["_time"]) |> last()'
    )
    assert values(resorted, "device_id", "_value") == [[("vehicle_01", 12.0)]]


def test_flux_group_mixing_types_is_a_schema_collision() -> None:
    with pytest.raises(flux.FluxError, match="schema collision"):
        run('from(bucket: "vehicle-data") |> range(start: 0) |> group(columns: ["device_id"])')


def test_flux_pivot() -> None:
    results = run(
        'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r.device_id == "vehicle_01")'
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
    )
    ((_, (table,)),) = results
    assert table.key == ["_start", "_stop", "_measurement", "device_id"]
    assert [c for c, _ in table.columns] == [
        "_start",
        "_stop",
        "_time",
        "_measurement",
        "device_id",
        "odometer",
        "speed",
        "status",
    ]
    assert [(r["_time"], r["speed"], r["status"], r["odometer"]) for r in table.rows] == [
        (T0 + SEC, 10.0, "ok", 100),
        (T0 + 3 * SEC, 11.5, "idle", 101),
        (T0 + 9 * SEC, 12.0, "ok", 103),
    ]


def test_flux_aggregate_window_windows_clip_to_range_and_create_empty() -> None:
    base = (
        'from(bucket: "vehicle-data") |> range(start: 2024-01-01T00:00:00Z, stop: 2024-01-01T00:00:11Z)'
        ' |> filter(fn: (r) => r._field == "speed" and r.device_id == "vehicle_01")'
    )
    mean = run(base + " |> aggregateWindow(every: 4s, fn: mean)")
    assert values(mean, "_time", "_value") == [[(T0 + 4 * SEC, 10.75), (T0 + 8 * SEC, None), (T0 + 11 * SEC, 12.0)]]
    table = mean[0][1][0]
    assert table.col_type("_value") == "float" and table.key_values["_stop"] == T0 + 11 * SEC
    count = run(base + " |> aggregateWindow(every: 4s, fn: count)")
    assert values(count, "_value") == [[(2,), (0,), (1,)]]
    assert count[0][1][0].col_type("_value") == "int"
    wide = base.replace("2024-01-01T00:00:00Z, stop", "0, stop")
    assert values(run(wide + " |> aggregateWindow(every: 1s, fn: count, createEmpty: false)"), "_value") == [
        [(1,), (1,), (1,)]
    ]
    sparse = run(base + " |> aggregateWindow(every: 4s, fn: max, createEmpty: false)")
    assert values(sparse, "_time", "_value") == [[(T0 + 4 * SEC, 11.5), (T0 + 11 * SEC, 12.0)]]
    shifted = run(base + " |> aggregateWindow(every: 4s, offset: 1s, fn: count)")
    assert values(shifted, "_time", "_value") == [
        [(T0 + SEC, 0), (T0 + 5 * SEC, 2), (T0 + 9 * SEC, 0), (T0 + 11 * SEC, 1)]
    ]
    as_start = run(base + ' |> aggregateWindow(every: 4s, fn: last, timeSrc: "_start")')
    assert values(as_start, "_time", "_value") == [[(T0, 11.5), (T0 + 4 * SEC, None), (T0 + 8 * SEC, 12.0)]]
    with pytest.raises(flux.FluxError, match="unsupported aggregate column type string"):
        run(base.replace('"speed"', '"status"') + " |> aggregateWindow(every: 4s, fn: mean)")


def test_flux_extern_and_params_bindings() -> None:
    extern = {
        "imports": [],
        "body": [
            {
                "type": "OptionStatement",
                "assignment": {"type": "VariableAssignment", "id": {"type": "Identifier", "name": name}, "init": init},
            }
            for name, init in [
                ("_bucket", {"type": "StringLiteral", "value": "vehicle-data"}),
                ("_device", {"type": "StringLiteral", "value": "vehicle_02"}),
                ("_n", {"type": "IntegerLiteral", "value": "1"}),
                ("_start", {"type": "DateTimeLiteral", "value": "2024-01-01T00:00:00.000000000Z"}),
                ("_every", {"type": "DurationLiteral", "values": [{"magnitude": 5, "unit": "s"}]}),
                (
                    "_back",
                    {
                        "type": "UnaryExpression",
                        "operator": "-",
                        "argument": {"type": "DurationLiteral", "values": [{"magnitude": 3, "unit": "m"}]},
                    },
                ),
            ]
        ],
    }
    query = (
        "from(bucket: _bucket) |> range(start: _start) |> filter(fn: (r) => r.device_id == _device)"
        ' |> filter(fn: (r) => r._field == "speed") |> limit(n: _n)'
    )
    assert values(run(query, extern=extern), "_value") == [[(20.0,)]]
    relative = 'from(bucket: _bucket) |> range(start: _back) |> filter(fn: (r) => r._field == "speed") |> count()'
    assert values(run(relative, extern=extern, now=T0 + 180 * SEC), "_value") == [[(3,)], [(2,)]]
    via_params = (
        "from(bucket: params.bucket) |> range(start: 0) |> filter(fn: (r) => r.device_id == params.device and"
        ' r._field == "odometer") |> last()'
    )
    assert values(run(via_params, params={"bucket": "vehicle-data", "device": "vehicle_01"}), "_value") == [[(103,)]]
    with pytest.raises(flux.FluxError, match="undefined identifier _device"):
        run('from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r.device_id == _device)')
    with pytest.raises(flux.FluxError, match="missing label"):
        run("from(bucket: params.nope) |> range(start: 0)", params={})


def test_flux_variables_functions_and_yields() -> None:
    results = run(
        """
        data = from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._field == "speed")
        latest = (tables=<-, n=1) => tables |> tail(n: n)
        data |> latest() |> yield(name: "latest")
        data |> first() |> yield(name: "first")
        """
    )
    assert [name for name, _ in results] == ["latest", "first"]
    assert [[r["_value"] for t in tables for r in t.rows] for _, tables in results] == [[12.0, 21.0], [10.0, 20.0]]


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        ('import "strings"\nfrom(bucket: "vehicle-data") |> range(start: 0)', flux.Unsupported, 'import "strings"'),
        ('from(bucket: "vehicle-data") |> range(start: 0) |> map(fn: (r) => r)', flux.Unsupported, "map()"),
        (
            'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r.d =~ /x/)',
            flux.Unsupported,
            "regular expression",
        ),
        ('from(bucket: "vehicle-data") |> range(start: -1mo)', flux.Unsupported, "calendar duration"),
        (
            'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._value + 1 > 2)',
            flux.Unsupported,
            "arithmetic",
        ),
        ('from(bucket: "vehicle-data") |> filter(fn: (r) => true)', flux.FluxError, "cannot submit unbounded read"),
        ('from(bucket: "nope") |> range(start: 0)', flux.BucketNotFound, 'could not find bucket "nope"'),
        ('from(bucket: "vehicle-data") |> range(begin: 0)', flux.FluxError, "unexpected argument 'begin'"),
        (
            'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._value == "x")',
            flux.FluxError,
            "unsupported comparison",
        ),
        (
            'from(bucket: "vehicle-data") |> range(start: 0)\nfrom(bucket: "vehicle-data") |> range(start: 0)',
            flux.FluxError,
            "multiple results",
        ),
        ('from(bucket: "vehicle-data") |> range(start: 0) |> limit(n: "2")', flux.FluxError, "n must be an int"),
        ('from(bucket: "vehicle-data") |> range(start: 0,', flux.FluxError, "error @1:"),
        (
            'from(bucket: "vehicle-data") |> range(start: 0) |> aggregateWindow(every: 1s, fn: mean)',
            flux.Unsupported,
            "more than 100000 windows",
        ),
    ],
)
def test_flux_rejections(query: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        run(query)
    assert message in str(info.value)
    if error is flux.Unsupported:
        assert str(info.value).startswith("fake influxdb does not support: ")
    if error is flux.BucketNotFound:
        assert info.value.status == 404


# ----------------------------------------------------------------------------- annotated CSV


ANNOTATED = flux.Dialect(header=True, delimiter=",", annotations=("datatype", "group", "default"))


def test_csv_shape_matches_flux_encoder() -> None:
    points = [
        P("device_data", {"device_id": "v1"}, {"speed": 12.5, "status": "ok"}, T0 + SEC),
        P("device_data", {"device_id": "v1"}, {"speed": 13.0}, T0 + 2 * SEC + 500_000_000),
        P("device_data", {"device_id": "v2"}, {"speed": 1e21}, T0 + 3 * SEC + 1),
    ]
    query = 'from(bucket: "vehicle-data") |> range(start: 2024-01-01T00:00:00Z, stop: 2024-01-01T00:01:00Z)'
    body = flux.encode_csv(run(query, points), ANNOTATED).decode()
    bounds = "2024-01-01T00:00:00Z,2024-01-01T00:01:00Z"
    expected = (
        "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string\r\n"
        "#group,false,false,true,true,false,false,true,true,true\r\n"
        "#default,_result,,,,,,,,\r\n"
        ",result,table,_start,_stop,_time,_value,_field,_measurement,device_id\r\n"
        f",,0,{bounds},2024-01-01T00:00:01Z,12.5,speed,device_data,v1\r\n"
        f",,0,{bounds},2024-01-01T00:00:02.5Z,13,speed,device_data,v1\r\n"
        "\r\n"
        "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string,string\r\n"
        "#group,false,false,true,true,false,false,true,true,true\r\n"
        "#default,_result,,,,,,,,\r\n"
        ",result,table,_start,_stop,_time,_value,_field,_measurement,device_id\r\n"
        f",,1,{bounds},2024-01-01T00:00:01Z,ok,status,device_data,v1\r\n"
        "\r\n"
        "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string\r\n"
        "#group,false,false,true,true,false,false,true,true,true\r\n"
        "#default,_result,,,,,,,,\r\n"
        ",result,table,_start,_stop,_time,_value,_field,_measurement,device_id\r\n"
        f",,2,{bounds},2024-01-01T00:00:03.000000001Z,1000000000000000000000,speed,device_data,v2\r\n"
        "\r\n"
    )
    assert body == expected


def test_csv_same_schema_tables_share_one_header_and_empty_tables_use_defaults() -> None:
    tables = run(SEED_QUERY)
    body = flux.encode_csv(tables, ANNOTATED).decode()
    assert body.count(",result,table,") == 1 and ",,0," in body and ",,1," in body
    kept = run(
        'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => false, onEmpty: "keep") |> limit(n: 1)'
    )
    text = flux.encode_csv([("_result", kept[0][1][:1])], ANNOTATED).decode()
    assert "#default,_result,0,1970-01-01T00:00:00Z,2024-01-01T00:01:00Z,,,odometer,device_data,vehicle_01\r\n" in text


def test_csv_without_annotations_quoting_and_delimiter() -> None:
    points = [P("m", {"t": "a,b"}, {"s": 'say "hi"\nbye', "b": True}, T0)]
    results = run('from(bucket: "vehicle-data") |> range(start: 0) |> yield(name: "r")', points)
    plain = flux.encode_csv(results, flux.Dialect()).decode()
    assert plain.splitlines()[0] == ",result,table,_start,_stop,_time,_value,_field,_measurement,t"
    assert ',r,0,1970-01-01T00:00:00Z,2024-01-01T00:01:00Z,2024-01-01T00:00:00Z,true,b,m,"a,b"\r\n' in plain
    assert '"say ""hi""\r\nbye"' in plain
    headerless = flux.encode_csv(results, flux.Dialect(header=False, delimiter=";")).decode()
    assert "result" not in headerless and headerless.startswith(";r;0;")


# ----------------------------------------------------------------------------- HTTP: system endpoints


def test_health_ping_and_unknown_paths(fake: FakeInfluxDB, client: InfluxDBClient) -> None:
    status, headers, body = send(fake, "GET", "/health")
    assert status == 200 and headers["content-type"].startswith("application/json")
    health = assert_spec_body("/health", "get", 200, body)
    assert health["status"] == "pass" and health["name"] == "influxdb"
    status, headers, body = send(fake, "GET", "/ping")
    assert (status, body) == (204, b"")
    assert headers["x-influxdb-version"] and headers["x-influxdb-build"] == "OSS"
    assert send(fake, "HEAD", "/ping")[0] == 204
    assert client.ping() is True and client.version() == headers["x-influxdb-version"]
    status, _, body = send(fake, "GET", "/api/v2/buckets", headers=AUTH)
    assert status == 404 and json.loads(body)["code"] == "not found"
    status, headers, body = send(fake, "GET", "/api/v2/write", headers=AUTH)
    assert status == 405 and headers["allow"] == "POST" and json.loads(body)["code"] == "method not allowed"


def test_unhealthy_answers_503_everywhere(fake: FakeInfluxDB) -> None:
    fake.set_healthy(False)
    status, _, body = send(fake, "GET", "/health")
    assert status == 503 and assert_spec_body("/health", "get", 503, body)["status"] == "fail"
    assert send(fake, "GET", "/ping")[0] == 503
    status, headers, _ = write(fake, "m f=1 1")
    assert status == 503 and headers["retry-after"] == "1"
    assert query_json(fake, {"query": 'from(bucket: "vehicle-data") |> range(start: 0)'})[0] == 503
    fake.set_healthy(True)
    assert write(fake, "m f=1 1")[0] == 204


def test_stop_refuses_connections_and_restart_keeps_points(fake: FakeInfluxDB) -> None:
    assert write(fake, "m f=1 1")[0] == 204
    url = fake.url
    fake.stop()
    with pytest.raises(urllib.error.URLError) as info:
        urllib.request.urlopen(url + "/ping", timeout=5)
    assert isinstance(info.value.reason, ConnectionRefusedError)
    assert fake.start() == url
    assert send(fake, "GET", "/ping")[0] == 204
    assert [p.fields for p in fake.points] == [{"f": 1.0}]


def test_stop_closes_kept_alive_connections(fake: FakeInfluxDB) -> None:
    parts = urlsplit(fake.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", "/ping")
        assert conn.getresponse().read() == b"" and conn.sock is not None
        fake.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, socket.timeout, OSError)):
            conn.request("GET", "/ping")
            conn.getresponse()
    finally:
        conn.close()


# ----------------------------------------------------------------------------- HTTP: writes


def test_write_with_influxdb_client_records_points_and_requests(fake: FakeInfluxDB, client: InfluxDBClient) -> None:
    api = client.write_api(write_options=SYNCHRONOUS)
    api.write("vehicle-data", record='device_data,device_id=vehicle_01 speed=10.5,status="ok",seq=1i 1000')
    api.write("vehicle-data", record="device_data,device_id=vehicle_02 speed=3 2000")
    api.write("vehicle-data", record="device_data,device_id=vehicle_01 speed=11 1000")
    assert fake.points == [
        Point("device_data", {"device_id": "vehicle_01"}, {"speed": 11.0, "status": "ok", "seq": 1}, 1000),
        Point("device_data", {"device_id": "vehicle_02"}, {"speed": 3.0}, 2000),
    ]
    first = fake.requests[0]
    assert (first.method, first.path, first.status) == ("POST", "/api/v2/write", 204)
    assert first.query == {"org": "my-org", "bucket": "vehicle-data", "precision": "ns"}
    assert first.header("authorization") == f"Token {TOKEN}"
    assert first.body.startswith(b"device_data,device_id=vehicle_01 speed=10.5")


def test_write_precision_gzip_and_org_id(fake: FakeInfluxDB) -> None:
    status, _, _ = write(fake, "m f=1i 1700000000", WRITE_QS + "&precision=s")
    assert status == 204 and fake.points[-1].time_ns == 1_700_000_000 * SEC
    status, _, _ = write(fake, gzip.compress(b"m f=2i 5"), **{"Content-Encoding": "gzip"})
    assert status == 204 and fake.points[-1].fields == {"f": 2}
    assert fake.requests[-1].body == b"m f=2i 5", "recorded bodies are decompressed"
    status, _, _ = write(fake, "m g=1 6", f"/api/v2/write?orgID={fake.org_id}&bucket={fake.bucket_ids['other']}")
    assert status == 204 and fake.points_in("other")[0].fields == {"g": 1.0}


def test_write_with_gzip_client(fake: FakeInfluxDB) -> None:
    with InfluxDBClient(url=fake.url, token=TOKEN, org="my-org", enable_gzip=True) as gz:
        gz.write_api(write_options=SYNCHRONOUS).write("vehicle-data", record="m f=1 1")
        tables = gz.query_api().query('from(bucket: "vehicle-data") |> range(start: 0)')
    writes = [r for r in fake.requests if r.path == "/api/v2/write"]
    assert writes[-1].header("Content-Encoding") == "gzip" and writes[-1].body == b"m f=1 1"
    assert fake.requests[-1].header("Accept-Encoding") == "gzip"
    assert [r.get_value() for t in tables for r in t.records] == [1.0]


@pytest.mark.parametrize(
    "auth", [None, "Token wrong", f"Bearer {TOKEN}", f"token {TOKEN}", "Basic dXNlcjp0ZXN0LXRva2Vu"]
)
def test_write_requires_token_scheme(fake: FakeInfluxDB, auth: str | None) -> None:
    headers = {"Content-Type": "text/plain"} | ({"Authorization": auth} if auth else {})
    status, _, body = send(fake, "POST", WRITE_QS, "m f=1", headers)
    assert status == 401
    assert assert_spec_body("/api/v2/write", "post", 401, body)["code"] == "unauthorized"
    assert fake.points == [] and fake.requests[-1].status == 401


@pytest.mark.parametrize(
    ("path", "headers", "status", "message"),
    [
        ("/api/v2/write?org=nope&bucket=vehicle-data", {}, 404, 'organization name "nope" not found'),
        ("/api/v2/write?org=my-org&bucket=nope", {}, 404, 'bucket "nope" not found'),
        ("/api/v2/write?orgID=0000&bucket=vehicle-data", {}, 404, "organization not found"),
        ("/api/v2/write?bucket=vehicle-data", {}, 400, "Please provide either orgID or org"),
        ("/api/v2/write?org=my-org", {}, 400, 'missing required query parameter "bucket"'),
        (WRITE_QS + "&precision=m", {}, 400, "invalid query parameter precision"),
        (WRITE_QS, {"Content-Type": "application/json"}, 415, "unsupported Content-Type"),
        (WRITE_QS, {"Content-Type": "text/plain; charset=latin-1"}, 415, "unsupported Content-Type"),
        (WRITE_QS, {"Content-Encoding": "br"}, 415, "unsupported Content-Encoding"),
        (WRITE_QS, {"Content-Encoding": "gzip"}, 400, "unable to decompress"),
    ],
)
def test_write_parameter_checks(fake: FakeInfluxDB, path: str, headers: dict, status: int, message: str) -> None:
    got, _, body = write(fake, "m f=1", path, **headers)
    assert got == status
    decoded = assert_spec_body("/api/v2/write", "post", status, body)
    assert message in decoded["message"]
    assert fake.points == []


def test_write_malformed_batch_is_rejected_whole(fake: FakeInfluxDB) -> None:
    status, headers, body = write(fake, "m f=1 1\nm,t= f=2 2\nm f=3 3\n")
    assert status == 400 and headers["content-type"].startswith("application/json")
    decoded = assert_spec_body("/api/v2/write", "post", 400, body)
    assert decoded["code"] == "invalid" and decoded["line"] == 2
    assert "line 2" in decoded["message"] and "missing tag value" in decoded["message"]
    assert fake.points == []
    status, _, body = write(fake, "# only a comment\n\n")
    assert status == 400 and json.loads(body)["message"] == "writing requires points"


def test_write_size_limit_and_type_conflicts() -> None:
    with FakeInfluxDB(token=TOKEN, max_body_bytes=64) as small:
        status, _, body = write(small, "m f=1 " + "1" * 80)
        assert status == 413 and assert_spec_body("/api/v2/write", "post", 413, body)["code"] == "invalid"
        status, _, body = write(small, gzip.compress(b"m f=1 1\n" * 20), **{"Content-Encoding": "gzip"})
        assert status == 413
        assert write(small, "m speed=1 1")[0] == 204
        status, _, body = write(small, "m speed=2i 2\nm speed=3 3")
        decoded = assert_spec_body("/api/v2/write", "post", 422, body)
        assert status == 422 and decoded["code"] == "unprocessable entity"
        assert (
            'input field "speed" on measurement "m" is type integer, already exists as type float' in decoded["message"]
        )
        assert [p.fields["speed"] for p in small.points] == [1.0, 3.0], "the other points of the batch are written"


def test_fail_next_and_fail_for(fake: FakeInfluxDB) -> None:
    fake.fail_next(503, count=2, retry_after=7, message="busy")
    for _ in range(2):
        status, headers, body = write(fake, "m f=1 1")
        assert (status, headers["retry-after"], json.loads(body)) == (
            503,
            "7",
            {"code": "unavailable", "message": "busy"},
        )
    assert write(fake, "m f=1 1")[0] == 204
    fake.fail_next(500, paths=("/api/v2/query",))
    assert write(fake, "m f=2 2")[0] == 204
    assert query_json(fake, {"query": 'from(bucket: "vehicle-data") |> range(start: 0)'})[0] == 500
    fake.fail_next(429)
    status, headers, _ = write(fake, "m f=3 3")
    assert status == 429 and "retry-after" not in headers
    fake.fail_for(0.3, 503, retry_after=1)
    assert write(fake, "m f=4 4")[0] == 503
    wait_for(lambda: write(fake, "m f=4 4")[0] == 204)
    assert [r.status for r in fake.requests].count(503) >= 3
    assert [p.time_ns for p in fake.points] == [1, 2, 4]


def test_influxdb_client_batching_retries_injected_503(fake: FakeInfluxDB, client: InfluxDBClient) -> None:
    fake.fail_next(503, count=2)
    done: list[str] = []
    errors: list[Exception] = []
    options = WriteOptions(
        batch_size=10,
        flush_interval=50,
        retry_interval=50,
        max_retries=5,
        max_retry_delay=200,
        exponential_base=2,
        jitter_interval=0,
    )
    api = client.write_api(
        write_options=options,
        success_callback=lambda conf, data: done.append(data),
        error_callback=lambda conf, data, exc: errors.append(exc),
    )
    try:
        api.write("vehicle-data", record=["m,dev=a v=1 1", "m,dev=b v=2 1"])
        wait_for(lambda: bool(done) or bool(errors), timeout=10)
    finally:
        api.close()
    assert errors == [] and len(fake.points) == 2
    assert [r.status for r in fake.requests if r.path == "/api/v2/write"] == [503, 503, 204]


# ----------------------------------------------------------------------------- HTTP: queries


@pytest.fixture
def loaded(fake: FakeInfluxDB) -> FakeInfluxDB:
    lines = []
    for p in DATA:
        fields = ",".join(
            f'{k}="{v}"' if isinstance(v, str) else (f"{k}={v}i" if isinstance(v, int) else f"{k}={v}")
            for k, v in p.fields.items()
        )
        lines.append(f"{p.measurement},device_id={p.tags['device_id']} {fields} {p.time_ns}")
    assert write(fake, "\n".join(lines))[0] == 204
    return fake


def test_query_api_parses_seed_query(loaded: FakeInfluxDB, client: InfluxDBClient) -> None:
    query = SEED_QUERY.replace("range(start: -1h)", "range(start: 2024-01-01T00:00:00Z, stop: 2024-01-01T01:00:00Z)")
    tables = client.query_api().query(query)
    assert len(tables) == 2
    records = [t.records[0] for t in tables]
    assert [(r["device_id"], r.get_value(), r.get_field(), r.get_measurement()) for r in records] == [
        ("vehicle_01", 12.0, "speed", "device_data"),
        ("vehicle_02", 21.0, "speed", "device_data"),
    ]
    assert records[0].get_time() == datetime(2024, 1, 1, 0, 0, 9, tzinfo=UTC)
    assert records[0].get_start() == datetime(2024, 1, 1, tzinfo=UTC)
    assert [c.label for c in tables[0].get_group_key()] == ["device_id"]
    assert [c.data_type for c in tables[0].columns][:6] == [
        "string",
        "long",
        "dateTime:RFC3339",
        "dateTime:RFC3339",
        "dateTime:RFC3339",
        "double",
    ]
    sent = json.loads(loaded.requests[-1].body)
    assert sent["dialect"]["annotations"] == ["datatype", "group", "default"]
    assert loaded.queries[-1] == (query, {})


def test_query_api_with_params_and_stream(loaded: FakeInfluxDB, client: InfluxDBClient) -> None:
    query = (
        "from(bucket: _bucket) |> range(start: _start, stop: _stop) |> filter(fn: (r) => r.device_id == _device)"
        ' |> filter(fn: (r) => r._field == _field) |> sort(columns: ["_time"], desc: _desc) |> limit(n: _n)'
    )
    params = {
        "_bucket": "vehicle-data",
        "_device": "vehicle_01",
        "_field": "odometer",
        "_start": datetime(2024, 1, 1, tzinfo=UTC),
        "_stop": datetime(2024, 1, 1, 0, 0, 9, tzinfo=UTC),
        "_desc": True,
        "_n": 5,
    }
    tables = client.query_api().query(query, params=params)
    assert [(r.get_time().second, r.get_value()) for r in tables[0].records] == [(3, 101), (1, 100)]
    assert isinstance(tables[0].records[0].get_value(), int)
    streamed = list(client.query_api().query_stream(query, params=params))
    assert [r.get_value() for r in streamed] == [101, 100]
    text, recorded = loaded.queries[-1]
    assert text == query and recorded["_device"] == "vehicle_01" and recorded["_n"] == 5
    assert recorded["_start"] == datetime(2024, 1, 1, tzinfo=UTC) and recorded["_desc"] is True
    relative = client.query_api().query(
        'from(bucket: "vehicle-data") |> range(start: _back) |> count()', params={"_back": timedelta(days=-36500)}
    )
    assert sorted(r.get_value() for t in relative for r in t.records) == [2, 2, 2, 3, 3, 3]


def test_query_api_pivot_and_aggregate_window(loaded: FakeInfluxDB, client: InfluxDBClient) -> None:
    pivoted = client.query_api().query(
        'from(bucket: "vehicle-data") |> range(start: 2024-01-01T00:00:00Z, stop: 2024-01-01T00:01:00Z)'
        ' |> filter(fn: (r) => r.device_id == "vehicle_02")'
        ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")'
    )
    assert [(r["speed"], r["status"], r["odometer"]) for r in pivoted[0].records] == [
        (20.0, "ok", 200),
        (21.0, "ok", 205),
    ]
    windows = client.query_api().query(
        'from(bucket: "vehicle-data") |> range(start: 2024-01-01T00:00:00Z, stop: 2024-01-01T00:00:10Z)'
        ' |> filter(fn: (r) => r._field == "speed") |> aggregateWindow(every: 5s, fn: mean)'
    )
    assert [[(r.get_time().second, r.get_value()) for r in t.records] for t in windows] == [
        [(5, 10.75), (10, 12.0)],
        [(5, 20.5), (10, None)],
    ]


def test_query_vnd_flux_gzip_and_dialects(loaded: FakeInfluxDB) -> None:
    text = 'from(bucket: "vehicle-data") |> range(start: 0) |> filter(fn: (r) => r._field == "speed") |> last()'
    status, headers, body = send(
        loaded, "POST", "/api/v2/query?org=my-org", text, {**AUTH, "Content-Type": "application/vnd.flux"}
    )
    assert status == 200 and headers["content-type"] == "text/csv; charset=utf-8"
    lines = body.decode().split("\r\n")
    assert lines[0] == ",result,table,_start,_stop,_time,_value,_field,_measurement,device_id"
    assert lines[1].startswith(",_result,0,1970-01-01T00:00:00Z,") and lines[1].endswith(
        ",12,speed,device_data,vehicle_01"
    )
    assert body.endswith(b"\r\n\r\n")
    status, headers, body = query_json(
        loaded,
        {
            "query": text,
            "dialect": {"annotations": ["group"], "delimiter": "\t", "header": False},
            "type": "flux",
            "now": "2024-01-01T00:00:30Z",
        },
        **{"Accept-Encoding": "gzip"},
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    decoded = gzip.decompress(body).decode()
    assert decoded.startswith("#group\tfalse\tfalse\ttrue\ttrue\tfalse\tfalse\ttrue\ttrue\ttrue\r\n\t_result\t0\t")
    assert "2024-01-01T00:00:30Z" in decoded


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"dialect": {}}, "missing required property 'query'"),
        ({"query": 5}, "body.query: expected string"),
        ({"query": "x", "type": "influxql"}, "is not one of ['flux']"),
        ({"query": "x", "dialect": {"annotations": ["datatype", "nope"]}}, "body.dialect.annotations[1]"),
        ({"query": "x", "dialect": {"annotations": ["group", "group"]}}, "not unique"),
        ({"query": "x", "dialect": {"delimiter": ",,"}}, "longer than 1"),
        ({"query": "x", "dialect": {"header": "yes"}}, "expected boolean"),
        ({"query": "x", "dialect": {"dateTimeFormat": "unix"}}, "is not one of"),
        ({"query": "x", "now": "yesterday"}, "not an RFC3339 date-time"),
        ({"query": "x", "params": ["a"]}, "body.params: expected object"),
        (b"{not json", "failed to decode request body"),
    ],
)
def test_query_body_validated_against_query_schema(fake: FakeInfluxDB, payload: Any, message: str) -> None:
    status, _, body = query_json(fake, payload)
    assert status == 400
    decoded = assert_spec_body("/api/v2/query", "post", 400, body)
    assert message in decoded["message"]


def test_query_errors(loaded: FakeInfluxDB) -> None:
    cases = [
        (
            {"query": 'from(bucket: "vehicle-data") |> range(start: 0) |> map(fn: (r) => r)'},
            400,
            "fake influxdb does not support: map()",
        ),
        ({"query": 'from(bucket: "nope") |> range(start: 0)'}, 404, 'could not find bucket "nope"'),
        ({"query": "from(bucket: _b) |> range(start: 0)"}, 400, "undefined identifier _b"),
        (
            {"query": 'from(bucket: "vehicle-data") |> range(start: 0)', "extern": {"imports": [{"type": "x"}]}},
            400,
            "fake influxdb does not support: imports in extern",
        ),
    ]
    for payload, status, message in cases:
        got, _, body = query_json(loaded, payload)
        assert got == status
        assert message in assert_spec_body("/api/v2/query", "post", status, body)["message"]
    assert query_json(loaded, {"query": "x"}, path="/api/v2/query")[0] == 400
    assert query_json(loaded, {"query": "x"}, path="/api/v2/query?org=nope")[0] == 404
    status, _, _ = send(loaded, "POST", "/api/v2/query?org=my-org", "x", {**AUTH, "Content-Type": "text/plain"})
    assert status == 415
    utf8_json = {**AUTH, "Content-Type": "application/json; charset=UTF-8"}
    assert send(loaded, "POST", "/api/v2/query?org=my-org", json.dumps({"query": SEED_QUERY}), utf8_json)[0] == 200
    status, _, _ = send(loaded, "POST", "/api/v2/query?org=my-org", "x", AUTH)
    assert status == 415
    status, _, body = send(loaded, "POST", "/api/v2/query?org=my-org", "x", {"Content-Type": "application/vnd.flux"})
    assert status == 401


def test_query_params_object_is_bound_as_params_record(loaded: FakeInfluxDB) -> None:
    status, _, body = query_json(
        loaded,
        {
            "query": "from(bucket: params.b) |> range(start: 0) |> filter(fn: (r) => r.device_id == params.d and"
            ' r._field == "speed") |> last()',
            "params": {"b": "vehicle-data", "d": "vehicle_02"},
        },
    )
    assert status == 200 and b",21,speed," in body
    assert loaded.queries[-1][1] == {"b": "vehicle-data", "d": "vehicle_02"}


def test_spec_is_loaded_once_and_complete() -> None:
    spec = load_spec()
    assert spec is load_spec()
    assert {"/api/v2/write", "/api/v2/query", "/health", "/ping"} <= set(spec["paths"])


# ----------------------------------------------------------------------------- flux_lint (InfluxData's language server)

needs_flux_lsp = pytest.mark.skipif(
    not flux_lint.available(), reason=f"node or {flux_lint.PACKAGE} missing (see influxdb_fake/README.md)"
)

PARAMS_QUERY = (
    "from(bucket: _bucket) |> range(start: _start) |> filter(fn: (r) => r.device_id == _device)"
    ' |> filter(fn: (r) => r._field == "speed") |> aggregateWindow(every: _every, fn: mean, createEmpty: false)'
    ' |> group(columns: ["device_id"]) |> sort(columns: ["_time"]) |> last()'
)


@needs_flux_lsp
def test_flux_lint_accepts_valid_queries_and_declared_params() -> None:
    declared = {"_bucket": "b", "_start": datetime(2024, 1, 1, tzinfo=UTC), "_device": "v", "_every": timedelta(1)}
    assert flux_lint.lint_many([SEED_QUERY, PARAMS_QUERY], declared) == [[], []]
    undeclared = flux_lint.lint_flux(PARAMS_QUERY)
    assert "1:14: undefined identifier _bucket" in undeclared and len(undeclared) == 4
    assert flux_lint.lint_flux(PARAMS_QUERY, ["_bucket", "_start", "_device", "_every"]) == []


@needs_flux_lsp
def test_flux_lint_reports_invalid_queries() -> None:
    messages = flux_lint.lint_flux(
        'from(bucket: "b")\n  |> range(start: -1h)\n  |> aggregateWindow(every: "1m", fn: mean)\n  |> lst()'
    )
    assert "3:29: expected duration but found string (argument every)" in messages
    assert "4:6: undefined identifier lst" in messages
    wrong_type = flux_lint.lint_flux(PARAMS_QUERY, {"_bucket": "b", "_start": 0, "_device": "v", "_every": "1m"})
    assert any("expected duration but found string" in m for m in wrong_type)
    assert flux_lint.lint_flux('from(bucket: "b" |> range(start: -1h)')


def test_flux_lint_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FLUX_LSP_MODULES", str(tmp_path))
    with pytest.raises(flux_lint.FluxLintUnavailable, match="npm install --prefix"):
        flux_lint.lint_flux("x = 1")
