"""An outside review of the import of earlier sessions (issue 15), attacked
over real HTTP on a threaded server, with the real Redis, memcached, SQL,
Flask-Session 0.8 and Flask-Login.

Tests whose docstring starts "Found by the review" failed on the code as
reviewed, each showing one defect, now fixed; the others guard what held.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import struct
import time
import typing as t

import pytest
from flask import Flask, jsonify, session
from flask.sessions import SecureCookieSessionInterface

from flask_gosession.ids import store_key
from flask_gosession.importing import flask_session as fs
from flask_gosession.importing import parse_until
from helpers import together
from liveserver import serve
from migration_site import SECRET, make_site
from signals_capture import captured, named

pytest.importorskip("flask_session")

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The 'session' cookie is too large")]

COOKIE_IMPORT = {"GOSESSION_IMPORT_FLASK_COOKIE": True, "GOSESSION_GC_INTERVAL": 0}


# -- raw HTTP with any cookies -----------------------------------------------------------


def http(port: int, path: str, cookies: dict[str, str] | None = None, method: str = "GET",
         headers: dict[str, str] | None = None, body: bytes | None = None
         ) -> tuple[int, str, dict[str, str]]:
    """One request with ``cookies``; (status, body, the cookies the response sets,
    ``""`` for a deletion)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        all_headers = dict(headers or {})
        if cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        setting: dict[str, str] = {}
        for header in response.headers.get_all("Set-Cookie") or []:
            pair = header.split(";", 1)[0]
            name, _, value = pair.partition("=")
            setting[name] = "" if "Expires=Thu, 01 Jan 1970" in header else value
        return response.status, text, setting
    finally:
        conn.close()


def user_of(body: str) -> t.Any:
    return json.loads(body)["user"]


def flask_cookie(user: str = "ada", config: dict[str, t.Any] | None = None) -> str:
    """The Flask session cookie of ``user`` logged in on the site before the switch."""
    old = make_site("flask-cookie", config).test_client()
    assert old.get(f"/login/{user}").status_code == 200
    cookie = old.get_cookie("session")
    assert cookie is not None
    return cookie.value


def signed(data: dict[str, t.Any], secret: str = SECRET) -> str:
    app = make_site("flask-cookie", {"SECRET_KEY": secret})
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    return t.cast(str, serializer.dumps(data))


def cookie_site(request: pytest.FixtureRequest, backend: str = "redis", **config: t.Any) -> Flask:
    from backends import one_process_config

    app = make_site("gosession", {**one_process_config(request, backend), **COOKIE_IMPORT, **config})
    request.addfinalizer(app.extensions["gosession"].close)
    return app


# -- races between the first requests after the deploy ------------------------------------


@pytest.mark.parametrize("policy", ["evict", "refuse"])
def test_parallel_first_requests_under_a_session_limit_leave_the_browser_logged_in(request, policy):
    """Found by the review (fixed: an import binds when it is stored, as the
    device of the old cookie). A page's parallel requests (assets, XHR) all carry the old
    cookie right after the deploy. With ``GOSESSION_FLASK_LOGIN`` each
    import binds a *separate* new session to the user; under
    ``GOSESSION_MAX_SESSIONS_PER_USER`` the later ones evict the earlier
    ones (``evict``) or are signed out (``refuse``). The browser keeps
    whichever ``Set-Cookie`` arrives last, so it may end up logged out:
    the import logged a user out, which the feature promises never to do,
    and one browser fills the user's device list with phantom devices.

    Every cookie handed out must still be logged in afterwards."""
    app = cookie_site(request, "redis", GOSESSION_FLASK_LOGIN=True,
                      GOSESSION_MAX_SESSIONS_PER_USER=3, GOSESSION_SESSION_LIMIT_POLICY=policy)
    value = flask_cookie("ada")
    with serve(app) as port:
        results = together([lambda: http(port, "/home", {"session": value}) for _ in range(8)])
        assert all(status == 200 for status, _, _ in results)
        ours = [setting.get("gosessionid") for _, _, setting in results]
        logged_out = []
        for cookie in ours:
            if not cookie:  # the response deleted our cookie, or set none
                logged_out.append(cookie)
                continue
            status, body, _ = http(port, "/home", {"gosessionid": cookie})
            if status != 200 or user_of(body) != "ada":
                logged_out.append(cookie)
        assert logged_out == [], f"{len(logged_out)} of 8 cookies the browser may keep are logged out"


