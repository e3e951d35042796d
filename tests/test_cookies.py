"""Cookie attributes come from Flask's SESSION_COOKIE_* settings."""
from __future__ import annotations

import datetime as dt

import pytest

from helpers import set_cookies


def only_cookie(response) -> str:
    cookies = set_cookies(response)
    assert len(cookies) == 1, cookies
    return cookies[0]


def test_defaults_httponly_browser_session(client):
    cookie = only_cookie(client.get("/count"))
    assert cookie.startswith("gosessionid=")
    assert "HttpOnly" in cookie and "Path=/" in cookie
    assert "Expires" not in cookie and "Secure" not in cookie


@pytest.mark.parametrize("app_config", [{
    "GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
    "GOSESSION_COOKIE_NAME": "sid",
    "SESSION_COOKIE_DOMAIN": "example.test",
    "SESSION_COOKIE_PATH": "/app",
    "SESSION_COOKIE_SECURE": True,
    "SESSION_COOKIE_SAMESITE": "Strict",
    "SESSION_COOKIE_PARTITIONED": True,
    "SESSION_COOKIE_HTTPONLY": True,
}])
def test_flask_cookie_settings_apply(client):
    cookie = only_cookie(client.get("/count", base_url="https://example.test"))
    assert cookie.startswith("sid=")
    for part in ("Domain=example.test", "Path=/app", "Secure", "SameSite=Strict", "Partitioned", "HttpOnly"):
        assert part in cookie, part


def test_permanent_session_gets_expires(client, app):
    before = dt.datetime.now(dt.timezone.utc)
    cookie = only_cookie(client.get("/permanent"))
    assert "Expires=" in cookie
    expires = client.get_cookie("gosessionid").expires
    lifetime = app.permanent_session_lifetime
    assert before + lifetime - dt.timedelta(minutes=1) <= expires <= before + lifetime + dt.timedelta(minutes=1)


def test_permanent_cookie_refreshed_each_request(client):
    client.get("/permanent")
    assert "Expires=" in only_cookie(client.get("/get/p"))


@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                                         "SESSION_REFRESH_EACH_REQUEST": False}])
def test_permanent_cookie_not_refreshed_when_disabled(client):
    client.get("/permanent")
    assert set_cookies(client.get("/get/p")) == []


def test_non_permanent_cookie_not_resent_on_reads(client):
    client.get("/count")
    assert set_cookies(client.get("/get/n")) == []
    # A change re-sends it, as Flask's should_set_cookie says (same id).
    sid = client.get_cookie("gosessionid").value
    assert set_cookies(client.get("/count")) == [f"gosessionid={sid}; HttpOnly; Path=/"]


def test_vary_cookie_only_when_accessed(client):
    assert "Cookie" in client.get("/count").headers["Vary"]
    assert "Vary" not in client.get("/noop").headers


@pytest.mark.parametrize("view_vary", [None, "Accept-Encoding", "cookie", "Cookie, Accept"])
@pytest.mark.parametrize("path", ["/count", "/get/n", "/logout"])
def test_vary_names_cookie_once_beside_the_views_own(app, client, view_vary, path):
    """Reading, setting and deleting the cookie each add ``Cookie`` to
    ``Vary`` once, keeping what the view put there."""
    @app.after_request
    def vary(response):  # type: ignore[no-untyped-def]
        if view_vary is not None:
            response.headers["Vary"] = view_vary
        return response

    client.get("/count")
    values = client.get(path).headers.getlist("Vary")
    assert len(values) == 1
    names = [name.strip().lower() for name in values[0].split(",")]
    assert names.count("cookie") == 1
    assert set(names) == {"cookie"} | {n.strip().lower() for n in (view_vary or "").split(",") if n}
