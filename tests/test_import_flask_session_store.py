"""Reading Flask-Session 0.8's records (flask_gosession.importing.flask_session).

The old records are written by the real Flask-Session 0.8 on Redis, SQLite
(through Flask-SQLAlchemy), memcached and the cachelib file store, in both
serialization formats; :func:`fetch` must read them through our provider
for the same backend and give exactly what Flask-Session itself gives the
app (its own ``_retrieve_session_data`` is the oracle), types included.
Pickle-era records are refused without the pickle module ever running.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import pickle
import secrets
import struct
import time
import typing as t
import uuid

import msgspec
import pytest
from flask import Flask, flash, get_flashed_messages, session
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_gosession import GoSession
from flask_gosession.importing import flask_session as fs
from flask_gosession.importing._plainpickle import loads_plain

pytest.importorskip("flask_session")

from flask_session import Session

AWARE = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
NAIVE = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456)
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")
LIFETIME = 3600


# -- typed equality ------------------------------------------------------------------------


def same(a: t.Any, b: t.Any) -> bool:
    """Equal, and of the same type all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# -- the old app (Flask-Session 0.8) and the new one (ours) ----------------------------------


def flask_session_app(config: dict[str, t.Any], plain: bool = False) -> Flask:
    """An app on Flask-Session that logs in, flashes and stores typed values.

    ``plain``: store no values that pickle as classes (for the file store).
    """
    app = Flask("old")
    app.config.update(SECRET_KEY="old-secret", TESTING=True,
                      PERMANENT_SESSION_LIFETIME=datetime.timedelta(seconds=LIFETIME))
    app.config.update(config)
    db = config.get("SESSION_SQLALCHEMY")
    if db is not None:
        db.init_app(app)

        def dispose() -> None:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()

        _TO_CLOSE.append(dispose)

    @app.post("/login")
    def login() -> str:
        session["_user_id"] = "42"
        session["_fresh"] = True
        session["cart"] = {"apples": 3, "note": "ünïcode"}
        session["pair"] = ("a", 1)
        session["blob"] = b"\x00\xff"
        if not plain:  # values only msgspec stores; the file store would pickle classes
            session["when"] = AWARE
            session["naive"] = NAIVE
            session["uid"] = UID
        flash("Welcome back")
        flash("Saved", "info")
        return "ok"

    @app.get("/flashes")
    def flashes() -> str:
        return "|".join(get_flashed_messages())

    Session(app)
    return app


#: What to close after each test (our providers, Flask-SQLAlchemy's engines).
_TO_CLOSE: list[t.Callable[[], None]] = []


@pytest.fixture(autouse=True)
def _close_apps() -> t.Iterator[None]:
    yield
    while _TO_CLOSE:
        _TO_CLOSE.pop()()


def our_app(backend: dict[str, t.Any], old: Flask | None = None, **config: t.Any) -> Flask:
    """Our app on ``backend``, with the old app's SESSION_* settings; closed after the test."""
    app = Flask("new")
    app.config.update(SECRET_KEY="old-secret", TESTING=True)
    if old is not None:
        app.config.update({k: v for k, v in old.config.items() if k.startswith("SESSION_")})
    app.config.update(backend, **config)
    GoSession().init_app(app)
    _TO_CLOSE.append(app.extensions["gosession"].close)
    return app


def log_in(old: Flask) -> str:
    """Log in on the old app; the Flask-Session cookie's value."""
    client = old.test_client()
    assert client.post("/login").status_code == 200
    cookie = client.get_cookie(old.config.get("SESSION_COOKIE_NAME", "session"))
    assert cookie is not None
    return cookie.value


def oracle(old: Flask, sid: str) -> t.Any:
    """What Flask-Session itself reads back for ``sid``."""
    interface: t.Any = old.session_interface
    with old.app_context():
        return interface._retrieve_session_data(interface._get_store_id(sid))


def provider_of(app: Flask) -> t.Any:
    return app.extensions["gosession"].provider


