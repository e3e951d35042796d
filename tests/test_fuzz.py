"""Fuzzing: hostile cookies, query ids, tokens and headers, on every provider.

Hypothesis generates what a client can put in a request: the session cookie
(also duplicated, or beside the client's own real cookie), the id in the
query string (URL-rewrite mode is on), the token in its header and its form
field, and the User-Agent (user-agent binding is on). Values include NUL
bytes, ``../`` chains, absolute paths, overlong strings, bytes that are not
UTF-8, Unicode look-alikes, ids of the right shape that were never issued,
and values derived from a *victim's* session: its store key (the SHA-256 of
its id) and prefixes of it, the key with the Redis prefix or as a file
path, the digest in raw bytes or base64url (an id-shaped string), the
victim's id truncated, extended or with one character changed, its token.

For every request, on every provider:

* never a 500 (the app runs with ``TESTING``, so an exception would escape
  the test client and fail the test) and never a 503 (the store is up);
* no unsafe request passes the token check: every fuzzed token is wrong;
* never another session's data: the victim's secret never appears in a
  response, unless the request carried the victim's exact id (which the
  fuzzer never generates, but a transport could in theory normalise to);
* never an adopted id: a session cookie or URL id handed out is a fresh
  id of the exact issued shape, never the presented value, and the
  presented value never names a stored record;
* never a file outside the session folder: an audit hook watches every
  file the request thread opens, renames, removes or lists, and the test's
  temporary tree outside the session folder is unchanged at the end.

After the run, every key the store holds is the SHA-256 of an id the server
itself issued (for the providers that can list their keys), and the victim's
session is intact (no fuzzed logout or clear reached it).

The number of examples comes from the Hypothesis profile (tests/conftest.py):
"dev" locally, "ci" (>= 10,000 per provider) under ``CI=true``.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import string
import time
import typing as t
from dataclasses import dataclass
from urllib.parse import parse_qs, quote_from_bytes, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import ALL_BACKENDS
from flask_gosession.ids import SID_PATTERN, store_key
from fsguard import FileGuard, default_read_roots, snapshot

pytestmark = pytest.mark.slow

COOKIE = "gosessionid"
VICTIM_UA = "victim-browser/1.0"
ATTACKER_UA = "attacker-browser/1.0"
SID_ALPHABET = string.ascii_letters + string.digits + "-_"
HEX = "0123456789abcdef"


@pytest.fixture(params=ALL_BACKENDS)
def backend_name(request) -> str:  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def backend_config(request, backend_name, tmp_path):  # type: ignore[no-untyped-def]
    config = dict(request.getfixturevalue(f"backend_{backend_name}"))
    if backend_name == "file":
        # Deep inside the test's directory, so that "../" has somewhere to go.
        config["GOSESSION_FILE_DIR"] = str(tmp_path / "jail" / "cell" / "sessions")
    return config


@pytest.fixture
def app_config() -> dict[str, t.Any]:
    return {
        "GOSESSION_GC_INTERVAL": 0,
        "GOSESSION_URL_REWRITE": True,
        "GOSESSION_TOKEN_CHECK": True,
        "GOSESSION_BIND_USER_AGENT": True,
    }


# -- values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Derived:
    """A value computed at run time from a real session (victim or attacker)."""

    owner: str  # "victim" or "attacker"
    form: str
    n: int
    junk: bytes


FORMS = (
    "key", "key_upper", "key_prefix", "key_prefixed", "key_path", "key_abs_path",
    "key_traversal", "key_of_key", "digest_raw", "digest_b64", "sid_truncated",
    "sid_extended", "sid_mutated", "sid_case", "sid_wrapped", "token", "token_key",
)

TRAVERSAL = ["../", "..", "/", "..\\", "\\", ".", "%2e%2e%2f", "%2f", "\x00", "etc", "passwd",
             "~", "//", "%00", "..;", "sessions", "locks", "00", "ff", ":", "C:"]


def _text(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


static_values = st.one_of(
    st.text(max_size=80).map(_text),
    st.binary(max_size=80),
    st.lists(st.sampled_from(TRAVERSAL), max_size=12).map(lambda parts: _text("".join(parts))),
    st.builds(lambda c, n: _text(c * n),
              st.sampled_from(["A", "a", "/", "../", "%", "\x00", "é", "0", "\xff", "-"]),
              st.integers(44, 20_000)),
    st.text(SID_ALPHABET, min_size=43, max_size=43).map(_text),  # unknown, well formed
    st.text(SID_ALPHABET, min_size=0, max_size=300).map(_text),  # wrong length
    st.builds(lambda s, edge: _text(edge.format(s)),
              st.text(SID_ALPHABET, min_size=43, max_size=43),
              st.sampled_from(["{}\n", " {}", "{} ", "\t{}", '"{}"', "{}=", "{}\x00", "{};", "{},x"])),
    st.text(st.characters(categories=("Nd", "Lu", "Ll", "Lo", "Mn")), min_size=43,
            max_size=43).map(_text),  # look-alikes of the id alphabet
    st.text(HEX, min_size=64, max_size=64).map(_text),  # key-shaped
    st.text(HEX + "ABCDEF/.", min_size=60, max_size=70).map(_text),
)

derived_values = st.builds(
    Derived,
    owner=st.sampled_from(["victim", "victim", "attacker"]),
    form=st.sampled_from(FORMS),
    n=st.integers(0, 1000),
    junk=st.binary(max_size=6),
)


@st.composite
def values(draw: t.Any) -> t.Any:
    """Half static hostile values, half derived from a real session (a
    plain ``one_of`` would flatten the branches and make derived values
    rare)."""
    return draw(derived_values if draw(st.booleans()) else static_values)


#: Paths a request may take. Some end, clear or rotate the session they
#: find: after that happens to a real session (its own id was presented),
#: its owner starts a fresh one.
PATHS = ("/get/victim_secret", "/get/mine", "/set/k/v", "/count", "/links", "/go", "/token",
         "/noop", "/logout", "/clear", "/regenerate", "POST /write", "POST /login")


@dataclass(frozen=True)
class Attack:
    path: str
    cookie: t.Any  # None | value | "own" | ("dup", value, own_first)
    query: t.Any  # None | value | ("dup", value, value)
    header_token: t.Any
    form_token: t.Any
    agent: t.Any  # None: the attacker's own User-Agent; "victim": a copy of the victim's
    junk_cookies: bytes


def weighted(*choices: tuple[int, st.SearchStrategy[t.Any]]) -> st.SearchStrategy[t.Any]:
    """Pick a strategy with the given weights, then draw from it."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(table))).flatmap(lambda i: table[i])


