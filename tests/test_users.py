"""Users and their devices, on every store that keeps a per-user index:
binding, the device list, rotation moving the index entry, revocation
(also racing saves and rotations over real HTTP), the per-user limit under
20 concurrent logins, expiry of the index, and the round trips each costs.

Memcached keeps no index: the last tests show it says so clearly.
"""
from __future__ import annotations

import threading
import time
import typing as t

import pytest

from backends import ALL_BACKENDS
from counting import install
from flask_gosession import (
    ConfigError,
    UserIndexUnsupported,
    revoke_session,
    revoke_user,
    sessions_of,
)
from flask_gosession.ids import store_key
from flask_gosession.userindex import user_key
from helpers import live_record, moved_away, together
from liveserver import request, serve
from signals_capture import captured, named

INDEXED = [name for name in ALL_BACKENDS if not name.startswith("memcached")]
ROTATE_AFTER = 900
LIFETIME = 3600

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
EDGE = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87")


@pytest.fixture(params=INDEXED)
def backend_config(request):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{request.param}")


def index_keys(app: t.Any, user: str) -> set[str]:
    """The store keys in ``user``'s index, read from the store itself."""
    manager = app.extensions["gosession"]
    return {e.key for e in manager.provider.index_read(user_key(user), manager.clock())}


def login(app: t.Any, user: str = "alice", agent: str = FIREFOX, addr: str = "203.0.113.77") -> t.Any:
    client = app.test_client()
    client.environ_base.update(HTTP_USER_AGENT=agent, REMOTE_ADDR=addr)
    response = client.get(f"/bind/{user}")
    assert response.status_code == 200, response.data
    return client


def who(client: t.Any) -> t.Any:
    return client.get("/whoami").json["user"]


def bound_user(port: int, cookie: str | None) -> t.Any:
    """The user the session of ``cookie`` is bound to, over HTTP."""
    import json

    status, body, _ = request(port, "/whoami", cookie)
    assert status == 200, body
    return json.loads(body)["user"]


def who_holds(app: t.Any, sid: str) -> t.Any:
    """The user a client presenting ``sid`` is logged in as, if any."""
    client = app.test_client()
    client.set_cookie("gosessionid", sid)
    return who(client)


def sid_of(client: t.Any) -> str:
    cookie = client.get_cookie("gosessionid")
    return cookie.value.split(".")[0]


# -- binding and the device list ------------------------------------------------


def test_binding_rotates_the_id_and_tells_the_user(app):
    client = app.test_client()
    client.get("/set/cart/1")
    before = sid_of(client)
    client.get("/bind/alice")
    after = sid_of(client)
    assert after != before
    assert who(client) == "alice"
    assert client.get("/get/cart").json["value"] == "1"  # the data moved with it
    assert moved_away(app, before) and who_holds(app, before) is None
    assert index_keys(app, "alice") >= {store_key(after)}


def test_sessions_of_lists_live_sessions_newest_first_with_their_device(app, clock):
    first = login(app, agent=FIREFOX, addr="203.0.113.77")
    clock.advance(5)
    second = login(app, agent=SAFARI_IOS, addr="2001:db8:1:2::5")
    clock.advance(5)
    third = login(app, agent=EDGE, addr="198.51.100.9")
    login(app, user="bob")
    rows = third.get("/devices/alice").json
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("Edge 126", "Windows", "198.51.100.0/24", True),
        ("Safari 17", "iOS", "2001:db8:1::/48", False),
        ("Firefox 128", "Linux", "203.0.113.0/24", False),
    ]
    with app.app_context():
        devices = sessions_of("alice")
        assert [d.created for d in devices] == sorted((d.created for d in devices), reverse=True)
        assert all(not d.current for d in devices)  # no request: no current session
        assert devices[0].last_seen >= devices[0].created
        handles = {d.handle for d in devices}
        assert len(handles) == 3 and all(len(h) == 12 for h in handles)
        # The handle opens nothing: it is neither an id nor a store key.
        for client in (first, second, third):
            sid = sid_of(client)
            assert not handles & {sid, store_key(sid), store_key(sid)[:12]}
        assert len(sessions_of("bob")) == 1
        assert sessions_of("nobody") == []


