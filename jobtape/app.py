"""The engine as a library: register your own job types on an :class:`App` and run them on the log.

::

    import msgspec, jobtape

    app = jobtape.App()                      # settings from the environment, as the CLI reads them

    class Sum(msgspec.Struct):
        a: int
        b: int

    @app.job_type("sum", timeout_s=60, max_attempts=3)
    def add(ctx: jobtape.JobContext, params: Sum) -> dict:
        ctx.stage("adding")
        ctx.progress(50)
        return {"sum": params.a + params.b}

    job_id = app.submit("sum", {"a": 2, "b": 3})   # the same guarded batch the API appends

``jobtape worker --app module:attr`` (or ``JOBTAPE_APP``) runs the app's job types, as
``celery -A`` or ``procrastinate --app`` do; a worker claims only the types its app has,
and a job of a type no app here registered stays readable by every tool. A handler gets a
:class:`JobContext` and its params decoded into the registered msgspec type (a plain
``dict`` when the annotation is ``dict`` or missing), and returns the job's result (a
JSON object). It fails the job by raising :class:`jobtape.errors.JobFailed`
(``retryable=True`` to retry with backoff); any other exception fails it as an internal
error, logged with its traceback, never retried.

Registration follows procrastinate's blueprints: one registry, one decorator, a duplicate
name is an error (:class:`errors.JobTypeAlreadyRegistered`) and leaves the registry as it was.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobtape import errors, runtime
from jobtape.config import Settings
from jobtape.eventlog import events as ev
from jobtape.eventlog import schema
from jobtape.jobtypes import DownloadableKeys, Handler, JobTypeSpec, KeyOwner
from jobtape.projections import registry
from jobtape.projections.repository import JobRepository
from jobtape.storage.base import Storage
from jobtape.worker import context as worker_context
from jobtape.worker import policy
from jobtape.worker.runner import JobHandler, Worker

__all__ = ["App", "JobContext", "JobTypeSpec", "load_app"]

#: The dependencies the HTTP app gives every route (:func:`jobtape.http.create_app`).
_ENGINE_DEPENDENCIES = frozenset(
    {"repository", "storage", "settings", "spool_folder", "upload_slots", "submit_sources", "poll_sources", "downloadable_keys"}
)


class JobContext:
    """What a running job's handler sees: its identity, its params, and the ways to report and stop.

    Everything it records is an event in the job's stream, appended by the worker that
    holds the job's lease; a cancel, a timeout or a lost lease stops the job at the next
    :meth:`stage`, :meth:`progress`, :meth:`check_cancelled` or while :meth:`run_child` waits.
    """

    def __init__(self, running: worker_context.JobContext, storage: Storage, params: Any) -> None:
        self._running = running
        self._storage = storage
        self._params = params

    @property
    def job_id(self) -> str:
        """The job's id (32 lowercase hex characters)."""
        return self._running.job_id

    @property
    def attempt(self) -> int:
        """This attempt's number, 1 for the first (retries and lease expiries add one)."""
        return self._running.state.attempt

    @property
    def params(self) -> Any:
        """The params, decoded into the job type's msgspec type (or a ``dict``)."""
        return self._params

    @property
    def workdir(self) -> Path:
        """A private folder for this attempt's temporary files, removed when the job ends."""
        return self._running.workdir

    @property
    def storage(self) -> Storage:
        """The blob storage (local folder, S3 or R2) the deployment is configured with."""
        return self._storage

    def stage(self, name: str) -> None:
        """Enter a stage (``job.stage_changed``); progress restarts at 0.

        Raises:
            jobtape.worker.context.CancelRequested: the job was cancelled (let it propagate).
        """
        self._running.stage(name)

    def progress(self, percent: int) -> None:
        """Report 0-100 percent within the stage (``job.progress``; throttled to changes every 0.25 s)."""
        self._running.progress(percent)

    @property
    def cancelled(self) -> bool:
        """Whether the job must stop now: a cancel, a timeout, a shutdown or a lost lease."""
        return self._running.interrupt_event.is_set() or self._running.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise if the job must stop (see :attr:`cancelled`); call it in a long pure-Python loop.

        Raises:
            jobtape.worker.context.CancelRequested: the job was cancelled; ``TimedOut``,
                ``Released`` or ``JobLost`` for the other interruptions. Let it propagate:
                the worker records the outcome.
        """
        self._running.check_cancelled()

    @property
    def repository(self) -> JobRepository:
        """The job log the worker appends through, to read projections (a package's own tables).

        Append to this job only through the context's methods: they hold the lease.
        """
        return self._running.repository

    def output_written(self, key: str) -> None:
        """Record that this attempt stored a blob under ``key`` (its output).

        A key recorded here is deleted if the job does not complete (cancelled, failed,
        timed out, released), so no partial output is left behind; once the job completes
        the job owns the key: ``job.completed`` names it in ``owned_keys``, only the job's
        ``job.blobs_deleted`` may remove it, and ``jobtape archive`` deletes it with the job.
        Call it just before the blob is stored.
        """
        self._running.written_keys.append(key)

    def set_download(self, key: str, *, owned: bool = False) -> None:
        """Name the key a poll of the complete job links to (``downloadUrl``; ``job.completed``'s ``download_key``).

        The poll signs a link to it (as long as storage has it and no ``job.blobs_deleted``
        removed it), whatever the job type. The last call wins; a job that never calls it
        gets no link.

        Args:
            key: a storage key: usually one given to :meth:`output_written`, or another
                job's output this job found (a cache hit), which it links to without owning.
            owned: the job owns ``key`` once it completes (as with :meth:`output_written`)
                without it being deleted if the job does not complete: for a key another
                attempt or job may have stored first (a shared, content-addressed key).
        """
        self._running.download_key = key
        if owned:
            self._running.owned_outputs.append(key)

    def run_child(
        self,
        argv: Sequence[str],
        *,
        on_line: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
        name: str = "child",
    ) -> worker_context.ChildOutcome:
        """Run a child process in its own process group, recorded as ``job.child_started`` / ``job.child_exited``.

        On a cancel, a timeout or a lost lease the child's group gets SIGTERM, then SIGKILL
        after the kill grace (``JOBTAPE_KILL_GRACE``), and the interruption is raised.

        Args:
            argv: the command line.
            on_line: called with each line the child writes to stdout.
            timeout_s: seconds after which the child is stopped and the outcome says ``timed_out``.
            name: names the child's stderr file in the workdir (``<name>.stderr``).

        Returns:
            ``returncode`` (negative: the signal that ended it), the tail of ``stderr``, ``timed_out``.
        """
        return self._running.run_child(argv, on_line=on_line, timeout_s=timeout_s, name=name)


class App:
    """A registry of job types and the settings to run them with.

    Args:
        settings: the settings; ``None`` reads them from the environment as the CLI does
            (:meth:`Settings.from_env`: ``JOBTAPE_DATA_DIR``, ``JOB_STORE_BACKEND``, ...).
        description: what the app's jobs are, for the OpenAPI document ``jobtape serve --app``
            publishes at ``/schema`` (Markdown); it comes before the engine's description of
            the job routes. ``None``: the engine's description alone.

    Attributes:
        settings: the settings in effect.
        description: as given.
    """

    def __init__(self, settings: Settings | None = None, *, description: str | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.description = description
        self._types: dict[str, JobTypeSpec] = {}
        self._tables = registry.ENGINE_TABLES
        self._routes: list[tuple[Any, bool]] = []
        self._dependencies: dict[str, Any] = {}
        self._downloadable = DownloadableKeys()
        self._repository: JobRepository | None = None
        self._lock = threading.Lock()

    @property
    def tables(self) -> registry.Tables:
        """The log's tables for this app: the engine's migrations and ``jobs``, then every registered package's."""
        return self._tables

    def projection(self, projection: registry.Projection) -> registry.Projection:
        """Register a projection: its statements run in each append's batch, after ``jobs`` and earlier ones.

        ``rebuild``, ``archive`` and ``import`` cover it too. Its table must be created by a
        migration registered with :meth:`migration`. Register before the log is opened
        (:attr:`repository`, ``serve``, ``worker``).

        Args:
            projection: the table, its columns (row key first), the statements of a state
                transition, and :attr:`~registry.Projection.job_column` (rows leave with their job on archive).

        Returns:
            ``projection``, unchanged.

        Raises:
            ValueError: a projection of that table is registered already.
        """
        with self._lock:
            self._tables = self._tables.extended(projections=(projection,))
        return projection

    def migration(self, name: str, step: schema.MigrationStep, *, replaces: tuple[str, ...] = ()) -> None:
        """Register a migration, applied after the engine's and earlier registered ones when the log is opened.

        Applied like the engine's (:func:`jobtape.eventlog.schema.migrate`): one ``BEGIN
        IMMEDIATE`` transaction each, recorded by name in ``_jobtape_migrations`` so it runs
        once per database; translated into DDL on libSQL. Never edit one that has shipped.

        Args:
            name: unique across the engine and every package; prefix it with the package
                (``audio.0001_assets_previews``).
            step: the change, over a :class:`sqlite_utils.Database`.
            replaces: names under which the same change may already be recorded (a
                migration that moved into a package); any of them recorded skips this one.

        Raises:
            ValueError: ``name`` is registered already.
        """
        with self._lock:
            self._tables = self._tables.extended(migrations=(schema.Migration(name, step, replaces),))

    def route(self, handler: Any, *, for_storage: bool = False) -> Any:
        """Register a Litestar route handler that ``jobtape serve`` (and :func:`jobtape.http.create_app`) serves.

        Handlers get the app's dependencies by name: ``repository``, ``storage``,
        ``settings``, ``spool_folder``, ``upload_slots``, or all five as one,
        ``submit_sources`` (:class:`jobtape.http.creation.SubmitSources`: one dependency
        spares Litestar's per-request task group of several).

        Args:
            handler: a Litestar route handler (``@get(...)``, ``@post(...)``), or with
                ``for_storage`` a function ``handler(storage) -> route handler`` choosing one
                for the configured storage (a local folder serves bytes, S3 signs links).
            for_storage: see ``handler``.

        Returns:
            ``handler``, unchanged (so it works as a decorator).
        """
        with self._lock:
            self._routes.append((handler, for_storage))
        return handler

    def provide(self, name: str, value: Any) -> None:
        """Make ``value`` a dependency the registered routes receive as the parameter ``name``.

        Raises:
            ValueError: ``name`` is provided already, or is one of the engine's
                (``repository``, ``storage``, ``settings``, ``spool_folder``, ``upload_slots``,
                ``submit_sources``, ``poll_sources``, ``downloadable_keys``).
        """
        with self._lock:
            if name in self._dependencies or name in _ENGINE_DEPENDENCIES:
                raise ValueError(f"the dependency {name!r} is provided already")
            self._dependencies[name] = value

    def downloadable(self, *prefixes: str, what: str | None = None, owner_of: KeyOwner | None = None) -> None:
        """Let the object-storage download route (``GET /api/storage/download?key=``) sign keys under ``prefixes``.

        A poll's ``downloadUrl`` needs no registration (it links to the key the job's
        ``job.completed`` declares, :meth:`JobContext.set_download`); this route, which takes
        a client's key, signs only keys under a registered prefix: a job's outputs, never
        uploads. Local storage serves signed links only and ignores this.

        Args:
            prefixes: key prefixes ending in ``/``, e.g. ``"reports/"``.
            what: how the route's 403 names these keys (default ``job outputs``).
            owner_of: ``(event store, key) -> owner or None``, reading the app's projection:
                the route then signs a key only for its owner (or ``admin``); another owner's
                key, or one no output holds, is a 404 like a missing file (docs/security.md).
                Without it a key under these prefixes is a capability: any caller with
                ``jobs:read`` who knows it gets a link.

        Raises:
            ValueError: no prefix, or one that does not end in ``/``.
        """
        if not prefixes or any(not prefix.endswith("/") or prefix == "/" for prefix in prefixes):
            raise ValueError(f"download prefixes must be folders ending in '/', e.g. 'reports/'; got {prefixes!r}")
        with self._lock:
            known = self._downloadable
            owners = known.owners + tuple((prefix, owner_of) for prefix in prefixes) if owner_of is not None else known.owners
            self._downloadable = DownloadableKeys((*known.prefixes, *prefixes), what or known.what, owners)

    @property
    def dependencies(self) -> Mapping[str, Any]:
        """The dependencies registered with :meth:`provide`, by name, and ``downloadable_keys`` (:meth:`downloadable`)."""
        return {**self._dependencies, "downloadable_keys": self._downloadable}

    def routes_for(self, storage: Storage) -> list[Any]:
        """The registered route handlers, in registration order, resolved for ``storage``."""
        return [handler(storage) if for_storage else handler for handler, for_storage in self._routes]

    @property
    def job_types(self) -> Mapping[str, JobTypeSpec]:
        """The registered job types by name."""
        return dict(self._types)

    def job_type(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        max_attempts: int | None = None,
        params: Any = None,
        http_submit: bool = True,
    ) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of job type ``name``.

        Args:
            name: the type's name (lowercase, ``[a-z][a-z0-9_.-]{0,63}``), stored in the log forever.
            timeout_s: seconds a job may run from its claim before it fails ``timed out``;
                ``None``: the settings' ``job_timeout_s`` (``JOBTAPE_JOB_TIMEOUT``).
            max_attempts: attempts before a retryable failure is final; ``None``: ``JOBTAPE_MAX_ATTEMPTS``.
            params: the msgspec type of the params; ``None`` takes the handler's second
                parameter's annotation (``dict`` when it has none).
            http_submit: whether ``POST /api/jobs`` of ``jobtape serve --app`` accepts the type;
                ``False`` for a type created only through its own routes (the audio jobs) or
                only in-process (:meth:`submit`).

        Returns:
            The decorator; it returns the function unchanged.

        Raises:
            errors.JobTypeAlreadyRegistered: ``name`` is taken.
            ValueError: ``name`` is not a valid job type name.
        """
        if ev.JOB_TYPE_PATTERN.fullmatch(name) is None:
            raise ValueError(f"job type {name!r} is not a lowercase name (a-z, 0-9, '_', '.', '-'; at most 64)")

        def register(handler: Handler) -> Handler:
            spec = JobTypeSpec(
                name,
                handler,
                params or _params_annotation(handler),
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                http_submit=http_submit,
            )
            with self._lock:
                if name in self._types:
                    raise errors.JobTypeAlreadyRegistered(name)
                self._types[name] = spec
            return handler

        return register

    def spec(self, name: str) -> JobTypeSpec:
        """The registered type ``name``.

        Raises:
            errors.UnknownJobType: no such type is registered (the message lists the registered ones).
        """
        spec = self._types.get(name)
        if spec is None:
            raise errors.UnknownJobType(name, sorted(self._types))
        return spec

    @property
    def repository(self) -> JobRepository:
        """The job log the settings name, opened (and migrated) on first use."""
        with self._lock:
            if self._repository is None:
                self._repository = runtime.open_repository(self.settings, tables=self._tables)
            return self._repository

    def submit(
        self, job_type: str, params: Any, *, owner: str | None = None, idempotency_key: str | None = None, owned_keys: Sequence[str] = ()
    ) -> str:
        """Create a job in-process with the same guarded batch the API appends; return its id.

        Args:
            job_type: a registered type.
            params: a dict or an instance of the type's params Struct.
            owner: the owner recorded in ``job.created`` (``anonymous`` when ``None``).
            idempotency_key: at most one job per (owner, key); a second submit raises.
            owned_keys: storage keys the caller stored for this job and hands to it (an input
                file): recorded in ``job.created``; the job's ``job.blobs_deleted`` may remove
                them (``jobtape archive``), and failed-upload retention removes them
                ``failed_upload_retention_s`` after the job finished failed or cancelled.

        Raises:
            errors.UnknownJobType: ``job_type`` is not registered.
            errors.InvalidParams: ``params`` do not fit the type's schema; nothing is appended.
            errors.DuplicateIdempotencyKey: the owner used that key already.
        """
        spec = self.spec(job_type)
        stored = spec.encode_params(params)
        result = self.repository.create(
            job_type, stored, owner=owner or "anonymous", idempotency_key=idempotency_key, actor="app", owned_keys=owned_keys
        )
        return result.state.job_id

    def worker(self, *, storage: Storage | None = None, **options: Any) -> Worker:
        """A :class:`Worker` that runs this app's job types (and claims no other).

        Args:
            storage: the blob storage; ``None`` opens the one the settings name.
            options: more :class:`Worker` keyword arguments (``worker_id``, ``rng``).
        """
        return Worker(
            self.repository,
            storage or runtime.open_storage(self.settings),
            self.settings,
            handlers=self.job_handlers(),
            limits=self.limits(),
            **options,
        )

    def job_handlers(self) -> dict[str, JobHandler]:
        """Job type -> the job handler the worker calls: decodes the params, calls the registered function (``Worker(handlers=...)``)."""
        return {name: _worker_handler(spec) for name, spec in self._types.items()}

    def limits(self) -> dict[str, policy.TypeLimits]:
        """Job type -> its own timeout and ``max_attempts`` (``Worker(limits=...)``)."""
        return {name: policy.TypeLimits(timeout_s=spec.timeout_s, max_attempts=spec.max_attempts) for name, spec in self._types.items()}

    def close(self) -> None:
        """Close the job log if it was opened."""
        with self._lock:
            if self._repository is not None:
                self._repository.store.close()
                self._repository = None


def _worker_handler(spec: JobTypeSpec) -> JobHandler:
    """The worker's job handler for a job type: decode the params, call the handler, check the result."""

    def run(running: worker_context.JobContext, storage: Storage, settings: Settings) -> dict[str, Any]:
        params = spec.decode_params(running.params)
        result = spec.handler(JobContext(running, storage, params), params)
        if not isinstance(result, Mapping):
            raise TypeError(f"the handler of {spec.name!r} returned {type(result).__name__}, not a dict")
        return dict(result)

    return run


def _params_annotation(handler: Handler) -> Any:
    """The annotation of the handler's second parameter (``dict`` when there is none)."""
    parameters = list(inspect.signature(handler).parameters.values())
    if len(parameters) < 2:
        raise TypeError(f"a job handler takes (ctx, params); {handler.__name__} takes {len(parameters)} parameter(s)")
    hints = typing.get_type_hints(handler)
    annotation = hints.get(parameters[1].name, dict)
    return dict if annotation in (dict, Any) or typing.get_origin(annotation) is dict else annotation


def load_app(reference: str) -> App:
    """Import ``module:attr`` (or ``module`` with an attribute ``app``) and return the :class:`App` it names.

    Args:
        reference: e.g. ``myproject.jobs:app``.

    Raises:
        ValueError: the module cannot be imported, or the attribute is missing or not an App
            (the message says which).
    """
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for --app: {exc}") from exc
    found = getattr(module, attribute or "app", None)
    if not isinstance(found, App):
        raise ValueError(f"--app {reference!r} does not name a jobtape.App (found {type(found).__name__})")
    return found
