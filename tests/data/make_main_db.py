"""Create a data dir with the main branch's code (248ad6f): a log holding an asset, a preview and a failed upload."""

import sys
from pathlib import Path

from jobtape import runtime
from jobtape.config import Settings
from jobtape.eventlog import events as ev

data_dir = Path(sys.argv[1])
repository = runtime.open_repository(Settings(data_dir=data_dir))
ingest = repository.create(
    "ingest", {"sourceType": "upload", "storageKey": "ingest-uploads/a/original.wav", "originalFilename": "a.wav"}, owner="alice"
).state
claimed = repository.append(
    ingest.job_id, [ev.JobClaimed(worker_id="host:1:1", attempt=1, lease_ttl_s=30.0)], ingest, actor="host:1:1"
).state
asset_id = "a" * 32
repository.append(
    ingest.job_id,
    [
        ev.JobCompleted(
            result={
                "assetId": asset_id,
                "preparedKey": f"assets/{asset_id}/prepared.flac",
                "durationSec": 9.66,
                "sampleRate": 48000,
                "channels": 1,
                "outputLoudness": {"integratedLufs": -16.0, "truePeakDb": -1.6, "lra": 3.0},
            }
        )
    ],
    claimed,
    actor="host:1:1",
)
recipe_hash = "b" * 64
preview = repository.create("preview", {"assetId": asset_id, "recipeHash": recipe_hash}, owner="alice").state
claimed = repository.append(
    preview.job_id, [ev.JobClaimed(worker_id="host:1:1", attempt=1, lease_ttl_s=30.0)], preview, actor="host:1:1"
).state
repository.append(
    preview.job_id,
    [
        ev.JobCompleted(
            result={
                "previewKey": f"previews/{recipe_hash}.mp3",
                "recipeHash": recipe_hash,
                "durationSec": 5.0,
                "assetId": asset_id,
                "cacheHit": False,
            }
        )
    ],
    claimed,
    actor="host:1:1",
)
failed = repository.create("ingest", {"sourceType": "upload", "storageKey": "ingest-uploads/b/original.wav"}, owner="bob").state
claimed = repository.append(
    failed.job_id, [ev.JobClaimed(worker_id="host:1:1", attempt=1, lease_ttl_s=30.0)], failed, actor="host:1:1"
).state
repository.append(failed.job_id, [ev.JobFailed(error="not media", retryable=False)], claimed, actor="host:1:1")
repository.store.close()
print(ingest.job_id, preview.job_id, failed.job_id)
