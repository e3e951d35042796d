"""An outside review of encryption at rest (issue 14), as an attacker would
go at it: over real HTTP on a threaded server, and by writing to the store
directly (someone with write access to Redis, the SQL table or memcached).

Every test here runs against the memory, Redis, PostgreSQL and memcached
stores. None of them mocks anything: the planted values are written with
the provider's own calls, the way a store writer would put them there.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import typing as t

import pytest
from flask import session

import liveserver
from apps import make_app
from backends import one_process_config
from flask_gosession import regenerate
from flask_gosession.crypto import SEED_FIELD, is_sealed
from flask_gosession.ids import store_key
from flask_gosession.providers.base import Change, Outcome, Record

KEY1 = "k1:" + secrets.token_urlsafe(32)
KEY2 = "k2:" + secrets.token_urlsafe(32)
BASE = {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
        "GOSESSION_ENCRYPTION_KEYS": [KEY1]}
BACKENDS = ["memory", "redis", "sql_postgresql", "memcached"]
SECRETS = (KEY1.split(":", 1)[1], KEY2.split(":", 1)[1])


@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def backend_config(request, backend_name):  # type: ignore[no-untyped-def]
    return one_process_config(request, backend_name)


@pytest.fixture
def build(backend_config, clock, tmp_path):  # type: ignore[no-untyped-def]
    """``build(**config)``: an app on the test's store, with encryption on."""
    apps = []

    def make(**config: t.Any) -> t.Any:
        app = make_app({**backend_config, **BASE, **config}, clock,
                       str(tmp_path / f"instance-{len(apps)}"))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["gosession"].close()


def provider_of(app: t.Any) -> t.Any:
    return app.extensions["gosession"].provider


def read(app: t.Any, sid: str) -> Record:
    manager = app.extensions["gosession"]
    record = manager.provider.session_read(store_key(sid), manager.clock())
    assert record is not None
    return t.cast(Record, record)


def plant(app: t.Any, sid: str, **fields: t.Any) -> None:
    """Write ``fields`` into the record of ``sid`` as a store writer would:
    ``data`` values and ``meta`` fields, with the provider's own update."""
    manager = app.extensions["gosession"]
    change = Change(set=fields.get("data", {}), meta=fields.get("meta", {}),
                    atime=manager.clock())
    assert provider_of(app).session_update(store_key(sid), change) is Outcome.APPLIED


def replace(app: t.Any, sid: str, record: Record) -> None:
    """Overwrite the whole record of ``sid`` (a writer with a dump at hand)."""
    provider_of(app).session_init(store_key(sid), record)


def clean_logs(caplog: t.Any, *sids: str) -> None:
    """No log line carries a raw id or server key material."""
    for line in (r.getMessage() for r in caplog.records):
        for secret in (*sids, *SECRETS):
            assert secret not in line, line


