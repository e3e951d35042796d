"""Encryption at rest keyed by the cookie: the primitives.

With ``GOSESSION_ENCRYPTION_KEYS`` set, every user value (and the few
internal fields that identify a person) is stored sealed with AES-256-GCM,
under a key that needs **both** a server key and the raw session id, which
only the client's cookie holds. A dump of the store alone, or a dump plus
the server keys, opens nothing. Built on the ``cryptography`` package
(``pip install flask-gosession[crypto]``); nothing here is a home-made
cipher. :mod:`flask_gosession.encryption` decides which fields of a record
go through these functions; this module only seals and opens.

Keys
----
* **Server keys** (``GOSESSION_ENCRYPTION_KEYS``): an ordered list of
  32-byte keys, each with a short key id. The first seals; all open.
* **Record seed**: 32 random bytes per record, stored in the meta field
  :data:`SEED_FIELD` *wrapped* (AES-256-GCM) under the first server key, as
  ``<key id>.<base64url(nonce || ciphertext)>``; the associated data is the
  format version, the key id and the store key. The key id in the envelope
  is what lets an older key open it.
* **Session key**: HKDF-Expand (RFC 5869, SHA-256) of the seed with info
  ``"flask-gosession value key v1" || raw session id``. Derived once per
  request and per id (:class:`SessionCipher` is cached on the session).
  One 32-byte block of HKDF-Expand is ``HMAC-SHA256(seed, info || 0x01)``,
  computed with the standard library's one-shot HMAC (four times cheaper
  than building cryptography's ``HKDFExpand`` per request); the tests check
  it against cryptography's ``HKDFExpand`` byte for byte.

Why a wrapped seed instead of HKDF(server key, session id) directly: the
session key still needs the server key (through the seed) and the cookie,
but retiring a server key only needs the *seed* re-wrapped, which the
server can do without the cookie: ``flask gosession rekey`` re-wraps every
record it can reach, and any write re-wraps a seed sealed under an older
key. With the server key inside the derivation, no record could change
keys without its user coming back.

Envelope of a sealed value
--------------------------
``"$gs1$" + base64(nonce(12) || ciphertext || tag(16))``; the plaintext is
the tagged value encoded with the app's serializer; the associated data is
the format version, the store key, whether it is a user key or a meta
field, and its name, so a sealed value cannot be moved to another record,
another key or another field. A fresh random nonce per sealing (2^-32
collision bound after 2^32 sealings under one session key, which no
session reaches).

What stays in clear, and why
----------------------------
Exactly these, in every store:

* the **store key** (SHA-256 of the id): records must be found by it;
* the **names of the user's keys** (``_user_id``, ``cart``, ...): the store
  merges changes key by key (two requests changing different keys both
  survive), so it must see the names; put nothing secret in a key name;
  the number of keys and the rough size of each value also show;
* ``a`` (last access), ``c`` (creation), ``i`` (issue of the current id),
  ``fx``/``fa`` (forward deadlines): timestamps that garbage collection,
  native TTLs and the per-user device list use without the cookie;
* ``p``: one bit, whether the session is permanent ("remember me");
* ``t`` (request token) and ``f`` (forward target): already sealed with the
  session id itself (:mod:`flask_gosession.ids`); a dump plus the server
  keys opens neither;
* ``b``: the *store key* of the id this one replaced, never an id;
* ``x``: the tombstone flag of a record being destroyed;
* ``n``, ``h``, ``z`` and ``d`` (per-user index, issue 13: the bound user
  id, the public device handle, the index horizon, the device list's
  browser, OS and truncated address): listing a user's sessions and
  revoking them read these from records without any cookie (``revoke_user``
  compares ``n`` with the user it revokes), so they cannot be sealed under
  a key that needs the cookie. A keyed hash of ``n`` would need the user
  index itself keyed by that hash: left for a later change;
* ``k`` (:data:`SEED_FIELD`): the wrapped seed, opened only by a server key;
* the providers' own bookkeeping: Redis's ``s`` (record size), SQL's row
  columns, file names and mtimes, memcached's item flags.

Sealed: every user value, and the meta fields in :data:`SEALED_META`:
``u`` (the User-Agent fingerprint, needed only with the cookie present).

Threat model: see "Encryption at rest" in the README.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import sys
import time
import typing as t

from .errors import ConfigError, CorruptRecordError

if t.TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: The meta field holding the record's wrapped seed.
SEED_FIELD = "k"
#: Meta fields sealed like user values: only read with the cookie present
#: (the User-Agent fingerprint). Fields read without a cookie (the per-user
#: index's ``n``, ``h``, ``z``, ``d``) must never be listed here.
SEALED_META = frozenset({"u"})
#: The prefix of every sealed value (format version 1).
SEALED_PREFIX = "$gs1$"
#: The shape of a key id: short, and free of the envelope's separators.
KEY_ID_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{1,16}\Z")

_VERSION = b"gs1"
_VALUE_INFO = b"flask-gosession value key v1"
_LEGACY_INFO = b"flask-gosession legacy seed v1"
_NONCE = 12
_PREFIX_LEN = len(SEALED_PREFIX)
#: How many opened seeds a keyring remembers (by their wrapped form).
SEED_CACHE_SIZE = 4096


if sys.version_info >= (3, 11):
    # A partial, not a def: it is called once per sealed value read.
    _strict_b64decode = functools.partial(binascii.a2b_base64, strict_mode=True)
else:  # pragma: no cover - Python 3.10
    def _strict_b64decode(text: str) -> bytes:
        return base64.b64decode(text, validate=True)

#: The one-liner that prints a fresh key entry (documented in the README).
KEYGEN = "python -c \"import secrets; print('k1:' + secrets.token_urlsafe(32))\""


class UnknownKeyId(CorruptRecordError):
    """A record's seed is wrapped under a key id that is not configured."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"sealed with unknown key id {key_id!r}")
        #: The key id named by the record (never key material).
        self.key_id = key_id


