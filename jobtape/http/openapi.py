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

import dataclasses
import re
from typing import Annotated, Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Discriminator, Example, OpenAPIType, Reference, Schema
from litestar.params import PathParameter
from litestar.types import OperationIDCreator

from jobtape.http import schemas

__all__ = [
    "JOB_ID_PATTERN",
    "OPTIONAL_STRING",
    "STORE_ERRORS",
    "STORE_READ_ERRORS",
    "JobIdPath",
    "error",
    "json_schema_object",
    "json_schema_to_openapi",
    "operation_id",
    "struct_schema",
]

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
    return json_schema_object(node)


def json_schema_to_openapi(node: dict[str, Any]) -> Schema | Reference:
    """Convert a JSON Schema node (as ``msgspec.json.schema`` writes it) into Litestar's OpenAPI objects.

    OpenAPI 3.1 schemas are JSON Schema 2020-12, so the conversion is one of names: each
    keyword becomes the :class:`Schema` field it is an alias of, sub-schemas are converted in
    turn, ``{"$ref": ...}`` becomes a :class:`Reference`. ``$defs`` is left out (the caller
    places the definitions among the document's components), and so is a keyword Litestar's
    :class:`Schema` has no field for.

    Args:
        node: a JSON Schema object.

    Returns:
        The schema, or a reference when ``node`` is one.
    """
    if "$ref" in node:
        return Reference(ref=node["$ref"])
    values: dict[str, Any] = {}
    for key, raw in node.items():
        name = _SCHEMA_FIELDS.get(key)
        if name is None:
            continue
        value: Any = raw
        if key == "type":
            value = OpenAPIType(raw) if isinstance(raw, str) else [OpenAPIType(item) for item in raw]
        elif key in _SUBSCHEMA and isinstance(raw, dict):
            value = json_schema_to_openapi(raw)
        elif key in _SUBSCHEMA_LISTS:
            value = [json_schema_to_openapi(child) for child in raw]
        elif key in _SUBSCHEMA_MAPS:
            value = {prop: json_schema_to_openapi(child) for prop, child in raw.items()}
        elif key == "discriminator":
            value = Discriminator(property_name=raw["propertyName"], mapping=raw.get("mapping"))
        values[name] = value
    return Schema(**values)


#: JSON Schema keyword -> the :class:`Schema` field that writes it.
_SCHEMA_FIELDS = {
    str(field.metadata.get("alias") or re.sub(r"_([a-z])", lambda m: m.group(1).upper(), field.name)): field.name
    for field in dataclasses.fields(Schema)
}
_SUBSCHEMA = {
    "not",
    "if",
    "then",
    "else",
    "items",
    "contains",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
}
_SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SUBSCHEMA_MAPS = {"properties", "patternProperties", "dependentSchemas"}


def json_schema_object(node: dict[str, Any]) -> Schema:
    """Like :func:`json_schema_to_openapi`, for a node that is a schema, not a ``$ref`` (a component's definition).

    Raises:
        ValueError: ``node`` is a reference.
    """
    converted = json_schema_to_openapi(node)
    if not isinstance(converted, Schema):
        raise ValueError(f"expected a schema, got a reference to {converted.ref}")
    return converted


_SEPARATORS = re.compile(r"[!#$%&'*+\-.^_`|~:]+")


def operation_id(handler_name: str) -> OperationIDCreator:
    """Litestar's default ``operationId`` (path components, then the handler's name), with the name given.

    A synchronous handler served on several paths (``/api/audio/jobs/...`` and ``/api/jobs/...``)
    would otherwise be named ``AsyncCallable`` by Litestar (it names the wrapper that runs it in a
    thread); the seed routes keep their ids (``ApiAudioJobsJobidGetJob``) and the generic ones get
    matching ids (``ApiJobsJobidGetJob``).

    Args:
        handler_name: the handler function's name, e.g. ``get_job``.
    """

    def create(route_handler: Any, http_method: Any, path_components: list[Any]) -> str:
        namespace = ""
        for component in (c if isinstance(c, str) else c.name for c in path_components):
            if component.title() not in namespace:
                namespace += component.title()
        return _SEPARATORS.sub("", namespace + handler_name.title())

    return create