@contextlib.contextmanager
def pickle_forbidden() -> t.Iterator[list[str]]:
    """Make every way into the pickle module fail, and record each attempt."""
    calls: list[str] = []

    def forbidden(name: str) -> t.Callable[..., t.NoReturn]:
        def call(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
            calls.append(name)
            raise AssertionError(f"pickle.{name} was called")

        return call

    with pytest.MonkeyPatch.context() as mp:
        for name in ("loads", "load", "Unpickler"):
            mp.setattr(pickle, name, forbidden(name))
        yield calls


# -- one setup per backend -------------------------------------------------------------------


def _redis(request: t.Any, fmt: str) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    import redis

    backend = request.getfixturevalue("backend_redis")
    client = redis.Redis.from_url(backend["GOSESSION_REDIS_URL"])
    request.addfinalizer(client.close)
    prefix = f"fs-{secrets.token_hex(6)}:"
    return backend, {"SESSION_TYPE": "redis", "SESSION_REDIS": client, "SESSION_KEY_PREFIX": prefix,
                     "SESSION_SERIALIZATION_FORMAT": fmt}


def _sql(backend_name: str) -> t.Callable[[t.Any, str], tuple[dict[str, t.Any], dict[str, t.Any]]]:
    """Flask-Session's table (a fresh name) on the database of ``backend_<backend_name>``."""

    def setup(request: t.Any, fmt: str) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
        import sqlalchemy as sa
        from flask_sqlalchemy import SQLAlchemy

        backend = request.getfixturevalue(f"backend_{backend_name}")
        table = f"fs_{secrets.token_hex(4)}"

        def drop() -> None:
            engine = sa.create_engine(backend["GOSESSION_SQL_URL"])
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
            engine.dispose()

        request.addfinalizer(drop)
        return backend, {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": SQLAlchemy(),
                         "SESSION_SQLALCHEMY_TABLE": table, "SQLALCHEMY_DATABASE_URI": backend["GOSESSION_SQL_URL"],
                         "SESSION_SERIALIZATION_FORMAT": fmt}

    return setup


_sqlite = _sql("sql_sqlite")


def _memcached(request: t.Any, fmt: str) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    from pymemcache.client.base import Client

    backend = request.getfixturevalue("backend_memcached")
    host, port = backend["GOSESSION_MEMCACHED_SERVERS"][0].rsplit(":", 1)
    client = Client((host, int(port)), default_noreply=False)  # a set is stored before it returns
    request.addfinalizer(client.close)
    return backend, {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": client,
                     "SESSION_KEY_PREFIX": f"fs-{secrets.token_hex(6)}:", "SESSION_SERIALIZATION_FORMAT": fmt}


def _file(request: t.Any, fmt: str) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    from cachelib.file import FileSystemCache

    backend = request.getfixturevalue("backend_file")
    directory = str(request.getfixturevalue("tmp_path") / "flask_session")
    return backend, {"SESSION_TYPE": "cachelib", "SESSION_CACHELIB": FileSystemCache(directory, threshold=500),
                     "SESSION_SERIALIZATION_FORMAT": fmt}


SETUPS = {"redis": _redis, "sql_sqlite": _sqlite, "sql_postgresql": _sql("sql_postgresql"),
          "sql_mariadb": _sql("sql_mariadb"), "memcached": _memcached, "file": _file}


@pytest.fixture(params=["msgpack", "json"])
def fmt(request: t.Any) -> str:
    return str(request.param)


def make_stores(request: t.Any, store: str, fmt: str) -> tuple[Flask, Flask]:
    backend, config = SETUPS[store](request, fmt)
    old = flask_session_app(config, plain=store == "file")
    return old, our_app(backend, old)


@pytest.fixture(params=list(SETUPS))
def stores(request: t.Any, fmt: str) -> tuple[Flask, Flask]:
    """(Flask-Session app, our app) on one backend, in each format."""
    return make_stores(request, request.param, fmt)


@pytest.fixture(params=list(SETUPS))
def raw_stores(request: t.Any) -> tuple[Flask, Flask]:
    """(Flask-Session app, our app) on one backend, for records written by
    hand (the format setting only orders the decoders; see the fuzz tests)."""
    return make_stores(request, request.param, "msgpack")


# -- reading ---------------------------------------------------------------------------------


def test_fetch_gives_exactly_what_flask_session_gives(stores: tuple[Flask, Flask], fmt: str) -> None:
    old, new = stores
    sid = fs.sid_from_cookie(new, log_in(old))
    assert sid is not None
    kind = old.config["SESSION_TYPE"]
    expected = oracle(old, sid)
    before = time.time()
    with pickle_forbidden() as calls:
        record = fs.fetch(new, provider_of(new), sid, before)
    assert calls == []
    assert record is not None
    assert same(record.data, expected), (record.data, expected)

    data = record.data
    assert data["_user_id"] == "42" and data["_fresh"] is True and data["_permanent"] is True
    assert data["cart"] == {"apples": 3, "note": "ünïcode"}
    if kind == "cachelib":  # a pickle of the dict itself: tuples and bytes survive
        assert same(data["_flashes"], [("message", "Welcome back"), ("info", "Saved")])
        assert same(data["pair"], ("a", 1)) and same(data["blob"], b"\x00\xff")
    else:  # msgspec, untagged: tuples come back as lists
        assert same(data["_flashes"], [["message", "Welcome back"], ["info", "Saved"]])
        assert same(data["pair"], ["a", 1])
        assert same(data["uid"], str(UID)) and same(data["naive"], NAIVE.isoformat())
        if fmt == "msgpack":
            assert same(data["blob"], b"\x00\xff") and same(data["when"], AWARE)
        else:
            assert same(data["blob"], "AP8=") and same(data["when"], "2024-05-06T07:08:09Z")

    if kind == "memcached":
        assert record.expires_at is None
    else:
        assert record.expires_at is not None
        assert before + LIFETIME - 5 <= record.expires_at <= before + LIFETIME + 5


def test_discard_removes_the_old_record(stores: tuple[Flask, Flask]) -> None:
    old, new = stores
    sid = fs.sid_from_cookie(new, log_in(old))
    assert sid is not None
    provider = provider_of(new)
    assert fs.fetch(new, provider, sid, time.time()) is not None
    fs.discard(new, provider, sid)
    assert fs.fetch(new, provider, sid, time.time()) is None
    fs.discard(new, provider, sid)  # twice is fine
    # ... and Flask-Session itself no longer finds the session.
    client = old.test_client()
    client.set_cookie(old.config.get("SESSION_COOKIE_NAME", "session"), sid)
    assert client.get("/flashes").text == ""


def test_unknown_sids_and_cookies_read_as_nothing(stores: tuple[Flask, Flask]) -> None:
    _, new = stores
    provider = provider_of(new)
    assert fs.fetch(new, provider, secrets.token_urlsafe(32), time.time()) is None
    for bad in ["", "a b", "x" * 300, "../../etc/passwd", "short", "é" * 43]:
        assert fs.sid_from_cookie(new, bad) is None
        assert fs.fetch(new, provider, bad, time.time()) is None


@pytest.mark.parametrize("store", ["sql_sqlite", "file"])
def test_expired_records_read_as_nothing(request: t.Any, store: str) -> None:
    backend, config = SETUPS[store](request, "msgpack")
    old = flask_session_app(config, plain=True)
    new = our_app(backend, old)
    sid = fs.sid_from_cookie(new, log_in(old))
    assert sid is not None
    provider = provider_of(new)
    assert fs.fetch(new, provider, sid, time.time() + LIFETIME - 30) is not None
    assert fs.fetch(new, provider, sid, time.time() + LIFETIME + 30) is None


def test_redis_expiry_is_the_native_ttl(request: t.Any) -> None:
    backend, config = _redis(request, "msgpack")
    old = flask_session_app(config)
    new = our_app(backend, old)
    sid = fs.sid_from_cookie(new, log_in(old))
    assert sid is not None
    config["SESSION_REDIS"].pexpire(config["SESSION_KEY_PREFIX"] + sid, 1)
    time.sleep(0.05)
    assert fs.fetch(new, provider_of(new), sid, time.time()) is None


# -- the cookie ------------------------------------------------------------------------------


def test_signed_cookies_are_unsigned_with_the_secret_key(request: t.Any) -> None:
    backend, config = _redis(request, "msgpack")
    config["SESSION_USE_SIGNER"] = True
    with pytest.warns(DeprecationWarning, match="use_signer"):
        old = flask_session_app(config)
    value = log_in(old)
    new = our_app(backend, old)
    sid = fs.sid_from_cookie(new, value)
    assert sid is not None and "." in value and value.startswith(sid + ".")
    assert fs.fetch(new, provider_of(new), sid, time.time()) is not None
    # The bare id, a forged signature and another key are all refused.
    assert fs.sid_from_cookie(new, sid) is None
    assert fs.sid_from_cookie(new, sid + ".AAAAAAAAAAAAAAAAAAAAAAAAAAA") is None
    new.config["SECRET_KEY"] = "rotated"
    assert fs.sid_from_cookie(new, value) is None
    new.config["SECRET_KEY_FALLBACKS"] = ["old-secret"]
    assert fs.sid_from_cookie(new, value) == sid


def test_plain_cookies_are_the_sid() -> None:
    app = Flask("x")
    sid = secrets.token_urlsafe(32)
    assert fs.sid_from_cookie(app, sid) == sid
    assert fs.sid_from_cookie(app, str(uuid.uuid4())) is not None  # Flask-Session 0.5 and earlier


# -- refusals --------------------------------------------------------------------------------


PICKLES = {  # what Flask-Session 0.6 and earlier wrote: pickle.dumps(dict(session))
    "protocol 4 (0.6 on Python 3)": lambda d: pickle.dumps(d, 4),
    "protocol 5": lambda d: pickle.dumps(d, 5),
    "protocol 2": lambda d: pickle.dumps(d, 2),
    "protocol 0 (Python 2)": lambda d: pickle.dumps(d, 0),
    "protocol 1": lambda d: pickle.dumps(d, 1),
}
PICKLED_SESSION = {"_permanent": True, "_user_id": "42", "_flashes": [("message", "hi")]}


def write_raw(old: Flask, new: Flask, sid: str, raw: bytes) -> None:
    """Store ``raw`` as the Flask-Session record of ``sid``, by hand."""
    kind = old.config["SESSION_TYPE"]
    name = old.config.get("SESSION_KEY_PREFIX", "session:") + sid
    if kind == "redis":
        old.config["SESSION_REDIS"].set(name, raw, ex=LIFETIME)
    elif kind == "memcached":
        old.config["SESSION_MEMCACHED"].set(name, raw, LIFETIME, noreply=False)
    elif kind == "sqlalchemy":
        import sqlalchemy as sa

        table = sa.table(old.config["SESSION_SQLALCHEMY_TABLE"], sa.column("session_id"),
                         sa.column("data", sa.LargeBinary), sa.column("expiry", sa.DateTime))
        expiry = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(hours=1)
        with provider_of(new).engine.begin() as conn:
            conn.execute(sa.insert(table).values(session_id=name, data=raw, expiry=expiry))
    else:
        cache = old.config["SESSION_CACHELIB"]
        with open(cache._get_filename(name), "wb") as fh:
            fh.write(struct.pack("I", int(time.time()) + LIFETIME) + raw)


@pytest.mark.parametrize("make", list(PICKLES.values()), ids=list(PICKLES))
def test_pickle_era_records_are_refused_unpickled(raw_stores: tuple[Flask, Flask], make: t.Any) -> None:
    old, new = raw_stores
    raw = make(PICKLED_SESSION)
    sid = secrets.token_urlsafe(32)
    write_raw(old, new, sid, raw)
    with pickle_forbidden() as calls:
        if old.config["SESSION_TYPE"] == "cachelib" and raw[:1] == b"\x80":
            # The file store pickles in every version: plain data is read by hand.
            record = fs.fetch(new, provider_of(new), sid, time.time())
            assert record is not None and same(record.data, PICKLED_SESSION)
        else:
            with pytest.raises(fs.LegacyRefused) as refused:
                fs.fetch(new, provider_of(new), sid, time.time())
            assert refused.value.reason == "pickle"
    assert calls == []


def test_file_records_holding_classes_are_refused(request: t.Any) -> None:
    """Flask-Session's file store pickles the dict: a Markup, a datetime, a
    UUID there needs the pickle module, so the record is refused."""
    from markupsafe import Markup

    backend, config = _file(request, "msgpack")
    old = flask_session_app(config, plain=True)
    new = our_app(backend, old)
    for value in [Markup("<b>hi</b>"), AWARE, UID, {1, 2}]:
        sid = secrets.token_urlsafe(32)
        write_raw(old, new, sid, pickle.dumps({"_permanent": True, "v": value}, 5))
        with pickle_forbidden() as calls, pytest.raises(fs.LegacyRefused) as refused:
            fs.fetch(new, provider_of(new), sid, time.time())
        assert refused.value.reason == "pickle" and calls == []


def test_markup_cannot_even_be_stored_by_flask_session_msgspec(request: t.Any) -> None:
    """Why nothing needs untagging: Flask-Session 0.8 has no tags, and a
    Markup (a flashed one too) makes its save fail."""
    from markupsafe import Markup

    _, config = _redis(request, "msgpack")
    old = flask_session_app(config)

    @old.post("/markup")
    def markup() -> str:
        flash(Markup("<b>hi</b>"))
        return "ok"

    old.config["PROPAGATE_EXCEPTIONS"] = False
    assert old.test_client().post("/markup").status_code == 500


GARBAGE = [b"\x00", b"not a session", b"[1, 2]", b'"str"', b"\x92\x01\x02", b"\xc1",
           b'{"a": 1', msgspec.msgpack.encode({1: "int key"}),
           msgspec.msgpack.encode({"e": msgspec.msgpack.Ext(5, b"x")}),
           b"[" * 5000 + b"]" * 5000, b'{"a":' + b"[" * 200 + b"]" * 200 + b"}",
           b"\x80\x05garbage."]


@pytest.mark.parametrize("raw", GARBAGE)
def test_undecodable_records_are_refused(raw_stores: tuple[Flask, Flask], raw: bytes) -> None:
    old, new = raw_stores
    sid = secrets.token_urlsafe(32)
    write_raw(old, new, sid, raw)
    with pytest.raises(fs.LegacyRefused) as refused:
        fs.fetch(new, provider_of(new), sid, time.time())
    assert refused.value.reason in ("undecodable", "pickle")


def test_an_empty_value_is_no_session(raw_stores: tuple[Flask, Flask]) -> None:
    old, new = raw_stores
    sid = secrets.token_urlsafe(32)
    write_raw(old, new, sid, b"")
    if old.config["SESSION_TYPE"] == "cachelib":  # a header and no pickle at all
        with pytest.raises(fs.LegacyRefused) as refused:
            fs.fetch(new, provider_of(new), sid, time.time())
        assert refused.value.reason == "undecodable"
    else:  # as Flask-Session reads it
        assert fs.fetch(new, provider_of(new), sid, time.time()) is None


def test_the_deprecated_filesystem_type_and_its_directory(request: t.Any, tmp_path: t.Any) -> None:
    backend = request.getfixturevalue("backend_file")
    config = {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": str(tmp_path / "fsdir")}
    with pytest.warns(DeprecationWarning):
        old = flask_session_app(config, plain=True)
    new = our_app(backend, old)
    sid = fs.sid_from_cookie(new, log_in(old))
    assert sid is not None
    expected = oracle(old, sid)
    with pickle_forbidden() as calls:
        record = fs.fetch(new, provider_of(new), sid, time.time())
    assert calls == [] and record is not None and same(record.data, expected)
    fs.discard(new, provider_of(new), sid)
    assert oracle(old, sid) is None


def test_a_redis_key_of_another_type_is_undecodable(request: t.Any) -> None:
    backend, config = _redis(request, "msgpack")
    old = flask_session_app(config)
    new = our_app(backend, old)
    sid = secrets.token_urlsafe(32)
    config["SESSION_REDIS"].hset(config["SESSION_KEY_PREFIX"] + sid, "a", "1")
    with pytest.raises(fs.LegacyRefused) as refused:
        fs.fetch(new, provider_of(new), sid, time.time())
    assert refused.value.reason == "undecodable"


def test_oversized_records_are_refused() -> None:
    with pytest.raises(fs.LegacyRefused):
        fs.decode(msgspec.msgpack.encode({"x": "y" * fs.MAX_RECORD_SIZE}))


def test_memory_provider_has_no_flask_session_counterpart(tmp_path: t.Any) -> None:
    app = our_app({"GOSESSION_PROVIDER": "memory"})
    assert fs.fetch(app, provider_of(app), secrets.token_urlsafe(32), time.time()) is None
    fs.discard(app, provider_of(app), secrets.token_urlsafe(32))


def test_missing_sql_table_reads_as_nothing(request: t.Any) -> None:
    backend = request.getfixturevalue("backend_sql_sqlite")
    app = our_app(backend, SESSION_SQLALCHEMY_TABLE="no_such_table")
    assert fs.fetch(app, provider_of(app), secrets.token_urlsafe(32), time.time()) is None
    fs.discard(app, provider_of(app), secrets.token_urlsafe(32))


# -- fuzzing ---------------------------------------------------------------------------------

plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
sessions = st.dictionaries(st.text(max_size=10), plain_values, max_size=6)


#: These fuzz tests are cheap per example but many: capped under the CI
#: profile's 10,000 (about 40 s in all instead of four minutes).
FUZZ = settings(max_examples=min(1500, settings().max_examples))


def decodes_or_refuses(raw: bytes, fmt: str = "msgpack") -> None:
    try:
        data = fs.decode(raw, fmt)
    except fs.LegacyRefused as err:
        assert err.reason in ("pickle", "undecodable")
    else:
        assert isinstance(data, dict) and all(isinstance(k, str) for k in data)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["msgpack", "json"]))
