"""The Flask extension object."""
from __future__ import annotations

import atexit
import logging
import time
import typing as t
import weakref

from .encryption import load_encryption
from .errors import (
    ConfigError,
    ProviderError,
    RecordTooLarge,
    SessionLimitReached,
    SessionTooLarge,
    StoreUnavailable,
    UserIndexUnsupported,
)
from .importing import load_importer
from .interface import GoSessionInterface, warn_too_large
from .manager import Manager
from .registry import build_provider, known_keys
from .settings import load_settings, warn_unknown_keys
from .tokens import TokenGuard, gosession_token, gosession_token_field

if t.TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("flask_gosession")

_interface = GoSessionInterface()


class GoSession:
    """Server-side sessions for Flask.

    Use ``GoSession(app)``, or ``GoSession()`` and later ``init_app(app)``
    in an application factory. The extension keeps no reference to any app:
    per-app state is the :class:`Manager` at ``app.extensions["gosession"]``.

    :param clock: time source for every app initialised by this object
        (tests inject a fake one; the default is :func:`time.time`).
    """

    def __init__(self, app: Flask | None = None, *,
                 clock: t.Callable[[], float] = time.time) -> None:
        self.clock = clock
        #: Blueprint names exempt from the token check, for every app.
        self.exempt_blueprints: set[str] = set()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Validate config, build the provider and install the interface.

        :raises ConfigError: for a bad ``GOSESSION_*`` value.
        :raises RegistryError: for an unknown or unimportable provider.
        """
        settings = load_settings(app)
        encryption = load_encryption(app)
        provider = build_provider(app)
        warn_unknown_keys(app.config, known_keys(app, provider))
        if provider.process_local and not (app.debug or app.testing):
            # The most common silent failure: under gunicorn -w 4 each worker
            # has its own sessions, and nothing else would say so.
            log.warning(
                "the %s session store keeps sessions in this process's memory: under a "
                "server with several worker processes (gunicorn -w N, uWSGI processes) "
                "each worker has its own sessions, so logins seem to fail at random; "
                "use a store shared between processes (file, sql, redis or memcached) "
                "unless the app runs in exactly one process",
                type(provider).__name__,
            )
        if settings.max_sessions_per_user is not None and not provider.user_index:
            raise ConfigError(
                "GOSESSION_MAX_SESSIONS_PER_USER needs a store that keeps an index of each "
                f"user's sessions; {UserIndexUnsupported(type(provider).__name__)}"
            )
        manager = Manager(provider, settings, clock=self.clock)
        manager.encryption = encryption
        manager.importer = load_importer(app, manager)
        app.extensions["gosession"] = manager
        app.session_interface = _interface

        manager.guard = guard = TokenGuard(manager, self.exempt_blueprints)
        if settings.token_check:
            # Also for "auto": whether to defer to Flask-WTF is decided at
            # the first unsafe request, since CSRFProtect may come later.
            app.before_request(guard.hook())
        app.add_template_global(gosession_token, "gosession_token")
        app.add_template_global(gosession_token_field, "gosession_token_field")
        app.register_error_handler(ProviderError, _store_unavailable)
        app.register_error_handler(RecordTooLarge, _session_too_large)
        app.register_error_handler(SessionLimitReached, _session_limit_reached)
        if settings.flask_login:
            from .integrations.flask_login import install

            install(app)
        if settings.url_rewrite:
            from .urlrewrite import add_sid_to_urls

            app.url_defaults(add_sid_to_urls)

        if settings.metrics:
            from .metrics import install as install_metrics

            install_metrics(app)

        from .cli import gosession_cli

        if "gosession" not in app.cli.commands:
            app.cli.add_command(gosession_cli)
        # Stop the GC thread at interpreter exit without keeping the
        # manager alive.
        ref = weakref.ref(manager)

        def stop_gc() -> None:
            alive = ref()
            if alive is not None:
                alive.gc_thread.stop(timeout=1)

        atexit.register(stop_gc)

    # -- users and their devices (see flask_gosession.users) ---------------

    @staticmethod
    def sessions_of(user_id: t.Any) -> list[t.Any]:
        """:func:`flask_gosession.sessions_of` for the current app."""
        from .users import sessions_of

        return sessions_of(user_id)

    @staticmethod
    def revoke_session(user_id: t.Any, handle: str) -> bool:
        """:func:`flask_gosession.revoke_session` for the current app."""
        from .users import revoke_session

        return revoke_session(user_id, handle)

    @staticmethod
    def revoke_user(user_id: t.Any, *, keep_current: bool = False) -> int:
        """:func:`flask_gosession.revoke_user` for the current app."""
        from .users import revoke_user

        return revoke_user(user_id, keep_current=keep_current)

    def exempt(self, view_or_blueprint: t.Any) -> t.Any:
        """Exempt a view function or a blueprint from the token check.

        Usable as a decorator on views. Returns its argument.
        """
        from flask import Blueprint

        if isinstance(view_or_blueprint, Blueprint):
            self.exempt_blueprints.add(view_or_blueprint.name)
            return view_or_blueprint
        if isinstance(view_or_blueprint, str):
            self.exempt_blueprints.add(view_or_blueprint)
            return view_or_blueprint
        from .tokens import token_exempt

        return token_exempt(view_or_blueprint)


def _store_unavailable(error: ProviderError) -> t.Any:
    """Turn a store failure met inside a view into a 503 (already logged)."""
    from flask import current_app

    return current_app.handle_http_exception(StoreUnavailable())


def _session_too_large(error: RecordTooLarge) -> t.Any:
    """Turn a session refused as too large inside a view into a 413, with
    one warning; the store is fine, so this is never an outage."""
    from flask import current_app

    warn_too_large(error)
    return current_app.handle_http_exception(SessionTooLarge())


def _session_limit_reached(error: SessionLimitReached) -> t.Any:
    """A login refused by the per-user limit and not handled by the view:
    an HTTP 409 whose text says why."""
    from werkzeug.exceptions import Conflict

    return Conflict(error.message)
