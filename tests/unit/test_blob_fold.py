"""``job.blobs_deleted`` in the fold, the verifier and the projections' row functions (pure)."""

from __future__ import annotations

import datetime as dt

import pytest
from folding import T0, run  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape import errors
from jobtape.audio.projections import assets, previews
from jobtape.audit import verify
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing
from jobtape.eventlog.stored import StoredEvent
from jobtape.projections import state as job_state

UPLOAD = "ingest-uploads/j/original.mp3"
PREPARED = "assets/a1/prepared.flac"
CREATED = ev.JobCreated(job_type="ingest", params={"sourceType": "upload", "storageKey": UPLOAD})
CLAIMED = ev.JobClaimed(worker_id="w1")
DONE = ev.JobCompleted(result={"assetId": "a1", "preparedKey": PREPARED, "durationSec": 2.0})


def test_a_finished_job_records_removed_keys_without_changing_status_result_or_updated_at() -> None:
    state = run(CREATED, CLAIMED, DONE, ev.JobBlobsDeleted(keys=[UPLOAD, PREPARED], reason="archive x"))
    assert (state.status, state.finished, state.result, state.version) == ("complete", True, DONE.result, 4)
    assert state.removed_keys == (UPLOAD, PREPARED)
    assert state.updated_at == T0 + dt.timedelta(seconds=3) and state.blobs_removed_at == T0 + dt.timedelta(seconds=4)


def test_the_fold_refuses_removals_of_running_jobs_foreign_keys_and_keys_named_twice() -> None:
    with pytest.raises(errors.IllegalTransition, match="has not finished"):
        run(CREATED, CLAIMED, ev.JobBlobsDeleted(keys=[UPLOAD]))
    with pytest.raises(errors.IllegalTransition, match="does not own"):
        run(CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[PREPARED]))
    with pytest.raises(errors.IllegalTransition, match="recorded as removed already"):
        run(CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[UPLOAD]), ev.JobBlobsDeleted(keys=[UPLOAD]))
    with pytest.raises(errors.IllegalTransition, match="no keys"):
        run(CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[]))
    with pytest.raises(errors.IllegalTransition, match="finished"):  # still nothing else after a terminal event
        run(CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[UPLOAD]), ev.JobProgress(percent=1))


def test_owned_keys_exclude_an_edits_source_and_a_cache_hits_preview() -> None:
    source = {"sourceKey": PREPARED, "recipeHash": "h"}
    save = run(
        ev.JobCreated(job_type="save", params=source),
        CLAIMED,
        ev.JobCompleted(result={"assetId": "a2", "preparedKey": "assets/a2/prepared.flac"}),
    )
    hit = run(
        ev.JobCreated(job_type="preview", params=source),
        ev.JobCompleted(result={"previewKey": "previews/h.mp3", "recipeHash": "h", "cacheHit": True}),
    )
    render = run(
        ev.JobCreated(job_type="preview", params=source),
        CLAIMED,
        ev.JobCompleted(result={"previewKey": "previews/h.mp3", "recipeHash": "h", "cacheHit": False}),
    )
    url = run(ev.JobCreated(job_type="ingest", params={"sourceType": "url", "url": "https://x"}), CLAIMED, ev.JobFailed(error="x"))
    assert job_state.owned_keys(save) == ("assets/a2/prepared.flac",)
    assert job_state.owned_keys(hit) == () and job_state.owned_keys(render) == ("previews/h.mp3",)
    assert job_state.owned_keys(url) == () and job_state.retained_upload(url) is None


def test_retained_upload_is_the_upload_of_a_failed_or_cancelled_ingest_until_recorded_removed() -> None:
    assert job_state.retained_upload(run(CREATED, CLAIMED, DONE)) is None
    assert job_state.retained_upload(run(CREATED, CLAIMED)) is None
    assert job_state.retained_upload(run(CREATED, ev.JobCancelRequested())) == UPLOAD
    failed = run(CREATED, CLAIMED, ev.JobFailed(error="x"))
    assert job_state.retained_upload(failed) == UPLOAD
    assert job_state.retained_upload(run(CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[UPLOAD]))) is None


def test_projection_rows_mark_a_removed_asset_and_drop_a_removed_preview() -> None:
    removed = run(CREATED, CLAIMED, DONE, ev.JobBlobsDeleted(keys=[PREPARED]))
    row = assets.asset_row(removed)
    assert row is not None and row["removed_at"] == "2026-11-23T12:00:04.000000Z"
    assert assets.asset_row(run(CREATED, CLAIMED, DONE))["removed_at"] is None  # type: ignore[index]
    render = [
        ev.JobCreated(job_type="preview"),
        CLAIMED,
        ev.JobCompleted(result={"previewKey": "previews/h.mp3", "recipeHash": "h", "cacheHit": False}),
    ]
    before = run(*render)
    after = run(*render, ev.JobBlobsDeleted(keys=["previews/h.mp3"]))
    assert previews.preview_row(before) is not None and previews.preview_row(after) is None
    [delete] = previews.statements(before, after)
    assert delete.sql.startswith("DELETE FROM previews") and delete.params == ("h", "j")


def _stored(job_id: str, events: list[ev.Event]) -> list[StoredEvent]:
    rows, previous = [], hashing.genesis_hash(job_id)
    for version, event in enumerate(events, start=1):
        type_, data = ev.encode_event(event)
        stamp = f"2026-11-23T12:00:0{version}.000000Z"
        previous = hashing.event_hash(previous, job_id, version, type_, data, "cli", stamp)
        rows.append(
            StoredEvent(
                position=version, job_id=job_id, version=version, type=type_, data=data, actor="cli", recorded_at=stamp, hash=previous
            )
        )
    return rows


