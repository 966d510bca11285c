"""jobtape: a job system whose every job action is an event in an append-only log; the audio jobs are its first package.

Layout (see docs/architecture.md):

- ``jobtape.eventlog``: event types (pure) and the event store port with its SQL backends.
- ``jobtape.projections``: the pure fold over a job's events and the SQL projections.
- ``jobtape.storage``: the blob storage port and its backends.
- ``jobtape.worker``: claims jobs and runs their handlers (child processes killed on cancel).
- ``jobtape.http``: the Litestar API.
- ``jobtape.app``: the engine as a library: :class:`App` registers job types (``@app.job_type``).
- ``jobtape.client``: :class:`Client` / :class:`AsyncClient`, the HTTP client of a server's job routes.
- ``jobtape.errors``: the one exception tree (also reachable as ``jobtape.errors`` after ``import jobtape``).
- ``jobtape.audio``: the audio jobs (ingest, edit preview, save), registered on the default app.

The names a user needs most are importable from ``jobtape`` itself (docs/library.md): the
library (:class:`App`, :class:`JobContext`, :func:`load_app`), the client (:class:`Client`,
:class:`AsyncClient`), and the errors one catches or raises: :class:`JobtapeError` and its
groups (:class:`StoreError`, :class:`ConflictError`, :class:`RequestError`,
:class:`JobError`, :class:`StorageError`), :class:`JobFailed`, :class:`JobInterrupted`, and
the client's :class:`RequestRejected`, :class:`ServerError`, :class:`ServerUnreachable`,
:class:`WaitTimedOut`; each is the class of :mod:`jobtape.errors` of that name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobtape import client, errors
    from jobtape.app import App, JobContext, load_app
    from jobtape.client import AsyncClient, Client
    from jobtape.errors import (
        ConflictError,
        JobError,
        JobFailed,
        JobInterrupted,
        JobtapeError,
        RequestError,
        RequestRejected,
        ServerError,
        ServerUnreachable,
        StorageError,
        StoreError,
        WaitTimedOut,
    )

__all__ = [
    "App",
    "AsyncClient",
    "Client",
    "ConflictError",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobInterrupted",
    "JobtapeError",
    "RequestError",
    "RequestRejected",
    "ServerError",
    "ServerUnreachable",
    "StorageError",
    "StoreError",
    "WaitTimedOut",
    "__version__",
    "client",
    "errors",
    "load_app",
]

_ERRORS = (
    "ConflictError",
    "JobError",
    "JobFailed",
    "JobInterrupted",
    "JobtapeError",
    "RequestError",
    "RequestRejected",
    "ServerError",
    "ServerUnreachable",
    "StorageError",
    "StoreError",
    "WaitTimedOut",
)
#: The public names and the module each comes from, imported on first use (PEP 562), so
#: ``from jobtape import errors`` in the HTTP API or a worker does not load the whole engine.
_PUBLIC = {
    "App": "jobtape.app",
    "JobContext": "jobtape.app",
    "load_app": "jobtape.app",
    "Client": "jobtape.client",
    "AsyncClient": "jobtape.client",
    **dict.fromkeys(_ERRORS, "jobtape.errors"),
}
#: Submodules reachable as attributes after a bare ``import jobtape`` (``except jobtape.errors.RequestError:``,
#: ``jobtape.client.WaitTimedOut``).
_SUBMODULES = frozenset({"client", "errors"})


def __getattr__(name: str) -> Any:
    """Import a public name on first use (``jobtape.App``, ``jobtape.Client``, ``jobtape.errors``, ...).

    Raises:
        AttributeError: ``name`` is not public.
    """
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"jobtape.{name}")
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'jobtape' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__version__ = "0.1.0"
