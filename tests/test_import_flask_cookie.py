"""Switching from Flask's signed-cookie session: the import on first visit
(``GOSESSION_IMPORT_FLASK_COOKIE``), with the real Flask-Login."""
from __future__ import annotations

import datetime as dt
import logging
import time
import typing as t

import pytest
from flask.sessions import SecureCookieSessionInterface

import counting
from clock import FakeClock
from flask_gosession import ConfigError, sessions_of
from flask_gosession.ids import label, store_key
from flask_gosession.meta import CREATED, PERMANENT, USER
from helpers import cookie_value, set_cookies
from migration_site import SECRET, TYPED, make_site
from signals_capture import captured, named

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The 'session' cookie is too large")]

IMPORT = {"GOSESSION_IMPORT_FLASK_COOKIE": True, "GOSESSION_GC_INTERVAL": 0}


def old_cookie(config: dict[str, t.Any] | None = None, user: str = "ada") -> str:
    """Log ``user`` in on the app as it ran on Flask's cookie session."""
    old = make_site("flask-cookie", config).test_client()
    assert old.get(f"/login/{user}").status_code == 200
    value = cookie_value(old, "session")
    assert value
    return value


def signed(data: dict[str, t.Any], secret: str = SECRET) -> str:
    app = make_site("flask-cookie", {"SECRET_KEY": secret})
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    return t.cast(str, serializer.dumps(data))


def new_site(request: pytest.FixtureRequest, backend: str = "memory", **config: t.Any) -> t.Any:
    from backends import one_process_config

    app = make_site("gosession", {**one_process_config(request, backend), **IMPORT, **config})
    request.addfinalizer(app.extensions["gosession"].close)
    return app


def deletes(response: t.Any, name: str) -> bool:
    return any(c.startswith(f"{name}=;") and "Expires=Thu, 01 Jan 1970" in c
               for c in set_cookies(response))


@pytest.mark.parametrize("backend", ["memory", "file", "sql_sqlite", "redis"])
def test_a_logged_in_user_stays_logged_in_with_typed_values_and_the_flash(request, backend):
    app = new_site(request, backend)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    with captured() as seen:
        first = client.get("/home")
    assert first.json == {"user": "ada", "flashes": ["Welcome back, <em>ada</em>"],
                          "typed": True, "permanent": True}
    assert deletes(first, "session")
    ours = cookie_value(client)
    assert ours and cookie_value(client, "session") is None
    assert [k["source"] for k in named(seen, "session_imported")] == ["flask-cookie"]
    assert named(seen, "session_imported")[0]["sid_hash"] == label(store_key(ours.removesuffix(".p")))
    # The flash was shown once; the login and the typed values stay.
    assert client.get("/home").json == {"user": "ada", "flashes": [], "typed": True,
                                        "permanent": True}
    provider = app.extensions["gosession"].provider
    assert provider.event_counts() == {"imported:flask-cookie": 1}
    result = app.test_cli_runner().invoke(args=["gosession", "stats"])
    assert "imported:flask-cookie: 1" in result.output, result.output


def test_values_are_typed_exactly_as_flask_decoded_them(request):
    app = new_site(request)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    client.get("/home")
    with app.test_request_context():
        record = app.extensions["gosession"].store.read(
            store_key(cookie_value(client).removesuffix(".p")), time.time())
    from flask_gosession.serializers import untag

    values = {k: untag(v) for k, v in record.data.items()}
    for key, value in TYPED.items():
        assert values[key] == value and type(values[key]) is type(value), key
    assert values["_user_id"] == "ada" and values["_fresh"] is True and "_id" in values
    assert "_permanent" not in values and record.meta[PERMANENT] is True


