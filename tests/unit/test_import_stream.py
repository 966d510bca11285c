"""An import streams its source: lines are read a batch at a time and written while the rest is unread."""

from __future__ import annotations

import io
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape import errors
from jobtape.audit import exchange, transfer
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.projections.rebuild import rebuild
from jobtape.projections.repository import JobRepository

__all__: list[str] = []


def _store(path: Path) -> EventStore:
    backend = SQLiteBackend(path)
    backend.migrate(TABLES.migrations)
    return EventStore(backend)


def _export_lines(path: Path, jobs: int) -> list[str]:
    store = _store(path)
    repository = JobRepository(store, projections=TABLES.projections)
    for _ in range(jobs):
        state = repository.create("ingest", {"sourceType": "upload", "storageKey": "u/a.wav"}).state
        state = repository.append(state.job_id, [ev.JobClaimed(worker_id="w"), ev.JobProgress(percent=50)], state, actor="w").state
    out = io.StringIO()
    transfer.export(store, out, None)
    store.close()
    # the keyed trailer (last line) is left out: these tests import unkeyed (keys=None)
    return [line for line in out.getvalue().splitlines() if "exportTrailer" not in line]


def test_import_reads_a_one_shot_source_in_batches_writing_while_the_rest_is_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    lines = _export_lines(tmp_path / "source.db", jobs=10)  # 30 events
    target = _store(tmp_path / "target.db")
    written_when_read: list[int] = []

    def source() -> Iterator[str]:  # a generator: never a list, read once
        for line in lines:
            written_when_read.append(target.head_position())
            yield line

    report = transfer.import_lines(target, source(), TABLES)

    assert (report.jobs, report.events, report.first_position, report.last_position) == (10, 30, 1, 30)
    # line n is read once at most one batch (4 events) plus the line itself are pending: the
    # batches before it were written already, so the file is never held whole
    assert all(written >= index - 4 for index, written in enumerate(written_when_read)), written_when_read
    assert written_when_read[-1] == 28
    assert rebuild(target, apply_changes=False, tables=TABLES).differences == []
    target.close()


def test_a_broken_line_in_a_one_shot_source_says_how_many_events_were_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    lines = _export_lines(tmp_path / "source.db", jobs=4)
    target = _store(tmp_path / "target.db")

    with pytest.raises(errors.InvalidExport, match=r"^line 10: not an export line.*\(8 events before this batch were imported\)"):
        transfer.import_lines(target, iter([*lines[:9], "{broken", *lines[9:]]), TABLES)
    assert target.head_position() == 8
    target.close()


def test_a_broken_line_in_a_file_means_nothing_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    lines = _export_lines(tmp_path / "source.db", jobs=4)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:9], "{broken", *lines[9:]]) + "\n")
    target = _store(tmp_path / "target.db")

    with broken.open(encoding="utf-8") as file, pytest.raises(errors.InvalidExport, match="^line 10: not an export line"):
        transfer.import_lines(target, file, TABLES)
    assert target.head_position() == 0
    with broken.open(encoding="utf-8") as file:  # a file is checked whole, then read again to write
        assert sum(1 for _ in exchange.check_lines(file.readlines()[:9])) == 9
    target.close()


def test_streams_past_the_memory_bound_spill_and_come_back_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    monkeypatch.setattr(transfer, "STREAMS_IN_MEMORY", 2)  # 10 interleaved streams: most tips spill and are read back
    lines = _export_lines(tmp_path / "source.db", jobs=10)
    shuffled = [line for step in range(3) for line in lines[step::3]]  # every stream's event n before any n+1
    exported = tmp_path / "interleaved.jsonl"
    exported.write_text("\n".join(shuffled) + "\n")
    target = _store(tmp_path / "target.db")

    with exported.open(encoding="utf-8") as file:
        report = transfer.import_lines(target, file, TABLES)

    assert (report.jobs, report.events) == (10, 30)
    assert rebuild(target, apply_changes=False, tables=TABLES).differences == []
    target.close()


