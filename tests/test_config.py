"""Config validation at init_app."""
from __future__ import annotations

import pytest
from flask import Flask

from flask_gosession import GoSession
from flask_gosession.errors import ConfigError
from flask_gosession.providers.memory import MemoryProvider
from flask_gosession.registry import BUILTINS, resolve
from flask_gosession.settings import DEFAULTS


@pytest.mark.parametrize(
    "key, value",
    [
        ("GOSESSION_MAX_LIFETIME", -1),
        ("GOSESSION_MAX_LIFETIME", 0),
        ("GOSESSION_MAX_LIFETIME", "12abc"),
        ("GOSESSION_MAX_LIFETIME", "1.5"),
        ("GOSESSION_MAX_LIFETIME", "1_000"),
        ("GOSESSION_MAX_LIFETIME", "none"),
        ("GOSESSION_MAX_LIFETIME", True),
        ("GOSESSION_MAX_LIFETIME", 1.5),
        ("GOSESSION_ABSOLUTE_LIFETIME", -5),
        ("GOSESSION_ABSOLUTE_LIFETIME", 10),
        ("GOSESSION_GC_INTERVAL", -1),
        ("GOSESSION_GC_INTERVAL", "60s"),
        ("GOSESSION_GC_INTERVAL", "nan"),
        ("GOSESSION_GC_INTERVAL", float("nan")),
        ("GOSESSION_GC_INTERVAL", "-1"),
        ("GOSESSION_ABSOLUTE_LIFETIME", "forever"),
        ("GOSESSION_REFRESH_INTERVAL", None),
        ("GOSESSION_ROTATE_AFTER", 0),
        ("GOSESSION_ROTATE_GRACE", -1),
        ("GOSESSION_COOKIE_NAME", ""),
        ("GOSESSION_COOKIE_NAME", "bad name"),
        ("GOSESSION_COOKIE_NAME", 5),
        ("GOSESSION_TOKEN_CHECK", "maybe"),
        ("GOSESSION_TOKEN_CHECK", ""),
        ("GOSESSION_TOKEN_CHECK", None),
        ("GOSESSION_TOKEN_CHECK", 2),
        ("GOSESSION_FLASK_LOGIN", "maybe"),
        ("GOSESSION_TOKEN_METHODS", "POST"),
        ("GOSESSION_TOKEN_METHODS", ["POST", 1]),
        ("GOSESSION_TOKEN_FIELD", ""),
        ("GOSESSION_SERIALIZER", "pickle"),
        ("GOSESSION_SERIALIZER", None),
        ("GOSESSION_BIND_USER_AGENT", 1.0),
        ("GOSESSION_URL_REWRITE", "enabled"),
        ("GOSESSION_MAX_SESSIONS_PER_USER", 0),
        ("GOSESSION_MAX_SESSIONS_PER_USER", -3),
        ("GOSESSION_MAX_SESSIONS_PER_USER", "three"),
        ("GOSESSION_MAX_SESSIONS_PER_USER", True),
        ("GOSESSION_MAX_SESSIONS_PER_USER", 2.5),
        ("GOSESSION_SESSION_LIMIT_POLICY", "oldest"),
        ("GOSESSION_SESSION_LIMIT_POLICY", None),
    ],
)
def test_bad_value_names_key_and_value(key, value):
    app = Flask(__name__)
    app.config[key] = value
    with pytest.raises(ConfigError) as info:
        GoSession(app)
    assert key in str(info.value) or "GOSESSION_SERIALIZER" in str(info.value)
    assert repr(value) in str(info.value)


def test_defaults_are_applied_once_with_setdefault():
    app = Flask(__name__)
    app.config["GOSESSION_MAX_LIFETIME"] = 120
    app.config["GOSESSION_ABSOLUTE_LIFETIME"] = None
    GoSession(app)
    for key, value in DEFAULTS.items():
        assert key in app.config
    assert app.config["GOSESSION_MAX_LIFETIME"] == 120
    settings = app.extensions["gosession"].settings
    assert settings.max_lifetime == 120 and settings.absolute_lifetime is None
    assert settings.token_methods == frozenset({"POST", "PUT", "PATCH", "DELETE"})


def test_lowercase_methods_are_normalised():
    app = Flask(__name__)
    app.config["GOSESSION_TOKEN_METHODS"] = ["post", "delete"]
    GoSession(app)
    assert app.extensions["gosession"].settings.token_methods == {"POST", "DELETE"}


def test_app_factory_pattern_and_two_apps():
    ext = GoSession()
    first, second = Flask("one"), Flask("two")
    second.config["GOSESSION_COOKIE_NAME"] = "other"
    ext.init_app(first)
    ext.init_app(second)
    assert first.extensions["gosession"] is not second.extensions["gosession"]
    assert second.extensions["gosession"].settings.cookie_name == "other"
    assert not hasattr(ext, "app")


