"""The JSON body of the edit routes: read it (bounded), decode it into a recipe, document it.

The routes read the body here rather than through Litestar's ``data`` parameter, whose
validation would answer 400 before the recipe rules run: here every recipe problem (not a
JSON object, an unknown or missing field, a wrong type, a value out of range) is an
:class:`audio_errors.InvalidRecipe`, which :mod:`jobtape.http.errors` maps to 422 naming the
field (issue 3). Only a body that is not JSON at all answers 400, and one over
:data:`MAX_JSON_BYTES` 413. Nothing is appended in any of these cases: they raise before
the route creates a job. The OpenAPI request body is :class:`recipes.Recipe`'s JSON
Schema, its ``msgspec.Meta`` bounds included as ``minimum``/``maximum``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, HTTPException
from litestar.openapi.spec import (
    OpenAPIMediaType,
    Operation,
    RequestBody,
    Schema,
)

from jobtape.audio import recipes
from jobtape.http import openapi

__all__ = ["MAX_JSON_BYTES", "RecipeOperation", "read_recipe", "recipe_schema"]

#: Largest accepted recipe body, in bytes.
MAX_JSON_BYTES = 16 * 1024


async def read_recipe(request: Request[Any, Any, Any]) -> recipes.Recipe:
    """Read the request body (at most :data:`MAX_JSON_BYTES`) and decode it as a recipe.

    Args:
        request: a request whose body should be a JSON recipe (the Content-Type is not checked).

    Returns:
        The recipe as sent; :func:`recipes.validate` checks it against its asset.

    Raises:
        HTTPException: 413 for a body over :data:`MAX_JSON_BYTES`.
        ClientException: 400 for a body that is empty or not JSON at all (truncated, a syntax error).
        audio_errors.InvalidRecipe: a JSON body that is not a recipe (422, names the field); see
            :func:`recipes.decode`.
    """
    too_large = f"the recipe body is larger than {MAX_JSON_BYTES} bytes"
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise HTTPException(status_code=413, detail=too_large)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise HTTPException(status_code=413, detail=too_large)
    if not body.strip():
        raise ClientException(detail=f"the body is empty; send a JSON recipe such as {recipes.EXAMPLE}")
    try:
        return recipes.decode(bytes(body))
    except msgspec.DecodeError as exc:
        raise ClientException(detail=f"the body is not valid JSON ({exc}); send a recipe such as {recipes.EXAMPLE}") from None


def recipe_schema() -> Schema:
    """The OpenAPI schema of :class:`recipes.Recipe` (title ``Recipe``), from msgspec's JSON Schema."""
    return openapi.struct_schema(recipes.Recipe, description="An edit recipe (camelCase). Times in seconds, gain in dB, loudness in LUFS.")


_REQUEST_BODY = RequestBody(
    required=True,
    description="The edit recipe as JSON. A body that is not a recipe answers 422 naming the field; "
    "one that is not JSON at all answers 400.",
    content={"application/json": OpenAPIMediaType(schema=recipe_schema())},
)


@dataclasses.dataclass
class RecipeOperation(Operation):
    """Documents the recipe body that the edit routes read themselves (see the module docstring)."""

    def __post_init__(self) -> None:
        self.request_body = _REQUEST_BODY
