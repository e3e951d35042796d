"""Helpers for the reliability suites: many clients against a real server.

Every loop here is bounded in count and in time, and every request carries
a client-side timeout, so a hung server fails a test instead of hanging it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import typing as t
from dataclasses import dataclass

from liveserver import request


@dataclass
class Sample:
    """One request as a client saw it."""

    client: int
    path: str
    started: float
    ended: float
    status: int
    body: str
    new_cookie: str | None
    #: the session cookie the request carried
    cookie: str | None = None

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    def json(self) -> t.Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def timed(client: int, port: int, path: str, cookie: str | None, timeout: float = 20) -> Sample:
    """One request; a connection error or client timeout is status 0."""
    started = time.monotonic()
    try:
        status, body, new = request(port, path, cookie, timeout=timeout)
    except OSError as err:  # refused, reset, timed out: never expected
        status, body, new = 0, f"{type(err).__name__}: {err}", None
    return Sample(client, path, started, time.monotonic(), status, body, new, cookie)


def run_threads(count: int, target: t.Callable[[int], None], limit: float) -> None:
    """Run ``target(n)`` in ``count`` threads started together; wait at most
    ``limit`` seconds for all of them, and fail if one is still running or
    raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def wrapper(n: int) -> None:
        try:
            barrier.wait(30)
            target(n)
        except BaseException as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=wrapper, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + limit
    for thread in threads:
        thread.join(max(0.1, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} client threads still running after {limit}s"
    if errors:
        raise errors[0]


def report(capsys: t.Any, line: str) -> None:
    """Print a result line to the terminal even without ``-s``."""
    with capsys.disabled():
        print(f"\n{line}", flush=True)


@contextlib.contextmanager
def quiet_server_log() -> t.Iterator[None]:
    """Silence the dev server's one-line-per-request log (thousands here)."""
    logger = logging.getLogger("werkzeug")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
