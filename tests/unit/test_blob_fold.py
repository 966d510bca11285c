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
    save = run(ev.JobCreated(job_type="save", params=source), CLAIMED,
               ev.JobCompleted(result={"assetId": "a2", "preparedKey": "assets/a2/prepared.flac"}))
    hit = run(ev.JobCreated(job_type="preview", params=source),
              ev.JobCompleted(result={"previewKey": "previews/h.mp3", "recipeHash": "h", "cacheHit": True}))
    render = run(ev.JobCreated(job_type="preview", params=source), CLAIMED,
                 ev.JobCompleted(result={"previewKey": "previews/h.mp3", "recipeHash": "h", "cacheHit": False}))
    url = run(ev.JobCreated(job_type="ingest", params={"sourceType": "url", "url": "https://x"}), CLAIMED,
              ev.JobFailed(error="x"))
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
    render = [ev.JobCreated(job_type="preview"), CLAIMED,
              ev.JobCompleted(result={"previewKey": "previews/h.mp3", "recipeHash": "h", "cacheHit": False})]
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
        rows.append(StoredEvent(position=version, job_id=job_id, version=version, type=type_, data=data, actor="cli",
                                recorded_at=stamp, hash=previous))
    return rows


def test_verify_accepts_a_removal_after_the_terminal_event_and_names_a_refused_one() -> None:
    clean = verify.verify(_stored("j", [CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[UPLOAD])]))
    assert clean.violations == []
    bad = verify.verify(_stored("j", [CREATED, CLAIMED, ev.JobFailed(error="x"), ev.JobBlobsDeleted(keys=[PREPARED]),
                                      ev.JobProgress(percent=3)]))
    assert [(v.position, v.rule) for v in bad.violations] == [(4, "fold"), (5, "after_terminal")]


def test_a_direct_upload_named_by_the_client_is_never_a_jobs_to_remove() -> None:
    # Two ingests may name the same presigned upload: removing it for one would take the other's source.
    shared = "direct-uploads/abc/original.wav"
    created = ev.JobCreated(job_type="ingest", params={"sourceType": "storage", "storageKey": shared})
    failed = run(created, CLAIMED, ev.JobFailed(error="bad input", retryable=False))
    assert job_state.owned_inputs(failed) == () and shared not in job_state.owned_keys(failed)
    assert job_state.retained_upload(failed) is None
