"""Streaming multipart/form-data reader: spools one file field to a temporary file.

The request body is fed chunk by chunk to python-multipart's push parser; the file
field's bytes are buffered up to ``flush_bytes``: a file that fits is handed over in
memory (the route writes it once, where it is stored: issue 12, ``bench/submit.py``), a
larger one is written to a temporary (spool) file in a worker thread as it arrives, so
memory stays bounded by about ``flush_bytes`` plus one received chunk whatever the
upload's size. Every other form field is read and dropped.

Rejections are :class:`litestar.exceptions.HTTPException` with the status to answer:
400 malformed form / no or several file fields, 408 the client stopped sending (idle
timeout) or sends too slowly (minimum rate), 413 too large, 415 wrong file type, 422
empty file; a client that disconnects raises :class:`ClientDisconnected` (nobody is left
to answer); a full disk raises :class:`jobtape.errors.StoreFull` (507). The temporary
file is removed when the context exits, also on error, so a stalled, slow or vanished
client holds no disk space after its request ends. :class:`UploadSlots` caps how many
uploads one process receives at once (503 beyond it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
from litestar.exceptions import ClientException, HTTPException, InternalServerException
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from jobtape import errors
from jobtape.http import spool

__all__ = [
    "ACCEPTED_TYPES_TEXT",
    "FORM_OVERHEAD_BYTES",
    "ClientDisconnected",
    "SpooledUpload",
    "UploadSlots",
    "is_accepted_type",
    "is_disk_full",
    "spool_upload",
]

#: How many file bytes are buffered before a write to the temporary file.
DEFAULT_FLUSH_BYTES = 1024 * 1024
#: Room for multipart boundaries and part headers on top of ``max_upload_bytes``, in bytes.
FORM_OVERHEAD_BYTES = 64 * 1024
#: For messages: the file part content types the ingest route accepts.
ACCEPTED_TYPES_TEXT = "audio/*, video/* or application/octet-stream"
#: ``errno`` values that mean the disk (or the user's quota on it) is full.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: ``Retry-After`` of the 503 answered when every upload slot is taken, in seconds.
UPLOADS_BUSY_RETRY_AFTER_S = 5


class ClientDisconnected(Exception):
    """The client closed the connection before its request body was complete.

    Raised instead of Litestar's ``InternalServerException("client disconnected
    prematurely")``, so the server can tell a vanished client from a server error; nobody
    is left to read the answer, and the upload's spool file is already removed.
    """


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is an ``OSError`` saying the disk is full.

    Follows ``__cause__`` / ``__context__`` (e.g. a :class:`jobtape.errors.StorageError`
    raised from an ``OSError(ENOSPC)`` by the local storage backend).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class UploadSlots:
    """A cap on the uploads one process receives at once.

    Every upload holds a slot from before its first body byte is read until its file is
    in storage (or it was rejected). Used from the event loop only, so a plain counter.

    Args:
        limit: the most uploads at once (>= 1).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the upload limit must be at least 1, not {limit}")
        self.limit = limit
        self.in_use = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block.

        Raises:
            HTTPException: 503 with ``Retry-After`` when all ``limit`` slots are held;
                nothing of the body has been read then (the server discards the body the
                client still sends; a client sending ``Expect: 100-continue`` sends none).
        """
        if self.in_use >= self.limit:
            raise HTTPException(
                status_code=503,
                detail=f"the server is receiving {self.limit} uploads already, its limit; retry in {UPLOADS_BUSY_RETRY_AFTER_S} s",
                headers={"Retry-After": str(UPLOADS_BUSY_RETRY_AFTER_S)},
            )
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


def is_accepted_type(content_type: str) -> bool:
    """Whether a file part's media type (lowercase, no parameters) may be ingested."""
    return content_type.startswith(("audio/", "video/")) or content_type == "application/octet-stream"


