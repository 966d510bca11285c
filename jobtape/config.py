"""Settings: one explicit object, built once by the entrypoint (the CLI) and passed in.

Precedence (highest first): a command-line flag, its environment variable, the default
below. Nothing in jobtape reads the environment at import time; ``jobtape.cli`` does it
through click's ``envvar`` options, and :meth:`Settings.from_env` does it for embedding.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Settings"]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Runtime settings of the API and the workers.

    Attributes:
        data_dir: folder of the embedded defaults: ``jobtape.db`` (SQLite event log) and
            ``storage/`` (local blobs). Env ``JOBTAPE_DATA_DIR``; default ``./var``.
        poll_interval_s: how often a separate worker polls the log for new jobs and
            cancels, in seconds. Env ``JOBTAPE_POLL_INTERVAL``; default 1.0.
        concurrency: jobs one worker process runs at once. Env ``JOBTAPE_CONCURRENCY``; default 1.
        kill_grace_s: seconds between SIGTERM and SIGKILL when a child must stop; default 5.0.
        max_upload_bytes: largest accepted upload, in bytes; default 500 MB.
        target_lufs: integrated loudness of prepared assets, LUFS; default -16.0.
        target_true_peak_db: true-peak ceiling of prepared assets, dBTP; default -1.5.
        ffmpeg_readrate: if set, ffmpeg reads its input at most this many times real time
            (``-readrate``), so a worker sharing a host does not take every core; ``None``
            (the default) reads as fast as it can. Env ``JOBTAPE_FFMPEG_READRATE``.
    """

    data_dir: Path = Path("var")
    poll_interval_s: float = 1.0
    concurrency: int = 1
    kill_grace_s: float = 5.0
    max_upload_bytes: int = 500 * 1000 * 1000
    target_lufs: float = -16.0
    target_true_peak_db: float = -1.5
    ffmpeg_readrate: float | None = None

    @property
    def database_path(self) -> Path:
        """The SQLite event log file: ``data_dir/jobtape.db``."""
        return self.data_dir / "jobtape.db"

    @property
    def storage_root(self) -> Path:
        """The local storage folder: ``data_dir/storage``."""
        return self.data_dir / "storage"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``JOBTAPE_*`` variables, then apply ``overrides`` (non-``None`` only).

        Raises:
            ValueError: a variable holds a value of the wrong type (the message names it).
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name, var, kind in (
            ("data_dir", "JOBTAPE_DATA_DIR", Path),
            ("poll_interval_s", "JOBTAPE_POLL_INTERVAL", float),
            ("concurrency", "JOBTAPE_CONCURRENCY", int),
            ("max_upload_bytes", "JOBTAPE_MAX_UPLOAD_BYTES", int),
            ("ffmpeg_readrate", "JOBTAPE_FFMPEG_READRATE", float),
        ):
            if var in env:
                try:
                    values[name] = kind(env[var])
                except ValueError as exc:
                    raise ValueError(f"{var}={env[var]!r} is not a valid {kind.__name__}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
