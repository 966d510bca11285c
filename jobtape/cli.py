"""The ``jobtape`` command line: serve the API, run workers, show a job's history, rebuild, demo.

The composition root: it reads the environment through click's ``envvar`` options (flag,
then ``JOBTAPE_*`` variable, then default), builds one :class:`jobtape.config.Settings` and
wires repository, storage, workers and app. litestar, uvicorn and httpx are imported in
the commands that need them, so ``history`` and ``rebuild`` start fast.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import mimetypes
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobtape import cli_audit, cli_replay, clock, errors, runtime, startup
from jobtape.audit import describe, timeline
from jobtape.cli_worker_options import worker_settings_options
from jobtape.config import Settings
from jobtape.projections import rebuild as rebuild_projection
from jobtape.projections import state as job_state
from jobtape.projections.repository import AppendResult, JobRepository
from jobtape.worker import runner

__all__ = ["cli", "main"]

_DEMO_MEDIA = Path("media") / "speech_ljspeech.wav"


def _console(*, stderr: bool = False) -> Console:
    """A rich console; when not a terminal (a pipe, a test) it is wide, so nothing is cut."""
    console = Console(stderr=stderr, highlight=False, emoji=False)  # worker ids like host:100:1 are no emoji codes
    if not console.is_terminal:
        console.width = 200
    return console


def _common(*, worker: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding ``--data-dir`` (and with ``worker`` the polling options) to a command."""
    options = [
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default="./var",
                     envvar="JOBTAPE_DATA_DIR", show_envvar=True, show_default=True,
                     help="Folder of the event log (jobtape.db) and the local storage (storage/)."),
    ]
    if worker:
        options += [
            click.option("--poll-interval", "poll_interval_s", type=click.FloatRange(min=0.01), default=1.0,
                         envvar="JOBTAPE_POLL_INTERVAL", show_envvar=True, show_default=True,
                         help="How often a worker polls the log for new jobs and cancels, in seconds."),
            click.option("--concurrency", type=click.IntRange(min=1), default=1, envvar="JOBTAPE_CONCURRENCY",
                         show_envvar=True, show_default=True, help="Jobs one worker runs at once."),
            click.option("--allow-private-urls", is_flag=True, default=False, envvar="JOBTAPE_ALLOW_PRIVATE_URLS",
                         show_envvar=True, help="Let URL ingests fetch from loopback, private, link-local and other"
                         " non-public addresses (off by default: server-side request forgery guard)."),
            click.option("--max-download-bytes", type=click.IntRange(min=1), default=Settings.max_download_bytes,
                         envvar="JOBTAPE_MAX_DOWNLOAD_BYTES", show_envvar=True, show_default=True,
                         help="Largest media a URL ingest downloads, in bytes."),
        ]

    return lambda command: functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


def _settings(**values: Any) -> Settings:
    """Settings from the flags given plus the backend variables (``JOB_STORE_BACKEND``, ``TURSO_*``,
    ``STORAGE_BACKEND``, ``S3_*``/``R2_*``/``AWS_*``; see :class:`Settings`)."""
    try:
        return Settings.from_env(**values)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def _existing_store_settings(data_dir: Path) -> Settings:
    settings = _settings(data_dir=data_dir)
    if settings.job_store_backend == "sqlite" and not settings.database_path.is_file():
        raise click.ClickException(f"no event log at {settings.database_path}; pass --data-dir (or set JOBTAPE_DATA_DIR)")
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="jobtape")
def cli() -> None:
    """jobtape: long audio jobs recorded in an append-only event log.

    Start with `jobtape demo`: it runs the API with an embedded worker, ingests a sample
    file and prints the result and the job's event history.
    """


def main() -> None:
    """Console-script entry point (``jobtape``, ``python -m jobtape``)."""
    cli.main(prog_name="jobtape")


for _command in (*cli_audit.COMMANDS, *cli_replay.COMMANDS):
    cli.add_command(_command)


