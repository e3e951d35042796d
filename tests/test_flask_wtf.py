"""One CSRF system when Flask-WTF's ``CSRFProtect`` is on the app.

With ``GOSESSION_TOKEN_CHECK = "auto"`` (the default) our check defers to
Flask-WTF: forms need only ``hidden_tag()``, JavaScript only ``X-CSRFToken``,
an API view only ``@csrf.exempt``. Real Flask-WTF, over the test client and
over real HTTP.
"""
from __future__ import annotations

import re
import typing as t
import urllib.parse

import pytest
from flask import Flask, render_template_string, session
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from wtforms import StringField

from clock import FakeClock
from flask_gosession import GoSession, regenerate, rotate_sid
from helpers import cookie_value
from liveserver import request as http
from liveserver import serve

ROTATE_AFTER = 60

FORM = """<form method="post">{{ form.hidden_tag() }}{{ form.name() }}</form>"""
OURS = """<form method="post">{{ gosession_token_field() }}</form>"""
JS = """<meta name="csrf-token" content="{{ csrf_token() }}">"""


class NameForm(FlaskForm):
    name = StringField()


def make_app(tmp_path: t.Any, clock: FakeClock | None = None, *, csrf_first: bool = False,
             with_wtf: bool = True, **config: t.Any) -> Flask:
    """The app a user writes: both libraries, their defaults, one CSRF system."""
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="test", GOSESSION_GC_INTERVAL=0,
                      GOSESSION_ROTATE_AFTER=ROTATE_AFTER, GOSESSION_ROTATE_GRACE=10, **config)
    csrf = CSRFProtect()
    if with_wtf and csrf_first:
        csrf.init_app(app)
    GoSession(app, clock=clock or FakeClock())
    if with_wtf and not csrf_first:
        csrf.init_app(app)

    @app.route("/form", methods=["GET", "POST"])
    def form() -> str:
        f = NameForm()
        if f.validate_on_submit():
            session["name"] = f.name.data
            return f"saved {f.name.data}"
        return render_template_string(FORM, form=f)

    @app.route("/ours", methods=["GET", "POST"])
    def ours() -> str:
        return render_template_string(OURS)

    @app.get("/js")
    def js() -> str:
        return render_template_string(JS)

    @app.post("/api")
    def api() -> str:
        session["api"] = True
        return "api ok"

    @app.post("/ping")
    @csrf.exempt
    def ping() -> str:
        return "pong"

    @app.route("/login", methods=["GET", "POST"])
    @rotate_sid
    def login() -> str:
        f = NameForm()
        if f.validate_on_submit():
            session["user"] = f.name.data
        return render_template_string(FORM, form=f)

    @app.post("/promote")
    def promote() -> str:
        regenerate()
        session["admin"] = True
        return render_template_string(FORM, form=NameForm())

    return app


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


@pytest.mark.parametrize("csrf_first", [False, True], ids=["csrf-after", "csrf-before"])
def test_one_field_one_header_one_exemption(tmp_path, csrf_first):
    app = make_app(tmp_path, csrf_first=csrf_first)
    client = app.test_client()
    html = client.get("/form").text
    assert "gosession_token" not in html
    token = csrf_of(html)

    # A form: its one hidden field.
    response = client.post("/form", data={"csrf_token": token, "name": "alice"})
    assert response.status_code == 200 and response.text == "saved alice"
    # JavaScript: its one header.
    response = client.post("/api", headers={"X-CSRFToken": token})
    assert response.status_code == 200
    # An API view: its one decorator, and no session or token at all.
    response = app.test_client().post("/ping")
    assert response.status_code == 200 and response.text == "pong"


