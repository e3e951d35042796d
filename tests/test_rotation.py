"""Rotation by age with a grace window, reuse detection, and on-demand
rotation (``@rotate_sid``, ``regenerate()``) and ``destroy()``."""
from __future__ import annotations

import re

import pytest

from flask_gosession.ids import store_key
from helpers import cookie_value, moved_away, set_cookies, stored
from signals_capture import captured, named


def token_of(client) -> str:
    return re.search(r'value="([^"]+)"', client.get("/token").text).group(1)


def test_rotation_by_age_keeps_data_and_changes_id(client, app, clock):
    client.get("/set/user/alice")
    first = cookie_value(client)
    token_before = token_of(client)
    clock.advance(899)
    client.get("/get/user")
    assert cookie_value(client) == first
    clock.advance(2)
    with captured() as seen:
        response = client.get("/get/user")
    assert response.json["value"] == "alice"
    second = cookie_value(client)
    assert second != first and any(c.startswith(f"gosessionid={second}") for c in set_cookies(response))
    assert stored(app, second).data == {"user": "alice"}
    assert token_of(client) == token_before  # kept: open forms still submit
    rotated = named(seen, "session_rotated")
    assert rotated == [{"old": store_key(first)[:12], "new": store_key(second)[:12], "reason": "age"}]


@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                                         "GOSESSION_ROTATE_AFTER": None}])
def test_rotation_by_age_can_be_disabled(client, clock):
    client.get("/set/a/1")
    first = cookie_value(client)
    for _ in range(10):
        clock.advance(3000)
        client.get("/get/a")
    assert cookie_value(client) == first


def test_grace_window_in_flight_request_follows_to_new_id(client, app, clock):
    client.get("/set/a/1")
    old = cookie_value(client)
    clock.advance(901)
    client.get("/get/a")  # rotates
    new = cookie_value(client)
    straggler = app.test_client()
    straggler.set_cookie("gosessionid", old)
    clock.advance(10)  # inside the 30 s grace window
    assert straggler.get("/get/a").json["value"] == "1"
    assert cookie_value(straggler) == new  # handed the new cookie
    straggler.set_cookie("gosessionid", old)
    straggler.get("/set/b/2")  # its change lands in the new session
    assert stored(app, new).data == {"a": "1", "b": "2"}
    assert client.get("/get/b").json["value"] == "2"


def test_change_of_request_that_loaded_before_rotation_is_not_lost(client, app, clock):
    """A request that read the session before another request rotated it
    saves into the new session (the store forwards its update)."""
    client.get("/set/a/1")
    old = cookie_value(client)
    clock.advance(100)
    slow = app.session_interface.open_session(app, _request(app, old))
    with app.test_request_context():
        slow.ensure_loaded()  # this request started before the rotation
    clock.advance(801)
    client.get("/get/a")  # another request rotates the id
    new = cookie_value(client)
    assert new != old
    slow["late"] = "kept"
    response = app.response_class("x")
    with app.test_request_context():
        app.session_interface.save_session(app, slow, response)
    assert any(c.startswith(f"gosessionid={new}") for c in set_cookies(response))
    assert stored(app, new).data == {"a": "1", "late": "kept"}


def _request(app, sid):
    from werkzeug.test import EnvironBuilder

    env = EnvironBuilder(path="/", headers={"Cookie": f"gosessionid={sid}"}).get_environ()
    return app.request_class(env)


@pytest.mark.parametrize("revoke", [True, False])
def test_chapter_hijack_scenario(app, clock, revoke):
    """Section 6.4: a second browser copies the cookie."""
    app.extensions["gosession"].settings = _with(app, revoke_on_reuse=revoke)
    victim, thief = app.test_client(), app.test_client()
    victim.get("/set/user/alice")
    thief.set_cookie("gosessionid", cookie_value(victim))
    assert thief.get("/get/user").json["value"] == "alice"  # copy works before rotation
    stolen = cookie_value(victim)
    clock.advance(901)
    victim.get("/get/user")  # victim's browser rotates
    clock.advance(31)  # grace is over
    thief.set_cookie("gosessionid", stolen)
    with captured() as seen:
        assert thief.get("/get/user").json["value"] is None
    hijack = named(seen, "hijack_suspected")
    assert hijack == [{"sid_hash": store_key(stolen)[:12], "reason": "reuse", "revoked": revoke}]
    assert victim.get("/get/user").json["value"] == (None if revoke else "alice")


