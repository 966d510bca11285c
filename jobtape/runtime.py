"""Factories that open the configured backends (the composition root's building blocks).

Backends are chosen by name through two registries with a default factory each, so an
embedding application (or a test) can register another one:

- :data:`STORE_BACKENDS`: ``sqlite`` (default; the embedded file) and ``libsql`` (sqld/Turso);
- :data:`STORAGE_BACKENDS`: ``local`` (default), ``s3`` and ``r2`` (both :class:`S3Storage`).

boto3 and libsql-client are imported by the factories that need them, so the embedded
default loads neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from jobtape import errors, filemodes
from jobtape.config import Settings
from jobtape.eventlog import logkey
from jobtape.eventlog.logkey import LogKeys
from jobtape.eventlog.sqlite import SQLiteBackend
from jobtape.eventlog.store import EventStore, SQLBackend
from jobtape.projections.registry import ENGINE_TABLES, Tables
from jobtape.projections.repository import AppendResult, JobRepository
from jobtape.storage import local, signing
from jobtape.storage.base import Storage
from jobtape.storage.local import LocalStorage

_log = logging.getLogger(__name__)

__all__ = [
    "LIBSQL_NEEDS_KEY",
    "STORAGE_BACKENDS",
    "STORE_BACKENDS",
    "describe_store",
    "keyed_store",
    "log_keys",
    "open_backend",
    "open_repository",
    "open_storage",
    "open_store",
    "require_shared_key",
]

#: The refusal of a writing process on libSQL without ``JOBTAPE_LOG_KEY`` (:func:`log_keys`).
LIBSQL_NEEDS_KEY = (
    "the event log on libSQL is shared by every host, so every process that appends must hold the same log key:"
    " set JOBTAPE_LOG_KEY (at least 32 bytes, from your secret store; e.g. the output of"
    " `python -c 'import secrets; print(secrets.token_urlsafe(48))'`) on every serve and worker host;"
    " a host that generated data_dir/log-key before can set JOBTAPE_LOG_KEY to that file's content"
)


def _sqlite(settings: Settings) -> SQLBackend:
    # The data dir is made here so it gets the folder mode matching settings.file_mode.
    filemodes.make_dirs(settings.data_dir, filemodes.dir_mode(settings.file_mode))
    return SQLiteBackend(settings.database_path, synchronous=settings.sqlite_synchronous, file_mode=settings.file_mode)


def _libsql(settings: Settings) -> SQLBackend:
    from jobtape.eventlog.libsql import LibSQLBackend

    assert settings.turso_database_url is not None  # Settings checks it
    return LibSQLBackend(settings.turso_database_url, settings.turso_auth_token)


def _local(settings: Settings) -> Storage:
    if settings.signing_secret:
        secret = settings.signing_secret.encode()
    else:
        secret = local.load_or_create_secret(settings.data_dir / local.SECRET_FILE_NAME, filemodes.dir_mode(settings.file_mode))
    return LocalStorage(settings.storage_root, signing.URLSigner(secret), file_mode=settings.file_mode)


def _s3(settings: Settings) -> Storage:
    from jobtape.storage.s3 import S3Storage

    assert settings.s3_bucket is not None  # Settings checks it
    return S3Storage(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
    )


#: ``Settings.job_store_backend`` -> factory of an unmigrated :class:`SQLBackend`.
STORE_BACKENDS: dict[str, Callable[[Settings], SQLBackend]] = {"sqlite": _sqlite, "libsql": _libsql}
#: ``Settings.storage_backend`` -> factory of a :class:`Storage`.
STORAGE_BACKENDS: dict[str, Callable[[Settings], Storage]] = {"local": _local, "s3": _s3, "r2": _s3}


def open_backend(settings: Settings, tables: Tables = ENGINE_TABLES) -> SQLBackend:
    """Open (and migrate) the SQL backend the settings name.

    ``tables``: the migrations to apply (the engine's, then a package's: an app's
    :attr:`jobtape.App.tables`).

    Raises:
        KeyError: no factory is registered under ``settings.job_store_backend``.
        errors.StoreUnavailable: a remote store cannot be reached.
    """
    backend = STORE_BACKENDS[settings.job_store_backend](settings)
    try:
        backend.migrate(tables.migrations)
    except BaseException:
        backend.close()
        raise
    return backend


def require_shared_key(settings: Settings) -> None:
    """Refuse a process that would append to a libSQL log without ``JOBTAPE_LOG_KEY``.

    Called before the store is opened (or waited for), so the refusal comes at once.

    Raises:
        errors.LogKeyError: libSQL and no ``JOBTAPE_LOG_KEY`` (:data:`LIBSQL_NEEDS_KEY`).
    """
    if settings.job_store_backend == "libsql" and not settings.log_key:
        raise errors.LogKeyError(LIBSQL_NEEDS_KEY)


def log_keys(settings: Settings, *, create: bool = True) -> LogKeys | None:
    """The log keys the settings name: ``JOBTAPE_LOG_KEY`` (+ ``_ID``, ``JOBTAPE_LOG_KEYS``),
    else the key file ``data_dir/log-key`` (created once when ``create``).

    A log on libSQL is shared by every host, so a process that appends to it (``create``)
    must be given the key: a key file generated per host would chain each host's events
    under its own key, which every other verifier names (docs/security.md). Read-only tools
    (``create`` false) fall back to the key file, or report the log as unkeyed.

    Returns:
        The keys, or ``None`` when no key is set and the file is absent (``create`` false)
        or unreadable: the store then reads but does not append, and verify reports "unkeyed".

    Raises:
        ValueError: a key shorter than 32 bytes or a malformed ``JOBTAPE_LOG_KEYS``.
        errors.StoreUnavailable: ``create`` and the key file cannot be written.
        errors.LogKeyError: ``create`` on libSQL without ``JOBTAPE_LOG_KEY``
            (:data:`LIBSQL_NEEDS_KEY`).
    """
    older = logkey.parse_key_list(settings.log_keys) if settings.log_keys else {}
    if settings.log_key:
        secret: bytes | None = settings.log_key.encode()
    else:
        if create:
            require_shared_key(settings)
        secret = logkey.load_key_file(
            settings.data_dir / logkey.KEY_FILE_NAME, create=create, dir_mode=filemodes.dir_mode(settings.file_mode)
        )
    if secret is None:
        return None
    return LogKeys.from_secret(secret, settings.log_key_id, older)


def _check_head_key(store: EventStore, *, writes: bool) -> None:
    """Warn when a writing store does not hold the key the log's head was chained with."""
    _position, _chain, key_id = store.log_head()
    if writes and key_id is not None and store.keys is not None and store.keys.get(str(key_id)) is None:
        _log.warning(
            "the event log is chained under log key %r, which this process does not hold (it has %r): its appends"
            " will chain under its own key, which verify names unless every verifier holds both; give every process"
            " the same JOBTAPE_LOG_KEY (keep older keys in JOBTAPE_LOG_KEYS)",
            key_id,
            store.keys.current_id,
        )


