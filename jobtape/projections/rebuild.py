"""Rebuild every projection from the event log, and report how each differs from the live one.

The registered projections (``jobs``, and a package's, e.g. the audio package's ``assets``
and ``previews``: :class:`registry.Tables`) are
written in the same batch as the events they fold, so they should never drift;
:func:`rebuild` checks that claim (``jobtape rebuild --verify``) and repairs a table that
did drift (a manual UPDATE, a bug in an older fold, a restore from a partial backup).

Steps: fold every event of the log with the pure fold (a job stream's with
:mod:`jobtape.projections.state`, an API key's with :mod:`jobtape.projections.key_state`:
the job fold never sees a key stream), and write each stream's final
state through every projection's statements (``before=None``) into a fresh scratch table
per projection (``<table>_rebuild``, created from the live table's ``CREATE TABLE`` text,
so constraints match); compare live and scratch tables column by column in Python; then
either swap all rebuilt tables in (one batch, which writes only the rows that differ:
:func:`_swap_rows`) or drop the scratch tables.

Appends may go on while a rebuild runs. The comparison reads every table and the log's
head in ONE statement (one read snapshot); if the log moved past the folded events, the
new events are folded first. The swap batch carries a guard (a ``CHECK`` on the head
position) so it aborts, and is retried after catching up, if an append slipped in between.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.eventlog import key_events as kev
from jobtape.eventlog.store import ConstraintViolation, EventStore, SQLBackend, Statement
from jobtape.projections import jobs, key_state, registry
from jobtape.projections import state as job_state

__all__ = ["REBUILD_SUFFIX", "REBUILD_TABLE", "RebuildReport", "RowDifference", "collector_paused", "rebuild", "scratch_table"]

#: Suffix of the scratch tables the rebuilt rows are written to; dropped (or swapped in) at the end.
REBUILD_SUFFIX = "_rebuild"
#: The scratch table of ``jobs``.
REBUILD_TABLE = "jobs" + REBUILD_SUFFIX
_GUARD_NAME = "rebuild_head_moved"
#: Streams whose rows one scratch batch writes: kept small for a remote sqld (its batch and
#: request limits); a local SQLite file takes larger ones (each batch is a FULL-sync commit).
_WRITE_BATCH = 1000
_WRITE_BATCH_SQLITE = 10_000
_READ_PAGE = 5000
_MAX_ROUNDS = 10

#: ``{table: {row key: row values}}`` for every projection.
Rows = dict[str, dict[str, tuple[Any, ...]]]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block (restored after, also on errors).

    A rebuild or an import keeps one state per stream while it folds millions of events;
    every 700 allocations the collector would walk the young objects, and every so often
    all the states, for cycles that the fold's immutable structs never form: with it on, a
    rebuild of 200,000 events took 2.3x as long (``bench/rebuild.py``). Reference counting
    still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def scratch_table(table: str) -> str:
    """The scratch table a rebuild writes ``table``'s rows to: ``<table>_rebuild``."""
    return table + REBUILD_SUFFIX


@dataclasses.dataclass(frozen=True)
class RowDifference:
    """One column of one projection row whose live value differs from the rebuilt one.

    Attributes:
        job_id: the row's key: the job id for ``jobs``, the asset id for ``assets``, the
            recipe hash for ``previews``.
        column: a column of ``table``, or ``"*"`` when the row exists on one side only.
        live: the value in ``table``; for ``"*"``, the whole live row as ``{column: value}``,
            or ``None`` when the row is missing from ``table``.
        rebuilt: the value the fold produces; for ``"*"``, the rebuilt row as a dict, or
            ``None`` when the log yields no such row.
        table: the projection's table.
    """

    job_id: str
    column: str
    live: Any
    rebuilt: Any
    table: str = "jobs"


@dataclasses.dataclass(frozen=True)
class RebuildReport:
    """What a rebuild found.

    Attributes:
        jobs_rebuilt: rows the fold produced (one per stream in the log).
        events_read: events folded.
        differences: every column that differed between a live table and its rebuilt rows,
            sorted by table (registry order), row key, then column order; empty when every
            projection was exact.
        applied: the rebuilt rows replaced the live tables (``apply_changes=True``).
        rows_rebuilt: rows the fold produced per table, e.g. ``{"jobs": 6, "assets": 2, "previews": 1}``.
        compared: the live and rebuilt tables were compared (``differences`` is meaningful);
            a plain rebuild does not compare (see :func:`rebuild`'s ``compare``).
    """

    jobs_rebuilt: int
    events_read: int
    differences: list[RowDifference]
    applied: bool = False
    rows_rebuilt: dict[str, int] = dataclasses.field(default_factory=dict)
    compared: bool = True


