"""jobtape: long audio jobs recorded in an append-only event log.

Layout (see docs/architecture.md):

- ``jobtape.eventlog``: event types (pure) and the event store port with its SQL backends.
- ``jobtape.projections``: the pure fold over a job's events and the SQL projections.
- ``jobtape.storage``: the blob storage port and its backends.
- ``jobtape.worker``: claims jobs and runs ffmpeg / yt-dlp as child processes.
- ``jobtape.http``: the Litestar API.
- ``jobtape.app``: the engine as a library: :class:`App` registers job types (``@app.job_type``).
- ``jobtape.client``: :class:`Client` / :class:`AsyncClient`, the HTTP client of a server's job routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtape.app import App, JobContext, load_app
    from jobtape.client import AsyncClient, Client
    from jobtape.errors import JobFailed

__all__ = ["App", "AsyncClient", "Client", "JobContext", "JobFailed", "__version__", "load_app"]

#: The public names and the module each comes from, imported on first use (PEP 562), so
#: ``from jobtape import errors`` in the HTTP API or a worker does not load the whole engine.
_PUBLIC = {"App": "jobtape.app", "JobContext": "jobtape.app", "load_app": "jobtape.app", "JobFailed": "jobtape.errors",
           "Client": "jobtape.client", "AsyncClient": "jobtape.client"}


def __getattr__(name: str) -> Any:
    """Import a public name on first use (``jobtape.App``, ``jobtape.Client``, ``jobtape.JobFailed``, ...)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'jobtape' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)

__version__ = "0.1.0"
