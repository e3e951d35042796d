"""What a device list shows of a session: the browser and OS named from
the User-Agent, and the client address cut down to its network.

Nothing here identifies a person more than the request already did: the
address is truncated to its /24 (IPv4) or /48 (IPv6) network before it is
stored, and the User-Agent is reduced to two short names (``"Firefox 128"``,
``"Windows"``); the header itself is never stored. Both are shown to the
signed-in user only, as Google's and GitHub's device pages do.

The parser is a short ordered list of patterns for the browsers and systems
people actually use. Order matters: Edge and Opera also claim to be Chrome,
and Chrome also claims to be Safari, so the more specific names come first.
Anything else is ``"Unknown browser"`` / ``"Unknown OS"``, never an error,
and no header can make it slow (the patterns have no nested repetition and
only the first 512 characters are looked at).
"""
from __future__ import annotations

import ipaddress
import re
import typing as t

#: Only this much of a User-Agent header is parsed.
MAX_AGENT = 512

#: (name, pattern with the major version as group 1, or without a group).
_BROWSERS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("Edge", r"\bEdg(?:e|A|iOS)?/(\d+)"),
        ("Opera", r"\b(?:OPR|Opera)/(\d+)"),
        ("Samsung Internet", r"\bSamsungBrowser/(\d+)"),
        ("Vivaldi", r"\bVivaldi/(\d+)"),
        ("Yandex Browser", r"\bYaBrowser/(\d+)"),
        ("Firefox", r"\b(?:Firefox|FxiOS)/(\d+)"),
        ("Headless Chrome", r"\bHeadlessChrome/(\d+)"),  # automation, not a person's browser
        ("Chrome", r"\b(?:Chrome|CriOS)/(\d+)"),
        ("Chromium", r"\bChromium/(\d+)"),
        ("Safari", r"\bVersion/(\d+)[.\d]* (?:Mobile/\S+ )?Safari/"),
        ("Internet Explorer", r"\bMSIE (\d+)|\bTrident/.*\brv:(\d+)"),
        ("curl", r"^curl/(\d+)"),
        ("Python", r"^python-(?:requests|httpx|urllib\d?)/(\d+)|^Python-urllib/(\d+)"),
    )
)

_SYSTEMS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern)) for name, pattern in (
        ("iOS", r"\b(?:iPhone|iPad|iPod)\b"),
        ("Android", r"\bAndroid\b"),
        ("ChromeOS", r"\bCrOS\b"),
        ("Windows", r"\bWindows\b"),
        ("macOS", r"\bMac OS X\b|\bMacintosh\b"),
        ("Linux", r"\bLinux\b|\bX11\b"),
    )
)

UNKNOWN_BROWSER = "Unknown browser"
UNKNOWN_OS = "Unknown OS"


def parse_user_agent(agent: str | None) -> tuple[str, str]:
    """``(browser, os)`` named from a User-Agent header, e.g.
    ``("Firefox 128", "Linux")``; unknown parts get the ``UNKNOWN_*`` names."""
    text = (agent or "")[:MAX_AGENT]
    browser = UNKNOWN_BROWSER
    for name, pattern in _BROWSERS:
        match = pattern.search(text)
        if match:
            version = next((g for g in match.groups() if g), None)
            browser = f"{name} {version}" if version else name
            break
    system = next((name for name, pattern in _SYSTEMS if pattern.search(text)), UNKNOWN_OS)
    return browser, system


def truncate_address(address: str | None) -> str:
    """The network of a client address: ``203.0.113.0/24`` for IPv4,
    ``2001:db8:1::/48`` for IPv6 (an IPv4-mapped IPv6 address counts as
    IPv4); ``""`` for anything that is not an address."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def describe(request: t.Any) -> dict[str, str]:
    """What the index keeps of the device making ``request``: ``browser``,
    ``os`` and ``address`` (``request.remote_addr``, so behind a proxy use
    Werkzeug's ``ProxyFix`` as for anything else that reads it)."""
    browser, system = parse_user_agent(request.headers.get("User-Agent"))
    return {"browser": browser, "os": system, "address": truncate_address(request.remote_addr)}
