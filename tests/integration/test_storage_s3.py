"""S3Storage against a real S3 API over HTTP (moto's standalone server on 127.0.0.1).

The storage contract itself runs on S3 in tests/unit/test_storage.py; these are the
S3-specific behaviours: multipart uploads, presigned GET/PUT used by a plain HTTP client,
expiry, credentials, and the translation of S3 failures.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import httpx
import pytest
from freezegun import freeze_time

from jobtape import errors
from jobtape.config import Settings
from jobtape.storage.s3 import S3Storage

__all__: list[str] = []

MIB = 1024 * 1024


def _etag(storage: S3Storage, key: str) -> str:
    return str(storage.client.head_object(Bucket=storage.bucket, Key=key)["ETag"]).strip('"')


def test_large_file_goes_up_in_parts_and_comes_back_whole(s3_storage: S3Storage, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(12 * MIB + 123))
    assert s3_storage.put_file("assets/big.bin", source) == 12 * MIB + 123
    assert _etag(s3_storage, "assets/big.bin").endswith("-3")  # 3 parts of 5 MiB: a multipart upload
    target = tmp_path / "back.bin"
    assert s3_storage.get_to_file("assets/big.bin", target) == source.stat().st_size
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()


def test_large_stream_goes_up_in_parts_and_reads_back_in_ranges(s3_storage: S3Storage) -> None:
    data = os.urandom(11 * MIB)
    chunks = (data[i : i + MIB] for i in range(0, len(data), MIB))
    assert s3_storage.put_stream("s/big", chunks) == len(data)
    assert _etag(s3_storage, "s/big").endswith("-3")
    assert hashlib.sha256(b"".join(s3_storage.open_stream("s/big"))).digest() == hashlib.sha256(data).digest()
    assert b"".join(s3_storage.open_stream("s/big", start=6 * MIB, end=6 * MIB + 9)) == data[6 * MIB : 6 * MIB + 10]
    assert s3_storage.size("s/big") == len(data)


def test_a_failing_multipart_stream_leaves_no_object_and_no_upload(s3_storage: S3Storage) -> None:
    def chunks() -> object:
        for _ in range(7):
            yield os.urandom(MIB)
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        s3_storage.put_stream("s/partial", chunks())  # type: ignore[arg-type]
    assert not s3_storage.exists("s/partial")
    assert s3_storage.client.list_multipart_uploads(Bucket=s3_storage.bucket).get("Uploads", []) == []


def test_presigned_get_serves_the_blob_and_ranges_to_a_plain_client(s3_storage: S3Storage) -> None:
    s3_storage.put_stream("previews/p.mp3", [b"ID3" + bytes(range(256)) * 4])
    url = s3_storage.signed_url("previews/p.mp3", 7 * 24 * 3600)
    assert "X-Amz-Expires=604800" in url
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"ID3" + bytes(range(256)) * 4
    partial = httpx.get(url, headers={"Range": "bytes=0-2"})
    assert (partial.status_code, partial.content) == (206, b"ID3")


def test_presigned_put_stores_the_body(s3_storage: S3Storage) -> None:
    url = s3_storage.upload_url("direct-uploads/abc/original.wav", 3600)
    assert "X-Amz-Expires=3600" in url
    response = httpx.put(url, content=b"RIFF....WAVE")
    assert response.status_code == 200, response.text
    assert b"".join(s3_storage.open_stream("direct-uploads/abc/original.wav")) == b"RIFF....WAVE"


def test_presigned_urls_carry_their_expiry(s3_storage: S3Storage) -> None:
    # moto's server does not check presigned signatures or expiry (S3 and R2 do), so this
    # checks what the URL asks for: signed at the frozen time, for the requested lifetime.
    with freeze_time("2020-01-01 00:00:00"):
        get_url = httpx.URL(s3_storage.signed_url("k", 7 * 24 * 3600))
        put_url = httpx.URL(s3_storage.upload_url("k", 3600))
    for url, expires in ((get_url, "604800"), (put_url, "3600")):
        assert url.params["X-Amz-Date"] == "20200101T000000Z"
        assert url.params["X-Amz-Expires"] == expires
        assert url.params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"


def test_missing_bucket_and_dead_endpoint_are_storage_errors(s3_endpoint: str) -> None:
    missing = S3Storage(
        "no-such-bucket", endpoint_url=s3_endpoint, region="us-east-1", access_key_id="testing", secret_access_key="testing"
    )
    with pytest.raises(errors.StorageError, match="NoSuchBucket"):
        missing.put_stream("k", [b"x"])
    dead = S3Storage("b", endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key_id="testing", secret_access_key="testing")
    dead.client.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(errors.StorageError):
        dead.size("k")


def test_prefix_is_applied_to_every_key(s3_storage: S3Storage) -> None:
    prefixed = S3Storage(s3_storage.bucket, client=s3_storage.client, prefix="tenant-a/")
    prefixed.put_stream("x/y", [b"1"])
    assert s3_storage.exists("tenant-a/x/y")
    assert prefixed.delete_prefix("x/") == 1
    assert not s3_storage.exists("tenant-a/x/y")


def test_settings_for_r2_name_the_account_endpoint() -> None:
    settings = Settings.from_env(
        {"STORAGE_BACKEND": "r2", "R2_ACCOUNT_ID": "acc", "R2_BUCKET": "media", "R2_ACCESS_KEY_ID": "id", "R2_SECRET_ACCESS_KEY": "secret"}
    )
    assert (settings.storage_backend, settings.s3_bucket, settings.s3_region) == ("r2", "media", "auto")
    assert settings.s3_endpoint_url == "https://acc.r2.cloudflarestorage.com"
    assert "secret" not in repr(settings)


def test_runtime_opens_s3_storage_from_settings(s3_storage: S3Storage, s3_endpoint: str) -> None:
    from jobtape import runtime

    settings = Settings.from_env(
        {
            "STORAGE_BACKEND": "s3",
            "S3_BUCKET": s3_storage.bucket,
            "S3_ENDPOINT_URL": s3_endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
    )
    opened = runtime.open_storage(settings)
    assert isinstance(opened, S3Storage)
    opened.put_stream("via/runtime", [b"ok"])
    assert b"".join(s3_storage.open_stream("via/runtime")) == b"ok"


def test_hundreds_of_blob_round_trips_hold_no_more_connections(s3_storage: S3Storage, tmp_path: Path) -> None:
    # Issue 9: one boto3 client per storage, its HTTP pool bounded (10 connections), so a
    # worker storing and fetching thousands of files keeps its descriptors flat. The moto
    # server runs in this process, so its side of each connection is counted too.
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(64 * 1024))

    def round_trip(n: int) -> None:
        key = f"assets/{n}/prepared.flac"
        s3_storage.put_file(key, source)
        s3_storage.get_to_file(key, tmp_path / "out.bin")
        assert s3_storage.exists(key) and s3_storage.signed_url(key, 60)
        s3_storage.delete(key)

    for n in range(20):  # warm-up: the pool opens its connections
        round_trip(n)
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for n in range(20, 170):
        round_trip(n)
    assert len(os.listdir("/proc/self/fd")) - fds <= 4
    assert threading.active_count() - threads <= 4
