"""The example app: login with the token and rotation, count, logout."""
from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "example" / "app.py"


@pytest.fixture
def example():
    spec = importlib.util.spec_from_file_location("gosession_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = module.create_app({"TESTING": True, "GOSESSION_GC_INTERVAL": 0})
    yield app
    app.extensions["gosession"].close()


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
