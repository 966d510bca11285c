"""Rebuild the ``jobs`` projection from the event log, and report how it differs from the live one.

The ``jobs`` table is written in the same batch as the events it folds, so it should never
drift; :func:`rebuild` checks that claim (``jobtape rebuild --verify``) and repairs a table
that did drift (a manual UPDATE, a bug in an older fold, a restore from a partial backup).

Steps: fold every event of the log with the pure fold into a fresh ``jobs_rebuild`` table
(created from the ``CREATE TABLE`` text of ``jobs``, so constraints match), compare both
tables column by column in Python, then either swap the rebuilt rows in (one batch) or
drop ``jobs_rebuild``.

Appends may go on while a rebuild runs. The comparison reads both tables and the log's
head in ONE statement (one read snapshot); if the log moved past the folded events, the
new events are folded first. The swap batch carries a guard (a ``CHECK`` on the head
position) so it aborts, and is retried after catching up, if an append slipped in between.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from jobtape import errors
from jobtape.eventlog import events as ev
from jobtape.eventlog.store import ConstraintViolation, EventStore, SQLBackend, Statement
from jobtape.projections import jobs as jobs_projection
from jobtape.projections import state as job_state

__all__ = ["REBUILD_TABLE", "RebuildReport", "RowDifference", "rebuild"]

#: The scratch table the rebuilt rows are written to; dropped (or swapped in) at the end.
REBUILD_TABLE = "jobs_rebuild"
_GUARD_NAME = "rebuild_head_moved"
_WRITE_BATCH = 500
_PROGRESS_EVERY = 1000
_MAX_ROUNDS = 10
_COLUMN_LIST = ", ".join(jobs_projection.COLUMNS)


@dataclasses.dataclass(frozen=True)
class RowDifference:
    """One column of one job whose live value differs from the rebuilt one.

    Attributes:
        job_id: the job.
        column: a column of ``jobs``, or ``"*"`` when the row exists on one side only.
        live: the value in ``jobs``; for ``"*"``, the whole live row as ``{column: value}``,
            or ``None`` when the row is missing from ``jobs``.
        rebuilt: the value the fold produces; for ``"*"``, the rebuilt row as a dict, or
            ``None`` when the log has no such job.
    """

    job_id: str
    column: str
    live: Any
    rebuilt: Any


@dataclasses.dataclass(frozen=True)
class RebuildReport:
    """What a rebuild found.

    Attributes:
        jobs_rebuilt: rows the fold produced (one per stream in the log).
        events_read: events folded.
        differences: every column that differed between ``jobs`` and the rebuilt rows,
            sorted by job id then column order; empty when the projection was exact.
        applied: the rebuilt rows replaced ``jobs`` (``apply_changes=True``).
    """

    jobs_rebuilt: int
    events_read: int
    differences: list[RowDifference]
    applied: bool = False


class _Folder:
    """Folds events of many streams into states, remembering which jobs changed."""

    def __init__(self) -> None:
        self.states: dict[str, job_state.JobState] = {}
        self.head = 0
        self.events_read = 0

    def fold(self, recorded: Iterable[ev.RecordedEvent], on_event: Callable[[], None]) -> set[str]:
        touched: set[str] = set()
        for item in recorded:
            try:
                self.states[item.job_id] = job_state.apply(
                    self.states.get(item.job_id),
                    item.event,
                    job_id=item.job_id,
                    version=item.version,
                    recorded_at=item.recorded_at,
                )
            except errors.IllegalTransition as exc:
                raise errors.IllegalTransition(
                    exc.job_id,
                    exc.status,
                    exc.event_type,
                    f"{exc.reason} (stored event at position {item.position}, version {item.version})",
                ) from exc
            touched.add(item.job_id)
            self.head = item.position
            self.events_read += 1
            on_event()
        return touched


def rebuild(
    store: EventStore,
    *,
    apply_changes: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    """Recompute the ``jobs`` projection from the log and compare it with the live table.

    Args:
        store: the event store (its backend holds both ``events`` and ``jobs``).
        apply_changes: replace the rows of ``jobs`` with the rebuilt ones (one atomic batch);
            with ``False`` the live table is left untouched (verify only).
        progress: called as ``progress(done_events, total_events)`` every 1,000 events and
            after each pass; ``total_events`` grows if appends arrive during the rebuild.

    Returns:
        The counts and every difference found (before the swap, if applied).

    Raises:
        errors.IllegalTransition: a stored stream breaks the state rules; the message names
            the job, the position and the version of the offending event.
        errors.MalformedEvent: a stored event cannot be decoded (names its position and job).
        errors.ConcurrencyError: the log kept moving through 10 catch-up rounds.
        In every case ``jobs`` is unchanged and ``jobs_rebuild`` is dropped.
    """
    backend = store.backend
    _create_scratch_table(backend)
    try:
        return _run(store, backend, apply_changes, progress)
    finally:
        backend.execute_batch([Statement(f"DROP TABLE IF EXISTS {REBUILD_TABLE}")])


def _run(
    store: EventStore, backend: SQLBackend, apply_changes: bool, progress: Callable[[int, int], None] | None
) -> RebuildReport:
    folder = _Folder()
    total = int(backend.query("SELECT COUNT(*) FROM events")[0][0])

    def on_event() -> None:
        if progress is not None and folder.events_read % _PROGRESS_EVERY == 0:
            progress(folder.events_read, max(total, folder.events_read))

    for _ in range(_MAX_ROUNDS):
        touched = _fold_new_events(store, backend, folder, on_event)
        total = max(total, folder.events_read)
        if progress is not None:
            progress(folder.events_read, total)
        _write_rows(backend, [folder.states[job_id] for job_id in sorted(touched)])
        live, rebuilt, head = _read_snapshot(backend)
        if head != folder.head:
            continue  # appends arrived: fold them before comparing
        differences = _compare(live, rebuilt)
        if apply_changes:
            try:
                backend.execute_batch(_swap_statements(folder.head))
            except ConstraintViolation as exc:
                if _GUARD_NAME not in exc.detail:
                    raise
                continue  # an append slipped in before the swap: catch up and try again
        return RebuildReport(len(folder.states), folder.events_read, differences, apply_changes)
    raise errors.ConcurrencyError("*", folder.head, f"the log kept moving past position {folder.head}; try again")


def _create_scratch_table(backend: SQLBackend) -> None:
    rows = backend.query("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'")
    if not rows:
        raise errors.JobtapeError("the database has no jobs table; run the migrations first")
    create_sql, count = re.subn(r'^\s*CREATE TABLE\s+("jobs"|\[jobs\]|`jobs`|jobs)', f"CREATE TABLE {REBUILD_TABLE}", rows[0][0])
    if count != 1:  # pragma: no cover - sqlite_master always starts with CREATE TABLE <name>
        raise errors.JobtapeError(f"cannot read the jobs table definition: {rows[0][0]!r}")
    backend.execute_batch([Statement(f"DROP TABLE IF EXISTS {REBUILD_TABLE}"), Statement(create_sql)])


def _fold_new_events(store: EventStore, backend: SQLBackend, folder: _Folder, on_event: Callable[[], None]) -> set[str]:
    try:
        return folder.fold(store.iter_all(folder.head + 1), on_event)
    except errors.MalformedEvent as exc:
        found = backend.query("SELECT job_id FROM events WHERE position = ?", [exc.position])
        job_id = found[0][0] if found else "?"
        detail = exc.message.partition("cannot be decoded: ")[2] or exc.message
        raise errors.MalformedEvent(exc.position, exc.event_type, f"{detail} (job {job_id})") from exc


def _write_rows(backend: SQLBackend, states: list[job_state.JobState]) -> None:
    for start in range(0, len(states), _WRITE_BATCH):
        batch = states[start : start + _WRITE_BATCH]
        backend.execute_batch([jobs_projection.upsert(state, table=REBUILD_TABLE) for state in batch])


def _read_snapshot(backend: SQLBackend) -> tuple[dict[str, tuple[Any, ...]], dict[str, tuple[Any, ...]], int]:
    """Both tables and the log's head from ONE statement, so they belong to one read snapshot."""
    rows = backend.query(
        f"SELECT 'live', {_COLUMN_LIST}, NULL FROM jobs"
        f" UNION ALL SELECT 'rebuilt', {_COLUMN_LIST}, NULL FROM {REBUILD_TABLE}"
        f" UNION ALL SELECT 'head', {', '.join(['NULL'] * len(jobs_projection.COLUMNS))},"
        " (SELECT COALESCE(MAX(position), 0) FROM events)"
    )
    live: dict[str, tuple[Any, ...]] = {}
    rebuilt: dict[str, tuple[Any, ...]] = {}
    head = 0
    for side, *values in rows:
        if side == "head":
            head = int(values[-1])
        else:
            (live if side == "live" else rebuilt)[values[0]] = tuple(values[:-1])
    return live, rebuilt, head


