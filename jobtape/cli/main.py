"""The ``jobtape`` command group: serve the API, run workers, show a job's history, rebuild.

Other commands live beside this module (:mod:`jobtape.cli.demo`, :mod:`jobtape.cli.audit`,
:mod:`jobtape.cli.transfer`, :mod:`jobtape.cli.keys`) and are registered on the group here. litestar, uvicorn and
httpx are imported in the commands that need them, so ``history`` and ``rebuild`` start fast.
"""

from __future__ import annotations

import ipaddress
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobtape import defaults, errors, runtime, startup
from jobtape.app import App
from jobtape.audit import describe
from jobtape.auth.principal import AUTH_MODES
from jobtape.cli import audit as cli_audit
from jobtape.cli import demo as cli_demo
from jobtape.cli import keys as cli_keys
from jobtape.cli import transfer as cli_transfer
from jobtape.cli import types
from jobtape.cli.common import (
    app_option,
    common_options,
    console,
    embedded_app,
    existing_store_settings,
    print_history,
    settings_from,
)
from jobtape.cli.worker_options import worker_settings_options
from jobtape.config import Settings
from jobtape.projections import rebuild as rebuild_projection
from jobtape.projections.repository import JobRepository
from jobtape.worker import runner

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="jobtape")
def cli() -> None:
    """jobtape: jobs recorded in an append-only event log (the audio jobs by default; --app for yours).

    Start with `jobtape demo`: it runs the API with an embedded worker, ingests a sample
    file and prints the result and the job's event history.
    """


def main() -> None:
    """Console-script entry point (``jobtape``, ``python -m jobtape``).

    Any jobtape error that reaches it ends the command with its message and exit status 1,
    not a traceback: a store that refuses the credentials (:class:`errors.StoreAuthRejected`),
    one that cannot be reached by a command that does not wait for it
    (:class:`errors.StoreUnavailable`; ``serve`` and ``worker`` wait), a full disk
    (:class:`errors.StoreFull`), a work folder parent that is unsafe to use
    (:class:`errors.StorageError`). Other exceptions are bugs and keep their traceback.
    """
    try:
        cli.main(prog_name="jobtape")
    except errors.JobtapeError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        raise SystemExit(1) from exc


for _command in (cli_demo.demo, *cli_audit.COMMANDS, *cli_transfer.COMMANDS, *cli_keys.COMMANDS):
    cli.add_command(_command)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port to listen on.")
