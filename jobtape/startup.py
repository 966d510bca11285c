"""Start-up against a store that may not be up yet: open and migrate, retrying with backoff.

A worker or API host is often started together with (or before) its database: a container
platform starts every service at once, sqld restarts, a Turso region is briefly away. A
process that exits on the first refused connection then depends on its supervisor's restart
policy to come back. Instead, :func:`open_repository_waiting` retries the open and migrate
while the store raises :class:`jobtape.errors.StoreUnavailable`, logging one warning per
failed try, with exponential backoff (:class:`jobtape.worker.outage.Backoff`). It gives up
only when ``stop`` is set or the caller's signal handler raises (the CLI turns SIGINT/SIGTERM
into an exception), never on its own. Any other error (an unsupported URL, a migration
that fails) is not an outage and is raised at once. Neither are credentials the server
refuses (a wrong ``TURSO_AUTH_TOKEN``): the libSQL backend raises
:class:`jobtape.errors.StoreAuthRejected`, which is not retried (the CLI prints it and exits 1).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from jobtape import errors, runtime
from jobtape.config import Settings
from jobtape.eventlog.store import SQLBackend
from jobtape.projections.registry import ENGINE_TABLES, Tables
from jobtape.projections.repository import AppendResult, JobRepository
from jobtape.worker import outage

__all__ = ["FIRST_DELAY_S", "MAX_DELAY_S", "open_backend_waiting", "open_repository_waiting"]

log = logging.getLogger(__name__)

#: The first pause after a failed start-up try, in seconds.
FIRST_DELAY_S = 0.5
#: The longest pause between start-up tries, in seconds.
MAX_DELAY_S = 30.0


def open_backend_waiting(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    backoff: outage.Backoff | None = None,
    tables: Tables = ENGINE_TABLES,
) -> SQLBackend:
    """Open and migrate the configured backend, waiting for the store while it is unreachable.

    Args:
        settings: names the backend (``job_store_backend``, ``turso_database_url``, ...).
        stop: when set (e.g. by a signal handler), stop waiting; ``None``: wait until the
            store answers or the calling thread is interrupted by an exception.
        backoff: pauses between tries; default :data:`FIRST_DELAY_S` doubling to :data:`MAX_DELAY_S`.
        tables: the migrations to apply (an app's :attr:`jobtape.App.tables`).

    Returns:
        The migrated backend.

    Raises:
        errors.StoreUnavailable: the store was unreachable when ``stop`` was set (the last error).
        errors.StoreAuthRejected: the store refused the credentials (not retried).
        KeyError: no factory is registered under ``settings.job_store_backend``.
    """
    pauses = backoff or outage.Backoff(FIRST_DELAY_S, MAX_DELAY_S)
    tries = 0
    while True:
        try:
            backend = runtime.open_backend(settings, tables)
        except errors.StoreUnavailable as exc:
            tries += 1
            if stop is not None and stop.is_set():
                raise
            delay = pauses.next()
            log.warning(
                "the event store (%s) is unreachable at start-up (try %d: %s); next try in %.1f s",
                runtime.describe_store(settings),
                tries,
                exc.__cause__ or exc.message,
                delay,
            )
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                threading.Event().wait(delay)  # interruptible: a signal handler may raise here
            continue
        if tries:
            log.warning("the event store (%s) answered after %d failed tries", runtime.describe_store(settings), tries)
        return backend


def open_repository_waiting(
    settings: Settings,
    on_append: Callable[[AppendResult], None] | None = None,
    *,
    stop: threading.Event | None = None,
    tables: Tables = ENGINE_TABLES,
) -> JobRepository:
    """:func:`runtime.open_repository` that waits for the store; see :func:`open_backend_waiting`.

    Raises:
        errors.StoreUnavailable: ``stop`` was set while the store was unreachable.
        errors.LogKeyError: libSQL without ``JOBTAPE_LOG_KEY`` (:data:`runtime.LIBSQL_NEEDS_KEY`),
            before any wait.
    """
    runtime.require_shared_key(settings)  # said at once, not after waiting for the store
    store = runtime.keyed_store(open_backend_waiting(settings, stop=stop, tables=tables), settings)
    return JobRepository(store, on_append=on_append, projections=tables.projections)
