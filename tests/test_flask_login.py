"""Flask-Login without surprises, with the real Flask-Login.

* ``logout_user(); destroy()`` and ``destroy(); logout_user()`` both delete
  the remember-me cookie (``destroy()`` used to throw away Flask-Login's
  ``_remember = "clear"`` marker, and the next request logged the user back
  in from the cookie).
* With ``GOSESSION_FLASK_LOGIN = True`` a login (form, remember cookie or
  ``confirm_login``) rotates the id and a logout destroys the session, with
  no ``@rotate_sid`` or ``destroy()`` in the app.
"""
from __future__ import annotations

import typing as t

import pytest
from flask import Flask, jsonify, request, session
from flask_login import (
    LoginManager,
    UserMixin,
    confirm_login,
    current_user,
    fresh_login_required,
    login_fresh,
    login_required,
    login_user,
    logout_user,
)

from clock import FakeClock
from flask_gosession import ConfigError, GoSession, destroy
from flask_gosession.integrations.flask_login import install
from helpers import cookie_value, moved_away, stored

REMEMBER = "remember_token"


class User(UserMixin):
    def __init__(self, name: str) -> None:
        self.id = name


def make_app(tmp_path: t.Any, *, integration: bool, **config: t.Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="test", GOSESSION_GC_INTERVAL=0,
                      GOSESSION_TOKEN_CHECK=False, GOSESSION_FLASK_LOGIN=integration, **config)
    GoSession(app, clock=FakeClock())
    login_manager = LoginManager(app)
    login_manager.user_loader(User)

    @app.post("/login/<name>")
    def login(name: str) -> t.Any:
        login_user(User(name), remember=request.args.get("remember") == "1")
        return "in", 302, {"Location": "/me"}

    @app.get("/me")
    def me() -> t.Any:
        name = current_user.id if current_user.is_authenticated else None
        return jsonify(user=name, fresh=login_fresh(), note=session.get("note"))

    @app.get("/note/<value>")
    def note(value: str) -> str:
        session["note"] = value
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        order = request.args.get("order", "")
        if order == "destroy-first":
            destroy()
        logout_user()
        if order == "destroy-last":
            destroy()
        return "out"

    @app.get("/private")
    @login_required
    def private() -> str:
        return "private"

    @app.get("/sensitive")
    @fresh_login_required
    def sensitive() -> str:
        return "sensitive"

    @app.post("/reauth")
    @login_required
    def reauth() -> str:
        confirm_login()
        return "confirmed"

    return app


def me(client: t.Any) -> dict[str, t.Any]:
    return client.get("/me").get_json()


def remember_cookie_deleted(response: t.Any) -> bool:
    return any(h.startswith(f"{REMEMBER}=;") and "Expires=Thu, 01 Jan 1970" in h
               for h in response.headers.getlist("Set-Cookie"))


# -- remember cookie and logout, with or without the integration ----------------


@pytest.mark.parametrize("order", ["destroy-last", "destroy-first"])
def test_logout_and_destroy_clear_remember_cookie_in_either_order(tmp_path, order):
    app = make_app(tmp_path, integration=False)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    assert client.get_cookie(REMEMBER) is not None
    sid = cookie_value(client)

    response = client.post(f"/logout?order={order}")
    assert remember_cookie_deleted(response)
    assert client.get_cookie(REMEMBER) is None and cookie_value(client) is None
    assert stored(app, sid) is None
    # Not logged back in from the cookie, and no session was stored for it.
    assert me(client)["user"] is None
    assert client.get("/private").status_code == 401
    assert cookie_value(client) is None


def test_destroy_without_flask_login_marker_stores_nothing(tmp_path):
    app = make_app(tmp_path, integration=False)
    client = app.test_client()
    client.post("/login/alice")  # no remember cookie: no "_remember" marker
    response = client.post("/logout?order=destroy-last")
    assert not remember_cookie_deleted(response)
    assert cookie_value(client) is None


# -- the integration ---------------------------------------------------------------


def test_login_rotates_the_id_and_keeps_the_data(tmp_path):
    app = make_app(tmp_path, integration=True)
    client = app.test_client()
    client.get("/note/hello")
    planted = cookie_value(client)
    response = client.post("/login/alice")
    assert response.status_code == 302
    sid = cookie_value(client)
    assert sid != planted and moved_away(app, planted)
    assert me(client) == {"user": "alice", "fresh": True, "note": "hello"}
    # The id from before the login gains nothing.
    attacker = app.test_client()
    attacker.set_cookie("gosessionid", planted)
    assert me(attacker)["user"] is None


def test_logout_destroys_the_session_and_the_remember_cookie(tmp_path):
    app = make_app(tmp_path, integration=True)
    client = app.test_client()
    client.get("/note/cart")  # data of the app's own, which logout_user() leaves
    client.post("/login/alice?remember=1")
    sid = cookie_value(client)
    response = client.post("/logout")  # logout_user() only
    assert remember_cookie_deleted(response)
    assert stored(app, sid) is None and cookie_value(client) is None
    assert me(client) == {"user": None, "fresh": False, "note": None}
    # The old id is dead for anyone who kept it.
    thief = app.test_client()
    thief.set_cookie("gosessionid", sid)
    assert me(thief)["user"] is None


