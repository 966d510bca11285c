"""The libSQL backend of the event store: a remote sqld / Turso database over Hrana.

It runs the very statements :class:`jobtape.eventlog.store.EventStore` builds; each
:meth:`LibSQLBackend.execute_batch` is one Hrana batch (``BEGIN`` ... ``COMMIT``, rolled
back on the first failing statement), so the constraints and triggers guard it exactly as
they guard a SQLite transaction.

A store that has met another writer reads the log's head before each append; that read
opens the batch's write turn (:meth:`LibSQLBackend.execute_built`: ``BEGIN IMMEDIATE`` and
the read on one Hrana stream, then the batch and ``COMMIT``), so the head cannot move
between the read and the batch, as inside the SQLite backend's write turn.

``libsql-client``'s client is asynchronous. The backend owns one event loop in a daemon
thread and one client on it; calling threads submit coroutines and wait with a timeout,
so several threads (API requests, job threads) share one connection concurrently.

Failure translation at this boundary:

- ``SQLITE_CONSTRAINT*`` (UNIQUE, CHECK, a trigger's ``RAISE(ABORT, ...)``) ->
  :class:`jobtape.eventlog.store.ConstraintViolation` with SQLite's message;
- ``SQLITE_BUSY`` / ``SQLITE_LOCKED`` (the write lock is taken) -> retried here with a
  short jittered backoff until ``busy_timeout_s`` (see "The busy wait" below), then
  :class:`jobtape.errors.StoreBusy`, which a worker waits out like an outage (the 10,000-job
  soak on sqld failed one job as an "internal error" before);
- credentials the server refuses -> :class:`jobtape.errors.StoreAuthRejected` (not retried):
  an HTTP 401/403 answer (a refused WebSocket handshake, Hrana over HTTP), or a Hrana
  ``hello_error`` with an ``AUTH_*`` code (sqld accepts the WebSocket and refuses the
  ``hello``'s JWT). ``libsql-client`` may lose that ``hello_error`` in a race with its first
  request (the request then fails on the closing socket), so when a new connection's first
  call fails this way the backend sends a ``hello`` of its own (:func:`_hello_refusal`) to
  learn the server's answer;
- a connection error, an HTTP 5xx, a closed WebSocket or a timeout ->
  :class:`jobtape.errors.StoreUnavailable` (the client is then replaced, so the next call
  reconnects);
- an answer larger than the server sends (``RESPONSE_TOO_LARGE``, sqld's
  ``--max-response-size``) -> :class:`jobtape.errors.JobtapeError` saying so (the CLI
  prints it as ``Error: ...``);
- anything else (a SQL error: a bug) propagates as ``libsql_client.LibsqlError``.

The busy wait. SQLite waits for another writer's lock up to its busy timeout
(:class:`jobtape.eventlog.sqlite.SQLiteBackend`, ``PRAGMA busy_timeout``, 10 s); sqld gives up
much sooner. Measured on sqld 0.24: a write meeting a lock held by a connection that sqld's
lock stealing does not manage (a SQLite connection on its file) is answered ``SQLITE_BUSY``
after about 0.1 s, and under contention batches that read before they write get it at once
(16 clients x 200 ``SELECT; INSERT; INSERT`` batches: 2,518 answers); only a lock held
through sqld itself (an interactive transaction) is waited for, then stolen after 5 s.
The soak (3,000 jobs, serve + 2 worker processes on one sqld) answered
8 HTTP submits with 503 for this. So the backend retries a batch or a read refused with
``SQLITE_BUSY*`` / ``SQLITE_LOCKED*``, pausing 5 ms doubling to 100 ms (equal jitter), until
``busy_timeout_s`` has passed, and only then raises :class:`jobtape.errors.StoreBusy`.

Why a retry can never double an append: ``libsql-client`` sends a batch as the Hrana steps
``BEGIN``; each statement on the condition that the step before it succeeded; ``COMMIT`` if
the last statement succeeded; ``ROLLBACK`` if ``COMMIT`` did not (``hrana/convert.py``,
``_batch_to_proto``). A step that fails with ``SQLITE_BUSY`` therefore skips the rest and
``COMMIT``, and the transaction is rolled back: nothing of the batch was written. Checked
on sqld 0.24: the 3,200 batches above left exactly 2 rows per batch that succeeded; and
``tests/conformance/test_libsql_busy.py`` finds no row of a batch refused while another
connection held the write lock. The guards stay in SQL: a retried append whose version was
taken meanwhile fails on the version guard like any other append
(:class:`jobtape.errors.ConcurrencyError` from the event store).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import logging
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import aiohttp
import libsql_client
from libsql_client.hrana.client import HranaClient
from libsql_client.hrana.convert import _error_from_proto, _result_set_from_proto, _stmt_to_proto

from jobtape import errors
from jobtape.eventlog import ddl, schema
from jobtape.eventlog.store import ConstraintViolation, SQLBackend, Statement

__all__ = ["LibSQLBackend", "translate_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Codes of ``LibsqlError`` that mean "the server could not be reached or answered badly".
_TRANSIENT_CODES = frozenset({"HRANA_WEBSOCKET_ERROR", "SERVER_ERROR", "CLIENT_CLOSED", "STREAM_CLOSED", "HRANA_CLOSED_ERROR"})
#: HTTP statuses that mean "the server refused the credentials".
_AUTH_STATUSES = frozenset({401, 403})
#: How ``libsql-client`` words an HTTP error answer without a Hrana error body.
_AUTH_STATUS_TEXT = re.compile(r"HTTP status 40[13]\b")
#: The first pause before retrying a batch or read sqld refused as busy, in seconds; it doubles per retry.
_BUSY_FIRST_PAUSE_S = 0.005
#: The longest pause between two busy retries, in seconds.
_BUSY_MAX_PAUSE_S = 0.1
_MIGRATIONS_TABLE = 'CREATE TABLE IF NOT EXISTS "_jobtape_migrations" ("name" TEXT PRIMARY KEY, "applied_at" TEXT)'


class LibSQLBackend(SQLBackend):
    """Runs event-store statements on a libSQL server (sqld, Turso).

    Its :meth:`execute_built` runs the read a build makes (the event store's read of the
    log's head, once it has met another writer) inside the batch's own write transaction.

    Args:
        url: ``libsql://host`` (TLS WebSocket), ``wss://``/``ws://`` (Hrana over a
            WebSocket) or ``https://``/``http://`` (Hrana over HTTP). Add ``?tls=0`` to a
            ``libsql://`` URL for a server without TLS.
        auth_token: the database token (Turso), or ``None`` for a server without auth.
        timeout_s: longest wait for one request, in seconds; past it the call raises
            :class:`errors.StoreUnavailable` (a write is then in doubt).
        busy_timeout_s: how long a batch or read that sqld refuses because the database is
            locked (``SQLITE_BUSY`` / ``SQLITE_LOCKED``) is retried, in seconds, before
            :class:`errors.StoreBusy` is raised; ``0`` does not retry. The default matches
            :class:`jobtape.eventlog.sqlite.SQLiteBackend`'s busy timeout (see the module
            docstring, "The busy wait").
        rng: jitter source for the busy retries' pauses; defaults to a fresh ``random.Random``.
    """

    def __init__(
        self,
        url: str,
        auth_token: str | None = None,
        *,
        timeout_s: float = 15.0,
        busy_timeout_s: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.busy_timeout_s = busy_timeout_s
        self._rng = rng or random.Random()
        self._auth_token = auth_token
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="libsql event loop", daemon=True)
        self._thread.start()
        self._client: libsql_client.Client | None = None
        self._closed = False
        self._build_lock = threading.Lock()  # execute_built: one build-and-run at a time (the chain's order)
        self._turn = threading.local()  # .active: in execute_built's build; .stream: its write transaction
        self._streams: set[Any] = set()  # the write turns' streams not released yet (close() ends them)
        self._streams_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LibSQLBackend({self.url!r})"

    # -- the loop thread -------------------------------------------------------------------

    def _run(self, make: Callable[[libsql_client.Client], Awaitable[T]], *, write: bool) -> T:
        """Run ``make(client)`` (a coroutine factory) on the loop; translate failures.

        A call sqld refuses as busy is run again after a pause until ``busy_timeout_s``
        has passed (nothing of a refused batch was written; see the module docstring).
        """
        deadline = time.monotonic() + self.busy_timeout_s
        pause_s = _BUSY_FIRST_PAUSE_S
        while True:
            try:
                return self._run_once(make, write=write)
            except errors.StoreBusy:
                wait_s = pause_s / 2 + self._rng.uniform(0, pause_s / 2)  # equal jitter
                if time.monotonic() + wait_s >= deadline:
                    raise
                log.debug("%s: the database is locked by another writer; retrying in %.3f s", self, wait_s)
                time.sleep(wait_s)
                pause_s = min(pause_s * 2, _BUSY_MAX_PAUSE_S)

    def _run_once(self, make: Callable[[libsql_client.Client], Awaitable[T]], *, write: bool) -> T:
        """Run ``make(client)`` once on the loop; translate failures."""
        if self._closed:
            raise RuntimeError("the libSQL backend is closed")

        async def call() -> T:
            fresh = self._client is None
            if fresh:
                self._client = libsql_client.create_client(self.url, auth_token=self._auth_token)
            client = self._client
            try:
                return await asyncio.wait_for(make(client), self.timeout_s)
            except BaseException as exc:
                refusal = _auth_refusal(exc)
                if refusal is None and fresh and _is_transient(exc) and not isinstance(exc, TimeoutError):
                    refusal = await _hello_refusal(self.url, self._auth_token, self.timeout_s)
                if (refusal is not None or _is_transient(exc)) and self._client is client:
                    self._client = None  # the next call connects afresh
                    asyncio.get_running_loop().create_task(_close_quietly(client))
                if refusal is not None:
                    raise errors.StoreAuthRejected(refusal) from exc
                raise

        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            return future.result()
        except libsql_client.LibsqlError as exc:
            translated = translate_error(exc, write=write)
            if translated is exc:
                raise
            raise translated from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise errors.StoreUnavailable(_describe(exc), in_doubt=write) from exc

    # -- the write turn --------------------------------------------------------------------

    def execute_built(self, build: Callable[[], Sequence[Statement]]) -> list[list[tuple[Any, ...]]]:
        """Run the batch ``build()`` returns; a read ``build`` makes runs in the batch's own write transaction.

        One build and its batch at a time in this process (the chain's order, as
        :meth:`SQLBackend.execute_built`). A ``build`` that reads nothing (a store that has
        met no other writer builds from the head it built last) costs one Hrana batch, as
        :meth:`execute_batch`. The first :meth:`query` ``build`` makes opens the write turn
        over a WebSocket: one Hrana stream sends ``BEGIN IMMEDIATE`` and the read in one
        round trip (sqld queues a writer behind another stream's open transaction and
        starts it as soon as that one ends), and the batch then runs in that transaction
        with its ``COMMIT`` in a second round trip, so no other writer can move the log's
        head between the read and the batch (no chain conflict, no batch sent again).
        Over HTTP the read runs on its own, as before (a conflict is then refused by
        ``events_chain_guard`` and the store builds again).

        Args:
            build: returns the statements; called once, before the batch runs.

        Returns:
            As :meth:`execute_batch`.

        The write turn's stream is released whatever happens after the read: the commit
        closes it, and a batch that fails before its commit is sent (a statement that does not
        convert, the backend closed meanwhile) closes it here, so sqld rolls the transaction
        back at once instead of holding the write lock until the connection ends (every other
        writer waiting meanwhile). :meth:`close` ends the turns still open.

        Raises:
            As :meth:`execute_batch`, and whatever ``build`` raises (nothing was written).
            A write turn whose ``COMMIT`` round trip fails to reach the server leaves the
            batch in doubt (:class:`errors.StoreUnavailable` with ``in_doubt``), as a batch.
            RuntimeError: the backend was closed (also between the build and the commit:
                nothing was written).
        """
        with self._build_lock:
            self._turn.active, self._turn.stream = True, None
            try:
                statements = build()
            except BaseException:
                self._end_turn()
                raise
            finally:
                self._turn.active = False
            stream, self._turn.stream = self._turn.stream, None
            if stream is None:
                return self.execute_batch(statements)
            try:
                batch = [libsql_client.Statement(sql, list(params)) for sql, params in statements]
                results = self._run_once(lambda client: _commit_in_stream(stream, batch), write=True)
            finally:  # closed by the commit; not when it was never sent
                self._release_stream(stream)
            return [[tuple(row) for row in result.rows] for result in results]

    def _end_turn(self) -> None:
        """Close the write turn's stream, if one was opened (sqld rolls its transaction back)."""
        stream, self._turn.stream = getattr(self._turn, "stream", None), None
        if stream is not None:
            self._release_stream(stream)

    def _release_stream(self, stream: Any) -> None:
        """Close a write turn's ``stream`` on the loop (a no-op for a closed one) and forget it.

        Once :meth:`close` has run, it closed the stream (and the connection) itself.
        """
        with self._streams_lock:
            if stream not in self._streams:
                return  # close() ended it
            self._streams.discard(stream)
        if stream.closed:  # the commit closed it (on the loop, before its answer came back): no loop wake-up
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: close() ended the connection
            self._loop.call_soon_threadsafe(stream.close)

    def _query_in_turn(self, sql: str, params: Sequence[Any]) -> Any:
        """The write turn's read (see :meth:`execute_built`): ``BEGIN IMMEDIATE`` and ``sql`` on a new stream."""

        async def begin_and_read(client: Any) -> tuple[Any, Any]:
            if not isinstance(client, HranaClient):  # Hrana over HTTP: no stream to hold; a plain read
                return None, await client.execute(sql, list(params))
            stream = client._open_stream()  # libsql-client has no public stream API
            try:
                begun = stream.execute({"sql": "BEGIN IMMEDIATE", "want_rows": False})
                read = stream.execute(_stmt_to_proto(libsql_client.Statement(sql, list(params))))
                await begun
                return stream, _result_set_from_proto(await read)
            except BaseException:
                stream.close()
                raise

        stream, result = self._run(begin_and_read, write=False)
        if stream is not None:
            with self._streams_lock:
                self._streams.add(stream)
        self._turn.stream = stream  # this (the calling) thread's turn
        return result

    # -- the port --------------------------------------------------------------------------

    def execute_batch(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        """Run the statements as one Hrana batch; see :meth:`SQLBackend.execute_batch`.

        A batch refused because the database is locked is retried until ``busy_timeout_s``.

        Raises:
            ConstraintViolation: a constraint or trigger refused a statement; nothing was written.
            errors.StoreBusy: the database stayed locked by another writer for
                ``busy_timeout_s``; nothing was written.
            errors.StoreUnavailable: the server cannot be reached; the write is in doubt.
            errors.StoreAuthRejected: the server refused the auth token; nothing was written.
        """
        batch = [libsql_client.Statement(sql, list(params)) for sql, params in statements]
        results = self._run(lambda client: client.batch(batch), write=True)
        return [[tuple(row) for row in result.rows] for result in results]

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read; see :meth:`SQLBackend.query`.

        A read refused because the database is locked is retried until ``busy_timeout_s``.

        Raises:
            errors.StoreBusy: the database stayed locked for ``busy_timeout_s``.
            errors.StoreUnavailable: the server cannot be reached.
            errors.StoreAuthRejected: the server refused the auth token.
        """
        if getattr(self._turn, "active", False):  # a read of execute_built's build: in its write turn
            stream = self._turn.stream
            if stream is None:
                result = self._query_in_turn(sql, params)
            else:
                result = self._run_once(lambda client: _read_in_stream(stream, sql, params), write=False)
        else:
            result = self._run(lambda client: client.execute(sql, list(params)), write=False)
        return [tuple(row) for row in result.rows]

    def migrate(self, migrations: Sequence[schema.Migration] | None = None) -> list[str]:
        """Apply pending migrations by running their DDL (:mod:`jobtape.eventlog.ddl`).

        ``migrations``: the engine's and the registered packages' (default: the engine's
        :data:`schema.MIGRATIONS`); one recorded under a name it ``replaces`` is not applied again.

        Each migration's statements and its ``_jobtape_migrations`` row go in one batch.
        When another process applies the same migration at the same time, one batch
        fails on an existing object and this call re-reads the migration table.

        Returns:
            The names applied by this call.

        Raises:
            errors.StoreUnavailable: the server cannot be reached.
            errors.StoreAuthRejected: the server refused the auth token.
        """
        self.execute_batch([Statement(_MIGRATIONS_TABLE)])
        applied = []
        ordered = [schema.as_migration(item) for item in (migrations or schema.MIGRATIONS)]
        for index, (name, _step, replaces, data) in enumerate(ordered):
            if self._applied().intersection((name, *replaces)):
                continue
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            statements = [Statement(sql) for sql in (*ddl.migration_statements(ordered, index), *data)]
            record = Statement('INSERT INTO "_jobtape_migrations" (name, applied_at) VALUES (?, ?)', (name, stamp))
            try:
                self.execute_batch([*statements, record])
            except (ConstraintViolation, libsql_client.LibsqlError):
                if name not in self._applied():
                    raise
                continue  # a concurrent migrator won
            applied.append(name)
        return applied

    def _applied(self) -> set[str]:
        return {str(row[0]) for row in self.query('SELECT name FROM "_jobtape_migrations"')}

    def close(self) -> None:
        """Close the write turns still open, the client, and stop the loop thread.

        A write turn open in another thread (between its read and its commit) is ended here:
        its stream is closed, so sqld rolls its transaction back, and that thread's
        :meth:`execute_built` raises ``RuntimeError`` (nothing written). Further use raises
        ``RuntimeError``; a second call is a no-op.
        """
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            with self._streams_lock:
                streams, self._streams = list(self._streams), set()
            for stream in streams:  # before the connection: each turn's transaction ends on its own
                stream.close()
            if self._client is not None:
                await _close_quietly(self._client)
                self._client = None

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(self.timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout_s)
        if not self._thread.is_alive():
            self._loop.close()


async def _read_in_stream(stream: Any, sql: str, params: Sequence[Any]) -> Any:
    """One more read in a write turn's transaction."""
    return _result_set_from_proto(await stream.execute(_stmt_to_proto(libsql_client.Statement(sql, list(params)))))


async def _commit_in_stream(stream: Any, batch: Sequence[Any]) -> list[Any]:
    """Run ``batch`` and ``COMMIT`` in the write turn's transaction as one Hrana batch (each step on
    the condition that the one before it succeeded, then ``ROLLBACK`` if the ``COMMIT`` did not run),
    then close the stream: a failed statement skips the rest and the ``COMMIT`` (nothing written).
    Returns the statements' result sets; raises the first step's error."""
    try:
        steps: list[dict[str, Any]] = []
        for statement in [*batch, libsql_client.Statement("COMMIT")]:
            step: dict[str, Any] = {"stmt": _stmt_to_proto(statement)}
            if steps:
                step["condition"] = {"type": "ok", "step": len(steps) - 1}
            steps.append(step)
        # as libsql-client's own batches: a ROLLBACK when the COMMIT did not run, so the lock is let go at once
        rollback = {"type": "not", "cond": {"type": "ok", "step": len(steps) - 1}}
        steps.append({"condition": rollback, "stmt": {"sql": "ROLLBACK", "want_rows": False}})
        answer = await stream.batch({"steps": steps})
    finally:  # also when a parameter does not convert: the turn's transaction ends with its stream
        stream.close()
    for error in answer["step_errors"]:
        if error is not None:
            raise _error_from_proto(error)
    if answer["step_results"][len(batch)] is None:  # the COMMIT did not run, and no step said why
        raise libsql_client.LibsqlError("the write turn's COMMIT did not run", "HRANA_PROTO_ERROR")
    return [_result_set_from_proto(result) for result in answer["step_results"][: len(batch)]]


def translate_error(exc: libsql_client.LibsqlError, *, write: bool) -> BaseException:
    """Map an error sqld answered with into the error tree (see the module docstring); anything else is returned as is.

    Args:
        exc: the client's error; ``exc.code`` is sqld's code (``SQLITE_BUSY``, ``RESPONSE_TOO_LARGE``, ...).
        write: the request was a write (a transient failure then leaves it in doubt).
    """
    if exc.code.startswith("SQLITE_CONSTRAINT"):
        return ConstraintViolation(_sqlite_message(exc))
    if exc.code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):  # nothing of the batch was written
        return errors.StoreBusy()  # LibSQLBackend retries it until its busy_timeout_s first
    if _is_transient(exc):
        return errors.StoreUnavailable(_describe(exc), in_doubt=write)
    if exc.code == "RESPONSE_TOO_LARGE":
        return errors.JobtapeError(
            "the event store refused to send an answer this large (sqld's --max-response-size, 10 MB by "
            "default): raise that limit or narrow the command"
        )
    return cast(BaseException, exc)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, libsql_client.LibsqlError):
        return exc.code in _TRANSIENT_CODES
    return isinstance(exc, (aiohttp.ClientError, OSError, TimeoutError))