attacks = st.builds(
    Attack,
    path=st.sampled_from(PATHS),
    cookie=weighted(
        (3, st.none()), (4, values()), (2, st.just("own")),
        (1, st.tuples(st.just("dup"), values(), st.booleans())),
    ),
    query=weighted((3, st.none()), (6, values()), (1, st.tuples(st.just("dup"), values(), values()))),
    header_token=weighted((1, st.none()), (1, values())),
    form_token=weighted((1, st.none()), (1, values())),
    agent=weighted((3, st.none()), (4, st.just("victim")), (3, values())),
    junk_cookies=weighted((3, st.just(b"")), (1, st.binary(max_size=40))),
)


# -- identities ----------------------------------------------------------------------------


@dataclass
class Identity:
    sid: str
    key: str
    token: str
    marker: str
    agent: str
    data_key: str


def swap_case(sid: str, n: int) -> str:
    letters = [i for i, c in enumerate(sid) if c.isalpha()]
    if not letters:  # pragma: no cover - 43 random characters without a letter
        return mutate(sid, n)
    i = letters[n % len(letters)]
    return sid[:i] + sid[i].swapcase() + sid[i + 1:]


def mutate(sid: str, n: int) -> str:
    i = n % len(sid)
    replacement = SID_ALPHABET[(SID_ALPHABET.index(sid[i]) + 1 + n % 63) % 64]
    return sid[:i] + replacement + sid[i + 1:]


