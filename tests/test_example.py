"""The example app: login with the token and rotation, count, logout, and
the "Your devices" page on every store that keeps a per-user index."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import servers
from backends import ALL_BACKENDS
from examples import ROOT as EXAMPLE_ROOT
from examples import load_example, stores
from flask_gosession.ids import label, store_key
from liveserver import request as get

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

    def make(clock=None, **config):
        module = load_example()
        if clock is not None:
            module.gosession.clock = clock
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


# -- What the pages show: label, token, the refused form, the store ----------------------


def shown(html: str, element: str) -> str:
    return re.search(rf'id="{element}"[^>]*>([^<]*)<', html).group(1)


def test_the_home_page_shows_the_label_never_the_id(example):
    client = example.test_client()
    page = client.get("/").text
    sid = client.get_cookie("gosessionid").value
    assert shown(page, "session-label") == label(store_key(sid))
    assert sid not in page
    assert shown(page, "token") == token(page)  # the token the forms carry
    assert 'data-countdown="900"' in page  # GOSESSION_ROTATE_AFTER's default


def test_a_form_without_the_token_gets_the_explained_400_and_changes_nothing(example):
    client = example.test_client()
    page = client.get("/").text
    response = client.post("/demo/form", data={"note": "x"})
    assert response.status_code == 400
    assert "<title>Request refused</title>" in response.text
    assert shown(response.text, "error-description") == "The session token is missing from this request."
    forged = client.post("/demo/form", data={"note": "x", "gosession_token": "forged"})
    assert forged.status_code == 400
    assert "invalid or has already been used" in shown(forged.text, "error-description")
    accepted = client.post("/demo/form", data={"note": "<b>hi</b>", "gosession_token": token(page)},
                           follow_redirects=True).text
    assert "You wrote: &lt;b&gt;hi&lt;/b&gt;" in accepted
    assert count(accepted) == 2  # the refused posts changed nothing
    assert client.get("/nowhere").status_code == 404


STORE_NAMES = {"memory": "memory", "file": "file", "sql_sqlite": "sqlite", "sql_postgresql": "postgresql",
               "sql_mariadb": "mysql", "redis": "redis", "redis_cluster": "redis", "memcached": "memcached",
               "memcached_pair": "memcached"}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_every_page_names_the_store(request, make_example, backend):
    app = make_example(**request.getfixturevalue(f"backend_{backend}"))
    client = app.test_client()
    for path in ("/", "/login", "/store"):
        page = client.get(path).text
        assert shown(page, "store-name") == STORE_NAMES[backend], path
        assert "@" not in shown(page, "store-where")  # no user name or password from a URL
    current = re.findall(r'class="store-row current" data-store="([^"]+)"', page)
    assert current == ([STORE_NAMES[backend]] if backend in ("memory", "file", "sql_sqlite", "redis",
                                                             "redis_cluster", "memcached", "memcached_pair")
                       else [])  # PostgreSQL and MariaDB are sql stores the EXAMPLE_STORE list lacks


@pytest.mark.parametrize(("choice", "provider"), [("memory", "memory"), ("file", "file"), ("sqlite", "sql"),
                                                  ("redis", "redis"), ("memcached", "memcached")])
def test_example_store_selects_the_provider(choice, provider):
    assert stores.from_environment({"EXAMPLE_STORE": f" {choice.upper()} "}) == {"GOSESSION_PROVIDER": provider}
    assert stores.from_environment({"GOSESSION_PROVIDER": "file"}) == {"GOSESSION_PROVIDER": "file"}
    assert stores.from_environment({}) == {"GOSESSION_PROVIDER": "memory"}
    config = stores.environment_config({"EXAMPLE_STORE": choice, "GOSESSION_MAX_LIFETIME": "60",
                                        "GOSESSION_MEMCACHED_SERVERS": "a:1, b:2", "OTHER": "x"})
    assert config == {"GOSESSION_PROVIDER": provider, "GOSESSION_MAX_LIFETIME": "60",
                      "GOSESSION_MEMCACHED_SERVERS": ["a:1", "b:2"]}
    with pytest.raises(stores.UnknownStore, match="choose one of memory, file, sqlite, redis, memcached"):
        stores.from_environment({"EXAMPLE_STORE": "mongo"})


def test_store_locations_never_show_credentials():
    _host = stores._host
    assert _host("redis://user:s3cret@10.0.0.5:6380/2?ssl=1") == "10.0.0.5:6380/2"
    assert _host("postgresql+psycopg://postgres:pw@db.internal/test") == "db.internal/test"
    assert _host("sqlite:////srv/app/gosession.sqlite3") == "/srv/app/gosession.sqlite3"
    assert _host("sqlite:///instance/gosession.sqlite3") == "instance/gosession.sqlite3"
    assert _host("sqlite://") == "in memory"
    assert _host("unix:///run/redis.sock") == "/run/redis.sock"


# -- "Your session was revoked because an old id was reused" -------------------------------

BANNER = 'id="revoked-banner"'


@pytest.mark.parametrize("backend", ["memory", "file", "redis"])
def test_a_reused_old_id_revokes_the_session_and_both_browsers_are_told(request, make_example, clock, backend):
    app = make_example(clock, GOSESSION_ROTATE_AFTER=60, GOSESSION_ROTATE_GRACE=10,
                       **request.getfixturevalue(f"backend_{backend}"))
    victim = signed_in(app, FIREFOX)
    stolen = victim.get_cookie("gosessionid").value
    for _ in range(2):  # two rotations: the notice follows the whole chain
        clock.advance(61)
        assert "Hello, gopher" in victim.get("/").text
    newest = victim.get_cookie("gosessionid").value
    assert newest != stolen
    clock.advance(11)  # past the grace window: the old id now means theft

    thief = app.test_client()
    thief.set_cookie("gosessionid", stolen)
    page = thief.get("/").text
    assert BANNER in page and "Your session was revoked because an old id was reused" in page
    assert "Hello, guest" in page and count(page) == 1
    assert BANNER not in thief.get("/").text  # said once

    page = victim.get("/").text
    assert BANNER in page and "Hello, guest" in page and count(page) == 1
    assert BANNER not in victim.get("/").text

    # A cookie that is merely unknown (expired, logged out) gets no such message.
    stranger = app.test_client()
    stranger.set_cookie("gosessionid", "A" * 43)
    assert BANNER not in stranger.get("/").text


# -- example/README.md: its commands run -----------------------------------------------

EXAMPLE_README = (EXAMPLE_ROOT / "example" / "README.md").read_text()
SETUP = "python3 -m venv .venv && .venv/bin/python -m pip install -q -e '.[all]' && "
STORE_COMMANDS = re.findall(rf"^{re.escape(SETUP)}(?:EXAMPLE_STORE=(\w+) )?\.venv/bin/flask --app example/app.py run$",
                            EXAMPLE_README, re.M)


def test_the_example_readme_has_one_command_per_store_and_gunicorn():
    assert sorted(choice or "memory" for choice in STORE_COMMANDS) == sorted(stores.STORES)
    assert ("\npython3 -m venv .venv && .venv/bin/python -m pip install -q -e '.[all,test]' && "
            "EXAMPLE_STORE=redis .venv/bin/gunicorn -w 4 -b 127.0.0.1:8000 example.app:app\n") in EXAMPLE_README
    readme = (EXAMPLE_ROOT / "README.md").read_text()
    assert f"\n{SETUP}.venv/bin/flask --app example/app.py run\n" in readme  # "Run the example"
    assert "example/README.md" in readme


@pytest.mark.parametrize("choice", [c or "memory" for c in STORE_COMMANDS])
def test_each_store_command_serves_the_example(request, tmp_path, choice):
    """``flask --app example/app.py run`` as the README has it (with the test
    servers' addresses), answering with that store named on the page."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOSESSION_", "EXAMPLE_", "FLASK_"))}
    env.update(EXAMPLE_STORE=choice, GOSESSION_GC_INTERVAL="0",
               GOSESSION_FILE_DIR=str(tmp_path / "sessions"),
               GOSESSION_SQL_URL=f"sqlite:///{tmp_path / 'gosession.sqlite3'}")
    if choice in ("redis", "memcached"):
        backend = request.getfixturevalue(f"backend_{choice}")
        env.update({k: v if isinstance(v, str) else ",".join(v) for k, v in backend.items()
                    if k != "GOSESSION_PROVIDER"})
    port = servers.free_port()
    log = tmp_path / "flask.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "example/app.py", "run", "--port", str(port)],
                                cwd=EXAMPLE_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        for _ in range(300):
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                status, page, cookie = get(port, "/", timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail(log.read_text(errors="replace"))
        assert status == 200 and shown(page, "store-name") == choice
        assert count(get(port, "/", cookie)[1]) == 2
    finally:
        proc.terminate()
        proc.wait(30)
