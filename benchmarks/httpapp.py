"""The WSGI app the HTTP level serves: every contender's app under its own
path prefix (``/<contender>/<scenario>``), in one server process.

The server (gunicorn) imports :func:`create_app` with the contenders and the
backends' addresses in the environment variable :data:`CONFIG_ENV`, as JSON.
"""
from __future__ import annotations

import json
import os
import typing as t

from .contenders import Contender, build
from .services import Services

CONFIG_ENV = "GOSESSION_BENCH_HTTP_CONFIG"


class Dispatcher:
    """Route ``/<name>/<rest>`` to the app of contender ``name``."""

    def __init__(self, contenders: dict[str, Contender]) -> None:
        self.apps = {name: c.app for name, c in contenders.items()}
        self.contenders = contenders

    def __call__(self, environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> t.Any:
        path = environ.get("PATH_INFO", "")
        name, _, rest = path[1:].partition("/")
        app = self.apps.get(name)
        if app is None:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no such contender\n"]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/" + name
        environ["PATH_INFO"] = "/" + rest
        return app(environ, start_response)


def create_app() -> Dispatcher:
    """Build the contenders named in :data:`CONFIG_ENV` (the server calls this)."""
    config = json.loads(os.environ[CONFIG_ENV])
    services = Services(
        tmpdir=config["tmpdir"],
        redis_url=config.get("redis_url"),
        memcached=config.get("memcached"),
        postgres_url=config.get("postgres_url"),
        tag=config["tag"],
    )
    return Dispatcher({name: build(name, services) for name in config["contenders"]})
