"""``jobtape keys``: create, list and revoke the API keys that authenticate HTTP callers.

Registered on the ``jobtape`` group by :mod:`jobtape.cli`. A key's creation and revocation
are events in the log (``key.created``, ``key.revoked`` in the stream ``key-<key_id>``:
:mod:`jobtape.eventlog.key_events`), appended with the ``api_keys`` row in one batch
(:class:`jobtape.projections.keys.KeyRepository`); their actor is ``cli:<os user>``
(``cli`` when the user has no name). The token is printed once by ``create`` and stored
nowhere: the log and ``api_keys`` keep only its sha256. Like the other commands these
take ``--data-dir`` (env ``JOBTAPE_DATA_DIR``), or the libSQL database of
``JOB_STORE_BACKEND=libsql`` / ``TURSO_DATABASE_URL``.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from jobtape import defaults, errors, runtime
from jobtape.auth import tokens
from jobtape.cli.audit import console, data_dir_option, echo_json, existing_store_settings, json_option, settings_from
from jobtape.eventlog.store import EventStore
from jobtape.projections import keys as key_projection

__all__ = ["COMMANDS", "actor", "keys"]


def actor() -> str:
    """The actor of the key events the CLI appends: ``cli:<os user>``, or ``cli`` when the user has no name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return "cli"
    return f"cli:{user}" if user else "cli"


def _open(data_dir: Path, *, create: bool) -> EventStore:
    settings = settings_from(data_dir=data_dir) if create else existing_store_settings(data_dir)
    return runtime.open_store(settings, defaults.default_tables())


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (bearer tokens for `serve --auth required`)."""


@keys.command("create")
@click.option("--owner", required=True, help="Whose jobs the key acts on: the owner of the jobs it submits (required, none by default).")
@click.option(
    "--scope",
    "scope",
    required=True,
    metavar="SCOPES",
    help=f"Comma-separated scopes (required, none by default): {', '.join(tokens.SCOPES)}; admin reaches every owner's jobs.",
)
@click.option("--name", default="", help="A label for people, e.g. the service that uses the key (none by default).")
@click.option("--quiet", "-q", is_flag=True, help="Print the token alone on stdout, for scripts (off by default).")
@data_dir_option
@json_option
def create(owner: str, scope: str, name: str, quiet: bool, data_dir: Path, as_json: bool) -> None:
    """Create an API key and print its token ONCE (only its sha256 is kept), with the key id.

    The log is created under --data-dir if it does not exist yet, so a key can be made
    before the first `jobtape serve`.
    """
    try:
        scopes = tokens.parse_scopes(scope)
    except errors.UnknownScope as exc:
        raise click.BadParameter(exc.message, param_hint="--scope") from exc
    store = _open(data_dir, create=True)
    try:
        state, token = key_projection.KeyRepository(store).create(owner, scopes, name=name, actor=actor())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--owner/--name") from exc
    finally:
        store.close()
    if quiet:
        click.echo(token)
        return
    if as_json:
        return echo_json({"key_id": state.key_id, "owner": state.owner, "scopes": list(state.scopes), "name": state.name, "token": token})
    label = f"; name {state.name}" if state.name else ""
    click.echo(f"created API key {state.key_id} for owner {state.owner} (scopes {', '.join(state.scopes)}{label})")
    click.echo("token (shown once; it is not stored, only its hash; keep it secret):")
    click.echo(token)


@keys.command("list")
@data_dir_option
@json_option
def list_command(data_dir: Path, as_json: bool) -> None:
    """List every API key, active and revoked (never a token or its hash)."""
    store = _open(data_dir, create=False)
    try:
        found = key_projection.list_keys(store)
    finally:
        store.close()
    if as_json:
        return echo_json({"keys": found})
    table = Table("key id", "owner", "scopes", "name", "created (UTC)", "revoked (UTC)", title="API keys", title_justify="left")
    for item in found:
        table.add_row(
            item.key_id, escape(item.owner), " ".join(item.scopes), escape(item.name or "-"), item.created_at, item.revoked_at or "-"
        )
    out = console()
    out.print(table)
    active = sum(item.revoked_at is None for item in found)
    out.print(f"{len(found)} keys, {active} active")


@keys.command("revoke")
@click.argument("key_id")
@data_dir_option
@json_option
def revoke(key_id: str, data_dir: Path, as_json: bool) -> None:
    """Revoke KEY_ID: from now on its token authenticates no one. Exit 1 if unknown or revoked already."""
    store = _open(data_dir, create=False)
    try:
        state = key_projection.KeyRepository(store).revoke(key_id, actor=actor())
    except errors.KeyNotFound as exc:
        raise click.ClickException(exc.message) from exc
    except errors.IllegalTransition as exc:
        raise click.ClickException(f"API key {key_id} is not active: {exc.reason}") from exc
    finally:
        store.close()
    if as_json:
        return echo_json({"key_id": state.key_id, "owner": state.owner, "revoked_at": state.revoked_at})
    click.echo(f"revoked API key {state.key_id} of owner {state.owner}")


#: The commands :mod:`jobtape.cli` registers.
COMMANDS = [keys]
