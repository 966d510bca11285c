"""The keyed pieces of tamper evidence, pure: key parsing, checkpoints, the export trailer, the chain walk."""

from __future__ import annotations

import hashlib
import hmac
import io
from pathlib import Path

import msgspec
import pytest
from configs import TABLES  # tests/ is on sys.path

from jobtape import errors
from jobtape.audit import checkpoint, exchange, logcheck, transfer
from jobtape.eventlog import events as ev
from jobtape.eventlog import hashing, logkey
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore

__all__: list[str] = []

KEYS = LogKeys.from_secret(b"a" * 40)


def test_keys_need_32_bytes_and_parse_from_an_id_key_list() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        LogKeys.from_secret(b"short")
    older = logkey.parse_key_list("old1:" + "b" * 32 + ", old2:" + "c" * 32)
    keys = LogKeys.from_secret(b"a" * 40, "new", older)
    assert keys.ids == ["new", "old1", "old2"] and keys.get("old2") == b"c" * 32 and keys.get("x") is None
    assert "aaaa" not in repr(keys)  # the key never shows in a repr
    with pytest.raises(ValueError, match="id:key"):
        logkey.parse_key_list("nocolon")


def test_a_checkpoint_verifies_only_unedited_and_under_a_key_held() -> None:
    made = checkpoint.make_checkpoint(KEYS, position=12, chain="c" * 64, at="2026-01-01T00:00:00.000000Z")
    line = checkpoint.encode_checkpoint(made)
    assert checkpoint.decode_checkpoint(line, KEYS) == made
    edited = line.replace('"position":12', '"position":11')
    with pytest.raises(checkpoint.CheckpointError, match="does not verify"):
        checkpoint.decode_checkpoint(edited, KEYS)
    with pytest.raises(checkpoint.CheckpointError, match="does not hold"):
        checkpoint.decode_checkpoint(line, LogKeys.from_secret(b"z" * 40))
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint"):
        checkpoint.decode_checkpoint("{}", KEYS)


def _export(tmp_path: Path) -> tuple[EventStore, list[str]]:
    backend = SQLiteBackend(tmp_path / "log.db")
    backend.migrate(TABLES.migrations)
    store = EventStore(backend, keys=KEYS)
    for job_id in ("a" * 32, "b" * 32):
        store.append(job_id, [ev.JobCreated(job_type="ingest")], 0, actor="api")
        store.append(job_id, [ev.JobClaimed(worker_id="w"), ev.JobCompleted(result={})], 1, actor="w")
    out = io.StringIO()
    transfer.export(store, out, None)
    return store, out.getvalue().splitlines()


def test_the_keyed_trailer_refuses_removed_added_and_forged_lines(tmp_path: Path) -> None:
    store, lines = _export(tmp_path)
    store.close()
    assert len(exchange.check_export(lines)) == 6  # unkeyed: the trailer is skipped
    assert len(list(exchange.check_lines(lines, keys=KEYS))) == 6
    last_of_a = max(i for i, line in enumerate(lines) if '"jobId":"' + "a" * 32 in line)
    with pytest.raises(errors.InvalidExport, match="lines were removed"):
        list(exchange.check_lines(lines[:last_of_a] + lines[last_of_a + 1 :], keys=KEYS))
    with pytest.raises(errors.InvalidExport, match="no keyed trailer"):
        list(exchange.check_lines(lines[:-1], keys=KEYS))
    trailer = msgspec.json.decode(lines[-1])
    trailer["exportTrailer"]["events"] = 5
    with pytest.raises(errors.InvalidExport, match="trailer MAC does not verify"):
        list(exchange.check_lines([*lines[:last_of_a], *lines[last_of_a + 1 : -1], msgspec.json.encode(trailer).decode()], keys=KEYS))
    with pytest.raises(errors.InvalidExport, match="does not hold"):
        list(exchange.check_lines(lines, keys=LogKeys.from_secret(b"z" * 40)))


def test_verify_walks_the_chain_and_a_checkpoint_of_the_head(tmp_path: Path) -> None:
    store, _ = _export(tmp_path)
    try:
        made = logcheck.make_checkpoint(store)
        assert made.position == 6
        report = logcheck.verify_store(store, made)
        assert report.violations == [] and report.chain.startswith("keyed: 6 events")
        ahead = checkpoint.make_checkpoint(KEYS, position=9, chain="d" * 64, at=made.at)
        assert [v.rule for v in logcheck.verify_store(store, ahead).violations] == ["checkpoint"]
        unkeyed = EventStore(store.backend, keys=None)
        assert logcheck.verify_store(unkeyed).chain.startswith("unkeyed")
        with pytest.raises(errors.LogKeyError, match="without its log key"):
            unkeyed.append("c" * 32, [ev.JobCreated(job_type="ingest")], 0, actor="api")
    finally:
        store.close()


@pytest.mark.parametrize(
    "key",
    [b"a" * 32, b"a" * 40, bytes(range(64)), bytes(range(65)), b"\xff" * 100, b"k" * 200, b"\x00" * 33],
    ids=["32", "40", "64-block", "65-hashed-first", "100-hashed-first", "200-hashed-first", "zeros"],
)
def test_chain_link_is_hmac_sha256_of_the_link_text(key: bytes) -> None:
    # chain_link computes HMAC from two precomputed sha256 states; it must equal hmac.new's
    # (keys longer than sha256's 64-byte block are hashed first by HMAC)
    for previous, position, key_id, event_hash in (
        (hashing.GENESIS_CHAIN, 1, "k1", "e" * 64),
        ("f" * 64, 123456789, "key-é", None),
        ("0" * 64, 2**62, "", "1" * 64),
    ):
        text = "\x1f".join(("jobtape-chain", previous, str(position), key_id, event_hash or ""))
        expected = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
        assert hashing.chain_link(key, key_id, previous, position, event_hash) == expected
        assert hashing.chain_link(key, key_id, previous, position, event_hash) == expected  # the kept states, unchanged by a link
