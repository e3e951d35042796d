"""Validators shared by the providers' ``from_config``: ``host:port``
server lists, timeouts and flags.

Numbers and flags are parsed by :mod:`flask_gosession.coerce`, as the core
settings are, so ``"2.5"`` and ``"true"`` from the environment work here too.
"""
from __future__ import annotations

import math
import typing as t

from .. import coerce
from ..errors import ConfigError


def parse_address(item: t.Any, setting: str, within: t.Any = None) -> tuple[str, int]:
    """Parse ``"host:port"``, ``"[ipv6]:port"`` or a ``(host, port)`` pair.

    :param setting: the config key, named in the error.
    :param within: the whole setting's value, also shown in the error.
    :raises ConfigError: naming ``setting`` and the bad item.
    """
    host: t.Any
    port: t.Any
    if isinstance(item, str):
        host, sep, port = item.rpartition(":")
        if not sep:
            host = ""
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        port = int(port) if port.isdigit() else None
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        host, port = item
    else:
        host = port = None
    if (
        not isinstance(host, str)
        or not host
        or not isinstance(port, int)
        or isinstance(port, bool)
        or not 0 < port < 65536
    ):
        where = "" if within is None else f" in {within!r}"
        raise ConfigError(f"{setting}: {item!r}{where} is not 'host:port' or (host, port)")
    return host, port


def parse_address_list(value: t.Any, setting: str) -> list[tuple[str, int]]:
    """Parse a non-empty list or tuple of addresses (see :func:`parse_address`).

    A bare string is refused rather than split, since ``"a:1,b:2"`` or a
    single ``"host:port"`` in place of a list is almost always a mistake.
    :raises ConfigError: naming ``setting`` and the bad value.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(
            f"{setting} must be a non-empty list of 'host:port' strings or "
            f"(host, port) tuples, got {value!r}"
        )
    return [parse_address(item, setting, value) for item in value]


def positive_seconds(value: t.Any, setting: str) -> float:
    """Validate a timeout: a finite number greater than zero (or its spelling).

    :raises ConfigError: naming ``setting`` and the bad value.
    """
    try:
        seconds = float(coerce.number(value, integer=False))
    except (ValueError, OverflowError):
        seconds = math.nan
    if not seconds > 0:
        raise ConfigError(f"{setting} must be a positive number of seconds, got {value!r}")
    return seconds


def flag(value: t.Any, setting: str) -> bool:
    """Validate a flag: ``True``/``False`` or a spelling :func:`coerce.flag` takes.

    :raises ConfigError: naming ``setting`` and the bad value.
    """
    try:
        return coerce.flag(value)
    except ValueError:
        raise ConfigError(
            f"{setting} must be True or False (or 'true'/'false', 'yes'/'no', '1'/'0'), "
            f"got {value!r}"
        ) from None
