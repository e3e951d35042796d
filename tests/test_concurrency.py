"""Concurrent requests on one session lose nothing, on every provider.

A real threaded WSGI server on loopback takes overlapping requests for the
same session. Each thread owns a counter; a view reads it, holds the
session open, and writes it back. With per-key saves every increment
survives; the same run with whole-session saves loses some.
"""
from __future__ import annotations

import threading
import time

import pytest

from backends import ALL_BACKENDS
from flask_gosession.ids import store_key
from flask_gosession.manager import Manager
from flask_gosession.providers.base import Change
from flask_gosession.serializers import tag
from liveserver import request, serve

THREADS = 6
ROUNDS = 12
HOLD = "0.005"


@pytest.fixture(params=ALL_BACKENDS)
def backend_config(request):
    return request.getfixturevalue(f"backend_{request.param}")


def hammer(port: int, sid: str, threads: int = THREADS, rounds: int = ROUNDS) -> list[str]:
    """Each thread increments its own counter ``rounds`` times."""
    errors: list[str] = []
    start = threading.Barrier(threads)

    def worker(n: int) -> None:
        start.wait(10)
        for _ in range(rounds):
            status, body, _ = request(port, f"/incr/k{n}?hold={HOLD}", sid)
            if status != 200:
                errors.append(f"{status}: {body[:80]}")

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for th in pool:
        th.start()
    deadline = time.monotonic() + 120
    for th in pool:
        th.join(max(0.1, deadline - time.monotonic()))
    assert not any(th.is_alive() for th in pool), "workers did not finish in time"
    return errors


def new_session(port: int) -> str:
    status, _, sid = request(port, "/set/seed/1")
    assert status == 200 and sid
    return sid


def test_no_lost_updates_between_concurrent_requests(app):
    with serve(app) as port:
        sid = new_session(port)
        errors = hammer(port, sid)
        record = app.extensions["gosession"].provider.session_read(store_key(sid), time.time())
    assert errors == []
    assert {k: v for k, v in record.data.items() if k.startswith("k")} == {
        f"k{n}": ROUNDS for n in range(THREADS)
    }
    assert record.data["seed"] == "1"


class WholeSessionManager(Manager):
    """What Flask-Session, Django and scs do: write back every key."""

    def change_for(self, session, sid, now):  # type: ignore[no-untyped-def]
        change = super().change_for(session, sid, now)
        return Change(set={k: tag(v) for k, v in session.snapshot().items()},
                      deleted=change.deleted, meta=change.meta, atime=now)


@pytest.mark.parametrize("backend_config", ["memory"], indirect=True)
def test_whole_session_saving_loses_updates_in_the_same_run(app):
    """The control experiment: same scenario, whole-blob saves."""
    manager = app.extensions["gosession"]
    manager.__class__ = WholeSessionManager
    with serve(app) as port:
        sid = new_session(port)
        assert hammer(port, sid) == []
        record = manager.provider.session_read(store_key(sid), time.time())
    total = sum(v for k, v in record.data.items() if k.startswith("k"))
    assert total < THREADS * ROUNDS, "whole-session saves lost nothing; the scenario is too weak"


def test_logout_racing_writers_leaves_no_session(app):
    provider = app.extensions["gosession"].provider
    with serve(app) as port:
        sid = new_session(port)
        done = threading.Event()
        statuses: list[int] = []

        def writer(n: int) -> None:
            for _ in range(ROUNDS):
                status, _, _ = request(port, f"/incr/w{n}?hold=0.01", sid)
                statuses.append(status)
                if done.is_set():
                    return

        pool = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for th in pool:
            th.start()
        time.sleep(0.05)  # let writers get going (not a timing assertion)
        status, _, _ = request(port, "/logout", sid)
        assert status == 200
        done.set()
        for th in pool:
            th.join(60)
        # Writers that loaded before the logout saved afterwards: none of
        # them may have brought the destroyed session back.
        assert provider.session_read(store_key(sid), time.time()) is None
        assert set(statuses) <= {200}


def test_read_only_is_still_one_round_trip_under_concurrency(app):
    from counting import install

    with serve(app) as port:
        sid = new_session(port)
        counter = install(app)
        for _ in range(5):
            assert request(port, "/get/seed", sid)[0] == 200
    assert counter.calls["session_read"] == 5
    assert counter.calls["session_update"] == counter.calls["session_init"] == 0


def test_rotation_under_concurrency_keeps_every_increment(app, clock):
    """Mid-run the id passes its rotation age: requests still holding the
    old id inside the grace window save into the new session."""
    with serve(app) as port:
        sid = new_session(port)
        cookies = {n: sid for n in range(THREADS)}
        errors: list[str] = []
        start = threading.Barrier(THREADS + 1)

        def worker(n: int) -> None:
            start.wait(10)
            for _ in range(ROUNDS):
                status, body, new = request(port, f"/incr/k{n}?hold={HOLD}", cookies[n])
                if status != 200:
                    errors.append(f"{status}: {body[:80]}")
                if new:
                    cookies[n] = new

        pool = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
        for th in pool:
            th.start()
        start.wait(10)
        time.sleep(0.05)
        clock.advance(901)  # the next request rotates; the rest are in the grace window
        for th in pool:
            th.join(120)
        final = set(cookies.values())
        provider = app.extensions["gosession"].provider
        assert errors == []
        assert len(final) == 1 and sid not in final, final
        record = provider.session_read(store_key(final.pop()), clock())
    assert {k: v for k, v in record.data.items() if k.startswith("k")} == {
        f"k{n}": ROUNDS for n in range(THREADS)
    }
