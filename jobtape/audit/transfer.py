"""Export, import and read-side helpers of the audit tools: the I/O around the pure modules.

An import writes each event verbatim (original ``recorded_at``, ``actor``, ``hash``)
through :meth:`jobtape.eventlog.store.EventStore.import_events`, so the gapless-version trigger and
``UNIQUE (job_id, version)`` guard it, with the projection rows of the batch's jobs
(every registered projection, :class:`jobtape.projections.registry.Tables`, from states folded by
:mod:`jobtape.projections.state`) written in the same batch. Positions are
assigned by the target log in file order: they differ from the source's whenever the
target is not empty or the source had gaps (rolled-back appends, archived jobs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeGuard

import msgspec

from jobtape import clock, errors
from jobtape.audit import exchange, timeline
from jobtape.audit.checkpoint import Checkpoint
from jobtape.eventlog import events as ev
from jobtape.eventlog import key_events, spill
from jobtape.eventlog import stored as stored_events
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.store import EXPECT_EMPTY_LOG, ConstraintViolation, EventStore, Statement, refuses_written_log
from jobtape.projections import key_state, registry
from jobtape.projections import state as job_state
from jobtape.projections.rebuild import collector_paused

__all__ = ["ExportReport", "ImportReport", "export", "import_lines", "select_jobs", "streams", "timelines"]

#: Events per import batch (each batch is one transaction).
IMPORT_BATCH = 5000
#: Streams whose last version, hash and state an import keeps in memory; older ones spill to a temp file.
STREAMS_IN_MEMORY = 20_000

Bound = int | dt.datetime | None


def select_jobs(store: EventStore, *, since: Bound = None, until: Bound = None, job_id: str | None = None) -> set[str]:
    """Ids of the jobs created in ``[since, until)``.

    Args:
        store: the event store.
        since: a global position (``int``) or an aware UTC time; jobs whose ``job.created``
            is at or after it (``None``: no lower bound).
        until: likewise; jobs whose ``job.created`` is before it (``None``: no upper bound).
        job_id: only this job.
    """
    return store.created_job_ids(since=since, until=until, job_id=job_id)


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What an export wrote: ``jobs`` job streams, ``events`` lines, ``events_per_job`` (stream id -> lines),
    ``keys`` API-key streams (a whole-log export carries them; a selection is of jobs only)."""

    jobs: int
    events: int
    events_per_job: dict[str, int]
    keys: int = 0


