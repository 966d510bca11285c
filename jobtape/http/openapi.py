"""The OpenAPI document's building blocks: error responses, constrained parameters, msgspec body schemas.

Every error the API sends is ``{"error": "..."}`` (:mod:`jobtape.http.errors`); Litestar
would otherwise document its own ``{status_code, detail, extra}`` for the 400 it adds to
every route with parameters. Routes therefore declare their errors with :func:`error`
(and :data:`STORE_ERRORS` for those that read or append the event store), which keys them
by status code and so replaces Litestar's default. ``tests/unit/test_openapi_document.py``
checks that no 4xx/5xx in the document has another body.

Routes that read their body through msgspec (to answer 422 naming the field) cannot let
Litestar derive the request schema; :func:`struct_schema` builds it from msgspec's own JSON
Schema, so the documentation and the decoder share one source.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType, Schema
from litestar.params import PathParameter

from jobtape.http import schemas

__all__ = [
    "JOB_ID_PATTERN", "OPTIONAL_STRING", "STORE_ERRORS", "STORE_READ_ERRORS", "JobIdPath", "error", "struct_schema"]

#: A job id: 32 lowercase hexadecimal digits (``uuid.uuid4().hex``), anchored for msgspec and JSON Schema alike.
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"

#: The ``{jobId}`` path parameter. The pattern is documented here and checked by the handlers
#: (:func:`jobtape.http.jobs.check_job_id`: 400 ``jobId must be 32 hexadecimal characters``).
#: Handlers call their argument ``jobId``, not ``job_id``: Litestar names the OpenAPI path
#: parameter after the argument, and the seed contract's routes say ``/api/audio/jobs/{jobId}``.
JobIdPath = Annotated[
    str,
    PathParameter(
        description="The job id: 32 lowercase hexadecimal characters.",
        schema_extra={"pattern": JOB_ID_PATTERN, "minLength": 32, "maxLength": 32},
        examples=[Example(value="0123456789abcdef0123456789abcdef")],
    ),
]


#: ``schema_extra`` of an optional string parameter (``str | None = None``): a string when sent, absent
#: otherwise. Litestar documents ``str | None`` as ``oneOf: [string, null]``, but a header or query
#: parameter cannot be null: a client following that would send the text ``null``.
OPTIONAL_STRING: dict[str, Any] = {"oneOf": None, "type": OpenAPIType.STRING}


def error(description: str) -> ResponseSpec:
    """An error response of the document: the body ``{"error": "..."}`` (:class:`schemas.ErrorBody`).

    Args:
        description: when the route answers this status.
    """
    return ResponseSpec(schemas.ErrorBody, description=description)


#: The error of every route that reads the event store or storage (the Retry-After header comes
#: with a 503 the event store caused).
STORE_READ_ERRORS: dict[int, ResponseSpec] = {
    503: error("The event store is busy or cannot be reached, or the storage failed; retry after Retry-After seconds"),
}
#: The errors of every route that appends to the event store or stores a file.
STORE_ERRORS: dict[int, ResponseSpec] = {
    **STORE_READ_ERRORS,
    507: error("The server has no room to store this; retry later"),
}


def struct_schema(struct_type: type[msgspec.Struct], *, description: str | None = None) -> Schema:
    """The OpenAPI schema of a msgspec Struct (its ``$defs`` entry), titled after the Struct.

    Args:
        struct_type: the Struct the route decodes its body into.
        description: replaces the schema's description (default: the Struct's docstring).
    """
    document = msgspec.json.schema(struct_type)
    node = dict(document["$defs"][struct_type.__name__])
    if description is not None:
        node["description"] = description
    return _to_openapi(node)


def _to_openapi(node: dict[str, Any]) -> Schema:
    values: dict[str, Any] = {}
    for key, raw in node.items():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        value: Any = raw
        if key == "type":
            value = OpenAPIType(raw)
        elif key == "properties":
            value = {prop: _to_openapi(child) for prop, child in raw.items()}
        elif key in ("anyOf", "oneOf", "allOf"):
            value = [_to_openapi(child) for child in raw]
        values[name] = value
    return Schema(**values)