def test_flask_wtf_still_rejects_bad_requests(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    token = csrf_of(client.get("/form").text)
    assert client.post("/form", data={"name": "x"}).status_code == 400
    assert client.post("/api").status_code == 400
    assert client.post("/api", headers={"X-CSRFToken": token[:-2] + "xx"}).status_code == 400
    # Our header is not a second way in.
    ours = client.post("/api", headers={"X-GoSession-Token": token})
    assert ours.status_code == 400


def test_our_template_helpers_render_flask_wtf_token(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    html = client.get("/ours").text
    assert html.startswith('<form method="post"><input type="hidden" name="csrf_token" value="')
    token = csrf_of(html)
    # A template written for flask-gosession submits under Flask-WTF.
    assert client.post("/form", data={"csrf_token": token, "name": "bob"}).text == "saved bob"
    with app.test_request_context():
        from flask_gosession import gosession_token

        assert app.extensions["gosession"].guard.defers()
        assert gosession_token() == app.jinja_env.globals["csrf_token"]()


def test_forced_check_keeps_ours_alongside_flask_wtf(tmp_path):
    app = make_app(tmp_path, GOSESSION_TOKEN_CHECK=True)
    client = app.test_client()
    token = csrf_of(client.get("/form").text)
    # Only Flask-WTF's field: our check (forced) refuses it.
    assert client.post("/form", data={"csrf_token": token, "name": "a"}).status_code == 400
    html = client.get("/ours").text
    assert 'name="gosession_token"' in html


def test_auto_without_flask_wtf_checks_ours(tmp_path):
    app = make_app(tmp_path, with_wtf=False)
    client = app.test_client()
    html = client.get("/ours").text
    assert 'name="gosession_token"' in html
    assert client.post("/api").status_code == 400
    token = re.search(r'value="([^"]+)"', html).group(1)
    assert client.post("/api", data={"gosession_token": token}).status_code == 200


def test_disabled_check_renders_ours_and_checks_nothing(tmp_path):
    app = make_app(tmp_path, with_wtf=False, GOSESSION_TOKEN_CHECK=False)
    client = app.test_client()
    assert 'name="gosession_token"' in client.get("/ours").text
    assert client.post("/api").status_code == 200


def test_form_rendered_before_age_rotation_validates_after_it(tmp_path):
    clock = FakeClock()
    app = make_app(tmp_path, clock)
    client = app.test_client()
    token = csrf_of(client.get("/form").text)
    before = cookie_value(client)
    clock.advance(ROTATE_AFTER + 1)
    client.get("/js")  # another tab: the session rotates by age
    after = cookie_value(client)
    assert after != before
    response = client.post("/form", data={"csrf_token": token, "name": "carol"})
    assert response.status_code == 200 and response.text == "saved carol"


def test_privilege_rotation_gives_a_fresh_flask_wtf_token(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    old = csrf_of(client.get("/login").text)
    with client.session_transaction() as sess:
        old_secret = sess["csrf_token"]
    sid_before = cookie_value(client)
    html = client.post("/login", data={"csrf_token": old, "name": "dave"}).text
    new = csrf_of(html)
    assert cookie_value(client) != sid_before
    with client.session_transaction() as sess:
        assert sess["user"] == "dave"
        assert sess["csrf_token"] != old_secret
    # The form rendered after the login submits; one rendered before it does not.
    assert client.post("/form", data={"csrf_token": new, "name": "d"}).text == "saved d"
    assert client.post("/form", data={"csrf_token": old, "name": "d"}).status_code == 400


def test_regenerate_in_a_view_also_drops_the_flask_wtf_secret(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    old = csrf_of(client.get("/form").text)
    new = csrf_of(client.post("/promote", headers={"X-CSRFToken": old}).text)
    assert new != old
    assert client.post("/api", headers={"X-CSRFToken": new}).status_code == 200
    assert client.post("/api", headers={"X-CSRFToken": old}).status_code == 400


def test_over_real_http(tmp_path):
    app = make_app(tmp_path)
    with serve(app) as port:
        status, html, sid = http(port, "/form")
        assert status == 200 and sid
        token = csrf_of(html)
        body = urllib.parse.urlencode({"csrf_token": token, "name": "erin"}).encode()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        status, text, _ = http(port, "/form", sid, "POST", form, body)
        assert (status, text) == (200, "saved erin")
        status, _, _ = http(port, "/api", sid, "POST", {"X-CSRFToken": token})
        assert status == 200
        status, _, _ = http(port, "/api", sid, "POST")
        assert status == 400
        status, text, _ = http(port, "/ping", None, "POST")
        assert (status, text) == (200, "pong")
