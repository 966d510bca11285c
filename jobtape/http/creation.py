"""Creating a job over HTTP: the owner, the ``Idempotency-Key`` replay, the 202/200 answer (one implementation).

Every route that creates a job (``POST /api/jobs``, the audio ingest and edit routes) takes
its owner and its actor from the request's principal (:mod:`jobtape.http.auth`) and honours
the ``Idempotency-Key`` header the same way, here:

- The owner is the principal's: the API key's owner, the JWT's ``sub``, the trusted proxy's
  ``X-Client-Id``, or with ``--auth off`` the ``X-Client-Id`` header (default ``anonymous``;
  not authenticated then). It scopes the active-job quota (429, guarded in SQL in the create
  batch) and the idempotency key. The ``job.created`` event's actor is the principal's
  (``key:<id>``, ``jwt:<sub>``, ``proxy:<owner>``; ``api`` with ``--auth off``).
- The guard is the ``jobs (owner, idempotency_key)`` UNIQUE index inside the create batch;
  only after that write fails is the first job read, to answer the replay: 200 with the job
  the key created, when the request is the same (same job type, and the same payload as the
  route judges it). Reusing a key for another request is a 422
  (:class:`errors.IdempotencyKeyReused`), as the IETF draft *The Idempotency-Key HTTP Header
  Field* (draft-ietf-httpapi-idempotency-key-header, section 2.7) says of a key reused with a
  different payload. When the first job's row is gone between the failed write and the read
  (archived), the :class:`errors.DuplicateIdempotencyKey` stands (409).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple, TypeVar

from litestar import Response
from litestar.params import HeaderParameter

from jobtape import errors
from jobtape.config import Settings
from jobtape.http import openapi, schemas, spool, upload
from jobtape.projections.repository import JobRepository
from jobtape.storage import Storage

__all__ = [
    "SUBMIT_SOURCES_STATE",
    "ClientId",
    "IdempotencyKey",
    "SameRequest",
    "SubmitSources",
    "accepted",
    "answer",
    "create_or_replay",
    "key_of",
    "owner_of",
]

#: The key of the app's :class:`SubmitSources` in ``app.state`` (:func:`jobtape.http.app.create_app`),
#: where a route's fast path (``jobtape.http.jobs.FastPath``), which has no dependencies, finds them.
SUBMIT_SOURCES_STATE = "jobtape_submit_sources"


class SubmitSources(NamedTuple):
    """What a create route uses, injected as the one dependency ``submit_sources`` (:func:`jobtape.http.app.create_app`).

    One dependency instead of five: Litestar resolves several dependencies of one handler
    in an anyio task group per request, a cost the submit benchmark (``bench/submit.py``)
    showed as in the poll (``PollSources``).

    Attributes:
        repository: appends ``job.created``.
        storage: where an upload is stored.
        settings: the limits (``max_active_jobs``, ``max_upload_bytes``, upload timeouts).
        spool_folder: where an upload's body is spooled while it arrives.
        upload_slots: how many uploads this process receives at once.
    """

    repository: JobRepository
    storage: Storage
    settings: Settings
    spool_folder: spool.SpoolFolder
    upload_slots: upload.UploadSlots


#: The ``X-Client-Id`` header: the job's owner with ``--auth off`` (not authenticated) or from a trusted
#: proxy; ignored with ``--auth required`` (see the module docstring).
ClientId = Annotated[
    str | None,
    HeaderParameter(
        name="X-Client-Id",
        required=False,
        schema_extra=openapi.OPTIONAL_STRING,
        max_length=200,
        description="Job owner (default 'anonymous') with --auth off, or named by a trusted proxy (--auth trusted-proxy); "
        "ignored with --auth required, where the owner is the token's.",
    ),
]

#: The ``Idempotency-Key`` header (see the module docstring).
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        schema_extra=openapi.OPTIONAL_STRING,
        max_length=255,
        description="Unique per X-Client-Id: a retry with the same key and body answers 200 with the job created "
        "before instead of creating another; the same key with another body is a 422",
    ),
]

#: ``same_request(earlier_params, params)``: whether a replayed key repeats the request that
#: created the job with ``earlier_params`` (the job types already match).
SameRequest = Callable[[dict[str, Any], dict[str, Any]], bool]


def owner_of(client_id: str | None) -> str:
    """The owner named by an ``X-Client-Id`` header: its stripped text, or ``anonymous``."""
    return (client_id or "").strip() or "anonymous"


def key_of(idempotency_key: str | None) -> str | None:
    """The idempotency key of an ``Idempotency-Key`` header: its stripped text, or ``None`` when blank or absent."""
    return (idempotency_key or "").strip() or None


def create_or_replay(
    repository: JobRepository,
    job_type: str,
    params: dict[str, Any],
    *,
    owner: str,
    idempotency_key: str | None,
    same_request: SameRequest,
    differs: str = "another request",
    actor: str = "api",
    **create_options: Any,
) -> tuple[str, str, bool]:
    """Append the job's ``job.created`` batch, or find the job an idempotent replay names (blocking).

    Args:
        repository: the job log.
        job_type: the type to create.
        params: the params to store.
        owner: the principal's owner (``Principal.owner``).
        idempotency_key: from :func:`key_of`.
        same_request: judges a replay of the same type (see :data:`SameRequest`).
        differs: how the 422 names a same-type request with another payload
            (``another source``, ``other params``).
        actor: the actor of the appended events: the principal's (``Principal.actor``).
        create_options: more :meth:`JobRepository.create` keywords (``job_id``,
            ``extra_events``, ``max_active_jobs``).

    Returns:
        ``(job_id, status, created)``; ``created`` is ``False`` for an idempotent replay, whose
        status is the earlier job's current one.

    Raises:
        errors.IdempotencyKeyReused: the key created a job of another type or payload (422).
        errors.DuplicateIdempotencyKey: the key's job is no longer readable (409).
        errors.QuotaExceeded: the owner is at ``max_active_jobs`` (429); nothing appended.
    """
    try:
        created = repository.create(job_type, params, owner=owner, idempotency_key=idempotency_key, actor=actor, **create_options)
    except errors.DuplicateIdempotencyKey:
        earlier = repository.find_by_idempotency_key(owner, idempotency_key)
        if earlier is None:  # its row went between the failed write and this read (archived): 409
            raise
        if earlier.job_type != job_type or not same_request(earlier.params, params):
            what = differs if earlier.job_type == job_type else "another request"
            raise errors.IdempotencyKeyReused(str(idempotency_key), earlier.job_type, earlier.job_id, what) from None
        return earlier.job_id, earlier.status, False
    return created.state.job_id, created.state.status, True


def accepted(job_id: str, status: str, created: bool) -> Response[schemas.JobAccepted]:
    """The answer of a create route: 202 ``{"success": true, "data": {"jobId", "status"}}``, 200 for a replay."""
    return answer(schemas.JobAccepted(data=schemas.JobAcceptedData(job_id=job_id, status=status)), created)


_Body = TypeVar("_Body")


def answer(body: _Body, created: bool) -> Response[_Body]:
    """A create route's answer with the body a route chose (a package's own name for :class:`schemas.JobAccepted`).

    Args:
        body: the answer's body.
        created: ``True``: 202 (a new job); ``False``: 200 (an idempotent replay).
    """
    return Response(body, status_code=202 if created else 200)
