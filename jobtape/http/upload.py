"""Streaming multipart/form-data reader: spools one file field to a temporary file.

The request body is fed chunk by chunk to python-multipart's push parser; the file
field's bytes are buffered up to ``flush_bytes`` and written to a temporary file in a
worker thread, so memory stays bounded by about ``flush_bytes`` plus one received chunk
whatever the upload's size. Every other form field is read and dropped.

Rejections are :class:`litestar.exceptions.HTTPException` with the status to answer:
400 malformed form / no or several file fields, 413 too large, 415 wrong file type,
422 empty file. The temporary file is removed when the context exits, also on error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread
from litestar.exceptions import ClientException, HTTPException
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["ACCEPTED_TYPES_TEXT", "SpooledUpload", "is_accepted_type", "spool_upload"]

#: How many file bytes are buffered before a write to the temporary file.
DEFAULT_FLUSH_BYTES = 1024 * 1024
#: For messages: the file part content types the ingest route accepts.
ACCEPTED_TYPES_TEXT = "audio/*, video/* or application/octet-stream"


def is_accepted_type(content_type: str) -> bool:
    """Whether a file part's media type (lowercase, no parameters) may be ingested."""
    return content_type.startswith(("audio/", "video/")) or content_type == "application/octet-stream"


@dataclasses.dataclass(frozen=True)
class SpooledUpload:
    """The file field of a form, written to a temporary file.

    Attributes:
        path: the temporary file (deleted when :func:`spool_upload`'s context exits).
        filename: the client's file name without any directory part, or ``None`` if not sent.
        content_type: the part's media type, lowercase without parameters;
            ``application/octet-stream`` if the part had no ``Content-Type``.
        size_bytes: the file's size in bytes (> 0).
        sha256: the file's SHA-256, hex (computed while spooling, in the writer thread).
    """

    path: Path
    filename: str | None
    content_type: str
    size_bytes: int
    sha256: str


class _FileFieldCollector:
    """python-multipart callbacks that keep one field's bytes and drop the rest."""

    def __init__(self, field: str, max_bytes: int) -> None:
        self.field = field.encode()
        self.max_bytes = max_bytes
        self.pending = bytearray()
        self.found = False
        self.ended = False
        self.filename: str | None = None
        self.content_type = "application/octet-stream"
        self.size_bytes = 0
        self._in_file = False
        self._headers: dict[bytes, bytes] = {}
        self._name = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._in_file = False

    def _header_end(self) -> None:
        self._headers[bytes(self._name).strip().lower()] = bytes(self._value).strip()
        self._name.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b"").decode("latin-1"))
        if options.get(b"name") != self.field:
            return
        if self.found:
            raise ClientException(detail=f"send exactly one {self.field.decode()!r} field; the form has several")
        self.found = self._in_file = True
        raw_type, _ = parse_options_header(self._headers.get(b"content-type", b"").decode("latin-1"))
        self.content_type = raw_type.decode("latin-1") or "application/octet-stream"
        if not is_accepted_type(self.content_type):
            raise HTTPException(
                status_code=415,
                detail=f"unsupported file type {self.content_type!r}: upload {ACCEPTED_TYPES_TEXT}",
            )
        raw_name = options.get(b"filename")
        if raw_name is not None:
            name = raw_name.decode("utf-8", errors="replace").replace("\\", "/").rsplit("/", 1)[-1]
            self.filename = name or None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_file:
            return
        self.size_bytes += end - start
        if self.size_bytes > self.max_bytes:
            raise HTTPException(
                status_code=413, detail=f"the file is larger than the upload limit of {self.max_bytes} bytes"
            )
        self.pending.extend(data[start:end])

    def _part_end(self) -> None:
        self._in_file = False

    def _end(self) -> None:
        self.ended = True


@contextlib.asynccontextmanager
async def spool_upload(
    chunks: AsyncIterator[bytes],
    boundary: str,
    *,
    field: str,
    max_bytes: int,
    temp_dir: Path,
    flush_bytes: int = DEFAULT_FLUSH_BYTES,
) -> AsyncIterator[SpooledUpload]:
    """Read a multipart/form-data body and spool its ``field`` file to a temporary file.

    Args:
        chunks: the request body, e.g. ``request.stream()``.
        boundary: the ``boundary`` parameter of the request's ``Content-Type``.
        field: the name of the file field, e.g. ``"file"``.
        max_bytes: largest accepted file, in bytes; reading stops as soon as it is passed.
        temp_dir: folder for the temporary file (created if missing).
        flush_bytes: file bytes buffered in memory before each write.

    Yields:
        The spooled upload; its temporary file is removed when the context exits.

    Raises:
        ClientException: 400 malformed body, body cut short, no ``field`` or several.
        HTTPException: 413 file over ``max_bytes``; 415 file part type not accepted;
            422 empty file.
    """
    collector = _FileFieldCollector(field, max_bytes)
    try:
        parser = MultipartParser(boundary.encode("latin-1"), collector.callbacks())  # type: ignore[arg-type]
    except (FormParserError, ValueError) as exc:
        raise ClientException(detail=f"invalid multipart boundary: {exc}") from exc
    await anyio.to_thread.run_sync(lambda: temp_dir.mkdir(parents=True, exist_ok=True))
    fd, name = await anyio.to_thread.run_sync(lambda: tempfile.mkstemp(dir=temp_dir, prefix="upload-", suffix=".part"))
    path = Path(name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as sink:
            async for chunk in chunks:
                if not chunk:
                    continue
                try:
                    parser.write(chunk)
                except FormParserError as exc:
                    raise ClientException(detail=f"malformed multipart/form-data body: {exc}") from exc
                if len(collector.pending) >= flush_bytes:
                    await _flush(sink, digest, collector.pending)
            parser.finalize()
            await _flush(sink, digest, collector.pending)
        if not collector.ended:
            raise ClientException(detail="the multipart body ends before its closing boundary; send the whole form")
        if not collector.found:
            raise ClientException(
                detail=f"the form has no {field!r} field; send the audio as a multipart/form-data field named {field!r}"
            )
        if collector.size_bytes == 0:
            raise HTTPException(status_code=422, detail="the uploaded file is empty")
        yield SpooledUpload(
            path=path,
            filename=collector.filename,
            content_type=collector.content_type,
            size_bytes=collector.size_bytes,
            sha256=digest.hexdigest(),
        )
    finally:
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))


async def _flush(sink: BinaryIO, digest: Any, pending: bytearray) -> None:
    """Write the buffered file bytes and hash them, in a worker thread (not on the event loop)."""
    if not pending:
        return
    data = bytes(pending)
    pending.clear()

    def write() -> None:
        digest.update(data)
        sink.write(data)

    await anyio.to_thread.run_sync(write)
