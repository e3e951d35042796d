"""Configuration: defaults, validation and the normalised settings object.

``init_app`` applies :data:`DEFAULTS` with ``setdefault``, validates every
value once, and freezes the result in :class:`Settings`, so the request path
reads plain attributes instead of parsing config.
"""
from __future__ import annotations

import difflib
import logging
import typing as t
from dataclasses import dataclass

from . import coerce
from .encryption import DEFAULTS as ENCRYPTION_DEFAULTS
from .encryption import DESCRIPTIONS as ENCRYPTION_DESCRIPTIONS
from .errors import ConfigError
from .importing import DEFAULTS as IMPORT_DEFAULTS
from .importing import DESCRIPTIONS as IMPORT_DESCRIPTIONS

if t.TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("flask_gosession")

#: The prefix of every setting this extension reads.
PREFIX = "GOSESSION_"

#: Every core ``GOSESSION_*`` key and its default. Providers add their own.
DEFAULTS: dict[str, t.Any] = {
    "GOSESSION_PROVIDER": "memory",
    "GOSESSION_COOKIE_NAME": "gosessionid",
    "GOSESSION_MAX_LIFETIME": 3600,
    "GOSESSION_ABSOLUTE_LIFETIME": 86400,
    "GOSESSION_REFRESH_INTERVAL": 60,
    "GOSESSION_GC_INTERVAL": 60,
    "GOSESSION_SERIALIZER": "json",
    "GOSESSION_ROTATE_AFTER": 900,
    "GOSESSION_ROTATE_GRACE": 30,
    "GOSESSION_REVOKE_ON_REUSE": True,
    "GOSESSION_TOKEN_CHECK": "auto",
    "GOSESSION_TOKEN_METHODS": ("POST", "PUT", "PATCH", "DELETE"),
    "GOSESSION_TOKEN_FIELD": "gosession_token",
    "GOSESSION_TOKEN_HEADER": "X-GoSession-Token",
    "GOSESSION_TOKEN_ONE_TIME": False,
    "GOSESSION_BIND_USER_AGENT": False,
    "GOSESSION_URL_REWRITE": False,
    "GOSESSION_FLASK_LOGIN": False,
    "GOSESSION_MAX_SESSIONS_PER_USER": None,
    "GOSESSION_SESSION_LIMIT_POLICY": "evict",
    "GOSESSION_METRICS": False,
}
# Encryption at rest: validated by flask_gosession.encryption.load_encryption.
DEFAULTS.update(ENCRYPTION_DEFAULTS)
# Importing earlier sessions: validated by flask_gosession.importing.load_importer.
DEFAULTS.update(IMPORT_DEFAULTS)

