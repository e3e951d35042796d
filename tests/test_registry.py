"""The provider registry: names, entry points, dotted paths, errors."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from flask import Flask

from flask_gosession import GoSession, Provider, register, registry, unregister
from flask_gosession.errors import RegistryError
from flask_gosession.providers.memory import MemoryProvider


class TinyProvider(MemoryProvider):
    """A third-party provider for these tests."""


@pytest.fixture(autouse=True)
def clean_registry():
    yield
    for name in ("tiny", "tiny2", "shared"):
        unregister(name)


def test_register_rejects_none():
    with pytest.raises(RegistryError, match="None"):
        register("tiny", None)


def test_register_rejects_non_provider():
    with pytest.raises(RegistryError, match=r"not a flask_gosession\.Provider"):
        register("tiny", object)  # type: ignore[arg-type]


def test_register_rejects_duplicates_unless_forced():
    register("tiny", TinyProvider)
    with pytest.raises(RegistryError, match="already registered"):
        register("tiny", MemoryProvider)
    register("tiny", MemoryProvider, force=True)
    assert registry.resolve("tiny") is MemoryProvider


def test_registered_name_selects_provider():
    register("tiny", TinyProvider)
    app = Flask(__name__)
    app.config["GOSESSION_PROVIDER"] = "tiny"
    GoSession(app)
    assert type(app.extensions["gosession"].provider) is TinyProvider


def test_registered_instance_is_used_as_is():
    shared = TinyProvider()
    register("shared", shared)
    app = Flask(__name__)
    app.config["GOSESSION_PROVIDER"] = "shared"
    GoSession(app)
    assert app.extensions["gosession"].provider is shared


def test_unknown_provider_names_known_ones():
    app = Flask(__name__)
    app.config["GOSESSION_PROVIDER"] = "nosuch"
    with pytest.raises(RegistryError) as info:
        GoSession(app)
    message = str(info.value)
    for name in ("memory", "file", "sql", "redis", "memcached"):
        assert name in message
    assert "entry-point" in message and "register" in message


def test_dotted_path_selects_provider():
    app = Flask(__name__)
    app.config["GOSESSION_PROVIDER"] = "test_registry:TinyProvider"
    GoSession(app)
    assert type(app.extensions["gosession"].provider).__name__ == "TinyProvider"
    other = Flask(__name__)
    other.config["GOSESSION_PROVIDER"] = "flask_gosession.providers.memory.MemoryProvider"
    GoSession(other)
    assert type(other.extensions["gosession"].provider) is MemoryProvider


def test_dotted_path_errors_are_clear():
    app = Flask(__name__)
    app.config["GOSESSION_PROVIDER"] = "no_such_module_xyz:Thing"
    with pytest.raises(RegistryError, match="could not be imported"):
        GoSession(app)
    app.config["GOSESSION_PROVIDER"] = "flask_gosession.providers.memory:Nope"
    with pytest.raises(RegistryError, match="no attribute"):
        GoSession(app)
    app.config["GOSESSION_PROVIDER"] = "flask_gosession.errors:ConfigError"
    with pytest.raises(RegistryError, match="not a Provider"):
        GoSession(app)


def test_entry_point_selects_provider(tmp_path, monkeypatch):
    dist = tmp_path / "gosession_tiny-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gosession-tiny\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[flask_gosession.providers]\ntiny2 = test_registry:TinyProvider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tiny2" in registry.registered()
    app = Flask(__name__)
    app.config["GOSESSION_PROVIDER"] = "tiny2"
    GoSession(app)
    assert type(app.extensions["gosession"].provider).__name__ == "TinyProvider"


def test_provider_class_or_instance_in_config():
    app = Flask(__name__)
    app.config["GOSESSION_PROVIDER"] = TinyProvider
    GoSession(app)
    assert type(app.extensions["gosession"].provider) is TinyProvider


def test_importing_registers_nothing_and_imports_no_client():
    code = textwrap.dedent(
        """
        import sys
        import flask_gosession, flask_gosession.providers.memory
        from flask_gosession import registry
        assert registry._registry == {}, registry._registry
        for mod in ("redis", "pymemcache", "sqlalchemy", "msgspec"):
            assert mod not in sys.modules, mod
        assert not any(t.name == "gosession-gc" for t in __import__("threading").enumerate())
        print("clean")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "clean"


def test_provider_base_is_abstract():
    with pytest.raises(TypeError):
        Provider()  # type: ignore[abstract]


def test_a_provider_instance_shared_by_two_apps_must_agree(tmp_path):
    """Per-app values are bound, not assigned: a second app asking the same
    instance for another lifetime is refused instead of silently deciding
    the first app's TTLs."""
    from flask import Flask

    from flask_gosession import ConfigError, GoSession
    from flask_gosession.providers.memory import MemoryProvider

    shared = MemoryProvider()
    register("shared-two-apps", shared)
    try:
        def app_with(**config):  # type: ignore[no-untyped-def]
            app = Flask(__name__, instance_path=str(tmp_path))
            app.config.update(GOSESSION_PROVIDER="shared-two-apps", GOSESSION_GC_INTERVAL=0,
                              GOSESSION_ABSOLUTE_LIFETIME=None, **config)
            GoSession(app)
            return app

        first = app_with(GOSESSION_MAX_LIFETIME=60)
        assert shared.max_lifetime == 60
        with pytest.raises(ConfigError, match="max_lifetime: 60 here, 7200 asked"):
            app_with(GOSESSION_MAX_LIFETIME=7200)
        assert shared.max_lifetime == 60  # the first app's TTLs are untouched
        second = app_with(GOSESSION_MAX_LIFETIME=60)  # agreeing apps may share it
        assert second.extensions["gosession"].provider is first.extensions["gosession"].provider
    finally:
        unregister("shared-two-apps")
