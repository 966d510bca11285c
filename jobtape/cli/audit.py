"""Operator commands over the event log: status/jobs as of a time, tail, verify, stats, and history's summary.

Registered on the ``jobtape`` group by :mod:`jobtape.cli`. Every command takes
``--data-dir`` (env ``JOBTAPE_DATA_DIR``) and ``--json`` (machine output on stdout).
Times are ISO 8601 or relative to now (``-10m``, ``-2h``, ``-1d``; see
:mod:`jobtape.audit.timeparse`). The logic lives in :mod:`jobtape.audit`; this module
only reads the store and prints.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobtape import clock, defaults, errors, runtime
from jobtape.app import load_app
from jobtape.audio.settings import AudioSettings
from jobtape.audit import asof, describe, logcheck, stats, timeline, timeparse, transfer
from jobtape.audit import checkpoint as checkpoints
from jobtape.cli import types
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog import stored as stored_events
from jobtape.eventlog.store import EventStore
from jobtape.projections.registry import Tables

__all__ = ["COMMANDS", "checkpoint_command", "jobs", "print_timeline", "stats_command", "status", "tail", "timeline_json", "verify_command"]


def console() -> Console:
    """A rich console on stdout; wide when not a terminal, so nothing is cut in pipes and tests."""
    out = Console(highlight=False, emoji=False)
    if not out.is_terminal:
        out.width = 200
    return out


def data_dir_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--data-dir`` (env ``JOBTAPE_DATA_DIR``) to a command."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default="./var",
        envvar="JOBTAPE_DATA_DIR",
        show_envvar=True,
        show_default=True,
        help="Folder of the event log (jobtape.db).",
    )(command)


def json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--json`` to a command."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables (off by default).")(command)


def audio_settings_from(**values: Any) -> AudioSettings:
    """The audio package's settings of a CLI command: its flags given plus the environment.

    Raises:
        click.ClickException: a variable has a bad value (exit 1, the message names it).
    """
    try:
        return AudioSettings.from_env(**values)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flag values -> ``(engine Settings fields, AudioSettings fields)``."""
    audio_fields = AudioSettings.fields()
    return ({k: v for k, v in values.items() if k not in audio_fields}, {k: v for k, v in values.items() if k in audio_fields})


def settings_from(**values: Any) -> Settings:
    """Settings of a CLI command: the flags given plus the environment, so every command uses
    the store ``JOB_STORE_BACKEND`` / ``TURSO_*`` name (the embedded SQLite file by default)
    and the storage ``STORAGE_BACKEND``, ``S3_*``/``R2_*``/``AWS_*`` name; see :class:`Settings`.

    Raises:
        click.ClickException: a variable has a bad value (exit 1, the message names it).
    """
    try:
        return Settings.from_env(**values)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def existing_store_settings(data_dir: Path) -> Settings:
    """:func:`settings_from` for a command that reads: exit 1 if the SQLite log is missing.

    Raises:
        click.ClickException: a bad variable, or no ``jobtape.db`` under ``data_dir``.
    """
    settings = settings_from(data_dir=data_dir)
    if settings.job_store_backend == "sqlite" and not settings.database_path.is_file():
        raise click.ClickException(f"no event log at {settings.database_path}; pass --data-dir (or set JOBTAPE_DATA_DIR)")
    return settings


def tables_of(reference: str | None) -> Tables:
    """The tables of the app ``reference`` names (``module:attr``), or the default app's (the audio jobs').

    Raises:
        click.BadParameter: the reference names no :class:`jobtape.App` (exit 2).
    """
    if not reference:
        return defaults.default_tables()
    sys.path.insert(0, str(Path.cwd()))  # as serve/worker --app find a project's module
    try:
        return load_app(reference).tables
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--app") from exc


