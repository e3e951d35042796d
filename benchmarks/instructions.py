"""Instructions per request, counted by callgrind: a cost that does not
depend on the machine's load, for comparing two versions of the library.

Run one request kind ``N`` times and once with ``N = 0``; the difference
over ``N`` is the cost of one request (Flask's test client included)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python benchmarks/instructions.py memory /w 100

Arguments: provider (``memory``, ``redis`` on 127.0.0.1:6379, ``file``,
``sql`` on a throwaway SQLite file), request (``/u`` untouched, ``/r``
read-only, ``/w`` write, ``/new`` a new session; ``/rotate`` a privilege
rotation and ``/bind`` a login (``login_user_session``), each on a fresh
session holding data; ``/ub`` and ``/rb``, untouched and read-only on a
session bound to a user), count. ``NOCOOKIE=1`` stops the interface from
re-sending the cookie of a modified session, to isolate that cost. ``SEALED=1`` turns on encryption
at rest (``GOSESSION_ENCRYPTION_KEYS``), to measure what sealing costs.

``/rotate`` and ``/bind`` change the id, so each request needs its own
session: :data:`SEEDED` sessions are created before the loop whatever the
count (so that the difference over ``N`` holds none of their cost), and
the count may not exceed it.
"""
from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile

from flask import Flask, session

from flask_gosession import GoSession, login_user_session, regenerate

#: Sessions created for ``/rotate`` and ``/bind`` before the loop.
SEEDED = 200
#: The requests on the bound session, and the views they call.
BOUND = {"/rb": "/r", "/ub": "/u"}


def main() -> None:
    prov, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if path in ("/rotate", "/bind") and n > SEEDED:
        raise SystemExit(f"{path}: at most {SEEDED} requests")
    scratch = tempfile.mkdtemp(prefix="gosession-instructions-")
    app = Flask(__name__, instance_path=scratch)
    app.config.update(
        SECRET_KEY="x", GOSESSION_PROVIDER=prov, GOSESSION_TOKEN_CHECK=False,
        GOSESSION_GC_INTERVAL=0, GOSESSION_REDIS_URL="redis://127.0.0.1:6379/0",
        GOSESSION_KEY_PREFIX=f"instructions-{os.getpid()}:",
    )
    if os.environ.get("SEALED"):
        app.config["GOSESSION_ENCRYPTION_KEYS"] = ["bench:" + "A" * 43]
    GoSession(app)
    if os.environ.get("NOCOOKIE"):
        type(app.session_interface).should_set_cookie = lambda self, a, s: False  # type: ignore[method-assign]

    @app.get("/u")
    def untouched() -> str:
        return "u"

    @app.get("/r")
    def read() -> str:
        return str(session.get("n"))

    @app.get("/w")
    def write() -> str:
        session["n"] = session.get("n", 0) + 1
        return "w"

    @app.get("/new")
    def new() -> str:
        session["a"] = 1
        return "n"

    logins = itertools.count()

    @app.get("/rotate")
    def rotate() -> str:
        regenerate()
        return "o"

    @app.get("/bind")
    def bind() -> str:
        login_user_session(f"user-{next(logins)}")
        return "b"

    client = app.test_client()
    for warm in ("/w", "/r", "/u"):
        client.get(warm)
    app.test_client().get("/new")
    bound = app.test_client()
    for warm in ("/w", "/bind", "/r", "/u"):
        bound.get(warm)
    seeded = []
    if path in ("/rotate", "/bind"):
        warm_client = app.test_client()
        warm_client.get("/w")
        warm_client.get(path)
        for _ in range(SEEDED):
            seeded.append(app.test_client())
            seeded[-1].get("/w")
    for i in range(n):
        if path == "/new":
            app.test_client().get(path)
        elif path in ("/rotate", "/bind"):
            seeded[i].get(path)
        elif path in BOUND:
            bound.get(BOUND[path])
        else:
            client.get(path)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
