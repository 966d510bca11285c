"""OpenAPI schemas for JSON bodies that routes decode themselves with msgspec.

Routes that read their body through msgspec (to answer 422 naming the field) cannot let
Litestar derive the request schema; this module builds it from msgspec's own JSON Schema,
so the documentation and the decoder share one source.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIType, Schema

__all__ = ["struct_schema"]


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
    for key, value in node.items():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        if key == "type":
            value = OpenAPIType(value)
        elif key == "properties":
            value = {prop: _to_openapi(child) for prop, child in value.items()}
        elif key in ("anyOf", "oneOf", "allOf"):
            value = [_to_openapi(child) for child in value]
        values[name] = value
    return Schema(**values)
