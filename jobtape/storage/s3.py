"""A ``Storage`` backend on any S3 API (AWS S3, Cloudflare R2, MinIO) through boto3.

Writes go through boto3's managed transfer: a blob larger than
``multipart_threshold_bytes`` is sent as a multipart upload in parts of
``multipart_chunk_bytes``, which S3 publishes only when the upload completes (an aborted
or failed upload leaves the key as it was). Reads stream the object body, with an HTTP
``Range`` for partial reads. Signed URLs are S3 presigned URLs (SigV4): GET for downloads,
PUT for direct uploads from clients.

boto3 errors are translated here: a missing object -> :class:`errors.BlobNotFound`, any
other failure (HTTP error, connection refused, bad credentials) -> :class:`errors.StorageError`,
``retryable`` when it may pass (no connection, a timeout, a dropped read, 5xx or SlowDown).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from jobtape import errors
from jobtape.storage import base

__all__ = ["S3Storage"]

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DELETE_BATCH = 1000  # the DeleteObjects limit


class S3Storage(base.Storage):
    """Blobs stored as objects ``<prefix><key>`` in one bucket.

    Args:
        bucket: the bucket name (it must exist).
        endpoint_url: the S3 API endpoint for non-AWS services (R2:
            ``https://<account>.r2.cloudflarestorage.com``), or ``None`` for AWS.
        region: the signing region (``auto`` for R2), or ``None`` for boto3's default.
        access_key_id: the access key, or ``None`` for boto3's credential chain.
        secret_access_key: the secret key, or ``None`` for boto3's credential chain.
        prefix: prepended to every key (e.g. ``"jobtape/"``); empty by default.
        multipart_threshold_bytes: blobs at least this large are uploaded in parts; default 8 MiB.
        multipart_chunk_bytes: size of each part, in bytes (S3's minimum is 5 MiB); default 8 MiB.
        client: a ready boto3 S3 client (the other connection arguments are then ignored).
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        prefix: str = "",
        multipart_threshold_bytes: int = 8 * 1024 * 1024,
        multipart_chunk_bytes: int = 8 * 1024 * 1024,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=botocore.config.Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                retries={"mode": "standard", "max_attempts": 3},
            ),
        )
        self.transfer_config = TransferConfig(multipart_threshold=multipart_threshold_bytes, multipart_chunksize=multipart_chunk_bytes)

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _object_key(self, key: str) -> str:
        return self.prefix + base.validate_key(key)

    # -- writes ----------------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:  # noqa: D102
        reader = _ChunkReader(chunks)
        with _translated(key):
            self.client.upload_fileobj(reader, self.bucket, self._object_key(key), Config=self.transfer_config)
        return reader.consumed

    def put_file(self, key: str, path: Path) -> int:
        """Upload a local file (multipart and parallel above the threshold); see :meth:`Storage.put_file`."""
        object_key = self._object_key(key)
        size = Path(path).stat().st_size  # FileNotFoundError before any request
        with _translated(key):
            self.client.upload_file(str(path), self.bucket, object_key, Config=self.transfer_config)
        return size

    # -- reads -----------------------------------------------------------------------------

    def open_stream(  # noqa: D102
        self, key: str, chunk_size: int = base.DEFAULT_CHUNK_SIZE, start: int = 0, end: int | None = None
    ) -> Iterator[bytes]:
        object_key = self._object_key(key)
        base.check_range(chunk_size, start, end)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = self.client.get_object(**request)
        except botocore.exceptions.ClientError as exc:
            if _code(exc) == "InvalidRange":  # starts at or past the end: nothing to read
                return iter(())
            raise _translate(exc, key) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise errors.StorageError(f"cannot read blob {key!r}: {exc}", retryable=True) from exc
        return _iter_body(response["Body"], chunk_size, key)

    def size(self, key: str) -> int:  # noqa: D102
        with _translated(key):
            return int(self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))["ContentLength"])

    def get_to_file(self, key: str, path: Path) -> int:
        """Download with boto3's managed (ranged, parallel) transfer; see :meth:`Storage.get_to_file`."""
        object_key = self._object_key(key)
        try:
            with _translated(key):
                self.client.download_file(self.bucket, object_key, str(path), Config=self.transfer_config)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        return Path(path).stat().st_size

    # -- deletes ---------------------------------------------------------------------------

    def delete(self, key: str) -> None:  # noqa: D102
        with _translated(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def delete_prefix(self, prefix: str) -> int:  # noqa: D102
        base.validate_prefix(prefix)
        removed = 0
        with _translated(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            batch: list[dict[str, str]] = []
            for page in pages:
                for item in page.get("Contents", []):
                    batch.append({"Key": item["Key"]})
                    if len(batch) == _DELETE_BATCH:
                        removed += self._delete_objects(batch)
                        batch = []
            if batch:
                removed += self._delete_objects(batch)
        return removed

    def list_blobs(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[base.BlobInfo]:
        """List objects under ``prefix`` (``ListObjectsV2`` with ``StartAfter``); see :meth:`Storage.list_blobs`."""
        base.validate_prefix(prefix)
        if limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix, "PaginationConfig": {"MaxItems": limit}}
        if start_after is not None:
            request["StartAfter"] = self.prefix + start_after
        listed = []
        with _translated(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(**request):
                for item in page.get("Contents", []):
                    modified = item["LastModified"]
                    listed.append(base.BlobInfo(item["Key"][len(self.prefix) :], int(item["Size"]), modified.astimezone(dt.UTC)))
        return listed[:limit]

    def _delete_objects(self, batch: list[dict[str, str]]) -> int:
        response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        failed = response.get("Errors", [])
        if failed:
            raise errors.StorageError(f"could not delete {len(failed)} objects, e.g. {failed[0].get('Key')!r}: {failed[0].get('Message')}")
        return len(batch)

    # -- signed URLs -----------------------------------------------------------------------

    def signed_url(self, key: str, expires_in_s: int) -> str:
        """A presigned GET URL of the blob, valid for ``expires_in_s`` seconds (S3 allows up to 7 days).

        The blob is not checked; a URL for a missing key answers 404 when used.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        params = {"Bucket": self.bucket, "Key": self._object_key(key)}
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(expires_in_s)))

    def upload_url(self, key: str, expires_in_s: int) -> str:
        """A presigned PUT URL that stores the request body under ``key``, valid for ``expires_in_s`` seconds.

        Raises:
            errors.InvalidStorageKey: If ``key`` is not valid.
        """
        params = {"Bucket": self.bucket, "Key": self._object_key(key)}
        return str(self.client.generate_presigned_url("put_object", Params=params, ExpiresIn=int(expires_in_s)))


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (what ``upload_fileobj`` consumes)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Fill the whole buffer (unlike a raw read): boto3 decides single PUT vs multipart
        # by whether read(threshold) comes back full.
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._pending:
                try:
                    self._pending = bytes(next(self._chunks))
                except StopIteration:
                    break
                continue
            size = min(len(view) - filled, len(self._pending))
            view[filled : filled + size] = self._pending[:size]
            self._pending = self._pending[size:]
            filled += size
        self.consumed += filled
        return filled


def _iter_body(body: Any, chunk_size: int, key: str) -> Iterator[bytes]:
    try:
        for chunk in body.iter_chunks(chunk_size):
            if chunk:
                yield chunk
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise errors.StorageError(f"reading blob {key!r} failed: {exc}", retryable=True) from exc
    finally:
        body.close()


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


#: S3 error codes that mean "try again later" (AWS S3 error responses; R2 and MinIO use the same).
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "RequestTimeTooSkewed"})


def _translate(exc: botocore.exceptions.ClientError, key: str) -> errors.StorageError:
    if _code(exc) in _NOT_FOUND:
        return errors.BlobNotFound(key)
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    transient = _code(exc) in _TRANSIENT_CODES or status >= 500
    return errors.StorageError(f"S3 refused the request for {key!r}: {exc}", retryable=transient)


@contextlib.contextmanager
def _translated(key: str) -> Iterator[None]:
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        raise _translate(exc, key) from exc
    except botocore.exceptions.BotoCoreError as exc:  # could not connect, timed out, the connection dropped
        raise errors.StorageError(f"S3 request for {key!r} failed: {exc}", retryable=True) from exc
