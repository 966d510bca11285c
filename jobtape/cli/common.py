"""Helpers shared by the ``jobtape`` commands: consoles, common options, settings, the embedded app, history.

The CLI is the composition root: it reads the environment through click's ``envvar``
options (flag, then ``JOBTAPE_*`` variable, then default), builds one
:class:`jobtape.config.Settings` and wires repository, storage, workers and app.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobtape import clock, defaults, runtime, startup
from jobtape.app import App, load_app
from jobtape.audio.settings import AudioSettings
from jobtape.audit import describe, timeline
from jobtape.cli import audit as cli_audit
from jobtape.cli import types
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.projections import state as job_state
from jobtape.projections.repository import AppendResult, JobRepository
from jobtape.worker import runner

__all__ = ["app_option", "common_options", "console", "embedded_app", "existing_store_settings", "print_history", "settings_from"]


def console(*, stderr: bool = False) -> Console:
    """A rich console; when not a terminal (a pipe, a test) it is wide, so nothing is cut."""
    made = Console(stderr=stderr, highlight=False, emoji=False)  # worker ids like host:100:1 are no emoji codes
    if not made.is_terminal:
        made.width = 200
    return made


def common_options(*, worker: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding ``--data-dir`` (and with ``worker`` the polling options) to a command."""
    options = [
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default="./var",
            envvar="JOBTAPE_DATA_DIR",
            show_envvar=True,
            show_default=True,
            help="Folder of the event log (jobtape.db) and the local storage (storage/).",
        ),
    ]
    if worker:
        options += [
            click.option(
                "--poll-interval",
                "poll_interval_s",
                type=types.Seconds(0.01, 3600.0),
                default=1.0,
                envvar="JOBTAPE_POLL_INTERVAL",
                show_envvar=True,
                show_default=True,
                help="How often a worker polls the log for new jobs and cancels, in seconds.",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=1,
                envvar="JOBTAPE_CONCURRENCY",
                show_envvar=True,
                show_default=True,
                help="Jobs one worker runs at once.",
            ),
            click.option(
                "--allow-private-urls",
                is_flag=True,
                default=False,
                envvar="JOBTAPE_ALLOW_PRIVATE_URLS",
                show_envvar=True,
                help="Let URL ingests fetch from loopback, private, link-local and other"
                " non-public addresses (off by default: server-side request forgery guard).",
            ),
            click.option(
                "--max-download-bytes",
                type=click.IntRange(min=1),
                default=AudioSettings.max_download_bytes,
                envvar="JOBTAPE_MAX_DOWNLOAD_BYTES",
                show_envvar=True,
                show_default=True,
                help="Largest media a URL ingest downloads, in bytes.",
            ),
        ]

    return lambda command: functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _load_app(ctx: click.Context, param: click.Parameter, reference: str | None) -> App | None:
    """Load the ``--app`` reference (``None`` when not given); a bad one is a usage error (exit 2)."""
    if not reference:
        return None
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # as celery -A and procrastinate --app find a project's module
    try:
        loaded = load_app(reference)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    if not loaded.job_types:
        raise click.BadParameter(f"{reference} registers no job type", ctx=ctx, param=param)
    return loaded


