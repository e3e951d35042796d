"""URL-rewrite transport for clients without cookies (opt-in).

The id goes only into URLs that stay on this host: a table of hostile
``Location`` values (through the test client and over real HTTP) never gets
it, and headless Chromium, redirected to ``http:127.0.0.1:<other port>/x``,
delivers nothing to a second server that records what it receives.
"""
from __future__ import annotations

import contextlib
import http.client
import typing as t
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import session, url_for
from werkzeug.urls import iri_to_uri

from browser import loopback
from flask_gosession import urlrewrite
from flask_gosession.errors import ProviderError, StoreUnavailable
from flask_gosession.providers.memory import MemoryProvider
from helpers import set_cookies, stored
from liveserver import request, serve

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


# -- which Location values get the id ------------------------------------------
#
# "{host}" is the request's own host (with its port, if any), "{name}" its
# host name alone, "{other}" the same host name on another port. Browsers resolve every value below either
# on another host, or in a way the rule does not vouch for: none gets the id.
LEFT_ALONE = [
    # Special schemes without "//": browsers still read a host there.
    "http:{other}/x",
    "http:{host}/x",
    "https:evil.example/x",
    "HTTPS:evil.example/x",
    "https:/evil.example/x",
    "http:/{host}/x",
    "http:///evil.example/x",
    "http://",
    # Scheme-relative, and the backslash spellings browsers treat as "/".
    "//evil.example/x",
    "///evil.example/x",
    "/\\evil.example/x",
    "\\/evil.example/x",
    "\\\\evil.example/x",
    "http:\\\\evil.example/x",
    "http:/\\evil.example/x",
    "/x\\y",
    # Control characters and whitespace, which browsers strip or drop.
    " //evil.example/x",
    "\t//evil.example/x",
    "/\t/evil.example/x",
    "\x0c//evil.example/x",
    "\x00//evil.example/x",
    "/\x00/evil.example/x",
    "/x y",
    "/x\x7f",
    # Other hosts, other ports, userinfo.
    "http://evil.example/x",
    "https://evil.example/x",
    "http://{other}/x",
    "http://{name}.evil.example/x",
    "http://{host}@evil.example/x",
    "http://user@{host}/x",
    "http://user:pw@{host}/x",
    "http://evil.example#@{host}/x",
    "http://evil.example?@{host}/x",
    # Relative references: resolved on this host, but not path-absolute.
    "x",
    "next",
    "../x",
    "./x",
    "?gosessionid=planted",
    "#top",
    # Other schemes.
    "javascript:alert(1)",
    "data:text/html,hi",
    "ftp://{host}/x",
    "ws://{host}/x",
    "file:///etc/passwd",
]

#: (Location, what it becomes) for the forms that do get the id.
REWRITTEN = [
    ("/x", "/x?gosessionid={sid}"),
    ("/", "/?gosessionid={sid}"),
    ("/get/a?x=1", "/get/a?x=1&gosessionid={sid}"),
    ("/x#frag", "/x?gosessionid={sid}#frag"),
    ("/x?#frag", "/x?gosessionid={sid}#frag"),
    ("/x?a=%7E&b=1+2&c", "/x?a=%7E&b=1+2&c&gosessionid={sid}"),
    ("/x?gosessionid=stale&y=2", "/x?y=2&gosessionid={sid}"),
    ("/%2F%2Fevil.example/x", "/%2F%2Fevil.example/x?gosessionid={sid}"),
    ("http://{host}/x", "http://{host}/x?gosessionid={sid}"),
    ("https://{host}/x", "https://{host}/x?gosessionid={sid}"),
    ("http://{host}", "http://{host}?gosessionid={sid}"),
    ("HTTP://{HOST}/x", "HTTP://{HOST}/x?gosessionid={sid}"),
]

OTHER_PORT = 18032


def fill(template: str, host: str, sid: str = "") -> str:
    name = host.rsplit(":", 1)[0] if ":" in host else host
    return template.format(host=host, HOST=host.upper(), name=name, other=f"{name}:{OTHER_PORT}", sid=sid)


def protection(response: t.Any) -> tuple[str | None, str | None]:
    """(Referrer-Policy, Cache-Control) as a response carries them."""
    return response.headers.get("Referrer-Policy"), response.headers.get("Cache-Control")


@pytest.fixture
def url_sid(app) -> str:  # type: ignore[no-untyped-def]
    """The id of a stored session, for a client that sends no cookie."""
    return cookie_in(app.test_client(use_cookies=False).get("/set/a/1"))


