"""The example app in a real browser: headless Chromium on a loopback server.

The example (``example/app.py``) runs on a threaded werkzeug server bound
to 127.0.0.1, and Chromium, driven by Playwright, logs in through the form,
counts page loads, logs out, plays the Go chapter's cookie-theft
scenario with a second browser context, and signs browsers out of each
other from the "Your devices" page (two and three contexts, each its own
cookie jar). It also tours what the demo shows: the session's label, ages
and rotation countdown, the label changing at rotation while an older
form still submits, the explained 400 for a form without the token, the
"revoked because an old id was reused" notice in both browsers, and the
store named on every page. Time is a :class:`FakeClock`
injected into the example's ``gosession`` object: rotation and the grace
window are reached by advancing it, never by sleeping.

Each page looked at is saved as a PNG under ``test-artifacts/browser/``.
"""
from __future__ import annotations

import contextlib
import typing as t

import pytest

from browser import TIMEOUT, expect, loopback, screenshot
from clock import FakeClock
from examples import load_example
from flask_gosession.ids import label, store_key
from liveserver import serve
from signals_capture import captured, named

pytestmark = pytest.mark.browser

COOKIE = "gosessionid"
ROTATE_AFTER = 60
GRACE = 10


@pytest.fixture
def run_example(clock: FakeClock) -> t.Iterator[t.Callable[..., int]]:
    """Start the example app with ``config`` on loopback; return its port.

    A fresh copy of the example module per app, so the module-level
    ``gosession`` object takes the test's fake clock.
    """
    with contextlib.ExitStack() as stack:
        def start(**config: t.Any) -> int:
            module = load_example()
            module.gosession.clock = clock
            app = module.create_app({"GOSESSION_PROVIDER": "memory", "GOSESSION_GC_INTERVAL": 0, **config})
            stack.callback(app.extensions["gosession"].close)
            return stack.enter_context(serve(app))

        yield start


def greeting(page: t.Any, text: str) -> None:
    """Wait (bounded) until the page greets ``text``."""
    expect(page.locator("#greeting")).to_have_text(text, timeout=TIMEOUT)


def count(page: t.Any) -> int:
    return int(page.locator("#count").inner_text(timeout=TIMEOUT))


def log_in(page: t.Any, name: str = "gopher") -> None:
    page.goto("/login")
    page.fill("#username", name)
    page.click("#submit")
    greeting(page, f"Hello, {name}")


def test_login_count_and_logout(chromium: t.Any, run_example: t.Callable[..., int]) -> None:
    port = run_example()
    with loopback(chromium, port) as tab:
        page = tab.page
        page.goto("/")
        greeting(page, "Hello, guest")
        assert count(page) == 1
        screenshot(page, "login-1-guest")

        page.click("#login-link")
        expect(page).to_have_url(f"{tab.origin}/login", timeout=TIMEOUT)
        field = page.locator("input[name=gosession_token]")
        assert field.get_attribute("type") == "hidden"
        token = field.get_attribute("value")
        assert token and len(token) >= 32
        screenshot(page, "login-2-form")

        # The token is what makes the form work: a tampered one is refused.
        field.evaluate("el => { el.value = 'forged' }")
        page.fill("#username", "mallory")
        with page.expect_navigation(timeout=TIMEOUT) as refused:
            page.click("#submit")
        assert refused.value is not None and refused.value.status == 400
        screenshot(page, "login-3-forged-token-refused")

        page.goto("/login")
        assert page.locator("input[name=gosession_token]").get_attribute("value") == token
        before = tab.cookie()
        assert before is not None
        page.fill("#username", "gopher")
        page.click("#submit")
        greeting(page, "Hello, gopher")
        expect(page.locator(".flash")).to_have_text("Welcome, gopher!", timeout=TIMEOUT)
        assert count(page) == 2  # the refused post changed nothing
        after = tab.cookie()
        assert after is not None and after["value"] != before["value"]  # @rotate_sid at login
        screenshot(page, "login-4-welcome")

        page.reload()
        greeting(page, "Hello, gopher")
        assert count(page) == 3
        page.goto("/")
        greeting(page, "Hello, gopher")
        assert count(page) == 4
        assert page.locator(".flash").count() == 0
        screenshot(page, "login-5-counting")

        # Logout posts the form with its token; the session is destroyed.
        page.click("#logout")
        greeting(page, "Hello, guest")
        expect(page.locator(".flash")).to_have_text("You are logged out.", timeout=TIMEOUT)
        assert count(page) == 1
        screenshot(page, "login-6-logged-out")
        page.reload()
        greeting(page, "Hello, guest")
        assert count(page) == 2


