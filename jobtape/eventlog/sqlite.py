"""The embedded SQLite backend of the event store (WAL, a busy timeout, a bounded connection pool)."""

from __future__ import annotations

import _thread
import contextlib
import fcntl
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import sqlite_utils

from jobtape import errors, filemodes
from jobtape.eventlog import schema
from jobtape.eventlog.store import ConstraintViolation, SQLBackend, Statement

__all__ = ["PRAGMAS", "SYNCHRONOUS_MODES", "SQLiteBackend", "pragmas", "translate_operational_error"]

#: ``PRAGMA synchronous`` values a backend accepts. FULL (the default) fsyncs the WAL at
#: every commit, so an append acknowledged to a client survives a power loss; NORMAL
#: fsyncs only at checkpoints (a crash of the process loses nothing, a power loss may lose
#: the last commits) and is several times faster per commit.
SYNCHRONOUS_MODES = ("FULL", "NORMAL")


def pragmas(synchronous: str = "FULL") -> tuple[str, ...]:
    """The PRAGMAs every connection runs (bench/lifecycle.py uses the same for its baseline).

    Raises:
        ValueError: ``synchronous`` is not one of :data:`SYNCHRONOUS_MODES`.
    """
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}")
    return ("PRAGMA journal_mode=WAL", f"PRAGMA synchronous={synchronous}", "PRAGMA foreign_keys=ON")


#: The default PRAGMAs (``synchronous=FULL``).
PRAGMAS = pragmas()


