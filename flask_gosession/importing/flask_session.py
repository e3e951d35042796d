"""Read what Flask-Session 0.6 to 0.8 left in a store, to import it.

This module finds, decodes and deletes one Flask-Session record; deciding
when to import, and writing the new session, is the caller's job.

The formats, as Flask-Session writes them (read from its 0.6.1rc1, 0.7.0
and 0.8.0 sources; 0.7 and 0.8 store identically):

Cookie
    ``SESSION_COOKIE_NAME`` holds the session id: ``secrets.token_urlsafe(
    SESSION_ID_LENGTH)`` (default 32 bytes, so 43 characters of
    ``[A-Za-z0-9_-]``; 0.5 and earlier used ``uuid4()``). With the
    deprecated ``SESSION_USE_SIGNER = True`` the cookie is
    ``<sid>.<signature>``, signed by :class:`itsdangerous.Signer` with
    ``SECRET_KEY``, ``salt="flask-session"``, ``key_derivation="hmac"``
    (SHA-1).
Store key
    ``SESSION_KEY_PREFIX + sid`` (default ``"session:"``).
Redis, Memcached
    A string value under the key, with a native TTL of
    ``PERMANENT_SESSION_LIFETIME`` (memcached: an absolute time beyond 30
    days). Memcached cannot tell an item's expiry, so it stays unknown.
SQLAlchemy
    Table ``SESSION_SQLALCHEMY_TABLE`` (default ``"sessions"``, schema
    ``SESSION_SQLALCHEMY_SCHEMA``): ``id`` integer key, ``session_id``
    (the store key, unique), ``data`` (``LargeBinary``), ``expiry``
    (naive UTC ``DateTime``; ``NULL`` or past means expired).
Value (Redis, Memcached, SQL)
    0.7+: ``msgspec.msgpack`` (default) or ``msgspec.json``
    (``SESSION_SERIALIZATION_FORMAT``) of ``dict(session)``, *untagged*:
    tuples and sets come back as lists, UUIDs as strings, naive datetimes
    as ISO strings, aware ones as aware datetimes (msgpack) or strings
    (JSON), bytes as bytes (msgpack) or base64 strings (JSON); ``Markup``
    cannot be stored at all (msgspec refuses it, the request fails). It
    decodes with the configured format first, then the other one, as
    Flask-Session does. 0.6 and earlier: :func:`pickle.dumps` of the dict;
    0.7+ still reads those. Such records are refused (``"pickle"``).
Filesystem / cachelib
    :class:`cachelib.file.FileSystemCache` in ``SESSION_FILE_DIR``
    (default ``./flask_session``) or the directory of a ``FileSystemCache``
    given as ``SESSION_CACHELIB``: the file is named by the SHA-256 hex
    digest of the store key and holds a native unsigned 32-bit expiry (unix
    time, 0 for never) followed by a *pickle of the dict itself* in every
    version, 0.8 included (protocol 5). It is read by
    :mod:`~flask_gosession.importing._plainpickle`, which accepts plain data
    only and never runs the pickle module; records holding any class
    (``datetime``, ``Markup``, ...) are refused (``"pickle"``).

Flask-Session's in-process ``cachelib.SimpleCache`` does not outlive the
process, so there is nothing to import from it: on the memory provider
(and any provider without a Flask-Session counterpart) :func:`fetch`
answers ``None``.

Hostile input: every record either decodes into a :class:`LegacyRecord` or
raises :class:`LegacyRefused`; records over :data:`MAX_RECORD_SIZE` bytes
and data nested deeper than :data:`MAX_DEPTH` are refused. Backend failures
raise :class:`~flask_gosession.errors.ProviderError`, mapped as the provider
maps its own.
"""
from __future__ import annotations

import datetime
import errno
import hashlib
import os
import re
import stat
import struct
import typing as t
from dataclasses import dataclass

from ..errors import ConfigError, CorruptRecordError, GoSessionError, ProviderError
from ..providers.base import redact
from ._plainpickle import Malformed, NotPlain, loads_plain

if t.TYPE_CHECKING:
    from flask import Flask

    from ..providers.base import Provider

