"""What an owner sees of a job's events: no server paths, host ids, pids or argv (pure).

The events routes and the SSE stream (generic and audio) pass each event's ``data`` and
``actor`` through :func:`redact` unless the principal holds ``admin`` (issue 11: "What an
owner sees of a job's events concerns them"). The fields removed, per event type:

==========================  ==========================================================
``job.claimed``             ``worker_id`` (``<host id>:<pid>:<n>``)
``job.lease_expired``       ``worker_id``, ``orphaned_pids``
``job.released``            ``worker_id``, ``orphaned_pids``
``job.child_started``       ``pid``, ``argv`` (server paths), ``host_id``, ``started_at_ticks``
``job.child_exited``        ``pid``
==========================  ==========================================================

A failure's ``error`` (``job.failed``, ``job.retry_scheduled``) names no server path already:
the worker scrubs it before it is recorded (:func:`jobtape.audio.media.scrub_paths`,
docs/jobs.md "Errors clients see"), so it is shown as recorded.

The actor of an event appended by a worker, a reaper or a sweep names a host
(``<host id>:<pid>:<n>``); it becomes :data:`SERVER_ACTOR`. The actors of API callers
(``key:``, ``jwt:``, ``proxy:``, ``local:``, and ``api``/``app`` of logs and embedders)
stay. ``data`` stays a JSON object, so the response schema (``EventView.data``: an object)
holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CALLER_ACTOR_PREFIXES", "HIDDEN_FIELDS", "SERVER_ACTOR", "redact", "redact_actor", "redact_data"]

#: The fields an owner does not see, per event type (the names the events route shows).
HIDDEN_FIELDS: Mapping[str, frozenset[str]] = {
    "job.claimed": frozenset({"worker_id"}),
    "job.lease_expired": frozenset({"worker_id", "orphaned_pids"}),
    "job.released": frozenset({"worker_id", "orphaned_pids"}),
    "job.child_started": frozenset({"pid", "argv", "host_id", "started_at_ticks"}),
    "job.child_exited": frozenset({"pid"}),
}
#: The actor an owner sees for an event a server process (worker, reaper, sweep) appended.
SERVER_ACTOR = "server"
#: Actors that name an API caller, shown as recorded.
CALLER_ACTOR_PREFIXES = ("key:", "jwt:", "proxy:", "local:")
_CALLER_ACTORS = frozenset({"api", "app"})


def redact_data(event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` of an event of ``event_type`` as an owner sees it (see the module docstring).

    Args:
        event_type: the event's type (``job.child_started``).
        data: its fields as the events route shows them (the names the events route shows).

    Returns:
        A new dict; unknown event types are returned whole.
    """
    hidden = HIDDEN_FIELDS.get(event_type, frozenset())
    return {name: value for name, value in data.items() if name not in hidden}


def redact_actor(actor: str) -> str:
    """The actor as an owner sees it: an API caller's as recorded, a server process's as :data:`SERVER_ACTOR`."""
    if actor in _CALLER_ACTORS or actor.startswith(CALLER_ACTOR_PREFIXES):
        return actor
    return SERVER_ACTOR


def redact(event_type: str, data: Mapping[str, Any], actor: str) -> tuple[dict[str, Any], str]:
    """``(data, actor)`` of one event as an owner sees it (:func:`redact_data`, :func:`redact_actor`)."""
    return redact_data(event_type, data), redact_actor(actor)
