"""Flask-Login integration: the session id follows the login state.

Enable it with ``GOSESSION_FLASK_LOGIN = True`` (before ``GoSession(app)``)
or call :func:`install` after ``GoSession(app)``. Then:

* ``login_user()`` and a login from the remember-me cookie bind the
  session to the user (:func:`~flask_gosession.login_user_session`): the
  id rotates, a privilege change, so an id planted before the login never
  gains the user's privileges, and the session joins the user's index
  (:func:`~flask_gosession.sessions_of`, the revocations, the per-user
  limit, whose ``SessionLimitReached`` then comes out of ``login_user``);
* ``confirm_login()`` (a fresh re-authentication) rotates the id, as
  :func:`~flask_gosession.regenerate` does;
* ``logout_user()`` destroys the session, as
  :func:`~flask_gosession.destroy` does, which also takes it out of the
  user's index, and Flask-Login still deletes the remember-me cookie.

So the app needs neither ``@rotate_sid`` on its login view nor ``destroy()``
in its logout view (both remain harmless if present). ``login_user`` usually
runs in the POST view, before the redirect: the rotation is applied when
that response is saved, and the redirect's ``Set-Cookie`` carries the new id.
"""
from __future__ import annotations

import typing as t

from flask import session

from ..errors import ConfigError, SessionLimitReached
from ..lifecycle import destroy, regenerate
from ..users import login_user_session

if t.TYPE_CHECKING:
    from flask import Flask


#: The keys Flask-Login writes into the session at a login.
LOGIN_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds")


def _login(sender: t.Any, user: t.Any = None, **extra: t.Any) -> None:
    """A login (``login_user`` or the remember-me cookie): bind the session
    to the user, which rotates its id.

    Flask-Login has already written the login into the session when it
    sends the signal. If the per-user limit refuses the login, that is
    undone and the request's session changes are discarded, so the client
    stays exactly as it was (no login, no remember-me cookie), and
    :class:`~flask_gosession.errors.SessionLimitReached` comes out of
    ``login_user()``.
    """
    user_id = user.get_id() if user is not None else None
    if user_id is None:
        regenerate()
        return
    try:
        login_user_session(user_id)
    except SessionLimitReached:
        current = session._get_current_object()  # type: ignore[attr-defined]
        for key in LOGIN_KEYS:
            current.pop(key, None)
        current.discard_changes()
        raise


def _rotate(sender: t.Any, **extra: t.Any) -> None:
    regenerate()


def _destroy(sender: t.Any, **extra: t.Any) -> None:
    destroy()


def install(app: Flask) -> None:
    """Connect the session lifecycle to Flask-Login's signals for ``app``.

    Idempotent; receivers are connected for ``app`` as sender only, so other
    apps in the process are unaffected.

    :raises ConfigError: if ``GoSession`` is not initialised on ``app`` or
        Flask-Login is not installed.
    """
    if "gosession" not in app.extensions:
        raise ConfigError("Call GoSession(app) before installing the Flask-Login integration")
    try:
        from flask_login import signals
    except ImportError as err:
        raise ConfigError(
            "GOSESSION_FLASK_LOGIN needs Flask-Login: pip install flask-login"
        ) from err
    signals.user_logged_in.connect(_login, app)
    signals.user_loaded_from_cookie.connect(_login, app)
    signals.user_login_confirmed.connect(_rotate, app)
    signals.user_logged_out.connect(_destroy, app)