# -- values from the environment ----------------------------------------------------------------


@pytest.mark.parametrize(
    "key, raw, expected",
    [
        ("GOSESSION_MAX_LIFETIME", "3600", 3600),
        ("GOSESSION_MAX_LIFETIME", " 3600 ", 3600),
        ("GOSESSION_MAX_LIFETIME", "+7200", 7200),
        ("GOSESSION_ABSOLUTE_LIFETIME", "none", None),
        ("GOSESSION_ABSOLUTE_LIFETIME", "None", None),
        ("GOSESSION_ABSOLUTE_LIFETIME", "", None),
        ("GOSESSION_ABSOLUTE_LIFETIME", "86400", 86400),
        ("GOSESSION_ROTATE_AFTER", "null", None),
        ("GOSESSION_ROTATE_GRACE", "0", 0),
        ("GOSESSION_REFRESH_INTERVAL", "0", 0),
        ("GOSESSION_GC_INTERVAL", "0.5", 0.5),
        ("GOSESSION_GC_INTERVAL", "30", 30),
        ("GOSESSION_TOKEN_CHECK", "false", False),
        ("GOSESSION_TOKEN_CHECK", "FALSE", False),
        ("GOSESSION_TOKEN_CHECK", "no", False),
        ("GOSESSION_TOKEN_CHECK", "0", False),
        ("GOSESSION_TOKEN_CHECK", 0, False),
        ("GOSESSION_TOKEN_ONE_TIME", "true", True),
        ("GOSESSION_TOKEN_ONE_TIME", " Yes ", True),
        ("GOSESSION_TOKEN_ONE_TIME", "1", True),
        ("GOSESSION_TOKEN_ONE_TIME", 1, True),
        ("GOSESSION_BIND_USER_AGENT", "on", True),
        ("GOSESSION_URL_REWRITE", "off", False),
        ("GOSESSION_REVOKE_ON_REUSE", "false", False),
        ("GOSESSION_MAX_SESSIONS_PER_USER", "3", 3),
        ("GOSESSION_MAX_SESSIONS_PER_USER", "none", None),
        ("GOSESSION_SESSION_LIMIT_POLICY", " Refuse ", "refuse"),
    ],
)
def test_strings_from_the_environment_are_accepted_and_normalised(key, raw, expected):
    app = Flask(__name__)
    app.config.update(TESTING=True)
    app.config[key] = raw
    GoSession(app)
    assert app.config[key] == expected and type(app.config[key]) is type(expected)
    settings = app.extensions["gosession"].settings
    field = key[len("GOSESSION_"):].lower()
    assert getattr(settings, field) == expected


def test_from_prefixed_env(monkeypatch):
    """``FLASK_GOSESSION_*`` through Flask's JSON-decoding loader, and raw strings."""
    monkeypatch.setenv("FLASK_GOSESSION_MAX_LIFETIME", "1800")  # JSON: the int 1800
    monkeypatch.setenv("FLASK_GOSESSION_ABSOLUTE_LIFETIME", "null")  # None
    monkeypatch.setenv("FLASK_GOSESSION_GC_INTERVAL", "2.5")  # the float 2.5
    monkeypatch.setenv("FLASK_GOSESSION_TOKEN_CHECK", "false")  # False
    monkeypatch.setenv("FLASK_GOSESSION_BIND_USER_AGENT", "1")  # the int 1
    monkeypatch.setenv("FLASK_GOSESSION_TOKEN_ONE_TIME", "yes")  # not JSON: the string "yes"
    monkeypatch.setenv("FLASK_GOSESSION_ROTATE_AFTER", "none")  # not JSON: the string "none"
    monkeypatch.setenv("FLASK_GOSESSION_COOKIE_NAME", "sid")
    app = Flask(__name__)
    app.config.update(TESTING=True)
    app.config.from_prefixed_env()
    GoSession(app)
    settings = app.extensions["gosession"].settings
    assert settings.max_lifetime == 1800
    assert settings.absolute_lifetime is None
    assert settings.gc_interval == 2.5
    assert settings.token_check is False
    assert settings.bind_user_agent is True
    assert settings.token_one_time is True
    assert settings.rotate_after is None
    assert settings.cookie_name == "sid"


def test_garbage_from_prefixed_env_names_key_and_value(monkeypatch):
    monkeypatch.setenv("FLASK_GOSESSION_MAX_LIFETIME", "12abc")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    with pytest.raises(ConfigError, match=r"GOSESSION_MAX_LIFETIME .*'12abc'"):
        GoSession(app)


# -- rotation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("after, grace", [(30, 30), (30, 60), ("60", "90")])
def test_grace_not_shorter_than_rotation_is_refused(after, grace):
    app = Flask(__name__)
    app.config.update(GOSESSION_ROTATE_AFTER=after, GOSESSION_ROTATE_GRACE=grace)
    with pytest.raises(ConfigError) as info:
        GoSession(app)
    message = str(info.value)
    assert "GOSESSION_ROTATE_GRACE" in message and "GOSESSION_ROTATE_AFTER" in message
    assert f"({int(grace)})" in message and f"({int(after)})" in message