def test_age_and_privilege_rotations_move_the_index_entry(app, clock):
    client = login(app)
    with app.app_context():
        (device,) = sessions_of("alice")
    seen = [sid_of(client)]
    for step in ("age", "privilege", "age", "privilege"):
        if step == "age":
            clock.advance(ROTATE_AFTER + 1)
            client.get("/get/user")
        else:
            client.get("/regenerate")
        sid = sid_of(client)
        assert sid != seen[-1], step
        seen.append(sid)
        with app.app_context():
            listed = sessions_of("alice")
        assert [d.handle for d in listed] == [device.handle], step
        keys = index_keys(app, "alice")
        assert store_key(sid) in keys
        # At most the id just left stays beside the current one; older ids never.
        assert keys <= {store_key(sid), store_key(seen[-2])}, step
    assert who(client) == "alice"
    with app.app_context():
        assert revoke_session("alice", device.handle)
    for sid in seen:
        assert who_holds(app, sid) is None
        assert live_record(app, sid) is None or moved_away(app, sid)
    assert who(client) is None


def test_revoke_session_signs_out_one_device_and_fires_revoked(app):
    phone, laptop = login(app, agent=SAFARI_IOS), login(app, agent=FIREFOX)
    with app.app_context():
        target = next(d for d in sessions_of("alice") if d.browser.startswith("Safari"))
        with captured() as seen:
            assert revoke_session("alice", target.handle) is True
        assert revoke_session("alice", target.handle) is False  # already gone
        assert revoke_session("alice", "no-such-handle") is False
    destroyed = named(seen, "session_destroyed")
    assert [d["reason"] for d in destroyed] == ["revoked"]
    assert destroyed[0]["sid_hash"] == store_key(sid_of(phone))[:12]
    # The revoked device gets a fresh, empty session; the other is untouched.
    response = phone.get("/get/user")
    assert response.json == {"keys": [], "value": None}
    assert who(phone) is None
    assert who(laptop) == "alice"
    with app.app_context():
        assert [d.browser for d in sessions_of("alice")] == ["Firefox 128"]


def test_revoke_user_signs_out_everywhere_or_everywhere_else(app):
    clients = [login(app) for _ in range(3)]
    bob = login(app, user="bob")
    assert clients[0].get("/revoke-others/alice").json == {"revoked": 2}
    assert [who(c) for c in clients] == ["alice", None, None]
    assert [r[4] for r in clients[0].get("/devices/alice").json] == [True]
    with app.app_context():
        assert revoke_user("alice") == 1
        assert sessions_of("alice") == []
    assert who(clients[0]) is None
    assert who(bob) == "bob"
    assert index_keys(app, "alice") == set()


def test_logout_and_unbind_take_the_session_out_of_the_index(app):
    client = login(app)
    other = login(app)
    sid = sid_of(client)
    client.get("/logout")
    assert store_key(sid) not in index_keys(app, "alice")
    other.get("/set/cart/2")
    other.get("/unbind")
    assert who(other) is None
    assert other.get("/get/cart").json["value"] == "2"  # unbinding keeps the data
    assert index_keys(app, "alice") == set()
    with app.app_context():
        assert sessions_of("alice") == []


def test_binding_another_user_moves_the_session_between_indexes(app):
    client = login(app, user="alice")
    client.get("/bind/bob")
    assert who(client) == "bob"
    assert index_keys(app, "alice") == set()
    with app.app_context():
        assert sessions_of("alice") == []
        assert len(sessions_of("bob")) == 1


# -- expiry of the index ----------------------------------------------------------


def test_a_thousand_expired_sessions_leave_nothing_in_the_index(app, clock):
    """1,000 sessions of one user left to expire: listing prunes every one,
    and the index itself disappears."""
    manager = app.extensions["gosession"]
    for _ in range(1000):
        with app.test_request_context("/"):
            from flask import session as flask_session

            from flask_gosession import login_user_session

            login_user_session("alice")
            flask_session["n"] = 1
            manager.save(flask_session._get_current_object())
    assert len(index_keys(app, "alice")) == 1000
    clock.advance(LIFETIME + 1)  # every session idle-expired, horizons not passed
    with app.app_context():
        assert sessions_of("alice") == []
    assert index_keys(app, "alice") == set()
    # A new login starts an index of one.
    login(app)
    assert len(index_keys(app, "alice")) == 1


def test_the_index_prunes_by_horizon_without_reading_sessions(app, clock):
    """Past every horizon (three lifetimes), the index is empty on its own,
    even for sessions never listed or destroyed."""
    login(app)
    login(app)
    clock.advance(3 * LIFETIME + 1)
    assert index_keys(app, "alice") == set()


