"""``session_info()``: what a page may show about the session, by label."""
from __future__ import annotations

import pytest
from flask import jsonify

from flask_gosession import regenerate, session_info
from flask_gosession.ids import label, store_key
from helpers import cookie_value


@pytest.fixture
def app_config():
    return {"GOSESSION_ROTATE_AFTER": 900, "GOSESSION_ROTATE_GRACE": 30}


@pytest.fixture
def app(app):  # type: ignore[no-untyped-def]
    @app.get("/info")
    def info():  # type: ignore[no-untyped-def]
        from flask import request, session

        if request.args.get("write"):
            session["w"] = 1
        if request.args.get("regen"):
            regenerate()
        facts = session_info()
        return jsonify(label=facts.label, created=facts.created_at.timestamp(),
                       issued=facts.issued_at.timestamp(),
                       rotates=facts.rotates_at.timestamp() if facts.rotates_at else None,
                       rotating=facts.rotating, new=facts.new, refused=facts.refused_label)

    return app


def labelled(client) -> str:  # type: ignore[no-untyped-def]
    return label(store_key(cookie_value(client)))


def test_the_label_is_the_cookies_and_times_follow_the_clock(app, client, clock):
    start = clock()
    first = client.get("/info?write=1").json
    assert first["new"] is True and first["label"] == labelled(client)
    near = pytest.approx(start, abs=1e-3)  # datetimes keep microseconds
    assert first["created"] == near and first["issued"] == near
    assert first["rotates"] == pytest.approx(start + 900, abs=1e-3)
    clock.advance(100)
    again = client.get("/info").json
    assert again == {**first, "new": False}
    raw = cookie_value(client)
    assert raw not in str(again)


def test_a_rotation_shows_the_new_id_at_once(app, client, clock):
    client.get("/info?write=1")
    old = labelled(client)
    clock.advance(901)
    facts = client.get("/info").json
    assert facts["rotating"] is True and facts["label"] == labelled(client) != old
    assert facts["issued"] == pytest.approx(clock(), abs=1e-3)
    assert facts["rotates"] == pytest.approx(clock() + 900, abs=1e-3)
    regen = client.get("/info?regen=1").json
    assert regen["rotating"] is True and regen["label"] == labelled(client)


def test_a_refused_id_is_named_by_its_label(app, client, clock):
    client.get("/info?write=1")
    old = cookie_value(client)
    clock.advance(3601)  # idle timeout
    facts = client.get("/info").json
    assert facts["refused"] == label(store_key(old)) and facts["new"] is True
    fresh = app.test_client().get("/info").json
    assert fresh["refused"] is None
