"""Switching to flask-gosession in a real browser: a Chromium session that
logged in on Flask's cookie session, or on Flask-Session 0.8 with Redis,
is still logged in after the redeploy, sees its flash once, and holds only
our cookie.

One loopback server serves the app; the "redeploy" swaps the WSGI app it
serves between two requests, as a restart on the same port would.
"""
from __future__ import annotations

import secrets
import typing as t

import pytest

from browser import TIMEOUT, expect, loopback, screenshot
from liveserver import serve
from migration_site import make_site

pytestmark = [pytest.mark.browser, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


class Redeployable:
    """A WSGI app whose deployment can be replaced between requests."""

    def __init__(self, app: t.Any) -> None:
        self.app = app

    def __call__(self, environ: t.Any, start_response: t.Any) -> t.Any:
        return self.app(environ, start_response)


def _flow(chromium: t.Any, before: t.Any, after: t.Any, name: str) -> None:
    site = Redeployable(before)
    with serve(site) as port, loopback(chromium, port) as tab:
        page = tab.page
        page.goto("/login/ada")
        expect(page.locator("body")).to_have_text("logged in as ada", timeout=TIMEOUT)
        old = tab.cookie("session")
        assert old is not None and tab.cookie("gosessionid") is None
        screenshot(page, f"migrate-{name}-1-old-login")

        site.app = after  # the redeploy
        page.goto("/page")
        expect(page.locator("#who")).to_have_text("ada", timeout=TIMEOUT)
        expect(page.locator(".flash")).to_have_text("Welcome back, ada", timeout=TIMEOUT)
        # The page renders the flash as it came (Markup from a Flask cookie).
        assert page.locator(".flash em").count() == 1
        ours = tab.cookie("gosessionid")
        assert ours is not None and ours["httpOnly"]
        assert tab.cookie("session") is None  # only our cookie now
        screenshot(page, f"migrate-{name}-2-after-redeploy")

        page.reload()
        expect(page.locator("#who")).to_have_text("ada", timeout=TIMEOUT)
        assert page.locator(".flash").count() == 0  # the flash was shown once
        assert tab.cookie("session") is None
        assert tab.cookie("gosessionid") is not None
        screenshot(page, f"migrate-{name}-3-still-logged-in")


def test_from_flask_cookie_sessions(chromium: t.Any, backend_redis: dict[str, t.Any]) -> None:
    before = make_site("flask-cookie")
    after = make_site("gosession", {**backend_redis, "GOSESSION_IMPORT_FLASK_COOKIE": True})
    try:
        _flow(chromium, before, after, "flask-cookie")
    finally:
        after.extensions["gosession"].close()


def test_from_flask_session_on_redis(chromium: t.Any, redis_shared_server: t.Any) -> None:
    import redis

    prefix = f"fs-{secrets.token_hex(4)}:"
    client = redis.Redis.from_url(redis_shared_server.url)
    before = make_site("flask-session", {"SESSION_TYPE": "redis", "SESSION_REDIS": client,
                                         "SESSION_KEY_PREFIX": prefix})
    after = make_site("gosession", {
        "GOSESSION_PROVIDER": "redis", "GOSESSION_REDIS_URL": redis_shared_server.url,
        "GOSESSION_KEY_PREFIX": f"gs-{secrets.token_hex(4)}:", "SESSION_KEY_PREFIX": prefix,
        "GOSESSION_IMPORT_FLASK_SESSION": True,
    })
    try:
        _flow(chromium, before, after, "flask-session-redis")
        assert list(client.scan_iter(match=prefix + "*")) == []  # the old record is gone
    finally:
        after.extensions["gosession"].close()
        client.close()
