"""The example app: login with the token and rotation, count, logout, and
the "Your devices" page on every store that keeps a per-user index."""
from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

from backends import ALL_BACKENDS

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "example" / "app.py"
INDEXED = [name for name in ALL_BACKENDS if not name.startswith("memcached")]
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IOS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
EDGE = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87")


@pytest.fixture
def make_example():
    """``make_example(**config)``: the example app, with ``config`` over its defaults."""
    apps = []

    def make(**config):
        spec = importlib.util.spec_from_file_location("gosession_example", EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.app.extensions["gosession"].close()  # the module's own app
        apps.append(module.create_app({"TESTING": True, "GOSESSION_GC_INTERVAL": 0, **config}))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["gosession"].close()


@pytest.fixture
def example(make_example):
    return make_example()


def count(html: str) -> int:
    return int(re.search(r'id="count">(\d+)<', html).group(1))


def test_login_count_logout(example):
    client = example.test_client()
    assert count(client.get("/").text) == 1
    assert count(client.get("/").text) == 2
    form = client.get("/login").text
    token = re.search(r'name="gosession_token" value="([^"]+)"', form).group(1)
    before = client.get_cookie("gosessionid").value
    assert client.post("/login", data={"username": "gopher"}).status_code == 400  # no token
    page = client.post("/login", data={"username": "gopher", "gosession_token": token},
                       follow_redirects=True).text
    assert "Hello, gopher" in page and "Welcome, gopher!" in page
    assert client.get_cookie("gosessionid").value != before  # @rotate_sid
    assert count(page) == 3
    logout_token = re.search(r'name="gosession_token" value="([^"]+)"', page).group(1)
    page = client.post("/logout", data={"gosession_token": logout_token}, follow_redirects=True).text
    assert "Hello, guest" in page and "You are logged out." in page
    assert count(page) == 1  # a fresh session after logout


# -- "Your devices" --------------------------------------------------------------------


def token(html: str) -> str:
    return re.search(r'name="gosession_token" value="([^"]+)"', html).group(1)


def signed_in(app, agent: str, name: str = "gopher"):
    """A client of ``app`` with its own cookie jar and ``agent``, logged in as ``name``."""
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = agent
    page = client.post("/login", data={"username": name, "gosession_token": token(client.get("/login").text)},
                       follow_redirects=True).text
    assert f"Hello, {name}" in page
    return client


def rows(html: str) -> list[tuple[str, str, str, bool]]:
    """(handle, browser, os, this device) for each row of the devices table."""
    found = re.findall(
        r'<tr class="device( current)?" data-handle="([^"]+)">\s*<td class="browser">([^<]*)</td>'
        r'\s*<td class="os">([^<]*)</td>', html)
    return [(handle, browser, system, bool(current)) for current, handle, browser, system in found]


def is_guest(client) -> bool:
    page = client.get("/").text
    return "Hello, guest" in page and 'id="nav-devices"' not in page


@pytest.fixture(params=INDEXED)
def indexed_example(request, make_example):
    return make_example(**request.getfixturevalue(f"backend_{request.param}"))


def test_devices_lists_signs_out_one_and_everywhere_else(indexed_example):
    a = signed_in(indexed_example, FIREFOX)
    b = signed_in(indexed_example, SAFARI_IOS)
    c = signed_in(indexed_example, EDGE)
    page = a.get("/devices").text
    assert 'id="nav-devices" href="/devices"' in a.get("/").text
    listed = rows(page)
    assert [(browser, system, current) for _, browser, system, current in listed] == [
        ("Edge 126", "Windows", False), ("Safari 17", "iOS", False), ("Firefox 128", "Windows", True),
    ]  # newest first; the one asking is marked
    assert 'class="this-device"' in page and "127.0.0.0/24" in page and " UTC</td>" in page
    # This device's own button is the logout form; the others revoke by handle.
    assert page.count('action="/logout"') == 1
    handles = [handle for handle, *_ in listed]
    assert all(f'action="/devices/{h}/sign-out"' in page for h in handles[:2])

    # Every form needs the session token.
    assert a.post(f"/devices/{handles[1]}/sign-out").status_code == 400
    assert a.post("/devices/sign-out-others").status_code == 400
    assert not is_guest(b)

    page = a.post(f"/devices/{handles[1]}/sign-out", data={"gosession_token": token(page)},
                  follow_redirects=True).text
    assert "That device is signed out." in page
    assert [h for h, *_ in rows(page)] == [handles[0], handles[2]]
    assert is_guest(b)
    again = a.post(f"/devices/{handles[1]}/sign-out", data={"gosession_token": token(page)},
                   follow_redirects=True).text
    assert "That device was already signed out." in again

    page = a.post("/devices/sign-out-others", data={"gosession_token": token(again)},
                  follow_redirects=True).text
    assert "Signed out 1 other device." in page
    assert rows(page) == [listed[2]] and 'id="sign-out-others"' not in page
    assert is_guest(c) and not is_guest(a)


def test_devices_needs_a_login_and_refuses_bad_input_without_a_500(example):
    guest = example.test_client()
    page = guest.get("/devices", follow_redirects=True).text
    assert "Log in to see your devices." in page and "<h1>Log in</h1>" in page
    form = token(guest.get("/login").text)
    for path in ("/devices/x/sign-out", "/devices/sign-out-others"):
        assert guest.post(path, data={"gosession_token": form}).headers["Location"] == "/devices"
    assert is_guest(guest)
    for name in ("", "x" * 65):
        page = guest.post("/login", data={"username": name, "gosession_token": form},
                          follow_redirects=True).text
        assert "Please enter a user name (at most 64 characters)." in page

    user = signed_in(example, FIREFOX)
    form = token(user.get("/devices").text)
    for handle in ("nope", "%00", "a" * 300):
        response = user.post(f"/devices/{handle}/sign-out", data={"gosession_token": form},
                             follow_redirects=True)
        assert response.status_code == 200 and "That device was already signed out." in response.text
    # Its own handle, posted by hand rather than through the logout button: signed out.
    own = rows(user.get("/devices").text)[0][0]
    assert user.post(f"/devices/{own}/sign-out", data={"gosession_token": form}).status_code == 302
    assert is_guest(user)


def test_the_session_limit_refuses_a_login_with_its_message(make_example):
    app = make_example(GOSESSION_MAX_SESSIONS_PER_USER=1, GOSESSION_SESSION_LIMIT_POLICY="refuse")
    signed_in(app, FIREFOX)
    late = app.test_client()
    page = late.post("/login", data={"username": "gopher", "gosession_token": token(late.get("/login").text)},
                     follow_redirects=True).text
    assert "You are already signed in on 1 device." in page and is_guest(late)


def test_memcached_logs_in_but_says_it_cannot_list_devices(make_example, backend_memcached):
    user = signed_in(make_example(**backend_memcached), FIREFOX)
    response = user.get("/devices")
    assert response.status_code == 501 and 'id="no-index"' in response.text
    form = token(user.get("/").text)
    assert user.post("/devices/sign-out-others", data={"gosession_token": form}).status_code == 501
    assert not is_guest(user)