def _embedded_app(settings: Settings, worker_count: int, *, wait_for_store: bool = False) -> tuple[Any, JobRepository]:
    """The API with ``worker_count`` in-process workers woken by every new job and cancel.

    With ``wait_for_store`` an unreachable store is retried with backoff (:mod:`jobtape.startup`).
    """
    from jobtape.http import app as http_app

    workers: list[runner.Worker] = []

    def wake_workers(result: AppendResult) -> None:
        for worker in workers:
            worker.on_append(result)

    if wait_for_store:
        repository = startup.open_repository_waiting(settings, on_append=wake_workers)
    else:
        repository = runtime.open_repository(settings, on_append=wake_workers)
    storage = runtime.open_storage(settings)
    workers.extend(runner.Worker(repository, storage, settings) for _ in range(worker_count))

    def start_workers() -> None:
        for worker in workers:
            worker.start()

    def stop_workers() -> None:  # in parallel, so no worker claims while another drains
        stopping = [threading.Thread(target=worker.stop) for worker in workers]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()

    app = http_app.create_app(repository, storage, settings, on_startup=[start_workers], on_shutdown=[stop_workers])
    return app, repository


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port to listen on.")
@_common(worker=True)
@click.option("--workers", "worker_count", type=click.IntRange(min=0), default=1, envvar="JOBTAPE_WORKERS",
              show_envvar=True, show_default=True,
              help="Embedded workers in the API process (0: none; run `jobtape worker` separately).")
@click.option("--max-upload-bytes", type=click.IntRange(min=1), default=Settings.max_upload_bytes,
              envvar="JOBTAPE_MAX_UPLOAD_BYTES", show_envvar=True, show_default=True,
              help="Largest accepted upload, in bytes.")
@click.option("--max-active-jobs", type=click.IntRange(min=1), default=Settings.max_active_jobs,
              envvar="JOBTAPE_MAX_ACTIVE_JOBS", show_envvar=True, show_default=True,
              help="Per-owner (X-Client-Id) limit of pending + processing jobs; the next POST gets 429.")
@worker_settings_options
def serve(host: str, port: int, data_dir: Path, poll_interval_s: float, concurrency: int, worker_count: int,
          max_upload_bytes: int, max_active_jobs: int, allow_private_urls: bool, max_download_bytes: int,
          worker_settings: dict[str, Any]) -> None:
    """Serve the HTTP API (with embedded workers unless --workers 0) until Ctrl-C.

    On shutdown the embedded workers stop like `jobtape worker` does: no more claims,
    running jobs get --grace seconds, then they are released. An event store unreachable at
    start-up is retried with backoff, like `jobtape worker` does, until SIGINT/SIGTERM.
    """
    import uvicorn

    settings = _settings(data_dir=data_dir, poll_interval_s=poll_interval_s, concurrency=concurrency,
                        max_upload_bytes=max_upload_bytes, max_active_jobs=max_active_jobs,
                        allow_private_urls=allow_private_urls,
                        max_download_bytes=max_download_bytes, **worker_settings)
    # Until uvicorn installs its own handlers, SIGINT/SIGTERM end the wait for the store.
    previous = {sig: signal.signal(sig, _stop_handler([])) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app, repository = _embedded_app(settings, worker_count, wait_for_store=True)
    except _StopSignal:
        click.echo("stopped before the event store answered", err=True)
        return
    finally:
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)
    try:
        uvicorn.run(app, host=host, port=port)
    finally:
        repository.store.close()


class _StopSignal(Exception):
    """Raised in the main thread by the first SIGINT/SIGTERM."""


def _stop_handler(job_workers: Sequence[runner.Worker]) -> Callable[[int, object], None]:
    """A signal handler: the first signal raises :class:`_StopSignal`, later ones cut the grace to zero.

    Args:
        job_workers: the workers whose grace a later signal cuts; may be filled after the
            handler is installed (it is read when the signal arrives).
    """
    seen: list[int] = []

    def handle(signum: int, frame: object) -> None:
        seen.append(signum)
        if len(seen) == 1:
            raise _StopSignal(signum)
        for job_worker in job_workers:
            job_worker.cut_grace()  # sets a plain attribute: no lock the main thread may hold

    return handle


