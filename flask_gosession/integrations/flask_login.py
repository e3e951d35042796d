"""Flask-Login integration: the session id follows the login state.

Enable it with ``GOSESSION_FLASK_LOGIN = True`` (before ``GoSession(app)``)
or call :func:`install` after ``GoSession(app)``. Then:

* ``login_user()``, a login from the remember-me cookie and
  ``confirm_login()`` (a fresh re-authentication) rotate the session id,
  as :func:`~flask_gosession.regenerate` does: a privilege change, so an id
  planted before the login never gains the user's privileges;
* ``logout_user()`` destroys the session, as
  :func:`~flask_gosession.destroy` does, and Flask-Login still deletes the
  remember-me cookie.

So the app needs neither ``@rotate_sid`` on its login view nor ``destroy()``
in its logout view (both remain harmless if present). ``login_user`` usually
runs in the POST view, before the redirect: the rotation is applied when
that response is saved, and the redirect's ``Set-Cookie`` carries the new id.
"""
from __future__ import annotations

import typing as t

from ..errors import ConfigError
from ..lifecycle import destroy, regenerate

if t.TYPE_CHECKING:
    from flask import Flask


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
    signals.user_logged_in.connect(_rotate, app)
    signals.user_loaded_from_cookie.connect(_rotate, app)
    signals.user_login_confirmed.connect(_rotate, app)
    signals.user_logged_out.connect(_destroy, app)
