"""Schema of the event log and its projections, as ordered migrations (sqlite-utils).

Each migration is a function over a :class:`sqlite_utils.Database`. The SQLite backend
applies the ones not yet recorded in ``_jobtape_migrations``; a remote libSQL backend
applies them to an in-memory database and runs the resulting ``sqlite_master`` SQL
(:mod:`jobtape.eventlog.ddl`), so both run the same DDL.

The ``events`` table is append-only: triggers abort any UPDATE or DELETE, and a BEFORE
INSERT trigger keeps each stream's versions gapless (the optimistic-concurrency guard
lives in the database, not in Python).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import sqlite_utils

__all__ = ["MIGRATIONS", "Migration", "MigrationStep", "as_migration", "migrate"]

#: A migration's body: DDL (and data fixes) over a :class:`sqlite_utils.Database`.
MigrationStep = Callable[[sqlite_utils.Database], None]


class Migration(NamedTuple):
    """One named schema change.

    Attributes:
        name: recorded in ``_jobtape_migrations`` once applied; unique across the engine and
            every package (prefix a package's names, e.g. ``audio.0001_assets_previews``).
        step: the change.
        replaces: older names under which this change (or a larger one containing it) may
            already be recorded: a database where any of them is recorded skips this one.
            This is how a shipped migration is split between the engine and a package
            without re-running it on an existing database.
        data: SQL statements (no parameters) run after ``step`` in the same transaction:
            a fill of existing rows (a backfill). Kept apart from ``step`` because a remote
            libSQL database gets a migration as the DDL its step produces on an empty
            in-memory database (:mod:`jobtape.eventlog.ddl`), which carries no data
            change; both backends run these statements after that DDL.
    """

    name: str
    step: MigrationStep
    replaces: tuple[str, ...] = ()
    data: tuple[str, ...] = ()


def as_migration(item: Migration | tuple[str, MigrationStep]) -> Migration:
    """``item`` as a :class:`Migration` (a plain ``(name, step)`` pair replaces nothing)."""
    return item if isinstance(item, Migration) else Migration(item[0], item[1])


def _events(db: sqlite_utils.Database) -> None:
    # sqlite-utils cannot declare AUTOINCREMENT; it keeps positions from being reused
    # after the newest event is removed by an archive (issue: retention).
    db.execute(
        """
        CREATE TABLE events (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            version INTEGER NOT NULL CHECK (version >= 1),
            type TEXT NOT NULL,
            data TEXT NOT NULL,
            actor TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            UNIQUE (job_id, version)
        )
        """
    )
    db.execute(
        """
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed'); END
        """
    )
    db.execute(
        """
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed'); END
        """
    )
    db.execute(
        """
        CREATE TRIGGER events_gapless_version BEFORE INSERT ON events
        WHEN NEW.version != 1 + COALESCE(
            (SELECT MAX(version) FROM events WHERE job_id = NEW.job_id), 0)
        BEGIN SELECT RAISE(ABORT, 'version conflict: the stream moved on'); END
        """
    )
    db.table("events").create_index(["type", "position"], index_name="events_type_position")


def _jobs(db: sqlite_utils.Database) -> None:
    db.table("jobs").create(
        {
            "job_id": str,
            "job_type": str,
            "owner": str,
            "idempotency_key": str,
            "status": str,
            "stage": str,
            "progress": int,
            "attempt": int,
            "worker_id": str,
            "lease_expires_at": str,
            "result": str,
            "error": str,
            "cancel_requested": int,
            "finished": int,
            "created_at": str,
            "updated_at": str,
            "created_position": int,
            "last_version": int,
            "last_position": int,
            "state": str,
        },
        pk="job_id",
        not_null={
            "job_type",
            "owner",
            "status",
            "progress",
            "attempt",
            "created_at",
            "updated_at",
            "created_position",
            "last_version",
            "last_position",
            "state",
        },
    )
    # Claims read pending jobs in created order (queue position did too before 0010_queue_counts).
    db.table("jobs").create_index(["status", "created_position"], index_name="jobs_status_created")
    db.execute("CREATE UNIQUE INDEX jobs_owner_idempotency ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL")
    db.table("jobs").create_index(["owner", "status"], index_name="jobs_owner_status")


def _leases_and_hashes(db: sqlite_utils.Database) -> None:
    # Retry backoff: a pending job is not claimed before not_before (UTC text, sortable).
    db["jobs"].add_column("not_before", str)  # type: ignore[union-attr]
    # Tamper evidence: sha256 over each event's content and the previous event's hash in
    # its stream (jobtape.eventlog.hashing); NULL only for events written before 0003.
    db["events"].add_column("hash", str)  # type: ignore[union-attr]


def _archives(db: sqlite_utils.Database) -> None:
    # Retention (jobtape.audit.retention): the one recorded path that removes events.
    # An archive inserts its `archives` row, one `archived_jobs` row per job and the
    # DELETEs in ONE batch; events_no_delete lets a DELETE through only for a job listed
    # in archived_jobs up to that position, so every removal is on record.
    db.execute(
        """
        CREATE TABLE archives (
            archive_id TEXT PRIMARY KEY,
            archived_at TEXT NOT NULL,
            archived_by TEXT NOT NULL,
            cutoff TEXT NOT NULL,
            file_name TEXT NOT NULL,
            export_sha256 TEXT NOT NULL,
            job_count INTEGER NOT NULL,
            event_count INTEGER NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE archived_jobs (
            archive_id TEXT NOT NULL REFERENCES archives (archive_id),
            job_id TEXT NOT NULL,
            last_position INTEGER NOT NULL,
            event_count INTEGER NOT NULL,
            PRIMARY KEY (archive_id, job_id)
        )
        """
    )
    db.execute("CREATE INDEX archived_jobs_job ON archived_jobs (job_id, last_position)")
    # Only a finished job whose newest event is still the exported one may be archived.
    db.execute(
        """
        CREATE TRIGGER archived_jobs_finished_only BEFORE INSERT ON archived_jobs
        WHEN NOT EXISTS (SELECT 1 FROM jobs WHERE job_id = NEW.job_id AND finished = 1
                         AND last_position = NEW.last_position)
          OR NEW.event_count != (SELECT COUNT(*) FROM events WHERE job_id = NEW.job_id)
        BEGIN SELECT RAISE(ABORT, 'archive refused: the job is not finished or changed since the export'); END
        """
    )
    db.execute("DROP TRIGGER events_no_delete")
    db.execute(
        """
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        WHEN NOT EXISTS (SELECT 1 FROM archived_jobs
                         WHERE job_id = OLD.job_id AND last_position >= OLD.position)
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed'); END
        """
    )
    for table in ("archives", "archived_jobs"):
        for verb in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} is not allowed'); END"
            )


def _worker_indexes(db: sqlite_utils.Database) -> None:
    # The reaper's query: held jobs (processing, or cancelled but not finished) whose lease
    # expired -- an index range per status over unfinished rows only.
    db.execute("CREATE INDEX jobs_lease ON jobs (status, lease_expires_at) WHERE finished = 0")
    # The orphan sweep's query: jobs whose log still shows children of a lost attempt.
    db.execute("CREATE INDEX jobs_orphaned ON jobs (updated_at) WHERE json_array_length(state, '$.orphaned_children') > 0")


def _quota(db: sqlite_utils.Database) -> None:
    # Shipped as part of 0006_assets_previews_quota, whose assets and previews tables moved
    # to the audio package's migrations (jobtape.audio.projections); a database that recorded
    # 0006 has this table already. The per-owner quota guard (jobtape.projections.quota): a create batch inserts one row
    # whose CHECK fails when the owner's active jobs already reach the limit, aborting the
    # whole batch, then deletes it; the table stays empty.
    db.execute(
        """
        CREATE TABLE _jobtape_quota_guard (
            owner TEXT NOT NULL,
            active_jobs INTEGER NOT NULL,
            max_active_jobs INTEGER NOT NULL,
            CONSTRAINT quota_exceeded CHECK (active_jobs < max_active_jobs)
        )
        """
    )


def _queue_counts(db: sqlite_utils.Database) -> None:
    # Queue position in O(log n): pending jobs counted by blocks of created_position
    # (jobtape.projections.queue, whose docstring explains the blocks and node keys), written
    # in each append's batch; filled from jobs by _QUEUE_COUNTS_FILL. queue_position no longer
    # counts over jobs_status_created; the index stays for the worker's claim query.
    db.execute("CREATE TABLE queue_counts (node INTEGER PRIMARY KEY NOT NULL, pending INTEGER NOT NULL) WITHOUT ROWID")


# The pending jobs of an existing data dir, counted into their blocks (the same rows the
# projection's statements write; tests/integration/test_upgrade.py compares them).
_QUEUE_COUNTS_FILL = (
    "WITH RECURSIVE lv(l) AS (SELECT 0 UNION ALL SELECT l + 1 FROM lv WHERE l < 62),"
    " me(p) AS (SELECT created_position FROM jobs WHERE status = 'pending')"
    " INSERT INTO queue_counts (node, pending) SELECT node, COUNT(*) FROM (SELECT ((2 * (p >> l) + 1) << l) AS node"
    " FROM me, lv WHERE (p >> l) >= 1 AND (l = 0 OR (p >> l) = 1 OR (p >> l) % 2 = 0)) GROUP BY node"
)


def _cheaper_worker_indexes(db: sqlite_utils.Database) -> None:
    # 0005's indexes were rewritten on every append: jobs_lease is keyed by lease_expires_at,
    # which every event of a running job renews, and jobs_orphaned's condition parsed the
    # state JSON on every UPDATE. Held jobs are few (bounded by the workers' concurrency),
    # so the reaper finds them by status and filters the lease; the orphan sweep reads a
    # count column the jobs projection only writes when it changes.
    db.execute("DROP INDEX jobs_lease")
    db.execute("DROP INDEX jobs_orphaned")
    db["jobs"].add_column("orphaned_count", int, not_null_default=0)  # type: ignore[union-attr]
    db.execute("UPDATE jobs SET orphaned_count = json_array_length(state, '$.orphaned_children')")
    db.execute("CREATE INDEX jobs_held ON jobs (status) WHERE finished = 0")
    db.execute("CREATE INDEX jobs_orphaned ON jobs (updated_at) WHERE orphaned_count > 0")


def _drop_type_index(db: sqlite_utils.Database) -> None:
    # No query filters events by type in SQL (tail --type filters the rows it reads by
    # position); the index only cost a page write per append.
    db.execute("DROP INDEX events_type_position")


def _blob_removals(db: sqlite_utils.Database) -> None:
    # Blobs of finished jobs are removed only through job.blobs_deleted (jobtape.blobs).
    # retained_upload: the upload failed-upload retention will remove (a failed or cancelled
    # ingest's, until recorded as removed); the sweep reads an index range over those rows
    # only. blobs_removed_at: the latest removal, for the sweep's re-delete after a crash.
    # Shipped as part of 0009_blob_removals, whose backfill of ingest rows and assets column
    # moved to the audio package's migrations (jobtape.audio.projections).
    db["jobs"].add_column("retained_upload", str)  # type: ignore[union-attr]
    db["jobs"].add_column("blobs_removed_at", str)  # type: ignore[union-attr]
    db.execute("CREATE INDEX jobs_retained_upload ON jobs (updated_at) WHERE retained_upload IS NOT NULL")
    db.execute("CREATE INDEX jobs_blobs_removed ON jobs (blobs_removed_at) WHERE blobs_removed_at IS NOT NULL")


def _api_keys(db: sqlite_utils.Database) -> None:
    # API keys (issue 11) are events in key streams, key-<key_id> (jobtape.eventlog.key_events);
    # api_keys is their projection (jobtape.projections.keys), written in the batch of each
    # key event. token_hash is UNIQUE: a request's token is looked up by its sha256.
    db.execute(
        """
        CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY NOT NULL,
            owner TEXT NOT NULL,
            scopes TEXT NOT NULL,
            name TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            revoked_at TEXT,
            created_position INTEGER NOT NULL
        )
        """
    )
    # Key events only in key streams, and only key events there: the job fold never meets a
    # key event, and the key fold never a job event (GLOB is case-sensitive, unlike LIKE).
    db.execute(
        """
        CREATE TRIGGER events_key_streams BEFORE INSERT ON events
        WHEN (NEW.job_id GLOB 'key-*') != (NEW.type GLOB 'key.*')
        BEGIN SELECT RAISE(ABORT, 'key events belong in key streams (key-<key_id>), and only there'); END
        """
    )


def _log_chain(db: sqlite_utils.Database) -> None:
    # Tamper evidence against the database's own writer (docs/audit.md, "Tamper evidence"):
    # every event carries the keyed whole-log chain (jobtape.eventlog.hashing.chain_link)
    # and the id of the key that made it. The store gives each event its position
    # (log_head + 1); events_chain_guard refuses any other (another writer appended first),
    # and an event without a chain, so the chain has no holes. A batch first sets
    # log_head.expected to the chain it was built on; the guard also refuses the batch when
    # that is not the head's chain (built on a batch of its own that failed while another
    # writer filled the position: right position, wrong link). events_chain_head keeps
    # log_head (the last position ever written and its chain, which an archive may remove
    # from events) in the same statement. log_head of an existing log starts at its last
    # position with no chain: appends are refused until the keyed upgrade
    # (jobtape.eventlog.store.EventStore.upgrade_chain) chains the existing events.
    db["events"].add_column("key_id", str)  # type: ignore[union-attr]
    db["events"].add_column("chain", str)  # type: ignore[union-attr]
    db.execute(
        """
        CREATE TABLE log_head (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            position INTEGER NOT NULL,
            chain TEXT,
            key_id TEXT,
            expected TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TRIGGER events_chain_guard BEFORE INSERT ON events
        WHEN NEW.chain IS NULL OR NEW.key_id IS NULL OR NEW.position IS NOT
            (SELECT position + 1 FROM log_head
             WHERE id = 1 AND (chain IS NOT NULL OR position = 0) AND expected IS chain)
        BEGIN SELECT RAISE(ABORT, 'chain conflict: the log moved on (or is not chained yet)'); END
        """
    )
    db.execute(
        """
        CREATE TRIGGER events_chain_head AFTER INSERT ON events
        BEGIN UPDATE log_head SET position = NEW.position, chain = NEW.chain, key_id = NEW.key_id, expected = NEW.chain
              WHERE id = 1; END
        """
    )
    # The keyed upgrade fills key_id and chain of the events written before this migration,
    # once; every other UPDATE stays refused.
    db.execute("DROP TRIGGER IF EXISTS events_no_update")
    db.execute(
        """
        CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        WHEN OLD.chain IS NOT NULL OR NEW.chain IS NULL OR NEW.key_id IS NULL
          OR NEW.position IS NOT OLD.position OR NEW.job_id IS NOT OLD.job_id OR NEW.version IS NOT OLD.version
          OR NEW.type IS NOT OLD.type OR NEW.data IS NOT OLD.data OR NEW.actor IS NOT OLD.actor
          OR NEW.recorded_at IS NOT OLD.recorded_at OR NEW.hash IS NOT OLD.hash
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed'); END
        """
    )
    # The keyed upgrade's record: events up to `position` were chained by it, after their
    # sha256 chains verified; `archives` lists the archive ids made before it (no MAC).
    db.execute(
        """
        CREATE TABLE chain_upgrades (
            position INTEGER PRIMARY KEY,
            chain TEXT NOT NULL,
            key_id TEXT NOT NULL,
            upgraded_at TEXT NOT NULL,
            events INTEGER NOT NULL,
            archives TEXT NOT NULL,
            mac TEXT NOT NULL
        )
        """
    )
    # An archive is authorised by its keyed record: the MAC over the archive's row, its
    # jobs and the positions and chains it removes (what verify needs to bridge the chain).
    db["archives"].add_column("key_id", str)  # type: ignore[union-attr]
    db["archives"].add_column("removed", str)  # type: ignore[union-attr]
    db["archives"].add_column("mac", str)  # type: ignore[union-attr]
    db.execute("DROP TRIGGER IF EXISTS events_no_delete")
    db.execute(
        """
        CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        WHEN NOT EXISTS (SELECT 1 FROM archived_jobs JOIN archives USING (archive_id)
                         WHERE archived_jobs.job_id = OLD.job_id AND archived_jobs.last_position >= OLD.position
                           AND archives.mac IS NOT NULL)
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed'); END
        """
    )
    for table in ("log_head", "chain_upgrades"):
        db.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE is not allowed'); END"
        )


# log_head of a new or existing log: its last position (positions are never reused).
_LOG_HEAD_FILL = (
    "INSERT INTO log_head (id, position, chain, key_id, expected) VALUES (1, MAX("
    "COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
    " COALESCE((SELECT MAX(position) FROM events), 0)), NULL, NULL, NULL)"
)


#: The engine's ordered migrations. Never edit one that has shipped; append a new one (or
#: split one under new names that list the shipped name in ``replaces``, as 0006 and 0009 were
#: when the audio tables moved to :mod:`jobtape.audio`). A package's migrations run after these.
MIGRATIONS: list[Migration] = [
    Migration("0001_events", _events),
    Migration("0002_jobs", _jobs),
    Migration("0003_leases_and_hashes", _leases_and_hashes),
    Migration("0004_archives", _archives),
    Migration("0005_worker_indexes", _worker_indexes),
    Migration("0006_quota_guard", _quota, replaces=("0006_assets_previews_quota",)),
    Migration("0007_cheaper_worker_indexes", _cheaper_worker_indexes),
    Migration("0008_drop_events_type_index", _drop_type_index),
    Migration("0009_blob_removal_columns", _blob_removals, replaces=("0009_blob_removals",)),
    Migration("0010_queue_counts", _queue_counts, data=(_QUEUE_COUNTS_FILL,)),
    Migration("0011_api_keys", _api_keys),
    Migration("0012_log_chain", _log_chain, data=(_LOG_HEAD_FILL,)),
]


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration | tuple[str, MigrationStep]] | None = None) -> list[str]:
    """Apply the migrations not yet recorded in ``_jobtape_migrations`` (under their name or one they replace).

    Each migration and its ``_jobtape_migrations`` row are one ``BEGIN IMMEDIATE``
    transaction, and whether it is still pending is read again inside it, so processes
    that migrate the same new file at once (``serve`` and workers starting together) apply
    each migration once: the others wait on the write lock, then skip it. A current
    schema costs one read and takes no lock.

    Args:
        db: the database (a sqlite-utils wrapper around a sqlite3 connection in autocommit
            mode, ``isolation_level=None``).
        migrations: the engine's and the registered packages' (:class:`jobtape.projections.registry.Tables`);
            defaults to :data:`MIGRATIONS`.

    Raises:
        RuntimeError: a migration step committed or rolled back on its own.

    Returns:
        The names applied by this call (empty when the schema is current).
    """
    conn = db.conn
    conn.execute('CREATE TABLE IF NOT EXISTS "_jobtape_migrations" ([name] TEXT PRIMARY KEY, [applied_at] TEXT)')
    done = {row[0] for row in conn.execute("SELECT name FROM _jobtape_migrations")}
    applied = []
    for name, step, replaces, data in map(as_migration, migrations or MIGRATIONS):
        recorded = (name, *replaces)
        if done.intersection(recorded):
            continue
        # One write transaction per migration, taken before the check: several processes
        # starting on a new file (serve and workers) apply each migration exactly once.
        conn.execute("BEGIN IMMEDIATE")
        try:
            marks = ", ".join("?" * len(recorded))
            if conn.execute(f"SELECT 1 FROM _jobtape_migrations WHERE name IN ({marks})", recorded).fetchone():
                conn.execute("COMMIT")
                continue
            step(db)
            for sql in data:
                conn.execute(sql)
            if not conn.in_transaction:
                raise RuntimeError(f"migration {name} ended its own transaction; it must run inside migrate()'s")
            conn.execute(
                "INSERT INTO _jobtape_migrations (name, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                [name],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
