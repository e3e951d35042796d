"""The provider contract: what every session store must do.

A provider stores *records* under a *key*. The key is always the SHA-256 hex
digest of a session id (64 lowercase hex characters), computed by the
manager: a provider never sees a raw session id, so a dump of the store
cannot be replayed as a cookie. Keys are therefore safe to use in file
names, SQL parameters and cache keys without further escaping.

A record (:class:`Record`) has three parts:

``data``
    the user's keys, each value already *tagged* into plain JSON types;
``meta``
    internal fields owned by the manager (creation time, token, forwarding
    after a rotation, ...), plain JSON types, never shown to the user;
``atime``
    the time of the last access, in seconds on the manager's clock. Idle
    expiry is ``atime + max_lifetime <= now``.

Contract shared by every method:

* A missing record, or one the backend itself has already expired (native
  TTL, garbage collection), reads as ``None``; that is never an error.
  Providers do not judge expiry on read: the manager does, so that it can
  tell an expired session from an unknown one.
* Any failure of the backend (connection refused, timeout, server error)
  raises :class:`~flask_gosession.errors.ProviderError` ``from`` the original
  exception. Nothing else escapes, except
  :class:`~flask_gosession.errors.CorruptRecordError` from
  :meth:`session_read` (or :meth:`session_update`, which must decode to
  merge) for a record that cannot be decoded; the manager then drops it;
  and :class:`~flask_gosession.errors.RecordTooLarge` from
  :meth:`session_init` and :meth:`session_update` for a record larger than
  the store accepts (:attr:`Provider.max_record_size`), raised before
  anything is written, so the stored record stays as it was. A too-large
  record is not an outage and is never a ``ProviderError``.
* A record is never left half-written: every write either happens whole or
  not at all.
* No message of an exception a provider raises carries a full key: keys
  appear as their :func:`~flask_gosession.ids.label` (see :func:`redact`
  for text that comes from a client library or the operating system).
"""
from __future__ import annotations

import abc
import enum
import re
import time
import typing as t
from dataclasses import dataclass, field

from ..errors import ConfigError, CorruptRecordError, RecordTooLarge, UserIndexUnsupported
from ..ids import label
from ..serializers import JSONSerializer, Serializer, get_serializer
from ..userindex import IndexEntry, IndexResult, IndexWrite

if t.TYPE_CHECKING:
    from flask import Flask

#: The meta field that marks a record rotated away. Its presence makes
#: :meth:`Provider.session_update` answer :attr:`Outcome.FORWARDED`.
FORWARD_FIELD = "f"
#: The meta field of a *tombstone*: a record being destroyed. Its presence
#: makes :meth:`Provider.session_update` answer :attr:`Outcome.MISSING`, so
#: that nothing (a save, a rotation's mark) can be applied to a session once
#: its destruction has begun. The manager reads a tombstone as no record.
DEAD_FIELD = "x"


@dataclass(frozen=True, slots=True)
class Binding:
    """The per-app values a provider works with, fixed when an app binds it.

    A registered provider *instance* can serve several apps; they must then
    agree on these values, or the last app to start would silently decide
    the encoding and the native TTLs of the others (see
    :meth:`Provider.bind`).
    """

    #: Name of the serializer (``"json"``, ``"msgpack"``).
    serializer: str
    #: The idle lifetime in seconds, for native TTLs.
    max_lifetime: int
    #: Time source in seconds since the epoch.
    clock: t.Callable[[], float] = time.time

#: A well-formed key that no session can have (the SHA-256 of an id is
#: never all zeros), read by :meth:`Provider.ping`.
PROBE_KEY = "0" * 64

#: A full store key inside other text (a path, a driver's message); also
#: a longer hex run, which may be a key glued to a hex-ending prefix.
_KEY_IN_TEXT = re.compile(r"[0-9a-f]{64,}")


def redact(text: str) -> str:
    """``text`` with every full store key in it cut down to its label.

    For messages that come from outside (an ``OSError`` naming a record's
    path, a database error quoting a row), before they go into an
    exception, and so into the log.
    """
    return _KEY_IN_TEXT.sub(lambda match: label(match.group()) + "…", text)


