"""Encryption at rest: which fields of a record are sealed, and when.

The manager and the rotation code call one object, ``manager.encryption``:

* :class:`Plain` (encryption off, the default) changes nothing, but refuses
  a record that *is* sealed, with an error naming the setting, so turning
  encryption off without :data:`MIGRATE_KEY` never hands an app ciphertext
  as if it were data;
* :class:`Sealed` (``GOSESSION_ENCRYPTION_KEYS`` set) opens records when
  they are loaded and seals every value written, with the primitives of
  :mod:`flask_gosession.crypto` (whose docstring lists exactly which fields
  stay in clear, and why).

Migrations, in both directions, never log anyone out:

* **On** over an existing store: a record written in clear is read (unless
  ``GOSESSION_ENCRYPTION_ACCEPT_PLAIN`` is off) and sealed whole on its
  next write, and at the latest when its id is next rotated;
* a record whose seed is wrapped under an **older server key** is re-wrapped
  on its next write, or by ``flask gosession rekey``;
* **Off** (``GOSESSION_ENCRYPTION_MIGRATE_TO_PLAIN = True``, keys still
  listed): sealed records are read and written back in clear on their next
  write; nothing new is sealed.

"Whole on its next write" keeps the per-key merge guarantee: the write that
converts a record carries every value the request loaded, with a
precondition (:attr:`~flask_gosession.providers.base.Change.expect`) that
the record's seed is still the one loaded. If a concurrent request
converted it first, only this request's own keys are written, so a
concurrent change to another key is never overwritten by a stale copy.
"""
from __future__ import annotations

import logging
import typing as t

from . import coerce
from .crypto import (
    SEALED_META,
    SEED_FIELD,
    CipherCache,
    Keyring,
    SessionCipher,
    UnknownKeyId,
    is_sealed,
    new_seed,
)
from .errors import ConfigError, CorruptRecordError, SessionUnreadable
from .ids import label, store_key
from .providers.base import DEAD_FIELD, FORWARD_FIELD, Change, Outcome, Record
from .serializers import get_serializer, tag

if t.TYPE_CHECKING:
    from flask import Flask

    from .serializers import Serializer
    from .session import ServerSession
    from .store import Store

log = logging.getLogger("flask_gosession")

#: The setting that turns encryption on.
KEYS_KEY = "GOSESSION_ENCRYPTION_KEYS"
#: Read records written before encryption was on (the migration default).
ACCEPT_PLAIN_KEY = "GOSESSION_ENCRYPTION_ACCEPT_PLAIN"
#: Turn encryption off: read sealed records, write everything in clear.
MIGRATE_KEY = "GOSESSION_ENCRYPTION_MIGRATE_TO_PLAIN"
#: Seconds a session's value cipher stays in the process (see CipherCache).
CACHE_KEY = "GOSESSION_ENCRYPTION_KEY_CACHE"

#: The encryption settings and their defaults (part of the core defaults).
DEFAULTS: dict[str, t.Any] = {
    KEYS_KEY: None,
    ACCEPT_PLAIN_KEY: True,
    MIGRATE_KEY: False,
    CACHE_KEY: 60,
}
#: One line per encryption setting: what it does (see
#: :data:`flask_gosession.settings.DESCRIPTIONS`).
DESCRIPTIONS: dict[str, str] = {
    KEYS_KEY: (
        "Turns encryption at rest on: an ordered list of `keyid:base64key` entries (or "
        "`(keyid, key)` pairs, or one comma-separated string); the first seals, all open "
        "(the `[crypto]` extra)."),
    ACCEPT_PLAIN_KEY: (
        "With encryption on, read records written before it was on (they are sealed on their "
        "next write); `False` refuses them as corrupt once every record is sealed."),
    MIGRATE_KEY: (
        "Turn encryption off without logging anyone out: with the keys still listed, sealed "
        "records are read and written back in clear; nothing new is sealed."),
    CACHE_KEY: (
        "Seconds a session's value key stays in the server process after a request used it, "
        "so an active session derives it once, not per request; `0` keeps none."),
}