# -- Flask-Session 0.8 on the same Redis ------------------------------------------------


def fs_pair(request: pytest.FixtureRequest, **config: t.Any) -> tuple[Flask, Flask]:
    """(the site on Flask-Session 0.8 with Redis, the same site redeployed on
    ours, importing), sharing one Redis and Flask-Session's key prefix."""
    import redis

    backend = request.getfixturevalue("backend_redis")
    client = redis.Redis.from_url(backend["GOSESSION_REDIS_URL"])
    request.addfinalizer(client.close)
    fs_config = {"SESSION_TYPE": "redis", "SESSION_REDIS": client,
                 "SESSION_KEY_PREFIX": f"fs-{secrets.token_hex(6)}:"}
    old = make_site("flask-session", fs_config)
    new = make_site("gosession", {**backend, "SESSION_KEY_PREFIX": fs_config["SESSION_KEY_PREFIX"],
                                  "GOSESSION_IMPORT_FLASK_SESSION": True, "GOSESSION_GC_INTERVAL": 0,
                                  **config})
    request.addfinalizer(new.extensions["gosession"].close)
    return old, new


def fs_login(old: Flask, user: str = "ada") -> str:
    client = old.test_client()
    assert client.get(f"/login/{user}").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_parallel_first_requests_each_import_and_none_is_logged_out(request):
    """Decided after the review: the old record is deleted once our session
    holding it is stored, not claimed atomically before. Requests already in
    flight then (a page's parallel requests) import it too, each into a
    session of its own, so none of them shows the user logged out and none
    can leave the browser with a logged-out cookie. An atomic take would
    count one import, but would log out every other in-flight request (and
    lose the session if our store failed right after the take). After the
    first import's save, the record is gone: a later replay imports nothing."""
    old, new = fs_pair(request)

    @new.get("/slow")
    def slow() -> t.Any:  # a page that takes a while to render, as real ones do
        user = session.get("_user_id")
        time.sleep(0.3)
        return jsonify(user=user)

    value = fs_login(old)
    with serve(new) as port, captured() as seen:
        results = together([lambda: http(port, "/slow", {"session": value}) for _ in range(8)])
        assert all(status == 200 and user_of(body) == "ada" for status, body, _ in results)
        assert 1 <= len(named(seen, "session_imported")) <= 8
        status, body, _ = http(port, "/slow", {"session": value})
        assert status == 200 and user_of(body) is None  # the record is gone now


# -- the store's own keys, presented as a Flask-Session id --------------------------------


@pytest.mark.parametrize("backend", ["memcached", "redis"])
@pytest.mark.parametrize("theirs", ["same", "longer", "shorter"])
def test_a_store_key_of_ours_is_never_importable_as_a_flask_session_id(request, backend, theirs):
    """Found by the review (high on memcached when so configured): our store
    keys are 64 hex digits, which Flask-Session's id pattern accepts, so with
    ``GOSESSION_KEY_PREFIX`` equal to ``SESSION_KEY_PREFIX`` a key read from
    a store dump, presented as the old cookie, imported the victim's record
    (and deleted it). Overlapping prefixes are now refused at startup."""
    from flask_gosession import ConfigError

    config: dict[str, t.Any] = dict(request.getfixturevalue(f"backend_{backend}"))
    prefix = config["GOSESSION_KEY_PREFIX"]
    old_prefix = {"same": prefix, "longer": prefix + "fs", "shorter": prefix[:-1]}[theirs]
    with pytest.raises(ConfigError, match="must not overlap"):
        make_site("gosession", {**config, "SESSION_KEY_PREFIX": old_prefix,
                                "GOSESSION_IMPORT_FLASK_SESSION": True})


@pytest.mark.parametrize("backend", ["memcached", "redis"])
def test_with_distinct_prefixes_a_key_of_ours_imports_nothing(request, backend):
    config: dict[str, t.Any] = dict(request.getfixturevalue(f"backend_{backend}"))
    app = make_site("gosession", {**config, "SESSION_KEY_PREFIX": "fs-" + secrets.token_hex(4) + ":",
                                  "GOSESSION_IMPORT_FLASK_SESSION": True, "GOSESSION_GC_INTERVAL": 0})
    request.addfinalizer(app.extensions["gosession"].close)

    @app.get("/dump")
    def dump() -> str:
        return repr(dict(session))

    with serve(app) as port:
        status, _, setting = http(port, "/login/victim")
        assert status == 200
        sid = setting["gosessionid"].removesuffix(".p")
        status, body, _ = http(port, "/dump", {"session": store_key(sid)})
        assert status == 200 and "victim" not in body
        status, body, _ = http(port, "/home", {"gosessionid": sid})
        assert status == 200 and user_of(body) == "victim"


