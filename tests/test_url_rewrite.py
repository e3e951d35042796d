"""URL-rewrite transport for clients without cookies (opt-in)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from helpers import set_cookies, stored

ON = {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0, "GOSESSION_URL_REWRITE": True}


def sid_in(url: str) -> str | None:
    return parse_qs(urlsplit(url).query).get("gosessionid", [None])[0]


def cookie_in(response) -> str:
    return set_cookies(response)[0].split(";")[0].split("=", 1)[1]


def test_off_by_default_ids_in_urls_are_ignored(app):
    browser = app.test_client()
    browser.get("/set/a/1")
    sid = browser.get_cookie("gosessionid").value
    cookieless = app.test_client(use_cookies=False)
    assert cookieless.get(f"/get/a?gosessionid={sid}").json["value"] is None
    assert cookieless.get("/links").text == "/get/a"


@pytest.mark.parametrize("app_config", [ON])
def test_cookieless_client_keeps_its_session_through_links(app):
    client = app.test_client(use_cookies=False)
    first = client.get("/set/a/1")
    sid = cookie_in(first)  # the cookie is still offered
    link = client.get(f"/links?gosessionid={sid}").text
    assert sid_in(link) == sid and link.startswith("/get/a?")
    assert client.get(link).json["value"] == "1"


@pytest.mark.parametrize("app_config", [ON])
def test_redirects_to_same_host_carry_the_id(app):
    client = app.test_client(use_cookies=False)
    sid = cookie_in(client.get("/set/a/1"))
    for path in ("/go", "/go-for"):
        location = client.get(f"{path}?gosessionid={sid}").headers["Location"]
        assert sid_in(location) == sid, location
    assert "x=1" in client.get(f"/go?gosessionid={sid}").headers["Location"]
    away = client.get(f"/away?gosessionid={sid}").headers["Location"]
    assert "gosessionid" not in away


@pytest.mark.parametrize("app_config", [ON])
def test_cookie_wins_over_url(app):
    browser = app.test_client()
    browser.get("/set/a/cookie")
    other = app.test_client(use_cookies=False)
    url_sid = cookie_in(other.get("/set/a/url"))
    assert browser.get(f"/get/a?gosessionid={url_sid}").json["value"] == "cookie"
    assert browser.get("/links").text == "/get/a"  # cookie clients get clean URLs


@pytest.mark.parametrize("app_config", [ON])
def test_unknown_url_id_is_not_adopted(app):
    client = app.test_client(use_cookies=False)
    response = client.get("/set/a/1?gosessionid=" + "Z" * 43)
    assert cookie_in(response) != "Z" * 43
    assert stored(app, "Z" * 43) is None


@pytest.mark.parametrize("app_config", [ON])
def test_links_carry_the_rotated_id(app, clock):
    client = app.test_client(use_cookies=False)
    sid = cookie_in(client.get("/set/a/1"))
    clock.advance(901)
    response = client.get(f"/links?gosessionid={sid}")
    new = cookie_in(response)
    assert new != sid and sid_in(response.text) == new
    assert client.get(response.text).json["value"] == "1"


@pytest.mark.parametrize("app_config", [ON])
def test_untouched_request_without_session_adds_nothing(app):
    client = app.test_client(use_cookies=False)
    assert client.get("/links").text == "/get/a"