#: One line per key of :data:`DEFAULTS`: what it does. The documentation's
#: configuration table is built from it (with each built-in provider's
#: ``config_descriptions``), and a test checks that no key lacks one.
#: Inline ``code`` is written in backticks.
DESCRIPTIONS: dict[str, str] = {
    "GOSESSION_PROVIDER": (
        "The store: `memory`, `file`, `sql`, `redis`, `memcached`, a registered name, an entry "
        "point, a dotted path `pkg.module:Class`, or a `Provider` class or instance."),
    "GOSESSION_COOKIE_NAME": (
        "Name of the session cookie (and of the URL parameter in URL-rewrite mode)."),
    "GOSESSION_MAX_LIFETIME": "Idle timeout in seconds, sliding; enforced on every read.",
    "GOSESSION_ABSOLUTE_LIFETIME": (
        "Absolute timeout in seconds from creation; `None` disables it."),
    "GOSESSION_REFRESH_INTERVAL": (
        "For stores whose read does not refresh expiry (SQL, Redis, Memcached): a session that "
        "is only read is touched at most this often, so it expires between "
        "`MAX_LIFETIME - REFRESH_INTERVAL` and `MAX_LIFETIME` after its last use."),
    "GOSESSION_GC_INTERVAL": (
        "Seconds between background GC runs in each process; `0` disables the thread "
        "(run `flask gosession gc` from cron instead)."),
    "GOSESSION_SERIALIZER": (
        "`json` (Flask's tagged JSON) or `msgpack` (msgspec, the `[msgpack]` extra)."),
    "GOSESSION_ROTATE_AFTER": (
        "Seconds after which an id is replaced by a new one, keeping the data; "
        "`None` disables it."),
    "GOSESSION_ROTATE_GRACE": (
        "Seconds a rotated-out id keeps working for requests already in flight; must be "
        "shorter than `GOSESSION_ROTATE_AFTER`."),
    "GOSESSION_REVOKE_ON_REUSE": (
        "When a rotated-out id comes back after its grace window, also destroy the session "
        "it moved to."),
    "GOSESSION_TOKEN_CHECK": (
        "Require the session token on unsafe methods: `auto` unless Flask-WTF's `CSRFProtect` "
        "is on the app (then Flask-WTF's check is the only one), `True` always, `False` never."),
    "GOSESSION_TOKEN_METHODS": "The methods that need the token.",
    "GOSESSION_TOKEN_FIELD": "The form field carrying the token.",
    "GOSESSION_TOKEN_HEADER": "The header carrying the token.",
    "GOSESSION_TOKEN_ONE_TIME": (
        "A new token after every accepted unsafe request (a duplicate-submission guard)."),
    "GOSESSION_BIND_USER_AGENT": "Refuse a session presented with another User-Agent.",
    "GOSESSION_URL_REWRITE": (
        "Accept the id from a query parameter when no cookie came, and add it to the URLs "
        "`url_for` builds."),
    "GOSESSION_FLASK_LOGIN": (
        "Bind the session to the user on Flask-Login's login (the id rotates) and destroy it "
        "on its logout."),
    "GOSESSION_MAX_SESSIONS_PER_USER": (
        "The most sessions one user may have at once, enforced atomically when a session is "
        "bound; `None` for no limit; not available on Memcached."),
    "GOSESSION_SESSION_LIMIT_POLICY": (
        "Over that limit, `evict` signs out the user's oldest session; `refuse` refuses the "
        "new login with `SessionLimitReached` (an HTTP 409 unless the view catches it)."),
    "GOSESSION_METRICS": (
        "Export Prometheus metrics of the session layer into `prometheus_client`'s default "
        "registry (the `[prometheus]` extra; see Operations, Metrics); off, it costs nothing."),
}
DESCRIPTIONS.update(ENCRYPTION_DESCRIPTIONS)
DESCRIPTIONS.update(IMPORT_DESCRIPTIONS)

