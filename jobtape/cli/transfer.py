"""Operator commands that move events in and out of the log: export, import, archive.

Registered on the ``jobtape`` group by :mod:`jobtape.cli`. The file format is
:mod:`jobtape.audit.exchange` (JSON Lines, one stored event per line, whole streams).
"""

from __future__ import annotations

import getpass
import json
import socket
import sys
from pathlib import Path
from typing import TextIO

import click

from jobtape import clock, errors, runtime
from jobtape.audit import checkpoint as checkpoints
from jobtape.audit import retention, timeparse, transfer
from jobtape.cli.audit import (
    data_dir_option,
    echo_json,
    existing_store_settings,
    json_option,
    settings_from,
    tables_app_option,
    tables_of,
    with_store,
)
from jobtape.eventlog import logkey
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.store import ConstraintViolation, EventStore

__all__ = ["COMMANDS", "archive", "export", "import_command"]


def _bound(text: str | None, name: str) -> transfer.Bound:
    if text is None:
        return None
    try:
        return timeparse.parse_position_or_time(text, clock.utcnow())
    except errors.InvalidTimeSpec as exc:
        raise click.BadParameter(f"{exc.message} (or give a global position such as 1200)", param_hint=name) from exc


@click.command()
@click.option("--since", metavar="POSITION|TIME", help="Only jobs created at or after this global position or time (by default all).")
@click.option("--until", metavar="POSITION|TIME", help="Only jobs created before this global position or time (by default all).")
@click.option("--job", "job_id", metavar="JOB_ID", help="Only this job (by default all).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file (by default stdout).")
@data_dir_option
@json_option
@with_store
def export(since: str | None, until: str | None, job_id: str | None, output: Path | None, as_json: bool, store: EventStore) -> None:
    """Write the selected jobs' events as JSON Lines, one stored event per line with its position and hash.

    Jobs are selected by the position or time of their job.created; each selected job's
    stream is written whole, in position order, so the file can be imported. Without
    --since, --until and --job the whole log is written, API keys' streams included. A summary
    goes to stderr (as JSON with --json).
    """
    selected = transfer.select_jobs(
        store,
        since=_bound(since, "--since"),
        until=_bound(until, "--until"),
        job_id=job_id,
    )
    if job_id is not None and not selected:
        raise click.ClickException(f"Job not found: {job_id}")
    everything = since is None and until is None and job_id is None
    if output is None:
        report = transfer.export(store, sys.stdout, None if everything else selected)
    else:
        with output.open("w", encoding="utf-8") as out:
            report = transfer.export(store, out, None if everything else selected)
    summary = {"jobs": report.jobs, "events": report.events, **({"keys": report.keys} if report.keys else {})}
    keys = f" and {report.keys} API keys" if report.keys else ""
    click.echo(json.dumps(summary) if as_json else f"exported {report.events} events of {report.jobs} jobs{keys}", err=True)


@click.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder of the target event log (none by default: required); the imported jobs must not exist there."
    " With JOB_STORE_BACKEND=libsql the target is the TURSO_DATABASE_URL database instead.",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.File("r", encoding="utf-8"),
    metavar="FILE",
    help="A checkpoint (`jobtape checkpoint` of the source log) the export must extend (none by default).",
)
@click.option(
    "--key-file",
    "key_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="PATH",
    help="Also accept exports signed with the log key in this file, e.g. the source's data_dir/log-key (repeatable;"
    " by default only the target's keys: JOBTAPE_LOG_KEY, JOBTAPE_LOG_KEYS, data_dir/log-key).",
)
@click.option(
    "--unkeyed",
    is_flag=True,
    help="Accept an export without the keyed trailer and chain (made before tamper evidence, or without the key);"
    " only its unkeyed sha256 chains are checked (off by default).",
)
@json_option
@tables_app_option
def import_command(
    file: TextIO,
    data_dir: Path,
    checkpoint_file: TextIO | None,
    key_files: tuple[Path, ...],
    unkeyed: bool,
    as_json: bool,
    app_reference: str | None,
) -> None:
    """Load an export (FILE, or - for stdin) into the event log, re-checking it.

    The target is the SQLite log under --data-dir, or the libSQL database the environment
    names (JOB_STORE_BACKEND=libsql, TURSO_DATABASE_URL): e.g. to move a local log to Turso.

    Every line's version and hash chain is checked and every stream folded before anything
    is written; a gapped or edited export is refused naming the line. The export's keyed
    trailer and chain must verify under a key held (the target's, or --key-file's), so an
    export with lines removed is refused; with --checkpoint it must extend that checkpoint.
    Events keep their recorded_at, actor and hash; positions are assigned by the target
    log and chained under its key. The jobs projection is written in the same batches.
    """
    tables = tables_of(app_reference)
    store = runtime.open_store(settings_from(data_dir=data_dir), tables)
    try:
        keys = None if unkeyed else _import_keys(store, key_files)
        checkpoint = None
        if checkpoint_file is not None:
            if keys is None:
                raise click.ClickException("--checkpoint cannot be combined with --unkeyed")
            try:
                checkpoint = checkpoints.decode_checkpoint(checkpoint_file.read(), keys)
            except checkpoints.CheckpointError as exc:
                raise click.ClickException(f"{checkpoint_file.name}: {exc}") from exc
        report = transfer.import_lines(store, file, tables, keys=keys, checkpoint=checkpoint)
    except errors.InvalidExport as exc:
        raise click.ClickException(f"{file.name}: {exc.message}") from exc
    finally:
        store.close()
    if as_json:
        return echo_json(
            {
                "jobs": report.jobs,
                "events": report.events,
                "firstPosition": report.first_position,
                "lastPosition": report.last_position,
                **({"keys": report.keys} if report.keys else {}),
            }
        )
    span = f" at positions {report.first_position}-{report.last_position}" if report.events else ""
    api_keys = f" and {report.keys} API keys" if report.keys else ""
    click.echo(f"imported {report.events} events of {report.jobs} jobs{api_keys}{span}")


