"""The four scenarios: the same views in every contender's app, and the
WSGI environs that drive them.

``untouched``
    a view that never reads the session, with a session cookie present;
``read``
    a view that reads one key of an existing session;
``write``
    a view that changes one key of an existing session (a visit counter:
    ``session["n"] = session.get("n", 0) + 1``, returned as the body), on
    ``GET`` so that no contender needs a form token;
``new``
    the first visit: no cookie, and the view stores a small session
    (``user`` and ``n``), which creates it.

The bare-Flask contender has the same routes but its views never use the
session: it is the ceiling, what the request costs without sessions.
"""
from __future__ import annotations

import secrets
import typing as t

from flask import Flask, session
from werkzeug.test import EnvironBuilder

SCENARIOS = ("untouched", "read", "write", "new")

#: What the ``new`` view stores: a small session.
NEW_SESSION = {"user": "user-0042", "n": 0}


def add_views(app: Flask, *, uses_session: bool) -> None:
    """Register the scenario views on ``app``."""

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    if uses_session:

        @app.get("/read")
        def read() -> str:
            return str(session.get("user", ""))

        @app.get("/write")
        def write() -> str:
            session["n"] = session.get("n", 0) + 1
            return str(session["n"])

        @app.get("/new")
        def new() -> str:
            session.update(NEW_SESSION)
            return "ok"

    else:

        @app.get("/read")
        def read() -> str:
            return NEW_SESSION["user"]

        @app.get("/write")
        def write() -> str:
            return "ok"

        @app.get("/new")
        def new() -> str:
            return "ok"


def environ(path: str, cookie: str | None) -> dict[str, t.Any]:
    """A prepared WSGI environ for ``GET path`` with an optional Cookie header."""
    headers = {"Cookie": cookie} if cookie else {}
    builder = EnvironBuilder(path=path, headers=headers, base_url="http://127.0.0.1/")
    try:
        return builder.get_environ()
    finally:
        builder.close()


class _Response:
    status = ""
    headers: t.ClassVar[list[tuple[str, str]]] = []
    body = b""


def call(app: t.Callable[..., t.Any], env: dict[str, t.Any]) -> _Response:
    """Run one request through the WSGI app; return status and headers."""
    response = _Response()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> None:
        response.status = status
        response.headers = headers

    body = app(dict(env), start_response)
    try:
        response.body = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return response


def cookie_from(headers: t.Iterable[tuple[str, str]]) -> str | None:
    """The ``name=value`` of the first Set-Cookie header, if any."""
    for name, value in headers:
        if name.lower() == "set-cookie":
            return value.split(";", 1)[0]
    return None


def dummy_cookie() -> str:
    """A cookie for contenders that set none (bare Flask), so that every
    contender's untouched request carries one."""
    return f"session={secrets.token_urlsafe(32)}"


def seed(app: t.Callable[..., t.Any]) -> str:
    """Create a session by a first visit (``/new``) and return its cookie.

    :raises RuntimeError: if the visit fails.
    """
    response = call(app, environ("/new", None))
    if not response.status.startswith("200"):
        raise RuntimeError(f"seeding a session failed: {response.status}")
    return cookie_from(response.headers) or dummy_cookie()


def check(app: t.Callable[..., t.Any]) -> str | None:
    """Check that a session-using contender really keeps its session.

    A contender that silently dropped the session (say, a store reply it
    cannot decode read as "no session") would look fast and measure
    nothing; the harness refuses to time it. Seeds a session, then expects
    ``/read`` to return the stored user and two ``/write`` requests (each
    sending the cookie the previous response set, if any) to count 1 and 2.

    :returns: what went wrong, or None.
    """
    env = environ("/read", seed(app))
    got = call(app, env).body.decode()
    if got != NEW_SESSION["user"]:
        return f"/read returned {got!r}, not the stored {NEW_SESSION['user']!r}"
    env["PATH_INFO"] = "/write"
    counts = []
    for _ in range(2):
        response = call(app, env)
        counts.append(response.body.decode())
        cookie = cookie_from(response.headers)
        if cookie is not None:  # the signed-cookie session travels in it
            env["HTTP_COOKIE"] = cookie
    if counts != ["1", "2"]:
        return f"two /write requests returned {counts}, not ['1', '2']"
    return None