class _Folder:
    """Folds events of many streams into states, remembering which jobs (and keys) changed.

    Every stream's state stays in memory until the end (a stream's final state is what the
    projections need), so the log is read once, in position order, a page at a time.
    """

    def __init__(self) -> None:
        self.states: dict[str, job_state.JobState] = {}
        #: each job stream's position of version 1 (``jobs.created_position``) and of its last event (``last_position``)
        self.created: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.key_states: dict[str, key_state.KeyState] = {}
        self.touched_keys: set[str] = set()
        self.head = 0
        self.events_read = 0

    def _fold_key(self, item: kev.RecordedKeyEvent) -> None:
        try:
            self.key_states[item.stream] = key_state.apply(
                self.key_states.get(item.stream), item.event, stream=item.stream, version=item.version, recorded_at=item.recorded_at
            )
        except errors.IllegalTransition as exc:
            raise errors.IllegalTransition(
                exc.job_id, exc.status, exc.event_type, f"{exc.reason} (stored event at position {item.position}, version {item.version})"
            ) from exc
        self.touched_keys.add(item.stream)

    def fold(self, pages: Iterable[list[ev.RecordedEvent | kev.RecordedKeyEvent]], on_page: Callable[[], None]) -> set[str]:
        touched: set[str] = set()
        states, apply, created, last = self.states, job_state.apply, self.created, self.last
        for page in pages:
            for item in page:
                if isinstance(item, kev.RecordedKeyEvent):
                    self._fold_key(item)
                    continue
                job_id = item.job_id
                try:
                    states[job_id] = apply(
                        states.get(job_id), item.event, job_id=job_id, version=item.version, recorded_at=item.recorded_at
                    )
                except errors.IllegalTransition as exc:
                    raise errors.IllegalTransition(
                        exc.job_id,
                        exc.status,
                        exc.event_type,
                        f"{exc.reason} (stored event at position {item.position}, version {item.version})",
                    ) from exc
                touched.add(job_id)
                last[job_id] = item.position
                if item.version == 1:
                    created[job_id] = item.position
            if page:
                self.head = page[-1].position
                self.events_read += len(page)
            on_page()
        return touched


def rebuild(
    store: EventStore,
    *,
    apply_changes: bool = True,
    progress: Callable[[int, int], None] | None = None,
    tables: registry.Tables = registry.ENGINE_TABLES,
    compare: bool | None = None,
) -> RebuildReport:
    """Recompute every projection from the log; compare each with its live table (verify) or replace it.

    Args:
        store: the event store (its backend holds ``events`` and the projection tables).
        apply_changes: replace the rows of every projection with the rebuilt ones (one
            atomic batch); with ``False`` the live tables are left untouched (verify only).
        progress: called as ``progress(done_events, total_events)`` after every page of
            5,000 events and after each pass; ``total_events`` grows if appends arrive
            during the rebuild.
        tables: the log's registered projections (an app's :attr:`jobtape.App.tables`); each is rebuilt.
        compare: compare the live and rebuilt tables and report the differences; ``None``
            (the default): only when verifying (``apply_changes=False``), since a plain
            rebuild replaces the tables anyway and the comparison reads both in full
            (issue 12: a plain rebuild must not pay for it).

    Returns:
        The counts and every difference found (before the swap, if applied); with
        ``compare`` off, ``differences`` is empty and ``compared`` is ``False``.

    Raises:
        errors.IllegalTransition: a stored stream breaks the state rules; the message names
            the job, the position and the version of the offending event.
        errors.MalformedEvent: a stored event cannot be decoded (names its position and job).
        errors.ConcurrencyError: the log kept moving through 10 catch-up rounds.
        In every case the live tables are unchanged and the scratch tables are dropped.
    """
    backend = store.backend
    projections = tables.projections
    _create_scratch_tables(backend, projections)
    try:
        with collector_paused():
            return _run(store, backend, projections, apply_changes, progress, (not apply_changes) if compare is None else compare)
    finally:
        backend.execute_batch([Statement(f"DROP TABLE IF EXISTS {scratch_table(p.table)}") for p in projections])


