"""Every lifecycle signal: sender, keyword arguments, and no raw ids."""
from __future__ import annotations

import logging
import re

import pytest
from flask.sessions import SecureCookieSessionInterface

from helpers import cookie_value
from signals_capture import ALL, captured

EXPECTED_KWARGS = {
    "session_created": {"sid_hash"},
    "session_rotated": {"old", "new", "reason"},
    "session_destroyed": {"sid_hash", "reason"},
    "session_expired": {"sid_hash", "reason"},
    "token_rejected": {"sid_hash", "reason"},
    "hijack_suspected": {"sid_hash", "reason", "revoked"},
    "session_imported": {"sid_hash", "source"},
}


@pytest.fixture
def app_config():
    return {"GOSESSION_TOKEN_CHECK": True, "GOSESSION_GC_INTERVAL": 0,
            "GOSESSION_IMPORT_FLASK_COOKIE": True}


def test_lifecycle_signals_and_logs_never_carry_raw_ids(app, clock, caplog):
    victim, thief = app.test_client(), app.test_client()
    ids: set[str] = set()
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"), captured() as seen:
        token = re.search(r'value="([^"]+)"', victim.get("/token").text).group(1)  # created
        ids.add(cookie_value(victim))
        victim.post("/login", data={"gosession_token": token})  # rotated: privilege
        ids.add(cookie_value(victim))
        victim.post("/write", data={"a": "1"})  # token_rejected
        stolen = cookie_value(victim)
        clock.advance(901)
        victim.get("/get/a")  # rotated: age
        ids.add(cookie_value(victim))
        clock.advance(60)
        thief.set_cookie("gosessionid", stolen)
        thief.get("/get/a")  # hijack_suspected + destroyed (revoked)
        other = app.test_client()
        other.get("/set/x/1")
        ids.add(cookie_value(other))
        clock.advance(3601)
        other.get("/get/x")  # expired
        third = app.test_client()
        third.get("/set/y/1")
        ids.add(cookie_value(third))
        third.get("/logout")  # destroyed: destroy
        migrated = app.test_client()
        serializer = SecureCookieSessionInterface().get_signing_serializer(app)
        migrated.set_cookie("session", serializer.dumps({"z": "1"}))
        assert migrated.get("/get/z").json["value"] == "1"  # imported
        ids.add(cookie_value(migrated))
    fired = {name for name, _, _ in seen}
    assert fired == set(ALL)
    for name, sender, kwargs in seen:
        assert sender is app
        assert set(kwargs) == EXPECTED_KWARGS[name], name
    text = repr(seen) + caplog.text
    for sid in ids:
        assert sid and sid not in text
