"""Pure rules of issue 3: recipe validation and hashing, signed URLs, byte ranges, asset rows,
render argv; plus the quota guard's atomicity on a real SQLite file."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from configs import TABLES  # tests/ is on sys.path
from freezegun import freeze_time

from jobtape import errors
from jobtape.audio import errors as audio_errors
from jobtape.audio import recipes, render
from jobtape.audio.projections import assets, previews
from jobtape.eventlog import events as ev
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore
from jobtape.http import ranges
from jobtape.projections import quota
from jobtape.projections.repository import JobRepository
from jobtape.projections.state import JobState
from jobtape.storage import LocalStorage, local, signing

ASSET = "a" * 32


def _recipe(**fields: object) -> recipes.Recipe:
    return recipes.Recipe(asset_id=ASSET, **fields)  # type: ignore[arg-type]


def test_defaults_are_filled_in_and_equivalent_recipes_hash_alike() -> None:
    short = recipes.validate(_recipe(), 9.66)
    explicit = recipes.validate(_recipe(start_sec=0, end_sec=9.66, fade_in_sec=0, fade_out_sec=0, gain_db=-0.0), 9.66)
    assert short == explicit and short.end_sec == 9.66 and short.target_lufs is None
    assert recipes.recipe_hash(short) == recipes.recipe_hash(explicit)
    assert recipes.canonical_json(short) == (
        f'{{"assetId":"{ASSET}","endSec":9.66,"fadeInSec":0.0,"fadeOutSec":0.0,"gainDb":0.0,"startSec":0.0,"targetLufs":null}}'
    )
    assert recipes.recipe_hash(recipes.validate(_recipe(gain_db=1), 9.66)) != recipes.recipe_hash(short)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"start_sec": -1}, "startSec", ">= 0"),
        ({"start_sec": 9.66}, "startSec", "asset's end"),
        ({"start_sec": 3, "end_sec": 3}, "endSec", "greater than startSec"),
        ({"end_sec": 10}, "endSec", "beyond the asset's end"),
        ({"end_sec": float("nan")}, "endSec", "finite"),
        ({"end_sec": 2, "fade_in_sec": 2.5}, "fadeInSec", "longer than the trimmed length"),
        ({"end_sec": 2, "fade_out_sec": 2.001}, "fadeOutSec", "longer than the trimmed length"),
        ({"end_sec": 2, "fade_in_sec": 1.5, "fade_out_sec": 0.6}, "fadeOutSec", r"fadeInSec \+ fadeOutSec"),
        ({"gain_db": -30.5}, "gainDb", r"-30\.\.30 dB"),
        ({"target_lufs": -41}, "targetLufs", r"-40\.\.-5 LUFS"),
    ],
)
def test_invalid_recipes_name_the_field(fields: dict[str, float], field: str, words: str) -> None:
    with pytest.raises(audio_errors.InvalidRecipe, match=words) as caught:
        recipes.validate(_recipe(**fields), 9.66)
    assert caught.value.field == field and caught.value.message.startswith(field)


def test_bounds_are_inclusive() -> None:
    edge = recipes.validate(_recipe(end_sec=2, fade_in_sec=1, fade_out_sec=1, gain_db=30, target_lufs=-5), 9.66)
    assert (edge.gain_db, edge.target_lufs, edge.length_sec) == (30, -5, 2)


def test_render_graph_has_only_the_filters_the_recipe_needs() -> None:
    plain = recipes.validate(_recipe(start_sec=1, end_sec=3), 9.66)
    assert render.edit_filters(plain) == ["atrim=start=1.000:end=3.000", "asetpts=PTS-STARTPTS"]
    full = recipes.validate(_recipe(start_sec=1, end_sec=3, fade_in_sec=0.5, fade_out_sec=0.25, gain_db=-6), 9.66)
    assert render.edit_filters(full)[2:] == ["afade=t=in:st=0:d=0.500", "afade=t=out:st=1.750:d=0.250", "volume=-6.000dB"]
    with pytest.raises(ValueError, match="measure"):
        render.render_argv("in.flac", "out.mp3", recipes.validate(_recipe(target_lufs=-20), 9.66), "mp3")


def test_signed_urls_verify_until_their_deadline_only() -> None:
    signer = signing.URLSigner(b"k" * 32)
    url = signer.sign("previews/a b.mp3", 60, now_s=1000.0)
    assert (
        url
        == f"/api/storage/download?key=previews%2Fa%20b.mp3&expires=1060&signature={signing.signature_for(b'k' * 32, 'previews/a b.mp3', 1060)}"
    )
    signature = url.rsplit("=", 1)[1]
    signer.verify("previews/a b.mp3", "1060", signature, now_s=1059.9)
    with pytest.raises(errors.InvalidSignature, match="expired"):
        signer.verify("previews/a b.mp3", "1060", signature, now_s=1060)
    for key, expires, sig in (
        ("previews/other.mp3", "1060", signature),
        ("previews/a b.mp3", "9999", signature),
        ("previews/a b.mp3", "1060", "0" * 64),
        ("previews/a b.mp3", "soon", signature),
    ):
        with pytest.raises(errors.InvalidSignature):
            signer.verify(key, expires, sig, now_s=1000)
    with pytest.raises(errors.InvalidSignature):
        signing.URLSigner(b"x" * 32).verify("previews/a b.mp3", "1060", signature, now_s=1000)
    with pytest.raises(ValueError, match="32 bytes"):
        signing.URLSigner(b"short")


def test_local_storage_signs_with_the_frozen_clock(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, signing.URLSigner(b"k" * 32))
    with freeze_time("2026-01-01T00:00:00Z"):
        url = storage.signed_url("assets/x/prepared.flac", 3600)
    assert url is not None and f"expires={int(dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC).timestamp())}" in url
    assert LocalStorage(tmp_path / "unsigned").signed_url("a/b", 60) is None
    with pytest.raises(errors.InvalidStorageKey):
        storage.signed_url("../etc/passwd", 60)


def test_the_generated_secret_is_kept_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / local.SECRET_FILE_NAME
    secret = local.load_or_create_secret(path)
    assert len(secret) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert local.load_or_create_secret(path) == secret


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ranges.ByteRange(0, 99)),
        ("bytes=900-", ranges.ByteRange(900, 999)),
        ("bytes=900-5000", ranges.ByteRange(900, 999)),
        ("bytes=-100", ranges.ByteRange(900, 999)),
        ("bytes=-5000", ranges.ByteRange(0, 999)),
        ("bytes=1000-", ranges.UNSATISFIABLE),
        ("bytes=-0", ranges.UNSATISFIABLE),
        ("bytes=5-1", None),  # invalid: ignored
        ("bytes=0-1,5-9", None),  # several ranges: served whole
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_range_headers(header: str | None, expected: object) -> None:
    assert ranges.parse_range(header, 1000) == expected


def test_content_range_values() -> None:
    assert ranges.content_range(ranges.ByteRange(0, 9), 1000) == "bytes 0-9/1000"
    assert ranges.content_range(None, 1000) == "bytes */1000"


def _state(job_type: str, status: str, result: dict[str, object] | None) -> JobState:
    at = dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC)
    return JobState(
        job_id="j" * 32,
        job_type=job_type,
        status=status,
        result=result,
        owner="o",  # type: ignore[arg-type]
        created_at=at,
        updated_at=at,
        finished=status == "complete",
        version=5,
    )


def test_asset_rows_come_from_completed_ingest_and_save_jobs_only() -> None:
    result = {
        "assetId": ASSET,
        "preparedKey": f"assets/{ASSET}/prepared.flac",
        "durationSec": 9.66,
        "sampleRate": 48000,
        "channels": 1,
        "inputLoudness": {"integratedLufs": -20.1, "truePeakDb": -3.0},
        "outputLoudness": None,
    }
    row = assets.asset_row(_state("ingest", "complete", result))
    assert row is not None and (row["integrated_lufs"], row["true_peak_db"], row["owner"]) == (-20.1, -3.0, "o")
    assert row["created_at"] == "2026-11-23T12:00:00.000000Z"
    assert assets.asset_row(_state("save", "complete", {**result, "outputLoudness": {"integratedLufs": -23}}))["integrated_lufs"] == -23  # type: ignore[index]
    assert assets.asset_row(_state("preview", "complete", result)) is None
    assert assets.asset_row(_state("ingest", "processing", result)) is None
    assert (
        previews.preview_row(_state("preview", "complete", {"previewKey": "previews/h.mp3", "recipeHash": "h", "cacheHit": True})) is None
    )
    done = _state("ingest", "complete", result)
    assert assets.statements(done, done) == []  # a finished job writes its row once


@pytest.fixture
def repository(tmp_path: Path) -> JobRepository:
    backend = SQLiteBackend(tmp_path / "jobtape.db")
    backend.migrate(TABLES.migrations)
    return JobRepository(EventStore(backend), projections=TABLES.projections)


def test_quota_counts_only_active_jobs_and_ignores_cache_hits(repository: JobRepository) -> None:
    first = repository.create("preview", {}, owner="o", max_active_jobs=2).state
    repository.create("preview", {}, owner="o", max_active_jobs=2)
    with pytest.raises(errors.QuotaExceeded) as caught:
        repository.create("preview", {}, owner="o", max_active_jobs=2)
    assert (caught.value.owner, caught.value.max_active_jobs) == ("o", 2)
    hit = repository.create("preview", {}, owner="o", max_active_jobs=2, extra_events=[ev.JobCompleted(result={})])
    assert hit.state.status == "complete"
    repository.append(first.job_id, [ev.JobCancelRequested()], first, actor="api")
    assert repository.create("preview", {}, owner="o", max_active_jobs=2).state.status == "pending"
    assert quota.count_active(repository.store.backend, "o") == 2
    assert repository.store.backend.query("SELECT COUNT(*) FROM _jobtape_quota_guard") == [(0,)]


def test_an_idempotent_replay_at_the_limit_is_a_duplicate_not_a_quota_refusal(repository: JobRepository) -> None:
    repository.create("ingest", {}, owner="o", idempotency_key="k", max_active_jobs=1)
    with pytest.raises(errors.DuplicateIdempotencyKey):
        repository.create("ingest", {}, owner="o", idempotency_key="k", max_active_jobs=1)


def test_racing_creates_never_pass_the_quota(repository: JobRepository) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        try:
            repository.create("save", {}, owner="racer", max_active_jobs=3)
            outcome = "created"
        except errors.QuotaExceeded:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] * 3 + ["refused"] * 9
    assert quota.count_active(repository.store.backend, "racer") == 3
