"""The test application: a small app with the views the suites drive."""
from __future__ import annotations

import time
import typing as t

from flask import (
    Blueprint,
    Flask,
    flash,
    get_flashed_messages,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)

from flask_gosession import (
    GoSession,
    SessionLimitReached,
    destroy,
    login_user_session,
    logout_user_session,
    regenerate,
    revoke_user,
    rotate_sid,
    sessions_of,
    token_exempt,
)
from flask_gosession.tokens import gosession_token_field


def make_app(config: dict[str, t.Any], clock: t.Callable[[], float], instance_path: str) -> Flask:
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(SECRET_KEY="test", TESTING=True)
    app.config.update(config)
    ext = GoSession(clock=clock)
    ext.init_app(app)
    app.extensions["gosession_ext"] = ext

    @app.get("/noop")
    def noop() -> str:
        return "noop"

    @app.get("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.get("/get/<key>")
    def get(key: str) -> t.Any:
        return jsonify(value=session.get(key), keys=sorted(session.keys()))

    @app.get("/set/<key>/<value>")
    def set_(key: str, value: str) -> str:
        session[key] = value
        return "ok"

    @app.route("/write", methods=["POST", "PUT", "PATCH", "DELETE"])
    def write() -> str:
        for key, value in (request.get_json(silent=True) or request.form).items():
            if key != app.config["GOSESSION_TOKEN_FIELD"]:
                session[key] = value
        return "written"

    @app.get("/token")
    def token() -> str:
        return gosession_token_field()

    @app.get("/permanent")
    def permanent() -> str:
        session.permanent = True
        session["p"] = 1
        return "ok"

    @app.route("/login", methods=["POST"])
    @rotate_sid
    def login() -> str:
        session["user"] = request.form.get("user", "alice")
        return "logged in"

    @app.route("/login-async", methods=["POST"])
    @rotate_sid
    async def login_async() -> str:
        session["user"] = request.form.get("user", "alice")
        return "logged in"

    @app.get("/bind/<user>")
    def bind(user: str) -> t.Any:
        hold = float(request.args.get("hold", 0))
        try:
            login_user_session(user)
        except SessionLimitReached as err:
            return err.message, 409
        session["user"] = user
        if hold:
            time.sleep(hold)
        return "bound"

    @app.get("/unbind")
    def unbind() -> str:
        logout_user_session()
        return "unbound"

    @app.get("/whoami")
    def whoami() -> t.Any:
        return jsonify(user=session.user_id, data=session.get("user"))  # type: ignore[attr-defined]

    @app.get("/devices/<user>")
    def devices(user: str) -> t.Any:
        return jsonify([[d.handle, d.browser, d.os, d.address, d.current] for d in sessions_of(user)])

    @app.get("/revoke-others/<user>")
    def revoke_others(user: str) -> t.Any:
        return jsonify(revoked=revoke_user(user, keep_current=True))

    @app.get("/regenerate")
    def regen() -> str:
        regenerate()
        return "ok"

    @app.get("/regenerate-async")
    async def regen_async() -> str:
        regenerate()
        return "ok"

    @app.route("/logout", methods=["POST", "GET"])
    def logout() -> str:
        destroy()
        return "bye"

    @app.get("/logout-flash")
    def logout_flash() -> str:
        destroy()
        flash("bye")
        return "bye"

    @app.get("/logout-async")
    async def logout_async() -> str:
        destroy()
        return "bye"

    @app.route("/hook", methods=["POST"])
    @token_exempt
    def hook() -> str:
        session["hooked"] = True
        return "hooked"

    @app.get("/flash")
    def flash_view() -> str:
        flash("hello")
        return "flashed"

    @app.get("/flashes")
    def flashes() -> t.Any:
        return jsonify(get_flashed_messages())

    @app.get("/incr/<key>")
    def incr(key: str) -> str:
        """Read-modify-write one key, holding the session open for a while
        so that concurrent requests overlap."""
        value = session.get(key, 0)
        time.sleep(float(request.args.get("hold", 0)))
        session[key] = value + 1
        return str(value + 1)

    @app.get("/slow-logout")
    def slow_logout() -> str:
        """Load the session, hold it, then log out (a logout that races
        whatever else the client is doing)."""
        session.get("user")
        time.sleep(float(request.args.get("hold", 0)))
        if request.args.get("how") == "clear":
            session.clear()
        else:
            destroy()
        return "bye"

    @app.route("/slow-write", methods=["POST"])
    def slow_write() -> str:
        """An unsafe request whose view takes a while (token races)."""
        time.sleep(float(request.args.get("hold", 0)))
        session["w"] = session.get("w", 0) + 1
        return "written"

    @app.get("/links")
    def links() -> str:
        return url_for("get", key="a")

    @app.get("/go")
    def go() -> t.Any:
        return redirect("/get/a?x=1")

    @app.get("/go-for")
    def go_for() -> t.Any:
        return redirect(url_for("get", key="a"))

    @app.get("/away")
    def away() -> t.Any:
        return redirect("https://elsewhere.example/path")

    @app.get("/to")
    def to() -> t.Any:
        """A 302 whose Location is exactly ``target``, as the app set it.

        ``cc`` and ``rp`` set the response's own ``Cache-Control`` and
        ``Referrer-Policy``.
        """
        response = app.response_class("moved", status=302)
        response.headers["Location"] = request.args["target"]
        _own_headers(response)
        return response

    @app.get("/page")
    def page() -> t.Any:
        """A page with one link built by ``url_for`` (``cc``, ``rp`` as for ``/to``)."""
        response = app.make_response(url_for("get", key="a"))
        _own_headers(response)
        return response

    @app.get("/clear")
    def clear() -> str:
        session.clear()
        return "cleared"

    @app.get("/cart")
    def cart() -> str:
        session.setdefault("cart", []).append("x")
        session.modified = True
        return "ok"

    @app.get("/cart-inplace")
    def cart_inplace() -> str:
        session["cart"].append("y")
        session.modified = True
        return "ok"

    api = Blueprint("api", __name__, url_prefix="/api")

    @api.route("/write", methods=["POST"])
    def api_write() -> str:
        session["api"] = True
        return "api"

    ext.exempt(api)
    app.register_blueprint(api)
    return app


def _own_headers(response: t.Any) -> None:
    if "cc" in request.args:
        response.headers["Cache-Control"] = request.args["cc"]
    if "rp" in request.args:
        response.headers["Referrer-Policy"] = request.args["rp"]