def export(store: EventStore, out: TextIO, job_ids: set[str] | None) -> ExportReport:
    """Write the streams of ``job_ids`` (``None``: every job) as JSON Lines, in position order.

    When the store holds the log key, the file ends with the keyed trailer
    (:class:`jobtape.audit.exchange.ExportTrailer`): an import refuses the file if a line
    is removed, added or edited.

    Args:
        store: the event store.
        out: a text file open for writing; one line per event, see :mod:`jobtape.audit.exchange`.
        job_ids: the jobs to export, whole streams.
    """
    per_job: dict[str, int] = defaultdict(int)
    if job_ids is not None and len(job_ids) == 1:
        rows: Iterable[stored_events.StoredEvent] = store.iter_stored(job_id=next(iter(job_ids)))
    else:
        rows = store.iter_stored()
    digest = hashlib.sha256()
    for row in rows:
        if job_ids is None or row.job_id in job_ids:
            line = exchange.encode_line(row)
            out.write(line + "\n")
            digest.update(line.encode() + b"\n")
            per_job[row.job_id] += 1
    if store.keys is not None:
        position, chain, _key_id = store.log_head()
        trailer = exchange.make_trailer(
            store.keys,
            events=sum(per_job.values()),
            sha256=digest.hexdigest(),
            head_position=position,
            head_chain=chain,
            exported_at=clock.format_timestamp(clock.utcnow()),
        )
        out.write(exchange.encode_trailer(trailer) + "\n")
    key_streams = sum(1 for stream in per_job if key_events.is_key_stream(stream))
    return ExportReport(jobs=len(per_job) - key_streams, events=sum(per_job.values()), events_per_job=dict(per_job), keys=key_streams)


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an import wrote: ``jobs`` job streams, ``keys`` API-key streams and ``events``, at positions
    ``first_position..last_position``."""

    jobs: int
    events: int
    first_position: int | None
    last_position: int | None
    keys: int = 0


def import_lines(
    store: EventStore,
    lines: Iterable[str],
    tables: registry.Tables = registry.ENGINE_TABLES,
    *,
    keys: LogKeys | None = None,
    checkpoint: Checkpoint | None = None,
) -> ImportReport:
    """Check an export and write it in batches of :data:`IMPORT_BATCH` events, streaming (flat memory).

    The lines are read lazily, :data:`IMPORT_BATCH` at a time; each batch is checked
    (:func:`jobtape.audit.exchange.check_lines`: versions, hash chain, the fold) before it is
    written, in ONE store batch with the projection rows of its jobs. When ``lines`` is a
    seekable file, the whole file is checked first and then read again to write it, so a
    broken line anywhere means nothing was written; from a pipe (stdin) or any other
    one-shot iterable, the batches before the broken one are written (the error says how many
    events). Memory holds one batch plus one state per stream, never the file.

    With ``keys``, the export must carry its keyed trailer and chain
    (:func:`jobtape.audit.exchange.check_lines`): an export with lines removed, added or
    edited, signed with a key not held, or not extending ``checkpoint`` is refused. From a
    file that means nothing is written; from a pipe the trailer comes last, so the batches
    before it would be written: a keyed import from a pipe is read whole into a temporary
    file first.

    Args:
        store: the target event store (a fresh one, or one without these jobs).
        lines: the export file's lines (an open file, stdin, or any iterable of lines).
        tables: the log's registered projections, written for the imported jobs.
        keys: the log keys the export must be signed with (``None``: an unkeyed import, no keyed checks).
        checkpoint: a verified checkpoint the export must extend (with ``keys``).

    Raises:
        errors.InvalidExport: a line is malformed, gapped, fails the hash chain or the state
            rules; or a job of the file exists in the store already (the batches before it
            were written; the message says how many events).
    """
    with collector_paused():  # one state per stream, millions of events: see collector_paused
        if keys is not None and not _rewindable(lines):
            with tempfile.TemporaryFile("w+", encoding="utf-8") as spooled:
                spooled.writelines(line if line.endswith("\n") else line + "\n" for line in lines)
                spooled.seek(0)
                return _import(store, spooled, tables, keys, checkpoint)
        return _import(store, lines, tables, keys, checkpoint)


def _import(
    store: EventStore, lines: Iterable[str], tables: registry.Tables, keys: LogKeys | None, checkpoint: Checkpoint | None
) -> ImportReport:
    if imports_in_one_transaction(store, lines):
        try:
            return _import_in_one_transaction(store, lines, tables, keys, checkpoint)
        except _LogWritten:  # an append came between the check and the transaction; nothing was written
            assert _rewindable(lines)  # the one transaction reads only a file
            lines.seek(0)  # so in batches, as into any live log
    if _rewindable(lines):
        with _stream_memory() as streams:
            for _ in exchange.check_lines(lines, streams, keys=keys, checkpoint=checkpoint):  # check everything before writing
                pass
        lines.seek(0)
    jobs = key_streams = 0
    positions = _Positions()
    chunk: list[exchange.CheckedEvent] = []
    with _stream_memory() as streams:
        for checked in _checked(lines, streams, positions):
            chunk.append(checked)
            if checked.stored.version == 1:  # every stream of a checked export starts at version 1
                if key_events.is_key_stream(checked.stored.job_id):
                    key_streams += 1
                else:
                    jobs += 1
            if len(chunk) == IMPORT_BATCH:
                _write_chunk(store, chunk, tables, positions)
                chunk = []
        if chunk:
            _write_chunk(store, chunk, tables, positions)
    return ImportReport(jobs=jobs, events=positions.count, first_position=positions.first, last_position=positions.last, keys=key_streams)


def imports_in_one_transaction(store: EventStore, lines: Iterable[str]) -> bool:
    """Whether :func:`import_log` reads ``lines`` once, every batch in one transaction.

    Only a file (it can be read again to word a refusal) into a store whose backend runs a
    stream of batches in one transaction (local SQLite) and whose log was never written
    (``log_head`` at position 0): that transaction holds the write lock for the whole
    import, which a fresh data dir does not notice but a live one would (its appends would
    wait ~45 s behind a 1M-event import). Any other import checks the whole file first,
    then writes it in batches of :data:`IMPORT_BATCH` events, each its own transaction.

    This check is made before the transaction; the transaction's first statement
    (:data:`jobtape.eventlog.store.EXPECT_EMPTY_LOG`) checks the same in SQL, so an append
    that comes between the two refuses the transaction (nothing written) and the import
    falls back to the batches.
    """
    return _rewindable(lines) and store.streams_imports and store.log_head()[0] == 0


def _import_in_one_transaction(
    store: EventStore, lines: Iterable[str], tables: registry.Tables, keys: LogKeys | None, checkpoint: Checkpoint | None
) -> ImportReport:
    """One pass over a file into a local SQLite store: every batch checked and written in ONE transaction.

    The file is read once (not checked whole first and read again): each batch of
    :data:`IMPORT_BATCH` events is checked and then written, all batches in one transaction
    (:meth:`jobtape.eventlog.store.EventStore.import_stream`), so a line failing its checks,
    the keyed trailer checked after the last line, or a refused batch rolls back every batch
    before it: nothing is written, as with the two passes. The projections that fill
    themselves from ``jobs`` (``queue_counts``: a function of the pending rows) are computed
    once after the last batch, in the same transaction, instead of by two statements per
    job and batch. Memory holds one batch and the stream tips, as before; the
    transaction's pages go to the WAL. The write lock is held
    from the first batch to the commit (the whole import), so this path is taken only for a
    log that was never written (:func:`imports_in_one_transaction`), which the transaction's
    first statement checks again (:data:`jobtape.eventlog.store.EXPECT_EMPTY_LOG`).

    Raises:
        _LogWritten: the log was written before the transaction began; nothing was written.
        errors.InvalidExport: a line fails its checks, or a job exists already; nothing was written.
    """
    counts = {"jobs": 0, "keys": 0}
    positions = _Positions()
    current: list[tuple[int, list[str]]] = [(0, [])]  # the batch being written, to word a refusal: its first line, its new streams

    def chunks(streams: exchange.StreamMemory) -> Iterator[tuple[list[stored_events.StoredEvent], list[Statement]]]:
        yield [], [EXPECT_EMPTY_LOG]  # first in the transaction, before a line is read: the log is still empty
        chunk: list[exchange.CheckedEvent] = []
        for checked in exchange.check_lines(lines, streams, keys=keys, checkpoint=checkpoint):
            chunk.append(checked)
            if checked.stored.version == 1:  # every stream of a checked export starts at version 1
                counts["keys" if key_events.is_key_stream(checked.stored.job_id) else "jobs"] += 1
            if len(chunk) == IMPORT_BATCH:
                yield _chunk_batch(chunk, tables, current)
                chunk = []
        if chunk:
            yield _chunk_batch(chunk, tables, current)
        # the projections that fill themselves from `jobs` (queue_counts), once, from every row in the transaction
        yield [], [statement for p in tables.projections if p.fill is not None for statement in p.fill(registry.JOBS.table, p.table)]

    with _stream_memory() as streams:
        try:
            store.import_stream(chunks(streams), positions.add)
        except (errors.ConcurrencyError, ConstraintViolation) as exc:
            if isinstance(exc, ConstraintViolation) and refuses_written_log(exc):
                raise _LogWritten from exc
            line, streams_started = current[0]
            existing = next((job_id for job_id in streams_started if store.stream_exists(job_id)), None)
            reason = f"job {existing} exists in the target store already" if existing else str(exc)
            raise errors.InvalidExport(line, f"{reason}; import into a fresh --data-dir (nothing was imported)") from exc
    return ImportReport(
        jobs=counts["jobs"], events=positions.count, first_position=positions.first, last_position=positions.last, keys=counts["keys"]
    )


class _LogWritten(Exception):
    """The log was written between :func:`imports_in_one_transaction` and the import's transaction."""


