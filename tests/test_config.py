"""Config validation at init_app."""
from __future__ import annotations

import pytest
from flask import Flask

from flask_gosession import GoSession
from flask_gosession.errors import ConfigError
from flask_gosession.settings import DEFAULTS


@pytest.mark.parametrize(
    "key, value",
    [
        ("GOSESSION_MAX_LIFETIME", -1),
        ("GOSESSION_MAX_LIFETIME", 0),
        ("GOSESSION_MAX_LIFETIME", "3600"),
        ("GOSESSION_MAX_LIFETIME", True),
        ("GOSESSION_MAX_LIFETIME", 1.5),
        ("GOSESSION_ABSOLUTE_LIFETIME", -5),
        ("GOSESSION_ABSOLUTE_LIFETIME", 10),
        ("GOSESSION_GC_INTERVAL", -1),
        ("GOSESSION_GC_INTERVAL", "60"),
        ("GOSESSION_REFRESH_INTERVAL", None),
        ("GOSESSION_ROTATE_AFTER", 0),
        ("GOSESSION_ROTATE_GRACE", -1),
        ("GOSESSION_COOKIE_NAME", ""),
        ("GOSESSION_COOKIE_NAME", "bad name"),
        ("GOSESSION_COOKIE_NAME", 5),
        ("GOSESSION_TOKEN_CHECK", "yes"),
        ("GOSESSION_TOKEN_CHECK", "Auto"),
        ("GOSESSION_FLASK_LOGIN", 1),
        ("GOSESSION_TOKEN_METHODS", "POST"),
        ("GOSESSION_TOKEN_METHODS", ["POST", 1]),
        ("GOSESSION_TOKEN_FIELD", ""),
        ("GOSESSION_SERIALIZER", "pickle"),
        ("GOSESSION_SERIALIZER", None),
        ("GOSESSION_BIND_USER_AGENT", 1),
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