def open_store(settings: Settings, tables: Tables = ENGINE_TABLES, *, create_key: bool = True) -> EventStore:
    """Open (and migrate with ``tables``) the event store the settings name (the embedded SQLite file by default).

    With a log key (:func:`log_keys`), a log written before migration 0012 is chained
    now (the keyed upgrade, :meth:`EventStore.upgrade_chain`).

    Args:
        settings: the configuration.
        tables: the migrations and projections.
        create_key: create ``data_dir/log-key`` when no key is configured (``False`` for
            read-only tools: without a key they report the log as unkeyed).

    Raises:
        errors.LogKeyError: the keyed upgrade refused (a stream's sha256 chain is broken).
    """
    if create_key:
        require_shared_key(settings)
    return keyed_store(open_backend(settings, tables), settings, create_key=create_key)


def keyed_store(backend: SQLBackend, settings: Settings, *, create_key: bool = True) -> EventStore:
    """An :class:`EventStore` over the migrated ``backend`` with the settings' log keys (:func:`log_keys`).

    With a key, a log written before migration 0012 is chained now (the keyed upgrade,
    :meth:`EventStore.upgrade_chain`). The backend is closed if this raises.

    A process that writes (``create_key``) without the key of the log's head (e.g. an
    embedded data dir whose ``log-key`` was replaced, or a host given another
    ``JOBTAPE_LOG_KEY``) logs a warning naming both key ids: its events chain under its own
    key, and verify names them (rule ``key``) unless the verifier holds both.

    Raises:
        errors.LogKeyError: the keyed upgrade refused (a stream's sha256 chain is broken).
        ValueError: a malformed key setting.
    """
    try:
        store = EventStore(backend, keys=log_keys(settings, create=create_key))
        if store.keys is not None:
            store.upgrade_chain()
            _check_head_key(store, writes=create_key)
    except BaseException:
        backend.close()
        raise
    return store


def open_repository(
    settings: Settings, on_append: Callable[[AppendResult], None] | None = None, *, tables: Tables = ENGINE_TABLES
) -> JobRepository:
    """Open the event store (migrated with ``tables``) and wrap it in a :class:`JobRepository` writing ``tables``' projections."""
    return JobRepository(open_store(settings, tables), on_append=on_append, projections=tables.projections)


def open_storage(settings: Settings) -> Storage:
    """Open the blob storage the settings name (``data_dir/storage`` by default).

    Raises:
        KeyError: no factory is registered under ``settings.storage_backend``.
    """
    return STORAGE_BACKENDS[settings.storage_backend](settings)


def describe_store(settings: Settings) -> str:
    """A one-line description of the configured event store for logs (no secrets)."""
    if settings.job_store_backend == "sqlite":
        return str(settings.database_path)
    return f"{settings.job_store_backend} {settings.turso_database_url}"