def test_fuzz_any_bytes_decode_or_are_refused(raw: bytes, fmt: str) -> None:
    decodes_or_refuses(raw, fmt)


@FUZZ
@given(sessions)
def test_fuzz_msgspec_sessions_round_trip(data: dict[str, t.Any]) -> None:
    for codec, name in ((msgspec.msgpack, "msgpack"), (msgspec.json, "json")):
        raw = codec.encode(data)
        assert same(fs.decode(raw, name), codec.decode(raw))


@FUZZ
@given(sessions, st.integers(3, 5))
def test_fuzz_plain_pickles_read_by_hand(data: dict[str, t.Any], protocol: int) -> None:
    assert same(loads_plain(pickle.dumps(data, protocol)), data)


@FUZZ
@given(sessions, st.data())
def test_fuzz_damaged_pickles_never_escape(data: dict[str, t.Any], draw: t.Any) -> None:
    raw = bytearray(pickle.dumps(data, 5))
    for _ in range(draw.draw(st.integers(1, 4))):
        where = draw.draw(st.integers(0, len(raw) - 1))
        raw[where] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(raw)))
    decodes_or_refuses(bytes(raw))
    try:
        loads_plain(bytes(raw[:cut]) if draw.draw(st.booleans()) else bytes(raw))
    except ValueError:  # Malformed and NotPlain
        pass


