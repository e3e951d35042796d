"""Naming a device from its User-Agent, and cutting its address to a network."""
from __future__ import annotations

import pytest

from flask_gosession.devices import UNKNOWN_BROWSER, UNKNOWN_OS, parse_user_agent, truncate_address

AGENTS = [
    ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox 128", "Linux"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87", "Edge 126", "Windows"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "Chrome 126", "macOS"),
    # What Playwright's headless Chromium sends (the browser tests' own devices).
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/156.0.0.0 Safari/537.36", "Headless Chrome 156", "Linux"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Mobile/15E148 Safari/604.1", "Safari 17", "iOS"),
    ("curl/8.5.0", "curl 8", UNKNOWN_OS),
    ("", UNKNOWN_BROWSER, UNKNOWN_OS),
    (None, UNKNOWN_BROWSER, UNKNOWN_OS),
]


@pytest.mark.parametrize(("agent", "browser", "system"), AGENTS)
def test_user_agents_are_named(agent: str | None, browser: str, system: str) -> None:
    assert parse_user_agent(agent) == (browser, system)


@pytest.mark.parametrize(("address", "network"), [
    ("203.0.113.77", "203.0.113.0/24"),
    ("::ffff:203.0.113.77", "203.0.113.0/24"),
    ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ("not an address", ""),
    (None, ""),
])
def test_addresses_are_cut_to_their_network(address: str | None, network: str) -> None:
    assert truncate_address(address) == network