def _run(
    store: EventStore,
    backend: SQLBackend,
    projections: tuple[registry.Projection, ...],
    apply_changes: bool,
    progress: Callable[[int, int], None] | None,
    compare: bool,
) -> RebuildReport:
    folder = _Folder()
    total = int(backend.query("SELECT COUNT(*) FROM events")[0][0]) if progress is not None else 0

    def on_page() -> None:
        if progress is not None:
            progress(folder.events_read, max(total, folder.events_read))

    for _ in range(_MAX_ROUNDS):
        touched = _fold_new_events(store, backend, folder, on_page)
        total = max(total, folder.events_read)
        if progress is not None:
            progress(folder.events_read, total)
        _write_rows(backend, projections, folder, sorted(touched))
        _write_key_rows(backend, projections, [folder.key_states[stream] for stream in sorted(folder.touched_keys)])
        folder.touched_keys.clear()
        _fill(backend, projections)
        differences: list[RowDifference] = []
        if compare:
            live, rebuilt, head, counts = _read_snapshot(backend, projections)
            if head != folder.head:
                continue  # appends arrived: fold them before comparing
            differences = [d for p in projections for d in _compare(p, live[p.table], rebuilt[p.table])]
        else:
            counts = _read_counts(backend, projections)
        if apply_changes:
            try:
                backend.execute_batch(_swap_statements(folder.head, projections))
            except ConstraintViolation as exc:
                if _GUARD_NAME not in exc.detail:
                    raise
                continue  # an append slipped in before the swap: catch up and try again
        elif not compare and store.head_position() != folder.head:
            continue
        return RebuildReport(len(folder.states), folder.events_read, differences, apply_changes, counts, compare)
    raise errors.ConcurrencyError("*", folder.head, f"the log kept moving past position {folder.head}; try again")


def _create_scratch_tables(backend: SQLBackend, projections: tuple[registry.Projection, ...]) -> None:
    statements = []
    for projection in projections:
        table, scratch = projection.table, scratch_table(projection.table)
        rows = backend.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", [table])
        if not rows:
            raise errors.JobtapeError(f"the database has no {table} table; run the migrations first")
        pattern = rf'^\s*CREATE TABLE\s+("{table}"|\[{table}\]|`{table}`|{table})(?!\w)'
        create_sql, count = re.subn(pattern, f"CREATE TABLE {scratch}", rows[0][0])
        if count != 1:  # pragma: no cover - sqlite_master always starts with CREATE TABLE <name>
            raise errors.JobtapeError(f"cannot read the {table} table definition: {rows[0][0]!r}")
        statements += [Statement(f"DROP TABLE IF EXISTS {scratch}"), Statement(create_sql)]
    backend.execute_batch(statements)


def _pages(store: EventStore, from_position: int) -> Iterator[list[ev.RecordedEvent | kev.RecordedKeyEvent]]:
    position = from_position
    while True:
        page = store.read_log(position, limit=_READ_PAGE)
        yield page
        if len(page) < _READ_PAGE:
            return
        position = page[-1].position + 1


def _fold_new_events(store: EventStore, backend: SQLBackend, folder: _Folder, on_page: Callable[[], None]) -> set[str]:
    try:
        return folder.fold(_pages(store, folder.head + 1), on_page)
    except errors.MalformedEvent as exc:
        found = backend.query("SELECT job_id FROM events WHERE position = ?", [exc.position])
        job_id = found[0][0] if found else "?"
        detail = exc.message.partition("cannot be decoded: ")[2] or exc.message
        raise errors.MalformedEvent(exc.position, exc.event_type, f"{detail} (job {job_id})") from exc


def _write_batch(backend: SQLBackend) -> int:
    """Streams per scratch batch: :data:`_WRITE_BATCH_SQLITE` on a local file (``backend.local_reads``), else :data:`_WRITE_BATCH`."""
    return _WRITE_BATCH_SQLITE if backend.local_reads else _WRITE_BATCH


