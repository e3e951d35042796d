"""An outside review of users and their devices (issue 13), over real HTTP
on a threaded server and real stores: interleavings that could let a bound
session escape its user's index (and so survive a revocation), hostile
input, and a tampered index.

Each race is made deterministic with the views' ``hold`` parameter: a
re-login (``/bind/<user>?hold=``) writes the user's index during its view
and then holds, so a second request is certain to run entirely between the
index write and the record's creation.
"""
from __future__ import annotations

import json
import threading
import time
import typing as t

import pytest

from flask_gosession import revoke_user, sessions_of
from flask_gosession.ids import store_key
from flask_gosession.userindex import user_key
from liveserver import request, serve

RACED = ["memory", "redis", "redis_cluster", "sql_postgresql"]
ROTATE_AFTER = 900
LIFETIME = 3600


@pytest.fixture(params=RACED)
def backend_config(request):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{request.param}")


def bound_user(port: int, cookie: str | None) -> t.Any:
    status, body, _ = request(port, "/whoami", cookie)
    assert status == 200, body
    return json.loads(body)["user"]


def index_keys(app: t.Any, user: str) -> set[str]:
    manager = app.extensions["gosession"]
    return {e.key for e in manager.provider.index_read(user_key(user), manager.clock())}


def in_background(call: t.Callable[[], t.Any]) -> tuple[threading.Thread, list[t.Any]]:
    done: list[t.Any] = []
    thread = threading.Thread(target=lambda: done.append(call()))
    thread.start()
    return thread, done


# -- a re-login whose index entry a concurrent request drops --------------------------


def test_a_relogin_racing_an_age_rotation_stays_in_the_index(app, clock):
    """A re-login (same user, same device) adds its new key N to the index,
    keeping the id O it leaves; while it holds, a plain request on O rotates
    it by age to N2, and its index write (adding N2, keeping O) drops N as
    "another key of the same handle". The re-login then finds O forwarded,
    follows to N2 and moves N2 to N: N is live and bound, but not in the
    index, so ``revoke_user`` misses it."""
    with serve(app) as port:
        old = request(port, "/bind/alice")[2]
        clock.advance(ROTATE_AFTER + 1)  # the next request on it rotates by age
        relogin, done = in_background(lambda: request(port, "/bind/alice?hold=0.5", old))
        time.sleep(0.2)  # the re-login has written the index and holds
        aged = request(port, "/get/user", old)
        assert aged[0] == 200
        relogin.join(30)
        revoked_with_the_relogin(app, port, done, old, aged[2])


def revoked_with_the_relogin(app: t.Any, port: int, done: list[t.Any], *others: str | None) -> None:
    """The held re-login in ``done`` ended bound to alice with its new key in
    her index, and ``revoke_user`` then leaves no id working (``others``:
    the ids that raced it)."""
    status, _, new = done[0]
    assert status == 200 and new
    assert bound_user(port, new) == "alice"
    listed = store_key(new) in index_keys(app, "alice")
    with app.app_context():
        revoke_user("alice")
        assert sessions_of("alice") == []
    for sid in (*others, new):
        if sid:
            assert bound_user(port, sid) is None, sid
    assert listed


@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                                         "GOSESSION_ROTATE_AFTER": None,
                                         "GOSESSION_ABSOLUTE_LIFETIME": None}])
def test_a_relogin_racing_a_horizon_refresh_stays_in_the_index(app, clock):
    """Without age rotation, a session used for over a lifetime has its
    horizon refreshed by the first request that loads it. That refresh is
    an index write adding the session's own key with no key kept, which
    drops every other key of its handle: the new key of a re-login holding
    in its view. The re-login then creates that key's record, outside the
    index."""
    with serve(app) as port:
        old = request(port, "/bind/alice")[2]
        clock.advance(0.6 * LIFETIME)  # used every 0.6 lifetimes: alive ...
        assert bound_user(port, old) == "alice"
        clock.advance(0.6 * LIFETIME)  # ... and now 1.8 lifetimes from its horizon: due
        relogin, done = in_background(lambda: request(port, "/bind/alice?hold=0.5", old))
        time.sleep(0.2)
        assert bound_user(port, old) == "alice"  # refreshes the horizon of O
        relogin.join(30)
        revoked_with_the_relogin(app, port, done, old)


# -- the per-user limit ----------------------------------------------------------------


@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                                         "GOSESSION_MAX_SESSIONS_PER_USER": 2}])
def test_evict_never_signs_out_a_live_device_to_make_room_an_expired_one_takes(app, clock):
    """Limit 2, evict: the phone (oldest, in use) and a laptop session that
    has idle-expired but whose entry is still within its horizon. A new
    login must find room by dropping the expired laptop, not by evicting
    the phone ("expired sessions never count", as with "refuse")."""
    with serve(app) as port:
        phone = request(port, "/bind/alice")[2]
        clock.advance(1)
        laptop = request(port, "/bind/alice")[2]
        clock.advance(LIFETIME / 2)
        status, body, rotated = request(port, "/whoami", phone)  # the phone is in use
        assert json.loads(body)["user"] == "alice"
        phone = rotated or phone  # (rotated by age)
        clock.advance(LIFETIME / 2 + 10)  # the laptop has idle-expired
        status, _, desktop = request(port, "/bind/alice")
        assert status == 200
        assert bound_user(port, desktop) == "alice"
        assert bound_user(port, laptop) is None
        assert bound_user(port, phone) == "alice"
        with app.app_context():
            assert len(sessions_of("alice")) == 2


@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                                         "GOSESSION_MAX_SESSIONS_PER_USER": 2}])
def test_a_double_submitted_login_does_not_evict_another_device(app, clock):
    """Limit 2: the user is signed in on a phone, then submits the login
    form twice from a laptop (one browser session). Only two sessions can
    ever exist (phone, laptop), yet the second submission counts the
    first's pending entry as a third device and evicts the phone."""
    with serve(app) as port:
        phone = request(port, "/bind/alice")[2]
        clock.advance(1)  # the phone is the oldest device
        laptop = request(port, "/set/cart/1")[2]
        first, done = in_background(lambda: request(port, "/bind/alice?hold=0.5", laptop))
        time.sleep(0.15)
        second = request(port, "/bind/alice?hold=0.1", laptop)
        first.join(30)
        winners = [c for c in (done[0][2], second[2]) if c and bound_user(port, c) == "alice"]
        assert len(winners) == 1
        assert bound_user(port, phone) == "alice"  # fails: evicted