def test_session_cookie_is_httponly(chromium: t.Any, run_example: t.Callable[..., int]) -> None:
    port = run_example()
    with loopback(chromium, port) as tab:
        page = tab.page
        log_in(page)
        jar = tab.cookie()
        assert jar is not None, "the browser's cookie jar holds the session cookie"
        assert jar["httpOnly"] is True
        assert jar["sameSite"] == "Lax"
        assert COOKIE not in page.evaluate("document.cookie")

        # Script can neither read the id nor overwrite it.
        page.evaluate(f"document.cookie = '{COOKIE}=forged; path=/'")
        assert COOKIE not in page.evaluate("document.cookie")
        still = tab.cookie()
        assert still is not None and still["value"] == jar["value"]
        page.reload()
        greeting(page, "Hello, gopher")
        screenshot(page, "httponly-1-logged-in")


def test_rotation_keeps_the_user_logged_in(chromium: t.Any, run_example: t.Callable[..., int],
                                           clock: FakeClock) -> None:
    port = run_example(GOSESSION_ROTATE_AFTER=ROTATE_AFTER, GOSESSION_ROTATE_GRACE=GRACE)
    with captured() as seen, loopback(chromium, port) as tab:
        page = tab.page
        log_in(page)
        assert count(page) == 1
        first = tab.cookie()
        assert first is not None
        screenshot(page, "rotation-1-logged-in")

        page.reload()  # too early: same id
        greeting(page, "Hello, gopher")
        assert count(page) == 2
        assert tab.cookie()["value"] == first["value"]  # type: ignore[index]

        ids = [first["value"]]
        for n in (3, 4):
            clock.advance(ROTATE_AFTER + 1)
            page.reload()
            greeting(page, "Hello, gopher")
            assert count(page) == n  # the data moved with the id
            jar = tab.cookie()
            assert jar is not None and jar["httpOnly"] is True
            assert jar["value"] not in ids
            ids.append(jar["value"])
            screenshot(page, f"rotation-{n - 1}-rotated")
        assert len(named(seen, "session_rotated")) == 3  # login plus two by age
        assert [s["reason"] for s in named(seen, "session_rotated")][1:] == ["age", "age"]

        # The logout form carries the rotated token and still works.
        page.click("#logout")
        greeting(page, "Hello, guest")
        assert count(page) == 1
        screenshot(page, "rotation-4-logged-out")