def _auth_refusal(exc: BaseException) -> str | None:
    """The server's answer if ``exc`` says it refused the credentials, else ``None``."""
    if isinstance(exc, libsql_client.LibsqlError):
        if exc.code.startswith("AUTH_"):  # a Hrana error: hello_error or a request's
            return _describe(exc)
        if exc.code == "SERVER_ERROR" and _AUTH_STATUS_TEXT.search(str(exc)):  # Hrana over HTTP
            return _describe(exc)
    elif isinstance(exc, aiohttp.ClientResponseError) and exc.status in _AUTH_STATUSES:  # ws handshake
        return _describe(exc)
    return None


def _hrana_websocket_url(url: str) -> str | None:
    """The ``ws://``/``wss://`` URL ``libsql-client`` connects to for ``url``; ``None`` for HTTP URLs."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "libsql":
        scheme = "ws" if urllib.parse.parse_qs(parts.query).get("tls") == ["0"] else "wss"
    elif parts.scheme in ("ws", "wss"):
        scheme = parts.scheme
    else:
        return None
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, "", ""))


async def _hello_refusal(url: str, auth_token: str | None, timeout_s: float) -> str | None:
    """Ask a Hrana WebSocket server whether it accepts ``auth_token``: connect and send ``hello``.

    Args:
        url: the backend's URL (``libsql://``, ``ws://``, ``wss://``; others are not asked).
        auth_token: the JWT sent in the ``hello``, or ``None``.
        timeout_s: longest wait for the connect and the answer, in seconds.

    Returns:
        The refusal (an HTTP 401/403 handshake answer, or ``"AUTH_...: message"`` from a
        ``hello_error``), or ``None`` when the server accepted the token, did not answer,
        or failed otherwise; the caller's own error then stands.
    """
    ws_url = _hrana_websocket_url(url)
    if ws_url is None:
        return None
    try:
        async with (
            asyncio.timeout(timeout_s),
            aiohttp.ClientSession() as session,
            session.ws_connect(ws_url, protocols=["hrana2"]) as socket,
        ):
            await socket.send_str(json.dumps({"type": "hello", "jwt": auth_token}))
            message = await socket.receive()
    except aiohttp.ClientResponseError as exc:
        return _describe(exc) if exc.status in _AUTH_STATUSES else None
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    if message.type != aiohttp.WSMsgType.TEXT:
        return None
    try:
        answer = json.loads(message.data)
    except ValueError:
        return None
    error = answer.get("error") if isinstance(answer, dict) and answer.get("type") == "hello_error" else None
    if isinstance(error, dict) and str(error.get("code", "")).startswith("AUTH_"):
        return _describe(f"{error['code']}: {error.get('message', '')}")
    return None


def _sqlite_message(exc: libsql_client.LibsqlError) -> str:
    return str(exc.explanation).removeprefix("SQLite error: ")


def _describe(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


async def _close_quietly(client: libsql_client.Client) -> None:
    try:
        await client.close()
    except Exception:  # closing a broken connection may fail; nothing to do
        log.debug("closing a libSQL client failed", exc_info=True)