def agent(text: str) -> str:
    """The User-Agent fingerprint the manager stores (``meta["u"]``)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def login(port: int, user: str, headers: dict[str, str] | None = None) -> str:
    status, _, sid = liveserver.request(port, f"/set/user/{user}", headers=headers)
    assert status == 200 and sid
    return sid


def user_of(port: int, sid: str, headers: dict[str, str] | None = None) -> tuple[t.Any, str | None]:
    """What the server says the session ``sid`` holds under ``user``, and
    the new cookie it sent (a fresh session's, when it refused ``sid``)."""
    import json

    status, body, new = liveserver.request(port, "/get/user", cookie=sid, headers=headers)
    assert status == 200, (status, body)
    return json.loads(body)["value"], new


# -- downgrade: a value in clear planted into a sealed record -------------------------


def test_clear_value_in_a_sealed_record_is_refused_once_plain_is_off(build, caplog):
    app = build(GOSESSION_ENCRYPTION_ACCEPT_PLAIN=False)
    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        plant(app, sid, data={"user": "admin"})
        with caplog.at_level(logging.WARNING, logger="flask_gosession"):
            value, new = user_of(port, sid)
    assert value is None and new != sid
    clean_logs(caplog, sid)


def test_clear_value_in_a_sealed_record_is_accepted_while_plain_is_on(build):
    """The documented limit (README, "Encryption at rest"): while
    ``GOSESSION_ENCRYPTION_ACCEPT_PLAIN`` is on, as it must be during a
    migration, a store writer can put values in clear into any record and
    the server takes them, then seals them on the next write. This test
    pins that, so the README's claim stays true to the code."""
    app = build()
    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        plant(app, sid, data={"user": "admin"})
        assert user_of(port, sid) == ("admin", None)
        liveserver.request(port, "/set/other/1", cookie=sid)
    assert is_sealed(read(app, sid).data["user"])


def test_clear_user_agent_fingerprint_is_refused_once_plain_is_off(build, caplog):
    """A writer who holds a stolen cookie replaces the sealed User-Agent
    fingerprint with their own, in clear, to pass GOSESSION_BIND_USER_AGENT.
    With ACCEPT_PLAIN off, a sealed record holds nothing in clear."""
    app = build(GOSESSION_ENCRYPTION_ACCEPT_PLAIN=False, GOSESSION_BIND_USER_AGENT=True)
    victim, thief = {"User-Agent": "victim/1"}, {"User-Agent": "thief/1"}
    with liveserver.serve(app) as port:
        sid = login(port, "alice", victim)
        assert is_sealed(read(app, sid).meta["u"])
        assert user_of(port, sid, thief)[0] is None  # the binding holds
        sid = login(port, "alice", victim)
        plant(app, sid, meta={"u": agent("thief/1")})
        with caplog.at_level(logging.WARNING, logger="flask_gosession"):
            value, new = user_of(port, sid, thief)
    assert value is None and new != sid
    clean_logs(caplog, sid)


@pytest.mark.parametrize("how", ["privilege", "age"])
def test_rotation_never_seals_a_planted_clear_value_once_plain_is_off(build, clock, how):
    """A value in clear planted while a request runs (after its load
    checked the record, before its rotation copies it) must not come out
    of the rotation sealed under the new id: that would launder a forgery
    past ACCEPT_PLAIN = False."""
    app = build(GOSESSION_ENCRYPTION_ACCEPT_PLAIN=False, GOSESSION_ROTATE_AFTER=100)

    @app.get("/plant-and-rotate")
    def plant_and_rotate() -> str:
        sid = session.sid  # loads: the record is checked here
        plant(app, sid, data={"user": "admin"})  # a concurrent store writer
        if how == "privilege":
            regenerate()
        session["touched"] = 1
        return "ok"

    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        if how == "age":
            clock.advance(150)
        status, _, new = liveserver.request(port, "/plant-and-rotate", cookie=sid)
        assert status == 200
        # Whatever cookie the client holds now, the planted value is not in it.
        for cookie in {sid, new} - {None}:
            assert user_of(port, t.cast(str, cookie))[0] != "admin"


# -- moved, swapped and replayed sealed values ---------------------------------------


def _two_users(port: int) -> tuple[str, str]:
    return login(port, "alice"), login(port, "bob")


@pytest.mark.parametrize("what", ["value", "value-other-name", "seed", "whole-record"])
def test_sealed_parts_moved_between_records_are_refused(build, caplog, what):
    app = build(GOSESSION_BIND_USER_AGENT=True)
    with liveserver.serve(app) as port:
        alice, bob = _two_users(port)
        liveserver.request(port, "/set/role/admin", cookie=bob)
        mine, theirs = read(app, alice), read(app, bob)
        if what == "value":
            plant(app, alice, data={"user": theirs.data["user"]})
        elif what == "value-other-name":
            plant(app, alice, data={"user": theirs.data["role"]})
        elif what == "seed":
            plant(app, alice, meta={SEED_FIELD: theirs.meta[SEED_FIELD]})
        else:
            replace(app, alice, Record(dict(theirs.data), dict(theirs.meta), theirs.atime))
        assert read(app, alice).meta[SEED_FIELD] != mine.meta[SEED_FIELD] or what != "seed"
        with caplog.at_level(logging.WARNING, logger="flask_gosession"):
            value, new = user_of(port, alice)
        assert value is None and new != alice
        assert user_of(port, bob)[0] == "bob"  # the source is untouched
    assert any("corrupt session record" in r.getMessage() for r in caplog.records)
    clean_logs(caplog, alice, bob)


def test_sealed_meta_moved_into_data_and_back_is_refused(build):
    """The same name in ``data`` and in ``meta`` has other associated data."""
    app = build(GOSESSION_BIND_USER_AGENT=True)
    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        record = read(app, sid)
        plant(app, sid, data={"u": record.meta["u"]})
        assert user_of(port, sid)[0] is None
        sid = login(port, "alice")
        plant(app, sid, data={"u": "x"})
        liveserver.request(port, "/set/u/1", cookie=sid)
        plant(app, sid, meta={"u": read(app, sid).data["u"]})
        assert user_of(port, sid)[0] is None


def test_values_of_a_rotated_out_id_do_not_open_in_its_successor(build, clock):
    """After a rotation by age the old record keeps its data (sealed for the
    old id) during the grace window; nothing of it opens under the new id,
    and the forwarded save writes nothing under the old id's key."""
    app = build(GOSESSION_ROTATE_AFTER=100, GOSESSION_ROTATE_GRACE=30)
    with liveserver.serve(app) as port:
        old = login(port, "alice")
        liveserver.request(port, "/set/role/user", cookie=old)
        clock.advance(150)
        status, _, new = liveserver.request(port, "/set/role/staff", cookie=old)
        assert status == 200 and new and new != old
        frozen = read(app, old)
        # A save presented with the old id, inside the grace window.
        status, _, handed = liveserver.request(port, "/set/cart/1", cookie=old)
        assert status == 200 and handed == new
        assert read(app, old).data == frozen.data  # nothing written under the old key
        assert all(is_sealed(v) for v in read(app, new).data.values())
        assert user_of(port, new)[0] == "alice"
        # The old id's sealed value planted into the new record: refused.
        plant(app, new, data={"role": frozen.data["role"]})
        assert user_of(port, new)[0] is None


def test_replaying_an_older_copy_of_the_same_record_is_accepted(build):
    """The documented limit: a store writer can roll a record back to an
    older copy of itself (AEAD binds record and key name, not a version)."""
    app = build()
    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        liveserver.request(port, "/set/role/admin", cookie=sid)
        before = read(app, sid)
        liveserver.request(port, "/set/role/user", cookie=sid)
        replace(app, sid, before)
        status, body, _ = liveserver.request(port, "/get/role", cookie=sid)
    assert status == 200 and '"admin"' in body


# -- the k field: corrupt, unknown, hostile ------------------------------------------


@pytest.mark.parametrize("bad", [
    "", "k1", "k1.", "k1.AAAA", "k1.!!!!", "k1." + "A" * 5000, "zz.AAAA",
    "x" * 300 + ".AAAA", "evil\nWARNING forged line.AAAA", "k1.AAAA\x00", 12345, ["k1"],
])
def test_a_corrupt_seed_field_gives_a_fresh_session(build, caplog, bad):
    app = build()
    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        plant(app, sid, meta={SEED_FIELD: bad})
        with caplog.at_level(logging.WARNING, logger="flask_gosession"):
            value, new = user_of(port, sid)
            assert value is None and new != sid
            # The refused record is gone: presenting the id again is a miss.
            assert user_of(port, sid)[0] is None
    lines = [r.getMessage() for r in caplog.records if r.name == "flask_gosession"]
    assert lines and all("\n" not in line for line in lines), lines
    clean_logs(caplog, sid)


def test_an_unknown_key_id_is_named_in_the_log_over_http(build, caplog):
    old = build(GOSESSION_ENCRYPTION_KEYS=[KEY2])
    new = build(GOSESSION_ENCRYPTION_KEYS=[KEY1])
    with liveserver.serve(old) as port:
        sid = login(port, "alice")
    with liveserver.serve(new) as port, caplog.at_level(logging.WARNING, logger="flask_gosession"):
        value, fresh = user_of(port, sid)
    assert value is None and fresh != sid
    lines = [r.getMessage() for r in caplog.records]
    assert any("key id 'k2'" in line for line in lines), lines
    clean_logs(caplog, sid)


# -- the cipher cache ---------------------------------------------------------------------


def test_a_cached_cipher_never_opens_another_record(build):
    """Alice's cipher is warm in the process cache. Her seed and values put
    in Bob's record (under Bob's store key) still fail: the cache is keyed
    by the store key, and the associated data binds that key too."""
    app = build()
    with liveserver.serve(app) as port:
        alice, bob = _two_users(port)
        for _ in range(3):
            assert user_of(port, alice)[0] == "alice"
        cache = app.extensions["gosession"].encryption.cache
        assert cache is not None and len(cache) >= 1
        theirs = read(app, alice)
        replace(app, bob, Record(dict(theirs.data), dict(theirs.meta), theirs.atime))
        assert user_of(port, bob)[0] is None
        assert user_of(port, alice)[0] == "alice"


def test_a_cached_cipher_does_not_survive_logout(build):
    app = build()
    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        assert user_of(port, sid)[0] == "alice"
        saved = read(app, sid)
        status, _, _ = liveserver.request(port, "/logout", cookie=sid)
        assert status == 200
        assert user_of(port, sid)[0] is None  # the old cookie is dead
        # A writer restores the destroyed record: it opens again only with
        # the cookie it belongs to (the store holds it as before), and a new
        # session never sees it.
        fresh = login(port, "bob")
        replace(app, fresh, Record(dict(saved.data), dict(saved.meta), saved.atime))
        assert user_of(port, fresh)[0] is None


def test_a_warm_cache_never_accepts_a_tampered_value(build):
    app = build()
    with liveserver.serve(app) as port:
        sid = login(port, "alice")
        for _ in range(3):
            assert user_of(port, sid)[0] == "alice"
        sealed = read(app, sid).data["user"]
        middle = len(sealed) // 2  # a character that carries only ciphertext bits
        flipped = sealed[:middle] + ("A" if sealed[middle] != "A" else "B") + sealed[middle + 1:]
        plant(app, sid, data={"user": flipped})
        assert user_of(port, sid)[0] is None


# -- the rekey command ---------------------------------------------------------------------


def test_rekey_survives_corrupt_records_and_leaks_nothing(build, backend_name, caplog, clock):
    old = build(GOSESSION_ENCRYPTION_KEYS=[KEY1])
    with liveserver.serve(old) as port:
        good, corrupt, unknown = login(port, "alice"), login(port, "bob"), login(port, "carol")
    plant(old, corrupt, meta={SEED_FIELD: "k1.!!!!"})
    plant(old, unknown, meta={SEED_FIELD: "zz.AAAA"})
    before = read(old, good)
    new = build(GOSESSION_ENCRYPTION_KEYS=[KEY2, KEY1])
    clock.advance(5)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        result = new.test_cli_runner().invoke(args=["gosession", "rekey"])
    if backend_name == "memcached":
        assert result.exit_code == 0 and "cannot list" in result.output
        return
    assert result.exit_code == 0, result.output
    assert "re-sealed under key k2: 1" in result.output, result.output
    assert "unreadable" in result.output or "corrupt" in result.output, result.output
    for secret in (good, corrupt, unknown, *SECRETS):
        assert secret not in result.output
    clean_logs(caplog, good, corrupt, unknown)
    after = read(new, good)
    assert after.meta[SEED_FIELD].startswith("k2.") and after.data == before.data
    assert after.atime == before.atime  # rekey never extends a session
    only_new = build(GOSESSION_ENCRYPTION_KEYS=[KEY2])
    with liveserver.serve(only_new) as port:
        assert user_of(port, good)[0] == "alice"


# -- races over HTTP -------------------------------------------------------------------------


def _slow_and_fast(port: int, sid: str, fast: str) -> tuple[int, str | None, int, str | None]:
    """A slow write (its load first) and ``fast`` while it holds."""
    import threading
    import time

    out: dict[str, t.Any] = {}

    def slow() -> None:
        status, _, cookie = liveserver.request(port, "/slow-write?hold=0.4", cookie=sid, method="POST")
        out["slow"] = (status, cookie)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.15)
    status, _, cookie = liveserver.request(port, fast, cookie=sid)
    thread.join(10)
    return status, cookie, *out["slow"]