def _compare(live: dict[str, tuple[Any, ...]], rebuilt: dict[str, tuple[Any, ...]]) -> list[RowDifference]:
    differences: list[RowDifference] = []
    for job_id in sorted(live.keys() | rebuilt.keys()):
        live_row, rebuilt_row = live.get(job_id), rebuilt.get(job_id)
        if live_row is None or rebuilt_row is None:
            differences.append(RowDifference(job_id, "*", _as_dict(live_row), _as_dict(rebuilt_row)))
            continue
        for column, live_value, rebuilt_value in zip(jobs_projection.COLUMNS, live_row, rebuilt_row, strict=True):
            if live_value != rebuilt_value:
                differences.append(RowDifference(job_id, column, live_value, rebuilt_value))
    return differences


def _as_dict(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
    return None if row is None else dict(zip(jobs_projection.COLUMNS, row, strict=True))


def _swap_statements(head: int) -> list[Statement]:
    # SQLite cannot RAISE outside a trigger; a CHECK on a throwaway table aborts the batch
    # (DDL is transactional) if an append landed after the snapshot the rows were folded to.
    return [
        Statement(f"CREATE TABLE _jobtape_rebuild_guard (head INTEGER CONSTRAINT {_GUARD_NAME} CHECK (head = {int(head)}))"),
        Statement("INSERT INTO _jobtape_rebuild_guard (head) SELECT COALESCE(MAX(position), 0) FROM events"),
        Statement("DROP TABLE _jobtape_rebuild_guard"),
        Statement("DELETE FROM jobs"),
        Statement(f"INSERT INTO jobs ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {REBUILD_TABLE}"),
        Statement(f"DROP TABLE {REBUILD_TABLE}"),
    ]
