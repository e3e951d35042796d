"""Session ids, the store keys derived from them, and log-safe labels.

A session id is 32 random bytes from :mod:`secrets` (256 bits), base64url
without padding: 43 characters. The store never sees it: records are keyed
by the SHA-256 hex digest of the id, so a dump of the store cannot be
replayed as a cookie. Logs and signals carry :func:`label`, a short prefix
of that digest.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets

#: Exactly what :func:`new_sid` produces; anything else is never looked up.
SID_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{43}\Z")

_FORWARD_PAD = b"flask-gosession forward v1:"
_TOKEN_PAD = b"flask-gosession token v1:"


def new_sid() -> str:
    """A fresh, unguessable session id (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_valid_sid(value: object) -> bool:
    """Whether ``value`` has the exact shape of an id we issue."""
    return isinstance(value, str) and SID_PATTERN.match(value) is not None


def store_key(sid: str) -> str:
    """The key a record is stored under: SHA-256 of the id, in hex."""
    return hashlib.sha256(sid.encode()).hexdigest()


def label(key: str) -> str:
    """A short, log-safe label for a record: a prefix of its store key."""
    return key[:12]


def new_token() -> str:
    """A fresh per-session request token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def _pad(sid: str) -> bytes:
    return hashlib.sha256(_FORWARD_PAD + sid.encode()).digest()


def seal_forward(old_sid: str, new_sid_value: str) -> str:
    """Encrypt ``new_sid_value`` so only a holder of ``old_sid`` can read it.

    A rotated-away record must tell in-flight requests (which present the
    old id) the new id, without putting a usable id in the store: the new
    id is XORed with a pad derived from the old id, which the store never
    holds. A one-time pad per record, since every old id is unique.
    """
    raw = base64.urlsafe_b64decode(new_sid_value + "=")
    sealed = bytes(a ^ b for a, b in zip(raw, _pad(old_sid), strict=True))
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def open_forward(old_sid: str, sealed: object) -> str | None:
    """Invert :func:`seal_forward`; ``None`` if ``sealed`` is malformed."""
    if not is_valid_sid(sealed):
        return None
    raw = base64.urlsafe_b64decode(str(sealed) + "=")
    plain = bytes(a ^ b for a, b in zip(raw, _pad(old_sid), strict=True))
    return base64.urlsafe_b64encode(plain).rstrip(b"=").decode()


def seal_token(sid: str, token: str) -> str:
    """Seal a request token so that only a holder of ``sid`` can read it.

    The store keeps the sealed form: a dump holds no working token. A fresh
    16-byte nonce per sealing keeps two tokens sealed under one id from
    sharing a pad. Format: base64url of ``nonce || token XOR pad``.
    """
    nonce = secrets.token_bytes(16)
    raw = base64.urlsafe_b64decode(token + "=")
    pad = hashlib.sha256(_TOKEN_PAD + nonce + sid.encode()).digest()
    sealed = nonce + bytes(a ^ b for a, b in zip(raw, pad, strict=True))
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def open_token(sid: str, sealed: object) -> str | None:
    """Invert :func:`seal_token`; ``None`` if ``sealed`` is malformed."""
    if not isinstance(sealed, str) or len(sealed) != 64:
        return None
    try:
        blob = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    except ValueError:
        return None
    if len(blob) != 48:
        return None
    nonce, body = blob[:16], blob[16:]
    pad = hashlib.sha256(_TOKEN_PAD + nonce + sid.encode()).digest()
    plain = bytes(a ^ b for a, b in zip(body, pad, strict=True))
    return base64.urlsafe_b64encode(plain).rstrip(b"=").decode()