def tables_app_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--app MODULE:ATTR`` (``JOBTAPE_APP``) to a command that writes projections; it gets ``app_reference``."""
    return click.option(
        "--app",
        "app_reference",
        default=None,
        envvar="JOBTAPE_APP",
        show_envvar=True,
        metavar="MODULE:ATTR",
        help="Cover the projections this jobtape.App registered (e.g. myproject.jobs:app); by default the audio"
        " jobs' (jobs, assets, previews).",
    )(command)


def open_existing_store(data_dir: Path) -> EventStore:
    """Open the event log the command names (see :func:`existing_store_settings`), with the default app's tables.

    The log key is read (``JOBTAPE_LOG_KEY`` or ``data_dir/log-key``) but never created
    here: without one the store reads, and verify reports the log as unkeyed.

    Raises:
        click.ClickException: a bad variable, no log, or the keyed upgrade refused.
    """
    try:
        return runtime.open_store(existing_store_settings(data_dir), defaults.default_tables(), create_key=False)
    except errors.LogKeyError as exc:
        raise click.ClickException(exc.message) from exc


def parse_time_option(text: str | None) -> dt.datetime | None:
    """``--as-of``/``--since`` text to aware UTC (``None`` stays ``None``); a bad value is a usage error (exit 2)."""
    if text is None:
        return None
    try:
        return timeparse.parse_time(text, clock.utcnow())
    except errors.InvalidTimeSpec as exc:
        raise click.BadParameter(exc.message) from exc


def echo_json(value: Any) -> None:
    """Print any msgspec-encodable value as indented JSON, keys in camelCase like the HTTP API."""
    click.echo(json.dumps(_camel_keys(msgspec.to_builtins(value)), indent=2))


def _camel_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel(k): _camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel_keys(v) for v in value]
    return value


def with_store(function: Callable[..., Any]) -> Callable[..., Any]:
    """Open the store from ``data_dir``, pass it as ``store``, close it; fold errors exit 1 with their message."""

    @functools.wraps(function)
    def wrapper(*args: Any, data_dir: Path, **kwargs: Any) -> Any:
        store = open_existing_store(data_dir)
        try:
            return function(*args, store=store, **kwargs)
        except (errors.IllegalTransition, errors.MalformedEvent) as exc:
            raise click.ClickException(f"the event log cannot be folded: {exc.message}") from exc
        finally:
            store.close()

    return wrapper


# -- history's summary -------------------------------------------------------------------------


def timeline_json(summary: timeline.JobTimeline) -> dict[str, Any]:
    """The summary as JSON builtins (camelCase keys, times as ISO 8601 text)."""
    return _camel_keys(msgspec.to_builtins(summary))  # type: ignore[no-any-return]


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def print_timeline(out: Console, summary: timeline.JobTimeline) -> None:
    """Print a job's attempts, time per stage and child processes as tables."""
    attempts = Table("attempt", "worker", "claimed (UTC)", "duration", "outcome", title="attempts", title_justify="left")
    for item in summary.attempts:
        attempts.add_row(
            str(item.attempt),
            escape(item.worker_id),
            describe.time_ms(item.claimed_at),
            describe.duration(item.duration_s),
            item.outcome or "running",
        )
    stages = Table("stage", "attempt", "worker", "started (UTC)", "duration", title="time per stage", title_justify="left")
    for span in summary.stages:
        stages.add_row(
            span.stage,
            str(span.attempt or "-"),
            escape(span.worker_id or "-"),
            describe.time_ms(span.started_at),
            describe.duration(span.duration_s),
        )
    kids = Table("pid", "program", "stage", "worker", "duration", "exit", title="child processes", title_justify="left")
    for child in summary.children:
        outcome = "orphaned" if child.orphaned and child.exit_status is None else str(child.exit_status)
        kids.add_row(
            str(child.pid), escape(child.program), child.stage or "-", escape(child.worker_id), describe.duration(child.duration_s), outcome
        )
    for table in (attempts, stages, kids):
        if table.row_count:
            out.print(table)
    who = (
        f"; cancel requested by {summary.cancel_requested_by} at {describe.time_ms(summary.cancel_requested_at)}"
        if summary.cancel_requested_by and summary.cancel_requested_at
        else ""
    )
    out.print(
        f"total: {describe.duration(summary.total_s)} from created to "
        f"{'finished' if summary.finished_at else 'now (not finished)'}{escape(who)}"
    )