def test_fuzz_file_records(tmp_path: t.Any) -> None:
    """Random and damaged files in the cachelib directory: a record or a refusal."""
    from cachelib.file import FileSystemCache

    cache = FileSystemCache(str(tmp_path / "fs"))
    app = our_app({"GOSESSION_PROVIDER": "file", "GOSESSION_FILE_DIR": str(tmp_path / "ours")},
                  SESSION_CACHELIB=cache)
    provider = provider_of(app)
    sid = secrets.token_urlsafe(32)
    path = cache._get_filename("session:" + sid)
    header = struct.pack("I", 0)
    good = pickle.dumps(PICKLED_SESSION, 5)
    blobs = [b"", b"\x01", header, header + b"\x80", header + good[:-1], header + good + b"x",
             struct.pack("I", 1) + good, os.urandom(4000), header + b"\x80\x05" + b"(" * 100000 + b"."]
    for seed in range(300):
        raw = bytearray(good)
        raw[seed % len(raw)] = (seed * 7) % 256
        blobs.append(header + bytes(raw))
    for blob in blobs:
        with open(path, "wb") as fh:
            fh.write(blob)
        try:
            fs.fetch(app, provider, sid, time.time())
        except fs.LegacyRefused:
            pass


def test_redis_cluster_provider_reads_a_flask_session_key(request: t.Any) -> None:
    """Flask-Session itself only drives a standalone Redis, but our cluster
    provider must read such a key (as copied into a cluster) all the same."""
    backend = request.getfixturevalue("backend_redis_cluster")
    new = our_app(backend, SESSION_KEY_PREFIX=f"fs-{secrets.token_hex(6)}:")
    provider = provider_of(new)
    sid = secrets.token_urlsafe(32)
    name = new.config["SESSION_KEY_PREFIX"] + sid
    provider.client.set(name, msgspec.msgpack.encode(PICKLED_SESSION), ex=LIFETIME)
    record = fs.fetch(new, provider, sid, time.time())
    assert record is not None and record.data == {**PICKLED_SESSION, "_flashes": [["message", "hi"]]}
    assert record.expires_at is not None
    fs.discard(new, provider, sid)
    assert provider.client.get(name) is None


