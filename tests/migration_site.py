"""One small Flask-Login app, deployable on Flask's cookie session, on
Flask-Session 0.8, or on flask-gosession with the import on: the app a
migration test logs into before the switch and checks after it."""
from __future__ import annotations

import datetime as dt
import typing as t
import uuid

from flask import Flask, flash, get_flashed_messages, jsonify, session
from markupsafe import Markup

SECRET = "migration-secret"

#: Typed values the app keeps in its session before the switch.
TYPED = {
    "markup": Markup("<b>bold</b>"),
    "pair": (1, "two"),
    "raw": b"\x00\xffbytes",
    "when": dt.datetime(2026, 11, 30, 12, 30, tzinfo=dt.timezone.utc),
    "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "nested": {"list": [1, 2, {"t": (3,)}]},
}


#: What survives Flask-Session 0.8 (plain msgspec, no tagging: it cannot
#: store ``Markup`` at all, and gives tuples back as lists).
PLAIN = {"cart": [1, 2, 3], "count": 5, "name": "ada", "prefs": {"dark": True}}


def make_site(mode: str, config: dict[str, t.Any] | None = None,
              clock: t.Callable[[], float] | None = None, *, login_manager: bool = True) -> Flask:
    """The app on ``mode``: ``"flask-cookie"``, ``"flask-session"`` (give
    its ``SESSION_*`` config) or ``"gosession"`` (give ``GOSESSION_*``).

    :param login_manager: ``False`` leaves Flask-Login's ``LoginManager``
        out, whose ``after_request`` reads the session on every request;
        then ``/noop`` never touches it (only ``/noop`` is usable).
    """
    import flask_login

    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, TESTING=True)
    app.config.update(config or {})
    if mode == "flask-session":
        from flask_session import Session

        Session(app)
    elif mode == "gosession":
        from flask_gosession import GoSession

        GoSession(app, **({"clock": clock} if clock else {}))
    elif mode != "flask-cookie":
        raise ValueError(mode)

    @app.route("/noop")
    def noop() -> str:
        return "no session here"

    if not login_manager:
        return app
    login = flask_login.LoginManager(app)

    class User(flask_login.UserMixin):
        def __init__(self, uid: str) -> None:
            self.id = uid

    @login.user_loader
    def load(uid: str) -> User:
        return User(uid)

    values = PLAIN if mode == "flask-session" else TYPED
    message = "Welcome back, <em>{}</em>"

    @app.route("/login/<name>", methods=["GET", "POST"])
    def login_view(name: str) -> str:
        flask_login.login_user(User(name))
        session.update(values)
        session.permanent = True
        text = message.format(name)
        flash(text if mode == "flask-session" else Markup(text))
        return f"logged in as {name}"

    @app.route("/home")
    def home() -> t.Any:
        user = flask_login.current_user
        return jsonify(
            user=user.get_id() if user.is_authenticated else None,
            flashes=[str(m) for m in get_flashed_messages()],
            typed=all(session.get(k) == v and type(session.get(k)) is type(v)
                      for k, v in (TYPED if "markup" in session else PLAIN).items()),
            permanent=session.permanent,
        )

    @app.route("/page")
    def page() -> str:
        user = flask_login.current_user
        messages = "".join(f"<li class=flash>{m}</li>" for m in get_flashed_messages())
        who = user.get_id() if user.is_authenticated else "guest"
        return f"<html><body><p id=who>{who}</p><ul>{messages}</ul></body></html>"

    @app.route("/logout", methods=["POST", "GET"])
    def logout() -> str:
        flask_login.logout_user()
        return "bye"

    return app