def test_a_request_that_never_touches_the_session_imports_nothing(request):
    """(Flask-Login's ``after_request`` reads the session on every request,
    so this app has no ``LoginManager``.)"""
    from backends import one_process_config

    app = make_site("gosession", {**one_process_config(request, "file"), **IMPORT},
                    login_manager=False)
    request.addfinalizer(app.extensions["gosession"].close)
    counter = counting.install(app)
    client = app.test_client()
    value = old_cookie()
    client.set_cookie("session", value)
    response = client.get("/noop")
    assert counter.total() == 0, counter.calls
    assert set_cookies(response) == []  # the old cookie is kept for later
    assert cookie_value(client, "session") == value
    with app.test_request_context(headers={"Cookie": f"session={value}"}):
        from flask import session

        assert session["_user_id"] == "ada"  # imported on first use
        app.session_interface.save_session(app, session, app.response_class())
    assert counter.calls["session_init"] == 1 and counter.calls["count_event"] == 1


@pytest.mark.parametrize("value", [
    "garbage", "", "a.b.c", "x" * 9000, "eyJfdXNlcl9pZCI6ImV2ZSJ9.Zz.bad-signature",
])
def test_an_invalid_old_cookie_is_ignored_and_deleted(request, value):
    app = new_site(request)
    counter = counting.install(app)
    client = app.test_client()
    client.set_cookie("session", value)
    response = client.get("/home")
    assert response.status_code == 200 and response.json["user"] is None
    if value:
        assert deletes(response, "session")
    assert counter.calls["session_init"] == 0  # nothing adopted, nothing stored


def test_a_cookie_signed_with_another_key_is_never_adopted(request):
    app = new_site(request)
    client = app.test_client()
    client.set_cookie("session", signed({"_user_id": "eve", "_fresh": True}, secret="forged"))
    response = client.get("/home")
    assert response.json["user"] is None and deletes(response, "session")
    assert cookie_value(client) is None


def test_a_tampered_cookie_is_never_adopted(request):
    value = old_cookie()
    payload, rest = value.split(".", 1)
    tampered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest
    app = new_site(request)
    client = app.test_client()
    client.set_cookie("session", tampered)
    assert client.get("/home").json["user"] is None


def test_secret_key_fallbacks_sign_cookies_that_still_import(request):
    value = old_cookie({"SECRET_KEY": "last-years-key"})
    app = new_site(request, SECRET_KEY="this-years-key", SECRET_KEY_FALLBACKS=["last-years-key"])
    client = app.test_client()
    client.set_cookie("session", value)
    assert client.get("/home").json["user"] == "ada"


def test_a_cookie_older_than_flasks_own_lifetime_is_not_imported(request):
    app = new_site(request, PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=1))
    value = signed({"_user_id": "ada", "_fresh": True})
    time.sleep(2.1)
    client = app.test_client()
    client.set_cookie("session", value)
    response = client.get("/home")
    assert response.json["user"] is None and deletes(response, "session")


def test_the_signature_time_counts_toward_the_absolute_timeout(request):
    """An import never extends a session's life."""
    value = old_cookie()
    signed_at = int(time.time())
    clock = FakeClock(signed_at + 1000)
    from backends import one_process_config

    app = make_site("gosession", {**one_process_config(request, "memory"), **IMPORT,
                                  "GOSESSION_ABSOLUTE_LIFETIME": 4000,
                                  "GOSESSION_ROTATE_AFTER": None}, clock=clock)
    client = app.test_client()
    client.set_cookie("session", value)
    assert client.get("/home").json["user"] == "ada"
    with app.test_request_context():
        key = store_key(cookie_value(client).removesuffix(".p"))
        record = app.extensions["gosession"].store.read(key, clock())
    assert signed_at - 1 <= record.meta[CREATED] <= signed_at + 1
    clock.advance(2900)  # 3900 s after the old cookie was signed
    assert client.get("/home").json["user"] == "ada"
    clock.advance(200)  # 4100 s: over the absolute lifetime
    assert client.get("/home").json["user"] is None
    # One already past the absolute lifetime is not imported at all.
    late = app.test_client()
    late.set_cookie("session", value)
    assert late.get("/home").json["user"] is None


