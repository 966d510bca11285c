"""Settings for tests: the engine's and the audio package's from one set of keyword arguments."""

from __future__ import annotations

from typing import Any

from jobtape.audio.settings import AudioSettings
from jobtape.config import Settings
from jobtape.defaults import default_tables


def split(**values: Any) -> tuple[Settings, AudioSettings]:
    """``Settings`` and ``AudioSettings`` built from ``values``, each taking the fields it has."""
    audio_fields = AudioSettings.fields()
    return (
        Settings(**{k: v for k, v in values.items() if k not in audio_fields}),
        AudioSettings(**{k: v for k, v in values.items() if k in audio_fields}),
    )


#: The default app's tables (the engine's and the audio package's), as ``jobtape serve`` opens them.
TABLES = default_tables()
