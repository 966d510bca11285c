"""The event store: append guarded by version, read a stream, read all from a position.

:class:`EventStore` turns appends and reads into SQL statements and hands them to a
:class:`SQLBackend` (the narrow port: run one atomic batch, run one query). The SQLite
backend (:mod:`jobtape.eventlog.sqlite`) and the libSQL backend execute the very same
statements, so every write is one batch whose guards live in SQL:

- ``UNIQUE (job_id, version)`` and the ``events_gapless_version`` trigger refuse an
  append whose expected version is stale (optimistic concurrency);
- the ``events_chain_guard`` trigger refuses an event whose position does not follow the
  log's head, or without its keyed chain value (docs/audit.md, "Tamper evidence"): the
  store names each event's position and chains it under the log key before the batch, from
  the head it wrote last (no read), and builds the batch again from the head read back
  when another process appended first (:meth:`EventStore._write_chained`);
- any projection statements passed as ``extra`` run in the same batch, so a projection
  row never lags the events it folds.

The queries of the ``events`` table that the other layers need are named methods here
(reads of stored rows for the audit tools, the verbatim import, the lookups of ``tail``,
``export`` and ``archive``); the row format
(the one event INSERT, the one row decoding) is :mod:`jobtape.eventlog.stored`. Nothing
outside :mod:`jobtape.eventlog` and :mod:`jobtape.projections` touches :attr:`EventStore.backend`
(``tests/unit/test_store_layer.py`` checks it).
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from jobtape import clock, errors
from jobtape.errors import ConstraintViolation
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing, key_events, logkey, stored

if TYPE_CHECKING:
    from jobtape.eventlog import schema

__all__ = ["EXPECT_EMPTY_LOG", "ConstraintViolation", "EventStore", "SQLBackend", "Statement", "refuses_written_log"]


class Statement(NamedTuple):
    """One SQL statement with ``?`` placeholders and its parameters."""

    sql: str
    params: tuple[Any, ...] = ()


class SQLBackend(abc.ABC):
    """The port every event-store backend implements.

    Attributes:
        local_reads: ``True`` when a primary-key :meth:`query` is a local read that does not
            wait for writers (SQLite in WAL mode), short enough for an HTTP handler to run
            inline on the event loop; ``False`` (a network round trip, e.g. libSQL/sqld)
            keeps reads in a worker thread.
    """

    local_reads: ClassVar[bool] = False
    #: ``True`` when :meth:`execute_built` calls ``build`` inside the batch's own write
    #: transaction, with no other writer able to commit until it ends, and a :meth:`query`
    #: made from ``build`` reads that transaction (the SQLite backend's write turn).
    builds_in_turn: ClassVar[bool] = False
    #: ``True`` when :meth:`execute_stream` runs a stream of batches in one transaction (the
    #: SQLite backend); ``False``: it raises ``NotImplementedError`` (a remote sqld, whose
    #: batches are requests with size limits).
    streams_batches: ClassVar[bool] = False

    @abc.abstractmethod
    def execute_batch(self, statements: Sequence[Statement]) -> list[list[tuple[Any, ...]]]:
        """Run the statements in one transaction: all of them, or none.

        Returns:
            The rows each statement returned (``[]`` for most; ``RETURNING`` rows for inserts).

        Raises:
            ConstraintViolation: a constraint or trigger refused a statement; nothing was written.
        """

    def execute_built(self, build: Callable[[], Sequence[Statement]]) -> list[list[tuple[Any, ...]]]:
        """Run the batch ``build()`` returns, ``build`` being called in the order batches are run.

        The appends of one process form the whole-log chain in order: each batch's
        positions follow the batch built before it, so the backend must run batches in the
        order their statements were built. This default runs one built batch at a time
        (a lock around build and run); the SQLite backend builds each queued batch in its
        group commit's transaction instead, in queue order, so concurrent appends still
        share a commit (:attr:`builds_in_turn`).

        Args:
            build: returns the statements; called once, before the batch runs.

        Returns:
            As :meth:`execute_batch`.

        Raises:
            As :meth:`execute_batch`, and whatever ``build`` raises (nothing was run).
        """
        with _ordered_lock(self):
            return self.execute_batch(build())

    def execute_stream(self, batches: Iterable[Sequence[Statement]]) -> None:
        """Run every batch ``batches`` yields, read lazily, in ONE transaction: all of them, or none.

        Only a backend with :attr:`streams_batches`. The batches are pulled one at a time
        while the transaction is open (memory holds one batch); whatever the iterable raises
        (a check of the next batch failing) rolls back everything, as a refused statement
        does. The write lock is held from the first batch to the commit.

        Raises:
            NotImplementedError: the backend does not stream (:attr:`streams_batches` is ``False``).
            ConstraintViolation: a constraint or trigger refused a statement; nothing was written.
            Whatever ``batches`` raises; nothing was written.
        """
        raise NotImplementedError(f"{type(self).__name__} runs no stream of batches in one transaction")

    @abc.abstractmethod
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read-only statement and return its rows."""

    @abc.abstractmethod
    def migrate(self, migrations: Sequence[schema.Migration] | None = None) -> list[str]:
        """Bring the schema up to date; return the migration names applied.

        Args:
            migrations: the engine's and the registered packages' migrations, in order
                (:attr:`jobtape.projections.registry.Tables.migrations`); ``None``: the
                engine's own (:data:`jobtape.eventlog.schema.MIGRATIONS`).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Further use is an error."""


