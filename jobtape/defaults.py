"""The default app: the engine with the audio package registered (part of the composition root).

``jobtape serve``, ``worker``, ``demo`` and the audit commands use it unless ``--app``
names another :class:`jobtape.App`. This module and :mod:`jobtape.cli` are the only
engine-side modules that import :mod:`jobtape.audio` (an import-linter contract in
``pyproject.toml`` checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobtape import audio
from jobtape.app import App
from jobtape.audio.settings import AudioSettings
from jobtape.config import Settings
from jobtape.projections.registry import Tables
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage
from jobtape.worker.runner import Worker

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["create_app", "default_app", "default_tables", "worker"]


def default_app(settings: Settings | None = None, audio_settings: AudioSettings | None = None) -> App:
    """An :class:`App` with the audio jobs registered (:func:`jobtape.audio.register`).

    Args:
        settings: the engine's settings; ``None``: from the environment.
        audio_settings: the audio package's; ``None``: from the environment.
    """
    app = App(settings, description=audio.DESCRIPTION)
    audio.register(app, audio_settings)
    return app


def default_tables() -> Tables:
    """The default app's tables: the engine's, then the audio package's ``assets`` and ``previews``."""
    return default_app(Settings(), AudioSettings()).tables


def create_app(
    repository: JobRepository,
    storage: Storage,
    settings: Settings,
    audio_settings: AudioSettings | None = None,
    *,
    app: App | None = None,
    **options: Any,
) -> Litestar:
    """The HTTP API of ``app`` (default: :func:`default_app`): the engine's routes and the app's.

    Args:
        repository, storage, settings: as :func:`jobtape.http.create_app`.
        audio_settings: the audio settings of the default app (``None``: defaults, not the environment).
        app: another app whose routes to serve.
        options: more :func:`jobtape.http.create_app` keyword arguments (``on_startup``, ...).
    """
    from jobtape.http import app as http_app

    chosen = app or default_app(settings, audio_settings or AudioSettings())
    return http_app.create_app(
        repository,
        storage,
        settings,
        routes=chosen.routes_for(storage),
        dependencies=chosen.dependencies,
        description=chosen.description,
        **options,
    )


def worker(
    repository: JobRepository,
    storage: Storage,
    settings: Settings,
    audio_settings: AudioSettings | None = None,
    *,
    app: App | None = None,
    **options: Any,
) -> Worker:
    """A :class:`Worker` running ``app``'s job types (default: the audio jobs).

    Args:
        repository, storage, settings: as :class:`Worker`.
        audio_settings: the audio settings of the default app (``None``: defaults, not the environment).
        app: another app whose job types to run.
        options: more :class:`Worker` keyword arguments (``handlers`` replaces the app's, ``worker_id``, ...).
    """
    chosen = app or default_app(settings, audio_settings or AudioSettings())
    options.setdefault("handlers", chosen.job_handlers())
    options.setdefault("limits", chosen.limits())
    return Worker(repository, storage, settings, **options)