@pytest.mark.parametrize("from_file", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 7, 1000])
def test_an_import_writes_the_queue_counts_the_appends_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int, from_file: bool
) -> None:
    """Jobs entering and leaving ``pending`` across batches, interleaved, and a log ending with
    jobs leaving it: in any batch size, the import's ``queue_counts`` are the rows the appends
    wrote, and what a rebuild computes (no block left at 0); from a one-shot source (a batch's
    statements) and from a file (one transaction, filled from ``jobs`` at the end)."""
    source = _store(tmp_path / "source.db")
    repository = JobRepository(source, projections=TABLES.projections)
    states = [repository.create("ingest", {"sourceType": "upload", "storageKey": f"u/{n}.wav"}).state for n in range(12)]
    for round_ in range(3):  # interleaved: claims, retries back to pending, completions, cancels
        for index, state in enumerate(states):
            if state.finished or (index + round_) % 3 == 0:
                continue
            if state.status == "pending":
                events: list[ev.Event] = [ev.JobClaimed(worker_id="w", attempt=state.attempt + 1)]
            elif index % 4 == 0:
                events = [ev.JobRetryScheduled(error="x", attempt=state.attempt)]
            elif index % 4 == 1:
                events = [ev.JobCompleted(result={})]
            elif index % 4 == 2:
                events = [ev.JobCancelRequested(reason="r")]
            else:
                events = [ev.JobFailed(error="x")]
            states[index] = repository.append(state.job_id, events, state, actor="w").state
    assert {state.status for state in states} >= {"pending", "complete", "failed", "cancelled"}
    pending = [index for index, state in enumerate(states) if state.status == "pending"]
    for index in pending[1:]:  # the log ends with jobs leaving pending (counted by earlier batches)
        states[index] = repository.append(
            states[index].job_id, [ev.JobClaimed(worker_id="w", attempt=states[index].attempt + 1)], states[index], actor="w"
        ).state
    out = io.StringIO()
    transfer.export(source, out, None)
    expected = source.backend.query("SELECT node, pending FROM queue_counts ORDER BY node")
    assert expected
    source.close()
    lines = [line for line in out.getvalue().splitlines() if "exportTrailer" not in line]
    target = _store(tmp_path / "target.db")
    try:
        monkeypatch.setattr(transfer, "IMPORT_BATCH", batch)
        transfer.import_lines(target, io.StringIO("\n".join(lines) + "\n") if from_file else lines, TABLES)
        assert target.backend.query("SELECT node, pending FROM queue_counts ORDER BY node") == expected
        assert rebuild(target, apply_changes=False, tables=TABLES).differences == []
    finally:
        target.close()


class _CountingFile(io.StringIO):
    """A seekable file (an import's rewindable source) that counts the lines read and notes, at each,
    the head another connection to the target sees (what was committed)."""

    def __init__(self, text: str, target: Path) -> None:
        super().__init__(text)
        self.reader = sqlite3.connect(target)
        self.heads: list[int] = []

    def __next__(self) -> str:
        line = super().__next__()
        self.heads.append(self.reader.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0])
        return line


def test_a_file_is_imported_in_one_pass_and_one_transaction_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    lines = _export_lines(tmp_path / "source.db", jobs=10)  # 30 events, 8 batches
    target = _store(tmp_path / "target.db")
    file = _CountingFile("\n".join(lines) + "\n", tmp_path / "target.db")

    report = transfer.import_lines(target, file, TABLES)

    assert (report.jobs, report.events, report.first_position, report.last_position) == (10, 30, 1, 30)
    assert len(file.heads) == 30  # read once: checked and written in the same pass
    assert set(file.heads) == {0}  # nothing committed before the last line was checked
    assert target.head_position() == 30
    assert rebuild(target, apply_changes=False, tables=TABLES).differences == []
    # the store appends after the import from the head the import left
    repository = JobRepository(target, projections=TABLES.projections)
    assert repository.create("ingest", {"sourceType": "upload", "storageKey": "u/b.wav"}).state.version == 1
    assert target.head_position() == 31
    file.reader.close()
    target.close()