#: What a login over ``GOSESSION_MAX_SESSIONS_PER_USER`` does.
LIMIT_POLICIES = ("evict", "refuse")


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated core settings of one app."""

    cookie_name: str
    max_lifetime: int
    absolute_lifetime: int | None
    refresh_interval: int
    gc_interval: float
    serializer: str
    rotate_after: int | None
    rotate_grace: int
    revoke_on_reuse: bool
    #: ``True`` (always check our token), ``False`` (never) or ``"auto"``
    #: (check unless Flask-WTF's ``CSRFProtect`` is on the app).
    token_check: bool | str
    token_methods: frozenset[str]
    token_field: str
    token_header: str
    token_one_time: bool
    bind_user_agent: bool
    url_rewrite: bool
    flask_login: bool
    #: The most sessions one user may have, or ``None``.
    max_sessions_per_user: int | None = None
    #: ``"evict"`` (sign out the oldest) or ``"refuse"`` (refuse the login).
    session_limit_policy: str = "evict"
    #: Prometheus metrics on (:mod:`flask_gosession.metrics`).
    metrics: bool = False


def _number(config: t.Any, key: str, *, optional: bool = False,
            positive: bool = True, allow_zero: bool = False, integer: bool = True) -> t.Any:
    """Validate a number of seconds and store it back in ``config`` normalised.

    Strings (from the environment) are parsed by :func:`coerce.number`, and
    for an ``optional`` key :func:`coerce.is_none` spellings mean ``None``.
    """
    value = config[key]
    if optional and coerce.is_none(value):
        config[key] = None
        return None
    try:
        parsed = coerce.number(value, integer=integer)
    except ValueError:
        kind = "an integer number of seconds" if integer else "a number of seconds"
        extra = " or None" if optional else ""
        raise ConfigError(f"{key} must be {kind}{extra}, got {value!r}") from None
    if parsed < 0 or (parsed == 0 and not allow_zero and positive):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key} must be {bound}, got {value!r}")
    config[key] = parsed
    return parsed


def _flag(config: t.Any, key: str) -> bool:
    """Validate a flag (see :func:`coerce.flag`) and store it back as a bool."""
    value = config[key]
    try:
        config[key] = parsed = coerce.flag(value)
    except ValueError:
        raise ConfigError(
            f"{key} must be True or False (or 'true'/'false', 'yes'/'no', '1'/'0'), "
            f"got {value!r}"
        ) from None
    return parsed


def _name(config: t.Mapping[str, t.Any], key: str, pattern: str = "") -> str:
    value = config[key]
    if not isinstance(value, str) or not value.strip() or any(c in value for c in " ;,=\"\r\n\t"):
        raise ConfigError(f"{key} must be a non-empty name without spaces or separators, got {value!r}")
    return value


def _token_check(config: t.Any) -> bool | str:
    """``"auto"`` (any case, for values from the environment), or a flag."""
    value = config["GOSESSION_TOKEN_CHECK"]
    if isinstance(value, str) and value.strip().lower() == "auto":
        config["GOSESSION_TOKEN_CHECK"] = "auto"
        return "auto"
    try:
        config["GOSESSION_TOKEN_CHECK"] = parsed = coerce.flag(value)
    except ValueError:
        raise ConfigError(
            f'GOSESSION_TOKEN_CHECK must be True, False or "auto", got {value!r}'
        ) from None
    return parsed


def load_settings(app: Flask) -> Settings:
    """Apply defaults to ``app.config`` and validate the core keys.

    Validated here rather than lazily, so that a bad value is reported at
    startup, naming the key and the value.
    :raises ConfigError: for the first bad value found.
    """
    config = app.config
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)

    methods = config["GOSESSION_TOKEN_METHODS"]
    if isinstance(methods, str) or not isinstance(methods, t.Iterable):
        raise ConfigError(f"GOSESSION_TOKEN_METHODS must be a list of HTTP methods, got {methods!r}")
    methods = list(methods)
    if not all(isinstance(m, str) and m.isalpha() for m in methods):
        raise ConfigError(f"GOSESSION_TOKEN_METHODS must be a list of HTTP methods, got {methods!r}")

    serializer = config["GOSESSION_SERIALIZER"]
    if not isinstance(serializer, str):
        raise ConfigError(f"GOSESSION_SERIALIZER must be a serializer name, got {serializer!r}")

    max_lifetime = _number(config, "GOSESSION_MAX_LIFETIME")
    absolute = _number(config, "GOSESSION_ABSOLUTE_LIFETIME", optional=True)
    if absolute is not None and absolute < max_lifetime:
        # Allowed, but the idle timeout could then never be reached; warn
        # by error because it is almost certainly a unit mistake.
        raise ConfigError(
            f"GOSESSION_ABSOLUTE_LIFETIME ({absolute}) is shorter than "
            f"GOSESSION_MAX_LIFETIME ({max_lifetime}); use None to disable it"
        )
    rotate_after = _number(config, "GOSESSION_ROTATE_AFTER", optional=True)
    rotate_grace = _number(config, "GOSESSION_ROTATE_GRACE", allow_zero=True)
    if rotate_after is not None and rotate_grace >= rotate_after:
        # The old id would still work after its successor is itself rotated
        # out, so rotation would never retire it; almost always a unit slip.
        raise ConfigError(
            f"GOSESSION_ROTATE_GRACE ({rotate_grace}) must be shorter than "
            f"GOSESSION_ROTATE_AFTER ({rotate_after}); the grace window only has to "
            "cover requests already in flight when an id is rotated (a few seconds)"
        )
    return Settings(
        cookie_name=_name(config, "GOSESSION_COOKIE_NAME"),
        max_lifetime=max_lifetime,
        absolute_lifetime=absolute,
        refresh_interval=_number(config, "GOSESSION_REFRESH_INTERVAL", allow_zero=True),
        gc_interval=_number(config, "GOSESSION_GC_INTERVAL", allow_zero=True, integer=False),
        serializer=serializer,
        rotate_after=rotate_after,
        rotate_grace=rotate_grace,
        revoke_on_reuse=_flag(config, "GOSESSION_REVOKE_ON_REUSE"),
        token_check=_token_check(config),
        token_methods=frozenset(m.upper() for m in methods),
        token_field=_name(config, "GOSESSION_TOKEN_FIELD"),
        token_header=_name(config, "GOSESSION_TOKEN_HEADER"),
        token_one_time=_flag(config, "GOSESSION_TOKEN_ONE_TIME"),
        bind_user_agent=_flag(config, "GOSESSION_BIND_USER_AGENT"),
        url_rewrite=_flag(config, "GOSESSION_URL_REWRITE"),
        flask_login=_flag(config, "GOSESSION_FLASK_LOGIN"),
        max_sessions_per_user=_session_limit(config),
        session_limit_policy=_limit_policy(config),
        metrics=_flag(config, "GOSESSION_METRICS"),
    )


def _session_limit(config: t.Any) -> int | None:
    """``GOSESSION_MAX_SESSIONS_PER_USER``: a positive integer or ``None``."""
    key = "GOSESSION_MAX_SESSIONS_PER_USER"
    value = config[key]
    if coerce.is_none(value):
        config[key] = None
        return None
    try:
        parsed = coerce.number(value, integer=True)
    except ValueError:
        parsed = 0
    if isinstance(value, bool) or parsed < 1:
        raise ConfigError(f"{key} must be a positive integer (sessions per user) or None, got {value!r}")
    config[key] = parsed
    return int(parsed)


def _limit_policy(config: t.Any) -> str:
    key = "GOSESSION_SESSION_LIMIT_POLICY"
    value = config[key]
    if not isinstance(value, str) or value.strip().lower() not in LIMIT_POLICIES:
        raise ConfigError(
            f'{key} must be "evict" (sign out the oldest session) or "refuse" '
            f"(refuse the new login), got {value!r}"
        )
    config[key] = policy = value.strip().lower()
    return policy


def warn_unknown_keys(config: t.Mapping[str, t.Any], known: t.Iterable[str]) -> list[str]:
    """Log a WARNING for each ``GOSESSION_*`` key in ``config`` not in ``known``.

    A misspelt key (``GOSESSION_MAX_LIFETME``) would otherwise be ignored
    without a word and its default used instead. The warning suggests the
    closest known key. A warning rather than an error, so that a key of a
    provider that is not installed or not selected never stops an app.
    :returns: the unknown keys, sorted.
    """
    known = set(known)
    # Compared without the shared prefix, which would make every pair of
    # keys look alike.
    names = {key[len(PREFIX):]: key for key in known if key.startswith(PREFIX)}
    unknown = sorted(
        key for key in config
        if isinstance(key, str) and key.startswith(PREFIX) and key not in known
    )
    for key in unknown:
        close = difflib.get_close_matches(key[len(PREFIX):], names, n=1)
        hint = f"; did you mean {names[close[0]]}?" if close else ""
        log.warning("unknown setting %s is ignored (not a flask-gosession setting)%s", key, hint)
    return unknown
