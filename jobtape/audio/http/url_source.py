"""The JSON body of a URL/YouTube ingest: read it (bounded), validate it, check the URL (SSRF guard).

Nothing is downloaded in the request: :func:`read_url_params` only parses the body,
requires ``rightsAttested: true`` and runs :func:`jobtape.audio.sources.check_source_url` (which
resolves the host, in a thread) before the route creates the job. Any refusal raises
before a job exists, so nothing is appended.
"""

from __future__ import annotations

import functools
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request
from litestar.exceptions import ClientException, HTTPException
from litestar.openapi.spec import Schema

from jobtape.audio import sources
from jobtape.audio.http import schemas as audio_schemas
from jobtape.audio.settings import AudioSettings
from jobtape.http import openapi

__all__ = ["BODY_EXAMPLE", "MAX_JSON_BYTES", "json_body_schema", "read_url_params"]

#: Largest accepted JSON body, in bytes.
MAX_JSON_BYTES = 16 * 1024
#: The body shape, quoted in error messages.
BODY_EXAMPLE = '{"sourceType": "url" | "youtube", "url": "https://...", "rightsAttested": true}'

_DECODER = msgspec.json.Decoder(audio_schemas.IngestUrlRequest)


async def read_url_params(
    request: Request[Any, Any, Any], settings: AudioSettings, resolve: sources.Resolver = sources.resolve_host
) -> dict[str, Any]:
    """Read and check a JSON ingest body; return the ingest job's params.

    Args:
        request: a request whose Content-Type is JSON.
        settings: ``allow_private_urls`` decides whether non-public addresses pass.
        resolve: the DNS resolver for the SSRF check.

    Returns:
        ``{"sourceType": "url" | "youtube", "url": <stripped URL>, "rightsAttested": True}``.

    Raises:
        HTTPException: 413 for a body over :data:`MAX_JSON_BYTES`; 400 for malformed JSON;
            422 for a body of the wrong shape or ``rightsAttested`` not ``true``.
        audio_errors.SourceUrlRefused: the URL is not http(s), not YouTube's for ``youtube``, or
            resolves to a non-public address (mapped to 422 by :mod:`jobtape.http.errors`).
    """
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise HTTPException(status_code=413, detail=f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise HTTPException(status_code=413, detail=f"the JSON body is larger than {MAX_JSON_BYTES} bytes")
    try:
        payload = _DECODER.decode(bytes(body))
    except msgspec.ValidationError as exc:
        raise HTTPException(status_code=422, detail=f"invalid ingest body: {exc}; send {BODY_EXAMPLE}") from None
    except msgspec.DecodeError as exc:
        raise ClientException(detail=f"the body is not valid JSON ({exc}); send {BODY_EXAMPLE}") from None
    if payload.rights_attested is not True:
        raise HTTPException(
            status_code=422,
            detail="rightsAttested must be true: confirm you have the rights to ingest this media",
        )
    check = functools.partial(
        sources.check_source_url,
        payload.url,
        payload.source_type,
        allow_private=settings.allow_private_urls,
        allowed_networks=settings.private_networks,
        resolve=resolve,
    )
    checked = await anyio.to_thread.run_sync(check)
    return {"sourceType": payload.source_type, "url": checked.url, "rightsAttested": True}


def json_body_schema() -> Schema:
    """The OpenAPI schema of :class:`audio_schemas.IngestUrlRequest`, from msgspec's JSON Schema."""
    return openapi.struct_schema(audio_schemas.IngestUrlRequest)
