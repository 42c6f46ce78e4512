"""Dashboard sessions against a real dashboard process: cookies are Secure when the page is served over HTTPS
(also as a trusted proxy says), and logout ends the session on the server, so a copied cookie stops working
for the API and for Socket.IO alike.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import socketio
from dashboard_fixtures import DashboardProcess, make_record, start_dashboard, write_records
from werkzeug.security import generate_password_hash

from rtds.settings import Settings
from rtds.store.sqlite import SQLiteStore
from rtds.testkit import ServiceProcess, wait_until

USERNAME = "operator"
PASSWORD = "correct horse battery staple"
SECRET_KEY = "test-secret-key-0123456789abcdef"


def with_login(settings: Settings, **changes: object) -> Settings:
    return settings.with_overrides(
        dashboard_username=USERNAME,
        dashboard_password_hash=generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"),
        flask_secret_key=SECRET_KEY,
        dashboard_rate_limit="",
        **changes,
    )


@dataclass
class Answer:
    status: int
    body: str
    set_cookies: list[str]

    def session_cookie(self) -> str:
        """`session=...` from the Set-Cookie header that carries it."""
        for header in self.set_cookies:
            if header.startswith("session="):
                return header.split(";", 1)[0]
        raise AssertionError(f"no session cookie in {self.set_cookies}")


def request(dashboard: DashboardProcess, method: str, path: str, *, cookie: str = "", form: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
    connection = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=10)
    sent = dict(headers or {})
    if cookie:
        sent["Cookie"] = cookie
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, response.read().decode(), response.headers.get_all("Set-Cookie") or [])
    finally:
        connection.close()


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'id="csrf_token" name="csrf_token" type="hidden" value="([^"]+)"', html
    )
    assert match, html[:500]
    return match.group(1)


def sign_in(dashboard: DashboardProcess, headers: dict[str, str] | None = None) -> tuple[str, Answer]:
    """(the signed-in session cookie, the answer to the login POST)."""
    form_page = request(dashboard, "GET", "/login", headers=headers)
    token = csrf_token(form_page.body)
    signed_in = request(
        dashboard,
        "POST",
        "/login",
        cookie=form_page.session_cookie(),
        form={"username": USERNAME, "password": PASSWORD, "csrf_token": token},
        headers=headers,
    )
    assert signed_in.status == 302, signed_in
    return signed_in.session_cookie(), signed_in


def socket_client(dashboard: DashboardProcess, cookie: str) -> tuple[socketio.Client, list[dict[str, object]]]:
    received: list[dict[str, object]] = []
    client = socketio.Client(reconnection=False)
    client.on("latest_data", received.append)
    client.connect(dashboard.url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=10)
    return client, received


@pytest.fixture
def dashboard_factory(settings: Settings, spawn: Callable[..., ServiceProcess]) -> Callable[..., DashboardProcess]:
    store = SQLiteStore(settings.sqlite_path)
    write_records(store, [make_record("vehicle_01", time.time() - 5)])
    store.close()

    def start(**changes: object) -> DashboardProcess:
        return start_dashboard(spawn, with_login(settings, **changes), name=f"dashboard-{len(changes)}")

    return start


def test_logout_ends_the_session_for_the_api_and_socket_io_also_for_a_copied_cookie(
    dashboard_factory: Callable[..., DashboardProcess],
) -> None:
    dashboard = dashboard_factory()
    cookie, _ = sign_in(dashboard)
    assert request(dashboard, "GET", "/api/devices/status", cookie=cookie).status == 200
    live, received = socket_client(dashboard, cookie)
    disconnected = threading.Event()
    live.on("disconnect", disconnected.set)
    wait_until(lambda: received, 10, message="the signed-in Socket.IO client receives latest_data")

    page = request(dashboard, "GET", "/", cookie=cookie)
    logged_out = request(dashboard, "POST", "/logout", cookie=cookie, form={"csrf_token": csrf_token(page.body)})
    assert logged_out.status == 302, logged_out

    wait_until(disconnected.is_set, 10, message="logout closes the session's open Socket.IO connection")
    replayed = request(dashboard, "GET", "/api/devices/status", cookie=cookie)
    assert replayed.status == 401 and "login required" in replayed.body, replayed
    with pytest.raises(socketio.exceptions.ConnectionError):
        socket_client(dashboard, cookie)
    assert request(dashboard, "GET", "/", cookie=cookie).status == 302, "the page sends the old cookie to /login"
    again, _ = sign_in(dashboard)
    assert request(dashboard, "GET", "/api/devices/status", cookie=again).status == 200, "a new login works"


def secure(answer: Answer) -> bool:
    header = next(header for header in answer.set_cookies if header.startswith("session="))
    return "secure" in [part.strip().lower() for part in header.split(";")]


def test_the_session_cookie_is_secure_when_a_trusted_proxy_says_https_and_only_then(
    dashboard_factory: Callable[..., DashboardProcess],
) -> None:
    behind_proxy = dashboard_factory(dashboard_trusted_proxies=1)
    # A browser on https sends a same-origin Referer, which Flask-WTF requires of HTTPS form posts.
    https = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.7",
        "Referer": f"https://127.0.0.1:{behind_proxy.port}/login",
    }
    assert secure(sign_in(behind_proxy, https)[1])
    assert not secure(sign_in(behind_proxy)[1]), "plain http straight to the dashboard"
    untrusting = dashboard_factory()  # DASHBOARD_TRUSTED_PROXIES=0: a client's own header changes nothing
    assert not secure(sign_in(untrusting, {**https, "Referer": f"https://127.0.0.1:{untrusting.port}/login"})[1])
    always = dashboard_factory(dashboard_secure_cookie="always")
    assert secure(sign_in(always)[1])
