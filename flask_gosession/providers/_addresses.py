"""Parsing of ``host:port`` server lists, shared by the network providers."""
from __future__ import annotations

import typing as t

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
    """Validate a timeout: a finite number greater than zero.

    :raises ConfigError: naming ``setting`` and the bad value.
    """
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not value > 0
        or value == float("inf")
    ):
        raise ConfigError(f"{setting} must be a positive number of seconds, got {value!r}")
    return float(value)