def test_an_active_session_refreshes_its_horizon_before_it_could_lapse(app, clock):
    """A session used every half hour for a whole day stays in the index,
    though its first horizon was three hours out."""
    app.config["GOSESSION_ABSOLUTE_LIFETIME"] = None
    manager = app.extensions["gosession"]
    manager.settings = type(manager.settings)(**{**_fields(manager.settings),
                                                 "absolute_lifetime": None, "rotate_after": None})
    client = login(app)
    for _ in range(48):
        clock.advance(LIFETIME / 2)
        assert who(client) == "alice"
        assert store_key(sid_of(client)) in index_keys(app, "alice")
    with app.app_context():
        assert len(sessions_of("alice")) == 1


def _fields(settings: t.Any) -> dict[str, t.Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


# -- the per-user limit, under concurrent logins ------------------------------------


@pytest.mark.parametrize("app_config", [{"GOSESSION_MAX_SESSIONS_PER_USER": 3}])
def test_twenty_concurrent_logins_with_evict_leave_exactly_three(app):
    with serve(app) as port:
        results = together([lambda: request(port, "/bind/alice")] * 20)
        assert all(status == 200 for status, _, _ in results)
        cookies = [cookie for _, _, cookie in results if cookie]
        live = [c for c in cookies if bound_user(port, c) == "alice"]
        assert len(live) == 3, len(live)
        with app.app_context():
            assert len(sessions_of("alice")) == 3


@pytest.mark.parametrize("app_config", [{"GOSESSION_MAX_SESSIONS_PER_USER": 3,
                                         "GOSESSION_SESSION_LIMIT_POLICY": "refuse"}])
def test_twenty_concurrent_logins_with_refuse_admit_exactly_three(app):
    with serve(app) as port:
        results = together([lambda: request(port, "/bind/alice")] * 20)
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200] * 3 + [409] * 17, statuses
        assert all("signed in on 3 devices" in body for status, body, _ in results if status == 409)
        with app.app_context():
            assert len(sessions_of("alice")) == 3
        # A refused login changed nothing: that client is not logged in.
        refused = [cookie for status, _, cookie in results if status == 409]
        assert all(bound_user(port, c) is None for c in refused if c)


@pytest.mark.parametrize("app_config", [{"GOSESSION_MAX_SESSIONS_PER_USER": 2,
                                         "GOSESSION_SESSION_LIMIT_POLICY": "refuse"}])
def test_refuse_does_not_count_sessions_that_have_expired(app, clock):
    login(app)
    login(app)
    clock.advance(LIFETIME + 60)  # both idle-expired, though still in the index
    login(app)  # admitted: the dead entries are pruned on refusal


@pytest.mark.parametrize("app_config", [{"GOSESSION_MAX_SESSIONS_PER_USER": 2}])
def test_evict_signs_out_the_oldest_device(app, clock):
    oldest = login(app)
    clock.advance(1)
    middle = login(app)
    clock.advance(1)
    with captured() as seen:
        newest = login(app)
    assert [who(c) for c in (oldest, middle, newest)] == [None, "alice", "alice"]
    assert [d["reason"] for d in named(seen, "session_destroyed")] == ["evicted"]


# -- revocation racing saves and rotations -------------------------------------------


def test_revoke_user_racing_saves_and_rotations_leaves_no_bound_session(app, clock):
    """Sessions being saved and rotated while ``revoke_user`` runs: when it
    returns and the racing requests finish, no id of any of them works."""
    with serve(app) as port:
        for _ in range(6):
            cookies = [request(port, "/bind/alice")[2] for _ in range(4)]
            assert all(cookies)
            clock.advance(ROTATE_AFTER + 1)  # every next request rotates by age
            calls: list[t.Callable[[], t.Any]] = []
            for cookie in cookies:
                calls.append(lambda c=cookie: request(port, "/incr/w?hold=0.2", c))
                calls.append(lambda c=cookie: request(port, "/get/user", c))
            done: list[t.Any] = []
            racers = threading.Thread(target=lambda: done.extend(together(calls)))
            racers.start()
            time.sleep(0.05)
            with app.app_context():
                revoke_user("alice")
            racers.join(60)
            seen = set(cookies) | {cookie for _, _, cookie in done if cookie}
            for sid in seen:
                assert bound_user(port, sid) is None, sid
            with app.app_context():
                assert sessions_of("alice") == []


