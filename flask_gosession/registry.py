"""The provider registry, after Go's ``database/sql`` driver registry.

A provider is selected by ``GOSESSION_PROVIDER``, which may be:

* a registered name (:func:`register`);
* a built-in name (``memory``, ``file``, ``sql``, ``redis``, ``memcached``),
  resolved lazily so that importing this package imports no client library;
* the name of an entry point in the ``flask_gosession.providers`` group;
* a dotted path ``package.module:ClassName`` (or ``package.module.ClassName``);
* a :class:`~flask_gosession.providers.base.Provider` subclass or instance.

Nothing registers itself as a side effect of an import.
"""
from __future__ import annotations

import importlib
import threading
import typing as t
from importlib.metadata import entry_points

from .errors import RegistryError
from .providers.base import Provider

if t.TYPE_CHECKING:
    from flask import Flask

#: The entry-point group scanned for third-party providers.
ENTRY_POINT_GROUP = "flask_gosession.providers"

#: Built-in providers: name -> (module path, class name, extra to install).
BUILTINS: dict[str, tuple[str, str, str | None]] = {
    "memory": ("flask_gosession.providers.memory", "MemoryProvider", None),
    "file": ("flask_gosession.providers.file", "FileProvider", None),
    "sql": ("flask_gosession.providers.sql", "SQLProvider", "sql"),
    "redis": ("flask_gosession.providers.redis", "RedisProvider", "redis"),
    "memcached": ("flask_gosession.providers.memcached", "MemcachedProvider", "memcached"),
}

ProviderSpec = type[Provider] | Provider

_registry: dict[str, ProviderSpec] = {}
_lock = threading.Lock()


def register(name: str, provider: ProviderSpec | None, force: bool = False) -> None:
    """Make ``provider`` selectable as ``GOSESSION_PROVIDER = name``.

    :param provider: a :class:`Provider` subclass (built per app with
        ``from_config``) or an instance (shared by every app that selects it).
    :param force: replace an existing registration on purpose.
    :raises RegistryError: if ``provider`` is ``None`` or not a provider, if
        ``name`` is empty, or if ``name`` is taken and ``force`` is false.
    """
    if provider is None:
        raise RegistryError(f"register({name!r}, None): the provider is None")
    if not isinstance(name, str) or not name:
        raise RegistryError(f"provider name must be a non-empty string, got {name!r}")
    if not _is_provider(provider):
        raise RegistryError(
            f"register({name!r}, {provider!r}): not a flask_gosession.Provider "
            "subclass or instance"
        )
    with _lock:
        if name in _registry and not force:
            raise RegistryError(
                f"a provider is already registered as {name!r}; "
                "pass force=True to replace it"
            )
        _registry[name] = provider


def unregister(name: str) -> None:
    """Remove a registration made with :func:`register` (no-op if absent)."""
    with _lock:
        _registry.pop(name, None)


def registered() -> list[str]:
    """Every name :func:`resolve` knows without importing anything."""
    names = set(_registry) | set(BUILTINS)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def resolve(spec: str | ProviderSpec) -> ProviderSpec:
    """Turn a ``GOSESSION_PROVIDER`` value into a provider class or instance.

    :raises RegistryError: naming the known providers, and the extra to
        install when a built-in's client library is missing.
    """
    if _is_provider(spec):
        return t.cast(ProviderSpec, spec)
    if not isinstance(spec, str) or not spec:
        raise RegistryError(f"GOSESSION_PROVIDER must be a name or a Provider, got {spec!r}")
    with _lock:
        found = _registry.get(spec)
    if found is not None:
        return found
    if spec in BUILTINS:
        module, attr, extra = BUILTINS[spec]
        return _load(module, attr, spec, extra)
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=spec):
        try:
            loaded = ep.load()
        except ImportError as err:
            raise RegistryError(
                f"entry point {spec!r} ({ep.value}) could not be imported: {err}"
            ) from err
        return _checked(loaded, spec)
    if "." in spec or ":" in spec:
        module, sep, attr = spec.partition(":")
        if not sep:
            module, _, attr = spec.rpartition(".")
        return _load(module, attr, spec, None)
    raise RegistryError(
        f"unknown GOSESSION_PROVIDER {spec!r}. Known providers: "
        f"{', '.join(registered())}. A third-party provider must be registered "
        f"with flask_gosession.register(), exposed in the {ENTRY_POINT_GROUP!r} "
        "entry-point group, or named by a dotted path 'package.module:Class'."
    )


def build_provider(app: Flask) -> Provider:
    """The provider selected by ``app.config["GOSESSION_PROVIDER"]``.

    A registered instance is used as is; a class gets its
    :meth:`~Provider.config_defaults` applied with ``setdefault`` and is
    built with :meth:`~Provider.from_config`.
    :raises RegistryError: as :func:`resolve`.
    :raises ConfigError: for a bad provider setting.
    """
    spec = resolve(app.config["GOSESSION_PROVIDER"])
    if isinstance(spec, Provider):
        return spec
    for key, value in spec.config_defaults(app).items():
        app.config.setdefault(key, value)
    return spec.from_config(app)


def known_keys(app: Flask, provider: Provider) -> set[str]:
    """Every ``GOSESSION_*`` key that means something to this app.

    The core :data:`~flask_gosession.settings.DEFAULTS`, the
    :meth:`~Provider.config_defaults` of every built-in provider whichever
    is selected (so switching ``GOSESSION_PROVIDER`` between environments
    leaves the other stores' keys unremarked), and those of the selected
    ``provider``'s class (so a third-party provider's keys count when it is
    the one in use). Built from the declared defaults, so a new key is
    known as soon as it has one. A built-in whose module cannot be imported
    is skipped: its modules import no client library, so this never fails
    for a missing extra.
    """
    from .settings import DEFAULTS

    keys = set(DEFAULTS)
    classes: list[type[Provider]] = [type(provider)]
    for module, attr, _ in BUILTINS.values():
        try:
            classes.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue
    for cls in classes:
        keys.update(cls.config_defaults(app))
    return keys


def _load(module: str, attr: str, spec: str, extra: str | None) -> ProviderSpec:
    try:
        obj = getattr(importlib.import_module(module), attr)
    except ImportError as err:
        hint = (
            f" Install it with: pip install flask-gosession[{extra}]"
            if extra
            else " Check that the module is importable."
        )
        raise RegistryError(f"provider {spec!r} could not be imported: {err}.{hint}") from err
    except AttributeError as err:
        raise RegistryError(f"provider {spec!r}: {module} has no attribute {attr!r}") from err
    return _checked(obj, spec)


def _checked(obj: t.Any, spec: str) -> ProviderSpec:
    if not _is_provider(obj):
        raise RegistryError(f"{spec!r} resolved to {obj!r}, which is not a Provider")
    return t.cast(ProviderSpec, obj)


def _is_provider(obj: t.Any) -> bool:
    return isinstance(obj, Provider) or (isinstance(obj, type) and issubclass(obj, Provider))
