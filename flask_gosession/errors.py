"""Exception hierarchy.

Every exception the extension raises on purpose derives from
:class:`GoSessionError`, so an application can catch them all at once.
"""
from __future__ import annotations

from werkzeug.exceptions import BadRequest, ServiceUnavailable


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


class StoreUnavailable(ServiceUnavailable):
    """The HTTP 503 that a :class:`ProviderError` becomes during a request.

    Customise the response with ``@app.errorhandler(StoreUnavailable)``.
    """

    description = (
        "The session store is temporarily unavailable. Please try again in a moment."
    )


class TokenError(BadRequest):
    """An unsafe request carried a missing or wrong session token (HTTP 400).

    Customise the response with ``@app.errorhandler(TokenError)``.
    """

    description = "The session token is missing or invalid."
