"""The Go book's login-and-count demo, on flask-gosession.

Run it (from the repository root)::

    python3 -m venv .venv && .venv/bin/python -m pip install -q -e '.[all]' \
        && .venv/bin/flask --app example/app.py run

Pick a store with environment variables, for example
``GOSESSION_PROVIDER=redis`` or ``GOSESSION_PROVIDER=file``.
"""
from __future__ import annotations

import os
import typing as t

from flask import Flask, flash, redirect, render_template, request, session, url_for

from flask_gosession import GoSession, destroy, rotate_sid

gosession = GoSession()


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
        return render_template("index.html", user=session.get("username"),
                               count=session["countnum"])

    @app.get("/login")
    def login_form() -> str:
        return render_template("login.html")

    @app.post("/login")
    @rotate_sid  # a new id at login: a planted id never becomes a logged-in one
    def login() -> t.Any:
        username = request.form.get("username", "").strip()
        if not username:
            flash("Please enter a user name.")
            return redirect(url_for("login_form"))
        session["username"] = username
        session.permanent = bool(request.form.get("remember"))
        flash(f"Welcome, {username}!")
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> t.Any:
        destroy()
        flash("You are logged out.")
        return redirect(url_for("index"))

    return app


app = create_app()