# -- hostile cookie values ----------------------------------------------------------------

HOSTILE = [
    "", ".", ".p", "..p", "x" * 9000, "a" * 43, "a" * 43 + ".p", "a" * 64, "a" * 128 + ".p",
    "%00%ff", "../../../../etc/passwd", "..%2f..%2fetc%2fpasswd", "\\u0000", "e30.AAAA.BBBB",
    ".eJzLSM3JyVcozy_KSQEAGgQEXQ.aaaa.bbbb",  # a "compressed" payload, unsigned
    signed({"_user_id": "ada"}, secret="not-the-secret"),
    "a" * 43 + "." + "b" * 27,  # shaped like a signed Flask-Session id
]


def hostile_site(request: pytest.FixtureRequest, cookie_name: str, **config: t.Any) -> Flask:
    return cookie_site(request, "redis", GOSESSION_IMPORT_FLASK_SESSION=True,
                       GOSESSION_COOKIE_NAME=cookie_name, **config)


@pytest.mark.parametrize("cookie_name", ["gosessionid", "session"])
def test_hostile_old_cookies_never_500_and_are_never_adopted(request, cookie_name):
    signer = {"SESSION_USE_SIGNER": True}
    for config in ({}, signer):
        app = hostile_site(request, cookie_name, **config)
        with serve(app) as port:
            for value in [*HOSTILE, signed([1, 2]), signed({"_user_id": ["x"], "_permanent": "x"})]:
                status, body, setting = http(port, "/home", {"session": value})
                assert status == 200, (value, status, body[:200])
                assert user_of(body) in (None, "['x']"), value  # only the app's own signed value
                assert "Traceback" not in body
                if cookie_name == "session" and value:
                    # Never confirmed: the hostile value is replaced or deleted.
                    assert setting.get("session", "") != value, value


@pytest.mark.parametrize("cookie_name", ["gosessionid", "session"])
def test_a_valid_session_of_ours_is_never_replaced_by_an_old_one(request, cookie_name):
    """Fixation the other way: a Flask cookie planted beside (or, with one
    name, over an expired copy of) a live session of ours never replaces it."""
    app = hostile_site(request, cookie_name)
    with serve(app) as port:
        status, _, setting = http(port, "/login/victim", {})
        ours = setting[cookie_name]
        planted = flask_cookie("mallory")
        if cookie_name == "gosessionid":
            status, body, setting = http(port, "/home", {"gosessionid": ours, "session": planted})
            assert user_of(body) == "victim" and setting.get("session") == ""
        status, body, _ = http(port, "/home", {cookie_name: ours})
        assert user_of(body) == "victim"


# -- hostile records ----------------------------------------------------------------------


def _pickle_str(value: bytes) -> bytes:
    return b"X" + struct.pack("<I", len(value)) + value


def test_a_memoized_string_cannot_multiply_a_file_record_in_memory(tmp_path):
    """Found by the review (fixed: memo fetches count toward a size limit)
    (low: needs write access to Flask-Session's directory, or an old
    app that stored one string object many times). The data-only pickle
    reader lets ``BINGET`` push the same memoized string again and again:
    2 bytes of record per copy. A 1 MiB record holding one 200 KiB string
    and 400,000 ``BINGET`` is 80 GB of session once our serializer writes
    it (the import's ``_storable`` check does exactly that): the worker
    dies of memory on the first request. Here a bounded version, 64 KiB x
    2,000 (128 MiB from 70 KiB), must be refused like an oversized record."""
    blob = b"\x80\x05}" + _pickle_str(b"cart") + b"](" + _pickle_str(b"A" * 65536) + b"q\x00"
    blob += b"h\x00" * 2000 + b"es."
    path = tmp_path / "record"
    path.write_bytes(struct.pack("I", 0) + blob)
    assert len(blob) < 80_000
    try:
        record = fs._fetch_file(str(path), time.time())
    except fs.LegacyRefused:
        return
    size = sum(len(item) for item in t.cast(t.Any, record).data["cart"])
    pytest.fail(f"a {len(blob)}-byte record decoded into {size} bytes of session")


