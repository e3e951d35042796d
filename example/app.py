"""The Go book's login-and-count demo, on flask-gosession, with a
"Your devices" page: the signed-in user's sessions, each with a sign-out
button, and "sign out everywhere else".

Run it (from the repository root)::

    python3 -m venv .venv && .venv/bin/python -m pip install -q -e '.[all]' \
        && .venv/bin/flask --app example/app.py run

Pick a store with environment variables, for example
``GOSESSION_PROVIDER=redis`` or ``GOSESSION_PROVIDER=file``. The devices
page needs a store that keeps a per-user index (every store but memcached).
"""
from __future__ import annotations

import os
import typing as t

from flask import Flask, flash, redirect, render_template, request, session, url_for

from flask_gosession import (
    GoSession,
    SessionLimitReached,
    UserIndexUnsupported,
    destroy,
    login_user_session,
    revoke_session,
    revoke_user,
    sessions_of,
)

if t.TYPE_CHECKING:
    from flask_gosession.session import ServerSession

gosession = GoSession()

#: The longest user name the login form accepts.
MAX_NAME = 64


def signed_in_user() -> str | None:
    """The user this session is bound to (``session.user_id``), or ``None``.

    A function only because ``flask.session`` is typed as Flask's
    ``SessionMixin``, which has no ``user_id``.
    """
    return t.cast("ServerSession", session).user_id


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Application factory. ``config`` overrides the environment."""
    app = Flask(__name__, root_path=os.path.dirname(os.path.abspath(__file__)))
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-secret"),  # for nothing but flash's Flask API
        SESSION_COOKIE_SAMESITE="Lax",
        GOSESSION_PROVIDER=os.environ.get("GOSESSION_PROVIDER", "memory"),
    )
    for key, value in os.environ.items():
        if key.startswith("GOSESSION_") and key != "GOSESSION_PROVIDER":
            app.config[key] = value  # "3600", "true", "none": init_app parses them
    app.config.update(config or {})
    gosession.init_app(app)

    @app.get("/")
    def index() -> str:
        # The Go chapter's counter: one more on every page load.
        session["countnum"] = session.get("countnum", 0) + 1
        return render_template("index.html", user=signed_in_user(), count=session["countnum"])

    @app.get("/login")
    def login_form() -> str:
        return render_template("login.html")

    @app.post("/login")
    def login() -> t.Any:
        username = request.form.get("username", "").strip()
        if not 0 < len(username) <= MAX_NAME:
            flash(f"Please enter a user name (at most {MAX_NAME} characters).")
            return redirect(url_for("login_form"))
        try:
            # Binds the session to the user, with a new id: a planted id
            # never becomes a logged-in one.
            login_user_session(username)
        except SessionLimitReached as err:  # GOSESSION_SESSION_LIMIT_POLICY=refuse
            flash(err.message)
            return redirect(url_for("login_form"))
        session.permanent = bool(request.form.get("remember"))
        flash(f"Welcome, {username}!")
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> t.Any:
        destroy()
        flash("You are logged out.")
        return redirect(url_for("index"))

    @app.get("/devices")
    def devices() -> t.Any:
        user = signed_in_user()
        if user is None:
            flash("Log in to see your devices.")
            return redirect(url_for("login_form"))
        return render_template("devices.html", devices=sessions_of(user))

    @app.post("/devices/<handle>/sign-out")
    def sign_out_device(handle: str) -> t.Any:
        # This device's own button posts to /logout instead (see devices.html).
        user = signed_in_user()
        if user is not None:
            signed_out = revoke_session(user, handle)
            flash("That device is signed out." if signed_out else "That device was already signed out.")
        return redirect(url_for("devices"))

    @app.post("/devices/sign-out-others")
    def sign_out_others() -> t.Any:
        user = signed_in_user()
        if user is not None:
            count = revoke_user(user, keep_current=True)
            flash(f"Signed out {count} other device{'' if count == 1 else 's'}.")
        return redirect(url_for("devices"))

    @app.errorhandler(UserIndexUnsupported)
    def no_device_list(err: UserIndexUnsupported) -> tuple[str, int]:
        return render_template("devices.html", devices=None), 501  # memcached keeps no index

    return app


app = create_app()
