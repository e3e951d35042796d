"""The device description kept in a user's index: browser and OS from the
User-Agent, the client address cut down to its network, and hostile input."""
from __future__ import annotations

import time

import pytest

from flask_gosession.devices import parse_user_agent, truncate_address

AGENTS = [
    ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0", "Firefox 128", "Linux"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "Chrome 126", "Windows"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87", "Edge 126", "Windows"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Safari/605.1.15", "Safari 17", "macOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.5 Mobile/15E148 Safari/604.1", "Safari 17", "iOS"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1", "Chrome 126", "iOS"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.6478.71 Mobile Safari/537.36", "Chrome 126", "Android"),
    ("Mozilla/5.0 (Linux; Android 14; SM-S928B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36", "Samsung Internet 25", "Android"),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36", "Chrome 126", "ChromeOS"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/126.0.0.0 Safari/537.36 OPR/111.0.0.0", "Opera 111", "Windows"),
    # What Playwright's headless Chromium sends (the browser tests' own devices).
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/156.0.0.0 Safari/537.36", "Headless Chrome 156", "Linux"),
    ("curl/8.5.0", "curl 8", "Unknown OS"),
    ("python-requests/2.32.3", "Python 2", "Unknown OS"),
    ("", "Unknown browser", "Unknown OS"),
    (None, "Unknown browser", "Unknown OS"),
    ("\x00\xff<script>", "Unknown browser", "Unknown OS"),
]


@pytest.mark.parametrize("agent, browser, system", AGENTS)
def test_user_agents_are_named(agent, browser, system):
    assert parse_user_agent(agent) == (browser, system)


def test_a_huge_hostile_user_agent_is_cheap_and_harmless():
    hostile = "Mozilla/5.0 (" + "Windows " * 100_000 + "Chrome/" + "9" * 100_000
    start = time.process_time()
    browser, system = parse_user_agent(hostile)
    assert time.process_time() - start < 0.5
    assert system == "Windows" and browser == "Unknown browser"  # cut at 512 characters


@pytest.mark.parametrize("address, network", [
    ("203.0.113.77", "203.0.113.0/24"),
    ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"),
    ("fe80::1%eth0", "fe80::/48"),
    (" 10.1.2.3 ", "10.1.2.0/24"),
    ("", ""),
    (None, ""),
    ("not an address", ""),
    ("999.1.1.1", ""),
    ("203.0.113.77, 10.0.0.1", ""),
])
def test_addresses_are_truncated_to_their_network(address, network):
    assert truncate_address(address) == network