def _written_in_clear(build: t.Any) -> str:
    plain = build(GOSESSION_ENCRYPTION_KEYS=None)
    with liveserver.serve(plain) as port:
        sid = login(port, "alice")
        liveserver.request(port, "/set/cart/x", cookie=sid)
    assert SEED_FIELD not in read(plain, sid).meta and read(plain, sid).data["user"] == "alice"
    return sid


def test_two_requests_converting_one_plain_record(build):
    sid = _written_in_clear(build)
    app = build()
    with liveserver.serve(app) as port:
        fast, _, slow, _ = _slow_and_fast(port, sid, "/set/other/1")
        assert fast == 200 and slow == 200
        record = read(app, sid)
        assert SEED_FIELD in record.meta
        assert set(record.data) == {"user", "cart", "other", "w"}
        assert all(is_sealed(v) for v in record.data.values())
        status, body, _ = liveserver.request(port, "/get/cart", cookie=sid)
        assert '"x"' in body and user_of(port, sid)[0] == "alice"


def test_a_plain_record_rotated_while_a_save_is_in_flight(build, clock):
    """A request loads a record in clear; another rotates it by age (sealing
    it under the new id); the first one's save is forwarded and sealed for
    the new id. Nothing is written under the old id's key after the mark."""
    sid = _written_in_clear(build)
    app = build(GOSESSION_ROTATE_AFTER=100, GOSESSION_ROTATE_GRACE=30)
    clock.advance(150)
    with liveserver.serve(app) as port:
        fast, new, slow, handed = _slow_and_fast(port, sid, "/set/other/1")
        assert fast == 200 and slow == 200 and new and new != sid
        assert handed == new
        old = read(app, sid)
        assert "w" not in old.data and "other" not in old.data
        record = read(app, new)
        assert set(record.data) == {"user", "cart", "other", "w"}
        assert all(is_sealed(v) for v in record.data.values())
        assert user_of(port, new)[0] == "alice"


# -- turning encryption on, process by process ------------------------------------------------


def test_a_rolling_turn_on_logs_nobody_out(build):
    sid = _written_in_clear(build)
    old = build(GOSESSION_ENCRYPTION_KEYS=None)  # a process not yet redeployed
    new = build()
    with liveserver.serve(new) as new_port, liveserver.serve(old) as old_port:
        liveserver.request(new_port, "/set/other/1", cookie=sid)  # sealed whole now
        assert SEED_FIELD in read(new, sid).meta
        status, _, cookie = liveserver.request(old_port, "/get/user", cookie=sid)  # the balancer's next pick
        assert status == 503 and cookie is None  # cannot read it: says so, keeps record and cookie
        assert user_of(new_port, sid)[0] == "alice"