@dataclass(slots=True)
class Record:
    """One stored session, as providers exchange it with the manager."""

    #: User keys to tagged (plain JSON) values.
    data: dict[str, t.Any]
    #: Internal fields owned by the manager; plain JSON values.
    meta: dict[str, t.Any]
    #: Last access, seconds since the epoch on the manager's clock.
    atime: float
    #: What the store knows of the stored state this record was read from
    #: (memcached: its compare-and-swap id and the record as read), or
    #: ``None``. Opaque to everything but the provider that set it; the
    #: manager hands it back as :attr:`Change.base` of the request's
    #: write. Never compared.
    version: t.Any = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Change:
    """What one request changed in a session: applied per key.

    Keys in :attr:`set` are written, keys in :attr:`deleted` removed; keys
    in neither keep whatever the store holds now, including values written
    by concurrent requests. A ``None`` value in :attr:`meta` deletes that
    meta field.
    """

    set: dict[str, t.Any] = field(default_factory=dict)
    deleted: t.AbstractSet[str] = frozenset()
    meta: dict[str, t.Any] = field(default_factory=dict)
    #: The new access time (the request's ``now``).
    atime: float = 0.0
    #: A precondition, checked atomically with the merge: each meta field
    #: named here must hold exactly this value (``None``: must be absent),
    #: or nothing is written and the outcome is :attr:`Outcome.CONFLICT`.
    #: Used to consume a one-time token exactly once.
    expect: dict[str, t.Any] = field(default_factory=dict)
    #: The :attr:`Record.version` of the record this change was made
    #: against (the request's read), or ``None``. Only a hint: a provider
    #: may use it to write without reading first while the stored record
    #: is still at that version, and must otherwise read it as without a
    #: base, so that the outcome is the same either way.
    base: t.Any = field(default=None, compare=False, repr=False)


class Outcome(enum.Enum):
    """What :meth:`Provider.session_update` did."""

    #: The change was merged into the stored record.
    APPLIED = "applied"
    #: No record exists (destroyed, expired or never created): nothing was
    #: written, so a concurrent logout is never undone.
    MISSING = "missing"
    #: The record carries :data:`FORWARD_FIELD` (it was rotated away);
    #: nothing was written, the manager re-applies the change to the record
    #: it forwards to.
    FORWARDED = "forwarded"
    #: :attr:`Change.expect` did not hold: nothing was written.
    CONFLICT = "conflict"


def apply_change(record: Record, change: Change) -> None:
    """Merge ``change`` into ``record`` in place, key by key."""
    data = record.data
    for key in change.deleted:
        data.pop(key, None)
    data.update(change.set)
    if change.meta:
        meta = record.meta
        for key, value in change.meta.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
    record.atime = change.atime


def record_from_parts(data: t.Any, meta: t.Any, atime: t.Any) -> Record:
    """Validate decoded parts of a record and build it.

    :raises CorruptRecordError: if any part has the wrong type.
    """
    if (
        not isinstance(data, dict)
        or not isinstance(meta, dict)
        or not isinstance(atime, (int, float))
        or isinstance(atime, bool)
    ):
        raise CorruptRecordError("stored record has the wrong shape")
    return Record(data, meta, float(atime))


def parse_counts(raw: t.Mapping[str, t.Any]) -> dict[str, int]:
    """Event counters as a store returned them (bytes, strings or numbers),
    as ints; a value that is not a plain decimal count is left out."""
    counts: dict[str, int] = {}
    for name, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, int) and not isinstance(value, bool):
            counts[name] = value
        elif isinstance(value, str) and value.strip().isdigit() and len(value) < 20:
            counts[name] = int(value)
    return dict(sorted(counts.items()))