_ORDER_LOCKS_GUARD = threading.Lock()


def _ordered_lock(backend: SQLBackend) -> threading.Lock:
    """The per-backend lock of :meth:`SQLBackend.execute_built`'s default (made on first use)."""
    lock = backend.__dict__.get("_jobtape_order_lock")
    if lock is None:
        with _ORDER_LOCKS_GUARD:
            lock = backend.__dict__.setdefault("_jobtape_order_lock", threading.Lock())
    return lock  # type: ignore[no-any-return]


#: How many streams' last hashes :class:`EventStore` remembers (saves a read per append).
_HASH_CACHE_SIZE = 4096
_SELECT_COLUMNS = f"SELECT {stored.COLUMNS} FROM events"
#: The condition that keeps job streams and leaves key streams out (GLOB: case-sensitive).
_JOB_STREAMS = f"job_id NOT GLOB '{key_events.KEY_STREAM_PREFIX}*'"
#: How many times an append is built again when other writers took its position first.
_CHAIN_ATTEMPTS = 100
_EPHEMERAL = object()
#: A chained batch's first statement: the head's chain it was built on (``events_chain_guard`` checks it).
_EXPECT_HEAD = "UPDATE log_head SET expected = ? WHERE id = 1"
#: A guard an import into a log never written runs first in its transaction
#: (:func:`jobtape.audit.transfer.import_lines`): it copies the ``log_head`` row onto itself,
#: refused by the primary key (``UNIQUE constraint failed: log_head.id``, :func:`refuses_written_log`),
#: when the head is past position 0, so an append that came between the caller's check of the
#: head and the transaction refuses the whole transaction; nothing is written.
EXPECT_EMPTY_LOG = Statement("INSERT INTO log_head SELECT * FROM log_head WHERE id = 1 AND position <> 0")


def refuses_written_log(exc: ConstraintViolation) -> bool:
    """Whether ``exc`` is :data:`EXPECT_EMPTY_LOG`'s refusal: the log was written before the transaction."""
    return "log_head.id" in exc.detail


_PROCESS_KEYS: list[logkey.LogKeys] = []


def _process_keys() -> logkey.LogKeys:
    """The random key of this process (made once), for stores built without keys."""
    with _ORDER_LOCKS_GUARD:
        if not _PROCESS_KEYS:
            _PROCESS_KEYS.append(logkey.LogKeys.ephemeral())
        return _PROCESS_KEYS[0]


