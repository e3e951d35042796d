"""Size limits shared by the built-in providers.

Every built-in provider refuses a record larger than it can (or should)
store with :class:`~flask_gosession.errors.RecordTooLarge`, before writing
anything. Its limit is the smaller of two:

* ``GOSESSION_MAX_RECORD_SIZE``, the application's cap on one session's
  encoded record (default :data:`DEFAULT_MAX_RECORD_SIZE`, 1 MiB; ``None``
  leaves only the store's own limit), declared by each built-in provider;
* the store's own hard limit (memcached's item size, a SQL column's
  capacity, Redis's 512 MB per value); the file and memory stores have none.

A provider built by hand, not from config, gets no application cap unless
it is given one (``max_record_size=``), only the store's own limit.
"""
from __future__ import annotations

import typing as t

from .. import coerce
from ..errors import ConfigError

#: The config key of the application's cap on one record.
MAX_RECORD_SIZE = "GOSESSION_MAX_RECORD_SIZE"
#: Its default: 1 MiB, memcached's default item size and far beyond any
#: sane session (a cookie session stops at 4 KiB).
DEFAULT_MAX_RECORD_SIZE = 1024 * 1024
#: What it does, for each built-in provider's ``config_descriptions``.
MAX_RECORD_SIZE_DESCRIPTION = (
    "Largest encoded session record, in bytes (the store may lower it to its own limit); a "
    "larger one is an HTTP 413 and nothing is stored; `None` leaves only the store's own limit.")


def positive_int(value: t.Any, setting: str, *, optional: bool = False,
                 minimum: int = 1) -> int | None:
    """Validate a count or a size: an integer of at least ``minimum``, or
    its decimal spelling (a value from the environment).

    :param optional: also accept ``None`` (or ``"none"``, ``""``), which
        disables the limit.
    :raises ConfigError: naming ``setting`` and the bad value.
    """
    if optional and coerce.is_none(value):
        return None
    try:
        parsed = int(coerce.number(value))
    except ValueError:
        parsed = minimum - 1
    if parsed < minimum:
        extra = " or None" if optional else ""
        raise ConfigError(f"{setting} must be an integer >= {minimum}{extra}, got {value!r}")
    return parsed


def record_cap(config: t.Mapping[str, t.Any]) -> int | None:
    """The validated ``GOSESSION_MAX_RECORD_SIZE`` of an app's config.

    :raises ConfigError: for anything but a positive integer or ``None``.
    """
    return positive_int(config[MAX_RECORD_SIZE], MAX_RECORD_SIZE, optional=True)


def lowest(*limits: int | None) -> int | None:
    """The smallest of the limits that are set (``None`` means no limit)."""
    present = [limit for limit in limits if limit is not None]
    return min(present) if present else None