class Vault:
    """What one session's request knows about its record's encryption,
    cached on the session (``session.vault``) for the request."""

    __slots__ = ("ciphers", "loose", "loose_meta", "rewrap", "seed", "stored")

    def __init__(self, seed: bytes | None, stored: str | None = None) -> None:
        #: The record seed (``None`` for a record kept in clear).
        self.seed = seed
        #: The wrapped seed as stored (``None``: the record stores none).
        self.stored = stored
        #: The stored seed must be rewritten (absent, under an older key,
        #: or present while migrating to plain).
        self.rewrap = False
        #: User keys stored in the other form than this app writes (clear
        #: ones while sealing, sealed ones while migrating to plain).
        self.loose: set[str] = set()
        #: Sealed meta fields stored in the other form.
        self.loose_meta: set[str] = set()
        #: Ciphers by session id, each derived at most once per request.
        self.ciphers: dict[str, SessionCipher] = {}

    @property
    def converts(self) -> bool:
        """Whether the next write of the record must convert it whole."""
        return self.rewrap or bool(self.loose) or bool(self.loose_meta)


class _Plaintext:
    """What is sealed for one tagged value: one type byte, then the value.

    Strings and integers, nearly every session value, skip the serializer
    (``s`` + UTF-8, ``i`` + decimal digits); anything else is ``j`` + the
    app serializer's encoding of the tagged value.
    """

    def __init__(self, serializer: Serializer) -> None:
        self._dumps = serializer.dumps
        self._loads = serializer.loads

    def dumps(self, value: t.Any) -> bytes:
        kind = value.__class__
        if kind is str:
            return b"s" + t.cast(str, value).encode()
        if kind is int:
            return b"i%d" % value
        return b"j" + self._dumps(value)

    def loads(self, plain: bytes) -> t.Any:
        kind = plain[:1]
        try:
            if kind == b"s":
                return plain[1:].decode()
            if kind == b"i":
                return int(plain[1:])
        except ValueError as err:  # UnicodeDecodeError too
            raise CorruptRecordError("bad sealed value") from err
        if kind == b"j":
            return self._loads(plain[1:])
        raise CorruptRecordError("bad sealed value")


class Plain:
    """Encryption off: records pass through unchanged."""

    #: Whether records are sealed on write.
    seals = False

    def open(self, session: ServerSession, sid: str, key: str, record: Record) -> Record:
        """``record`` as loaded for ``sid``, in clear.

        :raises SessionUnreadable: for a sealed record (this process lacks
            the keys: a rolling deploy turning encryption on, or keys
            removed without :data:`MIGRATE_KEY`); the record is kept.
        """
        if SEED_FIELD in record.meta:
            log.error(
                "session record %s is encrypted, but %s is not set in this process: "
                "answered 503 and kept the record (set the keys; to turn encryption off, "
                "keep them with %s = True)",
                label(key), KEYS_KEY, MIGRATE_KEY,
            )
            raise SessionUnreadable("encrypted record, and this process has no keys")
        return record

    def seal_new(self, session: ServerSession, sid: str, key: str, record: Record) -> Record:
        """The new record of ``sid`` as it is stored."""
        return record

    def seal_change(self, session: ServerSession, sid: str, change: Change) -> Change:
        """``change`` (built for this one write) as written to the record of
        ``sid`` (the session's own id, or the one it moved to)."""
        return change

    def update(self, store: Store, session: ServerSession, change: Change) -> Outcome:
        """Write ``change`` (already sealed) to the session's own record,
        converting the record whole if its stored form is out of date."""
        return store.update(t.cast(str, session.key), change)

    def move(self, record: Record, old_sid: str, old_key: str, new_sid: str,
             new_key: str) -> Record:
        """``record`` (stored under ``old_sid``) re-sealed for ``new_sid``."""
        return record

    def session_meta(self, session: ServerSession, meta: dict[str, t.Any]) -> dict[str, t.Any]:
        """The meta the session keeps after moving to a record stored with
        ``meta``: the sealed fields in clear, as the session already has them."""
        return meta

    def rekey(self, record: Record, key: str) -> Change | str:
        """What ``flask gosession rekey`` does to the record under ``key``:
        the change that re-wraps its seed, or why there is none."""
        return "plain"


