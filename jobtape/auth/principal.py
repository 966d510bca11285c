"""The principal of a request: who calls, which owner's jobs they act on, and their scopes (pure).

Rules (issue 11, docs/security.md):

- ``id`` names the caller in the log (the actor of the events its requests append):
  ``key:<key id>`` (an API key), ``jwt:<sub>`` (a JWT), ``proxy:<owner>`` (the web app's
  backend in ``trusted-proxy`` mode), ``local:<owner>`` (``--auth off``).
- ``owner`` is whose jobs the caller acts on: the owner of the jobs it creates, the owner the
  active-job quota and the idempotency keys count, and the only owner whose jobs, assets and
  previews it may see (unless it holds ``admin``).
- ``scopes``: ``jobs:submit`` (create jobs), ``jobs:read`` (poll, events, stream, preview
  audio), ``jobs:cancel``, ``admin`` (any owner's jobs; implies every other scope).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from jobtape.auth import tokens

__all__ = [
    "ADMIN",
    "ALL_SCOPES",
    "AUTH_MODES",
    "JOBS_CANCEL",
    "JOBS_READ",
    "JOBS_SUBMIT",
    "LOCAL_ACTOR",
    "Principal",
    "local",
    "parse_scopes",
    "proxy",
]

JOBS_SUBMIT = "jobs:submit"
JOBS_READ = "jobs:read"
JOBS_CANCEL = "jobs:cancel"
ADMIN = "admin"
#: Every scope, in the order the docs list them (the API keys' :data:`jobtape.auth.tokens.SCOPES`).
ALL_SCOPES: tuple[str, ...] = tokens.SCOPES
assert ALL_SCOPES == (JOBS_SUBMIT, JOBS_READ, JOBS_CANCEL, ADMIN)
#: The values of ``--auth`` / ``JOBTAPE_AUTH``.
AUTH_MODES: tuple[str, ...] = ("off", "required", "trusted-proxy")
#: The actor of events appended in ``--auth off`` mode: ``api``, as before issue 11 (the demo's
#: history and logs written before keep the same actor).
LOCAL_ACTOR = "api"


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        id: ``key:<id>``, ``jwt:<sub>``, ``proxy:<owner>`` or ``local:<owner>``.
        owner: the owner the caller acts for (the jobs' ``owner``).
        scopes: a subset of :data:`ALL_SCOPES`.
        actor: the actor recorded on the events its requests append: :attr:`id`, except in
            ``--auth off`` mode (:data:`LOCAL_ACTOR`).
    """

    id: str
    owner: str
    scopes: frozenset[str]
    actor: str = ""

    def __post_init__(self) -> None:
        if not self.actor:
            object.__setattr__(self, "actor", self.id)

    @property
    def is_admin(self) -> bool:
        """Whether the principal holds ``admin`` (any owner's jobs, every scope)."""
        return ADMIN in self.scopes

    def allows(self, scope: str) -> bool:
        """Whether the principal holds ``scope`` (``admin`` holds every scope)."""
        return scope in self.scopes or self.is_admin

    def may_see(self, owner: str) -> bool:
        """Whether a job, asset or preview of ``owner`` is visible to the principal: its own, or any with ``admin``."""
        return self.is_admin or owner == self.owner


def parse_scopes(scopes: str | Iterable[str]) -> frozenset[str]:
    """The known scopes named by a space- or comma-separated text (a JWT ``scope`` claim) or an iterable.

    Unknown names are ignored (a token minted for other APIs may carry more scopes), unlike
    :func:`jobtape.auth.tokens.parse_scopes`, which refuses them when a key is created.
    """
    names = scopes.replace(",", " ").split() if isinstance(scopes, str) else list(scopes)
    return frozenset(name for name in names if name in ALL_SCOPES)


def local(owner: str) -> Principal:
    """The principal of ``--auth off`` mode: ``local:<owner>``, every scope, actor ``api``."""
    return Principal(id=f"local:{owner}", owner=owner, scopes=frozenset(ALL_SCOPES), actor=LOCAL_ACTOR)


def proxy(owner: str) -> Principal:
    """The principal of ``trusted-proxy`` mode: ``proxy:<owner>``, submit/read/cancel (no ``admin``)."""
    return Principal(id=f"proxy:{owner}", owner=owner, scopes=frozenset((JOBS_SUBMIT, JOBS_READ, JOBS_CANCEL)))
