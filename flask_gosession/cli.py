"""``flask gosession``: garbage collection, statistics and clearing."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import GoSessionError

gosession_cli = AppGroup("gosession", help="Manage server-side sessions.")


def _manager():  # type: ignore[no-untyped-def]
    manager = current_app.extensions.get("gosession")
    if manager is None:
        raise click.ClickException("flask-gosession is not initialised on this app")
    return manager


@gosession_cli.command("gc")
def gc_command() -> None:
    """Remove expired sessions now (for cron)."""
    try:
        removed = _manager().gc()
    except GoSessionError as err:
        raise click.ClickException(f"gc failed: {err}") from err
    click.echo(f"removed {removed} expired session(s)")


@gosession_cli.command("stats")
def stats_command() -> None:
    """Show the provider and how many sessions it holds."""
    manager = _manager()
    try:
        count = manager.provider.session_count()
    except GoSessionError as err:
        raise click.ClickException(f"stats failed: {err}") from err
    click.echo(f"provider: {current_app.config['GOSESSION_PROVIDER']} "
               f"({type(manager.provider).__name__})")
    click.echo(f"sessions: {count if count is not None else 'unknown (the store cannot count)'}")


@gosession_cli.command("clear")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def clear_command(yes: bool) -> None:
    """Remove every session (everyone is logged out)."""
    if not yes:
        click.confirm("Remove ALL sessions? Every user will be logged out.", abort=True)
    try:
        removed = _manager().provider.session_clear()
    except (GoSessionError, NotImplementedError) as err:
        raise click.ClickException(f"clear failed: {err}") from err
    click.echo(f"removed {removed if removed >= 0 else 'all'} session(s)")
