"""``jobtape demo``: the README's main command - API, embedded worker and one real ingest, end to end."""

from __future__ import annotations

import logging
import mimetypes
import socket
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from jobtape import runtime
from jobtape.cli import types
from jobtape.cli.common import (
    common_options,
    console,
    embedded_app,
    print_history,
    settings_from,
)
from jobtape.projections import state as job_state

__all__ = ["demo"]

_DEMO_MEDIA = Path("media") / "speech_ljspeech.wav"


def _demo_file(file: Path | None) -> Path:
    candidates = [file] if file is not None else [_DEMO_MEDIA, Path(__file__).resolve().parents[2] / _DEMO_MEDIA]
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


def _follow(out: Console, client: Any, job_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll the job every 0.1 s with a progress display until it is terminal; return the last poll body."""
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=out) as bar:
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


@click.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@common_options()
@click.option(
    "--timeout",
    "timeout_s",
    type=types.Seconds(1.0, types.DAY_S),
    default=300.0,
    show_default=True,
    help="Give up waiting for the job after this many seconds.",
)
def demo(file: Path | None, data_dir: Path, timeout_s: float) -> None:
    """Run the API with one embedded worker, ingest FILE, follow it, print its result and history.

    FILE defaults to media/speech_ljspeech.wav (of the current folder, else of the
    jobtape checkout). The server listens on 127.0.0.1 on a free port and stops at the
    end. Exits 1 if the job fails.
    """
    import httpx
    import uvicorn

    out = console()
    source = _demo_file(file)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per poll would bury the display
    settings = settings_from(data_dir=data_dir)
    app, repository = embedded_app(settings, 1)
    listener = socket.create_server(("127.0.0.1", 0))  # port 0: a free port, no race with other programs
    base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="demo api", daemon=True)
    thread.start()
    try:
        _wait_started(server, thread, 30.0)
        out.print(f"API at {base_url} (1 embedded worker, event log {runtime.describe_store(settings)})")
        with httpx.Client(base_url=base_url, timeout=60.0) as client, source.open("rb") as handle:
            content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
            response = client.post("/api/audio/ingest", files={"file": (source.name, handle, content_type)})
            if response.status_code not in (200, 202):
                raise click.ClickException(f"upload failed ({response.status_code}): {response.text}")
            job_id = response.json()["data"]["jobId"]
            out.print(f"uploaded {source} -> job {job_id}")
            view = _follow(out, client, job_id, timeout_s)
        out.print_json(data=view, sort_keys=False)
        print_history(out, repository, job_id)
    finally:
        server.should_exit = True
        thread.join(60.0)
        listener.close()
        repository.store.close()
    if view["status"] != "complete":
        raise click.ClickException(f"job {job_id} ended {view['status']}: {view['error']}")
