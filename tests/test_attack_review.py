"""An outside review's attacks on the session lifecycle, over real HTTP on a
threaded werkzeug server, on several providers.

Tests that were marked ``xfail(strict=True)`` reproduced a hole the review found (the
reason names the broken promise and the cause); the others are attacks the
design held against, kept as regression guards. Time moves only through the
app's ``FakeClock``; a request that must stay loaded while another runs
waits on a :class:`Gate` the test opens, so the order is decided by
events, never by sleeping.
"""
from __future__ import annotations

import base64
import http.client
import os
import re
import threading
import time
import typing as t
from urllib.parse import urlsplit

import pytest
from flask import redirect, session, url_for

from flask_gosession import destroy, rotate_sid
from helpers import live_record as stored
from helpers import together, token_and_cookie
from liveserver import request, serve
from signals_capture import captured, named

ROTATE_AFTER = 900
GRACE = 30
TOKEN_HEADER = "X-GoSession-Token"

#: The providers the review attacks.
BACKENDS = ["memory", "file", "sql_sqlite", "sql_postgresql", "redis", "redis_cluster", "memcached"]


@pytest.fixture(params=BACKENDS)
def backend_config(request):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{request.param}")




def alive(app: t.Any, sid: str) -> bool:
    """Whether the store holds a record that ``sid`` can still reach: a
    privilege move's frozen record (a forward without a grace window, which
    nobody follows; it stays until idle expiry so that a late logout can
    find the logged-in session) counts as dead."""
    record = stored(app, sid)
    return record is not None and not ("f" in record.meta and "fx" not in record.meta)


def user_of(port: int, sid: str) -> t.Any:
    status, body, _ = request(port, "/get/user", sid)
    assert status == 200, body
    match = re.search(r'"value":\s*("?)([^",}]*)\1', body)
    assert match is not None, body
    return None if match.group(2) == "null" else match.group(2)




def in_background(call: t.Callable[[], t.Any]) -> tuple[threading.Thread, dict[str, t.Any]]:
    result: dict[str, t.Any] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", call()))
    thread.start()
    return thread, result


