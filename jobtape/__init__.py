"""jobtape: long audio jobs recorded in an append-only event log.

Layout (see docs/architecture.md):

- ``jobtape.eventlog``: event types (pure) and the event store port with its SQL backends.
- ``jobtape.projections``: the pure fold over a job's events and the SQL projections.
- ``jobtape.storage``: the blob storage port and its backends.
- ``jobtape.worker``: claims jobs and runs ffmpeg / yt-dlp as child processes.
- ``jobtape.http``: the Litestar API.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