class SQLiteBackend(SQLBackend):
    """Runs event-store statements on a SQLite file.

    Connections come from a small pool: a call takes the most recently used idle
    connection (or opens one), runs, and gives it back; at most ``max_idle_connections``
    idle ones are kept, and one left idle for ``idle_timeout_s`` is closed when the next
    call gives one back. So the number of open connections follows the number of calls
    running at the same moment, not the number of threads that ever called (a worker runs
    each job in a new thread: one connection per thread grew by one per job, issue 9).
    ``":memory:"`` uses one shared connection behind a lock instead, since every
    connection to ``:memory:`` would be a different database.

    A new database file is created with mode ``file_mode`` (default 0600; SQLite gives
    its ``-wal`` and ``-shm`` files the same mode) in a folder created with the matching
    folder mode (0700; :func:`jobtape.filemodes.dir_mode`).

    ``sqlite3.OperationalError`` is translated here (:func:`translate_operational_error`):
    locked/busy past the busy timeout -> :class:`errors.StoreBusy`, a full disk ->
    :class:`errors.StoreFull`, I/O and open errors -> :class:`errors.StoreUnavailable`.

    Args:
        path: the database file (created with its folder), or ``":memory:"``.
        busy_timeout_s: how long a writer waits for another writer's lock, in seconds.
        synchronous: ``FULL`` (default: every acknowledged append is on disk) or ``NORMAL``;
            see :data:`SYNCHRONOUS_MODES`. Group commit shares one fsync between the
            appends that arrive together.
        max_idle_connections: idle connections kept open for the next calls (default 8).
        idle_timeout_s: seconds an idle connection is kept before it is closed (default 10).
        file_mode: permission bits of a database file this backend creates (default 0o600).

    Raises:
        ValueError: an unknown ``synchronous`` mode.
    """

    local_reads: ClassVar[bool] = True
    streams_batches: ClassVar[bool] = True
    builds_in_turn: ClassVar[bool] = True

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 10.0,
        synchronous: str = "FULL",
        max_idle_connections: int = 8,
        idle_timeout_s: float = 10.0,
        file_mode: int = 0o600,
    ) -> None:
        self.path = str(path)
        self.busy_timeout_s = busy_timeout_s
        self.max_idle_connections = max_idle_connections
        self.idle_timeout_s = idle_timeout_s
        self._pragmas = pragmas(synchronous)
        self._lock = threading.RLock()
        self._group_lock = threading.Lock()
        self._leader_active = False
        self._queue: list[_Pending] = []
        #: Counters for benchmarks and tests: batches run, and the transactions that held them.
        self.batches_committed = 0
        self.transactions = 0
        self._memory = self.path == ":memory:"
        self._shared: sqlite3.Connection | None = None
        self._idle: list[tuple[sqlite3.Connection, float]] = []  # (connection, monotonic time given back)
        self._open: set[sqlite3.Connection] = set()
        self._file_mode = file_mode
        self._turn = threading.local()  # .conn: the connection of this thread's write turn
        self._turn_taker: _TurnTaker | None = None  # <path>-writer's descriptor, flocked for a group commit (_take_write_turn)
        if not self._memory:
            _create_private(Path(self.path), file_mode)

    @property
    def open_connections(self) -> int:
        """How many connections this backend holds open now (idle and in use)."""
        with self._lock:
            return len(self._open) + (self._shared is not None)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            deadline = time.monotonic() + self.busy_timeout_s
            for pragma in self._pragmas:
                _run_pragma(conn, pragma, deadline)
        except sqlite3.OperationalError as exc:
            raise translate_operational_error(exc) from exc
        return conn

    def _borrow(self) -> sqlite3.Connection:
        """Take the most recently used idle connection, or open one (give it back with :meth:`_give_back`)."""
        with self._lock:
            conn = self._idle.pop()[0] if self._idle else None
        if conn is None:
            conn = self._connect()
            with self._lock:
                self._open.add(conn)
        return conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        """Return a connection taken with :meth:`_borrow` to the pool (or close it); close the expired idle ones."""
        now = time.monotonic()
        stale: list[sqlite3.Connection] = []
        with self._lock:
            keep = conn in self._open and len(self._idle) < self.max_idle_connections and not conn.in_transaction
            if keep:
                self._idle.append((conn, now))
            else:
                self._open.discard(conn)
            idle = self._idle
            if idle and now - idle[0][1] > self.idle_timeout_s:  # the oldest (the stack's bottom) expired
                expired = 0
                while expired < len(idle) and now - idle[expired][1] > self.idle_timeout_s:
                    expired += 1
                stale, idle[:expired] = [c for c, _ in idle[:expired]], []
                self._open.difference_update(stale)
        for old in stale if keep else [*stale, conn]:
            old.close()

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """Lend a pooled connection for one call; give it back (or close it) afterwards."""
        conn = self._borrow()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def execute_batch(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        """Run the statements atomically; see :meth:`SQLBackend.execute_batch` and :meth:`execute_built`."""
        return self.execute_built(lambda: statements)

    def execute_built(self, build: Callable[[], Sequence[Statement]]) -> list[list[tuple[Any, ...]]]:
        """Run the batch ``build()`` returns; see :meth:`SQLBackend.execute_built`.

        ``build`` is called in this process's write turn (:meth:`_take_write_turn`), inside the
        transaction that holds the batch, in the order the calls queued, just before its
        statements run; a :meth:`query` from ``build`` (on that thread) reads that
        transaction, so it sees the batches committed before it in the same group and
        nothing another process could still change (:attr:`builds_in_turn`).

        Group commit: batches submitted by several threads at once share one transaction.
        The first thread to queue becomes the leader; once it holds the write turn it
        commits every batch queued so far, each inside its own SAVEPOINT, so a batch whose
        guard fails (or whose ``build`` raises) is rolled back alone while the others commit
        (a batch alone in its group runs without one: its transaction is rolled back instead).
        Every caller returns only after the COMMIT that holds its batch, so durability and
        atomicity per batch are unchanged; the commit cost (the WAL write) is shared.
        Each waiting caller is woken alone (a lock of its own, released once): when its batch is committed, or
        when the leader hands it the lead (the first caller queued during a commit leads the
        next one), never all waiters at once to find out which.

        Raises:
            ConstraintViolation: a guard refused the batch; nothing of it was written.
            errors.StoreBusy: another process held the write lock past the busy timeout.
            errors.StoreFull: the disk is full; nothing of the batch was written.
            errors.StoreUnavailable: an I/O error.
        """
        if self._memory:
            with self._lock:
                if self._shared is None:
                    self._shared = self._connect()
                return self._run_alone(self._shared, build())
        pending = _Pending(build)
        with self._group_lock:
            self._queue.append(pending)
            leads = not self._leader_active
            self._leader_active = True
            if not leads:  # made only for a caller that waits (a lone appender never does)
                pending.woken = threading.Lock()
                pending.woken.acquire()  # held until a leader releases it: a wake-up without a Condition
        if pending.woken is not None:
            pending.woken.acquire()  # committed by a leader, or handed the lead
            pending.woken = None  # woken once: a caller handed the lead is not released again when it commits
        if not pending.done:  # the leader: once it is this process's turn to write, take every batch queued so far
            group: list[_Pending] = []
            try:
                conn = self._borrow()
                try:
                    fd = self._take_write_turn()
                    try:
                        with self._group_lock:
                            group, self._queue = self._queue, []
                        self._commit_group(conn, group)
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    self._give_back(conn)
            except BaseException as exc:  # noqa: BLE001 - the pool could not open a connection: every waiter gets it
                if not group:
                    with self._group_lock:
                        group, self._queue = self._queue, []
                for item in group:
                    if not item.done:
                        item.error, item.done = exc, True
            finally:
                for item in group:
                    item.done = True
                    if item.woken is not None:
                        item.woken.release()
                with self._group_lock:
                    if self._queue:  # batches queued during the commit: the first one leads next
                        self._queue[0].woken.release()  # type: ignore[union-attr]  # queued behind a leader: it waits
                    else:
                        self._leader_active = False
        if pending.error is not None:
            raise pending.error
        assert pending.results is not None
        return pending.results

    def execute_stream(self, batches: Iterable[Sequence[Statement]]) -> None:
        """Run every batch ``batches`` yields in ONE transaction; see :meth:`SQLBackend.execute_stream`.

        One batch of :meth:`execute_built` whose ``build`` runs the batches itself as it pulls
        them, on the write turn's connection (each as :meth:`execute_batch` runs its
        statements: runs of one statement as one ``executemany``), and returns no statement:
        so the group commit's order, ``SAVEPOINT`` and rollback apply to the whole stream as
        to any batch. SQLite spills the transaction's pages to the WAL as it grows, so memory
        stays flat; the WAL holds the whole stream until the commit and the checkpoint after it.
        """
        if self._memory:
            with self._lock:
                if self._shared is None:
                    self._shared = self._connect()
                shared = self._shared
                self._run_alone(shared, (), lambda: _execute_stream(shared, batches))
            return

        def build() -> Sequence[Statement]:
            _execute_stream(self._turn.conn, batches)  # build runs in _commit_group, which sets the turn's connection
            return ()

        self.execute_built(build)

    @staticmethod
    def _run_alone(
        conn: sqlite3.Connection, statements: Sequence[Statement], run: Callable[[], object] | None = None
    ) -> list[list[tuple[Any, ...]]]:
        """Run ``statements`` (or ``run()``, which runs its own on ``conn``) in one transaction of ``conn``."""
        try:
            cursor = conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                results = _execute_all(cursor, statements)
                if run is not None:
                    run()
                cursor.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            raise ConstraintViolation(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            raise translate_operational_error(exc) from exc
        return results

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Pending]) -> None:
        """One transaction: each batch built and run in its own SAVEPOINT, in queue order, then COMMIT.

        Every statement of the group (``BEGIN``, each batch's, ``COMMIT``) runs on one cursor made
        for it (``conn.execute`` would make one per statement); a rollback on the connection.
        """
        self.transactions += 1
        self.batches_committed += len(group)
        self._turn.conn = conn  # query() from a build on this thread reads this transaction
        try:
            cursor = conn.cursor()
            execute = cursor.execute
            execute("BEGIN IMMEDIATE")
            if len(group) == 1:  # a batch alone: its transaction is its savepoint
                self._commit_alone(conn, cursor, group[0])
                return
            for item in group:
                execute("SAVEPOINT batch")
                try:
                    item.results = _execute_all(cursor, item.build())
                except Exception as exc:  # noqa: BLE001 - a guard (or the build) refused this batch alone
                    item.results, item.error = None, _translate(exc)  # before the rollback, which may fail too
                    conn.execute("ROLLBACK TO batch")
                execute("RELEASE batch")
            execute("COMMIT")
        except BaseException as exc:  # noqa: BLE001 - handed to every caller of the group
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _translate(exc) if isinstance(exc, sqlite3.Error) else exc
            for item in group:
                if item.error is None:
                    item.results, item.error = None, error
        finally:
            self._turn.conn = None
            for item in group:
                item.done = True

    @staticmethod
    def _commit_alone(conn: sqlite3.Connection, cursor: sqlite3.Cursor, item: _Pending) -> None:
        """A group of one batch, in the transaction ``_commit_group`` began on ``cursor``: no SAVEPOINT,
        a refused batch rolls the whole transaction back (nothing else is in it)."""
        try:
            item.results = _execute_all(cursor, item.build())
        except Exception as exc:  # noqa: BLE001 - a guard (or the build) refused the batch
            item.results, item.error = None, _translate(exc)  # before the rollback, which may fail too
            conn.execute("ROLLBACK")
            return
        cursor.execute("COMMIT")

    def _take_write_turn(self) -> int:
        """Take ``<path>-writer``'s exclusive ``flock`` (this process's turn to write) for one group commit.

        Returns the descriptor; the caller ends the turn with ``fcntl.flock(fd, fcntl.LOCK_UN)``
        (no context manager: this runs once per group commit, on every append's path).

        SQLite's busy handler waits for another process's write lock by sleeping (1, 2, 5,
        10... ms), so with several processes on one file the lock often sits free while
        every waiter sleeps. The kernel wakes a process blocked in ``flock`` as soon as the
        holder lets go, and the batches its threads queue meanwhile join its next group.
        Only the order of the writers changes: ``BEGIN IMMEDIATE`` and its busy timeout
        still guard the file (another program writing it without this lock is waited for
        as before). The kernel drops the lock of a process that dies.

        A free turn (the common case) costs one non-blocking ``flock``. A turn another process
        holds is waited for up to ``busy_timeout_s`` (:class:`_TurnTaker`: a thread blocked in
        ``flock``, woken by the kernel at the release), as SQLite waits for its own lock, so a
        wedged process that keeps it blocks no writer forever.

        Raises:
            errors.StoreBusy: another process held the turn for ``busy_timeout_s``; the message
                says how to find it.
        """
        taker = self._turn_taker if self._turn_taker is not None else self._writer_lock()
        return taker.take(self.busy_timeout_s)

    def _writer_lock(self) -> _TurnTaker:
        """The :class:`_TurnTaker` of ``<path>-writer``'s descriptor (opened on first use)."""
        with self._lock:
            if self._turn_taker is None:
                fd = _open_writer_lock(Path(f"{self.path}-writer"), self._file_mode)
                self._turn_taker = _TurnTaker(fd, f"{self.path}-writer")
            return self._turn_taker

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read; see :meth:`SQLBackend.query`.

        Raises:
            errors.StoreBusy, errors.StoreUnavailable: see :func:`translate_operational_error`.
        """
        try:
            if self._memory:
                with self._lock:
                    if self._shared is None:
                        self._shared = self._connect()
                    return self._shared.execute(sql, tuple(params)).fetchall()
            turn: sqlite3.Connection | None = getattr(self._turn, "conn", None)
            if turn is not None:  # a build in this thread's write turn: read its transaction
                return turn.execute(sql, tuple(params)).fetchall()
            conn = self._borrow()
            try:
                return conn.execute(sql, tuple(params)).fetchall()
            finally:
                self._give_back(conn)
        except sqlite3.OperationalError as exc:
            raise translate_operational_error(exc) from exc

    def migrate(self, migrations: Sequence[schema.Migration] | None = None) -> list[str]:
        """Apply pending migrations with sqlite-utils; see :func:`jobtape.eventlog.schema.migrate`.

        ``migrations``: the engine's and the registered packages' (default: the engine's).
        """
        if self._memory:
            with self._lock:
                if self._shared is None:
                    self._shared = self._connect()
                return schema.migrate(sqlite_utils.Database(self._shared), migrations)
        with self._lock, self._connection() as conn:
            return schema.migrate(sqlite_utils.Database(conn), migrations)

    def close(self) -> None:
        """Close every connection this backend opened (a connection lent out now is closed when given back)."""
        with self._lock:
            for conn, _ in self._idle:
                conn.close()
                self._open.discard(conn)
            self._idle.clear()
            self._open.clear()
            if self._shared is not None:
                self._shared.close()
            self._shared = None
            if self._turn_taker is not None:
                os.close(self._turn_taker.fd)  # a turn taker's thread still waiting holds its own duplicate
                self._turn_taker = None


def _run_pragma(conn: sqlite3.Connection, pragma: str, deadline: float) -> None:
    """Run one PRAGMA, waiting out a lock until ``deadline`` (``time.monotonic()`` seconds).

    Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
    locked" at once rather than calling the busy handler, so processes opening a new data
    dir together (``serve`` and workers) would fail on the first connection. Once the file
    is in WAL mode (which persists) the PRAGMA takes no lock, so this waits only on a new file.

    Raises:
        sqlite3.OperationalError: still locked at the deadline, or any other error.
    """
    pause = 0.005
    while True:
        try:
            conn.execute(pragma)
            return
        except sqlite3.OperationalError as exc:
            if not str(exc).startswith(_BUSY_MESSAGES) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)  # a backoff while another connection holds the lock, not a wait for a result
        pause = min(pause * 2, 0.1)


#: SQLite's messages (sqlite3.OperationalError carries no error code before Python 3.11's
#: ``sqlite_errorcode``, which the messages match) -> the error tree.
_BUSY_MESSAGES = ("database is locked", "database is busy", "database table is locked")
_FULL_MESSAGES = ("database or disk is full",)


_MANY_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _execute_all(cursor: sqlite3.Cursor, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
    """Run ``statements`` in order on ``cursor`` (inside the caller's transaction); return each one's rows.

    A run of consecutive writes with the same SQL text and no ``RETURNING`` (e.g. a rebuild's
    or an import's rows) goes to one ``executemany``: the same statements in the same order,
    without preparing and stepping each from Python. Their results are ``[]``, as they would be.
    A batch whose SQL texts all differ (an append's of one event: no run, told by a set of its
    texts, built in C) runs its statements one by one on the caller's cursor (each statement's
    rows fetched before the next), not on a new cursor per statement as ``conn.execute`` would.
    """
    count = len(statements)
    if count < 2 or len(set(map(_SQL_TEXT, statements))) == count:  # no run
        execute = cursor.execute
        return [execute(sql, params).fetchall() for sql, params in statements]
    results: list[list[tuple[Any, ...]]] = []
    index = 0
    while index < count:
        sql = statements[index].sql
        end = index + 1
        while end < count and statements[end].sql == sql:
            end += 1
        if end - index > 1 and sql.lstrip()[:7].upper().startswith(_MANY_VERBS) and "RETURNING" not in sql.upper():
            cursor.executemany(sql, [statements[n].params for n in range(index, end)])
            results.extend([] for _ in range(index, end))
        else:
            results.extend(cursor.execute(sql, statements[n].params).fetchall() for n in range(index, end))
        index = end
    return results


#: A statement's SQL text (:func:`_execute_all` looks for runs of the same text).
_SQL_TEXT = operator.itemgetter(0)


def _execute_stream(conn: sqlite3.Connection | None, batches: Iterable[Sequence[Statement]]) -> None:
    """Run each batch of ``batches`` on ``conn`` as :func:`_execute_all` does (on one cursor), pulling them one at a time (in the caller's transaction)."""
    assert conn is not None
    cursor = conn.cursor()
    for statements in batches:
        _execute_all(cursor, statements)
        del statements  # not held while the next batch is made: memory holds one batch


def translate_operational_error(exc: sqlite3.OperationalError) -> errors.JobtapeError | sqlite3.OperationalError:
    """Map one of SQLite's operational errors into the error tree; anything else is returned as it is.

    Args:
        exc: the driver's error.

    Returns:
        :class:`errors.StoreBusy` (SQLITE_BUSY / SQLITE_LOCKED: the write lock stayed taken
        past the busy timeout), :class:`errors.StoreFull` (SQLITE_FULL),
        :class:`errors.StoreUnavailable` (SQLITE_IOERR, SQLITE_CANTOPEN, SQLITE_READONLY:
        the file cannot be read or written now), or ``exc`` itself (an SQL error: a bug).
        Messages name no path.
    """
    text = str(exc).lower()
    code = getattr(exc, "sqlite_errorname", "") or ""
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or text.startswith(_BUSY_MESSAGES):
        return errors.StoreBusy()
    if code.startswith("SQLITE_FULL") or text.startswith(_FULL_MESSAGES):
        return errors.StoreFull("the disk holding the event log is full")
    if code.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY")) or text.startswith(
        ("disk i/o error", "unable to open database file", "attempt to write a readonly database")
    ):
        return errors.StoreUnavailable(f"the event log file cannot be used ({text})", retry_after_s=5)
    return exc


def _translate(exc: BaseException) -> BaseException:
    """A batch's error as its caller sees it: constraint, translated operational error, or itself."""
    if isinstance(exc, sqlite3.IntegrityError):
        error: BaseException = ConstraintViolation(str(exc))
    elif isinstance(exc, sqlite3.OperationalError):
        error = translate_operational_error(exc)
    else:
        return exc
    if error is not exc:
        error.__cause__ = exc
    return error


def _create_private(path: Path, file_mode: int) -> None:
    """Create the database's folder (the folder mode matching ``file_mode``) and an empty file with exactly ``file_mode``.

    Existing ones are left as they are. The file's mode is set with ``fchmod`` after the
    create, so the process umask cannot narrow a configured mode (0640 stays 0640).
    """
    filemodes.make_dirs(path.parent, filemodes.dir_mode(file_mode))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, file_mode)
    finally:
        os.close(fd)


def _open_writer_lock(path: Path, file_mode: int) -> int:
    """Open the write-turn lock file (created with exactly ``file_mode``, as the database is)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, file_mode)
    except FileExistsError:
        return os.open(path, os.O_RDWR)
    os.fchmod(fd, file_mode)
    return fd


class _TurnTaker:
    """Takes the write turn (``<db>-writer``'s exclusive ``flock``), waiting for another process's for a bounded time.

    ``flock`` cannot wait with a timeout, and retrying ``LOCK_NB`` between sleeps hands the
    lock back to its holder (who takes it again at once) while every waiter sleeps: with
    four worker processes on one file that lost throughput and doubled the lost claim races
    (docs/performance.md, "The write turn's bounded wait"). So when the turn is taken, one
    thread of its own blocks in ``flock`` on a duplicate of the descriptor (the lock belongs
    to the open file, which both share), and the kernel wakes it as soon as the holder lets
    go; the caller waits for it up to the busy timeout. A caller that gives up leaves that
    thread waiting: the next caller waits on it instead of trying the lock itself or starting
    another, and a lock it takes once nobody waits is let go at once. So a backend has at most
    one such thread, and none while the turn is free (the common case: one non-blocking
    ``flock`` under a lock no other process sees).

    Args:
        fd: the backend's ``<db>-writer`` descriptor; the caller ends a turn with
            ``fcntl.flock(fd, fcntl.LOCK_UN)``.
        lock_path: that file's path, for the error message.
    """

    def __init__(self, fd: int, lock_path: str) -> None:
        self.fd = fd
        self.lock_path = lock_path
        self._lock = threading.Lock()
        self._taken = threading.Event()
        self._pending = False  # a thread is blocked in flock
        self._wanted = False  # a caller waits for it

    def take(self, timeout_s: float) -> int:
        """Take the turn (the lock is then held on :attr:`fd`, which is returned), waiting at most ``timeout_s`` seconds.

        Raises:
            errors.StoreBusy: another process held the lock for ``timeout_s``; the message
                says how to find it.
        """
        with self._lock:
            if not self._pending:  # no thread waits for the lock: try it (the free turn ends here)
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return self.fd
                except BlockingIOError:
                    duplicate = os.dup(self.fd)
                    try:
                        threading.Thread(target=self._block, args=(duplicate,), name="jobtape-write-turn", daemon=True).start()
                    except BaseException:  # no thread (RuntimeError: can't start new thread): none counted as waiting
                        os.close(duplicate)
                        raise
                    self._pending = True  # under self._lock, which the thread takes before it reads this
                    self._taken.clear()
            self._wanted = True
        self._taken.wait(timeout_s)
        with self._lock:
            self._wanted = False
            if self._taken.is_set():  # taken, perhaps just after the timeout: the caller has it
                self._taken.clear()
                return self.fd
        raise errors.StoreBusy(
            f"another process has held the write lock {self.lock_path} for {timeout_s:g} s; if it is a wedged"
            f" jobtape process, find it with `fuser -v {self.lock_path}` (or `lsof {self.lock_path}`) and stop it"
        )

    def _block(self, fd: int) -> None:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # not expected of a blocking flock on an open file: the callers time out, the next one tries again
                with self._lock:
                    self._pending = False
                return
            with self._lock:
                self._pending = False
                if self._wanted:
                    self._taken.set()
                    return
            fcntl.flock(fd, fcntl.LOCK_UN)  # its caller gave up and no other came: not kept
        finally:
            os.close(fd)  # the duplicate; the lock stays with the open file (the backend's descriptor)


class _Pending:
    """One caller's batch waiting for (or done by) a group commit."""

    __slots__ = ("build", "done", "error", "results", "woken")

    def __init__(self, build: Callable[[], Sequence[Statement]]) -> None:
        self.build = build
        self.results: list[list[tuple[Any, ...]]] | None = None
        self.error: BaseException | None = None
        self.done = False
        #: a lock held while its caller waits, released when the batch is committed (``done``) or
        #: when its caller is to lead the next commit; ``None`` for a caller that leads at once (it
        #: never waits) and once its caller woke.
        self.woken: _thread.LockType | None = None