class EventStore:
    """Appends to and reads from the ``events`` table through a :class:`SQLBackend`."""

    def __init__(self, backend: SQLBackend, keys: logkey.LogKeys | object | None = _EPHEMERAL) -> None:
        """Wrap a backend; call :meth:`SQLBackend.migrate` first (``open_store`` does).

        Args:
            backend: the migrated backend.
            keys: the log keys (:func:`jobtape.runtime.log_keys` reads the configured ones);
                ``None``: no key, the store reads but refuses to append
                (:class:`errors.LogKeyError`); by default a random key of this process
                (its chains verify in this process only: tests, benchmarks).
        """
        self.backend = backend
        self.keys: logkey.LogKeys | None = _process_keys() if keys is _EPHEMERAL else keys  # type: ignore[assignment]
        # job_id -> (version, hash) of the last event this store appended or read there.
        self._last_hash: dict[str, tuple[int, str]] = {}
        # (position, chain) of the log's head as this store last built or read it; None: read it.
        self._head: tuple[int, str] | None = None
        self._head_generation = 0
        self._head_lock = threading.Lock()
        # Batches this store built that have not returned yet, and whether another process
        # appends to the log too (seen as a chain conflict on a head this store built): then
        # a batch built while none of this store's is in flight reads the head first.
        self._in_flight = 0
        self._shared = False
        #: Appends re-built because another writer took the position first (for benchmarks).
        self.chain_retries = 0

    def note_last_hash(self, job_id: str, version: int, hash_: str) -> None:
        """Keep the stored hash of ``job_id``'s event ``version`` for the next append to that stream.

        An append at ``expected_version == version`` then chains from it without reading it
        (a worker claiming jobs created by another process: the projection read that found
        them read the hash too). Safe to note whatever was read: a stream's version keeps
        its hash while the stream is in the log, and an append whose stream moved on is
        refused by the version guard whatever it chained from. A stream archived (its events
        deleted) and then imported again from another copy could hold another hash at the
        same version: this store forgets the streams it archives or imports
        (:meth:`forget_streams`); another process's entry lives until its next append to
        that stream is refused or its cache starts over, and `verify` names an append
        chained from it (rule ``chain``).

        Args:
            job_id: the stream.
            version: the version whose hash this is (>= 1).
            hash_: the stored ``hash`` column (``""`` for an event stored without one).
        """
        if len(self._last_hash) >= _HASH_CACHE_SIZE:
            self._last_hash.clear()
        self._last_hash[job_id] = (version, hash_)

    def forget_streams(self, job_ids: Iterable[str]) -> None:
        """Drop the kept hashes of ``job_ids`` (streams archived or imported: their next append reads the hash).

        Args:
            job_ids: the streams.
        """
        for job_id in job_ids:
            self._last_hash.pop(job_id, None)

    def _previous_hash(self, job_id: str, expected_version: int) -> str:
        if expected_version == 0:
            return hashing.genesis_hash(job_id)
        cached = self._last_hash.get(job_id)
        if cached is not None and cached[0] == expected_version:
            return cached[1]
        rows = self.backend.query("SELECT hash FROM events WHERE job_id = ? AND version = ?", [job_id, expected_version])
        if not rows:
            raise errors.ConcurrencyError(job_id, expected_version, f"stream {job_id} has no version {expected_version}")
        return str(rows[0][0] or "")

    def append(
        self,
        job_id: str,
        events: Sequence[ev.Event],
        expected_version: int,
        *,
        actor: str,
        extra: Sequence[Statement] = (),
        recorded_at: Any = None,
    ) -> list[ev.RecordedEvent]:
        """Append events to a job's stream atomically.

        Args:
            job_id: the stream.
            events: one or more events; they get versions ``expected_version + 1 ...``.
            expected_version: the version the caller last saw (0 for a new stream).
            actor: who appends (``api``, a worker id, ``cli``).
            extra: statements to run in the same batch after the inserts (projections).
            recorded_at: the UTC time to record; defaults to :func:`jobtape.clock.utcnow`.

        Returns:
            The recorded events with their global positions.

        Raises:
            ValueError: ``job_id`` is a key stream (append key events with :meth:`append_key_events`).
            errors.ConcurrencyError: the stream is not at ``expected_version``.
            errors.DuplicateIdempotencyKey: an ``extra`` statement hit the idempotency index.
            ConstraintViolation: any other constraint failed. In every case nothing was written.
            errors.LogKeyError: the store holds no log key.
            errors.StoreBusy: other writers kept taking the log's next position.
        """
        if key_events.is_key_stream(job_id):
            raise ValueError(f"{job_id} is a key stream; append_key_events appends to it")
        at = recorded_at or clock.utcnow()
        positions = self._append_encoded(job_id, [ev.encode_event(e) for e in events], expected_version, actor, extra, at, events)
        return [
            ev.RecordedEvent(position=position, job_id=job_id, version=expected_version + i, event=event, actor=actor, recorded_at=at)
            for i, (position, event) in enumerate(zip(positions, events, strict=True), start=1)
        ]

    def append_key_events(
        self,
        stream: str,
        events: Sequence[key_events.KeyEvent],
        expected_version: int,
        *,
        actor: str,
        extra: Sequence[Statement] = (),
        recorded_at: Any = None,
    ) -> list[key_events.RecordedKeyEvent]:
        """Append events to an API key's stream atomically: the same batch, guards and hash chain as :meth:`append`.

        Args:
            stream: the key stream, ``key-<key_id>`` (:func:`jobtape.eventlog.key_events.key_stream`).
            events: one or more key events; they get versions ``expected_version + 1 ...``.
            expected_version: the version the caller last saw (0 for a new key).
            actor: who appends (``cli:<os user>``).
            extra: statements to run in the same batch after the inserts (the ``api_keys`` row).
            recorded_at: the UTC time to record; defaults to :func:`jobtape.clock.utcnow`.

        Returns:
            The recorded events with their global positions.

        Raises:
            ValueError: ``stream`` is not a key stream.
            errors.ConcurrencyError: the stream is not at ``expected_version`` (a key id
                created twice, a key revoked twice or never created).
            ConstraintViolation: any other constraint failed (a token hash used twice). In
                every case nothing was written.
        """
        if not key_events.is_key_stream(stream):
            raise ValueError(f"{stream} is not a key stream (key-<key_id>)")
        at = recorded_at or clock.utcnow()
        encoded = [key_events.encode_key_event(e) for e in events]
        positions = self._append_encoded(stream, encoded, expected_version, actor, extra, at, ())
        return [
            key_events.RecordedKeyEvent(
                position=position, stream=stream, version=expected_version + i, event=event, actor=actor, recorded_at=at
            )
            for i, (position, event) in enumerate(zip(positions, events, strict=True), start=1)
        ]

    def _append_encoded(
        self,
        job_id: str,
        encoded: Sequence[tuple[str, str]],
        expected_version: int,
        actor: str,
        extra: Sequence[Statement],
        at: Any,
        events: Sequence[ev.Event],
    ) -> list[int]:
        """Insert ``(type, data)`` pairs as versions ``expected_version + 1 ...`` of ``job_id``, chained, plus ``extra``, in ONE batch.

        Returns:
            The global position of each event.
        """
        if not encoded:
            raise ValueError("append needs at least one event")
        stamp = clock.format_timestamp(at)
        # Reading the previous hash before the batch is safe: the batch's version guard
        # fails unless the stream is still at expected_version, whose hash never changes.
        previous = self._previous_hash(job_id, expected_version)
        rows = []
        for offset, (type_, data) in enumerate(encoded, start=1):
            version = expected_version + offset
            previous = hashing.event_hash(previous, job_id, version, type_, data, actor, stamp)
            rows.append((job_id, version, type_, data, actor, stamp, previous))
        try:
            positions = self._write_chained(rows, extra)
        except ConstraintViolation as exc:
            self._last_hash.pop(job_id, None)
            raise self._translate(exc, job_id, expected_version, events) from exc
        if len(self._last_hash) >= _HASH_CACHE_SIZE:
            self._last_hash.clear()
        self._last_hash[job_id] = (expected_version + len(encoded), previous)
        return positions

    def _require_keys(self) -> logkey.LogKeys:
        if self.keys is None:
            raise errors.LogKeyError(
                "the event log cannot be appended to without its log key: set JOBTAPE_LOG_KEY"
                " (or keep data_dir/log-key readable) in every process that writes"
            )
        return self.keys

    def _write_chained(self, rows: Sequence[tuple[Any, ...]], extra: Sequence[Statement]) -> list[int]:
        """Insert ``rows`` (the content columns of :data:`stored.INSERT_EVENT`) at the log's next
        positions, chained under the current key, plus ``extra``, in ONE batch.

        The batch is built under the backend's ordering (:meth:`SQLBackend.execute_built`)
        from the head this store last built (so one process never reads it back); when
        another writer appended first, ``events_chain_guard`` refuses the batch and it is
        built again from the head read back. Nothing else is retried.

        Returns:
            The positions of ``rows``.

        Raises:
            ConstraintViolation: a guard other than the chain's refused the batch.
            errors.StoreBusy: the position was taken :data:`_CHAIN_ATTEMPTS` times in a row.
        """
        keys = self._require_keys()
        for _attempt in range(_CHAIN_ATTEMPTS):
            if self._head is None:
                self._ensure_chained()
            built: list[int] = []  # [generation, first position], filled by the build
            build = functools.partial(self._build_chained, rows, extra, keys, built)
            try:
                self.backend.execute_built(build)
            except ConstraintViolation as exc:
                conflict = "chain conflict" in exc.detail
                with self._head_lock:
                    if built and built[0] == self._head_generation:  # later batches built on this one fail too
                        self._head, self._head_generation = None, self._head_generation + 1
                        self._shared = self._shared or conflict  # the head moved under this store: another writer
                if conflict:
                    self.chain_retries += 1
                    continue
                raise
            except BaseException:
                with self._head_lock:
                    self._head, self._head_generation = None, self._head_generation + 1
                raise
            finally:
                if built:
                    with self._head_lock:
                        self._in_flight -= 1
            return list(range(built[1], built[1] + len(rows)))
        raise errors.StoreBusy(f"other writers took the log's next position {_CHAIN_ATTEMPTS} times in a row")

    def _build_chained(
        self, rows: Sequence[tuple[Any, ...]], extra: Sequence[Statement], keys: logkey.LogKeys, built: list[int]
    ) -> list[Statement]:
        """The batch of :meth:`_write_chained`, from the head this store built last (or reads); called
        in the backend's build order. Moves the head past the batch and notes what it was built on in ``built``."""
        with self._head_lock:
            # another writer may have moved the head: read it when no batch of ours is in flight, or in
            # every write turn (then the read is inside the batch's transaction: exact, no retry)
            fresh = self._shared and (self._in_flight == 0 or self.backend.builds_in_turn)
            head = self._head if self._head is not None and not fresh else self._read_head()
            position, chain = head
            # the chain this batch links from, as log_head holds it (NULL for an empty log): the guard compares
            statements = [Statement(_EXPECT_HEAD, (chain if position > 0 else None,))]
            for row in rows:
                position += 1
                chain = hashing.chain_link(keys.current, keys.current_id, chain, position, row[6])
                statements.append(Statement(stored.INSERT_EVENT, (position, *row, keys.current_id, chain)))
            self._head = (position, chain)
            self._in_flight += 1
            built.extend((self._head_generation, head[0] + 1))
        return [*statements, *extra]

    def _read_head(self) -> tuple[int, str]:
        """``log_head`` as (position, chain); the genesis chain for an empty log."""
        rows = self.backend.query("SELECT position, chain FROM log_head WHERE id = 1")
        if not rows:
            return 0, hashing.GENESIS_CHAIN
        position, chain = int(rows[0][0]), rows[0][1]
        return position, str(chain) if chain is not None else hashing.GENESIS_CHAIN

    def log_head(self) -> tuple[int, str | None, str | None]:
        """The log's head as recorded in ``log_head``: (position, chain, key id).

        ``chain`` is ``None`` for an empty log and for a log the keyed upgrade has not
        chained yet. The head may lie past the newest event of ``events`` (an archive
        removed it); verify checks it against the events and the archive records.
        """
        rows = self.backend.query("SELECT position, chain, key_id FROM log_head WHERE id = 1")
        if not rows:
            return 0, None, None
        return int(rows[0][0]), rows[0][1], rows[0][2]

    def _ensure_chained(self) -> None:
        """Run the keyed upgrade (:meth:`upgrade_chain`) when the log holds events not chained yet."""
        position, chain, _key_id = self.log_head()
        if position > 0 and chain is None:
            self.upgrade_chain()

    def upgrade_chain(self) -> bool:
        """The keyed upgrade of a log written before migration 0012: chain its events, once.

        Checks every stream's sha256 chain first (:mod:`jobtape.eventlog.hashing`), then in
        ONE batch fills ``key_id`` and ``chain`` of every event in position order, sets
        ``log_head``'s chain and inserts the keyed ``chain_upgrades`` record (the position,
        chain and key id it reached, how many events it chained, the archives made before
        it). The ``events_no_update`` trigger lets only a NULL chain be filled; a second
        process upgrading at the same time is refused by the record's primary key and
        finds the log chained.

        Returns:
            ``True`` if this call chained the log; ``False`` if it was chained already.

        Raises:
            errors.LogKeyError: no key, or a stream's sha256 chain does not verify (nothing
                was written; the message names the first broken event).
        """
        keys = self._require_keys()
        position, chain, _key_id = self.log_head()
        if chain is not None or position == 0:
            return False
        streams: dict[str, str] = {}
        link = hashing.GENESIS_CHAIN
        statements: list[Statement] = []
        count = 0
        for row in self.iter_stored(to_position=position):
            previous = streams.get(row.job_id, hashing.genesis_hash(row.job_id))
            if row.hash is not None:
                expected = hashing.event_hash(previous, row.job_id, row.version, row.type, row.data, row.actor, row.recorded_at)
                if expected != row.hash:
                    raise errors.LogKeyError(
                        f"the keyed upgrade refused: the sha256 chain of job {row.job_id} breaks at position {row.position}"
                        " (the event was changed); nothing was written. Restore the log from a backup, or run"
                        " `jobtape verify` to see every broken event"
                    )
                streams[row.job_id] = row.hash
            else:
                streams[row.job_id] = ""
            link = hashing.chain_link(keys.current, keys.current_id, link, row.position, row.hash)
            statements.append(
                Statement(
                    "UPDATE events SET key_id = ?, chain = ? WHERE position = ? AND chain IS NULL", (keys.current_id, link, row.position)
                )
            )
            count += 1
        archive_ids = ",".join(str(r[0]) for r in self.backend.query("SELECT archive_id FROM archives ORDER BY archive_id"))
        at = clock.format_timestamp(clock.utcnow())
        mac = hashing.record_mac(keys.current, "upgrade", (position, link, keys.current_id, at, count, archive_ids))
        statements.append(
            Statement(
                "UPDATE log_head SET chain = ?, key_id = ? WHERE id = 1 AND position = ? AND chain IS NULL",
                (link, keys.current_id, position),
            )
        )
        statements.append(
            Statement(
                "INSERT INTO chain_upgrades (position, chain, key_id, upgraded_at, events, archives, mac) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (position, link, keys.current_id, at, count, archive_ids, mac),
            )
        )
        try:
            self.backend.execute_batch(statements)
        except ConstraintViolation:
            if self.log_head()[1] is not None:
                return False  # another process upgraded first
            raise
        return True

    @staticmethod
    def _is_version_conflict(exc: ConstraintViolation) -> bool:
        return "version conflict" in exc.detail or "events.job_id, events.version" in exc.detail

    @classmethod
    def _translate(cls, exc: ConstraintViolation, job_id: str, expected_version: int, events: Sequence[ev.Event]) -> Exception:
        detail = exc.detail
        if cls._is_version_conflict(exc):
            return errors.ConcurrencyError(job_id, expected_version)
        if "idempotency_key" in detail or "jobs_owner_idempotency" in detail:
            created = next((e for e in events if isinstance(e, ev.JobCreated)), None)
            if created is not None and created.idempotency_key is not None:
                return errors.DuplicateIdempotencyKey(created.owner, created.idempotency_key)
        return exc

    def read_stream(self, job_id: str, *, from_version: int = 1, to_position: int | None = None) -> list[ev.RecordedEvent]:
        """Return one job's events in version order (empty if the stream does not exist, or is a key stream).

        Args:
            job_id: the stream.
            from_version: first version to return.
            to_position: if given, only events at or before this global position.

        Raises:
            errors.MalformedEvent: a stored event cannot be decoded.
        """
        if key_events.is_key_stream(job_id):
            return []  # not a job: read_key_stream reads it
        sql = f"{_SELECT_COLUMNS} WHERE job_id = ? AND version >= ?"
        params: list[Any] = [job_id, from_version]
        if to_position is not None:
            sql += " AND position <= ?"
            params.append(to_position)
        return [stored.to_recorded(stored.from_row(row)) for row in self.backend.query(sql + " ORDER BY version", params)]

    def read_key_stream(self, stream: str) -> list[key_events.RecordedKeyEvent]:
        """Return one API key's events in version order (empty if it does not exist).

        Args:
            stream: the key stream, ``key-<key_id>``.

        Raises:
            ValueError: ``stream`` is not a key stream.
            errors.MalformedEvent: a stored event cannot be decoded.
        """
        if not key_events.is_key_stream(stream):
            raise ValueError(f"{stream} is not a key stream (key-<key_id>)")
        rows = self.backend.query(f"{_SELECT_COLUMNS} WHERE job_id = ? ORDER BY version", [stream])
        return [stored.to_recorded_key(stored.from_row(row)) for row in rows]

    def read_all(self, from_position: int = 1, *, limit: int = 1000) -> list[ev.RecordedEvent]:
        """Return up to ``limit`` events of every job stream with ``position >= from_position``, in position order.

        Key streams (:mod:`jobtape.eventlog.key_events`) are skipped: this is what the job
        fold reads. :meth:`read_log` returns every stream's events.

        Raises:
            errors.MalformedEvent: a stored event cannot be decoded.
        """
        rows = self.backend.query(
            f"{_SELECT_COLUMNS} WHERE position >= ? AND {_JOB_STREAMS} ORDER BY position LIMIT ?", [from_position, limit]
        )
        return [stored.recorded_from_row(row) for row in rows]

    def iter_all(self, from_position: int = 1, *, page_size: int = 1000) -> Iterator[ev.RecordedEvent]:
        """Iterate over every job event from ``from_position`` on (key streams skipped), reading pages of ``page_size``."""
        position = from_position
        while True:
            page = self.read_all(position, limit=page_size)
            yield from page
            if len(page) < page_size:
                return
            position = page[-1].position + 1

    def read_log(self, from_position: int = 1, *, limit: int = 1000) -> list[ev.RecordedEvent | key_events.RecordedKeyEvent]:
        """Return up to ``limit`` events of every stream, jobs' and keys', with ``position >= from_position``, in position order.

        What a rebuild reads: the last item's position is the log's head when fewer than
        ``limit`` come back.

        Raises:
            errors.MalformedEvent: a stored event cannot be decoded.
        """
        rows = self.backend.query(
            f"SELECT {stored.RECORDED_COLUMNS} FROM events WHERE position >= ? ORDER BY position LIMIT ?", [from_position, limit]
        )
        return stored.any_recorded_from_rows(rows)

    def head_position(self) -> int:
        """Return the global position of the newest event (0 for an empty log)."""
        rows = self.backend.query("SELECT COALESCE(MAX(position), 0) FROM events")
        return int(rows[0][0])

    def read_stored(
        self,
        *,
        from_position: int = 1,
        to_position: int | None = None,
        job_id: str | None = None,
        limit: int = 1000,
    ) -> list[stored.StoredEvent]:
        """Return up to ``limit`` stored events with ``from_position <= position <= to_position``, in position order.

        Args:
            from_position: first global position to return.
            to_position: last global position to return (``None``: up to the head).
            job_id: only this stream (``None``: every stream).
            limit: at most this many rows.
        """
        sql = f"{_SELECT_COLUMNS} WHERE position >= ?"
        params: list[Any] = [from_position]
        if to_position is not None:
            sql += " AND position <= ?"
            params.append(to_position)
        if job_id is not None:
            sql += " AND job_id = ?"
            params.append(job_id)
        rows = self.backend.query(sql + " ORDER BY position LIMIT ?", [*params, limit])
        return [stored.from_row(row) for row in rows]

    def iter_stored(
        self,
        *,
        from_position: int = 1,
        to_position: int | None = None,
        job_id: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[stored.StoredEvent]:
        """Iterate over :meth:`read_stored`'s rows page by page (``page_size`` rows per query)."""
        position = from_position
        while True:
            page = self.read_stored(from_position=position, to_position=to_position, job_id=job_id, limit=page_size)
            yield from page
            if len(page) < page_size:
                return
            position = page[-1].position + 1

    def import_events(self, events: Sequence[stored.StoredEvent], extra: Sequence[Statement] = ()) -> list[int]:
        """Insert events verbatim (new positions, every other column as given) plus ``extra``, in ONE batch.

        An import keeps each event's original ``recorded_at``, ``actor`` and ``hash``. The
        events' ``position``, ``key_id`` and ``chain`` are ignored: the events get the log's
        next positions, in the order given, chained under this store's key. The gapless-version trigger and ``UNIQUE (job_id, version)`` apply as for any
        append, so a stream that exists already, or a version that does not follow the
        stream's last one, refuses the whole batch.

        Args:
            events: the events to insert, each stream's in version order.
            extra: statements run after the inserts in the same batch (projection rows).

        Returns:
            The new positions, one per event.

        Raises:
            errors.ConcurrencyError: a version does not follow its stream's last one;
                nothing was written.
            ConstraintViolation: any other constraint failed; nothing was written.
        """
        streams = {e.job_id for e in events}
        try:
            positions = self._write_chained([stored.content_params(e) for e in events], extra)
        except ConstraintViolation as exc:
            self.forget_streams(streams)
            if self._is_version_conflict(exc):
                raise errors.ConcurrencyError(
                    "*", 0, f"the batch does not continue the streams in the store ({exc.detail}); nothing was written"
                ) from exc
            raise
        self.forget_streams(streams)
        return positions

    @property
    def streams_imports(self) -> bool:
        """Whether :meth:`import_stream` can run here (the backend runs a stream of batches in one transaction)."""
        return self.backend.streams_batches

    def import_stream(
        self, chunks: Iterable[tuple[Sequence[stored.StoredEvent], Sequence[Statement]]], written: Callable[[list[int]], None]
    ) -> None:
        """:meth:`import_events` for every chunk of ``chunks`` (read lazily), all in ONE transaction.

        Each chunk is ``(events, extra)`` as :meth:`import_events` takes them; its events get
        the log's next positions, chained under the current key, with the same guards. The
        chunks are pulled while the transaction is open (:meth:`SQLBackend.execute_stream`),
        so a chunk the caller refuses to produce (an export line failing its checks) rolls
        back every chunk before it: nothing is written. Only where :attr:`streams_imports`.

        Args:
            chunks: the events and projection statements of each batch, in log order.
            written: called with each chunk's positions once its statements are built (before
                the commit: if the transaction fails, none of them was written).

        Raises:
            errors.ConcurrencyError: a version does not follow its stream's last one; nothing was written.
            ConstraintViolation: any other constraint failed; nothing was written.
            NotImplementedError: the backend does not stream.
            Whatever ``chunks`` raises; nothing was written.
        """
        keys = self._require_keys()
        if self._head is None:
            self._ensure_chained()

        def batches() -> Iterator[list[Statement]]:
            position, chain = self._read_head()  # in the write turn: the head as this transaction sees it
            for events, extra in chunks:
                first = position + 1
                statements = [Statement(_EXPECT_HEAD, (chain if position > 0 else None,))]
                for event in events:
                    position += 1
                    params = stored.content_params(event)
                    chain = hashing.chain_link(keys.current, keys.current_id, chain, position, params[6])
                    statements.append(Statement(stored.INSERT_EVENT, (position, *params, keys.current_id, chain)))
                statements += extra
                self.forget_streams({event.job_id for event in events})  # their kept hashes, if any, are stale
                written(list(range(first, position + 1)))
                yield statements
                del statements, events, extra  # not held while the next chunk is checked: memory holds one batch

        try:
            self.backend.execute_stream(batches())
        except ConstraintViolation as exc:
            if self._is_version_conflict(exc):
                raise errors.ConcurrencyError(
                    "*", 0, f"the batch does not continue the streams in the store ({exc.detail}); nothing was written"
                ) from exc
            raise
        finally:
            with self._head_lock:  # the next append reads the head back
                self._head, self._head_generation = None, self._head_generation + 1

    def stream_exists(self, job_id: str) -> bool:
        """Whether the log holds any event of ``job_id``."""
        return bool(self.backend.query("SELECT 1 FROM events WHERE job_id = ? LIMIT 1", [job_id]))

    def known_job_ids(self, job_ids: Collection[str]) -> set[str]:
        """Those of ``job_ids`` the log holds events of, or has archived (``archived_jobs``: an
        ``import`` of the archive file may bring them back, with the blobs an archive kept)."""
        known: set[str] = set()
        ordered = sorted(set(job_ids))
        for start in range(0, len(ordered), 200):  # well below SQLite's limit of parameters
            chunk = ordered[start : start + 200]
            marks = ", ".join("?" * len(chunk))
            rows = self.backend.query(
                f"SELECT job_id FROM events WHERE job_id IN ({marks}) UNION SELECT job_id FROM archived_jobs WHERE job_id IN ({marks})",
                [*chunk, *chunk],
            )
            known.update(str(row[0]) for row in rows)
        return known

    def created_job_ids(
        self, *, since: int | dt.datetime | None = None, until: int | dt.datetime | None = None, job_id: str | None = None
    ) -> set[str]:
        """Ids of the jobs whose ``job.created`` (version 1) lies in ``[since, until)`` (key streams are no jobs).

        Args:
            since: a global position (``int``) or an aware UTC time; ``None``: no lower bound.
            until: likewise, exclusive; ``None``: no upper bound.
            job_id: only this job.
        """
        sql = f"SELECT job_id FROM events WHERE version = 1 AND {_JOB_STREAMS}"
        params: list[object] = []
        for bound, operator in ((since, ">="), (until, "<")):
            if isinstance(bound, int):
                sql += f" AND position {operator} ?"
                params.append(bound)
            elif isinstance(bound, dt.datetime):
                sql += f" AND recorded_at {operator} ?"
                params.append(clock.format_timestamp(bound))
        if job_id is not None:
            sql += " AND job_id = ?"
            params.append(job_id)
        return {str(row[0]) for row in self.backend.query(sql, params)}

    def first_position_since(self, at: dt.datetime) -> int | None:
        """The global position of the first event recorded at or after ``at`` (aware UTC); ``None`` if none."""
        rows = self.backend.query("SELECT MIN(position) FROM events WHERE recorded_at >= ?", [clock.format_timestamp(at)])
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def nth_newest_position(self, n: int, *, job_id: str | None = None, type_: str | None = None) -> int | None:
        """The global position of the ``n``-th newest event (1 = the newest) matching the filters; ``None``
        when fewer match.

        Args:
            n: 1 or more.
            job_id: only this stream's events.
            type_: only events of this type (e.g. ``job.failed``).
        """
        sql, params = "SELECT position FROM events WHERE 1 = 1", []
        for column, value in (("job_id", job_id), ("type", type_)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        rows = self.backend.query(sql + " ORDER BY position DESC LIMIT 1 OFFSET ?", [*params, max(n - 1, 0)])
        return int(rows[0][0]) if rows else None

    def last_positions(self, job_ids: Collection[str]) -> dict[str, int]:
        """``{job_id: global position of its newest event}`` for those of ``job_ids`` that have events."""
        if not job_ids:
            return {}
        rows = self.backend.query(
            f"SELECT job_id, MAX(position) FROM events WHERE job_id IN ({', '.join('?' * len(job_ids))}) GROUP BY job_id",
            sorted(job_ids),
        )
        return {str(job_id): int(position) for job_id, position in rows}

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()