class Sealed(Plain):
    """Encryption on (or being turned off, with ``write_plain``).

    :param keyring: the server keys.
    :param serializer: encodes a tagged value into the bytes sealed.
    :param accept_plain: read values stored in clear (records written
        before encryption was turned on).
    :param write_plain: migrating to plain: open sealed records, write
        everything in clear.
    """

    def __init__(self, keyring: Keyring, serializer: Serializer, *,
                 accept_plain: bool = True, write_plain: bool = False,
                 cache_ttl: float = 0) -> None:
        self.keyring = keyring
        #: Value ciphers of recently used sessions (``None``: off).
        self.cache = CipherCache(cache_ttl) if cache_ttl > 0 else None
        self.seals = not write_plain
        self._dumps = _Plaintext(serializer).dumps
        self._loads = _Plaintext(serializer).loads
        self._accept_plain = accept_plain or write_plain

    # -- keys ----------------------------------------------------------------

    def _unwrap(self, wrapped: object, key: str) -> tuple[bytes, str]:
        try:
            return self.keyring.unwrap(wrapped, key)
        except UnknownKeyId as err:
            log.warning(
                "session record %s is sealed with key id %r, which %s does not list "
                "(keep a retired key listed until no record uses it)",
                label(key), err.key_id, KEYS_KEY,
            )
            raise

    def _seed_of(self, record: Record, key: str) -> tuple[bytes, str | None]:
        """The seed of a stored record, and the id of the key it is under
        (``None`` for a record stored in clear, which gets its legacy seed)."""
        wrapped = record.meta.get(SEED_FIELD)
        if wrapped is None:
            return self.keyring.legacy_seed(key), None
        return self._unwrap(wrapped, key)

    def _cipher(self, session: ServerSession, sid: str) -> SessionCipher:
        vault = t.cast("Vault | None", session.vault)
        if vault is None or vault.seed is None:
            raise CorruptRecordError("session has no encryption seed")
        cipher = vault.ciphers.get(sid)
        if cipher is None:
            cipher = vault.ciphers[sid] = self.keyring.cipher(vault.seed, sid, store_key(sid))
        return cipher

    # -- loading ------------------------------------------------------------

    def open(self, session: ServerSession, sid: str, key: str, record: Record) -> Record:
        fast = self._open_current(session, sid, key, record)
        if fast is not None:
            return fast
        seed, kid = self._seed_of(record, key)
        if kid is None and not self._accept_plain:
            raise CorruptRecordError(f"record is not sealed, and {ACCEPT_PLAIN_KEY} is off")
        vault = Vault(seed, t.cast("str | None", record.meta.get(SEED_FIELD)))
        session.vault = vault
        cipher = vault.ciphers[sid] = self.keyring.cipher(seed, sid, key)
        if self.seals:
            vault.rewrap = kid != self.keyring.current
        else:
            vault.rewrap = kid is not None
        loads, seals = self._loads, self.seals
        opened, clear = cipher.open_data(record.data)
        if clear:
            if not self._accept_plain:
                raise CorruptRecordError("value stored in clear in a sealed record")
            if seals:
                vault.loose.update(clear)
        if opened and not seals:
            vault.loose.update(opened)
        data = dict(record.data) if clear else {}
        for name, plain in opened.items():
            data[name] = loads(plain)
        meta = record.meta
        if not SEALED_META.isdisjoint(meta):
            meta = dict(meta)
            for name in SEALED_META.intersection(meta):
                value = meta[name]
                if is_sealed(value):
                    meta[name] = loads(cipher.open(name, value, meta=True))
                    if not seals:
                        vault.loose_meta.add(name)
                elif seals:
                    if not self._accept_plain:
                        raise CorruptRecordError(f"meta field {name!r} stored in clear in a sealed record")
                    vault.loose_meta.add(name)
        return Record(data, meta, record.atime)

    def _open_current(self, session: ServerSession, sid: str, key: str,
                      record: Record) -> Record | None:
        """:meth:`open` for the common case, in fewer steps: a record whose
        seed this process has opened before, under the current key, with
        every value sealed and no sealed meta field. ``None`` for anything
        else, which :meth:`open` then handles in full."""
        meta = record.meta
        wrapped = meta.get(SEED_FIELD)
        if wrapped is None or not self.seals or not SEALED_META.isdisjoint(meta):
            return None
        keyring, cache = self.keyring, self.cache
        hit = cache.get(key, wrapped) if cache is not None else None
        if hit is not None:
            seed, cipher = hit
        else:
            known = keyring.opened(wrapped, key)
            if known is None or known[1] != keyring.current:
                return None
            seed = known[0]
            cipher = keyring.cipher(seed, sid, key)
        data = cipher.open_values(record.data, self._loads)
        if data is None:
            return None
        if hit is None and cache is not None:
            cache.put(key, wrapped, seed, cipher)
        vault = Vault(seed, wrapped)
        vault.ciphers[sid] = cipher
        session.vault = vault
        return Record(data, meta, record.atime)

    # -- writing ----------------------------------------------------------

    def _seal_values(self, cipher: SessionCipher, values: dict[str, t.Any]) -> dict[str, t.Any]:
        dumps = self._dumps
        return {name: cipher.seal(name, dumps(value)) for name, value in values.items()}

    def _seal_meta(self, cipher: SessionCipher, meta: dict[str, t.Any]) -> dict[str, t.Any]:
        if SEALED_META.isdisjoint(meta):
            return meta
        sealed = dict(meta)
        for name in SEALED_META.intersection(meta):
            if meta[name] is not None:
                sealed[name] = cipher.seal(name, self._dumps(meta[name]), meta=True)
        return sealed

    def seal_new(self, session: ServerSession, sid: str, key: str, record: Record) -> Record:
        if not self.seals:
            session.vault = Vault(None)
            return record
        seed = new_seed()
        wrapped = self.keyring.wrap(seed, key)
        session.vault = Vault(seed, wrapped)
        cipher = self._cipher(session, sid)
        meta = self._seal_meta(cipher, record.meta)
        meta = {**meta, SEED_FIELD: wrapped}
        return Record(self._seal_values(cipher, record.data), meta, record.atime)

    def seal_change(self, session: ServerSession, sid: str, change: Change) -> Change:
        if not self.seals or not (change.set or not SEALED_META.isdisjoint(change.meta)):
            return change
        cipher = self._cipher(session, sid)
        # Sealed in place: the change was built for this write alone.
        change.set = self._seal_values(cipher, change.set)
        change.meta = self._seal_meta(cipher, change.meta)
        return change

    def update(self, store: Store, session: ServerSession, change: Change) -> Outcome:
        vault = t.cast("Vault | None", session.vault)
        key = t.cast(str, session.key)
        if vault is None or not vault.converts or change.expect:
            return store.update(key, change)
        converted = self._converted(session, key, vault, change)
        outcome = store.update(key, converted)
        if outcome is Outcome.APPLIED:
            # The record is whole in this app's form now.
            vault.stored = converted.meta[SEED_FIELD]
            vault.rewrap = False
            vault.loose.clear()
            vault.loose_meta.clear()
        elif outcome is Outcome.CONFLICT:
            # Converted by a concurrent request first: write only this
            # request's own keys, never stale copies of the others, sealed
            # for the seed that request stored.
            return store.update(key, self._for_stored_seed(store, session, key, change))
        return outcome

    def _for_stored_seed(self, store: Store, session: ServerSession, key: str,
                         change: Change) -> Change:
        """``change`` (sealed with the seed this request loaded) re-sealed
        for the seed the record holds now, which becomes the session's."""
        vault = t.cast(Vault, session.vault)
        record = store.read(key, change.atime)
        if record is None or not self.seals:
            return change
        seed, _ = self._seed_of(record, key)
        if seed == vault.seed:
            return change
        old = self._cipher(session, session.sid)
        session.vault = Vault(seed, t.cast("str | None", record.meta.get(SEED_FIELD)))
        new = self._cipher(session, session.sid)
        return Change(
            set={name: new.seal(name, old.open(name, value)) for name, value in change.set.items()},
            deleted=change.deleted,
            meta={name: new.seal(name, old.open(name, value, meta=True), meta=True)
                  if name in SEALED_META and is_sealed(value) else value
                  for name, value in change.meta.items()},
            atime=change.atime)

    def _converted(self, session: ServerSession, key: str, vault: Vault,
                   change: Change) -> Change:
        """``change`` plus the rewrite of every value loaded in the other
        form, conditional on the seed the request loaded."""
        values = session.snapshot()
        extra = {name: tag(values[name]) for name in vault.loose
                 if name in values and name not in change.set and name not in change.deleted}
        extra_meta = {name: session.meta[name] for name in vault.loose_meta
                      if name in session.meta and name not in change.meta}
        if self.seals:
            cipher = self._cipher(session, session.sid)
            extra = self._seal_values(cipher, extra)
            extra_meta = self._seal_meta(cipher, extra_meta)
            extra_meta[SEED_FIELD] = self.keyring.wrap(t.cast(bytes, vault.seed), key)
        else:
            extra_meta[SEED_FIELD] = None
        return Change(set={**change.set, **extra}, deleted=change.deleted,
                      meta={**change.meta, **extra_meta}, atime=change.atime,
                      expect={SEED_FIELD: vault.stored})

    # -- rotation ------------------------------------------------------------

    def move(self, record: Record, old_sid: str, old_key: str, new_sid: str,
             new_key: str) -> Record:
        """See :meth:`Plain.move`. The record is read afresh by the rotation,
        after the request's load checked it, so it is checked again here:
        with :data:`ACCEPT_PLAIN_KEY` off, a value or sealed meta field in
        clear is refused, never sealed under the new id (which would turn a
        value planted in clear into a sealed one).

        :raises CorruptRecordError: for a value that fails authentication,
            or one in clear that is not accepted.
        """
        if not self._accept_plain and (
            SEED_FIELD not in record.meta
            or not all(is_sealed(value) for value in record.data.values())
            or not all(is_sealed(record.meta[name]) for name in SEALED_META.intersection(record.meta))
        ):
            raise CorruptRecordError(f"value stored in clear, and {ACCEPT_PLAIN_KEY} is off")
        seed, _ = self._seed_of(record, old_key)
        old = self.keyring.cipher(seed, old_sid, old_key)
        loads, dumps = self._loads, self._dumps
        clear = {name: loads(old.open(name, value)) if is_sealed(value) else value
                 for name, value in record.data.items()}
        meta = dict(record.meta)
        for name in SEALED_META.intersection(meta):
            if is_sealed(meta[name]):
                meta[name] = loads(old.open(name, meta[name], meta=True))
        if not self.seals:
            meta.pop(SEED_FIELD, None)
            return Record(clear, meta, record.atime)
        new = self.keyring.cipher(seed, new_sid, new_key)
        meta = self._seal_meta(new, meta)
        meta[SEED_FIELD] = self.keyring.wrap(seed, new_key)
        return Record({name: new.seal(name, dumps(value)) for name, value in clear.items()},
                      meta, record.atime)

    def session_meta(self, session: ServerSession, meta: dict[str, t.Any]) -> dict[str, t.Any]:
        clear = {name: value for name, value in meta.items() if name not in SEALED_META}
        clear.update((name, session.meta[name]) for name in SEALED_META if name in session.meta)
        return clear

    # -- the rekey command -----------------------------------------------------

    def rekey(self, record: Record, key: str) -> Change | str:
        meta = record.meta
        if DEAD_FIELD in meta:
            return "dead"
        if FORWARD_FIELD in meta:
            return "forwarding"
        wrapped = meta.get(SEED_FIELD)
        if wrapped is None:
            return "plain"
        if not self.seals:
            return "sealed"
        seed, kid = self._unwrap(wrapped, key)
        if kid == self.keyring.current:
            return "current"
        return Change(meta={SEED_FIELD: self.keyring.wrap(seed, key)},
                      expect={SEED_FIELD: wrapped}, atime=record.atime)