def _chunk_batch(
    chunk: list[exchange.CheckedEvent], tables: registry.Tables, current: list[tuple[int, list[str]]]
) -> tuple[list[stored_events.StoredEvent], list[Statement]]:
    """A checked batch's events and its projection statements (as :func:`_write_chunk` writes them).

    Notes in ``current`` the batch's first line and the streams it starts (a refusal names one the target holds already).
    """
    current[0] = (chunk[0].line, [item.stored.job_id for item in chunk if item.stored.version == 1])
    states: dict[str, job_state.JobState | key_state.KeyState] = {}
    for item in chunk:
        states[item.stored.job_id] = item.state  # the last state of each stream in the batch
    return [item.stored for item in chunk], _projection_statements(list(states.values()), tables, filled_later=True)


_TIP_ENCODER = msgspec.msgpack.Encoder()
# A job's state or a key's: two untagged structs, so each gets its own slot in the spilled tuple.
_TIP_DECODER = msgspec.msgpack.Decoder(tuple[int, str, job_state.JobState | None, key_state.KeyState | None])


def _encode_tip(tip: exchange.StreamTip) -> bytes:
    version, hash_, state = tip
    job = state if isinstance(state, job_state.JobState) else None
    key = state if isinstance(state, key_state.KeyState) else None
    return _TIP_ENCODER.encode((version, hash_, job, key))


