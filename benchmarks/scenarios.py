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

flask-gosession contenders also run the :data:`USER_SCENARIOS` of issue 13
(users and their devices), each on a session that holds the ``new``
scenario's data:

``rotate``
    a privilege rotation (``regenerate()``), what a login costs without
    binding: the comparison for ``bind``;
``bind``
    a login: ``login_user_session(user)`` (a rotation plus the index
    write), a different user each time, so that no index grows during a
    run;
``read-bound``, ``untouched-bound``
    the ``read`` and ``untouched`` views on a session bound to a user.

``rotate`` and ``bind`` change the id, so each of their requests gets a
fresh session (:data:`ONE_SHOT`).
"""
from __future__ import annotations

import itertools
import secrets
import typing as t

from flask import Flask, session
from werkzeug.test import EnvironBuilder

SCENARIOS = ("untouched", "read", "write", "new")
#: flask-gosession only (see the module docs).
USER_SCENARIOS = ("rotate", "bind", "read-bound", "untouched-bound")
ALL_SCENARIOS = SCENARIOS + USER_SCENARIOS
#: The user scenarios that need a store with a per-user index.
INDEXED = frozenset({"bind", "read-bound", "untouched-bound"})
#: Scenarios whose request changes the session id: one fresh session each.
ONE_SHOT = frozenset({"rotate", "bind"})
#: Scenarios run on a session bound to a user.
BOUND = frozenset({"read-bound", "untouched-bound"})
#: The view each scenario requests.
PATHS = {**{s: f"/{s}" for s in SCENARIOS}, "rotate": "/rotate", "bind": "/bind",
         "read-bound": "/read", "untouched-bound": "/untouched"}
#: What each user scenario is compared with, besides the unbound read.
COUNTERPART = {"rotate": "read", "bind": "rotate", "read-bound": "read",
               "untouched-bound": "untouched"}

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


def add_user_views(app: Flask) -> None:
    """Register the ``rotate`` and ``bind`` views (flask-gosession apps only)."""
    from flask_gosession import login_user_session, regenerate

    logins = itertools.count()

    @app.get("/rotate")
    def rotate() -> str:
        regenerate()
        return "ok"

    @app.get("/bind")
    def bind() -> str:
        login_user_session(f"bench-user-{next(logins)}")
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


def seed_bound(app: t.Callable[..., t.Any]) -> str:
    """Create a session, bind it to a user (``/bind``) and return its cookie.

    :raises RuntimeError: if a visit fails or the login sets no cookie.
    """
    response = call(app, environ("/bind", seed(app)))
    cookie = cookie_from(response.headers)
    if not response.status.startswith("200") or cookie is None:
        raise RuntimeError(f"binding a session failed: {response.status}")
    return cookie


def check_users(app: t.Callable[..., t.Any], *, indexed: bool) -> str | None:
    """Check that ``rotate`` and, on a store with a per-user index,
    ``bind`` keep the session's data under a new id, so that their timings
    measure what they claim.

    :returns: what went wrong, or None.
    """
    names = ("rotate", "bind") if indexed else ("rotate",)
    for name in names:
        before = seed(app)
        response = call(app, environ(PATHS[name], before))
        after = cookie_from(response.headers)
        if not response.status.startswith("200") or after is None or after == before:
            return f"/{name} answered {response.status} without a new session id"
        got = call(app, environ("/read", after)).body.decode()
        if got != NEW_SESSION["user"]:
            return f"/read after /{name} returned {got!r}, not the stored {NEW_SESSION['user']!r}"
    return None


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
