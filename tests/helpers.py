"""Small helpers shared by the test modules."""
from __future__ import annotations

import typing as t

from flask_gosession.ids import store_key


def cookie_value(client: t.Any, name: str = "gosessionid") -> str | None:
    cookie = client.get_cookie(name)
    return None if cookie is None else cookie.value


def stored(app: t.Any, sid: str) -> t.Any:
    """The record the store holds for ``sid`` (read without touching)."""
    manager = app.extensions["gosession"]
    return manager.provider.session_read(store_key(sid), manager.clock())


def set_cookies(response: t.Any) -> list[str]:
    return response.headers.getlist("Set-Cookie")
