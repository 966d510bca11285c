"""A registered job type, as the HTTP API and the workers both see it: name, handler, params schema, limits.

:class:`JobTypeSpec` is what ``@app.job_type(...)`` (:mod:`jobtape.app`) records. It imports
no worker and no HTTP code, so ``jobtape.http`` (which decodes submitted params and documents
their schema) and ``jobtape.worker`` (through :class:`jobtape.app.App`, which turns a spec
into the worker's callable) can both use it while staying independent of each other (the
import-linter contracts in ``pyproject.toml``).

Params are checked with msgspec: :meth:`JobTypeSpec.decode_params` converts a JSON object
into the registered type (a msgspec Struct, any type ``msgspec.convert`` takes, or ``dict``
for any object), and :meth:`JobTypeSpec.params_schema` is msgspec's JSON Schema of that same
type, so the documentation and the decoder share one source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from jobtape import errors

__all__ = ["DownloadableKeys", "Handler", "JobTypeSpec", "KeyOwner"]

#: A job handler: ``handler(ctx: jobtape.JobContext, params) -> dict`` (the job's result, a JSON object).
Handler = Callable[..., Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class JobTypeSpec:
    """One registered job type.

    Attributes:
        name: the type's name, stored in the log forever (:data:`jobtape.eventlog.events.JOB_TYPE_PATTERN`).
        handler: ``handler(ctx, params) -> dict``.
        params_type: the msgspec type params are decoded into (``dict`` for any JSON object).
        timeout_s: seconds a job of this type may run from its claim; ``None``: the settings'.
        max_attempts: attempts before a retryable failure is final; ``None``: ``JOBTAPE_MAX_ATTEMPTS``.
        http_submit: whether ``POST /api/jobs`` accepts the type (``False`` for types created
            only through their own routes, like the audio jobs, or only in-process).
    """

    name: str
    handler: Handler
    params_type: Any = dict
    timeout_s: float | None = None
    max_attempts: int | None = None
    http_submit: bool = True

    def decode_params(self, params: Mapping[str, Any]) -> Any:
        """Decode stored or submitted params into :attr:`params_type`.

        Args:
            params: a JSON object's builtins (``str`` keys).

        Returns:
            An instance of :attr:`params_type` (a ``dict`` for ``dict``).

        Raises:
            errors.InvalidParams: a field is missing, extra (for a ``forbid_unknown_fields``
                Struct) or of the wrong type; the message names it (``... - at `$.b```).
        """
        try:
            return msgspec.convert(dict(params), self.params_type)
        except msgspec.ValidationError as exc:
            raise errors.InvalidParams(self.name, str(exc)) from exc

    def encode_params(self, params: Any) -> dict[str, Any]:
        """Check ``params`` (a dict or an instance of :attr:`params_type`) and return the JSON object to store.

        Raises:
            errors.InvalidParams: ``params`` is not an object, or see :meth:`decode_params`.
        """
        raw = msgspec.to_builtins(params) if isinstance(params, msgspec.Struct) else params
        if not isinstance(raw, Mapping):
            raise errors.InvalidParams(self.name, "params must be a JSON object")
        self.decode_params(raw)
        return dict(raw)

    def params_schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of the params, from msgspec (``msgspec.json.schema``).

        Returns:
            A self-contained schema: a Struct is a ``$ref`` into the schema's own ``$defs``;
            ``dict`` is ``{"type": "object"}`` (any object).
        """
        schema: dict[str, Any] = msgspec.json.schema(self.params_type)
        return schema


#: ``(event store, storage key) -> owner``, or ``None`` for a key no job output holds; blocking
#: (it reads a projection), called from a worker thread.
KeyOwner = Callable[[Any, str], "str | None"]


@dataclasses.dataclass(frozen=True)
class DownloadableKeys:
    """The keys the object-storage download route (``GET /api/storage/download?key=``) signs.

    Registered with :meth:`jobtape.App.downloadable`; a key outside every prefix gets 403.
    Only job outputs belong here, never uploads (a client's upload is not a download).

    Attributes:
        prefixes: key prefixes, e.g. ``("assets/", "previews/")`` for the audio app.
        what: how the 403 names them, e.g. ``prepared assets and previews``.
        owners: ``(prefix, lookup)`` pairs: the route answers a key under ``prefix`` only to
            the owner ``lookup(store, key)`` names (or ``admin``); another owner's key, or
            one the lookup does not know, is answered like a missing file (404, issue 11).
    """

    prefixes: tuple[str, ...] = ()
    what: str = "job outputs"
    owners: tuple[tuple[str, KeyOwner], ...] = ()

    def allows(self, key: str) -> bool:
        """Whether ``key`` starts with one of :attr:`prefixes` (none registered: no key)."""
        return bool(self.prefixes) and key.startswith(self.prefixes)

    def owner_lookup(self, key: str) -> KeyOwner | None:
        """The owner lookup registered for ``key``'s prefix, or ``None`` (the key is then a capability)."""
        for prefix, lookup in self.owners:
            if key.startswith(prefix):
                return lookup
        return None
