"""The keyed checks' I/O: read what verify needs from a store, make and check checkpoints.

:func:`chain_context` gathers the archive records, upgrade records and ``log_head`` that
:func:`jobtape.audit.verify.verify` checks the events against; :func:`make_checkpoint`
signs the log's head for ``jobtape checkpoint``.
"""

from __future__ import annotations

from jobtape import clock
from jobtape.audit import checkpoint as checkpoints
from jobtape.audit.verify import ChainContext, VerifyReport, verify
from jobtape.eventlog.store import EventStore
from jobtape.projections import archives

__all__ = ["chain_context", "make_checkpoint", "verify_store"]


def chain_context(store: EventStore, checkpoint: checkpoints.Checkpoint | None = None) -> ChainContext:
    """The keys, archive and upgrade records and head of ``store``'s log (keys ``None``: unkeyed)."""
    position, chain, _key_id = store.log_head()
    return ChainContext(
        keys=store.keys,
        archives=archives.archive_records(store),
        upgrades=archives.upgrade_records(store),
        head=(position, chain),
        checkpoint=checkpoint,
    )


def verify_store(store: EventStore, checkpoint: checkpoints.Checkpoint | None = None) -> VerifyReport:
    """:func:`jobtape.audit.verify.verify` over every event of ``store``, with the keyed checks when it holds a key."""
    context = chain_context(store, checkpoint)
    return verify(store.iter_stored(), context)


def make_checkpoint(store: EventStore) -> checkpoints.Checkpoint:
    """A checkpoint of the log's head (``log_head``), signed with the store's current key.

    Raises:
        ValueError: the store holds no log key.
    """
    if store.keys is None:
        raise ValueError("a checkpoint needs the log key: set JOBTAPE_LOG_KEY (or keep data_dir/log-key readable)")
    position, chain, _key_id = store.log_head()
    return checkpoints.make_checkpoint(store.keys, position=position, chain=chain, at=clock.format_timestamp(clock.utcnow()))