@cli.command()
@_common(worker=True)
@worker_settings_options
def worker(data_dir: Path, poll_interval_s: float, concurrency: int, allow_private_urls: bool,
           max_download_bytes: int, worker_settings: dict[str, Any]) -> None:
    """Run a worker process that polls the event log, until SIGINT or SIGTERM.

    On the signal it stops claiming and gives running jobs --grace seconds to finish;
    then it terminates their children, appends job.released (the job returns to pending
    without using an attempt) and exits 0. A second signal cuts the grace to zero.
    If the event store is unreachable at start-up, it retries with backoff (0.5 s doubling
    to 30 s, one log line per try) until the store answers or a signal arrives.
    Rules: docs/worker.md.
    """
    settings = _settings(data_dir=data_dir, poll_interval_s=poll_interval_s, concurrency=concurrency,
                         allow_private_urls=allow_private_urls, max_download_bytes=max_download_bytes,
                         **worker_settings)
    started: list[runner.Worker] = []
    # The handler raises instead of setting an Event: it must take no lock the main thread may hold.
    handler = _stop_handler(started)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    repository: JobRepository | None = None
    try:
        repository = startup.open_repository_waiting(settings)  # retries while the store is unreachable
        job_worker = runner.Worker(repository, runtime.open_storage(settings), settings)
        started.append(job_worker)
        job_worker.start()
        click.echo(f"worker {job_worker.worker_id} polling {runtime.describe_store(settings)} every {poll_interval_s:g} s,"
                   f" up to {concurrency} job(s) at once; SIGINT/SIGTERM to stop", err=True)
        threading.Event().wait()
    except _StopSignal:
        if not started:
            click.echo("stopped before the event store answered", err=True)
        else:
            click.echo(f"stopping: no more claims; running jobs get {settings.shutdown_grace_s:g} s, then are released"
                       " (a second signal: at once)", err=True)
    finally:
        for job_worker in started:
            job_worker.stop()
        if repository is not None:
            repository.store.close()
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)


_time_ms = describe.time_ms
_short = describe.short
_details = describe.details
_first_line = describe.first_line


def _print_history(console: Console, repository: JobRepository, job_id: str, *, as_json: bool = False) -> None:
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
        events = [{"position": r.position, "version": r.version, "type": r.type, "actor": r.actor,
                   "recordedAt": clock.format_timestamp(r.recorded_at), "data": msgspec.to_builtins(r.event)}
                  for r in recorded]
        summary = cli_audit.timeline_json(timeline.summarize(recorded))
        return click.echo(json.dumps({"jobId": job_id, "status": state.status, "events": events, "summary": summary},
                                     indent=2))
    table = Table(title=f"job {job_id}", title_justify="left")
    for name, options in (("time (UTC)", {"no_wrap": True}), ("delta", {"justify": "right", "no_wrap": True}),
                          ("actor", {}), ("type", {"no_wrap": True}), ("details", {})):
        table.add_column(name, **options)
    previous: dt.datetime | None = None
    for item in recorded:
        delta = f"+{(item.recorded_at - previous).total_seconds():.3f}s" if previous else ""
        table.add_row(_time_ms(item.recorded_at), delta, escape(item.actor), item.type, escape(_details(item.event)))
        previous = item.recorded_at
    console.print(table)
    extra = {"stage": state.stage, "progress": f"{state.progress}%", "error": state.error and _first_line(state.error)}
    shown = escape(", ".join(f"{k} {v}" for k, v in extra.items() if v is not None))
    cli_audit.print_timeline(console, timeline.summarize(recorded))
    console.print(f"status: [bold]{state.status}[/bold] ({shown}; {len(recorded)} events)")


@cli.command()
@click.argument("job_id")
@_common()
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON instead of a table (off by default).")
def history(job_id: str, data_dir: Path, as_json: bool) -> None:
    """Show JOB_ID's events as a timeline (UTC time in ms, delta, actor, type, key fields); exit 1 if unknown."""
    repository = runtime.open_repository(_existing_store_settings(data_dir))
    try:
        _print_history(_console(), repository, job_id, as_json=as_json)
    finally:
        repository.store.close()


def _difference_table(differences: Sequence[rebuild_projection.RowDifference]) -> Table:
    table = Table("table", "row", "column", "live", "rebuilt", title="differences")
    for item in differences:
        if item.column == "*":
            live = "(missing)" if item.live is None else f"row ({item.live.get('status', 'present')})"
            rebuilt = "(no events)" if item.rebuilt is None else f"row ({item.rebuilt.get('status', 'present')})"
        else:
            live, rebuilt = _short(repr(item.live), 60), _short(repr(item.rebuilt), 60)
        table.add_row(item.table, item.job_id, item.column, escape(live), escape(rebuilt))
    return table


