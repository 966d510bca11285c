"""Error responses: the ONE table from jobtape errors to HTTP status codes, and the handlers.

Every error the API answers has the body ``{"error": "<what went wrong and what to fix>"}``
(the cancel route's 409 adds ``"status"``). That holds for domain errors (mapped by
:data:`STATUS_CODES`), for Litestar's own errors (validation, unknown route, wrong
method, body too large) and for unexpected exceptions (500, logged with the traceback).

Handlers raise :class:`litestar.exceptions.HTTPException` for problems that only exist at
the HTTP level (a bad upload, a malformed job id); its ``detail`` becomes ``error`` and a
dict ``extra`` is merged into the body.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)

from jobtape import errors

__all__ = ["STATUS_CODES", "error_response", "exception_handlers", "status_for"]

logger = logging.getLogger(__name__)

#: jobtape error class -> (HTTP status, fixed message or ``None`` to use the error's own).
#: Looked up along the exception's MRO, so a subclass without a row gets its parent's.
STATUS_CODES: Mapping[type[errors.JobtapeError], tuple[int, str | None]] = {
    errors.JobNotFound: (404, "Job not found"),
    errors.BlobNotFound: (404, None),
    errors.InvalidStorageKey: (400, None),
    errors.DuplicateIdempotencyKey: (409, None),
    errors.IdempotencyKeyReused: (422, None),
    errors.SourceUrlRefused: (422, None),
    errors.QuotaExceeded: (429, None),
    errors.AssetNotFound: (404, "Asset not found"),
    errors.AssetFileGone: (410, None),
    errors.InvalidRecipe: (422, None),
    errors.InvalidParams: (422, None),
    errors.UnknownJobType: (422, None),
    errors.InvalidTimeSpec: (422, None),
    errors.InvalidSignature: (403, None),
    errors.IllegalTransition: (409, None),
    errors.ConcurrencyError: (409, "the job changed while this request ran; send the request again"),
    errors.StoreBusy: (503, "the event store is busy; retry shortly"),
    errors.StoreUnavailable: (503, None),
    errors.StoreFull: (507, "the server has no room to store this; retry later"),
    errors.StoreAuthRejected: (503, "the event store refused this server's credentials; the server log has the details"),
    errors.StorageError: (503, None),
    errors.MediaError: (502, None),
    errors.MalformedEvent: (500, None),
    errors.ConstraintViolation: (409, "a guard of the event log refused this change; nothing was written; read the job and retry"),
    # The groups (jobtape.errors): a new member answers its group's status until it has a row.
    errors.RequestError: (422, None),
    errors.ConflictError: (409, None),
    errors.StoreError: (503, None),
    errors.JobError: (500, None),
    errors.JobtapeError: (500, None),
}


def status_for(exc: errors.JobtapeError) -> tuple[int, str]:
    """Look up the status code and message for a jobtape error.

    Args:
        exc: the error.

    Returns:
        ``(status, message)``: the table row of the nearest class in ``exc``'s MRO.
    """
    for cls in type(exc).__mro__:
        row = STATUS_CODES.get(cls)
        if row is not None:
            status, message = row
            return status, message or exc.message
    return 500, exc.message  # pragma: no cover - JobtapeError is in the table


def error_response(
    status_code: int,
    message: str,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """Build a JSON error response ``{"error": message, **extra}``.

    Args:
        status_code: the HTTP status.
        message: what went wrong and what to fix.
        extra: more top-level fields (``error`` cannot be overridden).
        headers: response headers (e.g. ``Allow`` for a 405).
    """
    body: dict[str, Any] = {**(extra or {}), "error": message}
    return Response(content=body, status_code=status_code, media_type=MediaType.JSON, headers=dict(headers or {}))


def _describe_validation(exc: ValidationException) -> str:
    problems = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for item in problems:
        if isinstance(item, dict):
            where = " ".join(str(getattr(item[k], "value", item[k])) for k in ("source", "key") if item.get(k))
            parts.append(f"{where}: {item.get('message', 'invalid')}" if where else str(item.get("message", item)))
        else:
            parts.append(str(item))
    return f"{exc.detail}: {'; '.join(parts)}" if parts else exc.detail


def _handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else ""
    message = exc.detail
    if isinstance(exc, ValidationException):
        message = _describe_validation(exc)
    elif isinstance(exc, NotFoundException) and message == phrase:
        message = f"no route matches {request.method} {request.url.path}; the API is described at /schema"
    elif isinstance(exc, MethodNotAllowedException) and message == phrase:
        allowed = (exc.headers or {}).get("allow", "")
        message = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
    elif exc.status_code == 413 and message == phrase:
        message = "the request body is too large"
    extra = exc.extra if isinstance(exc.extra, dict) else None
    return error_response(exc.status_code, message, extra=extra, headers=exc.headers)


def _handle_domain(request: Request[Any, Any, Any], exc: errors.JobtapeError) -> Response[dict[str, Any]]:
    status_code, message = status_for(exc)
    headers = {}
    if isinstance(exc, errors.StoreUnavailable):  # expected while the store restarts: no traceback
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
        headers["Retry-After"] = str(exc.retry_after_s)
    elif isinstance(exc, errors.StoreFull):  # an operator's matter, not a bug: one line, no traceback
        logger.error("%s %s: %s", request.method, request.url.path, exc)
    elif status_code >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
    if isinstance(exc, errors.QuotaExceeded):
        headers["Retry-After"] = str(exc.retry_after_s)
    return error_response(status_code, message, headers=headers)


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; the server log has the details")


def exception_handlers() -> dict[type[Exception], Callable[[Request[Any, Any, Any], Any], Response[Any]]]:
    """The app-level exception handlers (Litestar picks the most specific class)."""
    return {
        HTTPException: _handle_http,
        errors.JobtapeError: _handle_domain,
        Exception: _handle_unexpected,
    }