@pytest.mark.parametrize("app_config", [ON])
@pytest.mark.parametrize("target", LEFT_ALONE)
def test_hostile_location_never_gets_the_id(app, url_sid, target):
    location = fill(target, "localhost")
    response = app.test_client(use_cookies=False).get(
        "/to", query_string={"target": location, "gosessionid": url_sid}
    )
    assert response.status_code == 302
    # Untouched by us; werkzeug IRI-encodes every Location as it sends it.
    assert response.headers["Location"] == iri_to_uri(location)
    assert url_sid not in str(response.headers)
    assert protection(response) == (None, None)  # no id in a URL: no headers from us


@pytest.mark.parametrize("app_config", [ON])
@pytest.mark.parametrize(("target", "expected"), REWRITTEN)
def test_own_location_gets_the_id_and_the_headers(app, url_sid, target, expected):
    response = app.test_client(use_cookies=False).get(
        "/to", query_string={"target": fill(target, "localhost"), "gosessionid": url_sid}
    )
    assert response.headers["Location"] == iri_to_uri(fill(expected, "localhost", url_sid))
    assert protection(response) == ("no-referrer", "private")


@pytest.mark.parametrize(
    "location",
    ["/\n/evil.example/x", "/\r/evil.example/x", "/x\n", "/\x85/x", "http://ｌocalhost/x",  # noqa: RUF001 (a fullwidth l on purpose)
     "http://localhost\u3002evil.example/x", "http://xn--localhost/x", "http://[::1/x", "http://[::1]/x"],
)
def test_rule_refuses_what_headers_cannot_even_carry(location):
    # Newlines cannot be set in a header; the rule refuses them anyway, and
    # non-ASCII in a host (browsers fold it to ASCII) never equals ours.
    assert not urlrewrite.is_own_location(location, "localhost", "http")


def test_rule_for_the_request_scheme():
    own = urlrewrite.is_own_location
    assert own("/caf\u00e9/\u3000", "localhost", "http")  # non-ASCII in a path cannot change the host
    assert own("https://localhost/x", "localhost", "http")  # an upgrade keeps the id
    assert own("https://localhost/x", "localhost", "https")
    assert not own("http://localhost/x", "localhost", "https")  # never downgraded to plain HTTP
    assert own("/x", "localhost", "https")


@pytest.mark.parametrize("app_config", [ON])
def test_https_redirect_to_plain_http_keeps_the_id_out(app, url_sid):
    client = app.test_client(use_cookies=False)
    for target, rewritten in (("http://localhost/x", False), ("https://localhost/x", True), ("/x", True)):
        response = client.get("/to", base_url="https://localhost",
                              query_string={"target": target, "gosessionid": url_sid})
        assert (url_sid in response.headers["Location"]) is rewritten, target


@pytest.mark.parametrize("app_config", [ON])
def test_hostile_locations_over_real_http(app):
    """The whole table through a threaded server: real Host header, real port."""
    with serve(app) as port:
        host = f"127.0.0.1:{port}"
        _, _, sid = request(port, "/set/a/1")
        assert sid
        wrong = []
        for target in LEFT_ALONE:
            location = fill(target, host)
            if raw_location(port, location, sid) != iri_to_uri(location):
                wrong.append(location)
        for target, expected in REWRITTEN:
            if raw_location(port, fill(target, host), sid) != iri_to_uri(fill(expected, host, sid)):
                wrong.append(target)
        assert not wrong, wrong


def raw_location(port: int, target: str, sid: str) -> str | None:
    """The Location header, as sent, of ``/to`` redirecting to ``target``."""
    query = urlencode({"target": target, "gosessionid": sid})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", f"/to?{query}")
        response = conn.getresponse()
        response.read()
        assert response.status == 302, target
        # http.client decodes header bytes as latin-1: the value as sent.
        return response.getheader("Location")
    finally:
        conn.close()


# -- Referrer-Policy and Cache-Control on responses that carry the id ----------------

@pytest.mark.parametrize("app_config", [ON])
def test_page_with_id_links_gets_the_headers(app, url_sid):
    response = app.test_client(use_cookies=False).get(f"/page?gosessionid={url_sid}")
    assert sid_in(response.text) == url_sid
    assert protection(response) == ("no-referrer", "private")