def _decode_tip(data: bytes) -> exchange.StreamTip:
    version, hash_, job, key = _TIP_DECODER.decode(data)
    state = job if job is not None else key
    assert state is not None
    return version, hash_, state


@contextlib.contextmanager
def _stream_memory() -> Iterator[spill.SpillMap[exchange.StreamTip]]:
    """The checker's per-stream memory, bounded: older tips spill to a temp file (flat memory for any log)."""
    tips = spill.SpillMap(_encode_tip, _decode_tip, capacity=STREAMS_IN_MEMORY)
    try:
        yield tips
    finally:
        tips.close()


class _Positions:
    """The positions an import was given so far: a count, the first and the last (not a list)."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.last: int | None = None

    def add(self, found: list[int]) -> None:
        if found:
            self.first = found[0] if self.first is None else self.first
            self.last = found[-1]
            self.count += len(found)


def _checked(lines: Iterable[str], streams: exchange.StreamMemory, positions: _Positions) -> Iterator[exchange.CheckedEvent]:
    """:func:`exchange.check_lines`; a refusal after some batches were written says how many events were."""
    try:
        yield from exchange.check_lines(lines, streams)
    except errors.InvalidExport as exc:
        if positions.count:
            raise errors.InvalidExport(exc.line, f"{exc.reason} ({positions.count} events before this batch were imported)") from exc
        raise


def _rewindable(lines: Iterable[str]) -> TypeGuard[TextIO]:
    seekable = getattr(lines, "seekable", None)
    return callable(seekable) and bool(seekable()) and callable(getattr(lines, "seek", None))


def _write_chunk(store: EventStore, chunk: list[exchange.CheckedEvent], tables: registry.Tables, positions: _Positions) -> None:
    states: dict[str, job_state.JobState | key_state.KeyState] = {}
    for item in chunk:
        states[item.stored.job_id] = item.state  # the last state of each stream in the batch
    events = [item.stored for item in chunk]
    try:
        extra = _projection_statements(list(states.values()), tables)
        positions.add(store.import_events(events, extra))
    except (errors.ConcurrencyError, ConstraintViolation) as exc:
        existing = _existing_job(store, events)
        reason = f"job {existing} exists in the target store already" if existing else str(exc)
        raise errors.InvalidExport(
            chunk[0].line, f"{reason}; import into a fresh --data-dir ({positions.count} events before this batch were imported)"
        ) from exc


def _projection_statements(
    states: list[job_state.JobState | key_state.KeyState], tables: registry.Tables, *, filled_later: bool = False
) -> list[Statement]:
    """The rows the streams' final states write: a job's in every projection, a key's in those of key streams.

    Projection by projection (each writes its own table, so their order is free, as in a
    rebuild's :func:`jobtape.projections.rebuild._write_rows`): a projection's rows of many
    jobs are runs of one statement, which the SQLite backend runs as one ``executemany``.
    ``filled_later``: leave out the projections with a ``fill`` (``queue_counts``), which the
    caller computes once from ``jobs`` after the last batch, in the same transaction.
    """
    jobs = [state for state in states if isinstance(state, job_state.JobState)]
    keys = [state for state in states if isinstance(state, key_state.KeyState)]
    projections = [p for p in tables.projections if not (filled_later and p.fill is not None)]
    statements = [s for p in projections for state in jobs for s in p.statements(None, state, p.table)]
    statements += [
        s for p in tables.projections if p.key_statements is not None for state in keys for s in p.key_statements(None, state, p.table)
    ]
    return statements


def _existing_job(store: EventStore, chunk: list[stored_events.StoredEvent]) -> str | None:
    for row in chunk:  # only to word the error: the batch's guard already refused it
        if row.version == 1 and store.stream_exists(row.job_id):
            return row.job_id
    return None


def streams(store: EventStore, job_ids: set[str] | None = None) -> Iterator[list[ev.RecordedEvent]]:
    """Every job's recorded events (version order), job by job in created order; ``job_ids`` filters."""
    grouped: dict[str, list[ev.RecordedEvent]] = {}
    for item in store.iter_all():
        if job_ids is None or item.job_id in job_ids:
            grouped.setdefault(item.job_id, []).append(item)
    yield from grouped.values()


def timelines(store: EventStore, job_ids: set[str] | None = None) -> Iterator[timeline.JobTimeline]:
    """:func:`jobtape.audit.timeline.summarize` for every job (or those in ``job_ids``)."""
    for recorded in streams(store, job_ids):
        if isinstance(recorded[0].event, ev.JobCreated):
            yield timeline.summarize(recorded)