def test_into_a_log_holding_events_a_file_is_written_in_batches_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live log's appends must not wait behind a whole import: only a log never written takes the one transaction."""
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    lines = _export_lines(tmp_path / "source.db", jobs=4)  # 12 events: batches of lines 1-4, 5-8, 9-12
    target = _store(tmp_path / "target.db")
    exported = tmp_path / "export.jsonl"
    exported.write_text("\n".join(lines) + "\n")
    with exported.open(encoding="utf-8") as file:
        assert transfer.imports_in_one_transaction(target, file)
    with io.StringIO("\n".join(lines[9:]) + "\n") as tail:  # the last job, whose stream ends the export
        assert transfer.imports_in_one_transaction(target, tail)  # a file into a log never written
        transfer.import_lines(target, tail, TABLES)
    assert target.head_position() == 3

    assert not transfer.imports_in_one_transaction(target, iter(lines))  # a pipe: never
    with exported.open(encoding="utf-8") as file:
        assert not transfer.imports_in_one_transaction(target, file)  # the log holds events now
        with pytest.raises(
            errors.InvalidExport, match=r"^line 9: job \w+ exists in the target store already.*\(8 events before this batch were imported\)"
        ):
            transfer.import_lines(target, file, TABLES)
    assert target.head_position() == 3 + 8  # the two batches before it, each its own transaction
    assert rebuild(target, apply_changes=False, tables=TABLES).differences == []
    target.close()


def _append_from_another_process(path: Path) -> None:
    """Another process (a live server, say) appends one job.created to the log at ``path``."""
    code = (
        "import sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from configs import TABLES\n"
        "from jobtape.eventlog.sqlite import SQLiteBackend\n"
        "from jobtape.eventlog.store import EventStore\n"
        "from jobtape.projections.repository import JobRepository\n"
        "store = EventStore(SQLiteBackend(sys.argv[1]))\n"
        "JobRepository(store, projections=TABLES.projections).create('ingest', {}, actor='other')\n"
        "store.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(Path(__file__).parents[1])], check=True, timeout=60)


def test_an_append_between_the_check_and_the_one_transaction_refuses_it_in_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-transaction path is for a log never written; its check runs before the transaction,
    so the transaction's first statement checks again: a log written in between refuses it, nothing written."""
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    lines = _export_lines(tmp_path / "source.db", jobs=10)
    target = _store(tmp_path / "target.db")
    file = _CountingFile("\n".join(lines) + "\n", tmp_path / "target.db")
    assert transfer.imports_in_one_transaction(target, file)
    _append_from_another_process(tmp_path / "target.db")  # between the check and the transaction

    with pytest.raises(transfer._LogWritten):
        transfer._import_in_one_transaction(target, file, TABLES, None, None)
    assert target.head_position() == 1  # the other process's append alone
    assert file.heads == []  # refused before a line was read
    file.reader.close()
    target.close()


def test_an_import_meeting_an_append_after_its_check_falls_back_to_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 4)
    lines = _export_lines(tmp_path / "source.db", jobs=10)  # 30 events
    target = _store(tmp_path / "target.db")
    file = _CountingFile("\n".join(lines) + "\n", tmp_path / "target.db")
    check = transfer.imports_in_one_transaction

    def check_then_another_process_appends(store: EventStore, source: object) -> bool:
        answer = check(store, source)  # type: ignore[arg-type]
        _append_from_another_process(tmp_path / "target.db")
        return answer

    monkeypatch.setattr(transfer, "imports_in_one_transaction", check_then_another_process_appends)
    report = transfer.import_lines(target, file, TABLES)

    assert (report.jobs, report.events, report.first_position, report.last_position) == (10, 30, 2, 31)
    assert len(file.heads) == 60  # the batches' two passes (checked whole, then written), not the one transaction
    assert max(file.heads) > 1  # batches committed one by one: the live log's appends did not wait for the whole import
    assert rebuild(target, apply_changes=False, tables=TABLES).differences == []
    file.reader.close()
    target.close()


def test_an_in_memory_store_imports_a_file_in_one_transaction(tmp_path: Path) -> None:
    lines = _export_lines(tmp_path / "source.db", jobs=3)
    backend = SQLiteBackend(":memory:")
    backend.migrate(TABLES.migrations)
    target = EventStore(backend)
    with (
        io.StringIO("\n".join([*lines, "{broken"]) + "\n") as broken,
        pytest.raises(errors.InvalidExport, match="^line 10: not an export line"),
    ):
        transfer.import_lines(target, broken, TABLES)
    assert target.head_position() == 0
    with io.StringIO("\n".join(lines) + "\n") as file:
        assert transfer.import_lines(target, file, TABLES).events == 9
    assert rebuild(target, apply_changes=False, tables=TABLES).differences == []
    target.close()
