"""Two job types on one :class:`jobtape.App`, served with ``jobtape serve --app starter.jobs:app``.

- ``primes``: pure Python. Counts the primes below ``limit`` in a long loop that checks
  for a cancel (``ctx.check_cancelled()``) and reports its progress (``ctx.progress()``)
  as it goes, so a cancel stops it within one turn.
- ``sleep``: a subprocess. Runs ``sleep SECONDS`` with ``ctx.run_child``: the child is
  recorded (``job.child_started`` / ``job.child_exited``) and killed (SIGTERM, then
  SIGKILL) when the job is cancelled, times out, or its worker loses the lease.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec

import jobtape

app = jobtape.App()  # settings from the environment, as the CLI reads them (JOBTAPE_DATA_DIR, ...)


class Primes(msgspec.Struct, forbid_unknown_fields=True):
    """Params of ``primes``: count the primes below ``limit``."""

    limit: Annotated[int, msgspec.Meta(ge=2, le=100_000_000, description="Count the primes below this number")]


@app.job_type("primes", timeout_s=600, max_attempts=1)
def count_primes(ctx: jobtape.JobContext, params: Primes) -> dict[str, Any]:
    """Count the primes below ``params.limit`` by trial division: deliberately slow, and cancellable."""
    ctx.stage("counting")
    count, largest = 0, None
    for number in range(2, params.limit):
        ctx.check_cancelled()  # raises once the job is cancelled (or timed out): let it propagate
        if all(number % divisor for divisor in range(2, math.isqrt(number) + 1)):
            count, largest = count + 1, number
        ctx.progress(number * 100 // params.limit)  # throttled by the engine: cheap to call often
    return {"count": count, "largest": largest}


class Sleep(msgspec.Struct, forbid_unknown_fields=True):
    """Params of ``sleep``: how long the child sleeps."""

    seconds: Annotated[float, msgspec.Meta(ge=0, le=3600, description="Seconds the child process sleeps")] = 30


@app.job_type("sleep", timeout_s=3700)
def sleep(ctx: jobtape.JobContext, params: Sleep) -> dict[str, Any]:
    """Run ``sleep`` as a child process; a cancel kills it."""
    ctx.stage("sleeping")
    outcome = ctx.run_child(["sleep", f"{params.seconds:g}"])
    if outcome.returncode != 0:
        raise jobtape.JobFailed(f"sleep exited with {outcome.returncode}: {outcome.stderr.strip()[-500:]}")
    return {"slept_s": params.seconds}
