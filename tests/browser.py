"""Headless Chromium for the end-to-end tests, driven through Playwright.

Debian's ``chromium`` package provides the browser and the PyPI package
``playwright`` the driver; Playwright never downloads a browser of its own
here (``playwright install`` is not used): it launches ``/usr/bin/chromium``.

The browser only ever talks to the loopback test server:

- every request a page makes goes through a route that lets through only
  ``http://127.0.0.1:<port>`` and aborts (and records) anything else;
- underneath, a proxy that does not exist (a closed loopback port) catches
  whatever the route does not see, since Chromium sends loopback addresses
  direct and everything else to the proxy; host name lookups fail too;
- background networking, component updates and sync are switched off.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import threading
import typing as t
import urllib.parse

try:
    from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright
except ImportError:  # the ``test`` extra was not installed
    sync_playwright = expect = None  # type: ignore[assignment]

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Screenshots land here (gitignored), one file per page the tests look at.
ARTIFACTS = ROOT / "test-artifacts" / "browser"

CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")

#: Bounded waits, in milliseconds.
LAUNCH_TIMEOUT = 20_000
TIMEOUT = 5_000

FLAGS = [
    # --headless and --no-sandbox are added by Playwright (headless=True,
    # chromium_sandbox=False, its defaults).
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-default-browser-check",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    if sync_playwright is None:
        return "the Python package 'playwright' is not installed"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (Debian package 'chromium')"
    return None


@contextlib.contextmanager
def launch() -> t.Iterator[Browser]:
    """Start one headless Chromium; close it and the driver afterwards."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=FLAGS, timeout=LAUNCH_TIMEOUT
        )
        try:
            yield browser
        finally:
            browser.close()


class Loopback:
    """A browser context pinned to one loopback origin (plus the loopback
    ports in ``also``, for tests that need a second server).

    ``blocked`` lists every request that tried to go anywhere else.
    """

    def __init__(self, browser: Browser, port: int, also: t.Iterable[int] = ()) -> None:
        self.origin = f"http://127.0.0.1:{port}"
        self.allowed = {self.origin, *(f"http://127.0.0.1:{other}" for other in also)}
        self.blocked: list[str] = []
        self.context: BrowserContext = browser.new_context(base_url=self.origin)
        self.context.set_default_timeout(TIMEOUT)
        self.context.set_default_navigation_timeout(TIMEOUT)
        self.context.route("**/*", self._guard)
        self.page: Page = self.context.new_page()

    def _guard(self, route: Route) -> None:
        url = urllib.parse.urlsplit(route.request.url)
        if f"{url.scheme}://{url.netloc}" in self.allowed:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort("blockedbyclient")

    def cookie(self, name: str = "gosessionid") -> dict[str, t.Any] | None:
        """The named cookie from the context's jar (what the browser holds)."""
        for cookie in self.context.cookies(self.origin):
            if cookie["name"] == name:
                return dict(cookie)
        return None

    def close(self) -> None:
        self.context.close()


@contextlib.contextmanager
def loopback(browser: Browser, port: int, also: t.Iterable[int] = ()) -> t.Iterator[Loopback]:
    """A :class:`Loopback` context, closed afterwards; asserts nothing left loopback."""
    ctx = Loopback(browser, port, also)
    try:
        yield ctx
    finally:
        ctx.close()
    assert not ctx.blocked, f"the browser tried to leave loopback: {ctx.blocked}"


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def screenshot(page: Page, name: str) -> pathlib.Path:
    """Save a screenshot of ``page`` as ``test-artifacts/browser/<name>.png``.

    The file is written under a temporary name and moved into place, so it
    always holds this run's picture, whole, even with two runs at once.
    """
    data = page.screenshot(full_page=True, timeout=TIMEOUT)
    assert data.startswith(PNG_MAGIC) and len(data) > len(PNG_MAGIC), name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    partial = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.png.part")
    partial.write_bytes(data)
    os.replace(partial, path)
    assert path.is_file() and path.stat().st_size > 0, path
    return path
