"""Files and folders a real ingest creates are private (0600/0700) unless JOBTAPE_FILE_MODE says otherwise."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path

from jobtape import filemodes
from jobtape.cli.common import embedded_app
from jobtape.config import Settings

SPEECH = Path(__file__).resolve().parents[2] / "media" / "speech_ljspeech.wav"


def _ingest(settings: Settings) -> dict[str, int]:
    """Upload a real recording to the API with an embedded worker, wait for the asset; return ``{path: mode}``."""
    app, repository = embedded_app(settings, 1)
    try:
        with TestClient(app) as client, SPEECH.open("rb") as handle:
            response = client.post("/api/audio/ingest", files={"file": ("speech.wav", handle, "audio/wav")})
            assert response.status_code == 202, response.text
            job_id = response.json()["data"]["jobId"]
            state = wait_for(lambda: (s := repository.get(job_id)).finished and s, timeout_s=60, what="the ingest")
            assert state.status == "complete", state.error
            modes = {}
            for folder, dirs, files in os.walk(settings.data_dir):
                for name in [*dirs, *files]:
                    path = Path(folder) / name
                    modes[str(path.relative_to(settings.data_dir))] = stat.S_IMODE(os.lstat(path).st_mode)
            modes["."] = stat.S_IMODE(os.stat(settings.data_dir).st_mode)
            return modes
    finally:
        repository.store.close()


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask (022): without jobtape's modes, files would be 0644 and folders 0755."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.slow
@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize(("variable", "file_mode", "dir_mode"), [(None, 0o600, 0o700), ("0640", 0o640, 0o750)])
def test_a_real_ingest_leaves_only_files_and_folders_of_the_configured_mode(
    tmp_path: Path, variable: str | None, file_mode: int, dir_mode: int
) -> None:
    environ = {"JOBTAPE_DATA_DIR": str(tmp_path / "var")}  # not there yet: jobtape creates it
    if variable is not None:
        environ["JOBTAPE_FILE_MODE"] = variable
    settings = Settings.from_env(environ, work_dir=tmp_path / "work")
    assert settings.file_mode == file_mode

    modes = _ingest(settings)

    prepared = [name for name in modes if name.endswith("prepared.flac")]
    uploads = [name for name in modes if name.startswith("storage/ingest-uploads/") and name.endswith(".wav")]
    assert len(prepared) == 1 and len(uploads) == 1
    assert {"jobtape.db", "jobtape.db-wal", "jobtape.db-shm", "signing-secret"} <= set(modes)
    assert modes.pop("signing-secret") == 0o600  # a secret stays private whatever the setting
    assert modes.pop("log-key") == 0o600  # so does the log key (docs/audit.md, "Tamper evidence")
    modes.pop("upload-tmp", None)  # the API's upload spool folder (jobtape/http/spool.py), inside the data dir
    spool = {name: modes.pop(name) for name in list(modes) if name.startswith("upload-tmp/")}
    assert all(mode & ~file_mode == 0 for mode in spool.values()), spool  # its owner locks: 0600
    wrong = {name: f"{mode:04o}" for name, mode in modes.items() if mode != (dir_mode if (tmp_path / "var" / name).is_dir() else file_mode)}
    assert wrong == {}


def test_an_invalid_file_mode_is_refused_with_the_variable_named() -> None:
    for text in ("0755", "0400", "rw-------", "01600"):
        with pytest.raises(ValueError, match="JOBTAPE_FILE_MODE"):
            Settings.from_env({"JOBTAPE_FILE_MODE": text})
    assert filemodes.dir_mode(0o600) == 0o700 and filemodes.dir_mode(0o644) == 0o755
    assert filemodes.parse_file_mode("0o660") == 0o660
