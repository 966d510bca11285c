"""The client's decoding of error answers that a test server cannot be made to give on demand (503, 507, 500).

The pure function :func:`jobtape.client.raise_for_response` is fed the answers as the
server's error handler writes them (``{"error": ...}`` and ``Retry-After``); the other
statuses are exercised against a real server in tests/integration/test_client.py.
"""

from __future__ import annotations

import json

import httpx
import pytest

from jobtape import client, errors
from jobtape.http import submit

SUBMIT = client._Context("submit", job_type="primes", owner="alice")
POLL = client._Context("get", job_id="a" * 32)


def answer(status: int, body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers={"content-type": "application/json", **headers})


def test_a_store_outage_is_store_unavailable_with_the_pause_and_a_submit_in_doubt() -> None:
    with pytest.raises(errors.StoreUnavailable) as raised:
        client.raise_for_response(answer(503, b'{"error": "the event store is busy; retry shortly"}', **{"Retry-After": "7"}), SUBMIT)
    assert (raised.value.message, raised.value.retry_after_s, raised.value.in_doubt) == ("the event store is busy; retry shortly", 7, True)
    with pytest.raises(errors.StoreUnavailable) as read:
        client.raise_for_response(answer(503, b'{"error": "down"}'), POLL)
    assert (read.value.retry_after_s, read.value.in_doubt) == (2, False)


def test_a_full_disk_is_store_full_and_other_failures_are_server_error_with_their_status() -> None:
    with pytest.raises(errors.StoreFull, match="no room"):
        client.raise_for_response(answer(507, b'{"error": "the server has no room to store this; retry later"}'), SUBMIT)
    with pytest.raises(client.ServerError, match="internal server error") as failed:
        client.raise_for_response(answer(500, b'{"error": "internal server error; the server log has the details"}'), POLL)
    assert failed.value.status_code == 500
    with pytest.raises(client.ServerError, match="HTTP 502: Bad Gateway") as proxy:  # a proxy's HTML page, not jobtape's body
        client.raise_for_response(httpx.Response(502, content=b"", headers={"content-type": "text/html"}), POLL)
    assert proxy.value.status_code == 502


def test_a_route_the_server_lacks_is_request_rejected_not_job_not_found() -> None:
    with pytest.raises(client.RequestRejected, match="no route matches") as raised:
        client.raise_for_response(answer(404, b'{"error": "no route matches GET /api/jobs/x; the API is described at /schema"}'), POLL)
    assert raised.value.status_code == 404


def test_a_success_raises_nothing() -> None:
    client.raise_for_response(answer(200, b"{}"), POLL)


def test_a_conflict_without_a_class_of_its_own_is_the_conflict_group() -> None:
    with pytest.raises(errors.ConflictError, match="send the request again") as raised:
        client.raise_for_response(
            answer(409, b'{"error": "the job changed while this request ran; send the request again"}'),
            client._Context("cancel", job_id="a" * 32),
        )
    assert type(raised.value) is errors.ConflictError and raised.value.status_code == 409


def test_a_422_that_is_neither_a_type_nor_params_is_request_rejected_a_request_error() -> None:
    with pytest.raises(client.RequestRejected, match="not a job request") as raised:
        client.raise_for_response(answer(422, b'{"error": "the body is not a job request (Object missing required field `type`)"}'), SUBMIT)
    assert isinstance(raised.value, errors.RequestError) and raised.value.status_code == 422


@pytest.mark.parametrize(
    ("job_type", "accepted"),
    [
        ("product", ["primes", "sleep"]),
        ("none", []),  # a server with no submittable type
        ("it's", ["sum"]),  # repr quotes it with double quotes
        ("x" * 200, ["sum"]),  # the server repeats only the first 80 characters
    ],
)
def test_an_unknown_type_is_rebuilt_from_the_submit_routes_own_error(job_type: str, accepted: list[str]) -> None:
    # The body the server sends: its UnknownJobType, worded for the route (jobtape.http.submit).
    refused = errors.UnknownJobType(job_type, accepted, route=submit.ROUTE)
    body = json.dumps({"error": refused.message}).encode()
    with pytest.raises(errors.UnknownJobType) as raised:
        client.raise_for_response(answer(422, body), client._Context("submit", job_type=job_type, owner="alice"))
    assert (raised.value.job_type, raised.value.registered, raised.value.message, raised.value.status_code) == (
        job_type,
        accepted,
        refused.message,
        422,
    )


def test_the_clients_classes_are_the_trees() -> None:
    assert (client.RequestRejected, client.ServerError, client.ServerUnreachable, client.WaitTimedOut) == (
        errors.RequestRejected,
        errors.ServerError,
        errors.ServerUnreachable,
        errors.WaitTimedOut,
    )
    timed_out = errors.WaitTimedOut("a" * 32, 1.5)
    assert isinstance(timed_out, TimeoutError) and timed_out.status_code is None