@pytest.mark.parametrize("app_config", [ON])
def test_responses_without_the_id_in_a_url_get_no_headers(app, url_sid):
    browser = app.test_client()
    browser.get("/set/a/1")
    cookie_page = browser.get(f"/page?gosessionid={url_sid}")  # the cookie wins: clean links
    assert cookie_page.text == "/get/a" and protection(cookie_page) == (None, None)
    cookieless = app.test_client(use_cookies=False)
    for path in ("/page", "/links", "/away", f"/away?gosessionid={url_sid}", f"/noop?gosessionid={url_sid}"):
        response = cookieless.get(path)
        assert url_sid not in response.get_data(as_text=True) + str(response.headers), path
        assert protection(response) == (None, None), path


def test_cookie_mode_gets_no_headers(app):
    client = app.test_client()
    client.get("/set/a/1")
    for path in ("/page", "/go", "/to?target=/x"):
        assert protection(client.get(path)) == (None, None), path


@pytest.mark.parametrize("app_config", [ON])
@pytest.mark.parametrize("view", [{"path": "/page"}, {"path": "/to", "target": "/x"}])
@pytest.mark.parametrize(("own", "merged"), [
    ("no-store", "no-store, private"),
    ("no-cache, max-age=0", "no-cache, max-age=0, private"),
    ("public, max-age=60", "max-age=60, private"),
    ('private="Set-Cookie"', "private"),
    ("private", "private"),
])
def test_existing_cache_control_is_kept_and_made_private(app, url_sid, view, own, merged):
    args = {k: v for k, v in view.items() if k != "path"}
    response = app.test_client(use_cookies=False).get(
        view["path"], query_string={**args, "gosessionid": url_sid, "cc": own, "rp": "unsafe-url"}
    )
    assert url_sid in response.headers.get("Location", "") + response.text
    assert protection(response) == ("no-referrer", merged)


class SaveFails(MemoryProvider):
    """A memory store whose updates fail once ``down`` is set."""

    down = False

    def session_update(self, key, change):  # type: ignore[no-untyped-def]
        if self.down:
            raise ProviderError("connection refused (backend switched off)")
        return super().session_update(key, change)


@pytest.mark.parametrize("app_config", [ON])
@pytest.mark.parametrize("backend_config", [{"GOSESSION_PROVIDER": SaveFails}])
@pytest.mark.parametrize("error_page_links", [False, True])
def test_store_down_page_gets_the_headers_only_with_id_links(app, error_page_links):
    provider = app.extensions["gosession"].provider

    @app.get("/link-then-fail")
    def link_then_fail() -> str:
        session["b"] = 2
        link = url_for("get", key="a")  # the page that is replaced had an id link
        provider.down = True
        return link

    @app.errorhandler(StoreUnavailable)
    def down(err: t.Any) -> t.Any:
        return (url_for("get", key="a") if error_page_links else "down"), 503

    client = app.test_client(use_cookies=False)
    sid = cookie_in(client.get("/set/a/1"))
    response = client.get(f"/link-then-fail?gosessionid={sid}")
    assert response.status_code == 503
    assert (sid_in(response.text) == sid) is error_page_links
    assert protection(response) == (("no-referrer", "private") if error_page_links else (None, None))


# -- in a real browser ------------------------------------------------------------

@contextlib.contextmanager
def recorder() -> t.Iterator[tuple[int, list[str]]]:
    """A second loopback server that records every request it receives
    (request line and all headers), and answers 200."""
    seen: list[str] = []

    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        headers = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
        seen.append(f"{environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')} {headers}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"recorded"]

    with serve(app) as port:
        yield port, seen


@pytest.mark.browser
@pytest.mark.parametrize("app_config", [ON])
def test_browser_never_carries_the_id_to_another_port(app, chromium):
    with serve(app) as port, recorder() as (other, seen), loopback(chromium, port, also=[other]) as tab:
        _, _, sid = request(port, "/set/a/1")
        assert sid
        page = tab.page

        # The control: a redirect to this app carries the id, and the
        # cookieless browser keeps its session through it.
        page.goto(f"/to?target=/get/a&gosessionid={sid}")
        assert sid_in(page.url) == sid and urlsplit(page.url).netloc == f"127.0.0.1:{port}"
        assert '"value":"1"' in page.content().replace(" ", "")

        # Chromium reads "http:127.0.0.1:<other>/x" as http://127.0.0.1:<other>/x.
        target = f"http:127.0.0.1:{other}/x"
        page.goto(f"/to?{urlencode({'target': target, 'gosessionid': sid})}")
        assert page.url == f"http://127.0.0.1:{other}/x"
        assert page.locator("body").inner_text() == "recorded"
        assert len(seen) == 1 and seen[0].startswith("/x?"), seen
        assert sid not in seen[0], seen[0]  # not in the query, nor in a Referer
        assert tab.cookie() is None  # the browser never held the id in a cookie either