@common_options(worker=True)
@click.option(
    "--workers",
    "worker_count",
    type=click.IntRange(min=0),
    default=1,
    envvar="JOBTAPE_WORKERS",
    show_envvar=True,
    show_default=True,
    help="Embedded workers in the API process (0: none; run `jobtape worker` separately).",
)
@click.option(
    "--max-upload-bytes",
    type=click.IntRange(min=1),
    default=Settings.max_upload_bytes,
    envvar="JOBTAPE_MAX_UPLOAD_BYTES",
    show_envvar=True,
    show_default=True,
    help="Largest accepted upload, in bytes.",
)
@click.option(
    "--upload-idle-timeout",
    "upload_idle_timeout_s",
    type=types.Seconds(0.0, types.DAY_S),
    default=Settings.upload_idle_timeout_s,
    envvar="JOBTAPE_UPLOAD_IDLE_TIMEOUT",
    show_envvar=True,
    show_default=True,
    help="Seconds an upload may send nothing before it is abandoned (408) and its spool file removed (0: no limit).",
)
@click.option(
    "--upload-min-rate",
    "upload_min_rate_bytes_s",
    type=types.Finite(0.0, 1e12),
    default=Settings.upload_min_rate_bytes_s,
    envvar="JOBTAPE_UPLOAD_MIN_RATE",
    show_envvar=True,
    show_default=True,
    help="Least upload rate in bytes/s, averaged over each idle-timeout window; slower uploads are abandoned (408; 0: no minimum).",
)
@click.option(
    "--max-concurrent-uploads",
    type=click.IntRange(min=1),
    default=Settings.max_concurrent_uploads,
    envvar="JOBTAPE_MAX_CONCURRENT_UPLOADS",
    show_envvar=True,
    show_default=True,
    help="Uploads received at once; the next gets 503 with Retry-After before any byte is read.",
)
@click.option(
    "--max-active-jobs",
    type=click.IntRange(min=1),
    default=Settings.max_active_jobs,
    envvar="JOBTAPE_MAX_ACTIVE_JOBS",
    show_envvar=True,
    show_default=True,
    help="Per-owner limit of pending + processing jobs; the next POST gets 429.",
)
@click.option(
    "--auth",
    "auth_mode",
    type=click.Choice(AUTH_MODES),
    default=None,
    help="Who may call the API: off (by default; loopback only; owner from X-Client-Id), required (Bearer API key or JWT "
    "on every route but /health), trusted-proxy (X-Client-Id only from --trusted-proxy addresses). Env JOBTAPE_AUTH.",
)
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    metavar="CIDR",
    help="An address or CIDR allowed to name the owner with --auth trusted-proxy (repeatable; none by default; env JOBTAPE_TRUSTED_PROXY, comma-separated).",
)
@click.option(
    "--rate-limit",
    default=None,
    metavar="N/UNIT",
    help="Requests per caller on the submit routes, like 60/minute (unit second|minute|hour|day); "
    "over it: 429 with Retry-After. No limit by default. Env JOBTAPE_RATE_LIMIT.",
)
@worker_settings_options
@app_option("Serve (POST /api/jobs) and run")
def serve(
    host: str,
    port: int,
    data_dir: Path,
    poll_interval_s: float,
    concurrency: int,
    worker_count: int,
    max_upload_bytes: int,
    upload_idle_timeout_s: float,
    upload_min_rate_bytes_s: float,
    max_concurrent_uploads: int,
    max_active_jobs: int,
    auth_mode: str | None,
    trusted_proxies: tuple[str, ...],
    rate_limit: str | None,
    allow_private_urls: bool,
    max_download_bytes: int,
    worker_settings: dict[str, Any],
    app: App | None,
) -> None:
    """Serve the HTTP API (with embedded workers unless --workers 0) until Ctrl-C.

    With --app, POST /api/jobs accepts the app's job types and the embedded workers run them
    (and claim no other type); without it, the workers run the audio jobs.

    On shutdown the embedded workers stop like `jobtape worker` does: no more claims,
    running jobs get --grace seconds, then they are released. An event store unreachable at
    start-up is retried with backoff, like `jobtape worker` does, until SIGINT/SIGTERM.
    If the store refuses the credentials (at start-up, or later to an embedded worker), the
    server stops and exits 1 with the message.

    --auth off (the default) is refused on an address other than loopback (exit 2): anyone who
    can reach the port could act as any owner. Production: --auth required (docs/security.md).
    """
    import uvicorn

    engine_values, audio_values = cli_audit.split_values(worker_settings)
    settings = settings_from(
        data_dir=data_dir,
        poll_interval_s=poll_interval_s,
        concurrency=concurrency,
        max_upload_bytes=max_upload_bytes,
        upload_idle_timeout_s=upload_idle_timeout_s,
        upload_min_rate_bytes_s=upload_min_rate_bytes_s,
        max_concurrent_uploads=max_concurrent_uploads,
        max_active_jobs=max_active_jobs,
        auth_mode=auth_mode,
        trusted_proxies=trusted_proxies or None,
        rate_limit=rate_limit,
        **engine_values,
    )
    check_auth_host(settings.auth_mode, host)
    from jobtape.http import auth as http_auth

    try:  # a bad JWT key source stops here, before the store is opened
        http_auth.Authenticator.from_settings(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    audio_settings = cli_audit.audio_settings_from(
        allow_private_urls=allow_private_urls, max_download_bytes=max_download_bytes, **audio_values
    )
    fatal: list[Exception] = []
    servers: list[uvicorn.Server] = []

    def stop_serving(exc: Exception) -> None:  # an embedded worker's credentials were refused
        fatal.append(exc)
        for server in servers:
            server.should_exit = True

    # Until uvicorn installs its own handlers, SIGINT/SIGTERM end the wait for the store.
    previous = {sig: signal.signal(sig, _stop_handler([])) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        api, repository = embedded_app(
            settings, worker_count, wait_for_store=True, on_worker_fatal=stop_serving, app=app, audio_settings=audio_settings
        )
    except _StopSignal:
        click.echo("stopped before the event store answered", err=True)
        return
    finally:
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)
    servers.append(uvicorn.Server(uvicorn.Config(api, host=host, port=port)))
    try:
        servers[0].run()
    finally:
        repository.store.close()
    if fatal:  # exit 1 with the message (main()), so a supervisor sees a failing service
        raise fatal[0]
    if not servers[0].started:  # e.g. the port is taken: uvicorn logged why; its own exit status
        raise SystemExit(3)


def check_auth_host(auth_mode: str, host: str) -> None:
    """Refuse ``--auth off`` on an address other than loopback (issue 11).

    ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``) are allowed; any other
    name or address (``0.0.0.0``, a LAN address, a host name) is not.

    Raises:
        click.UsageError: exit 2, naming the three modes.
    """
    if auth_mode != "off":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise click.UsageError(
            f"--auth off serves every caller as any owner, so it is allowed only on a loopback address, not {host!r}. "
            "Choose one of the three modes: --auth required (Bearer API keys or JWTs), --auth trusted-proxy "
            "--trusted-proxy CIDR (a web backend names the owner), or --auth off with --host 127.0.0.1. "
            "See docs/security.md."
        )


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
@common_options(worker=True)
@worker_settings_options
@app_option("Run")
def worker(
    data_dir: Path,
    poll_interval_s: float,
    concurrency: int,
    allow_private_urls: bool,
    max_download_bytes: int,
    worker_settings: dict[str, Any],
    app: App | None,
) -> None:
    """Run a worker process that polls the event log, until SIGINT or SIGTERM.

    On the signal it stops claiming and gives running jobs --grace seconds to finish;
    then it terminates their children, appends job.released (the job returns to pending
    without using an attempt) and exits 0. A second signal cuts the grace to zero.
    If the event store is unreachable at start-up, it retries with backoff (0.5 s doubling
    to 30 s, one log line per try) until the store answers or a signal arrives.
    If the store refuses the credentials (at start-up or later, e.g. a revoked token),
    it terminates its children, appends nothing more and exits 1 with the message.
    Rules: docs/worker.md.
    """
    engine_values, audio_values = cli_audit.split_values(worker_settings)
    settings = settings_from(data_dir=data_dir, poll_interval_s=poll_interval_s, concurrency=concurrency, **engine_values)
    audio_settings = cli_audit.audio_settings_from(
        allow_private_urls=allow_private_urls, max_download_bytes=max_download_bytes, **audio_values
    )
    job_app = app or defaults.default_app(settings, audio_settings)
    started: list[runner.Worker] = []
    # The handler raises instead of setting an Event: it must take no lock the main thread may hold.
    handler = _stop_handler(started)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    repository: JobRepository | None = None
    try:
        # retries while the store is unreachable
        repository = startup.open_repository_waiting(settings, tables=job_app.tables)
        job_worker = runner.Worker(
            repository, runtime.open_storage(settings), settings, handlers=job_app.job_handlers(), limits=job_app.limits()
        )
        started.append(job_worker)
        job_worker.start()
        click.echo(
            f"worker {job_worker.worker_id} polling {runtime.describe_store(settings)} every {poll_interval_s:g} s,"
            f" up to {concurrency} job(s) at once; SIGINT/SIGTERM to stop",
            err=True,
        )
        job_worker.wait()  # forever, unless the store refuses the credentials (StoreAuthRejected: exit 1)
    except _StopSignal:
        if not started:
            click.echo("stopped before the event store answered", err=True)
        else:
            click.echo(
                f"stopping: no more claims; running jobs get {settings.shutdown_grace_s:g} s, then are released (a second signal: at once)",
                err=True,
            )
    finally:
        for job_worker in started:
            job_worker.stop()
            click.echo(
                f"worker {job_worker.worker_id}: {job_worker.finished_count} job(s) finished;"
                f" claims won {job_worker.claims_won}, lost to another actor {job_worker.claims_lost}",
                err=True,
            )
        if repository is not None:
            repository.store.close()
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)


