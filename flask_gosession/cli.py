"""``flask gosession``: garbage collection, statistics, clearing, rekeying,
and a user's sessions (``sessions USER``, ``revoke USER``).

The contract for cron and scripts: exit status 0 means the store answered
and the command did its job. A store failure (any
:class:`~flask_gosession.errors.ProviderError`) exits with status 1 and
one line on stderr, ``Error: <command> failed: <reason>``.

The commands call the provider directly, not through the
:class:`~flask_gosession.manager.Manager`: the manager logs an outage for a
long-running server, and through it a failure would be reported twice
(once by that log, once by the command). Here the command is the report.

The ``memory`` store lives inside each server process, so a ``flask``
command, which runs in a process of its own, never sees a server's
sessions; the commands say so rather than report an empty store.
"""
from __future__ import annotations

import typing as t

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import GoSessionError

if t.TYPE_CHECKING:
    from .manager import Manager
    from .providers.base import Provider

gosession_cli = AppGroup("gosession", help="Manage server-side sessions.")

#: What the commands add for a store whose sessions live in one process.
PROCESS_LOCAL_NOTE = (
    "note: the {name} store keeps sessions inside each server process; this "
    "command runs in a process of its own and sees only that process's store, "
    "not a running server's sessions (use file, sql, redis or memcached to "
    "share sessions between processes and with this command)"
)

_T = t.TypeVar("_T")


def _manager() -> Manager:
    manager = current_app.extensions.get("gosession")
    if manager is None:
        raise click.ClickException("flask-gosession is not initialised on this app")
    return t.cast("Manager", manager)


def _store(command: str, call: t.Callable[..., _T], *args: t.Any) -> _T:
    """Run one provider call; a failure becomes one ``Error:`` line, exit 1.

    :raises click.ClickException: for a :class:`GoSessionError` (a store
        failure) or a :class:`NotImplementedError` (a store that cannot do
        this), with the reason on a single line.
    """
    try:
        return call(*args)
    except (GoSessionError, NotImplementedError) as err:
        # Driver messages (libpq's "Is the server running ...?") span lines.
        reason = " ".join(str(err).split()) or type(err).__name__
        raise click.ClickException(f"{command} failed: {reason}") from None


def _name(provider: Provider) -> str:
    spec = current_app.config["GOSESSION_PROVIDER"]
    return spec if isinstance(spec, str) else type(provider).__name__


def _note(provider: Provider) -> None:
    if provider.process_local:
        click.echo(PROCESS_LOCAL_NOTE.format(name=_name(provider)))


@gosession_cli.command("gc")
def gc_command() -> None:
    """Remove expired sessions now (for cron).

    A store that expires sessions by itself (Redis, Memcached) has nothing
    to remove; it is still asked to answer, so an outage exits with 1.
    """
    manager = _manager()
    provider = manager.provider
    if provider.native_ttl:
        _store("gc", provider.ping)
        click.echo(
            f"removed 0 expired session(s): the {_name(provider)} store "
            "expires sessions by itself"
        )
        return
    removed = _store("gc", provider.session_gc, manager.settings.max_lifetime)
    click.echo(f"removed {removed} expired session(s)")
    _note(provider)


@gosession_cli.command("stats")
def stats_command() -> None:
    """Show the provider, how many sessions it holds, and its event
    counters (``imported:<source>``, ``import-refused:<reason>``) on stores
    that keep them."""
    provider = _manager().provider
    count = _store("stats", provider.session_count)
    if count is None:
        _store("stats", provider.ping)  # cannot count, but must answer
    click.echo(f"provider: {_name(provider)} ({type(provider).__name__})")
    if count is None:
        click.echo("sessions: unknown (the store cannot count)")
    elif provider.process_local:
        click.echo(f"sessions: {count} in this command's own process")
    else:
        click.echo(f"sessions: {count}")
    if provider.counts_events:
        for name, value in (_store("stats", provider.event_counts) or {}).items():
            click.echo(f"{name}: {value}")
    _note(provider)


@gosession_cli.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear_command(yes: bool) -> None:
    """Remove every session (everyone is logged out)."""
    provider = _manager().provider
    if not yes:
        click.confirm("Remove ALL sessions? Every user will be logged out.", abort=True)
    removed = _store("clear", provider.session_clear)
    click.echo(f"removed {removed if removed >= 0 else 'all'} session(s)")
    _note(provider)


def _check_user(user: str) -> None:
    from .users import normalise_user_id

    try:
        normalise_user_id(user)
    except TypeError as err:
        raise click.BadParameter(str(err), param_hint="USER") from None


