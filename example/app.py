"""The flask-gosession demo: the Go book's login-and-count app, showing what
the library does as it does it.

- every page names the store in use (``EXAMPLE_STORE``: memory, file,
  sqlite, redis or memcached) and who shares it;
- the home page shows the session's public label (a prefix of the SHA-256
  of its id, never the id), its age, the age of its current id and a
  countdown to the next rotation (``GOSESSION_ROTATE_AFTER``), the current
  request token, and two forms, one without the token, to see the check;
- "Your devices" lists the signed-in user's sessions, each with a sign-out
  button, and "sign out everywhere else";
- a session revoked because one of its old ids came back (a copied cookie)
  says so, on the next page, in the browser that presented the old id and
  in the one that held the newest (:mod:`example.revocation`).

Run it from the repository root (see ``example/README.md`` for every store
and for gunicorn)::

    python3 -m venv .venv && .venv/bin/python -m pip install -q -e '.[all]' \
        && .venv/bin/flask --app example/app.py run
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import typing as t

from flask import Flask, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from example import revocation, stores
from flask_gosession import (
    GoSession,
    SessionLimitReached,
    TokenError,
    UserIndexUnsupported,
    destroy,
    gosession_token,
    login_user_session,
    revoke_session,
    revoke_user,
    session_info,
    sessions_of,
)

if t.TYPE_CHECKING:
    from flask_gosession.session import ServerSession

gosession = GoSession()

#: The longest user name the login form accepts.
MAX_NAME = 64
#: The longest note the demo form accepts.
MAX_NOTE = 200
#: Shown to the browser whose session was revoked after an old id came back.
REVOKED = ("Your session was revoked because an old id was reused: a copy of your session cookie "
           "came back after the id had been rotated out, so someone else may have had it. "
           "Please log in again.")


def current() -> ServerSession:
    """``flask.session`` as what it is: Flask types it as ``SessionMixin``."""
    return t.cast("ServerSession", session)


def signed_in_user() -> str | None:
    """The user this session is bound to (``session.user_id``), or ``None``."""
    return current().user_id


@dataclasses.dataclass(frozen=True)
class SessionFacts:
    """What the home page says about the session, in seconds and labels."""

    #: Public label of the id this response leaves the browser holding.
    label: str
    #: Since the session was created.
    age: float
    #: Since its current id was issued.
    id_age: float
    #: Until the next rotation by age (``None``: rotation is off).
    rotates_in: float | None
    #: Whether this very request moved the session to a new id.
    rotating: bool


def session_facts(app: Flask) -> SessionFacts:
    """The session's label, ages and countdown, as the response leaves them
    (:func:`flask_gosession.session_info`, in seconds for the page).

    A rotation planned by this request already counts: the label is the
    new id's, and its age starts now.
    """
    info = session_info()
    now = app.extensions["gosession"].clock()

    def seconds_until(moment: dt.datetime) -> float:
        return round(moment.timestamp() - now, 3)  # datetimes keep microseconds

    return SessionFacts(
        label=info.label,
        age=max(0.0, -seconds_until(info.created_at)),
        id_age=max(0.0, -seconds_until(info.issued_at)),
        rotates_in=None if info.rotates_at is None else max(0.0, seconds_until(info.rotates_at)),
        rotating=info.rotating,
    )


def duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def create_app(config: t.Mapping[str, t.Any] | None = None) -> Flask:
    """Application factory. ``config`` overrides the environment.

    Under gunicorn: ``gunicorn -w 4 'example.app:create_app()'``.
    """
    app = Flask(__name__, root_path=os.path.dirname(os.path.abspath(__file__)))
    app.config.update(
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-secret"),  # for nothing but flash's Flask API
        SESSION_COOKIE_SAMESITE="Lax",
        **stores.environment_config(),
    )
    app.config.update(config or {})
    gosession.init_app(app)
    board = revocation.install(app)
    store = stores.describe(app)
    app.jinja_env.filters["duration"] = duration

    @app.context_processor
    def everywhere() -> dict[str, t.Any]:
        # The process id shows which gunicorn worker answered: with a shared
        # store, any of them serves the same session.
        return {"store": store, "user": signed_in_user(), "pid": os.getpid()}

    @app.before_request
    def tell_a_revoked_session() -> None:
        """Load the session first, so a reuse found now is flagged in ``g``,
        and say so in the fresh session that replaces a revoked one."""
        if request.endpoint == "static":
            return
        refused = session_info().refused_label
        if g.get("gosession_reuse") or (refused is not None and board.take(refused)):
            flash(REVOKED, "revoked")

    @app.get("/")
    def index() -> str:
        # The Go chapter's counter: one more on every page load.
        session["countnum"] = session.get("countnum", 0) + 1
        token = gosession_token()
        return render_template("index.html", count=session["countnum"], facts=session_facts(app),
                               token=token, max_note=MAX_NOTE)

    @app.post("/demo/form")
    def demo_form() -> t.Any:
        # Reached only with the right token: the check runs before any view.
        note = request.form.get("note", "").strip()[:MAX_NOTE]
        flash(f"Form accepted: it carried this session's token. You wrote: {note or '(nothing)'}", "ok")
        return redirect(url_for("index"))

    @app.get("/login")
    def login_form() -> str:
        return render_template("login.html")

    @app.post("/login")
    def login() -> t.Any:
        username = request.form.get("username", "").strip()
        if not 0 < len(username) <= MAX_NAME:
            flash(f"Please enter a user name (at most {MAX_NAME} characters).", "error")
            return redirect(url_for("login_form"))
        try:
            # Binds the session to the user, with a new id: a planted id
            # never becomes a logged-in one.
            login_user_session(username)
        except SessionLimitReached as err:  # GOSESSION_SESSION_LIMIT_POLICY=refuse
            flash(err.message, "error")
            return redirect(url_for("login_form"))
        session.permanent = bool(request.form.get("remember"))
        flash(f"Welcome, {username}!", "ok")
        return redirect(url_for("index"))

    @app.post("/logout")
    def logout() -> t.Any:
        destroy()
        flash("You are logged out.", "ok")
        return redirect(url_for("index"))

    @app.get("/devices")
    def devices() -> t.Any:
        user = signed_in_user()
        if user is None:
            flash("Log in to see your devices.", "error")
            return redirect(url_for("login_form"))
        return render_template("devices.html", devices=sessions_of(user))

    @app.post("/devices/<handle>/sign-out")
    def sign_out_device(handle: str) -> t.Any:
        # This device's own button posts to /logout instead (see devices.html).
        user = signed_in_user()
        if user is not None:
            signed_out = revoke_session(user, handle)
            flash("That device is signed out." if signed_out else "That device was already signed out.", "ok")
        return redirect(url_for("devices"))

    @app.post("/devices/sign-out-others")
    def sign_out_others() -> t.Any:
        user = signed_in_user()
        if user is not None:
            count = revoke_user(user, keep_current=True)
            flash(f"Signed out {count} other device{'' if count == 1 else 's'}.", "ok")
        return redirect(url_for("devices"))

    @app.get("/store")
    def store_page() -> str:
        return render_template("store.html", stores=stores.STORES)

    @app.errorhandler(UserIndexUnsupported)
    def no_device_list(err: UserIndexUnsupported) -> tuple[str, int]:
        return render_template("devices.html", devices=None), 501  # memcached keeps no index

    @app.errorhandler(TokenError)
    def token_refused(err: TokenError) -> tuple[str, int]:
        # The library has already dropped this request's session changes.
        return render_template("token_error.html", error=err), err.code or 400

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> t.Any:
        if err.code is None or err.code < 400:
            return err
        return render_template("error.html", error=err), err.code

    return app


app = create_app()