#: The largest Flask-Session record read, in bytes; larger ones are refused.
MAX_RECORD_SIZE = 1024 * 1024
#: The deepest nesting of containers accepted in a record.
MAX_DEPTH = 100
#: Flask-Session's defaults for the settings read here.
DEFAULT_KEY_PREFIX = "session:"
DEFAULT_TABLE = "sessions"
DEFAULT_FORMAT = "msgpack"

#: A Flask-Session id: ``token_urlsafe`` output (0.6+) or a ``uuid4`` (earlier).
_SID = re.compile(r"[A-Za-z0-9_-]{16,128}")
#: Longest cookie value looked at (a signed 128-character id fits easily).
_MAX_COOKIE = 256
#: cachelib's file header: the expiry, ``struct.pack("I", ...)``.
_HEADER = struct.Struct("I")

Reason = t.Literal["pickle", "undecodable"]


class LegacyRefused(GoSessionError):
    """A Flask-Session record that is not imported.

    :attr:`reason` is ``"pickle"`` for a record only the pickle module
    could load (never done), ``"undecodable"`` for anything else that is not
    a session.
    """

    def __init__(self, reason: Reason) -> None:
        super().__init__(f"Flask-Session record refused: {reason}")
        #: ``"pickle"`` or ``"undecodable"``.
        self.reason: Reason = reason


@dataclass(frozen=True)
class LegacyRecord:
    """One Flask-Session session, as Flask-Session would hand it to the app."""

    #: The session's keys, ``"_permanent"`` included if present.
    data: dict[str, t.Any]
    #: Unix time at which the old record expires, if the store tells.
    expires_at: float | None


# -- the cookie ----------------------------------------------------------------------------


def sid_from_cookie(app: Flask, value: str) -> str | None:
    """The Flask-Session id in a cookie ``value``, or ``None`` if it is not shaped like one.

    Under ``SESSION_USE_SIGNER`` the signature is checked against
    ``SECRET_KEY`` and then each of ``SECRET_KEY_FALLBACKS``; a bad one
    gives ``None``.
    """
    if not isinstance(value, str) or not value or len(value) > _MAX_COOKIE:
        return None
    if app.config.get("SESSION_USE_SIGNER", False):
        value = _unsign(app, value) or ""
    return value if _SID.fullmatch(value) else None


def _unsign(app: Flask, value: str) -> str | None:
    from itsdangerous import BadSignature, Signer

    secret = app.secret_key
    if not secret:
        return None
    keys = [_key_bytes(key) for key in (*(app.config.get("SECRET_KEY_FALLBACKS") or ()), secret)]
    try:  # the last key signs; unsign tries every key
        return Signer(keys, salt="flask-session", key_derivation="hmac").unsign(value).decode("ascii")
    except (BadSignature, UnicodeDecodeError):
        return None


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


# -- reading and deleting ------------------------------------------------------------------


def fetch(app: Flask, provider: Provider, sid: str, now: float) -> LegacyRecord | None:
    """The Flask-Session record of ``sid``, read from the backend of ``provider``.

    Redis and Memcached are read through the provider's client, SQL through
    its engine (Flask-Session's table on the same database), the file
    provider from Flask-Session's own directory (see the module docs).

    :returns: ``None`` if there is no such record, if it has expired at
        ``now``, or if the provider has no Flask-Session counterpart.
    :raises LegacyRefused: for a pickle-era or otherwise undecodable record.
    :raises ProviderError: if the backend fails.
    """
    if not isinstance(sid, str) or not _SID.fullmatch(sid):
        return None
    name = _store_key(app, sid)
    kind = _kind(provider)
    expires_at: float | None
    if kind == "redis":
        try:
            found = t.cast(t.Any, provider).legacy_get(name)
        except CorruptRecordError:  # not a string key
            raise LegacyRefused("undecodable") from None
        if found is None:
            return None
        raw, ttl = found
        expires_at = None if ttl is None else now + ttl
    elif kind == "memcached":
        raw = t.cast(t.Any, provider).legacy_get(name)
        if raw is None:
            return None
        expires_at = None
    elif kind == "sql":
        try:
            row = t.cast(t.Any, provider).legacy_row(*_sql_table(app), name)
        except CorruptRecordError:
            raise LegacyRefused("undecodable") from None
        if row is None:
            return None
        raw, expiry = row
        if expiry is None:  # Flask-Session deletes a row without expiry on read
            return None
        if expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=datetime.timezone.utc)
        expires_at = expiry.timestamp()
    elif kind == "file":
        return _fetch_file(_file_path(app, name), now)
    else:
        return None
    if not raw or (expires_at is not None and expires_at <= now):
        return None  # Flask-Session reads an empty value as no session too
    return LegacyRecord(decode(raw, _format(app)), expires_at)