def test_grace_shorter_than_rotation_or_rotation_off_is_fine():
    app = Flask(__name__)
    app.config.update(TESTING=True, GOSESSION_ROTATE_AFTER=31, GOSESSION_ROTATE_GRACE=30)
    GoSession(app)
    off = Flask(__name__)
    off.config.update(TESTING=True, GOSESSION_ROTATE_AFTER=None, GOSESSION_ROTATE_GRACE=3600)
    GoSession(off)
    assert off.extensions["gosession"].settings.rotate_after is None


# -- unknown keys -------------------------------------------------------------------------------


def unknown_key_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "flask_gosession" and r.levelname == "WARNING" and "unknown setting" in r.getMessage()
    ]


def test_misspelt_key_is_warned_about_with_a_suggestion(caplog):
    app = Flask(__name__)
    app.config.update(TESTING=True, GOSESSION_MAX_LIFETME=60, GOSESSION_TOKEN_HEDAER="X-T",
                      GOSESSION_QUUX=1)
    GoSession(app)
    warnings = unknown_key_warnings(caplog)
    assert len(warnings) == 3
    lifetime, quux, header = warnings  # sorted by key
    assert "GOSESSION_MAX_LIFETME" in lifetime and "did you mean GOSESSION_MAX_LIFETIME?" in lifetime
    assert "did you mean GOSESSION_TOKEN_HEADER?" in header
    assert "GOSESSION_QUUX" in quux and "did you mean" not in quux
    # The misspelt key changed nothing: the default applies.
    assert app.extensions["gosession"].settings.max_lifetime == DEFAULTS["GOSESSION_MAX_LIFETIME"]


def test_every_built_in_providers_keys_are_known_whichever_is_selected(caplog):
    app = Flask(__name__)
    app.config.update(TESTING=True)
    for name in BUILTINS:
        app.config.update(resolve(name).config_defaults(app))
    app.config["GOSESSION_PROVIDER"] = "memory"
    app.config["GOSESSION_REDIS_URL"] = "redis://cache.internal:6379/0"
    GoSession(app)
    assert "GOSESSION_SQL_URL" in app.config and "GOSESSION_MEMCACHED_SERVERS" in app.config
    assert unknown_key_warnings(caplog) == []


def test_new_default_keys_are_known_without_a_list_to_update(caplog, monkeypatch):
    monkeypatch.setitem(DEFAULTS, "GOSESSION_BRAND_NEW", 5)
    app = Flask(__name__)
    app.config.update(TESTING=True, GOSESSION_BRAND_NEW=6)
    GoSession(app)
    assert unknown_key_warnings(caplog) == []


class AcmeProvider(MemoryProvider):
    """A third-party provider with a setting of its own."""

    @classmethod
    def config_defaults(cls, app):  # type: ignore[no-untyped-def]
        return {**super().config_defaults(app), "GOSESSION_ACME_REGION": "eu"}


def test_a_third_party_providers_keys_count_when_it_is_selected(caplog):
    selected = Flask(__name__)
    selected.config.update(TESTING=True, GOSESSION_PROVIDER=AcmeProvider, GOSESSION_ACME_REGION="us")
    GoSession(selected)
    assert unknown_key_warnings(caplog) == []
    instance = Flask(__name__)
    instance.config.update(TESTING=True, GOSESSION_PROVIDER=AcmeProvider(), GOSESSION_ACME_REGION="us")
    GoSession(instance)
    assert unknown_key_warnings(caplog) == []
    other = Flask(__name__)
    other.config.update(TESTING=True, GOSESSION_ACME_REGION="us")
    GoSession(other)
    assert len(unknown_key_warnings(caplog)) == 1


# -- the memory store outside debug and testing ---------------------------------------------------


def memory_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "flask_gosession" and r.levelname == "WARNING" and "worker processes" in r.getMessage()
    ]


def test_memory_store_in_production_mode_is_warned_about_once(caplog):
    app = Flask(__name__)
    GoSession(app)
    (warning,) = memory_warnings(caplog)
    for store in ("file", "sql", "redis", "memcached"):
        assert store in warning
    assert "gunicorn" in warning


@pytest.mark.parametrize("mode", [{"TESTING": True}, {"DEBUG": True}])
def test_memory_store_in_debug_or_testing_is_not_warned_about(caplog, mode):
    app = Flask(__name__)
    app.config.update(mode)
    GoSession(app)
    assert memory_warnings(caplog) == []


def test_a_shared_store_is_not_warned_about(caplog, tmp_path):
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(GOSESSION_PROVIDER="file")
    GoSession(app)
    assert memory_warnings(caplog) == []