@dataclasses.dataclass(frozen=True)
class SpooledUpload:
    """The file field of a form, written to a temporary file.

    A file up to ``flush_bytes`` (1 MiB by default) is kept in memory (``data``) and never
    written to a spool file: the route writes it once, where it is stored. A larger one
    is spooled as it arrives (``path``).

    Attributes:
        path: the spool file (deleted when :func:`spool_upload`'s context exits, unless the
            route gave it to storage); ``None`` when the file is in ``data``.
        data: the file's bytes when it fit in ``flush_bytes``; else ``None``.
        filename: the client's file name without any directory part, or ``None`` if not sent.
        content_type: the part's media type, lowercase without parameters;
            ``application/octet-stream`` if the part had no ``Content-Type``.
        size_bytes: the file's size in bytes (> 0).
        sha256: the file's SHA-256, hex (computed while spooling, in the writer thread).
    """

    path: Path | None
    data: bytes | None
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
            raise HTTPException(status_code=413, detail=f"the file is larger than the upload limit of {self.max_bytes} bytes")
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
    spool_folder: spool.SpoolFolder,
    idle_timeout_s: float | None = None,
    min_rate_bytes_s: float = 0.0,
    flush_bytes: int = DEFAULT_FLUSH_BYTES,
) -> AsyncIterator[SpooledUpload]:
    """Read a multipart/form-data body and spool its ``field`` file to a temporary file.

    Args:
        chunks: the request body, e.g. ``request.stream()``.
        boundary: the ``boundary`` parameter of the request's ``Content-Type``.
        field: the name of the file field, e.g. ``"file"``.
        max_bytes: largest accepted file, in bytes; reading stops as soon as it is passed.
        spool_folder: where the temporary file goes (its name carries the folder's owner token).
        idle_timeout_s: seconds the client may send nothing before the upload is abandoned
            (408); ``None``: no limit. Also the window of ``min_rate_bytes_s``.
        min_rate_bytes_s: the least average rate, in bytes per second, over each window of
            ``idle_timeout_s`` seconds; a slower client is abandoned (408). 0: no minimum.
        flush_bytes: file bytes buffered in memory before each write.

    Yields:
        The spooled upload; its temporary file is removed when the context exits.

    Raises:
        ClientException: 400 malformed body, body cut short, no ``field`` or several.
        HTTPException: 408 idle past ``idle_timeout_s`` or slower than ``min_rate_bytes_s``
            (with ``Connection: close``); 413 file over ``max_bytes``; 415 file part type
            not accepted; 422 empty file.
        ClientDisconnected: the client closed the connection mid-body.
        errors.StoreFull: the disk under the spool folder filled up (``ENOSPC``/``EDQUOT``).
    """
    collector = _FileFieldCollector(field, max_bytes)
    try:
        parser = MultipartParser(boundary.encode("latin-1"), collector.callbacks())  # type: ignore[arg-type]
    except (FormParserError, ValueError) as exc:
        raise ClientException(detail=f"invalid multipart boundary: {exc}") from exc
    digest = hashlib.sha256()
    sink: BinaryIO | None = None
    path: Path | None = None
    try:
        async for chunk in _paced(chunks, idle_timeout_s, min_rate_bytes_s):
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise ClientException(detail=f"malformed multipart/form-data body: {exc}") from exc
            if len(collector.pending) >= flush_bytes:
                if sink is None:  # past flush_bytes: the file goes to a spool file as it arrives
                    sink, path = await _open_spool_file(spool_folder)
                await _flush(sink, digest, collector.pending)
        parser.finalize()
        if not collector.ended:
            raise ClientException(detail="the multipart body ends before its closing boundary; send the whole form")
        if not collector.found:
            raise ClientException(detail=f"the form has no {field!r} field; send the audio as a multipart/form-data field named {field!r}")
        if collector.size_bytes == 0:
            raise HTTPException(status_code=422, detail="the uploaded file is empty")
        data: bytes | None = None
        if sink is None:  # the whole file fit in flush_bytes: kept in memory, never spooled
            data = bytes(collector.pending)
            collector.pending.clear()
            digest.update(data)
        else:
            await _flush(sink, digest, collector.pending)
            sink.close()
        yield SpooledUpload(
            path=path,
            data=data,
            filename=collector.filename,
            content_type=collector.content_type,
            size_bytes=collector.size_bytes,
            sha256=digest.hexdigest(),
        )
    except OSError as exc:
        _raise_if_disk_full(exc)
        raise
    finally:
        if sink is not None:
            sink.close()
        if path is not None and os.path.lexists(path):  # not when the route gave the file to storage (Storage.move_file)
            spooled_path = path
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: spooled_path.unlink(missing_ok=True))


