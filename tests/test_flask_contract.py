"""``flask.session`` behaves as with Flask's own signed-cookie session.

Every test in the first part runs twice, through the ``make`` fixture:
against Flask's :class:`~flask.sessions.SecureCookieSessionInterface` and
against flask-gosession (memory provider). What Flask does is the
reference; the README promises "keep using ``flask.session`` exactly as
before". The second part covers what only our cookie has: the permanence
flag on the cookie value, parsed strictly, at no store cost.
"""
from __future__ import annotations

import datetime as dt
import typing as t

import pytest
from flask import Flask, flash, get_flashed_messages, jsonify, session

from counting import install
from flask_gosession import GoSession
from flask_gosession.ids import new_sid
from helpers import set_cookies

Factory = t.Callable[..., Flask]


def _views(app: Flask) -> None:
    """The same views on both apps; ``app.seen`` gets the session's public
    flags as a ``teardown_request`` sees them, after the response was saved."""
    app.seen = {}  # type: ignore[attr-defined]

    @app.teardown_request
    def record(_exc: BaseException | None) -> None:
        app.seen.update(modified=session.modified, accessed=session.accessed)  # type: ignore[attr-defined]

    @app.get("/noop")
    def noop() -> str:
        return "noop"

    @app.get("/set/<key>/<value>")
    def set_(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.get("/get/<key>")
    def get(key: str) -> t.Any:
        return jsonify(value=session.get(key))

    @app.get("/permanent/<state>")
    def permanent(state: str) -> str:
        session.permanent = state == "on"
        session["p"] = 1
        return "ok"

    @app.get("/append")
    def append() -> str:
        session.setdefault("cart", [])
        session["cart"].append(1)
        session.modified = True
        return "ok"

    @app.get("/clear")
    def clear() -> str:
        session.clear()
        return "ok"

    @app.get("/flash/<message>")
    def flash_(message: str) -> str:
        flash(message)
        return "ok"

    @app.get("/flashes")
    def flashes() -> t.Any:
        return jsonify(get_flashed_messages())


def flask_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True, **config)
    _views(app)
    return app


def gosession_app(**config: t.Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True, GOSESSION_PROVIDER="memory",
                      GOSESSION_GC_INTERVAL=0, GOSESSION_TOKEN_CHECK=False, **config)
    GoSession(app)
    _views(app)
    return app


@pytest.fixture(params=[flask_app, gosession_app], ids=["flask", "gosession"])
def make(request: pytest.FixtureRequest) -> Factory:
    return request.param  # type: ignore[no-any-return]


def cookie_name(app: Flask) -> str:
    return app.session_interface.get_cookie_name(app)


def one_cookie(response: t.Any) -> str:
    cookies = set_cookies(response)
    assert len(cookies) == 1, cookies
    return cookies[0]


def attributes(cookie: str) -> set[str]:
    """A Set-Cookie header's attributes, without its name, value and date."""
    parts = [p.strip() for p in cookie.split(";")[1:]]
    return {p.split("=")[0] if p.startswith("Expires=") else p for p in parts}


# -- side by side with Flask -----------------------------------------------


def test_modified_and_accessed_survive_the_save(make):
    app = make()
    client = app.test_client()
    client.get("/set/a/1")
    assert app.seen == {"modified": True, "accessed": True}
    client.get("/get/a")
    assert app.seen == {"modified": False, "accessed": True}


def test_untouched_session_sends_nothing(make):
    app = make()
    client = app.test_client()
    response = client.get("/noop")
    assert not app.seen["modified"]
    assert set_cookies(response) == [] and "Vary" not in response.headers


def test_touching_the_proxy_marks_accessed_and_varies(make):
    """Flask marks the session accessed as soon as ``flask.session`` is
    touched (3.1.3+), even by an attribute that reads no data."""
    app = make()

    @app.get("/peek")
    def peek() -> str:
        return str(session.modified)

    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/peek")
    assert app.seen == {"modified": False, "accessed": True}
    assert "Cookie" in response.headers["Vary"]
    assert set_cookies(response) == []


def test_session_transaction_object_keeps_its_flags(make):
    app = make()
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["a"] = 1
        accessed = sess.accessed
    assert sess.modified and sess.accessed == accessed
    assert client.get("/get/a").json == {"value": 1}


