"""Forms survive rotation, with the token check on, in real Chromium.

* A form rendered before an age rotation still submits after it: an age
  rotation keeps the token.
* ``@rotate_sid`` on the usual GET+POST login view (Flask-WTF style): the
  form it renders carries the token of the id the next request will hold,
  so the login succeeds, and so does a retry after a wrong password.

Each of these failed (HTTP 400 on submit) before tokens survived age
rotation and ``@rotate_sid`` decided the rotation before the view ran.
"""
from __future__ import annotations

import typing as t

import pytest
from flask import Flask, render_template_string, request, session

from browser import TIMEOUT, expect, loopback, screenshot
from clock import FakeClock
from flask_gosession import GoSession, rotate_sid
from liveserver import serve

pytestmark = pytest.mark.browser

ROTATE_AFTER = 60

PAGE = """<!doctype html><title>{{ title }}</title>
<p id="state">{{ state }}</p>
<form method="post" action="{{ action }}">
  {{ gosession_token_field() }}
  <input name="username" value="alice">
  <input name="password" id="password" value="{{ password }}">
  <button id="submit">Submit</button>
</form>"""


def make_app(clock: FakeClock, tmp_path: t.Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        SECRET_KEY="test", GOSESSION_TOKEN_CHECK=True, GOSESSION_GC_INTERVAL=0,
        GOSESSION_ROTATE_AFTER=ROTATE_AFTER, GOSESSION_ROTATE_GRACE=10,
    )
    GoSession(app, clock=clock)

    @app.route("/login", methods=["GET", "POST"])
    @rotate_sid
    def login() -> str:
        if request.method == "POST":
            if request.form.get("password") == "secret":
                session["user"] = request.form["username"]
                return render_template_string(PAGE, title="in", state=f"welcome {session['user']}",
                                              action="/note", password="")
            return render_template_string(PAGE, title="retry", state="wrong password",
                                          action="/login", password="secret")
        return render_template_string(PAGE, title="login", state="please log in",
                                      action="/login", password="nope")

    @app.get("/note")
    def note_form() -> str:
        session["seen"] = True
        return render_template_string(PAGE, title="note", state="form rendered",
                                      action="/note", password="")

    @app.post("/note")
    def note() -> str:
        return render_template_string(PAGE, title="noted", state=f"noted for {session.get('user')}",
                                      action="/note", password="")

    @app.get("/elsewhere")
    def elsewhere() -> str:
        return f"<p id='state'>hello {session.get('user')}</p>"

    return app


def state(page: t.Any, text: str) -> None:
    expect(page.locator("#state")).to_have_text(text, timeout=TIMEOUT)


def test_login_form_of_a_rotating_view_submits_and_retries(chromium, clock, tmp_path):
    app = make_app(clock, tmp_path)
    with serve(app) as port, loopback(chromium, port) as tab:
        page = tab.page
        page.goto("/note")  # an anonymous session exists before login
        state(page, "form rendered")
        page.goto("/login")
        state(page, "please log in")
        before = tab.cookie()
        page.click("#submit")  # wrong password: the form comes back
        state(page, "wrong password")
        screenshot(page, "forms-1-wrong-password")
        page.click("#submit")  # the retry carries the token of the new id
        state(page, "welcome alice")
        after = tab.cookie()
        assert before is not None and after is not None and after["value"] != before["value"]
        page.click("#submit")  # the welcome page's form works too
        state(page, "noted for alice")
        screenshot(page, "forms-2-logged-in")
    app.extensions["gosession"].close()


def test_form_rendered_before_an_age_rotation_submits_after_it(chromium, clock, tmp_path):
    app = make_app(clock, tmp_path)
    with serve(app) as port, loopback(chromium, port) as tab:
        page = tab.page
        page.goto("/note")
        state(page, "form rendered")
        first = tab.cookie()
        clock.advance(ROTATE_AFTER + 1)
        other = tab.context.new_page()  # another tab rotates the id by age
        other.goto("/elsewhere")
        rotated = tab.cookie()
        assert first is not None and rotated is not None and rotated["value"] != first["value"]
        clock.advance(20)  # past the grace window: only the new id works
        page.click("#submit")  # the old form, with the new cookie
        state(page, "noted for None")
        screenshot(page, "forms-3-after-age-rotation")
        other.close()
    app.extensions["gosession"].close()