def _write_rows(backend: SQLBackend, projections: tuple[registry.Projection, ...], folder: _Folder, job_ids: list[str]) -> None:
    """Write the rows of ``job_ids``' final states into every projection's scratch table.

    ``jobs`` rows are written by :func:`jobs.upsert_at` with the positions the fold read
    (``_Folder.created`` / ``last``) rather than looked up in ``events`` by each statement
    (what ``registry.JOBS.statements(None, state, table)`` writes, without two index lookups per row).
    """
    size = _write_batch(backend)
    states, created, last, upsert_at = folder.states, folder.created, folder.last, jobs.upsert_at
    for start in range(0, len(job_ids), size):
        batch = job_ids[start : start + size]
        # Projection by projection (each writes its own scratch table, so their order is free):
        # a projection's rows of many jobs are runs of one statement, which the SQLite backend
        # runs as one executemany.
        statements: list[Statement] = []
        for projection in projections:
            scratch = scratch_table(projection.table)
            if projection is registry.JOBS:
                statements += [upsert_at(states[job_id], scratch, created.get(job_id), last[job_id]) for job_id in batch]
            elif projection.fill is None:
                statements += [statement for job_id in batch for statement in projection.statements(None, states[job_id], scratch)]
        if statements:
            backend.execute_batch(statements)


def _write_key_rows(backend: SQLBackend, projections: tuple[registry.Projection, ...], states: list[key_state.KeyState]) -> None:
    """Write the rows of the projections of key streams (:attr:`registry.Projection.key_statements`) into their scratch tables."""
    size = _write_batch(backend)
    for start in range(0, len(states), size):
        statements = [
            statement
            for state in states[start : start + size]
            for projection in projections
            if projection.key_statements is not None
            for statement in projection.key_statements(None, state, scratch_table(projection.table))
        ]
        if statements:
            backend.execute_batch(statements)


def _fill(backend: SQLBackend, projections: tuple[registry.Projection, ...]) -> None:
    """Compute the projections that fill themselves from the scratch ``jobs`` (``Projection.fill``)."""
    statements = [
        statement
        for p in projections
        if p.fill is not None
        for statement in p.fill(scratch_table(registry.JOBS.table), scratch_table(p.table))
    ]
    if statements:
        backend.execute_batch(statements)


def _read_counts(backend: SQLBackend, projections: tuple[registry.Projection, ...]) -> dict[str, int]:
    """The rows of each scratch table, in one statement."""
    selects = [f"SELECT '{p.table}', COUNT(*) FROM {scratch_table(p.table)}" for p in projections]
    return {str(table): int(count) for table, count in backend.query(" UNION ALL ".join(selects))}


def _read_snapshot(backend: SQLBackend, projections: tuple[registry.Projection, ...]) -> tuple[Rows, Rows, int, dict[str, int]]:
    """The rows that differ between each live and scratch table, the counts and the log's head, in ONE statement.

    One statement is one read snapshot. The comparison runs in SQL (``EXCEPT`` both
    ways), so only rows that differ cross the wire: a log of any size fits in one answer
    (a remote sqld refuses answers over its ``--max-response-size``, 10 MB by default,
    which the whole tables of a few thousand jobs exceed).

    Returns:
        ``(live, rebuilt, head, counts)``: per table, the rows found on that side only or
        with other values, keyed by row key; the newest position; the rebuilt rows per table.
    """
    width = max(len(p.columns) for p in projections)
    selects = []
    for projection in projections:
        columns = ", ".join(projection.columns)
        padding = ", NULL" * (width - len(projection.columns))
        live_table, rebuilt_table = projection.table, scratch_table(projection.table)
        for side, first, second in (("live", live_table, rebuilt_table), ("rebuilt", rebuilt_table, live_table)):
            selects.append(
                f"SELECT * FROM (SELECT '{side}', '{projection.table}', {columns}{padding}, NULL FROM "
                f"(SELECT {columns} FROM {first} EXCEPT SELECT {columns} FROM {second}))"
            )
        nulls = ", NULL" * width
        selects.append(f"SELECT 'count', '{projection.table}'{nulls}, (SELECT COUNT(*) FROM {rebuilt_table})")
    nulls = ", ".join(["NULL"] * width)
    selects.append(f"SELECT 'head', NULL, {nulls}, (SELECT COALESCE(MAX(position), 0) FROM events)")
    live: Rows = {p.table: {} for p in projections}
    rebuilt: Rows = {p.table: {} for p in projections}
    sizes = {p.table: len(p.columns) for p in projections}
    counts: dict[str, int] = {}
    head = 0
    for side, table, *values in backend.query(" UNION ALL ".join(selects)):
        if side == "head":
            head = int(values[-1])
        elif side == "count":
            counts[table] = int(values[-1])
        else:
            (live if side == "live" else rebuilt)[table][values[0]] = tuple(values[: sizes[table]])
    return live, rebuilt, head, counts