class Gate:
    """Views that load the session, report it, and wait until released, so
    a test orders requests by events instead of by sleeping."""

    def __init__(self) -> None:
        self.loaded = threading.Semaphore(0)
        self.release = threading.Event()

    def hold(self) -> None:
        self.loaded.release()
        assert self.release.wait(30), "the gate was never opened"

    def wait_loaded(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.loaded.acquire(timeout=30), "a gated request never loaded its session"


def add_gated_views(app: t.Any) -> Gate:
    """``/gated-login`` (``@rotate_sid``), ``/gated-logout`` and
    ``/gated-incr/<key>``: each loads the session, then waits on the gate."""
    gate = Gate()

    @rotate_sid
    def gated_login() -> str:
        gate.hold()
        session["user"] = "alice"
        return "logged in"

    def gated_logout() -> str:
        session.get("user")
        gate.hold()
        destroy()
        return "bye"

    def gated_incr(key: str) -> str:
        value = session.get(key, 0)
        gate.hold()
        session[key] = value + 1
        return str(value + 1)

    app.add_url_rule("/gated-login", "gated_login", gated_login, methods=["POST"])
    app.add_url_rule("/gated-logout", "gated_logout", gated_logout)
    app.add_url_rule("/gated-incr/<key>", "gated_incr", gated_incr)
    return gate


# -- 2 and 6: a logout racing a login -------------------------------------------


def test_logout_racing_a_completed_login_leaves_no_live_id(app):
    gate = add_gated_views(app)
    with serve(app) as port:
        _, _, pre = request(port, "/set/cart/1")
        assert pre
        logout, result = in_background(lambda: request(port, "/gated-logout", pre))
        gate.wait_loaded()  # the logout has loaded the session
        status, _, logged_in = request(port, "/login", pre, method="POST")
        assert status == 200 and logged_in and logged_in != pre
        gate.release.set()  # the logout's destroy() runs after the login
        logout.join(30)
        assert result["r"][0] == 200
        # destroy() has returned: no id of this session may work.
        assert not alive(app, pre)
        assert not alive(app, logged_in), "the logged-in id survived the logout"
        assert user_of(port, logged_in) is None


# -- 3: reuse after a long forward chain ------------------------------------------


LONG_LIVED = {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
              "GOSESSION_MAX_LIFETIME": 86400}


@pytest.mark.parametrize("app_config", [LONG_LIVED])
def test_reuse_of_an_early_id_of_a_long_lived_session_is_caught(app, clock):
    with serve(app) as port:
        _, _, first = request(port, "/set/user/alice")
        assert first
        current = first
        for _ in range(7):  # a user active for about two hours
            clock.advance(ROTATE_AFTER + 1)
            status, _, new = request(port, "/get/user", current)
            assert status == 200 and new and new != current
            current = new
        with captured() as seen:
            status, body, _ = request(port, "/get/user", first)  # the thief
        assert status == 200, body[:200]
        assert "alice" not in body
        assert [s["reason"] for s in named(seen, "hijack_suspected")] == ["reuse"]
        assert not alive(app, current), "GOSESSION_REVOKE_ON_REUSE did not revoke"


# -- 3: a login that saves past the grace window -----------------------------------


def test_login_saving_past_the_grace_window_counts_as_reuse(app, clock):
    gate = add_gated_views(app)
    with serve(app) as port:
        _, _, old = request(port, "/set/cart/1")
        assert old
        login, result = in_background(lambda: request(port, "/gated-login", old, method="POST"))
        with captured() as seen:
            gate.wait_loaded()  # the login has loaded the session
            clock.advance(ROTATE_AFTER + 1)
            status, _, new = request(port, "/get/cart", old)  # rotates by age
            assert status == 200 and new and new != old
            clock.advance(GRACE + 1)
            gate.release.set()  # the login saves after the grace window
            login.join(30)
        status, _, handed = result["r"]
        assert handed != new
        assert user_of(port, new) is None  # never applied (holds)
        assert [s["reason"] for s in named(seen, "hijack_suspected")] == ["reuse"]
        assert not alive(app, new)


# -- 7: URL rewrite and redirects to another host -------------------------------------


REWRITE_SUBDOMAINS = {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                      "GOSESSION_URL_REWRITE": True, "SERVER_NAME": "example.test"}


@pytest.mark.parametrize("backend_config", [{"GOSESSION_PROVIDER": "memory"}])
@pytest.mark.parametrize("app_config", [REWRITE_SUBDOMAINS])
def test_redirect_built_by_url_for_to_another_host_never_carries_the_id(app):
    @app.get("/api-home", subdomain="api")
    def api_home() -> str:
        return "api"

    @app.get("/to-api")
    def to_api() -> t.Any:
        return redirect(url_for("api_home"))

    with serve(app) as port:
        host = {"Host": "example.test"}
        _, _, sid = request(port, "/set/a/1", headers=host)
        assert sid
        status, _, _ = request(port, f"/get/a?gosessionid={sid}", headers=host)
        assert status == 200
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", f"/to-api?gosessionid={sid}", headers=host)
            response = conn.getresponse()
            response.read()
            location = response.getheader("Location") or ""
        finally:
            conn.close()
        assert response.status == 302
        assert urlsplit(location).netloc == "api.example.test", location
        assert sid not in location, location


# -- what held: regression guards -------------------------------------------------------


ONE_TIME = {"GOSESSION_TOKEN_CHECK": True, "GOSESSION_TOKEN_ONE_TIME": True, "GOSESSION_GC_INTERVAL": 0}


@pytest.mark.parametrize("app_config", [ONE_TIME])
def test_one_time_token_once_across_a_rotation_with_both_cookies(app, clock):
    """1: after an age rotation, 6 POSTs of one token with the old cookie
    (inside the grace window) and 6 with the new one: exactly one passes."""
    with serve(app) as port:
        token, old = token_and_cookie(port)
        clock.advance(ROTATE_AFTER + 1)
        status, _, new = request(port, "/get/a", old)
        assert status == 200 and new and new != old
        post = lambda sid: lambda: request(port, "/slow-write?hold=0.1", sid,  # noqa: E731
                                           method="POST", headers={TOKEN_HEADER: token})
        statuses = [s for s, _, _ in together([post(old)] * 6 + [post(new)] * 6)]
        assert sorted(statuses) == [200] + [400] * 11, statuses
        assert '"value":1' in request(port, "/get/w", new)[1].replace(" ", "")


@pytest.mark.parametrize("app_config", [ONE_TIME])
def test_one_time_token_once_when_the_posts_themselves_rotate(app, clock):
    """1: 8 POSTs of one token, each due to rotate the session by age."""
    with serve(app) as port:
        token, sid = token_and_cookie(port)
        clock.advance(ROTATE_AFTER + 1)
        post = lambda: request(port, "/slow-write?hold=0.1", sid, method="POST",  # noqa: E731
                               headers={TOKEN_HEADER: token})
        results = together([post] * 8)
        assert sorted(s for s, _, _ in results) == [200] + [400] * 7
        for cookie in {sid} | {c for _, _, c in results if c}:
            assert request(port, "/slow-write", cookie, method="POST",
                           headers={TOKEN_HEADER: token})[0] == 400


def test_destroying_the_new_session_while_the_mark_is_fresh_resurrects_nothing(app, clock):
    """4: log out with the new id while the old id's mark is fresh, then
    present the old id (many at once): it is refused at once, and the
    followers do not rebuild the destroyed session."""
    with serve(app) as port:
        _, _, old = request(port, "/set/user/alice")
        clock.advance(ROTATE_AFTER + 1)
        _, _, new = request(port, "/get/user", old)
        assert new and new != old
        assert request(port, "/logout", new)[0] == 200
        started = time.monotonic()
        results = together([lambda: request(port, "/get/user", old)] * 8)
        elapsed = time.monotonic() - started
        assert all(s == 200 and "alice" not in body for s, body, _ in results)
        assert not alive(app, old) and not alive(app, new)
        assert elapsed < 2.0, elapsed


def test_login_racing_an_age_rotation_leaves_the_pre_login_ids_dead(app, clock):
    """6: the login loaded the pre-login id; an age rotation moves it while
    the login runs. Afterwards neither the pre-login id nor the id it was
    rotated to by age leads to the logged-in session."""
    gate = add_gated_views(app)
    with serve(app) as port:
        _, _, pre = request(port, "/set/cart/1")
        login, result = in_background(lambda: request(port, "/gated-login", pre, method="POST"))
        gate.wait_loaded()  # the login has loaded the session
        clock.advance(ROTATE_AFTER + 1)
        status, _, aged = request(port, "/get/cart", pre)
        assert status == 200 and aged and aged != pre
        gate.release.set()  # the login saves after the age rotation
        login.join(30)
        status, _, logged_in = result["r"]
        assert status == 200 and logged_in not in (None, pre, aged)
        assert user_of(port, logged_in) == "alice"
        for sid in (pre, aged):
            assert not alive(app, sid)
            assert user_of(port, sid) is None


def test_concurrent_writers_across_an_age_rotation_lose_nothing(app, clock):
    """8: 6 requests hold the old id loaded while a rotation moves it, and 6
    more arrive with the old id after it: every write lands in the new
    session."""
    gate = add_gated_views(app)
    with serve(app) as port:
        _, _, old = request(port, "/set/base/1")
        clock.advance(100)
        early = [in_background(lambda n=n: request(port, f"/gated-incr/e{n}", old)) for n in range(6)]
        gate.wait_loaded(6)  # the early writers have loaded the session
        clock.advance(ROTATE_AFTER)
        status, _, new = request(port, "/get/base", old)
        assert status == 200 and new and new != old
        late = together([lambda n=n: request(port, f"/incr/l{n}", old) for n in range(6)])
        gate.release.set()  # the early writers save after the rotation
        for thread, _ in early:
            thread.join(30)
        assert all(r["r"][0] == 200 for _, r in early) and all(s == 200 for s, _, _ in late)
        record = stored(app, new)
        assert record is not None
        missing = [k for k in [f"e{n}" for n in range(6)] + [f"l{n}" for n in range(6)] if k not in record.data]
        assert not missing, missing


def _dump(app: t.Any, backend: str) -> bytes:
    """Every byte the store holds for this app."""
    provider = app.extensions["gosession"].provider
    if backend == "memory":
        return b"".join(bytes(digest) + bytes(raw) for digest, (_, raw) in provider._entries.items())
    if backend == "file":
        chunks = []
        for root, _, files in os.walk(provider.directory):
            for name in files:
                chunks.append(name.encode())
                with open(os.path.join(root, name), "rb") as fh:
                    chunks.append(fh.read())
        return b"".join(chunks)
    if backend == "sql_sqlite":
        with provider.engine.connect() as conn:
            rows = conn.execute(provider.table.select()).all()
        return b"".join(repr(tuple(row)).encode() + b"".join(
            v if isinstance(v, bytes) else b"" for v in row) for row in rows)
    import redis
    client = redis.Redis.from_url(app.config["GOSESSION_REDIS_URL"])
    chunks = []
    for key in client.scan_iter(match=app.config["GOSESSION_KEY_PREFIX"] + "*"):
        kind = client.type(key)
        chunks.append(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                chunks += [field, value]
        else:
            chunks.append(client.dump(key) or b"")
    client.close()
    return b"".join(chunks)


def _forms(secret: str) -> list[bytes]:
    raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    return [secret.encode(), raw, raw.hex().encode(), base64.b64encode(raw).rstrip(b"=")]


@pytest.mark.parametrize("backend_config", ["memory", "file", "sql_sqlite", "redis"], indirect=True)
@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": True, "GOSESSION_GC_INTERVAL": 0}])
def test_store_dump_holds_no_id_and_no_token(app, clock, request):
    """5: after tokens, an age rotation (old id in its grace window), a
    login and a one-time-less token use, no id and no token the clients
    hold appears in the store in any encoding."""
    backend = request.node.callspec.params["backend_config"]
    secrets_seen: list[str] = []
    with serve(app) as port:
        token, old = token_and_cookie(port)
        secrets_seen += [token, old]
        clock.advance(ROTATE_AFTER + 1)
        _, _, new = request_(port, "/get/a", old)
        assert new
        secrets_seen.append(new)
        status, _, logged_in = request_(port, "/login", new, method="POST", headers={TOKEN_HEADER: token})
        assert status == 200 and logged_in
        token2, _ = token_and_cookie(port, logged_in)
        secrets_seen += [logged_in, token2]
        _, _, other = request_(port, "/set/a/1")
        secrets_seen.append(t.cast(str, other))
        # The id in its grace window and the new one are both still stored.
        clock.advance(ROTATE_AFTER + 1)
        _, _, other_new = request_(port, "/get/a", other)
        secrets_seen.append(t.cast(str, other_new))
    dump = _dump(app, backend)
    assert len(dump) > 200
    leaked = [s[:8] for s in secrets_seen if any(form in dump for form in _forms(s))]
    assert not leaked, leaked


request_ = request
