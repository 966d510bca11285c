"""A result that missed its loudness target says so, and by how much (real ffmpeg, real recordings)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_worker import upload

from jobtape.audio import loudness, media, recipes
from jobtape.config import Settings
from jobtape.defaults import worker as Worker
from jobtape.projections.repository import JobRepository
from jobtape.storage import LocalStorage

pytestmark = pytest.mark.slow


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def _trim(source: Path, target: Path, start_s: float, length_s: float) -> Path:
    subprocess.run(
        [
            media.ffmpeg_executable(),
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-ss",
            f"{start_s:g}",
            "-t",
            f"{length_s:g}",
            "-i",
            str(source),
            str(target),
        ],
        check=True,
    )
    return target


def _run(repository: JobRepository, storage: LocalStorage, settings: Settings, job_id: str) -> dict[str, Any]:
    Worker(repository, storage, settings).run(until_idle=True)
    state = repository.get(job_id)
    assert state.status == "complete", state.error
    assert state.result is not None
    return state.result


def _measured(storage: LocalStorage, key: str) -> float:
    """The stored file's integrated loudness, by an independent ebur128 pass (LUFS)."""
    path = storage.local_path(key)
    assert path is not None
    return media.measure_integrated_loudness(path)


def test_a_short_clip_that_misses_the_target_says_by_how_much(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    settings = Settings(data_dir=tmp_path, work_dir=tmp_path / "work")
    clip = _trim(media_dir / "speech_ljspeech.wav", tmp_path / "clip.wav", 0, 2.6)

    result = _run(repository, storage, settings, upload(repository, storage, clip))

    measured = _measured(storage, result["preparedKey"])
    assert measured < -16.0 - loudness.TOLERANCE_LU  # the clip really is quieter than asked
    assert result["normalization"] == "linear"  # under 3 s loudnorm has no dynamic mode
    assert result["targetMissedByLu"] == pytest.approx(-16.0 - measured, abs=0.1)
    assert result["targetMissedByLu"] == round(-16.0 - result["outputLoudness"]["integratedLufs"], 2)
    assert result["loudnessNote"].startswith(f"came out at {result['outputLoudness']['integratedLufs']:.2f} LUFS,")
    assert "below the -16 LUFS target (tolerance 1 LU): a clip shorter than 3 s" in result["loudnessNote"]


def test_a_clip_on_target_has_no_such_keys_and_a_short_save_that_misses_has_them(
    tmp_path: Path, repository: JobRepository, storage: LocalStorage, media_dir: Path
) -> None:
    settings = Settings(data_dir=tmp_path, work_dir=tmp_path / "work")
    ingested = _run(repository, storage, settings, upload(repository, storage, media_dir / "speech_ljspeech.wav"))
    assert abs(_measured(storage, ingested["preparedKey"]) - (-16.0)) <= loudness.TOLERANCE_LU
    assert "targetMissedByLu" not in ingested and "loudnessNote" not in ingested

    # A 2.5 s cut asked to be -12 LUFS: its peaks are already near the ceiling, so it cannot get there.
    recipe = recipes.CanonicalRecipe(
        asset_id=ingested["assetId"], start_sec=1.0, end_sec=3.5, fade_in_sec=0.0, fade_out_sec=0.0, gain_db=0.0, target_lufs=-12.0
    )
    params = {"recipe": recipe.to_json_dict(), "recipeHash": recipes.recipe_hash(recipe), "sourceKey": ingested["preparedKey"]}
    saved = _run(repository, storage, settings, repository.create("save", params, job_id=os.urandom(16).hex()).state.job_id)

    measured = _measured(storage, saved["preparedKey"])
    assert measured < -12.0 - loudness.TOLERANCE_LU
    assert saved["targetMissedByLu"] == pytest.approx(-12.0 - measured, abs=0.1)
    assert "below the -12 LUFS target" in saved["loudnessNote"]