def discard(app: Flask, provider: Provider, sid: str) -> None:
    """Delete the Flask-Session record of ``sid``, if there is one.

    :raises ProviderError: if the backend fails.
    """
    if not isinstance(sid, str) or not _SID.fullmatch(sid):
        return
    name = _store_key(app, sid)
    kind = _kind(provider)
    if kind in ("redis", "memcached"):
        t.cast(t.Any, provider).legacy_delete(name)
    elif kind == "sql":
        t.cast(t.Any, provider).legacy_delete(*_sql_table(app), name)
    elif kind == "file":
        path = _file_path(app, name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise _file_error("delete", err) from err


def check_supported(app: Flask, provider: Provider) -> None:
    """Refuse ``GOSESSION_IMPORT_FLASK_SESSION`` on a store with no
    Flask-Session counterpart (memory, a third-party provider).

    :raises ConfigError: naming the stores that can import.
    """
    if _kind(provider) is None:
        raise ConfigError(
            "GOSESSION_IMPORT_FLASK_SESSION reads Flask-Session's records from the same backend "
            "as ours: use the redis, memcached, sql or file provider (Flask-Session's in-process "
            f"cache does not outlive a restart), not {type(provider).__name__}"
        )
    theirs = _store_key(app, "")  # SESSION_KEY_PREFIX, checked to be a string
    ours = getattr(provider, "key_prefix", None)
    if _kind(provider) in ("redis", "memcached") and isinstance(ours, str) and (
            ours.startswith(theirs) or theirs.startswith(ours)):
        # Our keys (64 hex digits after our prefix) would then be readable
        # as Flask-Session ids: a key from a store dump, presented as the
        # old cookie, would import the session it names.
        raise ConfigError(
            f"GOSESSION_KEY_PREFIX ({ours!r}) and Flask-Session's SESSION_KEY_PREFIX "
            f"({theirs!r}) must not overlap (neither may start with the other): give "
            "flask-gosession a prefix of its own, such as 'gosession:'"
        )


def _kind(provider: Provider) -> str | None:
    """Which Flask-Session backend ``provider`` shares, if any."""
    from ..providers.file import FileProvider
    from ..providers.memcached import MemcachedProvider
    from ..providers.redis import RedisProvider
    from ..providers.sql import SQLProvider

    kinds: tuple[tuple[type, str], ...] = (
        (RedisProvider, "redis"), (MemcachedProvider, "memcached"),
        (SQLProvider, "sql"), (FileProvider, "file"),
    )
    for cls, kind in kinds:
        if isinstance(provider, cls):
            return kind
    return None


def _store_key(app: Flask, sid: str) -> str:
    prefix = app.config.get("SESSION_KEY_PREFIX", DEFAULT_KEY_PREFIX)
    if not isinstance(prefix, str):
        raise ConfigError(f"SESSION_KEY_PREFIX must be a string, got {prefix!r}")
    return prefix + sid


def _format(app: Flask) -> str:
    value = app.config.get("SESSION_SERIALIZATION_FORMAT", DEFAULT_FORMAT)
    return "json" if value == "json" else "msgpack"


def _sql_table(app: Flask) -> tuple[str, str | None]:
    table = app.config.get("SESSION_SQLALCHEMY_TABLE", DEFAULT_TABLE)
    schema = app.config.get("SESSION_SQLALCHEMY_SCHEMA")
    if not isinstance(table, str) or not table or not (schema is None or isinstance(schema, str)):
        raise ConfigError("SESSION_SQLALCHEMY_TABLE must be a name and SESSION_SQLALCHEMY_SCHEMA a name or None")
    return table, schema


# -- the file store ------------------------------------------------------------------------


def _file_path(app: Flask, name: str) -> str:
    """Where cachelib's FileSystemCache keeps the record named ``name``."""
    cache = app.config.get("SESSION_CACHELIB")
    directory = getattr(cache, "_path", None) if cache is not None else None
    if not isinstance(directory, (str, os.PathLike)):
        directory = app.config.get("SESSION_FILE_DIR") or os.path.join(os.getcwd(), "flask_session")
    return os.path.join(os.fspath(directory), hashlib.sha256(name.encode("utf-8")).hexdigest())


def _file_error(action: str, err: OSError) -> ProviderError:
    return ProviderError(f"Flask-Session file store: cannot {action}: {redact(str(err))}")


def _fetch_file(path: str, now: float) -> LegacyRecord | None:
    try:
        # O_NONBLOCK: a FIFO planted under a record's name must not hang the
        # worker (the regular-file check below then refuses it).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENXIO, errno.EISDIR):
            # A symlink, a file we may not read, a socket or a directory where
            # a record would be: not a session, and not an outage either.
            raise LegacyRefused("undecodable") from None
        raise _file_error("read", err) from err
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LegacyRefused("undecodable")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_RECORD_SIZE + _HEADER.size:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise _file_error("read", err) from err
    finally:
        os.close(fd)
    blob = b"".join(chunks)
    if len(blob) < _HEADER.size or len(blob) > MAX_RECORD_SIZE + _HEADER.size:
        raise LegacyRefused("undecodable")
    (expires,) = _HEADER.unpack_from(blob)
    if expires != 0 and expires < now:  # cachelib: valid while expires >= time()
        return None
    try:
        value = loads_plain(blob[_HEADER.size:])
    except NotPlain:
        raise LegacyRefused("pickle") from None
    except Malformed:
        raise LegacyRefused("undecodable") from None
    if isinstance(value, bytes):  # a store that pickled encoded bytes
        value = decode(value, "msgpack")
    return LegacyRecord(_checked(value), float(expires) if expires else None)


# -- decoding ------------------------------------------------------------------------------


def decode(raw: bytes, fmt: str = DEFAULT_FORMAT) -> dict[str, t.Any]:
    """Decode a Flask-Session 0.7+ value as Flask-Session does: ``fmt``
    (``"msgpack"`` or ``"json"``) first, then the other one; never pickle.

    :raises LegacyRefused: ``"pickle"`` for a pickle (detected by its
        opcodes: ``PROTO`` 2–5 or a protocol 0/1 dict or list, ending in
        ``STOP``), ``"undecodable"`` for anything else that is not a
        session dict, or is larger than :data:`MAX_RECORD_SIZE`.
    """
    if not isinstance(raw, (bytes, bytearray, memoryview)) or len(raw) > MAX_RECORD_SIZE:
        raise LegacyRefused("undecodable")
    raw = bytes(raw)
    msgpack, json = _decoders()
    for decoder in ((json, msgpack) if fmt == "json" else (msgpack, json)):
        try:
            value = decoder.decode(raw)
        except Exception:  # DecodeError, RecursionError, ...: hostile bytes, try the next
            continue
        return _checked(value)
    if _looks_pickled(raw):
        raise LegacyRefused("pickle")
    raise LegacyRefused("undecodable")


def _decoders() -> tuple[t.Any, t.Any]:
    try:
        import msgspec
    except ImportError as err:  # pragma: no cover - depends on the extra
        raise ConfigError(
            "importing Flask-Session records needs msgspec: pip install 'flask-gosession[msgpack]'"
        ) from err
    return msgspec.msgpack.Decoder(), msgspec.json.Decoder()


def _looks_pickled(raw: bytes) -> bool:
    """Whether ``raw`` is shaped like a pickle: ``PROTO n`` (2–5), or a
    protocol 0/1 dict or list (``(dp``, ``(lp``, ``}q``, ``]q``), then
    ``STOP``."""
    if not raw.endswith(b"."):
        return False
    if len(raw) >= 3 and raw[0] == 0x80 and 2 <= raw[1] <= 5:
        return True
    return raw[:3] in (b"(dp", b"(lp") or raw[:2] in (b"}q", b"]q", b"}(", b"](")


def _checked(value: t.Any) -> dict[str, t.Any]:
    """``value`` if it is a session: a dict with string keys, of plain
    decoded values nested at most :data:`MAX_DEPTH` deep (no msgpack
    extension other than timestamps)."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise LegacyRefused("undecodable")
    plain = (str, bytes, int, float, bool, type(None), datetime.datetime)
    pending: list[tuple[t.Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                raise LegacyRefused("undecodable")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif not isinstance(item, plain):
            raise LegacyRefused("undecodable")
    return value