def test_after_the_window_old_cookies_are_only_deleted(request):
    yesterday = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).date()
    app = new_site(request, GOSESSION_IMPORT_UNTIL=yesterday.isoformat())
    counter = counting.install(app)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    response = client.get("/home")
    assert response.json["user"] is None and deletes(response, "session")
    assert counter.calls["session_init"] == 0
    # Even a request that never uses the session deletes it.
    from backends import one_process_config

    bare = make_site("gosession", {**one_process_config(request, "memory"), **IMPORT,
                                   "GOSESSION_IMPORT_UNTIL": yesterday}, login_manager=False)
    bare_counter = counting.install(bare)
    client = bare.test_client()
    client.set_cookie("session", old_cookie())
    response = client.get("/noop")
    assert deletes(response, "session") and bare_counter.total() == 0


def test_inside_the_window_cookies_import(request):
    tomorrow = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
    app = new_site(request, GOSESSION_IMPORT_UNTIL=tomorrow)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    assert client.get("/home").json["user"] == "ada"


@pytest.mark.parametrize("name", ["session", "gosessionid"])
def test_both_cookie_names_work(request, name):
    """Our cookie named like Flask's (``session``) or not (the default)."""
    app = new_site(request, GOSESSION_COOKIE_NAME=name)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    first = client.get("/home")
    assert first.json["user"] == "ada" and first.json["flashes"]
    ours = cookie_value(client, name)
    assert ours and len(ours.removesuffix(".p")) < 100  # one of our ids, not the old cookie
    if name == "session":
        assert not deletes(first, "session")  # our Set-Cookie replaced it
    else:
        assert cookie_value(client, "session") is None
    again = client.get("/home")
    assert again.json == {"user": "ada", "flashes": [], "typed": True, "permanent": True}
    # A later invalid value under the shared name is refused and removed.
    if name == "session":
        other = app.test_client()
        other.set_cookie("session", "not-an-id-and-not-a-flask-cookie")
        response = other.get("/home")
        assert response.json["user"] is None and deletes(response, "session")


def test_with_the_flask_login_integration_the_import_is_bound_to_the_user(request):
    app = new_site(request, "redis", GOSESSION_FLASK_LOGIN=True)
    client = app.test_client()
    client.set_cookie("session", old_cookie(user="grace"))
    assert client.get("/home").json["user"] == "grace"
    with app.test_request_context():
        devices = sessions_of("grace")
        key = store_key(cookie_value(client).removesuffix(".p"))
        assert app.extensions["gosession"].store.read(key, time.time()).meta[USER] == "grace"
    assert len(devices) == 1
    assert client.get("/logout").status_code == 200
    with app.test_request_context():
        assert sessions_of("grace") == []


def test_a_refused_request_keeps_the_old_cookie_for_the_next_one(request):
    app = new_site(request, GOSESSION_TOKEN_CHECK=True)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    response = client.post("/login/ada")  # no token: refused
    assert response.status_code in (400, 403)
    assert not deletes(response, "session")
    assert client.get("/home").json["user"] == "ada"


def test_a_store_outage_keeps_the_old_cookie(request, redis_server):
    server = redis_server
    app = make_site("gosession", {"GOSESSION_PROVIDER": "redis",
                                  "GOSESSION_REDIS_URL": server.url, **IMPORT})
    request.addfinalizer(app.extensions["gosession"].close)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    server.kill()
    response = client.get("/home")
    assert response.status_code == 503 and not deletes(response, "session")
    server.start()
    assert client.get("/home").json["user"] == "ada"


