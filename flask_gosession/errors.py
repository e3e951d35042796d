"""Exception hierarchy.

Every exception the extension raises on purpose derives from
:class:`GoSessionError`, so an application can catch them all at once.
"""
from __future__ import annotations

import typing as t

from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, ServiceUnavailable

from .ids import label


class GoSessionError(Exception):
    """Base class of every flask-gosession error."""


class ConfigError(GoSessionError, ValueError):
    """A ``GOSESSION_*`` setting is missing, of the wrong type or out of range.

    Raised by :meth:`GoSession.init_app`, so a bad value stops the app at
    startup instead of at the first request.
    """


class RegistryError(GoSessionError, LookupError):
    """A provider registration is invalid, duplicated or cannot be resolved."""


class ProviderError(GoSessionError):
    """The session store failed: unreachable, timed out or answered an error.

    During a request it becomes an HTTP 503 (:class:`StoreUnavailable`).
    Providers raise it ``from`` the client library's exception, so the reason
    stays in the traceback and the log.
    """


class CorruptRecordError(GoSessionError):
    """A stored record could not be decoded.

    Never reaches the user: the manager logs a warning and starts a fresh
    session instead.
    """


class RecordTooLarge(GoSessionError):
    """A session record is larger than the store accepts; nothing was written.

    Not a :class:`ProviderError`: the store is healthy and only this
    session's data is too big, so it never counts as an outage. Raised by a
    provider's ``session_init`` or ``session_update`` *before* anything is
    written (or mapped from the server's own refusal); during a request it
    becomes an HTTP 413 (:class:`SessionTooLarge`) and one warning.

    :param key: the store key; only its :func:`~flask_gosession.ids.label`
        is kept, so the message never carries the full key.
    :param size: the size of the refused record (or value), in bytes.
    :param limit: the largest size the store accepts, in bytes.
    :param setting: the setting (or server option) that sets ``limit``,
        named in the message.
    """

    def __init__(self, key: str, size: int, limit: int, setting: str = "") -> None:
        #: The short, log-safe label of the record's store key.
        self.label = label(key)
        #: Bytes the record (or value) would have taken.
        self.size = size
        #: The most the store accepts, in bytes.
        self.limit = limit
        #: What sets ``limit``, or ``""``.
        self.setting = setting
        #: Set when the refused write came with a rotation that still took
        #: place (without this request's change): the response must hand
        #: the client the new id, or it would be left with a forward only.
        self.session_moved = False
        where = f" (set by {setting})" if setting else ""
        super().__init__(
            f"session record {self.label} is {size} bytes, over the store's "
            f"limit of {limit} bytes{where}"
        )

    def __reduce__(self) -> t.Any:
        # The label stands in for the key: label(label) is the label itself.
        return type(self), (self.label, self.size, self.limit, self.setting)


class StoreUnavailable(ServiceUnavailable):
    """The HTTP 503 that a :class:`ProviderError` becomes during a request.

    Customise the response with ``@app.errorhandler(StoreUnavailable)``.
    """

    description = (
        "The session store is temporarily unavailable. Please try again in a moment."
    )


class SessionTooLarge(RequestEntityTooLarge):
    """The HTTP 413 that a :class:`RecordTooLarge` becomes during a request.

    Nothing of the request's session changes was stored. Customise the
    response with ``@app.errorhandler(SessionTooLarge)``.
    """

    description = (
        "The session data is too large to be stored. Nothing was saved; "
        "remove something from it and try again."
    )


class TokenError(BadRequest):
    """An unsafe request carried a missing or wrong session token (HTTP 400).

    Customise the response with ``@app.errorhandler(TokenError)``.
    """

    description = "The session token is missing or invalid."


class UserIndexUnsupported(GoSessionError):
    """The session store cannot keep a per-user index of sessions, so
    :func:`~flask_gosession.sessions_of`, the revocations and
    ``GOSESSION_MAX_SESSIONS_PER_USER`` are not available with it.

    Raised by those calls (and by ``init_app`` for the limit) on Memcached,
    which can neither list keys nor keep an index it will not evict at
    will: a revocation that silently missed a session would be worse than
    none. Use the memory, file, sql or redis store for them.
    """

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"the {provider} session store cannot keep an index of each user's sessions, so "
            "listing and revoking a user's sessions and GOSESSION_MAX_SESSIONS_PER_USER are "
            "not available with it; they work with the memory, file, sql and redis stores"
        )


class SessionLimitReached(GoSessionError):
    """A login was refused: the user already has ``limit`` sessions and
    ``GOSESSION_SESSION_LIMIT_POLICY`` is ``"refuse"``.

    Raised by :func:`~flask_gosession.login_user_session` (and so by
    Flask-Login's ``login_user`` with the integration on) before anything
    changes: the session stays as it was, not logged in. Catch it in the
    login view to show :attr:`message`, or let it become an HTTP 409.
    """

    def __init__(self, limit: int) -> None:
        #: The most sessions a user may have.
        self.limit = limit
        #: A sentence the app can show the user.
        self.message = (
            f"You are already signed in on {limit} device{'s' if limit != 1 else ''}. "
            "Sign out on one of them first."
        )
        super().__init__(self.message)


class SessionUnreadable(ProviderError):
    """This process cannot open the session's record: it is sealed, and
    ``GOSESSION_ENCRYPTION_KEYS`` is not set here (a process not yet
    redeployed while encryption is being turned on, or keys removed without
    ``GOSESSION_ENCRYPTION_MIGRATE_TO_PLAIN``).

    An HTTP 503, like an unreachable store: the record and the cookie are
    kept, so the user is not logged out, and a process that has the keys
    serves the next request.
    """
