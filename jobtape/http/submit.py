"""``POST /api/jobs``: create a job of any registered job type from ``{"type": ..., "params": {...}}``.

The job types are those of the app the server runs (``jobtape serve --app MODULE:ATTR``,
:func:`jobtape.http.app.create_app`'s ``job_types``) registered with ``http_submit=True``;
the audio jobs have their own routes (``/api/audio/...``), which check uploads and recipes.
The route reads its body itself, so that every problem is answered with a message that says
what to fix, and nothing is appended or stored before the body is fully checked:

- not JSON at all, or empty: 400; larger than :data:`MAX_BODY_BYTES`: 413;
- not ``{"type": <string>, "params": <object>}`` (a missing, extra or mistyped field): 422
  naming it (``Object missing required field `params```);
- a ``type`` that is not submittable here: 422 listing the ones that are;
- ``params`` that do not fit the type's msgspec type: 422 naming the field
  (``Expected `int`, got `str` - at `$.params.b```).

Then the job is created as every create route creates one (:mod:`jobtape.http.creation`):
owner and actor from the principal (:mod:`jobtape.http.auth`), the ``Idempotency-Key`` replay (the same type and params answer
200 with the first job; other params are a 422), the per-owner quota (429, guarded in SQL).

The OpenAPI document describes the body as a ``oneOf`` discriminated on ``type``: one
component ``JobRequest.<type>`` per submittable type, whose ``params`` is msgspec's JSON
Schema of the type's params (Structs as components ``JobParams.<name>``), so the document and
the decoder share one source.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Discriminator, OpenAPIMediaType, OpenAPIType, Operation, Reference, RequestBody, Schema

from jobtape import errors
from jobtape.auth import principal as auth
from jobtape.http import auth as http_auth
from jobtape.http import creation, openapi, schemas
from jobtape.jobtypes import JobTypeSpec

__all__ = ["MAX_BODY_BYTES", "ROUTE", "JobSubmission", "components", "submit_route", "submittable"]

#: The route, as :class:`errors.UnknownJobType` names it (``jobtape.Client`` matches the message).
ROUTE = "POST /api/jobs"
#: Largest accepted body, in bytes.
MAX_BODY_BYTES = 64 * 1024
#: Where the document's components of this route live: ``#/components/schemas/<prefix><name>``.
REQUEST_PREFIX = "JobRequest."
PARAMS_PREFIX = "JobParams."
_COMPONENTS = "#/components/schemas/"


class JobSubmission(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/jobs``.

    Attributes:
        type: a job type the server accepts over HTTP.
        params: the job's params, checked against the type's params type.
    """

    type: str
    params: dict[str, Any]


def submittable(job_types: Mapping[str, JobTypeSpec]) -> dict[str, JobTypeSpec]:
    """The job types ``POST /api/jobs`` accepts (``http_submit``), by name, sorted."""
    return {name: job_types[name] for name in sorted(job_types) if job_types[name].http_submit}


def read_submission(body: bytes, job_types: Mapping[str, JobTypeSpec]) -> tuple[JobTypeSpec, dict[str, Any]]:
    """Decode and check a ``POST /api/jobs`` body; return the job type and the params to store.

    Args:
        body: the request body.
        job_types: the submittable types (:func:`submittable`).

    Raises:
        ClientException: 400, the body is empty or not JSON.
        HTTPException: 422, the body is not ``{"type", "params"}``.
        errors.UnknownJobType: 422, the type is not one of ``job_types`` (the message lists them).
        errors.InvalidParams: 422, the params do not fit the type (the message names the field).
    """
    if not body.strip():
        raise ClientException(detail=f"the body is empty; send {_EXAMPLE}")
    try:
        submission = msgspec.json.decode(body, type=JobSubmission)
    except msgspec.ValidationError as exc:
        raise HTTPException(status_code=422, detail=f"the body is not a job request ({exc}); send {_EXAMPLE}") from None
    except msgspec.DecodeError as exc:
        raise ClientException(detail=f"the body is not valid JSON ({exc}); send {_EXAMPLE}") from None
    spec = job_types.get(submission.type)
    if spec is None:
        raise errors.UnknownJobType(submission.type, list(job_types), route=ROUTE)
    try:
        return spec, spec.encode_params(submission.params)
    except errors.InvalidParams as exc:  # msgspec's path starts at the params: name the body's field
        detail = exc.detail.replace(" - at `$", " - at `$.params") if " - at `$" in exc.detail else f"{exc.detail} - at `$.params`"
        raise errors.InvalidParams(spec.name, detail) from None


_EXAMPLE = '{"type": "<job type>", "params": {...}}'