@pytest.mark.parametrize("blob", [
    b"\x80\x05" + b"]" * 200_000 + b"a" * 199_999 + b".",  # 200,000 lists deep
    b"\x80\x05" + b"\x8b" + struct.pack("<I", 2 ** 31) + b"\x00" * 16 + b".",  # a 2 GiB integer
    b"\x80\x05" + b"\x8d" + struct.pack("<Q", 2 ** 62) + b"x.",  # an 8 EiB string
    b"\x80\x05" + b"\x8e" + struct.pack("<Q", 2 ** 64 - 1) + b".",
    b"\x80\x05" + b"\x8a\x40" + b"\xff" * 64 + b".",  # a 512-bit integer: plain, not a dict
    b"\x80\x05}(" + b"]q\x00" + b"h\x00" + b"Nu.",  # a list as a key, via the memo
    b"\x80\x05(" * 100_000 + b".",
])
def test_hostile_file_records_are_refused_quickly(tmp_path, blob):
    path = tmp_path / "record"
    path.write_bytes(struct.pack("I", 0) + blob)
    started = time.monotonic()
    with pytest.raises(fs.LegacyRefused):
        fs._fetch_file(str(path), time.time())
    assert time.monotonic() - started < 5


def test_hostile_redis_records_never_500_over_http(request):
    """Records in Flask-Session's place in Redis that no Flask-Session would
    write: each visitor gets a fresh, empty session and a 200."""
    import msgspec

    old, new = fs_pair(request)
    prefix = new.config["SESSION_KEY_PREFIX"]
    client = old.config["SESSION_REDIS"]
    records = [
        b"\x81\xa1a" + b"\x91" * 50_000 + b"\xc0",  # a msgpack dict holding 50,000 nested lists
        b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"_user_id": 1' + b"0" * 5000 + b"}",  # an integer of 5000 digits
        msgspec.msgpack.encode({"_user_id": 2 ** 64 - 1, "f": float("nan")}),
        msgspec.msgpack.encode({"_user_id": True}),
        msgspec.msgpack.encode({"_user_id": {"nested": "dict"}}),
        msgspec.msgpack.encode({"x": msgspec.msgpack.Ext(5, b"data")}),
        b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items, announced
        b"\xdb\xff\xff\xff\xff",  # a string of 4 GiB, announced
        b"\x80\x04\x95" + b"\x00" * 8 + b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93.",
        b"x" * (fs.MAX_RECORD_SIZE + 1),
    ]
    with serve(new) as port:
        for raw in records:
            sid = secrets.token_urlsafe(32)
            client.set(prefix + sid, raw, ex=600)
            status, body, setting = http(port, "/home", {"session": sid})
            assert status == 200, (raw[:40], status, body[:300])
            assert user_of(body) in (None, "18446744073709551615", "True", "{'nested': 'dict'}"), raw[:40]


def spy_legacy(app: Flask) -> list[str]:
    """Record every call our provider makes for the import and the session."""
    provider = app.extensions["gosession"].provider
    calls: list[str] = []
    for name in ("legacy_get", "legacy_delete", "session_init", "session_create", "session_read",
                 "session_update", "session_touch", "count_event", "index_write"):
        method = getattr(provider, name)

        def spied(*args: t.Any, _name: str = name, _method: t.Any = method, **kw: t.Any) -> t.Any:
            calls.append(_name)
            return _method(*args, **kw)

        setattr(provider, name, spied)
    return calls


# -- what held: fixation, replay, laziness, outages, tokens, lifetimes, logs ------------


def test_a_planted_flask_session_id_never_shares_a_session(request):
    """Mallory plants her Flask-Session id in Ada's browser. Ada's first
    visit imports Mallory's session (as Flask-Session would have shown
    it: no worse than before), into a fresh id of ours; Ada then logs in
    as herself. Mallory's id, replayed, reaches nothing: not Ada's session,
    not even her own any more."""
    old, new = fs_pair(request, GOSESSION_FLASK_LOGIN=True)
    planted = fs_login(old, "mallory")
    with serve(new) as port:
        status, body, setting = http(port, "/home", {"session": planted})
        assert user_of(body) == "mallory" and setting["session"] == ""
        ada = setting["gosessionid"]
        status, body, setting = http(port, "/login/ada", {"gosessionid": ada})
        assert status == 200
        ada = setting["gosessionid"]
        assert user_of(http(port, "/home", {"gosessionid": ada})[1]) == "ada"
        for cookies in ({"session": planted}, {"gosessionid": planted}):
            status, body, _ = http(port, "/home", cookies)
            assert status == 200 and user_of(body) is None