def test_revoke_user_while_a_login_rotates(app, clock):
    """A revocation that starts while a bound session's rotation is held
    half-way never lets the new id survive."""
    with serve(app) as port:
        cookie = request(port, "/bind/alice")[2]
        done: list[t.Any] = []
        slow = threading.Thread(target=lambda: done.append(
            request(port, "/bind/alice?hold=0.3", cookie)))
        slow.start()
        time.sleep(0.1)  # the re-login has added its new key and is holding
        with app.app_context():
            revoke_user("alice")
        slow.join(30)
        for sid in {cookie, done[0][2] or cookie}:
            assert bound_user(port, sid) is None


# -- costs in round trips ----------------------------------------------------------


def test_a_bound_session_costs_what_an_unbound_one_costs(app):
    client = login(app)
    counter = install(app)
    client.get("/noop")
    assert counter.total() == 0
    client.get("/whoami")
    assert dict(counter.calls) == {"session_read": 1}
    counter.reset()
    client.get("/set/k/v")
    assert sorted(counter.calls) == ["session_read", "session_update"]


def calls_of(counter: t.Any, client: t.Any, path: str) -> dict[str, int]:
    """The store calls one request makes."""
    counter.reset()
    client.get(path)
    return dict(counter.calls)


def test_binding_adds_one_index_write_to_the_rotation(app):
    client = app.test_client()
    client.get("/set/k/v")
    counter = install(app)
    rotation = calls_of(counter, client, "/regenerate")
    binding = calls_of(counter, client, "/bind/alice")
    assert binding.pop("index_write") == 1
    assert binding == rotation


# -- bad input --------------------------------------------------------------------


def test_bad_user_ids_are_refused_clearly(app):
    with app.test_request_context("/"):
        from flask_gosession import login_user_session

        for bad in (None, True, "", "x" * 300, 1.5):
            with pytest.raises(TypeError):
                login_user_session(bad)
        login_user_session(42)
        from flask import session as flask_session

        assert flask_session.user_id == "42"  # type: ignore[attr-defined]


# -- Memcached keeps no index ---------------------------------------------------------


@pytest.mark.parametrize("backend_config", ["memcached"], indirect=True)
def test_memcached_binds_but_refuses_listing_with_a_clear_error(app):
    client = login(app)
    assert who(client) == "alice"
    with app.app_context(), pytest.raises(UserIndexUnsupported, match="memory, file, sql and redis"):
        sessions_of("alice")
    with app.app_context(), pytest.raises(UserIndexUnsupported):
        revoke_user("alice")


def test_memcached_refuses_a_session_limit_at_init(backend_memcached, clock, tmp_path):
    from apps import make_app

    with pytest.raises(ConfigError, match="GOSESSION_MAX_SESSIONS_PER_USER"):
        make_app({**backend_memcached, "GOSESSION_MAX_SESSIONS_PER_USER": 3}, clock, str(tmp_path))


# -- the command line --------------------------------------------------------------


