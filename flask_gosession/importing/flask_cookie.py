"""Reading Flask's own signed-cookie session, as Flask itself would.

The cookie is checked with the signing serializer of Flask's default
:class:`~flask.sessions.SecureCookieSessionInterface` for the app, so
``SECRET_KEY``, ``SECRET_KEY_FALLBACKS``, the salt and the digest are
exactly Flask's, and so is the decoding (its tagged JSON: ``Markup``,
tuples, bytes, ``datetime``, ``UUID``). Nothing is ever unpickled: Flask's
cookie is JSON.
"""
from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass

from flask.sessions import SecureCookieSessionInterface

if t.TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("flask_gosession")

_flask_cookies = SecureCookieSessionInterface()

#: Longer than any cookie a browser sends (4096 bytes); refused unread.
MAX_COOKIE = 8192


@dataclass(frozen=True)
class FlaskCookie:
    """A valid Flask session cookie."""

    #: The session's values, typed as Flask decoded them.
    data: dict[str, t.Any]
    #: When Flask last signed it (its last save), as a Unix time.
    signed_at: float


def read(app: Flask, value: str) -> FlaskCookie | None:
    """The Flask session in cookie ``value``, or ``None`` when it is not one
    that Flask would accept: bad or missing signature, signed with a key the
    app no longer lists, older than ``PERMANENT_SESSION_LIFETIME`` (Flask's
    own ``max_age``), or not a dict. Never raises for a hostile value.
    """
    if not value or len(value) > MAX_COOKIE:
        return None
    serializer = _flask_cookies.get_signing_serializer(app)
    if serializer is None:  # no SECRET_KEY: init_app refuses that already
        return None
    max_age = int(app.permanent_session_lifetime.total_seconds())
    try:
        data, signed = serializer.loads(value, max_age=max_age, return_timestamp=True)
    except Exception as err:  # BadSignature, SignatureExpired, BadPayload, anything hostile
        log.debug("old Flask session cookie ignored: %s", type(err).__name__)
        return None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        return None
    return FlaskCookie(dict(data), signed.timestamp())