@FUZZ
@given(st.text(max_size=300), st.booleans())
def test_fuzz_cookie_values_give_a_sid_or_nothing(value: str, signed: bool) -> None:
    app = Flask("x")
    app.config.update(SECRET_KEY="k", SESSION_USE_SIGNER=signed)
    sid = fs.sid_from_cookie(app, value)
    assert sid is None or (sid.isascii() and (value == sid or value.startswith(sid + ".")))


# -- the switch, end to end: GOSESSION_IMPORT_FLASK_SESSION -------------------------------------


def switched(request: t.Any, store: str, fmt: str = "msgpack", **config: t.Any) -> tuple[Flask, Flask]:
    """(the app on Flask-Session 0.8, the same app redeployed on ours with the import on)."""
    from flask import jsonify

    backend, fs_config = SETUPS[store](request, fmt)
    old = flask_session_app(fs_config, plain=store == "file")
    new = our_app(backend, old, GOSESSION_IMPORT_FLASK_SESSION=True, GOSESSION_GC_INTERVAL=0,
                  PERMANENT_SESSION_LIFETIME=old.permanent_session_lifetime, **config)

    @new.get("/state")
    def state() -> t.Any:
        return jsonify(user=session.get("_user_id"), cart=session.get("cart"),
                       flashes=get_flashed_messages(), permanent=session.permanent)

    return old, new


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@pytest.mark.parametrize("store", list(SETUPS))
def test_after_the_switch_the_user_is_still_logged_in_and_sees_the_flash(request, store, fmt):
    from signals_capture import captured, named

    old, new = switched(request, store, fmt)
    value = log_in(old)
    sid = fs.sid_from_cookie(new, value)
    assert sid is not None and oracle(old, sid)
    client = new.test_client()
    client.set_cookie("session", value)
    with captured() as seen:
        first = client.get("/state")
    assert first.json == {"user": "42", "cart": {"apples": 3, "note": "ünïcode"},
                          "flashes": ["Welcome back", "Saved"], "permanent": True}
    assert client.get_cookie("gosessionid") is not None and client.get_cookie("session") is None
    assert [k["source"] for k in named(seen, "session_imported")] == ["flask-session"]
    assert not oracle(old, sid)  # the old record is gone: it imports once
    again = client.get("/state")
    assert again.json["user"] == "42" and again.json["flashes"] == []
    counts = provider_of(new).event_counts()
    assert counts is None if store == "memcached" else counts == {"imported:flask-session": 1}
    # The old cookie, replayed, finds nothing to import any more.
    replay = new.test_client()
    replay.set_cookie("session", value)
    assert replay.get("/state").json["user"] is None


