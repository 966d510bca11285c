"""The multipart reader keeps a small file in memory and spools a large one (issue 12: an upload is written once)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from jobtape.http import spool, upload

__all__: list[str] = []

BOUNDARY = "spooltestboundary"


def _form(payload: bytes) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'.encode()
        + payload
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def _chunks(body: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _read(tmp_path: Path, payload: bytes, flush_bytes: int) -> tuple[upload.SpooledUpload, list[str], list[str]]:
    folder = spool.SpoolFolder(tmp_path / "upload-tmp")

    async def run() -> tuple[upload.SpooledUpload, list[str], list[str]]:
        async with upload.spool_upload(
            _chunks(_form(payload)), BOUNDARY, field="file", max_bytes=10**9, spool_folder=folder, flush_bytes=flush_bytes
        ) as spooled:
            during = sorted(p.name for p in folder.path.glob("upload-*")) if folder.path.exists() else []
            if spooled.path is not None:
                assert spooled.path.read_bytes() == payload
        after = sorted(p.name for p in folder.path.glob("upload-*")) if folder.path.exists() else []
        return spooled, during, after

    try:
        return anyio.run(run)
    finally:
        folder.close()


def test_a_file_within_flush_bytes_stays_in_memory_and_no_spool_file_is_made(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 400  # 100 KiB
    spooled, during, after = _read(tmp_path, payload, flush_bytes=1024 * 1024)
    assert spooled.path is None and spooled.data == payload
    assert (spooled.size_bytes, spooled.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert during == [] and after == []


def test_a_file_past_flush_bytes_is_spooled_as_it_arrives_and_the_spool_file_removed_at_exit(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    spooled, during, after = _read(tmp_path, payload, flush_bytes=256 * 1024)
    assert spooled.data is None and spooled.path is not None
    assert (spooled.size_bytes, spooled.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    assert during == [spooled.path.name] and after == []