def _with(app, **changes):
    import dataclasses

    return dataclasses.replace(app.extensions["gosession"].settings, **changes)


@pytest.mark.parametrize("path", ["/login", "/login-async"])
def test_rotate_sid_decorator_kills_old_id_at_once(client, app, path):
    client.get("/set/cart/1")
    planted = cookie_value(client)
    with captured() as seen:
        assert client.post(path, data={"user": "bob"}).text == "logged in"
    fresh = cookie_value(client)
    assert fresh != planted
    # No grace for a privilege rotation: what stays of the planted id is a
    # forward nobody follows (a late logout still finds the new session
    # through it), with none of the session's data.
    assert moved_away(app, planted)
    assert stored(app, fresh).data == {"cart": "1", "user": "bob"}
    assert named(seen, "session_rotated")[0]["reason"] == "privilege"
    attacker = app.test_client()
    attacker.set_cookie("gosessionid", planted)
    assert attacker.get("/get/user").json["value"] is None


def test_rotate_sid_on_anonymous_session_issues_fresh_id(client, app):
    client.set_cookie("gosessionid", "P" * 43)  # planted, unknown
    client.post("/login")
    assert cookie_value(client) != "P" * 43
    assert stored(app, cookie_value(client)).data == {"user": "alice"}


@pytest.mark.parametrize("path", ["/regenerate", "/regenerate-async"])
def test_regenerate_in_code(client, app, path):
    client.get("/set/a/1")
    old = cookie_value(client)
    token_before = token_of(client)
    client.get(path)
    assert cookie_value(client) != old and moved_away(app, old)
    assert client.get("/get/a").json["value"] == "1"
    assert token_of(client) != token_before


@pytest.mark.parametrize("path", ["/logout", "/logout-async"])
def test_destroy_removes_record_and_expires_cookie(client, app, path):
    client.get("/set/a/1")
    sid = cookie_value(client)
    with captured() as seen:
        response = client.get(path)
    assert stored(app, sid) is None
    assert any(c.startswith("gosessionid=;") for c in set_cookies(response))
    assert cookie_value(client) is None
    assert named(seen, "session_destroyed") == [{"sid_hash": store_key(sid)[:12], "reason": "destroy"}]


def test_destroy_kills_old_ids_still_forwarding(client, app, clock):
    client.get("/set/a/1")
    old = cookie_value(client)
    clock.advance(901)
    client.get("/get/a")  # rotation; old id forwards for 30 s
    client.get("/logout")
    straggler = app.test_client()
    straggler.set_cookie("gosessionid", old)
    assert straggler.get("/get/a").json["value"] is None
    assert stored(app, old) is None


def test_destroy_then_write_starts_new_session(client, app):
    client.get("/set/a/1")
    old = cookie_value(client)
    client.get("/logout-flash")
    new = cookie_value(client)
    assert new and new != old
    assert client.get("/flashes").json == ["bye"]


def test_a_mark_written_after_the_request_read_its_clock_is_followed(app, clock):
    """A request reads its clock, then another request (or another host,
    whose clock is ahead) marks the record rotated before the new record is
    written: the mark looks younger than zero, and is fresh, so the request
    builds the new record and continues, instead of logging the client out."""
    from flask_gosession.ids import new_sid, seal_forward, store_key
    from flask_gosession.meta import FORWARD_AT, FORWARD_UNTIL
    from flask_gosession.providers.base import FORWARD_FIELD, Change

    client = app.test_client()
    client.get("/set/user/alice")
    old = client.get_cookie("gosessionid").value.split(".")[0]
    target = new_sid()
    manager = app.extensions["gosession"]
    now = clock()
    mark = {FORWARD_FIELD: seal_forward(old, target), FORWARD_AT: now + 0.5, FORWARD_UNTIL: now + 30}
    assert manager.provider.session_update(store_key(old), Change(meta=mark, atime=now)).value == "applied"
    response = client.get("/get/user")
    assert response.json["value"] == "alice"
    assert client.get_cookie("gosessionid").value.split(".")[0] == target