def _aead() -> type[AESGCM]:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as err:
        raise ConfigError(
            "GOSESSION_ENCRYPTION_KEYS needs the cryptography package: "
            "pip install flask-gosession[crypto]"
        ) from err
    return AESGCM


def _decode_key(text: str, where: str) -> bytes:
    padded = text.strip() + "=" * (-len(text.strip()) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        # Never echo the value: it is (meant to be) a secret.
        raise ConfigError(
            f"GOSESSION_ENCRYPTION_KEYS: {where} must be 32 random bytes in base64 "
            f"(generate one with: {KEYGEN})"
        )
    return raw


def _entries(value: t.Any) -> list[tuple[t.Any, t.Any]]:
    """The (key id, key) pairs of a config value, in order."""
    if isinstance(value, str):
        value = [part for part in re.split(r"[\s,]+", value) if part]
    if isinstance(value, t.Mapping):
        return list(value.items())
    if not isinstance(value, t.Iterable):
        raise ConfigError(
            "GOSESSION_ENCRYPTION_KEYS must be a list of 'keyid:base64key' entries, "
            f"got {type(value).__name__}"
        )
    pairs = []
    for number, entry in enumerate(value, 1):
        if isinstance(entry, str):
            kid, sep, key = entry.partition(":")
            if not sep:
                raise ConfigError(
                    f"GOSESSION_ENCRYPTION_KEYS: entry {number} must be 'keyid:base64key'"
                )
            pairs.append((kid, key))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            pairs.append((entry[0], entry[1]))
        else:
            raise ConfigError(
                f"GOSESSION_ENCRYPTION_KEYS: entry {number} must be 'keyid:base64key' "
                "or a (keyid, key) pair"
            )
    return pairs


class Keyring:
    """The server keys, in order: the first seals, every one opens.

    :param value: ``GOSESSION_ENCRYPTION_KEYS``: a list of ``"kid:base64"``
        strings or ``(kid, key)`` pairs (``key`` as 32 raw bytes or
        base64), a mapping of key id to key, or one string of such entries
        separated by commas or spaces (from the environment).
    :raises ConfigError: for an empty list, a malformed entry, a key that
        is not 32 bytes, a repeated key id or key, or a missing
        ``cryptography`` package. The message never contains key material.
    """

    def __init__(self, value: t.Any) -> None:
        aead = _aead()
        self._ciphers: dict[str, AESGCM] = {}
        self._raw: dict[str, bytes] = {}
        seen: set[bytes] = set()
        for kid, key in _entries(value):
            if not isinstance(kid, str) or KEY_ID_PATTERN.match(kid) is None:
                raise ConfigError(
                    f"GOSESSION_ENCRYPTION_KEYS: key id {kid!r} must be 1 to 16 letters, "
                    "digits, '-' or '_'"
                )
            if kid in self._raw:
                raise ConfigError(f"GOSESSION_ENCRYPTION_KEYS: key id {kid!r} is listed twice")
            raw = key if isinstance(key, bytes) and len(key) == 32 else None
            if raw is None:
                if not isinstance(key, str):
                    raise ConfigError(
                        f"GOSESSION_ENCRYPTION_KEYS: key {kid!r} must be 32 bytes or base64 text"
                    )
                raw = _decode_key(key, f"key {kid!r}")
            if raw in seen:
                raise ConfigError(
                    f"GOSESSION_ENCRYPTION_KEYS: key {kid!r} repeats an earlier key under "
                    "another id"
                )
            seen.add(raw)
            self._raw[kid] = raw
            self._ciphers[kid] = aead(raw)
        if not self._raw:
            raise ConfigError("GOSESSION_ENCRYPTION_KEYS lists no key")
        #: The id of the key that seals.
        self.current = next(iter(self._raw))
        self._aead = aead
        # Opened seeds by wrapped form and store key. A seed alone opens
        # nothing (the session key also needs the raw id), and this process
        # holds the server keys that open them anyway; remembering them
        # saves an AES-GCM operation per request of an active session.
        self._seeds: dict[tuple[str, str], tuple[bytes, str]] = {}
        #: HMAC-SHA256 pads of recently used seeds (see :meth:`cipher`).
        self._pads: dict[bytes, tuple[t.Any, t.Any]] = {}

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, the sealing one first."""
        return tuple(self._raw)

    def wrap(self, seed: bytes, key: str) -> str:
        """The seed of the record under store key ``key``, wrapped under the
        current key."""
        kid = self.current
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._ciphers[kid].encrypt(nonce, seed, _seed_ad(kid, key))
        return kid + "." + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unwrap(self, wrapped: object, key: str) -> tuple[bytes, str]:
        """Open a wrapped seed; return it and the id of the key it was under.

        :raises UnknownKeyId: for a key id not configured.
        :raises CorruptRecordError: for anything else that does not open.
        """
        if not isinstance(wrapped, str):
            raise CorruptRecordError("bad record seed")
        known = self._seeds.get((wrapped, key))
        if known is not None:
            return known
        kid, _, body = wrapped.partition(".")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise UnknownKeyId(kid[:16])
        try:
            blob = base64.urlsafe_b64decode(body)
            seed = cipher.decrypt(blob[:_NONCE], blob[_NONCE:], _seed_ad(kid, key))
        except Exception as err:  # binascii.Error, InvalidTag, ValueError
            raise CorruptRecordError("record seed failed authentication") from err
        if len(seed) != 32:
            raise CorruptRecordError("bad record seed")
        if len(self._seeds) >= SEED_CACHE_SIZE:
            self._seeds.clear()
        self._seeds[wrapped, key] = seed, kid
        return seed, kid

    def opened(self, wrapped: str, key: str) -> tuple[bytes, str] | None:
        """The seed and key id of a wrapped seed this keyring has opened
        before for store key ``key``, or ``None`` (then :meth:`unwrap`)."""
        return self._seeds.get((wrapped, key))

    def legacy_seed(self, key: str) -> bytes:
        """The seed a record written before encryption gets, the same in every
        request that meets it (so concurrent first writes agree): an HMAC of
        its store key under the *last* key, the one that stays listed while
        a new key is put first on some processes and not yet on others."""
        last = next(reversed(self._raw.values()))
        return hmac.new(last, _LEGACY_INFO + key.encode(), hashlib.sha256).digest()

    def cipher(self, seed: bytes, sid: str, key: str) -> SessionCipher:
        """The cipher of one record: its seed and its raw id.

        The value key is :func:`hkdf_expand` of the seed, computed from the
        seed's HMAC pads, which are remembered beside the opened seeds (a
        pad is a hash of the seed, and opens nothing without the raw id
        either), so a request of an active session hashes only its own id.
        """
        pads = self._pads.get(seed)
        if pads is None:
            if len(self._pads) >= SEED_CACHE_SIZE:
                self._pads.clear()
            pads = self._pads[seed] = hmac_pads(seed)
        return SessionCipher(self._aead(hkdf_expand_padded(pads, _VALUE_INFO + sid.encode())), key)


class CipherCache:
    """The value ciphers of sessions used in the last ``ttl`` seconds, by
    store key and wrapped seed, so that a request of an active session
    derives nothing: it only opens its values.

    What this trades (the README's threat model says it too): the process
    memory of a running server then holds, besides the server keys, the
    value keys of the sessions used in the last ``ttl`` seconds, so someone
    who can read that memory and the store reads those sessions without
    their cookies. A store dump, with or without the server keys, still
    reads nothing: the cache never leaves the process. ``ttl = 0``
    (``GOSESSION_ENCRYPTION_KEY_CACHE = 0``) turns it off.

    A hit needs the store key, the SHA-256 of the raw id, which a request
    only has by presenting the cookie; an entry is the seed and the cipher
    of exactly that record.
    """

    __slots__ = ("_entries", "clock", "size", "ttl")

    def __init__(self, ttl: float, size: int = SEED_CACHE_SIZE,
                 clock: t.Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._entries: dict[tuple[str, str], tuple[float, bytes, SessionCipher]] = {}

    def get(self, key: str, wrapped: str) -> tuple[bytes, SessionCipher] | None:
        """The seed and cipher of the record ``key`` sealed with ``wrapped``."""
        entry = self._entries.get((key, wrapped))
        if entry is None:
            return None
        if entry[0] <= self.clock():
            self._entries.pop((key, wrapped), None)
            return None
        return entry[1], entry[2]

    def put(self, key: str, wrapped: str, seed: bytes, cipher: SessionCipher) -> None:
        entries = self._entries
        if len(entries) >= self.size:
            entries.clear()  # simple and bounded; a miss only costs a derivation
        entries[key, wrapped] = (self.clock() + self.ttl, seed, cipher)

    def __len__(self) -> int:
        return len(self._entries)


def hkdf_expand(prk: bytes, info: bytes) -> bytes:
    """HKDF-Expand (RFC 5869 section 2.3) with SHA-256, for L = 32: the
    single block T(1) = HMAC-SHA256(PRK, info || 0x01).

    ``prk`` is a seed: 32 uniformly random bytes (or an HMAC output), a
    valid pseudorandom key as it is, so RFC 5869 section 3.3 lets HKDF skip
    the extract step.
    """
    return hmac.digest(prk, info + b"\x01", "sha256")


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def hmac_pads(prk: bytes) -> tuple[t.Any, t.Any]:
    """The inner and outer SHA-256 states of HMAC keyed with ``prk`` (at
    most one block, 64 bytes), for :func:`hkdf_expand_padded`."""
    block = prk.ljust(64, b"\x00")
    return hashlib.sha256(block.translate(_IPAD)), hashlib.sha256(block.translate(_OPAD))


def hkdf_expand_padded(pads: tuple[t.Any, t.Any], info: bytes) -> bytes:
    """:func:`hkdf_expand` from the pads :func:`hmac_pads` computed for its
    ``prk``: the same bytes (RFC 2104's HMAC, spelled out), without
    rekeying HMAC each time."""
    inner = pads[0].copy()
    inner.update(info + b"\x01")
    outer = pads[1].copy()
    outer.update(inner.digest())
    return t.cast(bytes, outer.digest())


def new_seed() -> bytes:
    """A fresh record seed."""
    return secrets.token_bytes(32)


def _seed_ad(kid: str, key: str) -> bytes:
    return _VERSION + b"|seed|" + kid.encode() + b"|" + key.encode()


def is_sealed(value: object) -> bool:
    """Whether a stored value is a sealed envelope (as opposed to a value
    written before encryption was on)."""
    return value.__class__ is str and value.startswith(SEALED_PREFIX)  # type: ignore[attr-defined,unused-ignore]


class SessionCipher:
    """Seals and opens the values of one record (one id, one store key)."""

    __slots__ = ("_aead", "_data_ad", "_meta_ad")

    def __init__(self, aead: AESGCM, key: str) -> None:
        self._aead = aead
        self._data_ad = _VERSION + b"|d|" + key.encode() + b"|"
        self._meta_ad = _VERSION + b"|m|" + key.encode() + b"|"

    def seal(self, name: str, plain: bytes, *, meta: bool = False) -> str:
        """Seal the encoded value of the user key (or meta field) ``name``."""
        nonce = os.urandom(_NONCE)
        ad = (self._meta_ad if meta else self._data_ad) + name.encode()
        blob = nonce + self._aead.encrypt(nonce, plain, ad)
        return SEALED_PREFIX + binascii.b2a_base64(blob, newline=False).decode()

    def open_data(self, data: dict[str, t.Any]) -> tuple[dict[str, bytes], list[str]]:
        """Open every sealed value of a record's ``data`` at once.

        Every value is authenticated here, before the request sees any:
        one tampered value makes the whole record corrupt.
        :returns: the opened plaintexts by name, and the names of the
            values stored in clear (not sealed).
        :raises CorruptRecordError: as :meth:`open`.
        """
        opened: dict[str, bytes] = {}
        clear: list[str] = []
        decrypt, ad, prefix, b64 = self._aead.decrypt, self._data_ad, SEALED_PREFIX, _strict_b64decode
        try:
            for name, value in data.items():
                if value.__class__ is str and value.startswith(prefix):
                    blob = b64(value[_PREFIX_LEN:])
                    opened[name] = decrypt(blob[:_NONCE], blob[_NONCE:], ad + name.encode())
                else:
                    clear.append(name)
        except Exception as err:  # binascii.Error, InvalidTag, ValueError
            raise CorruptRecordError("sealed value failed authentication") from err
        return opened, clear

    def open_values(self, data: dict[str, t.Any],
                    loads: t.Callable[[bytes], t.Any]) -> dict[str, t.Any] | None:
        """Every value of ``data`` opened and decoded with ``loads``, or
        ``None`` if one is stored in clear (:meth:`open_data` then sorts
        them). Every value is authenticated before any is returned.

        :raises CorruptRecordError: as :meth:`open`, and for a plaintext
            ``loads`` refuses.
        """
        values: dict[str, t.Any] = {}
        decrypt, ad, prefix, b64 = self._aead.decrypt, self._data_ad, SEALED_PREFIX, _strict_b64decode
        try:
            for name, value in data.items():
                if value.__class__ is not str or not value.startswith(prefix):
                    return None
                blob = b64(value[_PREFIX_LEN:])
                values[name] = loads(decrypt(blob[:_NONCE], blob[_NONCE:], ad + name.encode()))
        except CorruptRecordError:
            raise
        except Exception as err:  # binascii.Error, InvalidTag, ValueError
            raise CorruptRecordError("sealed value failed authentication") from err
        return values

    def open(self, name: str, sealed: str, *, meta: bool = False) -> bytes:
        """Open what :meth:`seal` made of ``name``.

        :raises CorruptRecordError: if it fails authentication (tampered,
            moved from another record or field, or sealed for another id).
        """
        ad = (self._meta_ad if meta else self._data_ad) + name.encode()
        try:
            blob = _strict_b64decode(sealed[_PREFIX_LEN:])
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], ad)
        except Exception as err:  # binascii.Error, InvalidTag, ValueError
            raise CorruptRecordError("sealed value failed authentication") from err