def test_in_place_change_with_modified_is_saved_and_resent(make):
    app = make()
    client = app.test_client()
    client.get("/append")
    response = client.get("/append")
    assert app.seen["modified"]
    assert len(set_cookies(response)) == 1
    with client.session_transaction() as sess:
        assert sess["cart"] == [1, 1]


def test_a_modified_session_resends_its_cookie(make):
    app = make()
    client = app.test_client()
    client.get("/set/a/1")
    assert len(set_cookies(client.get("/set/a/2"))) == 1
    assert set_cookies(client.get("/get/a")) == []  # a read of a browser-session cookie


def test_changed_cookie_settings_reach_existing_clients_on_change(make):
    app = make()
    client = app.test_client()
    assert "SameSite=Strict" not in one_cookie(client.get("/set/a/1"))
    app.config.update(SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=True)
    cookie = one_cookie(client.get("/set/a/2", base_url="https://localhost"))
    assert "SameSite=Strict" in cookie and "Secure" in cookie
    assert client.get("/get/a", base_url="https://localhost").json == {"value": "2"}


def test_permanent_to_browser_session_cookie(make):
    app = make()
    client = app.test_client()
    assert "Expires=" in one_cookie(client.get("/permanent/on"))
    assert client.get_cookie(cookie_name(app)).expires is not None
    cookie = one_cookie(client.get("/permanent/off"))
    assert "Expires=" not in cookie and "Max-Age" not in cookie
    assert client.get_cookie(cookie_name(app)).expires is None
    assert client.get("/get/p").json == {"value": 1}
    assert set_cookies(client.get("/get/p")) == []  # no longer refreshed


def test_permanent_cookie_refreshed_on_untouched_request(make):
    app = make()
    client = app.test_client()
    client.get("/permanent/on")
    first = client.get_cookie(cookie_name(app)).expires
    response = client.get("/noop")
    cookie = one_cookie(response)
    assert "Expires=" in cookie and "HttpOnly" in cookie
    assert "Cookie" in response.headers["Vary"]
    assert client.get_cookie(cookie_name(app)).expires >= first
    assert client.get("/get/p").json == {"value": 1}  # the refreshed cookie still works


def test_permanent_cookie_not_refreshed_when_disabled(make):
    app = make(SESSION_REFRESH_EACH_REQUEST=False)
    client = app.test_client()
    client.get("/permanent/on")
    assert set_cookies(client.get("/noop")) == []
    assert set_cookies(client.get("/get/p")) == []
    assert len(set_cookies(client.get("/set/a/1"))) == 1  # a change still sends it


def test_untouched_browser_session_sends_nothing(make):
    app = make()
    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/noop")
    assert set_cookies(response) == [] and "Vary" not in response.headers


def test_vary_cookie_when_read(make):
    app = make()
    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/get/a")
    assert "Cookie" in response.headers["Vary"]


def test_clear_deletes_the_cookie(make):
    app = make()
    client = app.test_client()
    client.get("/set/a/1")
    response = client.get("/clear")
    assert "Expires=Thu, 01 Jan 1970" in one_cookie(response)
    assert "Cookie" in response.headers["Vary"]
    assert client.get_cookie(cookie_name(app)) is None
    assert client.get("/get/a").json == {"value": None}


def test_flash(make):
    app = make()
    client = app.test_client()
    client.get("/flash/hello")
    client.get("/flash/again")
    assert client.get("/flashes").json == ["hello", "again"]
    assert client.get("/flashes").json == []


def test_test_request_context(make):
    app = make()
    with app.test_request_context():
        assert not session.modified
        session["a"] = 1
        assert session["a"] == 1 and session.modified and session.accessed


@pytest.mark.parametrize("settings", [
    {},
    {"SESSION_COOKIE_DOMAIN": "example.test", "SESSION_COOKIE_PATH": "/app",
     "SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_SAMESITE": "Strict",
     "SESSION_COOKIE_PARTITIONED": True, "SESSION_COOKIE_HTTPONLY": False},
    {"SESSION_COOKIE_SAMESITE": "None", "SESSION_COOKIE_SECURE": True},
], ids=["defaults", "all-set", "samesite-none"])
def test_cookie_attributes_match_flask(settings):
    cookies = []
    for factory in (flask_app, gosession_app):
        app = factory(**settings)
        client = app.test_client()
        cookies.append(one_cookie(client.get("/permanent/on", base_url="https://example.test/")))
    ours, flasks = attributes(cookies[1]), attributes(cookies[0])
    assert ours == flasks, (cookies[1], cookies[0])


