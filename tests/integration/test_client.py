"""``jobtape.Client`` and ``jobtape.AsyncClient`` against a real ``jobtape serve --app starter.jobs:app``.

Every error the server answers comes back as the exception tree's class with the server's
message; ``wait`` follows the SSE stream and, when the connection drops, resumes it with
``Last-Event-ID`` (a real TCP relay in between is cut mid-stream).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from serving import jobtape_serve  # type: ignore[import-not-found]
from tcp_relay import TcpRelay  # type: ignore[import-not-found]

import jobtape
from jobtape import client as client_module
from jobtape import errors

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def starter_pythonpath() -> str:
    return os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))


def primes_below(limit: int) -> list[int]:
    sieve = [True] * limit
    for number in range(2, int(limit**0.5) + 1):
        if sieve[number]:
            sieve[number * number :: number] = [False] * len(range(number * number, limit, number))
    return [number for number in range(2, limit) if sieve[number]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("client") / "data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", starter_pythonpath())
        patch.setenv("JOBTAPE_DATA_DIR", str(data_dir))
        with jobtape_serve(data_dir, "--app", "starter.jobs:app", "--concurrency", "4") as base_url:
            yield base_url


def test_submit_wait_get_and_events_over_http(server: str) -> None:
    with jobtape.Client(server, client_id="alice") as client:
        job_id = client.submit("primes", {"limit": 5000})
        view = client.wait(job_id, timeout_s=60)
        primes = primes_below(5000)
        assert (view.job_id, view.type, view.status, view.finished) == (job_id, "primes", "complete", True)
        assert view.result == {"count": len(primes), "largest": primes[-1]}
        assert client.get(job_id) == view
        events = client.events(job_id)
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        assert (events[0].type, events[0].data["owner"], events[-1].type) == ("job.created", "alice", "job.completed")
        first = events[0].recorded_at
        assert [e.type for e in client.events(job_id, as_of=first)] == ["job.created"]
        assert client.get(job_id, as_of=first).status == "pending"


class Limit(msgspec.Struct):
    limit: int


def test_a_struct_is_sent_as_params_and_an_idempotency_key_names_one_job(server: str) -> None:
    with jobtape.Client(server, client_id="bob") as client:
        job_id = client.submit("primes", Limit(limit=100), idempotency_key="order-17")
        assert client.submit("primes", {"limit": 100}, idempotency_key="order-17") == job_id
        assert client.wait(job_id, timeout_s=60).result == {"count": 25, "largest": 97}
        with pytest.raises(errors.IdempotencyKeyReused, match="order-17") as reused:
            client.submit("primes", {"limit": 101}, idempotency_key="order-17")
        assert reused.value.status_code == 422


def test_the_servers_errors_are_the_exception_trees_classes_with_its_message(server: str) -> None:
    with jobtape.Client(server) as client:
        with pytest.raises(errors.UnknownJobType) as unknown:
            client.submit("product", {"a": 1})
        assert (unknown.value.job_type, unknown.value.registered) == ("product", ["primes", "sleep"])
        assert unknown.value.message.endswith("primes, sleep")

        with pytest.raises(errors.InvalidParams, match=r"\$\.params\.limit") as invalid:
            client.submit("primes", {"limit": "many"})
        assert invalid.value.job_type == "primes" and "$.params.limit" in invalid.value.detail
        with pytest.raises(errors.InvalidParams, match=r"\$\.params\.limit"):
            client.submit("primes", {"limit": 1})  # below the Struct's ge=2
        with pytest.raises(errors.InvalidParams, match="unknown field `secnds`"):
            client.submit("sleep", {"seconds": 1, "secnds": 2})  # forbid_unknown_fields

        missing = "0" * 32
        with pytest.raises(errors.JobNotFound) as not_found:
            client.get(missing)
        assert (not_found.value.job_id, not_found.value.message, not_found.value.status_code) == (missing, "Job not found", 404)
        for call in (client.cancel, client.events, lambda job_id: client.wait(job_id, timeout_s=10)):
            with pytest.raises(errors.JobNotFound):
                call(missing)

        with pytest.raises(client_module.RequestRejected, match="32 hexadecimal") as rejected:
            client.get("not-a-job-id")
        assert rejected.value.status_code == 400

        job_id = client.submit("primes", {"limit": 10})
        client.wait(job_id, timeout_s=60)
        with pytest.raises(errors.InvalidTimeSpec) as bad_time:
            client.get(job_id, as_of="the day before")
        assert bad_time.value.text == "the day before"
        with pytest.raises(ValueError, match="aware"):
            client.events(job_id, as_of=dt.datetime(2026, 1, 1))
        with pytest.raises(errors.IllegalTransition, match="terminal") as finished:
            client.cancel(job_id)
        assert (finished.value.status, finished.value.job_id) == ("complete", job_id)
        for raised in (unknown, invalid, not_found, rejected, bad_time, finished):
            assert isinstance(raised.value, errors.JobtapeError)


def test_wait_gives_up_at_its_deadline_and_the_job_goes_on(server: str) -> None:
    with jobtape.Client(server) as client:
        job_id = client.submit("sleep", {"seconds": 600})
        with pytest.raises(client_module.WaitTimedOut, match="did not finish within 0.5 s") as timed_out:
            client.wait(job_id, timeout_s=0.5)
        assert isinstance(timed_out.value, TimeoutError) and timed_out.value.job_id == job_id
        assert client.get(job_id).status in ("pending", "processing")
        client.cancel(job_id)
        view = client.wait(job_id, timeout_s=60)
        assert (view.status, view.finished) == ("cancelled", True)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_server_that_cannot_be_reached_is_server_unreachable() -> None:
    with jobtape.Client(f"http://127.0.0.1:{_closed_port()}", timeout_s=5) as client:
        with pytest.raises(client_module.ServerUnreachable, match="cannot reach the jobtape server"):
            client.submit("primes", {"limit": 10})
        with pytest.raises(client_module.ServerUnreachable):
            client.wait("0" * 32, timeout_s=30)


def _wait_in_thread(wait: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["view"] = wait()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _whole_message_with_id(answer: bytes) -> bool:
    """Whether ``answer`` holds a server-sent event with an ``id:`` line and the blank line that ends it."""
    return re.search(rb"(?m)^id: [^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n", answer) is not None


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_wait_resumes_a_dropped_stream_with_last_event_id(server: str, flavour: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    with TcpRelay(port) as relay, jobtape.Client(server) as direct:
        job_id = direct.submit("sleep", {"seconds": 600})
        wait_for(lambda: "job.child_started" in [e.type for e in direct.events(job_id)], 60, "the sleep child")

        def wait() -> Any:
            if flavour == "sync":
                with jobtape.Client(relay.url) as through_relay:
                    return through_relay.wait(job_id, timeout_s=60)

            async def main() -> Any:
                async with jobtape.AsyncClient(relay.url) as through_relay:
                    return await through_relay.wait(job_id, timeout_s=60)

            return asyncio.run(main())

        thread, outcome = _wait_in_thread(wait)
        # The state message (id = the version it was folded to) has come through whole, up to the
        # blank line that ends it (a client dispatches a message only then): then the wire breaks.
        wait_for(lambda: relay.requests_with("/stream") and _whole_message_with_id(relay.answered(0)), 30, "the stream's first message")
        relay.cut()
        resumed = wait_for(lambda: relay.requests_with("last-event-id"), 30, "a reconnect with Last-Event-ID")
        assert f"/api/jobs/{job_id}/stream" in resumed[0]
        direct.cancel(job_id)
        thread.join(60)
        assert "error" not in outcome, outcome
        assert (outcome["view"].status, outcome["view"].finished) == ("cancelled", True)
        assert "job.cancelled" in [e.type for e in direct.events(job_id)]


def test_async_client_submits_waits_cancels_and_raises_the_same_errors(server: str) -> None:
    async def main() -> None:
        async with jobtape.AsyncClient(server, client_id="carol") as client:
            job_id = await client.submit("primes", {"limit": 1000})
            view = await client.wait(job_id, timeout_s=60)
            assert (view.status, view.result) == ("complete", {"count": 168, "largest": 997})
            assert await client.get(job_id) == view
            assert [e.type for e in await client.events(job_id)][-1] == "job.completed"
            with pytest.raises(errors.IllegalTransition):
                await client.cancel(job_id)
            with pytest.raises(errors.JobNotFound):
                await client.get("f" * 32)
            with pytest.raises(errors.UnknownJobType):
                await client.submit("nope", {})
            sleeper = await client.submit("sleep", {"seconds": 600})
            with pytest.raises(client_module.WaitTimedOut):
                await client.wait(sleeper, timeout_s=0.3)
            await client.cancel(sleeper)
            assert (await client.wait(sleeper, timeout_s=60)).status == "cancelled"

    asyncio.run(main())


def test_quota_exceeded_carries_the_limit_and_retry_after(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", starter_pythonpath())
        with (
            jobtape_serve(data_dir, "--app", "starter.jobs:app", "--max-active-jobs", "1", workers=0) as base_url,
            jobtape.Client(base_url, client_id="dave") as client,
        ):
            client.submit("sleep", {"seconds": 1})
            with pytest.raises(errors.QuotaExceeded) as quota:
                client.submit("sleep", {"seconds": 1})
            assert (quota.value.owner, quota.value.max_active_jobs, quota.value.status_code) == ("dave", 1, 429)
            assert quota.value.retry_after_s > 0
            assert "dave" in quota.value.message


def test_the_clients_bodies_decode_what_the_server_encodes() -> None:
    from jobtape.http import schemas

    for mine, theirs in ((client_module.JobView, schemas.JobView), (client_module.EventView, schemas.EventView)):
        assert [(f.name, f.encode_name, f.type) for f in msgspec.structs.fields(mine)] == [
            (f.name, f.encode_name, f.type) for f in msgspec.structs.fields(theirs)
        ]