def test_a_replayed_flask_session_cookie_imports_nothing_the_second_time(request):
    old, new = fs_pair(request)
    value = fs_login(old)
    with serve(new) as port:
        assert user_of(http(port, "/home", {"session": value})[1]) == "ada"
        for _ in range(3):
            status, body, setting = http(port, "/home", {"session": value})
            assert status == 200 and user_of(body) is None and "gosessionid" not in setting


def test_an_untouched_request_costs_no_store_call_for_either_import(request):
    import redis

    backend = request.getfixturevalue("backend_redis")
    client = redis.Redis.from_url(backend["GOSESSION_REDIS_URL"])
    request.addfinalizer(client.close)
    prefix = f"fs-{secrets.token_hex(6)}:"
    old = make_site("flask-session", {"SESSION_TYPE": "redis", "SESSION_REDIS": client,
                                      "SESSION_KEY_PREFIX": prefix})
    for name in ("gosessionid", "session"):
        app = make_site("gosession", {**backend, **COOKIE_IMPORT, "SESSION_KEY_PREFIX": prefix,
                                      "GOSESSION_IMPORT_FLASK_SESSION": True,
                                      "GOSESSION_COOKIE_NAME": name}, login_manager=False)
        request.addfinalizer(app.extensions["gosession"].close)
        calls = spy_legacy(app)
        value = fs_login(old)
        with serve(app) as port:
            for cookie in (value, flask_cookie(), "garbage"):
                status, _, setting = http(port, "/noop", {"session": cookie})
                assert status == 200 and setting == {}
        assert calls == []


