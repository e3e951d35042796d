"""URL-rewrite transport: the session id in query strings, for clients
without cookies (the Go chapter's fallback). Opt-in with
``GOSESSION_URL_REWRITE``; cookie-only is the secure default, because ids
in URLs leak through the Referer header, server and proxy logs, browser
history and shared links.
"""
from __future__ import annotations

import typing as t
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import current_app, has_request_context, request, session

from .session import ServerSession

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response


def add_sid_to_urls(endpoint: str, values: dict[str, t.Any]) -> None:
    """``url_defaults`` hook: add the id to every URL built for the app.

    Only for requests that sent no cookie, and never to static files.
    """
    if not has_request_context() or endpoint == "static" or endpoint.endswith(".static"):
        return
    sess = session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(sess, ServerSession) or not sess.via_url:
        return
    manager = current_app.extensions["gosession"]
    name = manager.settings.cookie_name
    if name not in values:
        sid = manager.url_sid(sess)
        if sid is not None:
            values[name] = sid


def rewrite_location(response: Response, name: str, sid: str) -> None:
    """Make a redirect to this host carry ``sid`` in its query string.

    Redirects to other hosts are left alone, so the id never leaves the app.
    """
    location = response.headers.get("Location")
    if not location:
        return
    parts = urlsplit(location)
    if parts.scheme not in ("", "http", "https"):
        return
    if parts.netloc and parts.netloc != request.host:
        return
    if not parts.netloc and location.startswith("//"):
        return
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, sid))
    response.headers["Location"] = urlunsplit(parts._replace(query=urlencode(query)))