# -- status / jobs as of a time -----------------------------------------------------------------


@click.command()
@click.argument("job_id")
@click.option("--as-of", "as_of", metavar="TIME", help="Fold the events up to TIME (ISO 8601 or -10m, -2h, -1d); by default up to now.")
@data_dir_option
@json_option
@with_store
def status(job_id: str, as_of: str | None, as_json: bool, store: EventStore) -> None:
    """Show JOB_ID's state folded from its events up to --as-of (exit 1 if it did not exist then)."""
    at = parse_time_option(as_of) or clock.utcnow()
    recorded = store.read_stream(job_id)
    if not recorded:
        raise click.ClickException(f"Job not found: {job_id}")
    prefix = asof.stream_as_of(recorded, at)
    state = asof.state_as_of(recorded, at)
    if state is None:
        raise click.ClickException(
            f"job {job_id} did not exist at {clock.format_timestamp(at)} (created {clock.format_timestamp(recorded[0].recorded_at)})"
        )
    place = None
    if state.status == "pending":
        place = next(j.queue_position for j in asof.jobs_as_of(store.iter_all(), at) if j.state.job_id == job_id)
    if as_json:
        return echo_json({"asOf": at, "eventsFolded": len(prefix), "queuePosition": place, "state": state})
    table = Table("field", "value", title=f"job {job_id} as of {describe.time_ms(at)}", title_justify="left")
    for name in (
        "status",
        "stage",
        "progress",
        "attempt",
        "worker_id",
        "cancel_requested",
        "finished",
        "error",
        "created_at",
        "updated_at",
        "version",
    ):
        value = getattr(state, name)
        shown = describe.time_ms(value) if isinstance(value, dt.datetime) else describe.short(value, 100)
        table.add_row(name, escape(shown))
    table.add_row("queue_position", str(place if place is not None else "-"))
    console().print(table)
    console().print(f"{len(prefix)} of {len(recorded)} events folded")


@click.command()
@click.option("--as-of", "as_of", metavar="TIME", help="Show the jobs as they were at TIME (ISO 8601 or -10m, -2h, -1d); by default now.")
@click.option(
    "--status",
    "status_filter",
    type=click.Choice(["pending", "processing", "complete", "failed", "cancelled"]),
    help="Only jobs in this status (by default all).",
)
@data_dir_option
@json_option
@with_store
def jobs(as_of: str | None, status_filter: str | None, as_json: bool, store: EventStore) -> None:
    """List every job as it was at --as-of, with queue positions of the pending ones."""
    at = parse_time_option(as_of) or clock.utcnow()
    found = [j for j in asof.jobs_as_of(store.iter_all(), at) if status_filter in (None, j.state.status)]
    if as_json:
        return echo_json(
            {
                "asOf": at,
                "jobs": [
                    {
                        "jobId": j.state.job_id,
                        "type": j.state.job_type,
                        "status": j.state.status,
                        "stage": j.state.stage,
                        "progress": j.state.progress,
                        "attempt": j.state.attempt,
                        "workerId": j.state.worker_id,
                        "queuePosition": j.queue_position,
                        "createdAt": j.state.created_at,
                        "updatedAt": j.state.updated_at,
                    }
                    for j in found
                ],
            }
        )
    table = Table(
        "queue",
        "job",
        "type",
        "status",
        "stage",
        "progress",
        "attempt",
        "worker",
        "created (UTC)",
        "updated (UTC)",
        title=f"jobs as of {describe.time_ms(at)}",
        title_justify="left",
    )
    for item in found:
        s = item.state
        table.add_row(
            str(item.queue_position or "-"),
            s.job_id,
            s.job_type,
            s.status,
            s.stage or "-",
            f"{s.progress}%",
            str(s.attempt),
            escape(s.worker_id or "-"),
            describe.time_ms(s.created_at),
            describe.time_ms(s.updated_at),
        )
    console().print(table)
    console().print(f"{len(found)} jobs")