def test_a_redis_outage_during_the_import_is_a_503_that_loses_nothing(request, redis_server):
    """Flask-Session's Redis is ours: down during the first request, it is
    a 503 that keeps the old cookie and record; back up, the import works."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    request.addfinalizer(client.close)
    fs_config = {"SESSION_TYPE": "redis", "SESSION_REDIS": client, "SESSION_KEY_PREFIX": "session:"}
    old = make_site("flask-session", fs_config)
    new = make_site("gosession", {"GOSESSION_PROVIDER": "redis", "GOSESSION_REDIS_URL": redis_server.url,
                                  "GOSESSION_IMPORT_FLASK_SESSION": True, "GOSESSION_GC_INTERVAL": 0})
    request.addfinalizer(new.extensions["gosession"].close)
    value = fs_login(old)
    with serve(new) as port:
        redis_server.pause()
        try:
            status, body, setting = http(port, "/home", {"session": value})
        finally:
            redis_server.resume()
        assert status == 503 and setting.get("session") != "" and "Traceback" not in body
        assert client.exists("session:" + value)
        status, body, setting = http(port, "/home", {"session": value})
        assert status == 200 and user_of(body) == "ada" and setting["session"] == ""
        assert not client.exists("session:" + value)


def test_a_post_refused_by_the_token_check_keeps_the_record_and_binds_nobody(request):
    """Found by the review (fixed: binding waits for the save)
    (medium, with GOSESSION_FLASK_LOGIN and a per-user limit). The
    first request after the deploy is a form POST rendered by the old
    system, so without our token (the check is on by default): refused, as
    it must be. But the import already bound the user when the token check
    loaded the session: an index entry for a session that will never be
    written, which counts as a login in flight for 30 s. The next GET's
    import then finds the user at the limit: under ``refuse`` the user is
    logged out (the import's login keys are dropped), under ``evict`` a
    live device of theirs is signed out. The bind must wait until the
    request is accepted."""
    from flask_gosession import sessions_of

    old, new = fs_pair(request, GOSESSION_TOKEN_CHECK=True, GOSESSION_FLASK_LOGIN=True,
                       GOSESSION_MAX_SESSIONS_PER_USER=1, GOSESSION_SESSION_LIMIT_POLICY="refuse")
    value = fs_login(old)
    with serve(new) as port:
        for _ in range(1):
            status, _, setting = http(port, "/logout", {"session": value}, method="POST")
            assert status in (400, 403) and "session" not in setting and "gosessionid" not in setting
        status, body, setting = http(port, "/home", {"session": value})
        assert status == 200 and user_of(body) == "ada" and setting["session"] == ""
    with new.test_request_context():
        assert len(sessions_of("ada")) == 1


def test_the_import_never_extends_a_flask_session_records_life(request):
    """A record Flask-Session last saved 3000 s ago (its TTL says so) keeps
    that age under our absolute lifetime; past it, it is not imported."""
    from flask_gosession.meta import CREATED

    for absolute, imported in ((3500, True), (2500, False)):
        old, new = fs_pair(request, GOSESSION_ABSOLUTE_LIFETIME=absolute, GOSESSION_MAX_LIFETIME=1800,
                           PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=3600))
        old.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(seconds=3600)
        value = fs_login(old)
        key = new.config["SESSION_KEY_PREFIX"] + value
        old.config["SESSION_REDIS"].expire(key, 600)
        with serve(new) as port:
            status, body, setting = http(port, "/home", {"session": value})
        assert status == 200 and (user_of(body) == "ada") is imported
        if imported:
            sid = setting["gosessionid"].removesuffix(".p")
            with new.test_request_context():
                record = new.extensions["gosession"].store.read(store_key(sid), time.time())
            assert abs(record.meta[CREATED] - (time.time() - 3000)) < 30
            assert setting["gosessionid"].endswith(".p")  # permanent carried over


@pytest.mark.parametrize("until, open_now", [
    (dt.date.today() - dt.timedelta(days=1), False),
    (dt.datetime.now(dt.timezone.utc).date(), True),  # the whole of today, UTC
    (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=30), False),
    # (Computed when the tests are collected: the open ones must stay open
    # for the whole run, so they end hours away, never minutes.)
    ((dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=6)).isoformat(), True),
    ((dt.datetime.now(dt.timezone(dt.timedelta(hours=-5))) - dt.timedelta(minutes=5)).isoformat(),
     False),
    ((dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
     False),
])
def test_the_migration_window_ends_exactly_when_configured(request, until, open_now):
    app = cookie_site(request, "redis", GOSESSION_IMPORT_UNTIL=until)
    with serve(app) as port:
        status, body, setting = http(port, "/home", {"session": flask_cookie()})
    assert status == 200 and (user_of(body) == "ada") is open_now
    assert setting["session"] == ""


def test_after_the_window_old_cookies_go_without_a_store_call(request):
    app = make_site("gosession", {**request.getfixturevalue("backend_redis"), **COOKIE_IMPORT,
                                  "GOSESSION_IMPORT_UNTIL": "2000-01-01"}, login_manager=False)
    request.addfinalizer(app.extensions["gosession"].close)
    calls = spy_legacy(app)
    with serve(app) as port:
        status, _, setting = http(port, "/noop", {"session": flask_cookie()})
    assert status == 200 and setting == {"session": ""} and calls == []


def test_until_values_that_are_not_dates_are_refused():
    for value in ("soon", 12, dt.time(10), "2026-13-01", "2026-12-02T25:00"):
        with pytest.raises((ValueError, TypeError)):
            parse_until(value)


def test_no_raw_old_id_reaches_the_log(request, caplog):
    """Neither the Flask-Session id (the old system's bearer credential,
    and importable here) nor our new id is ever logged: import, refused
    pickle, garbage, and an outage."""
    import pickle

    old, new = fs_pair(request)
    value = fs_login(old)
    client = old.config["SESSION_REDIS"]
    pickled = secrets.token_urlsafe(32)
    client.set(new.config["SESSION_KEY_PREFIX"] + pickled, pickle.dumps({"_user_id": "x"}), ex=60)
    ours = []
    with caplog.at_level(logging.DEBUG), serve(new) as port:
        for sid in (value, pickled, "A" * 43):
            status, _, setting = http(port, "/home", {"session": sid})
            assert status == 200
            if setting.get("gosessionid"):
                ours.append(setting["gosessionid"].removesuffix(".p"))
    assert ours
    for secret in (value, pickled, *ours):
        assert secret not in caplog.text


def test_a_refused_post_never_signs_out_another_device(request):
    """Found by the review (fixed) (medium), the ``evict`` side of the one above: Ada's phone is
    migrated already; her laptop's first request is an old form's POST,
    refused by the token check. Its import's bind has already evicted the
    phone (limit 1), though the laptop got nothing but an error."""
    app = cookie_site(request, "redis", GOSESSION_TOKEN_CHECK=True, GOSESSION_FLASK_LOGIN=True,
                      GOSESSION_MAX_SESSIONS_PER_USER=1, GOSESSION_SESSION_LIMIT_POLICY="evict")
    with serve(app) as port:
        status, body, setting = http(port, "/home", {"session": flask_cookie("ada")})
        phone = setting["gosessionid"]
        assert user_of(body) == "ada"
        status, _, _ = http(port, "/logout", {"session": flask_cookie("ada")}, method="POST")
        assert status in (400, 403)
        status, body, _ = http(port, "/home", {"gosessionid": phone})
        assert status == 200 and user_of(body) == "ada", "a refused request signed out the phone"


def test_one_cookie_name_for_both_a_flask_session_id_is_imported_and_replaced(request):
    """``GOSESSION_COOKIE_NAME = "session"``: a Flask-Session id (43
    characters, shaped exactly like ours) is first looked up as ours,
    refused, then imported; our ``Set-Cookie`` replaces it, and the old
    record is gone."""
    old, new = fs_pair(request, GOSESSION_COOKIE_NAME="session")
    value = fs_login(old)
    client = old.config["SESSION_REDIS"]
    with serve(new) as port:
        status, body, setting = http(port, "/home", {"session": value})
        assert status == 200 and user_of(body) == "ada"
        ours = setting["session"]
        assert ours and ours.removesuffix(".p") != value
        assert not client.exists(new.config["SESSION_KEY_PREFIX"] + value)
        assert user_of(http(port, "/home", {"session": ours})[1]) == "ada"
        assert user_of(http(port, "/home", {"session": value})[1]) is None


def test_a_session_cookie_stays_a_session_cookie(request):
    """``permanent`` carries over both ways: a non-permanent Flask session
    becomes a browser-session cookie of ours (no ``Expires``)."""
    import http.client

    app = cookie_site(request, "redis")
    with serve(app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/home", headers={"Cookie": "session=" + signed({"_user_id": "ada"})})
        response = conn.getresponse()
        assert json.loads(response.read())["permanent"] is False
        ours = [h for h in response.headers.get_all("Set-Cookie") or [] if h.startswith("gosessionid=")]
        conn.close()
    assert len(ours) == 1 and "Expires" not in ours[0] and ".p;" not in ours[0]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_a_strange_file_in_flask_sessions_directory_is_refused_not_an_outage(request, tmp_path, kind):
    """Found by the review (fixed: O_NONBLOCK, and ELOOP is no outage)
    (low: needs a file planted in Flask-Session's directory, or a
    FIFO/symlink left there by other software). The reader opens the
    record before checking it is a regular file: a FIFO blocks the worker
    thread forever (``os.open`` without ``O_NONBLOCK`` waits for a writer),
    and a symlink (refused by ``O_NOFOLLOW``) is a ``ProviderError``, so a
    503 on *every* request of that visitor (the old cookie is kept after a
    503) until the window ends. Either should be refused like any record
    that is not a session."""
    import hashlib
    import os
    import threading

    directory = tmp_path / "flask_session"
    directory.mkdir()
    app = make_site("gosession", {**request.getfixturevalue("backend_file"),
                                  "SESSION_FILE_DIR": str(directory),
                                  "GOSESSION_IMPORT_FLASK_SESSION": True, "GOSESSION_GC_INTERVAL": 0})
    request.addfinalizer(app.extensions["gosession"].close)
    sid = secrets.token_urlsafe(32)
    path = directory / hashlib.sha256(f"session:{sid}".encode()).hexdigest()
    if kind == "symlink":
        os.symlink("/etc/hostname", path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    result: list[t.Any] = []
    with serve(app) as port:
        thread = threading.Thread(target=lambda: result.append(http(port, "/home", {"session": sid})),
                                  daemon=True)
        thread.start()
        thread.join(5)
        if thread.is_alive():
            with open(path, "wb"):  # a writer releases the stuck worker, so the server can stop
                pass
            thread.join(5)
            pytest.fail("the request hung on the FIFO")
    status, body, _ = result[0]
    assert status == 200 and user_of(body) is None, (status, body[:200])