def _when(moment: t.Any) -> str:
    return str(moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


@gosession_cli.command("sessions")
@click.argument("user")
def sessions_command(user: str) -> None:
    """List the live sessions of USER (a user id, as the app binds it),
    newest first: handle, signed in, last seen, browser, OS, network."""
    manager = _manager()
    _check_user(user)
    devices = _store("sessions", manager.users.sessions_of, user)
    if not devices:
        click.echo(f"no live sessions for user {user!r}")
        _note(manager.provider)
        return
    rows = [("HANDLE", "SIGNED IN", "LAST SEEN", "BROWSER", "OS", "NETWORK")]
    rows += [(d.handle, _when(d.created), _when(d.last_seen), d.browser, d.os, d.address or "-")
             for d in devices]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    _note(manager.provider)


@gosession_cli.command("revoke")
@click.argument("user")
@click.option("--handle", "handle", metavar="H", help="Sign out the one session with this handle.")
@click.option("--all", "everything", is_flag=True, help="Sign out every session of USER.")
@click.option("--others-of", "others_of", metavar="H",
              help="Sign out every session of USER but the one with this handle.")
def revoke_command(user: str, handle: str | None, everything: bool, others_of: str | None) -> None:
    """Sign out sessions of USER: one device (--handle), all (--all), or
    all but one (--others-of). Exactly one of the three is required."""
    chosen = [name for name, value in (("--handle", handle), ("--all", everything),
                                       ("--others-of", others_of)) if value]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --handle H, --all or --others-of H")
    users = _manager().users
    _check_user(user)
    if handle is not None:
        revoked = _store("revoke", users.revoke, user, lambda e: e.handle == handle)
        if not revoked:
            raise click.ClickException(f"revoke failed: user {user!r} has no live session {handle!r}")
    else:
        keep = others_of
        if keep is not None and not any(d.handle == keep for d in _store("revoke", users.sessions_of, user)):
            raise click.ClickException(f"revoke failed: user {user!r} has no live session {keep!r} to keep")
        revoked = _store("revoke", users.revoke, user, lambda e: e.handle != keep)
    click.echo(f"signed out {revoked} session(s) of user {user!r}")
    _note(_manager().provider)
#: What ``rekey`` reports for each outcome, in this order.
_REKEY_LINES = (
    ("rewrapped", "re-sealed under key {kid}: {n}"),
    ("current", "already under key {kid}: {n}"),
    ("plain", "not sealed yet (sealed on their next write): {n}"),
    ("forwarding", "rotated-out ids, left to expire: {n}"),
    ("unreadable", "corrupt or under a key id not listed (warned above): {n}"),
)


@gosession_cli.command("rekey")
def rekey_command() -> None:
    """Re-seal every record under the first key of GOSESSION_ENCRYPTION_KEYS.

    Only each record's seed is re-wrapped (no cookie is needed, and no
    value is decrypted). Afterwards an older key can be removed from the
    list. A store that cannot list its records (Memcached) is not walked:
    each record is re-sealed on its next write, and the others expire.
    """
    from .encryption import KEYS_KEY, Sealed

    manager = _manager()
    encryption, provider = manager.encryption, manager.provider
    if not isinstance(encryption, Sealed):
        raise click.ClickException(f"rekey failed: {KEYS_KEY} is not set, nothing is sealed")
    if not encryption.seals:
        raise click.ClickException(
            "rekey failed: GOSESSION_ENCRYPTION_MIGRATE_TO_PLAIN is on; records are written "
            "in clear on their next write (opening them needs each user's cookie)")
    kid = encryption.keyring.current
    try:
        keys = list(provider.session_keys())
    except NotImplementedError:
        _store("rekey", provider.ping)
        click.echo(
            f"the {_name(provider)} store cannot list its records: each is re-sealed under "
            f"key {kid} on its next write, and natural expiry does the rest; keep the older "
            f"keys listed for GOSESSION_MAX_LIFETIME ({manager.settings.max_lifetime} s) "
            "after the new key went first, then remove them")
        return
    except GoSessionError as err:
        _store("rekey", _raise, err)
    counts = dict.fromkeys((name for name, _ in _REKEY_LINES), 0)
    for key in keys:
        counts[_rekey_one(manager, key)] += 1
    for name, line in _REKEY_LINES:
        if counts[name] or name in ("rewrapped", "current"):
            click.echo(line.format(kid=kid, n=counts[name]))
    _note(provider)


def _raise(err: Exception) -> t.NoReturn:
    raise err


def _rekey_one(manager: Manager, key: str) -> str:
    """Re-wrap the seed of the record under ``key``; return what happened
    (a key of :data:`_REKEY_LINES`, or ``"current"`` for a vanished record)."""
    from .encryption import Sealed
    from .errors import CorruptRecordError
    from .providers.base import Change, Outcome

    provider = manager.provider
    encryption = t.cast(Sealed, manager.encryption)
    try:
        record = provider.session_read(key, manager.clock())
    except CorruptRecordError:
        return "unreadable"
    except GoSessionError as err:
        _store("rekey", _raise, err)
    if record is None:
        return "current"
    try:
        change = encryption.rekey(record, key)
    except CorruptRecordError:
        return "unreadable"
    if isinstance(change, Change):
        outcome = _store("rekey", provider.session_update, key, change)
        if outcome is Outcome.APPLIED:
            return "rewrapped"
        return "current"  # changed meanwhile: its writer re-sealed it
    if provider.touches_on_read:
        # Reading refreshed the access time; give it back, so a rekey never
        # extends a session.
        _store("rekey", provider.session_touch, key, record.atime)
    return {"dead": "current", "sealed": "current"}.get(change, change)