# -- tail ----------------------------------------------------------------------------------------


def _start_position(store: EventStore, since: str | None, job_id: str | None, type_: str | None, lines: int) -> int:
    if since is not None:
        try:
            bound = timeparse.parse_position_or_time(since, clock.utcnow())
        except errors.InvalidTimeSpec as exc:
            raise click.BadParameter(f"{exc.message} (or give a global position such as 1200)") from exc
        if isinstance(bound, int):
            return bound
        first = store.first_position_since(bound)
        return first if first is not None else store.head_position() + 1
    found = store.nth_newest_position(lines, job_id=job_id, type_=type_)
    return found if found is not None else 1


def _follow(
    store: EventStore,
    start: int,
    job_id: str | None,
    type_: str | None,
    follow: bool,
    poll_interval_s: float,
    stop: threading.Event,
) -> Iterator[stored_events.StoredEvent]:
    position = start
    while not stop.is_set():
        for row in store.iter_stored(from_position=position, job_id=job_id):
            position = row.position + 1
            if type_ is None or row.type == type_:
                yield row
        # follow mode polls the log, so it sees other processes' appends; Ctrl-C sets ``stop``
        if not follow or stop.wait(poll_interval_s):
            return


@contextlib.contextmanager
def _ctrl_c_sets(stop: threading.Event) -> Iterator[None]:
    """While inside, SIGINT sets ``stop`` instead of raising KeyboardInterrupt.

    A KeyboardInterrupt raised in the middle of a store call (between a lock's acquire and
    its ``with`` body, say) could leave the store unable to close, so ``tail --follow`` hung
    on Ctrl-C now and then; a flag the loop checks between polls ends it cleanly.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they are appended, until Ctrl-C (off by default).")
@click.option("--job", "job_id", metavar="JOB_ID", help="Only this job's events (by default all jobs).")
@click.option("--type", "type_", metavar="TYPE", help="Only events of this type, e.g. job.failed (by default all).")
@click.option("--since", metavar="POSITION|TIME", help="Start at this global position or time (by default the last --lines events).")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Without --since, start with this many of the newest matching events.",
)
@click.option(
    "--poll-interval",
    "poll_interval_s",
    type=types.Seconds(0.01, 3600.0),
    default=0.5,
    show_default=True,
    help="With --follow, how often to read the log for new events, in seconds.",
)
@data_dir_option
@json_option
@with_store
def tail(
    follow: bool,
    job_id: str | None,
    type_: str | None,
    since: str | None,
    lines: int,
    poll_interval_s: float,
    as_json: bool,
    store: EventStore,
) -> None:
    """Print events of the log, one per line; with --follow keep reading new ones (Ctrl-C exits 0).

    --json prints export lines (see `jobtape export`).
    """
    from jobtape.audit import exchange

    start = _start_position(store, since, job_id, type_, lines) if since is not None or lines else store.head_position() + 1
    stop = threading.Event()
    with _ctrl_c_sets(stop):
        for row in _follow(store, start, job_id, type_, follow, poll_interval_s, stop):
            if as_json:
                click.echo(exchange.encode_line(row))
                continue
            recorded = stored_events.to_recorded_any(row)
            shown = describe.details(recorded.event) if isinstance(recorded, ev.RecordedEvent) else describe.key_details(recorded.event)
            click.echo(
                f"{row.position:>7} {describe.time_ms(recorded.recorded_at)} {row.job_id} v{row.version:<3}"
                f" {row.actor} {row.type} {shown}".rstrip()
            )


# -- verify / stats ------------------------------------------------------------------------------


@click.command("verify")
@click.option(
    "--against",
    "against",
    type=click.File("r", encoding="utf-8"),
    metavar="FILE|-",
    help="A checkpoint (the line `jobtape checkpoint` printed; - for stdin) the log must extend (none by default).",
)
@data_dir_option
@json_option
@with_store
def verify_command(against: TextIO | None, as_json: bool, store: EventStore) -> None:
    """Check the log's invariants, every stream's hash chain and the keyed whole-log chain; exit 1 on any violation.

    Checks: versions gapless per job, nothing after a terminal event, exactly one terminal
    event per finished job, the state rules, every child_started matched by a
    child_exited (or listed as orphaned) once the job is finished, and the sha256 chain.
    With the log key (JOBTAPE_LOG_KEY or data_dir/log-key): the keyed chain (edited,
    re-chained or removed events), the archive records' MACs (forged archive rows) and,
    with --against, that the log extends the checkpoint (its tail was not removed).
    Without the key it says "unkeyed" and checks only the unkeyed rules.
    """
    checkpoint = None
    if against is not None:
        if store.keys is None:
            raise click.ClickException("--against needs the log key: set JOBTAPE_LOG_KEY (or keep data_dir/log-key readable)")
        try:
            checkpoint = checkpoints.decode_checkpoint(against.read(), store.keys)
        except checkpoints.CheckpointError as exc:
            raise click.ClickException(f"{against.name}: {exc}") from exc
    report = logcheck.verify_store(store, checkpoint)
    if as_json:
        echo_json(report)
    else:
        out = console()
        if report.violations:
            table = Table("position", "job", "rule", "problem", title="violations", title_justify="left")
            for item in report.violations:
                table.add_row(str(item.position), item.job_id, item.rule, escape(item.message))
            out.print(table)
        verdict = f"{len(report.violations)} violations" if report.violations else "OK: no violations"
        keys = f" and {report.keys_checked} API keys" if report.keys_checked else ""
        out.print(f"chain: {report.chain}")
        out.print(f"checked {report.events_checked} events of {report.jobs_checked} jobs{keys}: {verdict}")
    if report.violations:
        raise SystemExit(1)


@click.command("checkpoint")
@data_dir_option
@with_store
def checkpoint_command(store: EventStore) -> None:
    """Print a signed log head (position, chain, time, key id, MAC) as one JSON line.

    Keep it away from the database (a file, an S3 object, a ticket): `jobtape verify
    --against FILE` later exits 1 if the log no longer extends it (its tail was removed or
    the log rewritten), even when the database's own writer did it. Needs the log key.
    """
    try:
        made = logcheck.make_checkpoint(store)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(checkpoints.encode_checkpoint(made))


@click.command("stats")
@click.option("--since", metavar="POSITION|TIME", help="Only jobs created at or after this global position or time (by default all).")
@data_dir_option
@json_option
@with_store
def stats_command(since: str | None, as_json: bool, store: EventStore) -> None:
    """Jobs per type and status, and p50/p95/max seconds per stage and per job type."""
    bound = None
    if since is not None:
        try:
            bound = timeparse.parse_position_or_time(since, clock.utcnow())
        except errors.InvalidTimeSpec as exc:
            raise click.BadParameter(exc.message) from exc
    selected = transfer.select_jobs(store, since=bound) if bound is not None else None
    result = stats.compute(transfer.timelines(store, selected))
    if as_json:
        return echo_json(result)
    out = console()
    counts = Table("type", "status", "jobs", title=f"{result.jobs} jobs", title_justify="left")
    for row in result.statuses:
        counts.add_row(row.job_type, row.status, str(row.jobs))
    out.print(counts)
    durations = Table("type", "stage", "count", "p50", "p95", "max", title="seconds per stage", title_justify="left")
    for item in result.durations:
        durations.add_row(item.job_type, item.stage, str(item.count), f"{item.p50_s:.3f}", f"{item.p95_s:.3f}", f"{item.max_s:.3f}")
    out.print(durations)


#: The commands :mod:`jobtape.cli` registers (with those of :mod:`jobtape.cli.transfer`).
COMMANDS = [status, jobs, tail, verify_command, checkpoint_command, stats_command]