async def _read_body(request: Request[Any, Any, Any]) -> bytes:
    too_large = f"the body is larger than {MAX_BODY_BYTES} bytes"
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise HTTPException(status_code=413, detail=too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(status_code=413, detail=too_large)
    return bytes(body)


def components(job_types: Mapping[str, JobTypeSpec]) -> dict[str, Schema]:
    """The OpenAPI components of the submittable types: ``JobRequest.<type>`` and the params' ``JobParams.<name>``.

    One ``msgspec.json.schema_components`` call over every params type, so two Structs of
    one name in different modules get distinct components (msgspec qualifies them).

    Args:
        job_types: the submittable types (:func:`submittable`).
    """
    specs = list(job_types.values())
    params, definitions = msgspec.json.schema_components(
        [spec.params_type for spec in specs], ref_template=f"{_COMPONENTS}{PARAMS_PREFIX}{{name}}"
    )
    found = {f"{PARAMS_PREFIX}{name}": openapi.json_schema_object(node) for name, node in definitions.items()}
    for spec, params_schema in zip(specs, params, strict=True):
        found[f"{REQUEST_PREFIX}{spec.name}"] = Schema(
            type=OpenAPIType.OBJECT,
            title=f"{spec.name} job",
            description=f"A '{spec.name}' job: its params as the job type declares them.",
            required=["type", "params"],
            properties={"type": Schema(type=OpenAPIType.STRING, const=spec.name), "params": openapi.json_schema_to_openapi(params_schema)},
            additional_properties=False,
        )
    return found


def _request_body(job_types: Mapping[str, JobTypeSpec]) -> RequestBody:
    references = {name: f"{_COMPONENTS}{REQUEST_PREFIX}{name}" for name in job_types}
    return RequestBody(
        required=True,
        description="The job type and its params, as JSON (at most 64 KiB). A body that does not fit answers 422 "
        "naming the field; one that is not JSON at all answers 400.",
        content={
            "application/json": OpenAPIMediaType(
                schema=Schema(
                    one_of=[Reference(ref=ref) for ref in references.values()],
                    discriminator=Discriminator(property_name="type", mapping=references),
                )
            )
        },
    )


def _same_params(earlier: dict[str, Any], params: dict[str, Any]) -> bool:
    return earlier == params


def submit_route(job_types: Mapping[str, JobTypeSpec]) -> HTTPRouteHandler:
    """The ``POST /api/jobs`` handler for these job types (only the ``http_submit`` ones are accepted).

    With no submittable type the route still answers (422, saying none is accepted) but is
    left out of the OpenAPI document, whose body schema would be an empty ``oneOf``.

    Args:
        job_types: the registered job types by name.
    """
    accepted = submittable(job_types)
    body_doc = _request_body(accepted)

    @dataclasses.dataclass
    class _SubmitOperation(Operation):
        """Documents the body the handler reads itself."""

        def __post_init__(self) -> None:
            self.request_body = body_doc

    names = ", ".join(f"'{name}'" for name in accepted)

    @post(
        "/api/jobs",
        status_code=202,
        operation_class=_SubmitOperation,
        include_in_schema=bool(accepted),
        summary="Submit a job",
        description=f"Creates a pending job of a registered job type ({names}) with its params; a worker runs it. "
        "Poll it at /api/jobs/{jobId}, follow it at /api/jobs/{jobId}/stream. Repeating an Idempotency-Key for "
        "the same X-Client-Id with the same type and params answers 200 with the job created before.",
        responses={
            200: ResponseSpec(schemas.JobAccepted, description="Idempotent replay: the job this Idempotency-Key created"),
            202: ResponseSpec(schemas.JobAccepted, description="The pending job"),
            400: openapi.error("The body is empty or not JSON at all"),
            409: openapi.error("Idempotency-Key conflict: the job it created is no longer readable"),
            413: openapi.error(f"The body is larger than {MAX_BODY_BYTES // 1024} KiB"),
            422: openapi.error(
                "The body is not {type, params}; the type is not one this server accepts (the message "
                "lists them); or the params do not fit the type (the message names the field). Or the "
                "Idempotency-Key was used before for another request"
            ),
            429: openapi.error("The owner has the maximum number of active jobs; see Retry-After"),
            **openapi.STORE_ERRORS,
        },
        tags=["jobs"],
        opt={http_auth.SCOPE_OPT: auth.JOBS_SUBMIT},
    )
    async def submit_job(
        request: Request[Any, Any, Any],
        submit_sources: NamedDependency[creation.SubmitSources],
        client_id: creation.ClientId = None,
        idempotency_key: creation.IdempotencyKey = None,
    ) -> Response[schemas.JobAccepted]:
        """Check the body and create the job: 202 with its id, or 200 for an idempotent replay.

        Raises:
            HTTPException: 400/413/422 for a body that does not fit (see :func:`read_submission`).
            errors.UnknownJobType: 422, a type this route does not accept (listing those it does).
            errors.InvalidParams: 422, naming the field.
            errors.IdempotencyKeyReused, errors.QuotaExceeded: see :func:`creation.create_or_replay`.
        """
        principal = http_auth.principal_of(request)
        spec, params = read_submission(await _read_body(request), accepted)
        create = functools.partial(
            creation.create_or_replay,
            submit_sources.repository,
            spec.name,
            params,
            owner=principal.owner,
            actor=principal.actor,
            idempotency_key=creation.key_of(idempotency_key),
            same_request=_same_params,
            differs="other params",
            max_active_jobs=submit_sources.settings.max_active_jobs,
        )
        return creation.accepted(*await anyio.to_thread.run_sync(create))

    return submit_job