def test_verify_accepts_a_removal_after_the_terminal_event_and_names_a_refused_one() -> None:
    clean = verify.verify(_stored("j", [CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[UPLOAD])]))
    assert clean.violations == []
    bad = verify.verify(
        _stored("j", [CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[PREPARED]), ev.JobProgress(percent=3)])
    )
    assert [(v.position, v.rule) for v in bad.violations] == [(4, "fold"), (5, "after_terminal")]


def test_a_direct_upload_named_by_the_client_is_never_a_jobs_to_remove() -> None:
    # Two ingests may name the same presigned upload: removing it for one would take the other's source.
    shared = "direct-uploads/abc/original.wav"
    created = ev.JobCreated(job_type="ingest", params={"sourceType": "storage", "storageKey": shared})
    failed = run(created, CLAIMED, ev.JobFailed(error="bad input", retryable=False))
    assert job_state.owned_inputs(failed) == () and shared not in job_state.owned_keys(failed)
    assert job_state.retained_upload(failed) is None


# Ownership and the download declared in the log (job.created / job.completed owned_keys, download_key).

REPORT = "reports/j.txt"
INPUT = "inputs/j.csv"


def test_a_declared_input_and_output_are_owned_and_the_declared_download_is_linked_for_any_job_type() -> None:
    created = ev.JobCreated(job_type="report", params={"title": "q3"}, owned_keys=[INPUT])
    done = run(created, CLAIMED, ev.JobCompleted(result={"bytes": 3}, owned_keys=[REPORT], download_key=REPORT))
    assert job_state.owned_inputs(done) == (INPUT,) and job_state.owned_outputs(done) == (REPORT,)
    assert job_state.owned_keys(done) == (INPUT, REPORT) and job_state.download_key(done) == REPORT
    assert job_state.download_key(run(created, CLAIMED)) is None  # only once complete
    removed = run(created, CLAIMED, ev.JobCompleted(owned_keys=[REPORT], download_key=REPORT), ev.JobBlobsDeleted(keys=[INPUT, REPORT]))
    assert removed.removed_keys == (INPUT, REPORT) and job_state.download_key(removed) is None


def test_a_declared_input_of_a_failed_or_cancelled_job_is_retained_until_recorded_removed() -> None:
    created = ev.JobCreated(job_type="report", owned_keys=[INPUT])
    failed = run(created, CLAIMED, ev.JobFailed(error="x"))
    assert job_state.retained_inputs(failed) == (INPUT,) and job_state.retained_upload(failed) == INPUT
    assert job_state.retained_inputs(run(created, ev.JobCancelRequested())) == (INPUT,)
    assert job_state.retained_inputs(run(created, CLAIMED)) == ()  # still running
    assert job_state.retained_inputs(run(created, CLAIMED, ev.JobCompleted(owned_keys=[REPORT]))) == ()
    assert job_state.retained_inputs(run(created, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[INPUT]))) == ()


def test_the_fold_refuses_a_removal_naming_a_key_the_job_declared_only_as_its_download_or_never_declared() -> None:
    shared = "previews/h.mp3"
    hit = [ev.JobCreated(job_type="report"), ev.JobCompleted(result={}, download_key=shared)]  # links, does not own
    assert job_state.owned_keys(run(*hit)) == () and job_state.download_key(run(*hit)) == shared
    with pytest.raises(errors.IllegalTransition, match="does not own 'previews/h.mp3'"):
        run(*hit, ev.JobBlobsDeleted(keys=[shared]))
    created = ev.JobCreated(job_type="report", owned_keys=[INPUT])
    with pytest.raises(errors.IllegalTransition, match="does not own 'reports/other.txt'"):
        run(created, CLAIMED, ev.JobCompleted(owned_keys=[REPORT]), ev.JobBlobsDeleted(keys=["reports/other.txt"]))


def test_declarations_replace_the_legacy_reading_and_other_types_get_none_of_it() -> None:
    # A new audio completion declares its outputs: the result's keys are not read.
    ingest = run(CREATED, CLAIMED, ev.JobCompleted(result=DONE.result, download_key=PREPARED))
    assert job_state.owned_keys(ingest) == (UPLOAD,) and job_state.download_key(ingest) == PREPARED
    # A user type whose result happens to hold audio-looking keys owns and links nothing undeclared.
    user = run(
        ev.JobCreated(job_type="sum", params={"storageKey": UPLOAD}),
        CLAIMED,
        ev.JobCompleted(result={"preparedKey": PREPARED, "previewKey": "previews/h.mp3"}),
    )
    assert job_state.owned_keys(user) == () and job_state.download_key(user) is None


def test_an_event_declaring_nothing_encodes_exactly_as_before_the_fields_existed() -> None:
    assert ev.encode_event(ev.JobCompleted(result={"a": 1})) == ("job.completed", '{"result":{"a":1}}')
    assert ev.encode_event(ev.JobCompleted(result={}, owned_keys=[], download_key=None)) == ("job.completed", '{"result":{}}')
    assert ev.encode_event(ev.JobCreated(job_type="sum", owned_keys=[]))[1] == (
        '{"job_type":"sum","params":{},"owner":"anonymous","idempotency_key":null}'
    )
    type_, data = ev.encode_event(ev.JobCompleted(owned_keys=[REPORT], download_key=REPORT))
    assert data == '{"result":{},"owned_keys":["reports/j.txt"],"download_key":"reports/j.txt"}'
    assert ev.decode_event(1, type_, data) == ev.JobCompleted(owned_keys=[REPORT], download_key=REPORT)
