"""Settings: one explicit object, built once by the entrypoint (the CLI) and passed in.

Precedence (highest first): a command-line flag, its environment variable, the default
below. Nothing in jobtape reads the environment at import time; ``jobtape.cli`` does it
through click's ``envvar`` options, and :meth:`Settings.from_env` does it for embedding.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from jobtape import filemodes
from jobtape.auth.principal import AUTH_MODES

__all__ = ["JOB_STORE_BACKENDS", "RATE_LIMIT_UNITS", "STORAGE_BACKENDS", "Settings", "comma_list", "parse_flag", "parse_rate_limit"]

#: Accepted values of ``JOB_STORE_BACKEND``.
JOB_STORE_BACKENDS = ("sqlite", "libsql")
#: Accepted values of ``STORAGE_BACKEND``.
STORAGE_BACKENDS = ("local", "s3", "r2")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Runtime settings of the API and the workers.

    Attributes:
        data_dir: folder of the embedded defaults: ``jobtape.db`` (SQLite event log) and
            ``storage/`` (local blobs). Env ``JOBTAPE_DATA_DIR``; default ``./var``.
        poll_interval_s: how often a separate worker polls the log for new jobs and
            cancels, in seconds. Env ``JOBTAPE_POLL_INTERVAL``; default 1.0.
        concurrency: jobs one worker process runs at once. Env ``JOBTAPE_CONCURRENCY``; default 1.
        kill_grace_s: seconds between SIGTERM and SIGKILL when a child must stop; default 5.0.
        lease_ttl_s: a claim's lease, in seconds: every event of the worker renews it, a
            ``job.heartbeat`` is appended after ``lease_ttl_s / 3`` without one, and a reaper
            takes back a job whose lease expired. Env ``JOBTAPE_LEASE_TTL``; default 30.
        shutdown_grace_s: on SIGTERM/SIGINT, seconds running jobs may take to finish before
            their children are terminated and the jobs released. Env ``JOBTAPE_SHUTDOWN_GRACE``;
            default 30.
        max_attempts: the total number of attempts of a job, the first included (3 = the first
            run and at most 2 more); a retryable failure or a lease expiry on the last one
            fails the job. A job type's own ``max_attempts`` overrides it. Env
            ``JOBTAPE_MAX_ATTEMPTS``; default 3.
        backoff_base_s: retry backoff ceiling after the first attempt, in seconds (doubling
            per attempt, equal jitter; see :mod:`jobtape.worker.policy`). Env
            ``JOBTAPE_BACKOFF_BASE``; default 2.
        backoff_cap_s: the largest retry backoff ceiling, in seconds. Env ``JOBTAPE_BACKOFF_CAP``; default 60.
        job_timeout_s: seconds a job may run from its claim before its child is terminated
            and it fails with ``timed out after N s``, for a job type registered without its
            own ``timeout_s``. Env ``JOBTAPE_JOB_TIMEOUT``; default 600.
        host_id: this host's id in ``job.child_started`` and worker ids (the orphan sweep kills
            only children recorded with it); ``None`` uses the hostname. Env ``JOBTAPE_HOST_ID``.
        max_upload_bytes: largest accepted upload, in bytes; default 500 MB.
        upload_idle_timeout_s: seconds an upload's client may send nothing before the upload
            is abandoned (408) and its spool file removed; 0: no limit. Env
            ``JOBTAPE_UPLOAD_IDLE_TIMEOUT``; default 30.
        upload_min_rate_bytes_s: the least average rate of an upload, in bytes per second,
            over each window of ``upload_idle_timeout_s``; a slower one is abandoned (408).
            0: no minimum; also off when the idle timeout is 0 (it is the window). Env
            ``JOBTAPE_UPLOAD_MIN_RATE``; default 1024.
        max_concurrent_uploads: uploads the API receives at once; the next gets 503 with
            ``Retry-After`` before any byte is read. Env ``JOBTAPE_MAX_CONCURRENT_UPLOADS``; default 8.
        upload_sweep_interval_s: seconds between sweeps that remove upload spool files no live
            process owns (one sweep also runs at start-up); 0: at start-up only. Env
            ``JOBTAPE_UPLOAD_SWEEP_INTERVAL``; default 300.
        sqlite_synchronous: ``FULL`` (default) or ``NORMAL``: whether the embedded SQLite
            log fsyncs at every commit, so an acknowledged append survives a power loss, or
            only at checkpoints (faster; a power loss may drop the last appends). Env
            ``JOBTAPE_SQLITE_SYNCHRONOUS``.
        (The audio jobs' settings, loudness target, ffmpeg pace, URL sources and their
        timeouts, are :class:`jobtape.audio.settings.AudioSettings`.)

        job_store_backend: ``"sqlite"`` (the embedded file, the default) or ``"libsql"``
            (a sqld / Turso server). Env ``JOB_STORE_BACKEND``; when unset, ``DEPLOY_ENV=production``
            means ``libsql`` and anything else ``sqlite``.
        turso_database_url: the libSQL URL (``libsql://...``, ``wss://``, ``ws://``,
            ``https://``, ``http://``); required for ``libsql``. Env ``TURSO_DATABASE_URL``.
        turso_auth_token: the libSQL auth token, or ``None``. Env ``TURSO_AUTH_TOKEN``.
        storage_backend: ``"local"`` (files under ``data_dir/storage``, the default),
            ``"s3"`` or ``"r2"`` (any S3 API). Env ``STORAGE_BACKEND``.
        s3_bucket: the bucket for ``s3``/``r2``. Env ``S3_BUCKET`` (``R2_BUCKET`` for r2).
        s3_endpoint_url: a non-AWS endpoint (MinIO, R2), or ``None`` for AWS. Env
            ``S3_ENDPOINT_URL``; for r2 it defaults to ``https://<R2_ACCOUNT_ID>.r2.cloudflarestorage.com``.
        s3_region: the region; ``None`` lets boto3 decide. Env ``AWS_REGION`` (``auto`` for r2).
        s3_access_key_id, s3_secret_access_key: credentials; ``None`` uses boto3's default
            chain (instance role, ``~/.aws``). Env ``AWS_ACCESS_KEY_ID`` /
            ``AWS_SECRET_ACCESS_KEY`` (``R2_ACCESS_KEY_ID`` / ``R2_SECRET_ACCESS_KEY`` for r2).
        download_url_ttl_s: lifetime of presigned download URLs, in seconds; default 7 days.
        upload_url_ttl_s: lifetime of presigned upload URLs, in seconds; default 1 hour.
        max_active_jobs: per-owner limit of active (pending or processing) jobs; the next
            create is refused with 429. Env ``JOBTAPE_MAX_ACTIVE_JOBS``; default 5.
        failed_upload_retention_s: seconds the original upload of an ingest that failed or
            was cancelled stays in storage after the job ended; then a worker's sweep removes
            it through the recorded path (``job.blobs_deleted``, :mod:`jobtape.blobs`). 0 removes
            it at the next sweep. Env ``JOBTAPE_FAILED_UPLOAD_RETENTION``; default 86400 (24 h).
        orphan_upload_grace_s: seconds an upload under ``ingest-uploads/`` must be older than
            before a worker's sweep deletes it when no job refers to it (a process killed
            between the upload's write and its ``job.created``; :class:`jobtape.blobs.OrphanUploadSweeper`).
            0 turns the sweep off. Env ``JOBTAPE_ORPHAN_UPLOAD_GRACE``; default 3600 (1 h).
        signing_secret: HMAC-SHA256 key of the local backend's signed download URLs (>= 32
            bytes). Env ``JOBTAPE_SIGNING_SECRET``; ``None`` (default): a random secret is
            generated once and kept in ``data_dir/signing-secret`` (mode 0600).
        log_key: the HMAC key of the log's keyed chain (>= 32 bytes; docs/audit.md, "Tamper
            evidence"); every process that appends needs the same one. Env ``JOBTAPE_LOG_KEY``;
            ``None`` (default): generated once and kept in ``data_dir/log-key`` (mode 0600).
            Keep it (and a copy) away from the database: whoever holds both can rewrite the log.
        log_key_id: the id stored with every chain value made with ``log_key``. Env
            ``JOBTAPE_LOG_KEY_ID``; default the first 8 hex digits of sha256(key).
        log_keys: older keys verify and import still accept after a rotation, ``id:key``
            items separated by commas. Env ``JOBTAPE_LOG_KEYS``; default none.
        file_mode: permission bits of the files jobtape creates (the SQLite log and its
            ``-wal``/``-shm``, local blobs); the folders it creates get the matching search
            bits (0600 -> 0700, 0640 -> 0750; :mod:`jobtape.filemodes`). Env
            ``JOBTAPE_FILE_MODE`` (octal, e.g. ``0640``); default 0o600.
        work_dir: parent of the job work folders of this host's workers (one folder per
            worker, locked while it lives; :mod:`jobtape.worker.workdirs`); must be on a
            local filesystem. Env ``JOBTAPE_WORK_DIR``; ``None`` (default):
            ``$TMPDIR/jobtape-work-<uid>`` (:attr:`work_parent`).
        auth_mode: who may call the API (issue 11, docs/security.md): ``off`` (the default:
            the owner is the ``X-Client-Id`` header, every scope; ``serve`` allows it only on
            a loopback address), ``required`` (``Authorization: Bearer`` with an API key or a
            JWT on every route but ``/health``), ``trusted-proxy`` (``X-Client-Id`` accepted
            only from :attr:`trusted_proxies`). Env ``JOBTAPE_AUTH``.
        trusted_proxies: CIDRs (``10.0.0.0/8``, ``127.0.0.1/32``) whose peers may name the
            owner in ``trusted-proxy`` mode. Env ``JOBTAPE_TRUSTED_PROXY`` (comma-separated).
        jwt_secret: HS256 secret of JWTs (>= 32 bytes). Env ``JOBTAPE_JWT_SECRET``.
        jwt_public_key_file: PEM RSA (RS256) or Ed25519 (EdDSA) public key of JWTs. Env
            ``JOBTAPE_JWT_PUBLIC_KEY_FILE``.
        jwt_jwks_url: JWKS URL of JWT keys (RS256, EdDSA). Env ``JOBTAPE_JWT_JWKS_URL``.
            At most one of the three; with one, :attr:`jwt_issuer` and :attr:`jwt_audience` are required.
        jwt_issuer: the required ``iss`` of JWTs. Env ``JOBTAPE_JWT_ISSUER``.
        jwt_audience: the required ``aud`` of JWTs. Env ``JOBTAPE_JWT_AUDIENCE``.
        rate_limit: requests per principal on the submit routes, ``N/second|minute|hour|day``
            (``60/minute``); ``None`` (default): no limit. Env ``JOBTAPE_RATE_LIMIT``.
        cors_origins: web origins allowed to call the API from a browser (CORS,
            ``https://app.example.com``); empty (default): no CORS headers. Env
            ``JOBTAPE_CORS_ORIGINS`` (comma-separated).
    """

    data_dir: Path = Path("var")
    poll_interval_s: float = 1.0
    concurrency: int = 1
    kill_grace_s: float = 5.0
    lease_ttl_s: float = 30.0
    shutdown_grace_s: float = 30.0
    max_attempts: int = 3
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 60.0
    job_timeout_s: float = 600.0
    host_id: str | None = None
    max_upload_bytes: int = 500 * 1000 * 1000
    upload_idle_timeout_s: float = 30.0
    upload_min_rate_bytes_s: float = 1024.0
    max_concurrent_uploads: int = 8
    upload_sweep_interval_s: float = 300.0
    sqlite_synchronous: str = "FULL"
    job_store_backend: str = "sqlite"
    turso_database_url: str | None = None
    turso_auth_token: str | None = dataclasses.field(default=None, repr=False)
    storage_backend: str = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    download_url_ttl_s: int = 7 * 24 * 3600
    upload_url_ttl_s: int = 3600
    max_active_jobs: int = 5
    failed_upload_retention_s: float = 24 * 3600.0
    orphan_upload_grace_s: float = 3600.0
    signing_secret: str | None = dataclasses.field(default=None, repr=False)
    log_key: str | None = dataclasses.field(default=None, repr=False)
    log_key_id: str | None = None
    log_keys: str | None = dataclasses.field(default=None, repr=False)
    file_mode: int = filemodes.DEFAULT_FILE_MODE
    work_dir: Path | None = None
    auth_mode: str = "off"
    trusted_proxies: tuple[str, ...] = ()
    jwt_secret: str | None = dataclasses.field(default=None, repr=False)
    jwt_public_key_file: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    rate_limit: str | None = None
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_auth()
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"JOBTAPE_SQLITE_SYNCHRONOUS must be FULL or NORMAL, not {self.sqlite_synchronous!r}")
        if self.job_store_backend not in JOB_STORE_BACKENDS:
            raise ValueError(f"job store backend {self.job_store_backend!r} is not one of {', '.join(JOB_STORE_BACKENDS)}")
        if self.job_store_backend == "libsql" and not self.turso_database_url:
            raise ValueError("the libsql job store needs TURSO_DATABASE_URL")
        if self.storage_backend not in STORAGE_BACKENDS:
            raise ValueError(f"storage backend {self.storage_backend!r} is not one of {', '.join(STORAGE_BACKENDS)}")
        if self.max_concurrent_uploads < 1:
            raise ValueError(f"JOBTAPE_MAX_CONCURRENT_UPLOADS must be at least 1, not {self.max_concurrent_uploads}")
        for name, value in (
            ("JOBTAPE_UPLOAD_IDLE_TIMEOUT", self.upload_idle_timeout_s),
            ("JOBTAPE_UPLOAD_MIN_RATE", self.upload_min_rate_bytes_s),
        ):
            if not value >= 0:  # also refuses NaN
                raise ValueError(f"{name} must be 0 (off) or more, not {value}")
        filemodes.check_file_mode(self.file_mode)
        if self.log_key and len(self.log_key.encode()) < 32:
            raise ValueError("JOBTAPE_LOG_KEY must be at least 32 bytes (e.g. `openssl rand -hex 32`)")
        if self.failed_upload_retention_s < 0:
            raise ValueError(f"JOBTAPE_FAILED_UPLOAD_RETENTION must be >= 0 seconds, not {self.failed_upload_retention_s}")
        if not self.orphan_upload_grace_s >= 0:  # also refuses NaN
            raise ValueError(f"JOBTAPE_ORPHAN_UPLOAD_GRACE must be 0 (off) or more seconds, not {self.orphan_upload_grace_s}")
        if self.storage_backend != "local" and not self.s3_bucket:
            raise ValueError(f"the {self.storage_backend} storage backend needs a bucket (S3_BUCKET or R2_BUCKET)")

    def _check_auth(self) -> None:
        """Refuse auth settings that cannot work (the message names the variable to fix)."""
        if self.auth_mode not in AUTH_MODES:
            raise ValueError(f"JOBTAPE_AUTH must be one of {', '.join(AUTH_MODES)}, not {self.auth_mode!r}")
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"JOBTAPE_TRUSTED_PROXY: {cidr!r} is not an address or CIDR (like 10.0.0.0/8)") from None
        if self.auth_mode == "trusted-proxy" and not self.trusted_proxies:
            raise ValueError("--auth trusted-proxy needs at least one --trusted-proxy CIDR (JOBTAPE_TRUSTED_PROXY)")
        sources = [v for v in (self.jwt_secret, self.jwt_public_key_file, self.jwt_jwks_url) if v]
        if len(sources) > 1:
            raise ValueError("set only one of JOBTAPE_JWT_SECRET, JOBTAPE_JWT_PUBLIC_KEY_FILE, JOBTAPE_JWT_JWKS_URL")
        if sources and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("JWT verification needs JOBTAPE_JWT_ISSUER and JOBTAPE_JWT_AUDIENCE")
        if self.rate_limit is not None:
            parse_rate_limit(self.rate_limit)

    @property
    def rate_limit_rule(self) -> tuple[str, int] | None:
        """:attr:`rate_limit` as ``(unit, count)`` (``("minute", 60)``), or ``None`` for no limit."""
        return parse_rate_limit(self.rate_limit) if self.rate_limit else None

    @property
    def database_path(self) -> Path:
        """The SQLite event log file: ``data_dir/jobtape.db``."""
        return self.data_dir / "jobtape.db"

    @property
    def work_parent(self) -> Path:
        """The parent of job work folders: :attr:`work_dir`, else ``$TMPDIR/jobtape-work-<uid>``."""
        if self.work_dir is not None:
            return self.work_dir
        return Path(tempfile.gettempdir()) / f"jobtape-work-{os.getuid()}"

    @property
    def storage_root(self) -> Path:
        """The local storage folder: ``data_dir/storage``."""
        return self.data_dir / "storage"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``JOBTAPE_*`` variables, then apply ``overrides`` (non-``None`` only).

        Raises:
            ValueError: a variable holds a value of the wrong type (the message names it).
        """
        env = os.environ if environ is None else environ
        values = env_values(
            env,
            (
                ("data_dir", "JOBTAPE_DATA_DIR", Path),
                ("poll_interval_s", "JOBTAPE_POLL_INTERVAL", float),
                ("concurrency", "JOBTAPE_CONCURRENCY", int),
                ("lease_ttl_s", "JOBTAPE_LEASE_TTL", float),
                ("shutdown_grace_s", "JOBTAPE_SHUTDOWN_GRACE", float),
                ("max_attempts", "JOBTAPE_MAX_ATTEMPTS", int),
                ("backoff_base_s", "JOBTAPE_BACKOFF_BASE", float),
                ("backoff_cap_s", "JOBTAPE_BACKOFF_CAP", float),
                ("job_timeout_s", "JOBTAPE_JOB_TIMEOUT", float),
                ("host_id", "JOBTAPE_HOST_ID", str),
                ("max_upload_bytes", "JOBTAPE_MAX_UPLOAD_BYTES", int),
                ("upload_idle_timeout_s", "JOBTAPE_UPLOAD_IDLE_TIMEOUT", float),
                ("upload_min_rate_bytes_s", "JOBTAPE_UPLOAD_MIN_RATE", float),
                ("max_concurrent_uploads", "JOBTAPE_MAX_CONCURRENT_UPLOADS", int),
                ("upload_sweep_interval_s", "JOBTAPE_UPLOAD_SWEEP_INTERVAL", float),
                ("sqlite_synchronous", "JOBTAPE_SQLITE_SYNCHRONOUS", str.upper),
                ("max_active_jobs", "JOBTAPE_MAX_ACTIVE_JOBS", int),
                ("signing_secret", "JOBTAPE_SIGNING_SECRET", str),
                ("log_key", "JOBTAPE_LOG_KEY", str),
                ("log_key_id", "JOBTAPE_LOG_KEY_ID", str),
                ("log_keys", "JOBTAPE_LOG_KEYS", str),
                ("file_mode", "JOBTAPE_FILE_MODE", _file_mode),
                ("work_dir", "JOBTAPE_WORK_DIR", Path),
                ("failed_upload_retention_s", "JOBTAPE_FAILED_UPLOAD_RETENTION", float),
                ("orphan_upload_grace_s", "JOBTAPE_ORPHAN_UPLOAD_GRACE", float),
                ("auth_mode", "JOBTAPE_AUTH", _lower),
                ("trusted_proxies", "JOBTAPE_TRUSTED_PROXY", comma_list),
                ("jwt_secret", "JOBTAPE_JWT_SECRET", str),
                ("jwt_public_key_file", "JOBTAPE_JWT_PUBLIC_KEY_FILE", Path),
                ("jwt_jwks_url", "JOBTAPE_JWT_JWKS_URL", str),
                ("jwt_issuer", "JOBTAPE_JWT_ISSUER", str),
                ("jwt_audience", "JOBTAPE_JWT_AUDIENCE", str),
                ("rate_limit", "JOBTAPE_RATE_LIMIT", _optional),
                ("cors_origins", "JOBTAPE_CORS_ORIGINS", comma_list),
            ),
        )
        values.update(_backend_values(env))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def env_values(env: Mapping[str, str], fields: Iterable[tuple[str, str, Callable[[str], object]]]) -> dict[str, object]:
    """Read settings fields from environment variables (the one reader of ``JOBTAPE_*`` for every settings class).

    Args:
        env: the environment (``os.environ`` or a test's mapping).
        fields: ``(field name, variable, parse)`` triples; ``parse`` turns the text into the
            field's value and raises ``ValueError`` on bad text (its ``__name__`` names the
            expected kind in the message).

    Returns:
        field name -> parsed value, for the variables that are set.

    Raises:
        ValueError: a variable holds a value ``parse`` refuses (the message names the variable).
    """
    values: dict[str, object] = {}
    for name, var, parse in fields:
        if var in env:
            try:
                values[name] = parse(env[var])
            except ValueError as exc:
                raise ValueError(f"{var}={env[var]!r} is not a valid {getattr(parse, '__name__', 'value')}") from exc
    return values


#: The units of a rate limit (``60/minute``), as Litestar's rate-limit middleware names them.
RATE_LIMIT_UNITS = ("second", "minute", "hour", "day")


def parse_rate_limit(text: str) -> tuple[str, int]:
    """``"60/minute"`` -> ``("minute", 60)``.

    Raises:
        ValueError: not ``N/unit`` with N >= 1 and a unit of :data:`RATE_LIMIT_UNITS`.
    """
    count, _, unit = text.strip().partition("/")
    unit = unit.strip().lower().removesuffix("s") if unit.strip().lower() != "s" else "second"
    if not count.strip().isdigit() or int(count) < 1 or unit not in RATE_LIMIT_UNITS:
        raise ValueError(f"JOBTAPE_RATE_LIMIT must be like 60/minute (N/{'|'.join(RATE_LIMIT_UNITS)}), not {text!r}")
    return unit, int(count)


def comma_list(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``: the items of a comma-separated variable, stripped, empty ones dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


comma_list.__name__ = "comma-separated list"


def _lower(text: str) -> str:
    return text.strip().lower()


def _optional(text: str) -> str | None:
    return text.strip() or None


def parse_flag(text: str) -> bool:
    """``1/true/yes/on`` -> ``True``, ``0/false/no/off/""`` -> ``False`` (case-insensitive).

    Raises:
        ValueError: any other text.
    """
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean; use 1 or 0")


parse_flag.__name__ = "boolean (1 or 0)"


def _file_mode(text: str) -> int:
    """``"0640"`` -> ``0o640`` (:func:`filemodes.parse_file_mode`).

    Raises:
        ValueError: not an octal file mode giving the owner read/write and no execute bits.
    """
    return filemodes.parse_file_mode(text)


_file_mode.__name__ = "file mode (octal, owner read/write plus read/write bits only, e.g. 0600 or 0640)"


def _backend_values(env: Mapping[str, str]) -> dict[str, object]:
    """The event-store and storage fields from their (un-prefixed, seed-compatible) variables."""
    values: dict[str, object] = {}
    store = env.get("JOB_STORE_BACKEND") or ("libsql" if env.get("DEPLOY_ENV") == "production" else "sqlite")
    values["job_store_backend"] = store.strip().lower()
    for name, var in (("turso_database_url", "TURSO_DATABASE_URL"), ("turso_auth_token", "TURSO_AUTH_TOKEN")):
        if env.get(var):
            values[name] = env[var]
    storage = (env.get("STORAGE_BACKEND") or "local").strip().lower()
    values["storage_backend"] = storage
    if storage == "r2":
        account = env.get("R2_ACCOUNT_ID")
        endpoint = env.get("S3_ENDPOINT_URL") or (f"https://{account}.r2.cloudflarestorage.com" if account else None)
        names = {"s3_bucket": "R2_BUCKET", "s3_access_key_id": "R2_ACCESS_KEY_ID", "s3_secret_access_key": "R2_SECRET_ACCESS_KEY"}
        values.update({"s3_endpoint_url": endpoint, "s3_region": "auto"})
    else:
        names = {
            "s3_bucket": "S3_BUCKET",
            "s3_endpoint_url": "S3_ENDPOINT_URL",
            "s3_region": "AWS_REGION",
            "s3_access_key_id": "AWS_ACCESS_KEY_ID",
            "s3_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        }
    values.update({name: env[var] for name, var in names.items() if env.get(var)})
    return {k: v for k, v in values.items() if v is not None}