def load_encryption(app: Flask) -> Plain:
    """Validate the encryption settings of ``app`` and build its policy.

    Validated at startup, so a malformed key, a repeated key id or a missing
    ``cryptography`` package stops the app with a message naming the
    setting (never the key material).
    :raises ConfigError: for a bad value.
    """
    config = app.config
    for name, value in DEFAULTS.items():
        config.setdefault(name, value)
    flags = {}
    for name in (ACCEPT_PLAIN_KEY, MIGRATE_KEY):
        try:
            config[name] = flags[name] = coerce.flag(config[name])
        except ValueError:
            raise ConfigError(f"{name} must be True or False, got {config[name]!r}") from None
    keys = config[KEYS_KEY]
    if keys is None or (isinstance(keys, str) and not keys.strip()) or keys == []:
        if flags[MIGRATE_KEY]:
            raise ConfigError(
                f"{MIGRATE_KEY} needs {KEYS_KEY}: sealed records are opened with the keys"
            )
        return Plain()
    try:
        ttl = coerce.number(config[CACHE_KEY], integer=False)
    except ValueError:
        ttl = -1
    if isinstance(config[CACHE_KEY], bool) or ttl < 0:
        raise ConfigError(f"{CACHE_KEY} must be a number of seconds >= 0, got {config[CACHE_KEY]!r}")
    config[CACHE_KEY] = ttl
    serializer = config["GOSESSION_SERIALIZER"]
    return Sealed(Keyring(keys), get_serializer(serializer),
                  accept_plain=flags[ACCEPT_PLAIN_KEY], write_plain=flags[MIGRATE_KEY],
                  cache_ttl=ttl)