# -- the permanence flag (ours only) --------------------------------------


def ours_with_permanent_session(**config: t.Any) -> tuple[Flask, t.Any]:
    app = gosession_app(**config)
    client = app.test_client()
    client.get("/permanent/on")
    return app, client


def test_untouched_refresh_costs_no_store_call():
    app, client = ours_with_permanent_session()
    counter = install(app)
    assert "Expires=" in one_cookie(client.get("/noop"))
    assert counter.total() == 0


def test_cookie_value_flags_a_permanent_session():
    app, client = ours_with_permanent_session()
    value = client.get_cookie("gosessionid").value
    sid, flag = value[:-2], value[-2:]
    assert flag == ".p" and len(sid) == 43
    client.get("/permanent/off")
    assert client.get_cookie("gosessionid").value == sid


def test_browser_session_untouched_request_parses_no_cookie():
    """The common case costs nothing new: without a flag anywhere in the
    Cookie header, the interface never parses it."""
    app = gosession_app()
    client = app.test_client()
    client.get("/set/a/1")
    counter = install(app)
    with app.test_request_context(headers={"Cookie": f"gosessionid={client.get_cookie('gosessionid').value}"}):
        sess = app.session_interface.open_session(app, __import__("flask").request)
        assert not sess.flagged_permanent()
        assert sess._request is not None  # the cookie is still unread
    assert counter.total() == 0


@pytest.mark.parametrize("value", [
    "garbage.p", f"{new_sid()}.p.p", f"{new_sid()[:-1]}.p", f"{new_sid()}x.p", ".p", f"{new_sid()}.P",
])
def test_malformed_flagged_values_are_refused(value):
    app, _ = ours_with_permanent_session()
    client = app.test_client()
    client.set_cookie("gosessionid", value)
    assert set_cookies(client.get("/noop")) == []  # nothing refreshed
    response = client.get("/get/p")
    assert response.json == {"value": None}
    assert "Expires=Thu, 01 Jan 1970" in one_cookie(response)  # refused, as before


def test_flag_on_another_cookie_changes_nothing():
    app = gosession_app()
    client = app.test_client()
    client.get("/set/a/1")
    client.set_cookie("other", "example.p")
    counter = install(app)
    assert set_cookies(client.get("/noop")) == []
    assert client.get("/get/a").json == {"value": "1"}
    assert counter.calls["session_read"] == 1


def test_forged_flag_only_refreshes_and_timeouts_still_apply():
    app = gosession_app(GOSESSION_MAX_LIFETIME=60)
    client = app.test_client()
    client.get("/set/a/1")
    sid = client.get_cookie("gosessionid").value
    client.set_cookie("gosessionid", sid + ".p")
    assert "Expires=" in one_cookie(client.get("/noop"))  # only the client's word
    assert client.get("/get/a").json == {"value": "1"}
    manager = app.extensions["gosession"]
    now = manager.clock()
    manager.clock = lambda: now + 61
    response = client.get("/get/a")
    assert response.json == {"value": None}


def test_url_rewrite_mode_reads_the_flagged_cookie_and_keeps_urls_bare():
    app, client = ours_with_permanent_session(GOSESSION_URL_REWRITE=True)
    value = client.get_cookie("gosessionid").value
    assert value.endswith(".p")
    assert "Expires=" in one_cookie(client.get("/noop"))
    assert client.get("/get/p").json == {"value": 1}
    # A cookieless client follows links with the bare id; the flag has no
    # place in a URL and is refused there.
    sid = value[:-2]
    assert app.test_client().get(f"/get/p?gosessionid={sid}").json == {"value": 1}
    assert app.test_client().get(f"/get/p?gosessionid={sid}.p").json == {"value": None}


def test_expires_tracks_permanent_session_lifetime():
    app, client = ours_with_permanent_session(PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=2))
    before = dt.datetime.now(dt.timezone.utc)
    client.get("/noop")
    expires = client.get_cookie("gosessionid").expires
    assert before + dt.timedelta(hours=2) - dt.timedelta(minutes=1) <= expires
    assert expires <= before + dt.timedelta(hours=2, minutes=1)
