"""Blob ownership and download links of jobs recorded before events declared them (pure; no I/O).

Logs written before branch ``owned`` (on top of 72ee112, December 2026) carry no
``owned_keys`` on ``job.created`` nor ``owned_keys`` / ``download_key`` on
``job.completed``: ownership was inferred from the audio jobs' params and result keys.
This module is that inference, kept ONLY so such logs keep their answers (owned keys,
failed-upload retention, the poll's ``downloadUrl``); the fold consults it, through
:mod:`jobtape.projections.state`, for an event that declares nothing. It is here, not in
the audio package, because every tool (``verify``, ``rebuild``, ``archive``, the poll) must
read an old log the same way whatever app it runs with, and the fold is the one authority.

New events of the audio jobs always declare what this infers (an upload ingest's
``job.created`` names its upload; every completion names its outputs or its download), so
the reading below gives them the same answer either way. A user job type named ``ingest``,
``preview`` or ``save`` that declares nothing would be read by these rules too: declare
(``JobContext.output_written`` / ``set_download``) or pick another name.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LEGACY_JOB_TYPES", "legacy_download", "legacy_inputs", "legacy_outputs"]

#: The job types logs written before the declarations held (the audio jobs).
LEGACY_JOB_TYPES = frozenset({"ingest", "preview", "save"})
#: Result fields that held the key a poll linked to, in order of preference.
_RESULT_KEYS = ("previewKey", "preparedKey")


def legacy_inputs(job_type: str, params: dict[str, Any]) -> tuple[str, ...]:
    """The keys an undeclared ``job.created`` handed to its job: an upload ingest's ``storageKey``.

    Only an ``upload`` source's key (``ingest-uploads/<jobId>/...`` then, written by the API for
    this one job) was the job's; a ``storage`` source (a presigned direct upload several jobs
    may name) and a URL ingest had none; an edit's ``sourceKey`` is the source asset's.
    """
    if job_type != "ingest" or params.get("sourceType", "upload") != "upload":
        return ()
    key = params.get("storageKey")
    return (key,) if isinstance(key, str) else ()


def legacy_outputs(job_type: str, result: dict[str, Any]) -> tuple[str, ...]:
    """The outputs an undeclared ``job.completed`` gave its job: an ingest's or save's
    ``preparedKey``, a rendering preview's ``previewKey`` (a cache hit owns nothing)."""
    if job_type in ("ingest", "save"):
        key = result.get("preparedKey")
    elif job_type == "preview" and not result.get("cacheHit"):
        key = result.get("previewKey")
    else:
        return ()
    return (key,) if isinstance(key, str) else ()


def legacy_download(job_type: str, result: dict[str, Any]) -> str | None:
    """The key an undeclared ``job.completed`` of an audio job linked to: ``previewKey``, else ``preparedKey``."""
    if job_type not in LEGACY_JOB_TYPES:
        return None
    return next((result[name] for name in _RESULT_KEYS if isinstance(result.get(name), str)), None)