def app_option(action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding ``--app MODULE:ATTR`` (``JOBTAPE_APP``); the command gets the loaded ``App`` (or ``None``) as ``app``.

    The module is imported from the current folder or ``PYTHONPATH`` (:func:`jobtape.app.load_app`);
    a reference that names no :class:`App`, or one with no job type, is a usage error (exit 2).

    Args:
        action: what the command does with the app's job types, for the help text.
    """
    return click.option(
        "--app",
        "app",
        default=None,
        envvar="JOBTAPE_APP",
        show_envvar=True,
        metavar="MODULE:ATTR",
        callback=_load_app,
        help=f"{action} the job types of this jobtape.App (e.g. myproject.jobs:app), and claim no other type;"
        " by default the audio jobs (docs/library.md).",
    )


settings_from = cli_audit.settings_from
existing_store_settings = cli_audit.existing_store_settings
tables_app_option = cli_audit.tables_app_option


def embedded_app(
    settings: Settings,
    worker_count: int,
    *,
    wait_for_store: bool = False,
    on_worker_fatal: Callable[[Exception], None] | None = None,
    app: App | None = None,
    audio_settings: AudioSettings | None = None,
) -> tuple[Any, JobRepository]:
    """The API with ``worker_count`` in-process workers woken by every new job and cancel.

    With ``wait_for_store`` an unreachable store is retried with backoff (:mod:`jobtape.startup`).
    ``on_worker_fatal`` is called from a worker's thread when its loop ends because the store
    refused the credentials (:attr:`runner.Worker.on_fatal`). With ``app`` (``serve --app``)
    ``POST /api/jobs`` accepts its job types, the workers run them (and claim no other
    type) and its routes are served; without, the default app's (:func:`jobtape.defaults.default_app`:
    the audio jobs, with ``audio_settings``; ``None``: from the environment).
    """
    job_app = app or defaults.default_app(settings, audio_settings)
    from jobtape.http import app as http_app

    workers: list[runner.Worker] = []

    def wake_workers(result: AppendResult) -> None:
        for worker in workers:
            worker.on_append(result)

    if wait_for_store:
        repository = startup.open_repository_waiting(settings, on_append=wake_workers, tables=job_app.tables)
    else:
        repository = runtime.open_repository(settings, on_append=wake_workers, tables=job_app.tables)
    storage = runtime.open_storage(settings)
    workers.extend(
        runner.Worker(repository, storage, settings, handlers=job_app.job_handlers(), limits=job_app.limits()) for _ in range(worker_count)
    )
    for worker in workers:
        worker.on_fatal = on_worker_fatal

    def start_workers() -> None:
        for worker in workers:
            worker.start()

    def stop_workers() -> None:  # in parallel, so no worker claims while another drains
        stopping = [threading.Thread(target=worker.stop) for worker in workers]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    api = http_app.create_app(
        repository,
        storage,
        settings,
        routes=job_app.routes_for(storage),
        dependencies=job_app.dependencies,
        on_startup=[start_workers],
        on_shutdown=[stop_workers],
        job_types=job_app.job_types,
        description=job_app.description,
    )
    return api, repository


_time_ms = describe.time_ms
_short = describe.short
_details = describe.details
_first_line = describe.first_line


def print_history(out: Console, repository: JobRepository, job_id: str, *, as_json: bool = False) -> None:
    """Print a job's events as a timeline table, then its current status.

    Raises:
        click.ClickException: no job has this id (exit 1).
    """
    recorded = repository.store.read_stream(job_id)
    if not recorded:
        raise click.ClickException(f"Job not found: {job_id}")
    state = repository.load(job_id) or job_state.fold(recorded)
    assert state is not None
    if as_json:
        events = [
            {
                "position": r.position,
                "version": r.version,
                "type": r.type,
                "actor": r.actor,
                "recordedAt": clock.format_timestamp(r.recorded_at),
                "data": msgspec.to_builtins({"type": r.type, **ev.event_fields(r.event)}),
            }
            for r in recorded
        ]
        summary = cli_audit.timeline_json(timeline.summarize(recorded))
        return click.echo(json.dumps({"jobId": job_id, "status": state.status, "events": events, "summary": summary}, indent=2))
    table = Table(title=f"job {job_id}", title_justify="left")
    for name, options in (
        ("time (UTC)", {"no_wrap": True}),
        ("delta", {"justify": "right", "no_wrap": True}),
        ("actor", {}),
        ("type", {"no_wrap": True}),
        ("details", {}),
    ):
        table.add_column(name, **options)
    previous: dt.datetime | None = None
    for item in recorded:
        delta = f"+{(item.recorded_at - previous).total_seconds():.3f}s" if previous else ""
        table.add_row(_time_ms(item.recorded_at), delta, escape(item.actor), item.type, escape(_details(item.event)))
        previous = item.recorded_at
    out.print(table)
    extra = {"stage": state.stage, "progress": f"{state.progress}%", "error": state.error and _first_line(state.error)}
    shown = escape(", ".join(f"{k} {v}" for k, v in extra.items() if v is not None))
    cli_audit.print_timeline(out, timeline.summarize(recorded))
    out.print(f"status: [bold]{state.status}[/bold] ({shown}; {len(recorded)} events)")