@cli.command()
@_common()
@click.option("--verify", is_flag=True, help="Only compare (off by default): print the differences, change nothing,"
              " exit 1 if there are any.")
def rebuild(data_dir: Path, verify: bool) -> None:
    """Recompute every projection (jobs, assets, previews) from the event log and replace it (or just verify).

    Exits 1 when --verify finds differences, or when a stored event cannot be folded
    (the error names the job and the position).
    """
    console = _console()
    store = runtime.open_store(_existing_store_settings(data_dir))
    try:
        columns = (TextColumn("folding events"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
        err = _console(stderr=True)
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("rebuild", total=None)
            update = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
            report = rebuild_projection.rebuild(store, apply_changes=not verify, progress=update)
    except (errors.IllegalTransition, errors.MalformedEvent) as exc:
        raise click.ClickException(f"the event log cannot be folded: {exc}") from exc
    finally:
        store.close()
    outcome = "the jobs table was replaced (and assets, previews)" if report.applied else "nothing was changed"
    console.print(f"rebuilt {report.jobs_rebuilt} jobs from {report.events_read} events;"
                  f" {len(report.differences)} differences; {outcome}")
    if report.differences:
        console.print(_difference_table(report.differences))
    if report.differences and verify:
        raise SystemExit(1)


def _demo_file(file: Path | None) -> Path:
    candidates = [file] if file is not None else [_DEMO_MEDIA, Path(__file__).resolve().parent.parent / _DEMO_MEDIA]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise click.ClickException(f"no such file: {candidates[0]}")


def _wait_started(server: Any, thread: threading.Thread, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive():
            raise click.ClickException("the API server failed to start (see the log above)")
        if time.monotonic() > deadline:
            raise click.ClickException(f"the API server did not start within {timeout_s:g} s")
        time.sleep(0.02)  # uvicorn offers no start callback; `started` is a plain attribute


def _follow(console: Console, client: Any, job_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the job every 0.1 s with a progress display until it is terminal; return the last poll body."""
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("pending", total=100)
        while True:
            response = client.get(f"/api/audio/jobs/{job_id}")
            if response.status_code != 200:
                raise click.ClickException(f"poll failed ({response.status_code}): {response.text}")
            view: dict[str, Any] = response.json()
            bar.update(task, completed=view["progress"], description=f"{view['status']} {view['stage'] or ''}")
            if view["status"] in job_state.TERMINAL_STATUSES:
                return view
            if time.monotonic() > deadline:
                raise click.ClickException(f"job {job_id} did not finish within {timeout_s:g} s (status {view['status']})")
            time.sleep(0.1)


@cli.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_common()
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Give up waiting for the job after this many seconds.")
def demo(file: Path | None, data_dir: Path, timeout_s: float) -> None:
    """Run the API with one embedded worker, ingest FILE, follow it, print its result and history.

    FILE defaults to media/speech_ljspeech.wav (of the current folder, else of the
    jobtape checkout). The server listens on 127.0.0.1 on a free port and stops at the
    end. Exits 1 if the job fails.
    """
    import httpx
    import uvicorn

    console = _console()
    source = _demo_file(file)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per poll would bury the display
    settings = _settings(data_dir=data_dir)
    app, repository = _embedded_app(settings, 1)
    listener = socket.create_server(("127.0.0.1", 0))  # port 0: a free port, no race with other programs
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="demo api", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread, 30.0)
        console.print(f"API at {base_url} (1 embedded worker, event log {runtime.describe_store(settings)})")
        with httpx.Client(base_url=base_url, timeout=60.0) as client, source.open("rb") as handle:
            content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
            response = client.post("/api/audio/ingest", files={"file": (source.name, handle, content_type)})
            if response.status_code not in (200, 202):
                raise click.ClickException(f"upload failed ({response.status_code}): {response.text}")
            job_id = response.json()["data"]["jobId"]
            console.print(f"uploaded {source} -> job {job_id}")
            view = _follow(console, client, job_id, timeout_s)
        console.print_json(data=view, sort_keys=False)
        _print_history(console, repository, job_id)
    finally:
        server.should_exit = True
        thread.join(60.0)
        listener.close()
        repository.store.close()
    if view["status"] != "complete":
        raise click.ClickException(f"job {job_id} ended {view['status']}: {view['error']}")