def test_stolen_cookie_dies_after_rotation_and_grace(chromium: t.Any, run_example: t.Callable[..., int],
                                                     clock: FakeClock) -> None:
    # GOSESSION_REVOKE_ON_REUSE is left at its default (True).
    port = run_example(GOSESSION_ROTATE_AFTER=ROTATE_AFTER, GOSESSION_ROTATE_GRACE=GRACE)
    with captured() as seen, loopback(chromium, port) as victim, loopback(chromium, port) as thief:
        log_in(victim.page)
        assert count(victim.page) == 1
        stolen = victim.cookie()
        assert stolen is not None
        screenshot(victim.page, "hijack-1-victim-logged-in")

        # The thief copies the cookie into another browser and gets in,
        # before the victim's next rotation: the Go chapter's attack.
        assert thief.cookie() is None
        thief.context.add_cookies([stolen])  # type: ignore[list-item]
        thief.page.goto("/")
        greeting(thief.page, "Hello, gopher")
        assert count(thief.page) == 2  # the victim's own session
        screenshot(thief.page, "hijack-2-thief-before-rotation")

        # The victim's next page load after ROTATE_AFTER moves the session.
        clock.advance(ROTATE_AFTER + 1)
        victim.page.reload()
        greeting(victim.page, "Hello, gopher")
        assert count(victim.page) == 3
        rotated = victim.cookie()
        assert rotated is not None and rotated["value"] != stolen["value"]
        screenshot(victim.page, "hijack-3-victim-rotated")

        # Past the grace window the old id is theft: the thief gets nothing.
        clock.advance(GRACE + 1)
        assert thief.cookie()["value"] == stolen["value"]  # type: ignore[index]
        thief.page.reload()
        greeting(thief.page, "Hello, guest")
        assert count(thief.page) == 1
        assert thief.page.locator("#logout").count() == 0
        # Whoever presented the old id is told why the session is gone.
        expect(thief.page.locator("#revoked-banner")).to_contain_text(
            "Your session was revoked because an old id was reused", timeout=TIMEOUT)
        fresh = thief.cookie()
        assert fresh is not None and fresh["value"] not in (stolen["value"], rotated["value"])
        screenshot(thief.page, "hijack-4-thief-after-grace")
        hijacks = named(seen, "hijack_suspected")
        assert len(hijacks) == 1 and hijacks[0]["reason"] == "reuse" and hijacks[0]["revoked"] is True

        # And with GOSESSION_REVOKE_ON_REUSE the victim's session is gone too,
        # and the victim, holding the newest id, is told why (once).
        victim.page.reload()
        greeting(victim.page, "Hello, guest")
        assert count(victim.page) == 1
        assert victim.cookie()["value"] != rotated["value"]  # type: ignore[index]
        expect(victim.page.locator("#revoked-banner")).to_contain_text(
            "Your session was revoked because an old id was reused", timeout=TIMEOUT)
        screenshot(victim.page, "hijack-5-victim-revoked")
        victim.page.reload()
        greeting(victim.page, "Hello, guest")
        assert count(victim.page) == 2 and victim.page.locator("#revoked-banner").count() == 0
        thief.page.reload()
        assert thief.page.locator("#revoked-banner").count() == 0


# -- "Your devices": one browser signs the others out ------------------------------


def devices(page: t.Any) -> t.Any:
    """Open "Your devices" from the navigation; return its rows."""
    page.click("#nav-devices")
    expect(page).to_have_title("Your devices", timeout=TIMEOUT)
    return page.locator("#devices tr.device")


def signed_out(tab: t.Any, name: str) -> None:
    """The tab's next page shows it signed out, and it cannot reach the devices page."""
    tab.page.goto("/")
    greeting(tab.page, "Hello, guest")
    assert count(tab.page) == 1  # a fresh, empty session
    assert tab.page.locator("#nav-devices").count() == 0
    screenshot(tab.page, name)
    tab.page.goto("/devices")
    expect(tab.page.locator(".flash")).to_have_text("Log in to see your devices.", timeout=TIMEOUT)


def test_devices_page_signs_out_another_browser(chromium: t.Any, run_example: t.Callable[..., int],
                                               clock: FakeClock) -> None:
    port = run_example()
    with captured() as seen, loopback(chromium, port) as a, loopback(chromium, port) as b:
        log_in(a.page)
        clock.advance(60)  # B signs in a minute later: listed first, newest first
        log_in(b.page)
        b_cookie = b.cookie()
        assert b_cookie is not None

        rows = devices(a.page)
        expect(rows).to_have_count(2, timeout=TIMEOUT)
        current = a.page.locator("#devices tr.device.current")
        expect(current).to_have_count(1, timeout=TIMEOUT)
        expect(current.locator(".this-device")).to_have_text("This device", timeout=TIMEOUT)
        for row in rows.all():
            assert row.locator(".browser").inner_text().startswith("Headless Chrome ")
            assert row.locator(".os").inner_text() == "Linux"
            assert row.locator(".address").inner_text() == "127.0.0.0/24"
            assert row.locator(".last-seen").inner_text().endswith(" UTC")
        # B's row is the one A did not mark: the newer login, listed first.
        other = a.page.locator("#devices tr.device:not(.current)")
        expect(other).to_have_count(1, timeout=TIMEOUT)
        assert rows.first.get_attribute("data-handle") == other.get_attribute("data-handle")
        screenshot(a.page, "devices-before")

        # B, meanwhile, sees the same two sessions, the other one marked.
        devices(b.page)
        mine = b.page.locator("#devices tr.device.current").get_attribute("data-handle")
        assert mine == other.get_attribute("data-handle")
        screenshot(b.page, "devices-b-before")

        # A signs B out with B's button (a POST carrying A's token).
        other.locator("button.sign-out").click()
        expect(a.page.locator(".flash")).to_have_text("That device is signed out.", timeout=TIMEOUT)
        expect(rows).to_have_count(1, timeout=TIMEOUT)
        expect(a.page.locator("#devices tr.device.current")).to_have_count(1, timeout=TIMEOUT)
        assert a.page.locator("#sign-out-others").count() == 0  # nothing else to sign out
        screenshot(a.page, "devices-after-revoke")
        assert [s["reason"] for s in named(seen, "session_destroyed")] == ["revoked"]

        # B still holds its cookie, but it opens nothing any more.
        assert b.cookie()["value"] == b_cookie["value"]  # type: ignore[index]
        signed_out(b, "device-b-signed-out")

        # A is still signed in.
        a.page.goto("/")
        greeting(a.page, "Hello, gopher")


