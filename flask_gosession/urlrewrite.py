"""URL-rewrite transport: the session id in query strings, for clients
without cookies (the Go chapter's fallback). Opt-in with
``GOSESSION_URL_REWRITE``; cookie-only is the secure default, because ids
in URLs leak through the Referer header, server and proxy logs, browser
history and shared links.

Two things put the id in a URL: :func:`add_sid_to_urls` (every URL the app
builds with ``url_for``) and :func:`rewrite_location` (a redirect to this
host). Every response that carries the id in a URL that way also gets
``Referrer-Policy: no-referrer`` and ``Cache-Control: private``
(:func:`protect`); no other response gets either header from here.
"""
from __future__ import annotations

import re
import typing as t
from urllib.parse import quote, unquote_plus

from flask import after_this_request, current_app, g, has_request_context, request, session
from flask.globals import request_ctx

from .session import ServerSession

if t.TYPE_CHECKING:
    from werkzeug.wrappers import Response

#: Control characters (C0, DEL, C1), space and backslash. Browsers strip
#: leading controls and spaces, drop tabs and newlines anywhere, and read
#: ``\`` as ``/``, so ``"/\t/evil"`` and ``"/\evil"`` both go to ``evil``.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\\]")

#: On the ``g`` of a request whose URLs :func:`add_sid_to_urls` gave the id.
_MARK = "_gosession_sid_in_url"


def add_sid_to_urls(endpoint: str, values: dict[str, t.Any]) -> None:
    """``url_defaults`` hook: add the id to every URL built for the app.

    Only for requests that sent no cookie, and never to static files. The
    response to a request that built such a URL gets :func:`protect`'s
    headers.
    """
    if not has_request_context() or endpoint == "static" or endpoint.endswith(".static"):
        return
    sess = session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(sess, ServerSession) or not sess.via_url:
        return
    manager = current_app.extensions["gosession"]
    name = manager.settings.cookie_name
    if name not in values and builds_on_this_host(endpoint):
        sid = url_sid(sess)
        if sid is not None:
            values[name] = sid
            if not g.get(_MARK):
                setattr(g, _MARK, True)
                after_this_request(protect)


def builds_on_this_host(endpoint: str) -> bool:
    """Whether ``url_for(endpoint)`` stays on the request's own host.

    A rule for another subdomain (or, with host matching, another host)
    makes ``url_for`` build an external URL there: the id must never be
    added to it. An endpoint with no rule (``url_for`` will fail anyway)
    gets nothing either.
    """
    adapter = request_ctx.url_adapter
    url_map = current_app.url_map
    try:
        rules = list(url_map.iter_rules(endpoint))
    except KeyError:
        return False
    if adapter is None or not rules:
        return False
    for rule in rules:
        if url_map.host_matching:
            if rule.host != adapter.server_name:
                return False
        elif (rule.subdomain or "") != (adapter.subdomain or ""):
            return False
    return True


def url_sid(session: ServerSession) -> str | None:
    """The id that URLs built during this request must carry, or None.

    For clients that sent no cookie: a session that exists (or will be
    stored by this request) is named by the id it will have once the
    response is saved, so a rotation decided in this request never leaves
    links to the old id in the page.
    """
    if not session.loaded and session.presented is None:
        return None
    session.ensure_loaded()
    if session.new and session.has_nothing_to_store:
        return None
    return session.next_sid or session.sid


def marked() -> bool:
    """True when a URL built during this request was given the id."""
    return bool(g.get(_MARK))


def unmark() -> None:
    """Forget that this request built URLs with the id, before a response
    is replaced by another (the 503 for an unavailable store).

    The hook's :func:`protect` already ran on the replaced response; a URL
    built from here on marks the request again, and the caller applies
    :func:`protect` itself.
    """
    g.pop(_MARK, None)


def is_own_location(location: str, host: str, scheme: str) -> bool:
    """True when ``location`` is one the id may be added to.

    Exactly two forms qualify:

    - path-absolute: starts with ``/`` but not ``//``;
    - absolute ``http://`` or ``https://`` with a netloc equal (ignoring
      case) to ``host``, the request's own host and port, so with no
      userinfo (``user@``); plain ``http`` only when the request itself is
      plain HTTP, so the id is never downgraded to an unencrypted request.

    In either form, no control character, whitespace or backslash anywhere.
    Everything else is refused, including references that browsers would
    resolve on this host (``next``, ``../x``, ``?q``): only the two forms
    above are vouched for, and ``url_for`` builds path-absolute URLs.
    ``http:host/x``, ``https:/host/x`` and ``http:///host`` are refused
    because browsers read a host in them that :func:`urllib.parse.urlsplit`
    does not.

    :param host: the request's ``Host`` (``request.host``).
    :param scheme: the request's scheme (``request.scheme``).
    """
    if _UNSAFE.search(location):
        return False
    if location.startswith("/"):
        return not location.startswith("//")
    head, sep, rest = location.partition("://")
    head = head.lower()
    if not sep or not (head == "https" or (head == "http" and scheme == "http")):
        return False
    end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1 and found < end:
            end = found
    netloc = rest[:end]
    # Compared as text rather than through urlsplit: one rule that cannot
    # raise (urlsplit rejects "[::1" with ValueError) and leaves nothing for
    # a parser difference; "@" never appears in request.host.
    return bool(netloc) and netloc.isascii() and "@" not in netloc and netloc.lower() == host.lower()


def rewrite_location(response: Response, name: str, sid: str) -> bool:
    """Make a ``Location`` to this host carry ``sid`` in its query string.

    Only a location :func:`is_own_location` accepts is changed: the id
    replaces any ``name`` parameter there, the rest of the URL is kept as
    it was, and the response gets :func:`protect`'s headers. Anything else
    is left untouched, so the id never leaves the app.

    :returns: True when the location was rewritten.
    """
    location = response.headers.get("Location")
    if not location or not is_own_location(location, request.host, request.scheme):
        return False
    url, hash_, fragment = location.partition("#")
    path, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) != name]
    kept.append(f"{quote(name, safe='')}={quote(sid, safe='')}")
    response.headers["Location"] = f"{path}?{'&'.join(kept)}{hash_}{fragment}"
    protect(response)
    return True


def protect(response: Response) -> Response:
    """Keep an id in this response's URLs out of Referer headers and
    shared caches: ``Referrer-Policy: no-referrer`` (the strictest policy,
    so it replaces the app's), and ``private`` added to ``Cache-Control``
    (whose other directives, ``no-store`` included, stay; ``public``,
    which contradicts it, goes).
    """
    response.headers["Referrer-Policy"] = "no-referrer"
    cache_control = response.cache_control
    cache_control.public = False
    cache_control.private = True
    return response
