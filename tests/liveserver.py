"""A real threaded WSGI server on loopback, and a tiny cookie-aware client."""
from __future__ import annotations

import contextlib
import http.client
import threading
import typing as t

from werkzeug.serving import make_server


@contextlib.contextmanager
def serve(app: t.Any) -> t.Iterator[int]:
    """Run ``app`` on 127.0.0.1 (free port) in a thread; yield the port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def request(port: int, path: str, cookie: str | None = None, method: str = "GET",
            headers: dict[str, str] | None = None, body: bytes | None = None,
            timeout: float = 20) -> tuple[int, str, str | None]:
    """One request; returns (status, body, new session cookie or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        all_headers = dict(headers or {})
        if cookie:
            all_headers["Cookie"] = f"gosessionid={cookie}"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        text = response.read().decode()
        new = None
        for header in response.headers.get_all("Set-Cookie") or []:
            if header.startswith("gosessionid="):
                new = header.split(";", 1)[0].split("=", 1)[1] or None
        return response.status, text, new
    finally:
        conn.close()