@pytest.mark.parametrize("order", ["destroy-last", "destroy-first"])
def test_an_explicit_destroy_is_harmless_with_the_integration(tmp_path, order):
    app = make_app(tmp_path, integration=True)
    client = app.test_client()
    client.post("/login/alice?remember=1")
    response = client.post(f"/logout?order={order}")
    assert remember_cookie_deleted(response)
    assert me(client)["user"] is None and cookie_value(client) is None


def test_remember_cookie_logs_a_fresh_client_in_non_fresh(tmp_path):
    app = make_app(tmp_path, integration=True)
    first = app.test_client()
    first.post("/login/alice?remember=1")
    remember = first.get_cookie(REMEMBER).value

    second = app.test_client()
    second.set_cookie(REMEMBER, remember)
    assert me(second) == {"user": "alice", "fresh": False, "note": None}
    assert cookie_value(second) not in (None, cookie_value(first))
    assert second.get("/private").status_code == 200
    assert second.get("/sensitive").status_code == 401


def test_login_from_remember_cookie_rotates_an_existing_session(tmp_path):
    app = make_app(tmp_path, integration=True)
    first = app.test_client()
    first.post("/login/alice?remember=1")
    remember = first.get_cookie(REMEMBER).value

    second = app.test_client()
    second.get("/note/anon")
    planted = cookie_value(second)
    second.set_cookie(REMEMBER, remember)
    assert me(second) == {"user": "alice", "fresh": False, "note": "anon"}
    assert cookie_value(second) != planted and moved_away(app, planted)


def test_confirm_login_makes_the_session_fresh_and_rotates(tmp_path):
    app = make_app(tmp_path, integration=True)
    first = app.test_client()
    first.post("/login/alice?remember=1")
    second = app.test_client()
    second.set_cookie(REMEMBER, first.get_cookie(REMEMBER).value)
    assert me(second)["fresh"] is False
    stale = cookie_value(second)
    assert second.post("/reauth").text == "confirmed"
    assert cookie_value(second) != stale and moved_away(app, stale)
    assert me(second)["fresh"] is True
    assert second.get("/sensitive").text == "sensitive"


def test_two_clients_have_independent_sessions(tmp_path):
    app = make_app(tmp_path, integration=True)
    alice, bob = app.test_client(), app.test_client()
    alice.post("/login/alice")
    bob.post("/login/bob")
    assert cookie_value(alice) != cookie_value(bob)
    assert me(alice)["user"] == "alice" and me(bob)["user"] == "bob"
    alice.post("/logout")
    assert me(alice)["user"] is None
    assert me(bob) == {"user": "bob", "fresh": True, "note": None}


# -- users and their devices through Flask-Login -------------------------------------


def devices(app: Flask, user: str) -> list[t.Any]:
    from flask_gosession import sessions_of

    with app.app_context():
        return sessions_of(user)


def test_login_user_binds_and_logout_user_unbinds(tmp_path):
    app = make_app(tmp_path, integration=True)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/alice")
    laptop.post("/login/alice?remember=1")
    assert len(devices(app, "alice")) == 2
    laptop.post("/logout")
    assert len(devices(app, "alice")) == 1
    assert me(phone)["user"] == "alice"


def test_a_remember_me_login_joins_the_device_list(tmp_path):
    """A session created from the remember-me cookie is bound too, so "sign
    out everywhere" reaches it."""
    app = make_app(tmp_path, integration=True)
    first = app.test_client()
    first.post("/login/alice?remember=1")
    second = app.test_client()
    second.set_cookie(REMEMBER, first.get_cookie(REMEMBER).value)
    assert me(second)["user"] == "alice"
    assert len(devices(app, "alice")) == 2


def test_revoke_user_signs_flask_login_users_out(tmp_path):
    from flask_gosession import revoke_user

    app = make_app(tmp_path, integration=True)
    clients = [app.test_client() for _ in range(3)]
    for client in clients:
        client.post("/login/alice")
    with app.app_context():
        assert revoke_user("alice") == 3
    assert [me(c)["user"] for c in clients] == [None, None, None]
    assert clients[0].get("/private").status_code == 401


def test_a_refused_login_raises_from_login_user_and_changes_nothing(tmp_path):
    app = make_app(tmp_path, integration=True, GOSESSION_MAX_SESSIONS_PER_USER=1,
                   GOSESSION_SESSION_LIMIT_POLICY="refuse")
    first, second = app.test_client(), app.test_client()
    first.post("/login/alice")
    second.get("/note/mine")
    before = cookie_value(second)
    response = second.post("/login/alice?remember=1")
    assert response.status_code == 409 and b"signed in on 1 device" in response.data
    assert REMEMBER not in response.headers.get("Set-Cookie", "")
    assert cookie_value(second) == before
    assert me(second) == {"user": None, "fresh": False, "note": "mine"}
    assert me(first)["user"] == "alice"


def test_integration_can_be_installed_by_hand_once(tmp_path):
    app = make_app(tmp_path, integration=False)
    install(app)
    install(app)  # idempotent
    client = app.test_client()
    client.get("/note/x")
    before = cookie_value(client)
    client.post("/login/alice")
    assert cookie_value(client) != before
    other = make_app(tmp_path, integration=False)  # not installed there
    client = other.test_client()
    client.get("/note/x")
    before = cookie_value(client)
    client.post("/login/alice")
    assert cookie_value(client) == before


def test_install_needs_gosession_first():
    with pytest.raises(ConfigError, match="GoSession"):
        install(Flask(__name__))


def test_flask_login_flag_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="GOSESSION_FLASK_LOGIN"):
        make_app(tmp_path, integration="maybe")
