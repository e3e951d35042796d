"""The idle timeout slides with reads alone, on every store.

Stores whose read cannot refresh the access time (SQL, Redis, Memcached:
``touches_on_read`` is false) rely on the manager's touch, sent at most
once per ``GOSESSION_REFRESH_INTERVAL``. Rotation by age is off here, so
that no rotation (a write) refreshes the session behind the touch's back.
"""
from __future__ import annotations

import typing as t

import pytest

from backends import ALL_BACKENDS
from helpers import cookie_value, stored


@pytest.fixture(params=ALL_BACKENDS)
def backend_config(request: pytest.FixtureRequest) -> dict[str, t.Any]:
    return request.getfixturevalue(f"backend_{request.param}")


@pytest.fixture
def app_config() -> dict[str, t.Any]:
    return {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
            "GOSESSION_ROTATE_AFTER": None, "GOSESSION_MAX_LIFETIME": 3600,
            "GOSESSION_REFRESH_INTERVAL": 60}


def test_a_session_that_is_only_read_stays_alive(client, app, clock):
    client.get("/set/a/1")
    sid = cookie_value(client)
    for _ in range(5):
        clock.advance(3000)  # each gap < 3600, the total far beyond it
        assert client.get("/get/a").json["value"] == "1"
    assert cookie_value(client) == sid
    assert stored(app, sid).atime == clock()
    clock.advance(3600)
    assert client.get("/get/a").json["value"] is None


def test_reads_touch_at_most_once_per_refresh_interval(client, app, clock):
    if app.extensions["gosession"].provider.touches_on_read:
        pytest.skip("this store refreshes the access time within every read")
    client.get("/set/a/1")
    sid = cookie_value(client)
    written = stored(app, sid).atime
    clock.advance(30)
    assert client.get("/get/a").json["value"] == "1"
    assert stored(app, sid).atime == written  # within the interval: no write
    clock.advance(31)  # 61 s after the write
    assert client.get("/get/a").json["value"] == "1"
    assert stored(app, sid).atime == clock()