async def _open_spool_file(spool_folder: spool.SpoolFolder) -> tuple[BinaryIO, Path]:
    """A new spool file of ``spool_folder``, open for writing, in a worker thread.

    Raises:
        errors.StoreFull: the disk under the spool folder is full.
    """
    try:
        fd, path = await anyio.to_thread.run_sync(spool_folder.create_file)
    except OSError as exc:
        _raise_if_disk_full(exc)
        raise
    return os.fdopen(fd, "wb"), path


def _raise_if_disk_full(exc: OSError) -> None:
    """Raise :class:`errors.StoreFull` (naming no path) from ``exc`` if it says the disk is full."""
    if exc.errno in DISK_FULL_ERRNOS:
        raise errors.StoreFull("the disk that receives uploads is full") from exc


async def _paced(chunks: AsyncIterator[bytes], idle_timeout_s: float | None, min_rate_bytes_s: float) -> AsyncIterator[bytes]:
    """Yield the non-empty chunks of ``chunks``, abandoning a client that stalls or crawls.

    Raises:
        HTTPException: 408 when no chunk arrives for ``idle_timeout_s`` seconds, or fewer than
            ``min_rate_bytes_s * idle_timeout_s`` bytes arrive in a window of ``idle_timeout_s``.
        ClientDisconnected: the client went away (uvicorn's ``http.disconnect``).
    """
    iterator = chunks.__aiter__()
    window_start = time.monotonic()
    window_bytes = 0
    exhausted = False
    on_asyncio = _on_asyncio()
    try:
        while True:
            try:
                chunk = await _next_chunk(iterator, idle_timeout_s, on_asyncio)
            except StopAsyncIteration:
                exhausted = True
                return
            except TimeoutError:
                raise HTTPException(
                    status_code=408,
                    detail=f"no bytes of the upload arrived for {idle_timeout_s:g} s; the upload was abandoned, send it again",
                    headers={"Connection": "close"},
                ) from None
            except InternalServerException as exc:
                if "disconnect" in str(exc.detail):
                    raise ClientDisconnected(str(exc.detail)) from None
                raise
            if idle_timeout_s is not None and min_rate_bytes_s > 0:
                window_bytes += len(chunk)
                elapsed = time.monotonic() - window_start
                if elapsed >= idle_timeout_s:
                    if window_bytes < min_rate_bytes_s * elapsed:
                        raise HTTPException(
                            status_code=408,
                            detail=f"the upload arrived at {window_bytes / elapsed:.0f} bytes/s, below the minimum of"
                            f" {min_rate_bytes_s:g} bytes/s; the upload was abandoned, send it again",
                            headers={"Connection": "close"},
                        )
                    window_start, window_bytes = time.monotonic(), 0
            if chunk:
                yield chunk
    finally:
        aclose = None if exhausted else getattr(iterator, "aclose", None)  # an exhausted generator has nothing to close
        if aclose is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await aclose()


def _on_asyncio() -> bool:
    """Whether the running event loop is asyncio's (uvicorn's; anyio may also run on trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _next_chunk(iterator: AsyncIterator[bytes], timeout_s: float | None, on_asyncio: bool) -> bytes:
    """The next chunk of ``iterator`` within ``timeout_s`` seconds (``None``: no limit).

    Raises:
        TimeoutError: no chunk came in time.
        StopAsyncIteration: the body is complete.
    """
    if timeout_s is None:
        return await iterator.__anext__()
    if on_asyncio:  # uvicorn's loop: asyncio.timeout costs about a third of anyio.fail_after (issue 12, bench/submit.py)
        async with asyncio.timeout(timeout_s):
            return await iterator.__anext__()
    with anyio.fail_after(timeout_s):
        return await iterator.__anext__()


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
