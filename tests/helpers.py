"""Small helpers shared by the test modules."""
from __future__ import annotations

import re
import threading
import typing as t

import liveserver
from flask_gosession.ids import store_key
from flask_gosession.session import split_flag


def cookie_value(client: t.Any, name: str = "gosessionid") -> str | None:
    """The session id the client's cookie holds (without the permanence
    flag a permanent session's cookie carries)."""
    cookie = client.get_cookie(name)
    return None if cookie is None else split_flag(cookie.value)[0]


def stored(app: t.Any, sid: str) -> t.Any:
    """The record the store holds for ``sid`` (read without touching)."""
    manager = app.extensions["gosession"]
    return manager.provider.session_read(store_key(sid), manager.clock())


def live_record(app: t.Any, sid: str) -> t.Any:
    """The live record of ``sid`` in the store, or None: a tombstone (a
    record being destroyed; meta field ``"x"``, written as a literal so the
    race suites also run against code that has none) is no record."""
    record = stored(app, sid)
    return None if record is None or "x" in record.meta else record


def moved_away(app: t.Any, sid: str) -> bool:
    """Whether ``sid`` was moved by a privilege rotation (or destroyed): the
    store holds nothing for it, or only the forward that nobody follows,
    with none of the session's data."""
    record = stored(app, sid)
    return record is None or (record.data == {} and "f" in record.meta and "fx" not in record.meta)


def set_cookies(response: t.Any) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def concurrent_writers(providers: list, key: str, now: float, *, writers: int, rounds: int,
                       delete_own: bool = False, read_first: bool = False,
                       timeout: float = 60) -> None:
    """Race ``writers`` threads on one record, each owning key ``k<n>``.

    Writer ``n`` uses ``providers[n % len(providers)]`` (several client
    instances stand for several processes) and writes ``k<n> = 0..rounds-1``;
    with ``delete_own`` it also deletes ``gone<n>`` each time; with
    ``read_first`` it reads the record before each update and passes its
    version as the change's base, as a request does. Every update must be
    APPLIED, and afterwards each ``k<n>`` holds its last value and every
    ``gone<n>`` is gone.
    """
    import threading

    from flask_gosession.providers.base import Change, Outcome

    errors: list[BaseException] = []

    def writer(n: int) -> None:
        provider = providers[n % len(providers)]
        deleted = {f"gone{n}"} if delete_own else frozenset()
        try:
            for i in range(rounds):
                base = provider.session_read(key, now).version if read_first else None
                change = Change(set={f"k{n}": i}, deleted=deleted, atime=now + i, base=base)
                outcome = provider.session_update(key, change)
                assert outcome is Outcome.APPLIED, outcome
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "writers did not finish in time"
    assert not errors, errors
    data = providers[-1].session_read(key, now).data
    assert data == {f"k{n}": rounds - 1 for n in range(writers)}


# -- over real HTTP (liveserver) -------------------------------------------------

def token_and_cookie(port: int, sid: str | None = None) -> tuple[str, str]:
    status, body, new = liveserver.request(port, "/token", sid)
    assert status == 200
    token = re.search(r'value="([^"]+)"', body)
    assert token is not None
    return token.group(1), t.cast(str, new or sid)

def together(calls: list[t.Callable[[], t.Any]], timeout: float = 60) -> list[t.Any]:
    """Run ``calls`` in threads released at once; return their results."""
    results: list[t.Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(n: int) -> None:
        start.wait(10)
        results[n] = calls[n]()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "requests did not finish"
    return results


def overlapping(server: t.Any, calls: list[t.Callable[[], t.Any]]) -> list[t.Any]:
    """Run ``calls`` at once while ``server`` is paused, so that each one
    holds its own connection (none is handed back until the server answers),
    then let the server answer them all."""
    results: list[t.Any] = []
    server.pause()
    runner = threading.Thread(target=lambda: results.extend(together(calls)))
    try:
        runner.start()
        # Every call is waiting on the paused server once each has sent its
        # command; the connect itself completes in the kernel.
        runner.join(0.4)
    finally:
        server.resume()
    runner.join(30)
    assert not runner.is_alive()
    return results
