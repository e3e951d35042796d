"""The example under a real ``gunicorn -w 4`` on Redis, as example/README.md
runs it: every worker serves the same sessions, and a reuse detected in one
worker is told to the victim by whichever worker serves them next.

Times are real here (four processes share no fake clock), so rotation runs
with a 2-second ``GOSESSION_ROTATE_AFTER`` and a 1-second grace window.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys
import time
import typing as t
import urllib.parse

import pytest

import servers
from examples import ROOT
from liveserver import request

pytest.importorskip("gunicorn")

WORKERS = 4
CLIENTS = 8
ROUNDS = 10
ROTATE_AFTER = 2
GRACE = 1
BANNER = 'id="revoked-banner"'


def _pid(html: str) -> int:
    return int(re.search(r'id="served-by">(\d+)<', html).group(1))


def _count(html: str) -> int:
    return int(re.search(r'id="count">(\d+)<', html).group(1))


def _token(html: str) -> str:
    return re.search(r'name="gosession_token" value="([^"]+)"', html).group(1)


def _control_socket_flag() -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    # Newer gunicorn opens a control socket under ~/.gunicorn unless told not to.
    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


@pytest.fixture
def gunicorn_example(tmp_path, backend_redis: dict[str, t.Any]) -> t.Iterator[int]:
    """``gunicorn -w 4 example.app:app`` on Redis, from the repository root; its port."""
    port = servers.free_port()
    env = {**os.environ, "EXAMPLE_STORE": "redis", "GOSESSION_REDIS_URL": backend_redis["GOSESSION_REDIS_URL"],
           "GOSESSION_KEY_PREFIX": backend_redis["GOSESSION_KEY_PREFIX"], "GOSESSION_GC_INTERVAL": "0",
           "GOSESSION_ROTATE_AFTER": str(ROTATE_AFTER), "GOSESSION_ROTATE_GRACE": str(GRACE)}
    env.pop("GOSESSION_PROVIDER", None)
    argv = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
            *_control_socket_flag(), "example.app:app"]
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if request(port, "/store", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def _visit(port: int, rounds: int) -> tuple[list[int], set[int]]:
    """One browser: ``rounds`` page loads; the counts it saw and who served it."""
    cookie, counts, pids = None, [], set()
    for _ in range(rounds):
        status, body, new = request(port, "/", cookie)
        assert status == 200
        cookie = new or cookie  # a rotation hands over a new id
        counts.append(_count(body))
        pids.add(_pid(body))
    return counts, pids


def test_four_workers_share_every_session(gunicorn_example: int) -> None:
    port = gunicorn_example
    # Which worker accepts is the kernel's choice, and the workers still
    # booting when the first answers take none: batches of browsers run
    # until the work has spread (each batch must lose nothing).
    served: set[int] = set()
    crossed = False  # one browser served by several workers
    deadline = time.monotonic() + 60
    while len(served) < 2 or not crossed:
        assert time.monotonic() < deadline, f"never spread over the workers: {served}"
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda _: _visit(port, ROUNDS), range(CLIENTS)))
        for counts, pids in results:
            assert counts == list(range(1, ROUNDS + 1))  # nothing lost between workers
            served |= pids
            crossed = crossed or len(pids) >= 2

    # A login (a POST with the token) answered by one worker holds in all.
    status, body, cookie = request(port, "/login")
    form = urllib.parse.urlencode({"username": "gopher", "gosession_token": _token(body)}).encode()
    status, _, cookie = request(port, "/login", cookie, "POST", body=form,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 302 and cookie
    for _ in range(ROUNDS):
        status, body, new = request(port, "/", cookie)
        cookie = new or cookie
        assert status == 200 and "Hello, gopher" in body


def test_a_reused_id_is_told_to_both_browsers_under_four_workers(gunicorn_example: int) -> None:
    """The rotation, the detection and the two notices are four requests that
    any workers may serve: the notice board is in Redis, so it holds."""
    port = gunicorn_example
    _, body, victim = request(port, "/")
    stolen = victim
    time.sleep(ROTATE_AFTER + 0.2)
    _, body, rotated = request(port, "/", victim)
    assert rotated and rotated != stolen and _count(body) == 2
    time.sleep(GRACE + 0.2)

    status, thief_page, _ = request(port, "/", stolen)
    assert status == 200 and BANNER in thief_page and _count(thief_page) == 1
    status, victim_page, _ = request(port, "/", rotated)
    assert status == 200 and BANNER in victim_page and _count(victim_page) == 1