def _compare(projection: registry.Projection, live: dict[str, tuple[Any, ...]], rebuilt: dict[str, tuple[Any, ...]]) -> list[RowDifference]:
    differences: list[RowDifference] = []
    table = projection.table
    for key in sorted(live.keys() | rebuilt.keys()):
        live_row, rebuilt_row = live.get(key), rebuilt.get(key)
        if live_row is None or rebuilt_row is None:
            differences.append(RowDifference(key, "*", _as_dict(projection, live_row), _as_dict(projection, rebuilt_row), table))
            continue
        for column, live_value, rebuilt_value in zip(projection.columns, live_row, rebuilt_row, strict=True):
            if live_value != rebuilt_value and not _same_decoded(projection, column, live_value, rebuilt_value):
                differences.append(RowDifference(key, column, live_value, rebuilt_value, table))
    return differences


def _same_decoded(projection: registry.Projection, column: str, live_value: Any, rebuilt_value: Any) -> bool:
    """Whether two stored values of an encoded column decode to the same value (see ``Projection.decoders``)."""
    decode = projection.decoders.get(column)
    if decode is None or live_value is None or rebuilt_value is None:
        return False
    try:
        return bool(decode(live_value) == decode(rebuilt_value))
    except Exception:  # noqa: BLE001 - a snapshot that does not decode is a difference, reported as such
        return False


def _as_dict(projection: registry.Projection, row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    return None if row is None else dict(zip(projection.columns, row, strict=True))


def _swap_statements(head: int, projections: tuple[registry.Projection, ...]) -> list[Statement]:
    # SQLite cannot RAISE outside a trigger; a CHECK on a throwaway table aborts the batch
    # (DDL is transactional) if an append landed after the snapshot the rows were folded to.
    statements = [
        Statement(f"CREATE TABLE _jobtape_rebuild_guard (head INTEGER CONSTRAINT {_GUARD_NAME} CHECK (head = {int(head)}))"),
        Statement("INSERT INTO _jobtape_rebuild_guard (head) SELECT COALESCE(MAX(position), 0) FROM events"),
        Statement("DROP TABLE _jobtape_rebuild_guard"),
    ]
    for projection in projections:
        statements += [*_swap_rows(projection), Statement(f"DROP TABLE {scratch_table(projection.table)}")]
    return statements


def _swap_rows(projection: registry.Projection) -> list[Statement]:
    """The statements that make ``projection``'s table hold exactly its scratch table's rows, writing only rows that differ.

    The same outcome as ``DELETE FROM table`` then ``INSERT ... SELECT`` of every scratch row
    (so the same constraints are checked on the same rows), without rewriting a row, and
    its index entries (``jobs`` has 7 indexes), that a scratch row has the same values:
    first every live row with no identical scratch row is deleted (every column compared
    with ``IS``, so NULLs match, and ``COLLATE BINARY``, so a text column declared with
    another collation still compares byte for byte), then every scratch row whose key is
    no longer in the table is inserted. In a rebuild of a healthy projection no row is
    written (issue 12: the swap of 12,500 ``jobs`` rows cost 0.09 s CPU as a full
    ``DELETE`` + ``INSERT``, 0.04 s this way; a rebuild that changes every row costs more).
    Each statement reads its table through the key's index (the scratch table is created
    with the live table's ``CREATE TABLE``, so it has the same primary key).
    """
    table, scratch, key = projection.table, scratch_table(projection.table), projection.key
    columns = ", ".join(projection.columns)
    same = " AND ".join(f"s.{column} IS {table}.{column} COLLATE BINARY" for column in projection.columns)
    return [
        Statement(f"DELETE FROM {table} WHERE NOT EXISTS (SELECT 1 FROM {scratch} AS s WHERE {same})"),
        Statement(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {scratch} AS s"
            f" WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {table}.{key} IS s.{key})"
        ),
    ]