def test_sign_out_everywhere_else(chromium: t.Any, run_example: t.Callable[..., int]) -> None:
    port = run_example()
    with loopback(chromium, port) as a, loopback(chromium, port) as b, loopback(chromium, port) as c:
        for tab in (a, b, c):
            log_in(tab.page)
        expect(devices(b.page)).to_have_count(3, timeout=TIMEOUT)
        screenshot(b.page, "devices-everywhere-before")

        b.page.click("#sign-out-others")
        expect(b.page.locator(".flash")).to_have_text("Signed out 2 other devices.", timeout=TIMEOUT)
        rows = b.page.locator("#devices tr.device")
        expect(rows).to_have_count(1, timeout=TIMEOUT)
        assert rows.first.get_attribute("class") == "device current"
        screenshot(b.page, "devices-everywhere-after")

        signed_out(a, "device-a-signed-out-everywhere")
        signed_out(c, "device-c-signed-out-everywhere")
        b.page.goto("/")
        greeting(b.page, "Hello, gopher")  # the one that clicked stays signed in
        # Its own button signs it out too, through /logout.
        devices(b.page).first.locator("button.sign-out").click()
        greeting(b.page, "Hello, guest")
        expect(b.page.locator(".flash")).to_have_text("You are logged out.", timeout=TIMEOUT)
        screenshot(b.page, "devices-own-sign-out")


# -- What the home page shows: label, ages, countdown, token, store ------------------


def shown_label(page: t.Any) -> str:
    return page.locator("#session-label").inner_text(timeout=TIMEOUT)


def label_of(tab: t.Any) -> str:
    """The public label of the id in the tab's cookie jar."""
    jar = tab.cookie()
    assert jar is not None
    return label(store_key(jar["value"].removesuffix(".p")))


def test_home_shows_label_ages_countdown_token_and_store(chromium: t.Any, run_example: t.Callable[..., int],
                                                        clock: FakeClock) -> None:
    port = run_example(GOSESSION_ROTATE_AFTER=ROTATE_AFTER, GOSESSION_ROTATE_GRACE=GRACE)
    with loopback(chromium, port) as tab:
        page = tab.page
        page.goto("/")
        greeting(page, "Hello, guest")
        jar = tab.cookie()
        assert jar is not None
        assert shown_label(page) == label_of(tab) and len(shown_label(page)) == 12
        assert jar["value"] not in page.content()  # the id itself is never on the page
        token = page.locator("#token").inner_text()
        assert token == page.locator("#form-with-token input[name=gosession_token]").get_attribute("value")
        assert page.locator("#form-without-token input[name=gosession_token]").count() == 0
        countdown = page.locator("#rotates-in")
        assert countdown.get_attribute("data-countdown") == str(ROTATE_AFTER)
        expect(countdown).to_have_text("in 59 s", timeout=TIMEOUT)  # the script counts down
        expect(page.locator("#store-name")).to_have_text("memory", timeout=TIMEOUT)
        screenshot(page, "home-1-guest")

        clock.advance(25)
        log_in(page)
        expect(page.locator("#session-age")).to_have_attribute("data-seconds", "25", timeout=TIMEOUT)
        assert page.locator("#id-age").get_attribute("data-seconds") == "0"  # login moved it to a new id
        assert shown_label(page) == label_of(tab)
        assert page.locator("#token").inner_text() != token  # and gave it a new token
        screenshot(page, "home-2-logged-in")


