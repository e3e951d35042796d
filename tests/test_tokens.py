"""The per-request token on unsafe methods."""
from __future__ import annotations

import re

import pytest

from flask_gosession.ids import open_token, store_key
from helpers import cookie_value, moved_away, stored
from signals_capture import captured, named

CHECKED = {"GOSESSION_TOKEN_CHECK": True, "GOSESSION_GC_INTERVAL": 0}


@pytest.fixture
def app_config():
    return dict(CHECKED)


def token_of(client) -> str:
    html = client.get("/token").text
    assert html.startswith('<input type="hidden" name="gosession_token" value="')
    return re.search(r'value="([^"]+)"', html).group(1)


def test_rendering_a_token_stores_an_anonymous_session(client, app):
    token = token_of(client)
    sid = cookie_value(client)
    assert sid is not None
    record = stored(app, sid)
    # The store holds the token sealed with the id: a dump gives no token.
    assert record.data == {} and record.meta["t"] != token and token not in repr(record)
    assert open_token(sid, record.meta["t"]) == token
    assert len(token) == 43


def test_token_accepted_from_form_and_header(client, app):
    token = token_of(client)
    assert client.post("/write", data={"a": "1", "gosession_token": token}).status_code == 200
    assert client.post("/write", json={"b": "2"}, headers={"X-GoSession-Token": token}).status_code == 200
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)("/write", headers={"X-GoSession-Token": token}).status_code == 200
    assert stored(app, cookie_value(client)).data == {"a": "1", "b": "2"}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_missing_token_is_rejected_and_nothing_saved(client, app, method):
    token_of(client)
    with captured() as seen:
        response = getattr(client, method)("/write", data={"a": "evil"})
    assert response.status_code == 400
    assert b"session token is missing" in response.data
    assert stored(app, cookie_value(client)).data == {}
    assert named(seen, "token_rejected") == [
        {"sid_hash": store_key(cookie_value(client))[:12], "reason": "missing"}
    ]


def test_wrong_token_is_rejected(client, app):
    token = token_of(client)
    for bad in ("x", token[:-1] + ("A" if token[-1] != "A" else "B"), "é" * 43, token + "A"):
        with captured() as seen:
            response = client.post("/write", data={"a": "evil", "gosession_token": bad})
        assert response.status_code == 400, bad
        assert named(seen, "token_rejected")[0]["reason"] == "mismatch"
    assert stored(app, cookie_value(client)).data == {}


def test_unsafe_request_without_session_is_rejected(client):
    with captured() as seen:
        response = client.post("/write", data={"a": "1", "gosession_token": "anything"})
    assert response.status_code == 400
    assert b"no session was found" in response.data
    assert named(seen, "token_rejected") == [{"sid_hash": None, "reason": "no-session"}]
    assert cookie_value(client) is None


def test_token_error_is_customisable(app, client):
    from flask_gosession.errors import TokenError

    @app.errorhandler(TokenError)
    def handle(err):
        return f"custom: {err.description}", 400

    assert client.post("/write").text.startswith("custom: ")


def test_safe_methods_need_no_token(client):
    assert client.get("/count").status_code == 200


def test_exempt_view_and_blueprint(client):
    assert client.post("/hook").status_code == 200
    assert client.post("/api/write").status_code == 200


@pytest.mark.parametrize("app_config", [dict(CHECKED, GOSESSION_TOKEN_ONE_TIME=True)])
def test_one_time_token_rejects_replay(client):
    token = token_of(client)
    assert client.post("/write", data={"a": "1", "gosession_token": token}).status_code == 200
    replay = client.post("/write", data={"a": "2", "gosession_token": token})
    assert replay.status_code == 400
    fresh = token_of(client)
    assert fresh != token
    assert client.post("/write", data={"a": "3", "gosession_token": fresh}).status_code == 200


def test_reusable_token_by_default(client):
    token = token_of(client)
    for i in range(3):
        assert client.post("/write", data={"a": str(i), "gosession_token": token}).status_code == 200


def test_login_form_flow_for_anonymous_visitor(client, app):
    token = token_of(client)
    anonymous = cookie_value(client)
    assert client.post("/login", data={"user": "carol", "gosession_token": token}).status_code == 200
    assert cookie_value(client) != anonymous  # rotated at login
    assert moved_away(app, anonymous)
    new_token = token_of(client)
    assert new_token != token
    assert client.post("/write", data={"x": "1", "gosession_token": token}).status_code == 400
    assert client.post("/write", data={"x": "1", "gosession_token": new_token}).status_code == 200


def test_token_of_old_id_accepted_inside_grace_window(client, app, clock):
    token = token_of(client)
    old = cookie_value(client)
    client.post("/write", data={"a": "1", "gosession_token": token})
    clock.advance(901)
    client.get("/get/a")  # rotation by age: new id, new token
    straggler = app.test_client()
    straggler.set_cookie("gosessionid", old)
    clock.advance(5)
    response = straggler.post("/write", data={"b": "2", "gosession_token": token})
    assert response.status_code == 200
    assert client.get("/get/b").json["value"] == "2"


@pytest.mark.parametrize("app_config", [dict(CHECKED, GOSESSION_BIND_USER_AGENT=True)])
def test_user_agent_binding(client, app):
    client.get("/set/a/1", headers={"User-Agent": "Firefox/1"})
    sid = cookie_value(client)
    assert client.get("/get/a", headers={"User-Agent": "Firefox/1"}).json["value"] == "1"
    thief = app.test_client()
    thief.set_cookie("gosessionid", sid)
    with captured() as seen:
        assert thief.get("/get/a", headers={"User-Agent": "curl/8"}).json["value"] is None
    assert named(seen, "hijack_suspected") == [
        {"sid_hash": store_key(sid)[:12], "reason": "user-agent", "revoked": False}
    ]
    assert client.get("/get/a", headers={"User-Agent": "Firefox/1"}).json["value"] == "1"