class Provider(abc.ABC):
    """Abstract base of every session store.

    Subclasses implement the ``session_*`` methods below, and usually
    :meth:`from_config`. Each app's manager calls :meth:`bind` before the
    first call, which sets :attr:`clock`, :attr:`serializer` and
    :attr:`max_lifetime`.

    Blob-oriented providers (one encoded value per record) can use
    :meth:`pack` and :meth:`unpack`; they share one record layout.
    """

    #: ``True`` when :meth:`session_read` refreshes ``atime`` itself within
    #: the same round trip; otherwise the manager calls :meth:`session_touch`
    #: at most once per ``GOSESSION_REFRESH_INTERVAL``.
    touches_on_read: t.ClassVar[bool] = False
    #: ``True`` when the backend expires records by itself (native TTL), so
    #: :meth:`session_gc` has nothing to do and no GC thread is started.
    native_ttl: t.ClassVar[bool] = False
    #: ``True`` when records live in this process only (the ``memory``
    #: store): other worker processes, and the ``flask gosession`` command
    #: line, cannot see them. ``init_app`` then warns outside debug and
    #: testing, and the command line says what it cannot see.
    process_local: t.ClassVar[bool] = False
    #: One line per key of :meth:`config_defaults`: what it does. The
    #: documentation's configuration table is built from it; a provider
    #: whose keys should appear there describes each of them.
    config_descriptions: t.ClassVar[t.Mapping[str, str]] = {}
    #: ``True`` when :meth:`live_session_count` answers cheaply enough to
    #: call on every metrics scrape (no scan of the store): the ``memory``
    #: store. Only such stores get the ``gosession_active_sessions`` gauge.
    cheap_count: t.ClassVar[bool] = False

    #: Time source, seconds since the epoch. Set by the manager.
    clock: t.Callable[[], float] = staticmethod(time.time)
    #: Encoder for blob providers. Set by the manager.
    serializer: Serializer = JSONSerializer()
    #: The idle lifetime in seconds, for native TTLs. Set by the manager.
    max_lifetime: int = 3600
    #: The largest record, in encoded bytes, that :meth:`session_init` and
    #: :meth:`session_update` store; ``None`` for no limit. Built-in
    #: providers set it from ``GOSESSION_MAX_RECORD_SIZE`` and their store's
    #: own limit.
    max_record_size: int | None = None
    #: What sets :attr:`max_record_size`, named in :class:`RecordTooLarge`.
    max_record_setting: str = "GOSESSION_MAX_RECORD_SIZE"

    #: What :meth:`bind` fixed, or ``None`` before the first app binds.
    binding: Binding | None = None

    def bind(self, binding: Binding, *, replace: bool = False) -> None:
        """Fix the per-app values this provider works with.

        The first app to bind decides; a second app binding the same
        instance must ask for the same values.

        :param replace: rebind on purpose (a test swapping the clock).
        :raises ConfigError: if another app already bound this instance
            with different values.
        """
        current = self.binding
        if current is not None and current != binding and not replace:
            differ = [
                f"{name}: {getattr(current, name)!r} here, {getattr(binding, name)!r} asked"
                for name in ("serializer", "max_lifetime", "clock")
                if getattr(current, name) != getattr(binding, name)
            ]
            raise ConfigError(
                f"this {type(self).__name__} instance already serves another app with "
                f"different settings ({'; '.join(differ)}). Give each app its own "
                "provider instance, or the same GOSESSION_SERIALIZER and "
                "GOSESSION_MAX_LIFETIME."
            )
        self.binding = binding
        self.serializer = get_serializer(binding.serializer)
        self.max_lifetime = binding.max_lifetime
        self.clock = binding.clock

    @classmethod
    def from_config(cls, app: Flask) -> Provider:
        """Build the provider from ``app.config``.

        Reads only the provider's own ``GOSESSION_*`` keys, which
        :meth:`config_defaults` declared. The default takes no settings.
        :raises ConfigError: for a bad value.
        """
        return cls()

    @classmethod
    def config_defaults(cls, app: Flask) -> dict[str, t.Any]:
        """The provider's own ``GOSESSION_*`` keys and their defaults.

        ``init_app`` applies them with ``setdefault`` before
        :meth:`from_config` runs.
        """
        return {}

    # -- the Go design's operations ---------------------------------------

    @abc.abstractmethod
    def session_init(self, key: str, record: Record) -> None:
        """Store a new record under ``key``, replacing any record there.

        Atomic: a concurrent reader sees either nothing or the whole record.
        """

    @abc.abstractmethod
    def session_create(self, key: str, record: Record) -> bool:
        """Store a new record under ``key`` only if no record is there.

        Atomic: of two concurrent creations of one key exactly one
        succeeds, and an existing record (a tombstone included) is never
        replaced. Used by rotation, where more than one request may build
        the record a rotated-out id forwards to.
        :returns: whether this call stored the record.
        """

    @abc.abstractmethod
    def session_read(self, key: str, now: float) -> Record | None:
        """Return the record stored under ``key``, or ``None``.

        If :attr:`touches_on_read` is true, the stored ``atime`` is set to
        ``now`` in the same round trip, and the returned record carries the
        *previous* ``atime`` so that the manager can judge idle expiry.
        :raises CorruptRecordError: if the stored record cannot be decoded.
        """

    @abc.abstractmethod
    def session_update(self, key: str, change: Change) -> Outcome:
        """Merge ``change`` into the record under ``key``, key by key.

        Atomic with respect to every other write to the same key: two
        concurrent updates that change different keys both survive, and for
        the same key the last writer wins. Never creates a record: a missing
        one gives :attr:`Outcome.MISSING`, and so does a tombstone (meta
        holds :data:`DEAD_FIELD`). A record whose meta holds
        :data:`FORWARD_FIELD` is left alone and gives
        :attr:`Outcome.FORWARDED` -- also when ``change.meta`` sets that
        field itself: that is how the manager marks a rotation, and the
        first of two concurrent rotations must win. Then
        :attr:`Change.expect` is checked: if it does not hold, nothing is
        written and the outcome is :attr:`Outcome.CONFLICT`.
        """

    @abc.abstractmethod
    def session_touch(self, key: str, atime: float) -> None:
        """Set the record's ``atime`` (and native TTL) without rewriting data.

        A missing record stays missing.
        """

    @abc.abstractmethod
    def session_destroy(self, key: str) -> None:
        """Remove the record under ``key``. Removing a missing one is a no-op."""

    @abc.abstractmethod
    def session_gc(self, max_lifetime: int) -> int:
        """Remove every record idle for ``max_lifetime`` seconds or more.

        :returns: how many records were removed (0 for stores that expire
            records natively).
        """

    # -- administration ---------------------------------------------------

    def ping(self) -> None:
        """Check that the store answers, for ``flask gosession gc`` on stores
        whose :meth:`session_gc` has nothing to do and so would not notice
        an outage.

        The default reads a key no session can have (all zeros), which
        every provider already supports; override it with a cheaper
        round trip if the store has one.
        :raises ProviderError: if the store does not answer.
        """
        try:
            self.session_read(PROBE_KEY, self.clock())
        except CorruptRecordError:
            pass  # the store answered

    def session_count(self) -> int | None:
        """How many records are stored, or ``None`` if the store cannot tell."""
        return None

    def live_session_count(self) -> int | None:
        """How many *live* sessions are stored: records that are neither
        forward stubs left by a rotation (:data:`FORWARD_FIELD`) nor
        tombstones (:data:`DEAD_FIELD`); ``None`` if the store cannot tell
        without a scan. A store that answers sets :attr:`cheap_count`."""
        return None

    # -- event counters (``flask gosession stats``) -------------------------

    #: ``True`` for a store that keeps :meth:`count_event` counters shared
    #: by every process using it.
    counts_events: t.ClassVar[bool] = False

    def count_event(self, name: str) -> None:  # noqa: B027 (optional, not abstract)
        """Add one to the counter ``name`` (a short ASCII word such as
        ``"imported:flask-cookie"``), atomically across processes. Rare
        events only (one per migrated visitor): one round trip each. The
        default keeps no counter.
        """

    def event_counts(self) -> dict[str, int] | None:
        """Every counter :meth:`count_event` kept, or ``None`` if the store
        keeps none."""
        return None

    # -- the per-user index (see flask_gosession.userindex) -----------------

    #: ``False`` for a store that cannot keep a per-user index (Memcached):
    #: :meth:`index_write` and :meth:`index_read` then raise
    #: :class:`~flask_gosession.errors.UserIndexUnsupported`.
    user_index: t.ClassVar[bool] = True

    def index_write(self, user: str, write: IndexWrite, now: float) -> IndexResult:
        """Apply ``write`` to the index of ``user`` (a
        :func:`~flask_gosession.userindex.user_key`), atomically with
        respect to every other write of that index, with
        :func:`~flask_gosession.userindex.apply_write`'s semantics: pruning,
        the per-handle rule and the limit. The index expires by itself at
        its latest horizon, and is deleted when it is left empty.
        """
        raise UserIndexUnsupported(type(self).__name__)

    def index_read(self, user: str, now: float) -> list[IndexEntry]:
        """The entries of ``user``'s index whose horizon is after ``now``
        (expired ones are pruned from the store as well)."""
        raise UserIndexUnsupported(type(self).__name__)

    def session_peek(self, keys: t.Sequence[str], now: float) -> dict[str, Record | None]:
        """The records under ``keys`` (``None`` for a missing one), read
        without refreshing their access time, for the device list.

        The default reads them one by one with :meth:`session_read`, which
        is right for stores that do not touch on read; the others override
        it, and stores that can batch the reads do so.
        :raises CorruptRecordError: never: a corrupt record reads as ``None``.
        """
        records: dict[str, Record | None] = {}
        for key in keys:
            try:
                records[key] = self.session_read(key, now)
            except CorruptRecordError:
                records[key] = None
        return records

    def session_clear(self) -> int:
        """Remove every record of this provider; return how many (or -1 if unknown)."""
        raise NotImplementedError(f"{type(self).__name__} cannot clear sessions")

    def session_keys(self) -> t.Iterator[str]:
        """Yield the store key of every record (``flask gosession rekey``).

        Records created or removed meanwhile may be missed or yielded for a
        key that no longer exists (read it, and skip ``None``).

        :raises NotImplementedError: for a store that cannot list its
            records (Memcached).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot list its sessions")

    def close(self) -> None:  # noqa: B027 (optional to override, not abstract)
        """Release connections and files. The default does nothing."""

    # -- helpers for blob-oriented providers -------------------------------

    def check_size(self, key: str, size: int) -> None:
        """Refuse a record of ``size`` bytes if it exceeds :attr:`max_record_size`.

        Called with the encoded size of every record a provider writes
        whole: metrics (:mod:`flask_gosession.metrics`) observe the size by
        wrapping this method on the instance. Use :meth:`check_limit` for
        bytes that are not a whole record.
        :raises RecordTooLarge: naming the key's label, the size and the limit.
        """
        limit = self.max_record_size
        if limit is not None and size > limit:
            raise RecordTooLarge(key, size, limit, self.max_record_setting)

    #: :meth:`check_size` for bytes that are not a whole record (the fields
    #: of a change merged on the server): the same check, which metrics do
    #: not observe as a record size.
    check_limit = check_size

    def pack_checked(self, key: str, record: Record) -> bytes:
        """:meth:`pack`, then :meth:`check_size` on the blob.

        :raises RecordTooLarge: if the blob is over :attr:`max_record_size`.
        """
        blob = self.pack(record)
        self.check_size(key, len(blob))
        return blob

    def pack(self, record: Record) -> bytes:
        """Encode a whole record as one blob."""
        return self.serializer.dumps({"d": record.data, "m": record.meta, "a": record.atime})

    def unpack(self, blob: bytes | str) -> Record:
        """Decode a blob written by :meth:`pack`.

        :raises CorruptRecordError: for anything that is not such a blob.
        """
        obj = self.serializer.loads(blob)
        if not isinstance(obj, dict):
            raise CorruptRecordError("stored record is not a mapping")
        return record_from_parts(obj.get("d"), obj.get("m"), obj.get("a"))

    @staticmethod
    def merge(record: Record, change: Change) -> Outcome:
        """Decide and apply an update against a record already read.

        Shared by blob providers inside their own lock, transaction or CAS
        loop. Without touching ``record``, returns :attr:`Outcome.MISSING`
        for a tombstone, :attr:`Outcome.FORWARDED` when it was rotated
        away, :attr:`Outcome.CONFLICT` when :attr:`Change.expect` does not
        hold; else merges and returns :attr:`Outcome.APPLIED`.
        """
        meta = record.meta
        if DEAD_FIELD in meta:
            return Outcome.MISSING
        if FORWARD_FIELD in meta:
            return Outcome.FORWARDED
        for name, value in change.expect.items():
            if meta.get(name) != value:
                return Outcome.CONFLICT
        apply_change(record, change)
        return Outcome.APPLIED
