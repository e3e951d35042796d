"""The rows of the documentation's configuration tables, read from the code.

Pure Python (no Sphinx): ``gosession_config`` renders these rows, and
``tests/test_docs.py`` checks with them that every setting is described.

A *section* is ``"core"`` (the core keys of
:data:`flask_gosession.settings.DEFAULTS` without the encryption keys),
``"encryption"`` (:data:`flask_gosession.encryption.DEFAULTS`) or the name
of a built-in provider (its ``config_defaults`` and ``config_descriptions``).
"""
from __future__ import annotations

import typing as t

from flask import Flask

from flask_gosession import encryption, settings
from flask_gosession.registry import BUILTINS, resolve

#: The instance path of the app the provider defaults are computed for,
#: shown as ``instance_path`` (the app's own, at run time).
_INSTANCE = "/INSTANCE_PATH"


class Row(t.NamedTuple):
    key: str
    default: str
    description: str | None


def show(value: t.Any) -> str:
    """A default as the table shows it: its ``repr``, with the app's
    instance path left symbolic and a size in MiB spelled out."""
    text = repr(value).replace(_INSTANCE, "instance_path")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 20 \
            and value % (1 << 20) == 0:
        text += f" ({value >> 20} MiB)"
    return text


def sections() -> list[str]:
    """Every section, in the order the configuration page lists them."""
    return ["core", "encryption", *BUILTINS]


def defaults_and_descriptions(section: str) -> tuple[dict[str, t.Any], t.Mapping[str, str]]:
    """The keys of ``section`` with their defaults, and their descriptions.

    :raises ValueError: for an unknown section.
    """
    if section == "core":
        keys = {k: v for k, v in settings.DEFAULTS.items() if k not in encryption.DEFAULTS}
        return keys, settings.DESCRIPTIONS
    if section == "encryption":
        return dict(encryption.DEFAULTS), encryption.DESCRIPTIONS
    if section in BUILTINS:
        provider = resolve(section)
        app = Flask("flask_gosession_docs", instance_path=_INSTANCE)
        return provider.config_defaults(app), provider.config_descriptions
    raise ValueError(f"unknown settings section {section!r}; known: {', '.join(sections())}")


def rows(section: str) -> list[Row]:
    """One row per key of ``section``, in the code's order; a key without a
    description has ``description=None``."""
    defaults, descriptions = defaults_and_descriptions(section)
    return [Row(key, show(value), descriptions.get(key)) for key, value in defaults.items()]