def derive(d: Derived, who: Identity, key_prefix: str, session_dir: str) -> bytes:
    sid, key = who.sid, who.key
    digest = bytes.fromhex(key)
    forms: dict[str, t.Callable[[], bytes | str]] = {
        "key": lambda: key,
        "key_upper": lambda: key.upper(),
        "key_prefix": lambda: key[: d.n % 65],
        "key_prefixed": lambda: key_prefix + key,
        "key_path": lambda: f"{key[:2]}/{key[2:4]}/{key}",
        "key_abs_path": lambda: os.path.join(session_dir, key[:2], key[2:4], key),
        "key_traversal": lambda: "../" * (d.n % 7) + f"{key[:2]}/{key[2:4]}/{key}",
        "key_of_key": lambda: hashlib.sha256(key.encode()).hexdigest(),
        "digest_raw": lambda: digest,
        "digest_b64": lambda: base64.urlsafe_b64encode(digest).rstrip(b"="),
        "sid_truncated": lambda: sid[: d.n % 43],
        "sid_extended": lambda: sid + SID_ALPHABET[d.n % 64] * (1 + d.n % 3),
        "sid_mutated": lambda: mutate(sid, d.n),
        "sid_case": lambda: swap_case(sid, d.n),
        "sid_wrapped": lambda: d.junk + sid.encode() + d.junk[::-1],
        "token": lambda: who.token,
        "token_key": lambda: hashlib.sha256(who.token.encode()).hexdigest(),
    }
    value = forms[d.form]()
    return value.encode() if isinstance(value, str) else value


# -- the test ---------------------------------------------------------------------------------


def header_value(raw: bytes) -> str:
    """As a WSGI server passes a header: bytes as latin-1, no line breaks
    (a server never delivers those inside a value)."""
    return raw.replace(b"\r", b"").replace(b"\n", b"").decode("latin-1")


def set_cookie_ids(response: t.Any) -> list[str]:
    found = []
    for header in response.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name == COOKIE:
            value = rest.split(";", 1)[0]
            # A permanent session's cookie carries the ".p" flag.
            found.append(value[:-2] if value.endswith(".p") else value)
    return found


def url_ids(text: str) -> list[str]:
    if not text:
        return []
    return parse_qs(urlsplit(text).query, keep_blank_values=True).get(COOKIE, [])


def _stored_keys(provider: t.Any, backend: str) -> set[str] | None:
    """Every key the store holds, for providers that can list them."""
    if backend == "memory":
        return {digest.hex() for digest in provider._entries}
    if backend == "file":
        keys = set()
        for dirpath, _, filenames in os.walk(provider.directory):
            keys.update(n for n in filenames if re.fullmatch(r"[0-9a-f]{64}", n))
        return keys
    if backend.startswith("sql"):
        with provider.engine.connect() as conn:
            return {row[0] for row in conn.execute(provider.table.select().with_only_columns(provider.table.c.id))}
    if backend.startswith("redis"):
        prefix = provider.key_prefix.encode()
        return {name[len(prefix):].decode() for name in provider._scan()}
    return None  # memcached cannot list its keys


