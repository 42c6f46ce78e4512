"""Optional login: one account from DASHBOARD_USERNAME and DASHBOARD_PASSWORD_HASH.

With both set, the page, the API (except /api/health's bare status) and the Socket.IO connection
need a session. The login form is CSRF-protected (Flask-WTF) and rate-limited per client address.
The password is stored only as a Werkzeug hash (`rtds dashboard --hash-password` makes one). The
session's user id includes a fingerprint of that hash, so changing the password ends old sessions, and
the user's session generation (dashboard/sessions.py), so logging out ends them too, cookies copied
before included.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable

from flask import Blueprint, Flask, Response, redirect, render_template, request, url_for
from flask_limiter import Limiter
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from dashboard.security import error_response
from dashboard.sessions import Generations
from rtds.errors import ConfigError
from rtds.settings import Settings

LOGIN_RATE_LIMIT = "10 per minute"
HASH_METHODS = ("scrypt", "pbkdf2")
# Endpoints reachable without a session.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static", "api.health"})


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=128)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class DashboardUser(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def check_password_hash_setting(settings: Settings) -> None:
    """A plain password in DASHBOARD_PASSWORD_HASH would never match; say so at start."""
    if not settings.dashboard_password_hash:
        return
    method = settings.dashboard_password_hash.split(":", 1)[0].split("$", 1)[0]
    if settings.dashboard_password_hash.count("$") < 2 or method not in HASH_METHODS:
        raise ConfigError(
            "DASHBOARD_PASSWORD_HASH does not look like a Werkzeug password hash (scrypt:... or pbkdf2:...); "
            "create one with `rtds dashboard --hash-password` and store that, never the password itself"
        )


def session_user_id(settings: Settings, generation: str) -> str:
    fingerprint = hashlib.sha256(settings.dashboard_password_hash.encode()).hexdigest()[:16]
    return f"{settings.dashboard_username}:{fingerprint}:{generation}"


def init_auth(
    app: Flask,
    settings: Settings,
    limiter: Limiter,
    generations: Generations | None,
    on_logout: Callable[[], None] = lambda: None,
) -> None:
    """Login for the one account; `generations` (None when login is off) ends sessions at logout."""
    CSRFProtect(app)
    login_manager = LoginManager(app)
    login_manager.session_protection = "basic"

    def expected_id() -> str:
        assert generations is not None
        return session_user_id(settings, generations.current(settings.dashboard_username))

    @login_manager.user_loader
    def load_user(user_id: str) -> DashboardUser | None:
        if settings.login_enabled and hmac.compare_digest(user_id, expected_id()):
            return DashboardUser(user_id)
        return None

    auth = Blueprint("auth", __name__)

    @auth.route("/login", methods=["GET", "POST"])
    @limiter.limit(LOGIN_RATE_LIMIT, methods=["POST"])
    def login() -> Response | str | tuple[str, int]:
        if not settings.login_enabled or current_user.is_authenticated:
            return redirect(url_for("page"))
        form = LoginForm()
        if form.validate_on_submit():
            if _credentials_match(settings, form.username.data or "", form.password.data or ""):
                login_user(DashboardUser(expected_id()))
                return redirect(url_for("page"))
            # 200, like any re-shown form; the message says what happened (and no 4xx noise in consoles).
            return render_template("login.html", form=form, error="Wrong user name or password."), 200
        return render_template("login.html", form=form, error=None), 200 if request.method == "GET" else 400

    @auth.post("/logout")
    def logout() -> Response:
        if generations is not None and current_user.is_authenticated:
            generations.end_sessions(settings.dashboard_username)  # every copy of every session cookie
            on_logout()
        logout_user()
        return redirect(url_for("auth.login") if settings.login_enabled else url_for("page"))

    app.register_blueprint(auth)

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> Response | tuple[str, int]:
        if request.endpoint == "auth.login":
            message = "The form expired or was not sent by this page; please sign in again."
            return render_template("login.html", form=LoginForm(), error=message), 400
        return error_response(400, f"{error.description} Reload the page and try again.")

    @app.before_request
    def require_login() -> Response | None:
        if not settings.login_enabled or request.endpoint in PUBLIC_ENDPOINTS or current_user.is_authenticated:
            return None
        if request.path.startswith("/api/"):
            return error_response(401, "login required; sign in at /login first")
        return redirect(url_for("auth.login"))


def _credentials_match(settings: Settings, username: str, password: str) -> bool:
    user_matches = hmac.compare_digest(username.encode(), settings.dashboard_username.encode())
    password_hash = settings.dashboard_password_hash if user_matches else _dummy_hash()
    return check_password_hash(password_hash, password) and user_matches


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user name is wrong, so that both failures take the same time."""
    return generate_password_hash("not the password")