@cli.command()
@click.argument("job_id")
@common_options()
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON instead of a table (off by default).")
def history(job_id: str, data_dir: Path, as_json: bool) -> None:
    """Show JOB_ID's events as a timeline (UTC time in ms, delta, actor, type, key fields); exit 1 if unknown."""
    repository = runtime.open_repository(existing_store_settings(data_dir), tables=defaults.default_tables())
    try:
        print_history(console(), repository, job_id, as_json=as_json)
    finally:
        repository.store.close()


def _difference_table(differences: Sequence[rebuild_projection.RowDifference]) -> Table:
    table = Table("table", "row", "column", "live", "rebuilt", title="differences")
    for item in differences:
        if item.column == "*":
            live = "(missing)" if item.live is None else f"row ({item.live.get('status', 'present')})"
            rebuilt = "(no events)" if item.rebuilt is None else f"row ({item.rebuilt.get('status', 'present')})"
        else:
            live, rebuilt = describe.short(repr(item.live), 60), describe.short(repr(item.rebuilt), 60)
        table.add_row(item.table, str(item.job_id), item.column, escape(live), escape(rebuilt))
    return table


@cli.command()
@common_options()
@click.option(
    "--verify", is_flag=True, help="Only compare (off by default): print the differences, change nothing, exit 1 if there are any."
)
@cli_audit.json_option
@cli_audit.tables_app_option
def rebuild(data_dir: Path, verify: bool, as_json: bool, app_reference: str | None) -> None:
    """Recompute every projection from the event log and replace it (or just verify).

    The projections are the default app's (jobs, assets, previews), or with --app that app's.

    Exits 1 when --verify finds differences, or when a stored event cannot be folded
    (the error names the job and the position). --json prints the report
    (jobsRebuilt, eventsRead, rowsRebuilt, applied, compared, differences);
    a plain rebuild replaces the tables without comparing them first (fast).
    It appends no event, so on libSQL it needs no JOBTAPE_LOG_KEY.
    """
    out = console()
    tables = cli_audit.tables_of(app_reference)
    settings = existing_store_settings(data_dir)
    # a rebuild appends no event: on a shared log (libSQL) it runs without JOBTAPE_LOG_KEY, reading only
    shared_without_key = settings.job_store_backend == "libsql" and not settings.log_key
    store = runtime.open_store(settings, tables, create_key=not shared_without_key)
    try:
        columns = (TextColumn("folding events"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
        err = console(stderr=True)
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("rebuild", total=None)

            def update(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            report = rebuild_projection.rebuild(store, apply_changes=not verify, progress=update, tables=tables)
    except (errors.IllegalTransition, errors.MalformedEvent) as exc:
        raise click.ClickException(f"the event log cannot be folded: {exc}") from exc
    finally:
        store.close()
    if as_json:
        cli_audit.echo_json(report)
        if report.differences and verify:
            raise SystemExit(1)
        return
    outcome = "the jobs table was replaced (and assets, previews)" if report.applied else "nothing was changed"
    compared = f"{len(report.differences)} differences" if report.compared else "not compared (--verify compares)"
    out.print(f"rebuilt {report.jobs_rebuilt} jobs from {report.events_read} events; {compared}; {outcome}")
    if report.differences:
        out.print(_difference_table(report.differences))
    if report.differences and verify:
        raise SystemExit(1)