def test_hostile_requests_never_break_leak_or_adopt(app, backend_name, clock, tmp_path, capsys):
    manager = app.extensions["gosession"]
    provider = manager.provider
    seen: list[dict[str, str | None]] = []

    def record_presented() -> None:
        from flask import request

        seen.append({
            "cookie": request.cookies.get(COOKIE),
            "query": request.args.get(COOKIE),
            "agent": request.headers.get("User-Agent"),
            # What the token check will compare: the header, else the field.
            "token": request.headers.get("X-GoSession-Token") or request.form.get("gosession_token"),
        })

    def reveal_session(response: t.Any) -> t.Any:
        """Every path becomes an oracle: show what the session held."""
        from flask import session

        current = session._get_current_object()
        if getattr(current, "loaded", False):
            response.headers["X-Fuzz-Session"] = repr(sorted(dict.items(current)))
        return response

    # First of all before_request hooks, so the token check cannot skip it.
    app.before_request_funcs.setdefault(None, []).insert(0, record_presented)
    app.after_request(reveal_session)

    client = app.test_client(use_cookies=False)

    def make_identity(agent: str, key: str, marker: str) -> Identity:
        first = client.get(f"/set/{key}/{marker}", headers={"User-Agent": agent})
        (sid,) = set_cookie_ids(first)
        token_page = client.get("/token", headers={"User-Agent": agent, "Cookie": f"{COOKIE}={sid}"})
        token = re.search(r'value="([^"]+)"', token_page.text).group(1)
        return Identity(sid, store_key(sid), token, marker, agent, key)

    def renew_if_changed(who: Identity, exact: bool) -> None:
        """A request that legitimately presented ``who``'s id may have
        rotated, cleared or destroyed its session (or, with ``exact``,
        changed its data): give ``who`` a fresh session then."""
        record = provider.session_read(who.key, clock())
        expected = {who.data_key: who.marker}
        if record is not None and (record.data == expected if exact else
                                   record.data.get(who.data_key) == who.marker):
            return
        fresh = make_identity(who.agent, who.data_key, who.marker)
        who.sid, who.key, who.token = fresh.sid, fresh.key, fresh.token
        issued.add(fresh.sid)

    victim = make_identity(VICTIM_UA, "victim_secret", "VICTIM-" + os.urandom(8).hex())
    attacker = make_identity(ATTACKER_UA, "mine", "ATTACKER-" + os.urandom(8).hex())
    issued = {victim.sid, attacker.sid}
    key_prefix = getattr(provider, "key_prefix", "gosession:")
    session_dir = getattr(provider, "directory", str(tmp_path / "jail" / "cell" / "sessions"))
    os.makedirs(tmp_path / "jail" / "cell", exist_ok=True)
    (tmp_path / "jail" / "sentinel").write_text("outside the session folder")
    (tmp_path / "jail" / "cell" / "sentinel").write_text("outside the session folder")
    sqlite_files = [str(tmp_path / f"sessions.sqlite3{suffix}") for suffix in ("", "-journal", "-wal", "-shm")]
    before = snapshot(str(tmp_path), exclude=[session_dir, *sqlite_files])
    guard = FileGuard(write_roots=[session_dir], read_roots=default_read_roots())
    stats = {"examples": 0, "requests": 0, "status": {}}

    def resolve(value: t.Any) -> bytes:
        if isinstance(value, Derived):
            who = victim if value.owner == "victim" else attacker
            return derive(value, who, key_prefix, session_dir)
        return value

    def cookie_header(attack: Attack) -> str | None:
        parts: list[bytes] = []
        if attack.junk_cookies:
            parts.append(attack.junk_cookies)
        choice = attack.cookie
        if choice == "own":
            parts.append(f"{COOKIE}={attacker.sid}".encode())
        elif isinstance(choice, tuple):
            pair = [COOKIE.encode() + b"=" + resolve(choice[1]), f"{COOKIE}={attacker.sid}".encode()]
            parts.extend(pair[::-1] if choice[2] else pair)
        elif choice is not None:
            parts.append(COOKIE.encode() + b"=" + resolve(choice))
        if not parts:
            return None
        return header_value(b"; ".join(parts))

    def query_string(attack: Attack) -> str:
        choice = attack.query
        if choice is None:
            return ""
        if isinstance(choice, tuple):
            raws = [resolve(choice[1]), resolve(choice[2])]
        else:
            raws = [resolve(choice)]
        # Percent-encoded, as every HTTP server hands a query string to WSGI.
        return "&".join(f"{COOKIE}=" + quote_from_bytes(raw, safe="/:.~") for raw in raws)

    @settings(deadline=None, suppress_health_check=list(HealthCheck))
    @given(attack=attacks)
    def run(attack: Attack) -> None:
        stats["examples"] += 1
        method, _, path = attack.path.rpartition(" ")
        method = method or "GET"
        environ: dict[str, t.Any] = {"QUERY_STRING": query_string(attack)}
        cookie = cookie_header(attack)
        if cookie is not None:
            environ["HTTP_COOKIE"] = cookie
        if attack.agent is None or attack.agent == "victim":
            environ["HTTP_USER_AGENT"] = ATTACKER_UA if attack.agent is None else VICTIM_UA
        else:
            environ["HTTP_USER_AGENT"] = header_value(resolve(attack.agent))
        if attack.header_token is not None:
            environ["HTTP_X_GOSESSION_TOKEN"] = header_value(resolve(attack.header_token))
        body = None
        if method == "POST":
            fields = [b"k=v"]
            if attack.form_token is not None:
                fields.append(b"gosession_token=" + quote_from_bytes(resolve(attack.form_token)).encode())
            body = b"&".join(fields)
        seen.clear()
        with guard:
            response = client.open(
                path, method=method, data=body, environ_overrides=environ,
                content_type="application/x-www-form-urlencoded" if body is not None else None,
            )
            text = response.get_data(as_text=True)
        stats["requests"] += 1
        stats["status"][response.status_code] = stats["status"].get(response.status_code, 0) + 1

        # Never a 500 (TESTING propagates exceptions), never a 503.
        assert response.status_code < 500, (response.status_code, text[:300])
        assert len(seen) == 1, seen
        cookie_sid, query_sid = seen[0]["cookie"], seen[0]["query"]
        presented = cookie_sid if cookie_sid is not None else query_sid
        owner = {victim.sid: victim, attacker.sid: attacker}.get(presented)  # type: ignore[arg-type]
        # No unsafe request gets through, except with a session's own id,
        # User-Agent and token (the fuzzer can derive those of a real session).
        if method == "POST":
            legit = owner is not None and seen[0]["agent"] == owner.agent and seen[0]["token"] == owner.token
            assert response.status_code == (200 if legit else 400), (attack, response.status_code, text[:300])
        # Never another session's data.
        everything = text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        if presented != victim.sid:
            assert victim.marker not in everything, (attack, everything[:500])
            assert '"victim_secret"' not in text, (attack, text[:500])
        if presented != attacker.sid:
            assert attacker.marker not in everything, (attack, everything[:500])
            assert '"mine"' not in text, (attack, text[:500])
        # Never an adopted id.
        for new in set_cookie_ids(response):
            if not new:
                continue  # the cookie is being removed
            assert SID_PATTERN.match(new), new
            if owner is not None and new == presented:
                # A live session's own id, sent again because the session
                # was modified (as Flask does): nothing adopted.
                continue
            assert new not in (presented, cookie_sid, query_sid, victim.sid, attacker.sid), (attack, new)
            issued.add(new)
        for carried in url_ids(response.headers.get("Location", "")) + url_ids(text if path == "/links" else ""):
            assert SID_PATTERN.match(carried), carried
            assert carried in issued, (attack, carried)
        for value in {cookie_sid, query_sid} - {None, victim.sid, attacker.sid}:
            if value.isascii():
                assert provider.session_read(store_key(value), clock()) is None, (attack, value)
        # Never a file outside the session folder.
        assert guard.violations == [], guard.violations[:5]
        if owner is not None:
            renew_if_changed(owner, exact=owner is victim)

    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started

    assert guard.seen > 0 or backend_name != "file", "the file guard saw nothing: is the hook live?"
    assert snapshot(str(tmp_path), exclude=[session_dir, *sqlite_files]) == before
    if backend_name == "file":
        layout = re.compile(
            r"locks/[0-9a-f]{2}\.lock|[0-9a-f]{2}/[0-9a-f]{2}/([0-9a-f]{64}|\.[0-9a-f]{64}\.[0-9a-f]{12}\.tmp)"
        )
        for dirpath, _, filenames in os.walk(session_dir):
            for name in filenames:
                relative = os.path.relpath(os.path.join(dirpath, name), session_dir)
                assert layout.fullmatch(relative), relative
    keys = _stored_keys(provider, backend_name)
    if keys is not None:
        assert keys <= {store_key(sid) for sid in issued}, keys - {store_key(sid) for sid in issued}
    record = provider.session_read(victim.key, clock())
    assert record is not None and record.data == {"victim_secret": victim.marker}
    with capsys.disabled():
        print(
            f"\n[fuzz] {backend_name}: {stats['examples']} examples, {stats['requests']} requests "
            f"in {elapsed:.1f}s; statuses {dict(sorted(stats['status'].items()))}; "
            f"{len(issued) - 2} fresh ids issued"
        )


@pytest.mark.parametrize("backend_name", ["memory"])
@pytest.mark.parametrize("path", ["/noop", "/get/a"])
def test_raw_non_utf8_query_string_is_not_a_500(app, path):
    """A query string with raw bytes that are not UTF-8 (PEP 3333 passes them
    as latin-1; gunicorn and uWSGI hand them over unescaped) on a request
    without a cookie, in URL-rewrite mode. Werkzeug's ``request.args`` raises
    ``UnicodeDecodeError`` for it; the session layer must treat it as no id
    rather than turn every route, even one that never uses the session, into
    a 500."""
    client = app.test_client(use_cookies=False)
    for query in ("gosessionid=\xff\xfe", "a=1&gosessionid=%41\xc3(", "\xff"):
        response = client.get(path, environ_overrides={"QUERY_STRING": query})
        assert response.status_code == 200
        assert set_cookie_ids(response) in ([], [""])
