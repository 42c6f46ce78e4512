"""The dashboard's OpenAPI description tells the truth: schemathesis generates requests from it, valid and
invalid, sends them to a real dashboard process, and checks every answer against the description (no 5xx,
documented status codes and bodies, schema-valid requests accepted, invalid ones refused).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import schemathesis
from dashboard_fixtures import DashboardProcess, http_json, make_record, start_dashboard, write_records
from hypothesis import HealthCheck, given, settings

from rtds.settings import Settings
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess

EXAMPLES = 60


@pytest.fixture
def dashboard_with_data(settings: Settings, spawn: Callable[..., ServiceProcess]) -> Iterator[DashboardProcess]:
    store = SQLiteStore(settings.sqlite_path)
    now = time.time()
    write_records(store, [make_record("vehicle_01", now - 60 + seq, seq) for seq in range(60)])
    store.close()
    yield start_dashboard(spawn, settings.with_overrides(dashboard_rate_limit=""))


def test_every_answer_matches_the_description(dashboard_with_data: DashboardProcess) -> None:
    """Each operation with a bounded number of generated requests, positive and negative; any failure of any
    check (a 5xx, an undocumented status, a body off its schema, a valid request refused, an invalid one
    accepted) fails the test with the request that caused it."""
    api = schemathesis.openapi.from_url(f"{dashboard_with_data.url}/api/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {operation.label for operation in operations} >= {
        "GET /api/health",
        "GET /api/devices/status",
        "GET /api/devices/{device_id}/latest",
        "GET /api/devices/{device_id}/history",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        check()


@pytest.mark.parametrize("path", ["a%2Fb", "a%2F%2Fb", "vehicle_01%2F..%2Fstatus", "%2F"])
def test_an_encoded_slash_in_a_device_id_gets_the_apis_json_400(
    dashboard_with_data: DashboardProcess, path: str
) -> None:
    for endpoint in ("latest", "history"):
        opener = urllib.request.build_opener(NoRedirect)
        status, body = http_json(f"{dashboard_with_data.url}/api/devices/{path}/{endpoint}", opener)
        assert status == 400, (endpoint, status, body)
        assert "device id" in body["error"], body


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
