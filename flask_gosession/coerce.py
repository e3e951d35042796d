"""The one grammar for config values that may arrive as strings.

Settings read from the environment are strings (``os.environ``, a
``.env`` file, a container's ``-e MAX=3600``), or JSON-decoded values when
they come through :meth:`flask.Config.from_prefixed_env` (``3600``,
``true``, ``null``). The core settings (:mod:`flask_gosession.settings`)
and the providers' ``from_config`` validators all parse such values here,
so a number, a flag and "no value" are spelled the same way for every key.

Each function raises :class:`ValueError` for a value it cannot take; the
caller turns that into a :class:`~flask_gosession.errors.ConfigError`
naming its key and the value.
"""
from __future__ import annotations

import math
import re
import typing as t

#: Spellings of true and false, compared stripped and case-insensitively.
TRUE = frozenset({"true", "yes", "on", "1"})
FALSE = frozenset({"false", "no", "off", "0"})
#: Spellings of "no value" for optional settings.
NONE = frozenset({"", "none", "null"})

# Plain decimal digits only: int() and float() would also take "1_000",
# non-ASCII digits, "inf" and "nan".
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def is_none(value: t.Any) -> bool:
    """Whether ``value`` means "no value": ``None``, ``""``, ``"none"``, ``"null"``."""
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE)


def flag(value: t.Any) -> bool:
    """``True``/``False``, ``1``/``0``, or a string from :data:`TRUE`/:data:`FALSE`.

    :raises ValueError: for anything else (``"maybe"``, ``2``, ``None``).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        # from_prefixed_env() decodes FLAG=1 to the int 1.
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE:
            return True
        if word in FALSE:
            return False
    raise ValueError(value)


def number(value: t.Any, *, integer: bool = True) -> int | float:
    """An int (or, unless ``integer``, a finite float), or its decimal spelling.

    Strings are stripped first, so ``" 3600 "`` is ``3600``. No range is
    checked here; ``True`` and ``False`` are not numbers.
    :raises ValueError: for anything else (``"12abc"``, ``1.5`` when
        ``integer``, ``"inf"``, ``float("nan")``).
    """
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
        if not integer and _DECIMAL.fullmatch(text):
            value = float(text)
        else:
            raise ValueError(value)
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    if not integer and isinstance(value, float) and math.isfinite(value):
        return value
    raise ValueError(value)