def _import_keys(store: EventStore, key_files: tuple[Path, ...]) -> LogKeys:
    """The target's keys plus the keys in ``key_files`` (verification only)."""
    assert store.keys is not None  # open_store creates the target's key
    older = dict(store.keys.older)
    for path in key_files:
        secret = logkey.load_key_file(path, create=False)
        if secret is None:
            raise click.ClickException(f"{path}: cannot read a log key")
        older[logkey.key_id_of(secret)] = secret
    return LogKeys(store.keys.current_id, store.keys.current, older)


@click.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="DURATION",
    help="Archive finished jobs whose last event is older than this, e.g. 30d, 12h (required, none by default).",
)
@click.option(
    "--to",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The export file to write (required, none by default; JSON Lines that `jobtape import` reads).",
)
@click.option(
    "--keep-blobs", is_flag=True, help="Leave the jobs' files (uploads, prepared assets, previews) in storage; by default they are removed."
)
@data_dir_option
@json_option
@tables_app_option
def archive(older_than: str, path: Path, keep_blobs: bool, data_dir: Path, as_json: bool, app_reference: str | None) -> None:
    """Export finished jobs older than --older-than to --to, then remove their events, rows and files.

    First each job's files (its upload, prepared asset, rendered preview) are removed on
    record: a `job.blobs_deleted` event naming the keys and the archive is appended to the
    job, then the keys are deleted from storage (unless --keep-blobs). The export, which
    carries those events, follows. The removal of the events is one recorded batch: an
    `archives` row (when, by whom, cutoff, file, the file's sha256) and one `archived_jobs`
    row per job; ordinary DELETE stays refused. `jobtape import FILE` brings the jobs back
    (at new positions; their removed files stay removed).
    """
    try:
        age = timeparse.parse_duration(older_than)
    except errors.InvalidTimeSpec as exc:
        raise click.BadParameter(exc.message, param_hint="--older-than") from exc
    settings = existing_store_settings(data_dir)
    tables = tables_of(app_reference)
    store = runtime.open_store(settings, tables)
    actor = f"cli:{getpass.getuser()}@{socket.gethostname()}"
    try:
        storage = None if keep_blobs else runtime.open_storage(settings)
        report = retention.archive(store, cutoff=clock.utcnow() - age, path=path, actor=actor, storage=storage, tables=tables)
    except errors.StorageError as exc:
        raise click.ClickException(
            f"archive stopped, no event was removed: a file could not be deleted ({exc.message});"
            " its removal is recorded, run the archive again"
        ) from exc
    except ConstraintViolation as exc:
        raise click.ClickException(f"archive refused, nothing was removed: {exc.detail}") from exc
    except errors.InvalidExport as exc:
        raise click.ClickException(
            f"archive refused, nothing was removed: the log fails the export checks (run `jobtape verify`): {exc.message}"
        ) from exc
    finally:
        store.close()
    removed = sum(len(keys) for keys in report.removed_keys.values())
    if as_json:
        return echo_json(
            {
                "archiveId": report.archive_id,
                "jobs": report.jobs,
                "events": report.events,
                "file": str(report.path),
                "sha256": report.sha256,
                "cutoff": report.cutoff,
                "blobsKept": keep_blobs,
                "removedKeys": report.removed_keys,
                "keptKeys": report.kept_keys,
            }
        )
    click.echo(
        f"archived {report.jobs} jobs ({report.events} events) finished before"
        f" {clock.format_timestamp(report.cutoff)} to {report.path} (sha256 {report.sha256})"
        + (f"; archive {report.archive_id}" if report.archive_id else "; nothing to remove")
    )
    if keep_blobs:
        click.echo(f"--keep-blobs: kept {report.kept_keys} files of the archived jobs in storage; nothing removes them later")
    elif report.jobs:
        click.echo(
            f"removed {removed} files of the archived jobs from storage (each job's job.blobs_deleted in the archive file names them)"
        )


#: The commands :mod:`jobtape.cli` registers.
COMMANDS = [export, import_command, archive]
