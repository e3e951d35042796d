"""Instructions per request, counted by callgrind: a cost that does not
depend on the machine's load, for comparing two versions of the library.

Run one request kind ``N`` times and once with ``N = 0``; the difference
over ``N`` is the cost of one request (Flask's test client included)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python benchmarks/instructions.py memory /w 100

Arguments: provider (``memory``, ``redis`` on 127.0.0.1:6379), request
(``/u`` untouched, ``/r`` read-only, ``/w`` write, ``/new`` a new session),
count. ``NOCOOKIE=1`` stops the interface from re-sending the cookie of a
modified session, to isolate that cost. ``SEALED=1`` turns on encryption
at rest (``GOSESSION_ENCRYPTION_KEYS``), to measure what sealing costs.
"""
from __future__ import annotations

import os
import sys

from flask import Flask, session

from flask_gosession import GoSession


def main() -> None:
    prov, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="x", GOSESSION_PROVIDER=prov, GOSESSION_TOKEN_CHECK=False,
        GOSESSION_GC_INTERVAL=0, GOSESSION_REDIS_URL="redis://127.0.0.1:6379/0",
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

    client = app.test_client()
    for warm in ("/w", "/r", "/u"):
        client.get(warm)
    app.test_client().get("/new")
    for _ in range(n):
        (app.test_client() if path == "/new" else client).get(path)


if __name__ == "__main__":
    main()