def test_the_import_costs_the_old_records_read_and_delete(request):
    """Round trips on Redis: the old record's read and delete, our new
    record's write, one counter increment; then an ordinary read."""
    old, new = switched(request, "redis")
    provider = provider_of(new)
    calls: list[str] = []
    for name in ("legacy_get", "legacy_delete", "session_init", "session_read", "count_event"):
        method = getattr(provider, name)

        def counted(*args: t.Any, _name: str = name, _method: t.Any = method) -> t.Any:
            calls.append(_name)
            return _method(*args)

        setattr(provider, name, counted)
    client = new.test_client()
    client.set_cookie("session", log_in(old))
    assert client.get("/state").json["user"] == "42"
    assert sorted(calls) == ["count_event", "legacy_delete", "legacy_get", "session_init"]
    calls.clear()
    client.get("/state")
    assert calls == ["session_read"]


@pytest.mark.parametrize("store", ["redis", "sql_sqlite"])
def test_pickle_era_records_are_refused_counted_and_logged_once_a_minute(request, store, caplog):
    old, new = switched(request, store)
    raw = pickle.dumps({"_user_id": "42"}, protocol=4)
    with pickle_forbidden() as calls, caplog.at_level(logging.WARNING, logger="flask_gosession"):
        for _ in range(3):
            sid = secrets.token_urlsafe(32)
            write_raw(old, new, sid, raw)
            client = new.test_client()
            client.set_cookie("session", sid)
            response = client.get("/state")
            assert response.status_code == 200 and response.json["user"] is None
    assert calls == []
    warnings = [r for r in caplog.records if "pickle" in r.getMessage()]
    assert len(warnings) == 1 and "never unpickled" in warnings[0].getMessage()
    assert provider_of(new).event_counts() == {"import-refused:pickle": 3}


def test_the_flask_session_import_needs_a_store_with_a_counterpart():
    from flask_gosession import ConfigError

    app = Flask("memory")
    app.config.update(SECRET_KEY="x", GOSESSION_IMPORT_FLASK_SESSION=True)
    with pytest.raises(ConfigError, match="redis, memcached, sql or file"):
        GoSession().init_app(app)


def test_both_imports_on_take_whichever_cookie_comes(request):
    """A Flask cookie and a Flask-Session id arrive under the same name;
    with both imports on, each is recognised."""
    from flask.sessions import SecureCookieSessionInterface

    old, new = switched(request, "redis", GOSESSION_IMPORT_FLASK_COOKIE=True)
    fs_client = new.test_client()
    fs_client.set_cookie("session", log_in(old))
    assert fs_client.get("/state").json["user"] == "42"
    serializer = SecureCookieSessionInterface().get_signing_serializer(new)
    cookie_client = new.test_client()
    cookie_client.set_cookie("session", serializer.dumps({"_user_id": "7"}))
    assert cookie_client.get("/state").json["user"] == "7"