def test_cli_lists_and_revokes_a_users_sessions(app, clock):
    phone = login(app, agent=SAFARI_IOS, addr="198.51.100.20")
    clock.advance(1)
    laptop = login(app, agent=FIREFOX)
    clock.advance(1)
    desktop = login(app, agent=EDGE)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["gosession", "sessions", "alice"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["HANDLE", "SIGNED", "IN", "LAST", "SEEN", "BROWSER", "OS", "NETWORK"]
    assert ["Edge 126" in lines[1], "Firefox 128" in lines[2], "Safari 17" in lines[3]] == [True] * 3
    assert "198.51.100.0/24" in lines[3]
    handles = [line.split()[0] for line in lines[1:4]]

    result = runner.invoke(args=["gosession", "revoke", "alice", "--handle", handles[2]])
    assert result.exit_code == 0 and "signed out 1 session" in result.output, result.output
    assert who(phone) is None and who(laptop) == "alice"

    result = runner.invoke(args=["gosession", "revoke", "alice", "--others-of", handles[0]])
    assert result.exit_code == 0 and "signed out 1 session" in result.output, result.output
    assert who(laptop) is None and who(desktop) == "alice"

    result = runner.invoke(args=["gosession", "revoke", "alice", "--all"])
    assert result.exit_code == 0 and "signed out 1 session" in result.output, result.output
    assert who(desktop) is None
    result = runner.invoke(args=["gosession", "sessions", "alice"])
    assert result.exit_code == 0 and "no live sessions" in result.output


@pytest.mark.parametrize("args, message", [
    (["revoke", "alice"], "exactly one of"),
    (["revoke", "alice", "--all", "--handle", "x"], "exactly one of"),
    (["revoke", "alice", "--handle", "nope"], "no live session 'nope'"),
    (["revoke", "alice", "--others-of", "nope"], "no live session 'nope' to keep"),
    (["sessions", "x" * 300], "1 to 256 characters"),
])
def test_cli_refuses_bad_revocations_clearly(app, args, message):
    login(app)
    result = app.test_cli_runner().invoke(args=["gosession", *args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    with app.app_context():
        assert len(sessions_of("alice")) == 1  # nothing was revoked


# -- the interleavings, made to happen -------------------------------------------------


def test_a_rotation_between_the_revocations_read_and_its_kill_is_caught(app, clock):
    """The worst order for a revocation: it reads the index, then a rotation
    adds its new key, marks the old record, builds and checks the new one,
    and only then does the revocation kill the old key. The revocation's
    next read of the index finds the new key: nothing survives."""
    client = login(app)
    manager = app.extensions["gosession"]
    provider = manager.provider
    real_read = provider.index_read
    rotated: list[str] = []

    def read_then_rotate(user: str, now: float) -> t.Any:
        entries = real_read(user, now)
        if not rotated:
            clock.advance(ROTATE_AFTER + 1)
            assert who(client) == "alice"  # this request rotates the id by age
            rotated.append(sid_of(client))
        return entries

    provider.index_read = read_then_rotate  # type: ignore[method-assign]
    try:
        with app.app_context():
            assert revoke_user("alice") == 1
    finally:
        del provider.index_read
    assert rotated and who(client) is None and who_holds(app, rotated[0]) is None
    with app.app_context():
        assert sessions_of("alice") == []


@pytest.mark.parametrize("app_config", [{"GOSESSION_MAX_SESSIONS_PER_USER": 1}])
@pytest.mark.parametrize("stored_before", [True, False])
def test_a_login_evicted_before_its_record_is_written_stays_signed_out(app, stored_before):
    """Login A has added its key to the index and is still in its view when
    login B evicts it: A's record must never be written over the tombstone,
    or the user would hold two sessions with a limit of one."""
    with serve(app) as port:
        anonymous = request(port, "/set/cart/1")[2] if stored_before else None
        done: list[t.Any] = []
        slow = threading.Thread(target=lambda: done.append(
            request(port, "/bind/alice?hold=0.4", anonymous)))
        slow.start()
        time.sleep(0.15)  # A has bound (its key is in the index) and holds
        second = request(port, "/bind/alice")
        assert second[0] == 200
        slow.join(30)
        first = done[0]
        assert bound_user(port, second[2]) == "alice"
        assert first[2] is None or bound_user(port, first[2]) is None
        with app.app_context():
            assert len(sessions_of("alice")) == 1


def test_sessions_of_reads_only_that_users_sessions(app):
    """One index read and one batched read of the user's own records,
    whatever else the store holds: never a scan."""
    login(app)
    login(app)
    for n in range(30):
        app.test_client().get(f"/set/k/{n}")
        login(app, user=f"other{n}")
    counter = install(app)
    with app.app_context():
        assert len(sessions_of("alice")) == 2
    assert dict(counter.calls) == {"index_read": 1, "session_peek": 1}


def test_signing_out_adds_one_index_write_to_the_logout(app):
    """Destroying a bound session costs what destroying an unbound one
    costs, plus the one index write that takes it off the list; unbinding
    costs what a rotation costs, plus that write."""
    anonymous = app.test_client()
    anonymous.get("/set/k/v")
    bound = login(app)
    counter = install(app)
    plain = calls_of(counter, anonymous, "/logout")
    signed_out = calls_of(counter, bound, "/logout")
    assert signed_out.pop("index_write") == 1
    assert signed_out == plain

    rotated, unbound = app.test_client(), login(app)
    rotated.get("/set/k/v")
    rotation = calls_of(counter, rotated, "/regenerate")
    unbinding = calls_of(counter, unbound, "/unbind")
    assert unbinding.pop("index_write") == 1
    assert unbinding == rotation
