"""Error responses: jobtape errors to HTTP status codes, and the handlers.

Every error the API answers has the body ``{"error": "<what went wrong and what to fix>"}``
(the cancel route's 409 adds ``"status"``). That holds for domain errors (their status
from :func:`status_for`), for Litestar's own errors (validation, unknown route, wrong
method, body too large) and for unexpected exceptions (500, logged with the traceback).

A domain error's status is declared by its class (:attr:`jobtape.errors.JobtapeError.http_status`
and ``http_message``, read along the MRO: a class that declares none answers its group's),
so this module names no error class for its status: a package's error (the audio
package's ``AssetNotFound``, a user's ``RequestError`` subclass) gets its 4xx by declaring it.

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

__all__ = ["error_response", "exception_handlers", "status_for"]

logger = logging.getLogger(__name__)


def status_for(exc: errors.JobtapeError) -> tuple[int, str]:
    """Look up the status code and message the API answers a jobtape error with.

    The first class along ``type(exc).__mro__`` that declares ``http_status`` in its own
    body gives the status and its ``http_message`` (``None``: the error's own message);
    :class:`jobtape.errors.JobtapeError` declares 500, each group its own.

    Args:
        exc: the error.

    Returns:
        ``(status, message)``.
    """
    for cls in type(exc).__mro__:
        declared = vars(cls)
        if "http_status" in declared:
            return int(declared["http_status"]), declared.get("http_message") or exc.message
    return 500, exc.message  # pragma: no cover - JobtapeError declares it


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
