"""Contract tests for every ``Storage`` backend, plus key validation and local specifics."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtape import errors, storage
from jobtape.storage import base

__all__: list[str] = []


@pytest.fixture(params=["memory", "local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> storage.Storage:
    if request.param == "memory":
        return storage.MemoryStorage()
    if request.param == "s3":  # a real S3 API: moto's server over HTTP (tests/conftest.py)
        made: storage.Storage = request.getfixturevalue("s3_storage")
        return made
    return storage.LocalStorage(tmp_path / "blobs")


def _payload(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


class Boom(RuntimeError):
    pass


def _failing_chunks() -> Iterator[bytes]:
    yield b"first chunk"
    yield b"second chunk"
    raise Boom("network dropped")


# --- key validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a", "jobs/01HX/source.mp3", "a/b/c.d", "with space/é.flac", ".hidden", "a/..b", "x" * 1024],
)
def test_valid_keys(key: str) -> None:
    assert storage.validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a\\b", "backslash"),
        ("..", "'..'"),
        ("../x", "'..'"),
        ("a/../b", "'..'"),
        ("a/./b", "'.'"),
        (".", "'.'"),
        ("a//b", "empty path segment"),
        ("a/", "trailing slash"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\x7fb", "control"),
        ("x" * 1025, "1024"),
        ("é" * 513, "1024"),
    ],
)
def test_invalid_keys(key: str, reason: str) -> None:
    with pytest.raises(errors.InvalidStorageKey, match=reason) as info:
        storage.validate_key(key)
    assert info.value.key == key
    assert isinstance(info.value, errors.StorageError)


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", ""])
def test_every_method_validates_keys(store: storage.Storage, key: str, tmp_path: Path) -> None:
    calls = [
        lambda: store.put_stream(key, [b"x"]),
        lambda: store.put_new(key, b"x"),
        lambda: store.put_file(key, tmp_path / "missing"),
        lambda: store.open_stream(key),
        lambda: store.get_to_file(key, tmp_path / "out"),
        lambda: store.size(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.local_path(key),
    ]
    for call in calls:
        with pytest.raises(errors.InvalidStorageKey):
            call()


# --- contract ---------------------------------------------------------------------------


def test_put_then_read_back(store: storage.Storage) -> None:
    data = _payload(200_000)
    chunks = [data[i : i + 7000] for i in range(0, len(data), 7000)]
    assert store.put_stream("jobs/1/source.bin", iter(chunks)) == len(data)
    assert store.exists("jobs/1/source.bin")
    assert store.size("jobs/1/source.bin") == len(data)
    read = list(store.open_stream("jobs/1/source.bin", chunk_size=65536))
    assert b"".join(read) == data
    assert all(0 < len(chunk) <= 65536 for chunk in read)


def test_empty_blob(store: storage.Storage) -> None:
    assert store.put_stream("empty", [b"", b""]) == 0
    assert store.exists("empty")
    assert store.size("empty") == 0
    assert list(store.open_stream("empty")) == []


def test_put_replaces(store: storage.Storage) -> None:
    store.put_stream("k", [b"old content"])
    store.put_stream("k", [b"new"])
    assert b"".join(store.open_stream("k")) == b"new"


def test_missing_blob(store: storage.Storage, tmp_path: Path) -> None:
    assert not store.exists("nope")
    with pytest.raises(errors.BlobNotFound) as info:
        store.size("nope")
    assert info.value.key == "nope"
    with pytest.raises(errors.BlobNotFound):
        store.open_stream("nope")  # raised eagerly, before iteration
    with pytest.raises(errors.BlobNotFound):
        store.get_to_file("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_delete_is_idempotent(store: storage.Storage) -> None:
    store.put_stream("a/b", [b"x"])
    store.delete("a/b")
    assert not store.exists("a/b")
    store.delete("a/b")
    store.delete("never/existed")


def test_delete_prefix(store: storage.Storage) -> None:
    for key in ["jobs/abc/source", "jobs/abc/out/final.flac", "jobs/abcd/source", "jobs/xyz/source", "other"]:
        store.put_stream(key, [b"x"])
    assert store.delete_prefix("jobs/abc/") == 2
    assert not store.exists("jobs/abc/source")
    assert store.exists("jobs/abcd/source")
    assert store.delete_prefix("jobs/ab") == 1
    assert store.exists("jobs/xyz/source")
    assert store.delete_prefix("jobs/") == 1
    assert store.delete_prefix("jobs/") == 0
    assert store.exists("other")
    with pytest.raises(errors.InvalidStorageKey):
        store.delete_prefix("../")


def test_failed_stream_leaves_nothing(store: storage.Storage) -> None:
    with pytest.raises(Boom):
        store.put_stream("jobs/1/upload", _failing_chunks())
    assert not store.exists("jobs/1/upload")


def test_failed_stream_keeps_previous_content(store: storage.Storage) -> None:
    store.put_stream("k", [b"previous"])
    with pytest.raises(Boom):
        store.put_stream("k", _failing_chunks())
    assert b"".join(store.open_stream("k")) == b"previous"


def test_put_stream_consumes_lazily(store: storage.Storage) -> None:
    """Chunks are pulled one by one, so a huge generator never sits in a list."""
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for index in range(5):
            pulled.append(index)
            yield bytes([index]) * 1000

    assert store.put_stream("lazy", chunks()) == 5000
    assert pulled == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, None, slice(0, 1000)),
        (0, 0, slice(0, 1)),
        (10, 19, slice(10, 20)),
        (990, None, slice(990, 1000)),
        (500, 5000, slice(500, 1000)),
        (999, 999, slice(999, 1000)),
        (1000, None, slice(0, 0)),
        (2000, 3000, slice(0, 0)),
    ],
)
def test_ranges(store: storage.Storage, start: int, end: int | None, expected: slice) -> None:
    data = _payload(1000)
    store.put_stream("r", [data])
    chunks = list(store.open_stream("r", chunk_size=64, start=start, end=end))
    assert b"".join(chunks) == data[expected]
    assert all(0 < len(chunk) <= 64 for chunk in chunks)


@pytest.mark.parametrize(("chunk_size", "start", "end"), [(0, 0, None), (10, -1, None), (10, 5, 4)])
def test_bad_range_arguments(store: storage.Storage, chunk_size: int, start: int, end: int | None) -> None:
    store.put_stream("r", [b"abcdef"])
    with pytest.raises(ValueError):
        store.open_stream("r", chunk_size=chunk_size, start=start, end=end)


def test_file_round_trip(store: storage.Storage, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(_payload(150_000))
    assert store.put_file("f/in.bin", source) == 150_000
    target = tmp_path / "out.bin"
    target.write_bytes(b"stale content that must be truncated" * 10_000)
    assert store.get_to_file("f/in.bin", target) == 150_000
    assert target.read_bytes() == source.read_bytes()


def test_move_file_stores_the_file_and_gives_it_up(store: storage.Storage, tmp_path: Path) -> None:
    source = tmp_path / "spooled.part"
    source.write_bytes(_payload(70_000))
    assert store.move_file("f/moved.bin", source) == 70_000
    assert not source.exists()
    assert b"".join(store.open_stream("f/moved.bin")) == _payload(70_000)


def test_move_file_of_a_missing_file_stores_nothing(store: storage.Storage, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.move_file("f/none.bin", tmp_path / "missing")
    assert not store.exists("f/none.bin")


def test_local_move_file_renames_the_file_into_place_with_the_storage_mode(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path / "blobs", file_mode=0o640)
    source = tmp_path / "spooled.part"
    source.write_bytes(b"audio bytes")
    source.chmod(0o600)
    inode = source.stat().st_ino
    store.move_file("ingest-uploads/j/source.wav", source)
    stored = store.local_path("ingest-uploads/j/source.wav")
    assert stored is not None
    assert stored.stat().st_ino == inode  # the same file: the bytes were not written a second time
    assert stored.stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (tmpfs), a file system other than the tests' tmp_path")
def test_local_move_file_across_file_systems_copies(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path / "blobs")
    source = Path("/dev/shm") / f"jobtape-test-{os.getpid()}-{tmp_path.name}.part"
    source.write_bytes(b"from another file system")
    if os.stat(source).st_dev == os.stat(tmp_path).st_dev:
        source.unlink()
        pytest.skip("/dev/shm is on the same file system as tmp_path here")
    assert store.move_file("k/x.bin", source) == len(b"from another file system")
    assert not source.exists()
    assert b"".join(store.open_stream("k/x.bin")) == b"from another file system"


def test_put_new_stores_a_new_key(store: storage.Storage) -> None:
    assert store.put_new("ingest-uploads/j1.wav", _payload(20_000)) == 20_000
    assert b"".join(store.open_stream("ingest-uploads/j1.wav")) == _payload(20_000)
    assert store.size("ingest-uploads/j1.wav") == 20_000


def test_local_put_new_writes_the_final_file_in_place_with_the_storage_mode(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path / "blobs", file_mode=0o640)
    store.put_new("ingest-uploads/j1.wav", b"audio bytes")  # the folder is made on the first write
    stored = tmp_path / "blobs" / "ingest-uploads" / "j1.wav"
    assert stored.read_bytes() == b"audio bytes"
    assert stored.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "blobs" / "ingest-uploads").stat().st_mode & 0o777 == 0o750
    assert not (tmp_path / "blobs" / ".tmp").exists()  # no temporary file, no rename
    store.delete("ingest-uploads/j1.wav")  # prunes the emptied folder; the next write makes it again
    assert not (tmp_path / "blobs" / "ingest-uploads").exists()
    store.put_new("ingest-uploads/j2.wav", b"more")
    assert store.size("ingest-uploads/j2.wav") == 4


def test_local_put_new_refuses_an_existing_key_and_leaves_it(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path)
    store.put_stream("ingest-uploads/j1.wav", [b"first"])
    with pytest.raises(errors.StorageError, match="cannot write blob"):
        store.put_new("ingest-uploads/j1.wav", b"second")
    assert b"".join(store.open_stream("ingest-uploads/j1.wav")) == b"first"
    store.put_stream("blob", [b"a file"])
    with pytest.raises(errors.StorageError):  # a parent that is a blob: no folder can be made
        store.put_new("blob/child.wav", b"x")
    assert b"".join(store.open_stream("blob")) == b"a file"


def test_stores_are_independent(tmp_path: Path) -> None:
    first, second = storage.MemoryStorage(), storage.MemoryStorage()
    first.put_stream("k", [b"x"])
    assert not second.exists("k")


# --- backend specifics ------------------------------------------------------------------


def test_memory_has_no_local_path() -> None:
    store = storage.MemoryStorage()
    store.put_stream("k", [b"x"])
    assert store.local_path("k") is None
    assert store.keys() == ["k"]
    store.reset()
    assert store.keys() == []


def test_local_layout_and_local_path(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path)
    store.put_stream("jobs/1/source.mp3", [b"abc"])
    path = store.local_path("jobs/1/source.mp3")
    assert path == tmp_path / "jobs" / "1" / "source.mp3"
    assert path is not None and path.read_bytes() == b"abc"


def test_local_failed_stream_leaves_no_temp_file(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path)
    with pytest.raises(Boom):
        store.put_stream("jobs/1/upload", _failing_chunks())
    assert not (tmp_path / "jobs").exists()
    temp_dir = tmp_path / ".tmp"
    assert not temp_dir.exists() or os.listdir(temp_dir) == []


def test_local_write_goes_through_temp_dir(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path)
    seen: list[list[str]] = []

    def chunks() -> Iterator[bytes]:
        yield b"part one"
        # Mid-write: the target is not visible yet, the bytes sit in .tmp/.
        assert not (tmp_path / "k").exists()
        seen.append(os.listdir(tmp_path / ".tmp"))
        yield b"part two"

    store.put_stream("k", chunks())
    assert len(seen[0]) == 1
    assert os.listdir(tmp_path / ".tmp") == []
    assert (tmp_path / "k").read_bytes() == b"part onepart two"


def test_local_delete_prunes_empty_parents(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path / "root")
    store.put_stream("jobs/1/a/b/blob", [b"x"])
    store.put_stream("jobs/2/blob", [b"x"])
    store.delete("jobs/1/a/b/blob")
    assert not (tmp_path / "root" / "jobs" / "1").exists()
    assert (tmp_path / "root" / "jobs" / "2").is_dir()
    store.delete_prefix("jobs/2/")
    assert not (tmp_path / "root" / "jobs").exists()
    assert (tmp_path / "root").is_dir()


def test_local_reserves_temp_dir_and_hides_it(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path)
    with pytest.raises(errors.InvalidStorageKey):
        store.put_stream(".tmp/x", [b"x"])
    store.put_stream("k", [b"x"])
    assert store.delete_prefix(".t") == 0
    assert (tmp_path / ".tmp").is_dir()


def test_local_folder_is_not_a_blob(tmp_path: Path) -> None:
    store = storage.LocalStorage(tmp_path)
    store.put_stream("a/b", [b"x"])
    assert not store.exists("a")
    with pytest.raises(errors.BlobNotFound):
        store.open_stream("a")
    with pytest.raises(errors.StorageError):
        store.put_stream("a/b/c", [b"x"])
    assert os.listdir(tmp_path / ".tmp") == []


def test_public_surface() -> None:
    assert sorted(storage.__all__) == ["LocalStorage", "MemoryStorage", "Storage", "validate_key"]
    assert issubclass(storage.LocalStorage, base.Storage)
    assert issubclass(storage.MemoryStorage, base.Storage)


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("SlowDown", 503, True),
        ("InternalError", 500, True),
        ("RequestTimeout", 400, True),
        ("Weird", 502, True),
        ("AccessDenied", 403, False),
        ("NoSuchBucket", 404, False),
        ("InvalidAccessKeyId", 403, False),
    ],
)
def test_s3_errors_say_whether_a_retry_may_help(code: str, status: int, retryable: bool) -> None:
    import botocore.exceptions

    from jobtape.storage import s3

    refused = botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )
    translated = s3._translate(refused, "assets/a/prepared.flac")
    assert type(translated) is errors.StorageError and translated.retryable is retryable
    assert errors.BlobNotFound("k").retryable is False


def test_an_unreachable_s3_endpoint_is_a_retryable_storage_error(tmp_path: Path) -> None:
    from jobtape.storage.s3 import S3Storage

    unreachable = S3Storage(
        "b", endpoint_url="http://127.0.0.1:9", region="us-east-1", access_key_id="x", secret_access_key="y"
    )  # nothing listens on the discard port
    with pytest.raises(errors.StorageError) as caught:
        unreachable.get_to_file("assets/a/prepared.flac", tmp_path / "out")
    assert caught.value.retryable is True and "Could not connect" in caught.value.message


def test_list_blobs_pages_in_key_order_with_sizes_and_write_times(store: storage.Storage) -> None:
    from jobtape import clock

    before = clock.utcnow() - dt.timedelta(minutes=5)  # S3 keeps whole seconds; a local file's mtime may lag the clock a little
    for key in ("ups/b.wav", "ups/a/original.mp3", "ups/c", "upsx/d", "other/e"):
        store.put_stream(key, [key.encode()])
    listed = store.list_blobs("ups/")
    assert [(b.key, b.size) for b in listed] == [("ups/a/original.mp3", 18), ("ups/b.wav", 9), ("ups/c", 5)]
    assert all(before <= b.modified <= clock.utcnow() + dt.timedelta(minutes=5) and b.modified.tzinfo is not None for b in listed)
    first = store.list_blobs("ups/", limit=2)
    assert [b.key for b in first] == ["ups/a/original.mp3", "ups/b.wav"]
    assert [b.key for b in store.list_blobs("ups/", start_after=first[-1].key, limit=2)] == ["ups/c"]
    assert [b.key for b in store.list_blobs("ups")] == ["ups/a/original.mp3", "ups/b.wav", "ups/c", "upsx/d"]
    assert store.list_blobs("none/") == []