@pytest.mark.parametrize("config, message", [
    ({"SECRET_KEY": None}, "SECRET_KEY"),
    ({"GOSESSION_IMPORT_UNTIL": "next tuesday"}, "GOSESSION_IMPORT_UNTIL"),
    ({"GOSESSION_IMPORT_FLASK_COOKIE": "maybe"}, "GOSESSION_IMPORT_FLASK_COOKIE"),
])
def test_bad_settings_are_refused_at_startup(config, message):
    with pytest.raises(ConfigError, match=message):
        make_site("gosession", {**IMPORT, **config})


def test_without_an_import_nothing_looks_at_old_cookies():
    app = make_site("gosession")
    assert app.extensions["gosession"].importer is None
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    response = client.get("/home")
    assert response.json["user"] is None and not deletes(response, "session")


def test_the_import_logs_no_raw_id(request, caplog):
    app = new_site(request)
    client = app.test_client()
    value = old_cookie()
    client.set_cookie("session", value)
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
        client.get("/home")
    assert value not in caplog.text and cookie_value(client) not in caplog.text


def test_the_cost_of_an_import_is_the_new_session_plus_one_counter(request):
    """Round trips: an import is the ``init`` any new session costs plus
    one ``count_event``; no read (no id of ours was presented)."""
    app = new_site(request, "redis")
    counter = counting.install(app)
    client = app.test_client()
    client.set_cookie("session", old_cookie())
    client.get("/home")
    assert dict(counter.calls) == {"session_init": 1, "count_event": 1}
    counter.reset()
    client.get("/home")  # then an ordinary read
    assert dict(counter.calls) == {"session_read": 1}


def test_a_lingering_old_cookie_beside_ours_is_deleted_not_imported(request):
    app = new_site(request)
    client = app.test_client()
    client.set_cookie("session", old_cookie(user="ada"))
    assert client.get("/home").json["user"] == "ada"
    client.set_cookie("session", old_cookie(user="mallory"))  # an old copy comes back
    with captured() as seen:
        response = client.get("/home")
    assert response.json["user"] == "ada" and deletes(response, "session")
    assert named(seen, "session_imported") == []


def test_concurrent_first_requests_each_import_and_both_stay_logged_in(request):
    """A page and its parallel requests all carry the old cookie: each
    imports (a Flask cookie is self-contained), none is logged out."""
    from helpers import together
    from liveserver import request as http
    from liveserver import serve

    app = new_site(request, "redis")
    value = old_cookie()
    with serve(app) as port:
        results = together([
            lambda: http(port, "/home", headers={"Cookie": f"session={value}"})
            for _ in range(8)
        ])
        for status, body, new in results:
            assert status == 200 and '"user":"ada"' in body.replace(" ", "") and new
        assert len({new for _, _, new in results}) == 8
        for _, _, new in results:  # whichever Set-Cookie the browser kept works
            status, body, _ = http(port, "/home", cookie=new)
            assert '"user":"ada"' in body.replace(" ", "")


def test_a_flask_wtf_form_rendered_before_the_switch_still_submits(request):
    """Flask-WTF keeps its CSRF secret in the session: it is imported with
    the rest, so a form opened before the deploy submits after it."""
    from flask import session
    from flask_wtf.csrf import CSRFProtect, generate_csrf

    def site(mode: str, config: dict[str, t.Any]) -> t.Any:
        app = make_site(mode, config, login_manager=False)
        CSRFProtect(app)

        @app.get("/form")
        def form() -> str:
            return generate_csrf()

        @app.post("/submit")
        def submit() -> str:
            session["done"] = True
            return "accepted"

        return app

    from backends import one_process_config

    old = site("flask-cookie", {}).test_client()
    token = old.get("/form").text
    value = cookie_value(old, "session")
    new = site("gosession", {**one_process_config(request, "memory"), **IMPORT})
    request.addfinalizer(new.extensions["gosession"].close)
    client = new.test_client()
    client.set_cookie("session", value)
    response = client.post("/submit", data={"csrf_token": token})
    assert response.status_code == 200 and response.text == "accepted"
    assert cookie_value(client) and cookie_value(client, "session") is None