def test_rotation_changes_the_label_and_an_older_form_still_submits(
        chromium: t.Any, run_example: t.Callable[..., int], clock: FakeClock) -> None:
    port = run_example(GOSESSION_ROTATE_AFTER=ROTATE_AFTER, GOSESSION_ROTATE_GRACE=GRACE)
    with captured() as seen, loopback(chromium, port) as tab:
        page = tab.page
        log_in(page)
        first = shown_label(page)
        assert page.locator("#rotated-now").count() == 0
        clock.advance(ROTATE_AFTER - 5)
        page.reload()
        assert shown_label(page) == first
        assert page.locator("#rotates-in").get_attribute("data-countdown") == "5"
        screenshot(page, "rotation-countdown-5s")

        clock.advance(6)
        page.reload()  # the first request past the deadline moves the session
        expect(page.locator("#rotated-now")).to_be_visible(timeout=TIMEOUT)
        second = shown_label(page)
        assert second != first and second == label_of(tab)
        assert page.locator("#rotates-in").get_attribute("data-countdown") == str(ROTATE_AFTER)
        assert page.locator("#session-age").get_attribute("data-seconds") == str(ROTATE_AFTER + 1)
        screenshot(page, "rotation-label-changed")

        # A form rendered before the next rotation still submits after it.
        clock.advance(ROTATE_AFTER + 1)
        page.fill("#note", "hello")
        page.click("#submit-with-token")
        expect(page.locator(".flash")).to_have_text(
            "Form accepted: it carried this session's token. You wrote: hello", timeout=TIMEOUT)
        third = shown_label(page)
        assert third not in (first, second) and third == label_of(tab)
        greeting(page, "Hello, gopher")
        screenshot(page, "rotation-form-accepted")
        assert [s["reason"] for s in named(seen, "session_rotated")] == ["privilege", "age", "age"]
        assert [s["new"] for s in named(seen, "session_rotated")] == [first, second, third]


def test_a_form_without_the_token_is_refused_with_an_explanation(
        chromium: t.Any, run_example: t.Callable[..., int]) -> None:
    port = run_example()
    with captured() as seen, loopback(chromium, port) as tab:
        page = tab.page
        log_in(page)
        assert count(page) == 1
        with page.expect_navigation(timeout=TIMEOUT) as refused:
            page.click("#submit-without-token")
        assert refused.value is not None and refused.value.status == 400
        expect(page).to_have_title("Request refused", timeout=TIMEOUT)
        expect(page.locator("#error-description")).to_have_text(
            "The session token is missing from this request.", timeout=TIMEOUT)
        expect(page.locator("#store-name")).to_have_text("memory", timeout=TIMEOUT)
        screenshot(page, "token-refused")
        assert [s["reason"] for s in named(seen, "token_rejected")] == ["missing"]

        page.click("#back-home")
        greeting(page, "Hello, gopher")  # still signed in: the refused post changed nothing
        assert count(page) == 2
        assert page.locator(".flash").count() == 0


@pytest.mark.parametrize("store", ["redis", "memcached"])
def test_every_page_names_the_store(chromium: t.Any, run_example: t.Callable[..., int],
                                    request: pytest.FixtureRequest, store: str) -> None:
    port = run_example(**request.getfixturevalue(f"backend_{store}"))
    with loopback(chromium, port) as tab:
        page = tab.page
        log_in(page)
        for path, title in (("/", "gosession demo"), ("/login", "Log in"), ("/devices", "Your devices"),
                            ("/store", "Session store"), ("/nowhere", "404 Not Found")):
            page.goto(path)
            expect(page).to_have_title(title, timeout=TIMEOUT)
            expect(page.locator("#store-name")).to_have_text(store, timeout=TIMEOUT)
            assert page.locator("#store-where").inner_text().startswith("127.0.0.1:")
            screenshot(page, f"store-{store}-{path.strip('/') or 'home'}")
        # Memcached keeps no per-user index: the devices page says so.
        page.goto("/devices")
        assert (page.locator("#no-index").count() == 1) is (store == "memcached")
        page.goto("/store")
        current = page.locator("#stores tr.store-row.current")
        expect(current).to_have_count(1, timeout=TIMEOUT)
        assert current.get_attribute("data-store") == store
        assert page.locator("#stores tr.store-row").count() == 5
        page.click("#store")
        expect(page).to_have_title("Session store", timeout=TIMEOUT)
