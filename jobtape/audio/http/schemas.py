"""The audio routes' JSON bodies: msgspec Structs whose fields go out in camelCase.

The engine's shapes (the poll, events, errors, the generic ``POST /api/jobs`` answer) are in
:mod:`jobtape.http.schemas`; these are the audio package's. :class:`IngestResponse` is the
same JSON as the engine's :class:`~jobtape.http.schemas.JobAccepted` under the name the seed
routes' OpenAPI document has always given it (components ``IngestResponse`` and ``IngestAccepted``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["IngestAccepted", "IngestResponse", "IngestUrlRequest"]


class _Wire(msgspec.Struct, rename="camel", kw_only=True):
    pass


class IngestUrlRequest(_Wire):
    """A URL or YouTube ingest: the worker downloads the media with yt-dlp (nothing is fetched in the request).

    Attributes:
        source_type: ``url`` (any http/https page or file yt-dlp can read) or ``youtube``
            (a youtube.com / youtu.be / youtube-nocookie.com address).
        url: the http(s) URL; its host must resolve to public addresses only unless the
            server allows private URLs (``--allow-private-urls``).
        rights_attested: must be ``true``: the client confirms it may ingest this media.
    """

    source_type: Annotated[Literal["url", "youtube"], msgspec.Meta(description="'url' for any http(s) page or file, 'youtube' for YouTube")]
    url: Annotated[
        str,
        # The scheme is checked by sources.check_source_url (422 naming it), after stripping blanks.
        msgspec.Meta(
            min_length=1,
            max_length=2048,
            description="The http(s) URL of the page or file",
            extra_json_schema={"format": "uri", "pattern": r"^\s*[Hh][Tt][Tt][Pp][Ss]?://"},
        ),
    ]
    rights_attested: Annotated[bool, msgspec.Meta(description="Must be true: you confirm you have the rights to ingest this media")] = False


class IngestAccepted(_Wire):
    """The job an upload created (202) or, on an idempotent replay, the job it created before (200)."""

    job_id: str
    status: str


class IngestResponse(_Wire, kw_only=True):
    """The ingest route's envelope: ``{"success": true, "data": {"jobId": ..., "status": ...}}``."""

    success: bool = True
    data: IngestAccepted

    @classmethod
    def for_job(cls, job_id: str, status: str) -> IngestResponse:
        """The envelope of a job.

        Args:
            job_id: 32 lowercase hex digits.
            status: its status (``pending``; ``complete`` for a cached preview).
        """
        return cls(data=IngestAccepted(job_id=job_id, status=status))
