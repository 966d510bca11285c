"""A user's jobtape app, as a team would write one: loaded by ``jobtape worker --app sums:app`` in the tests."""

from __future__ import annotations

import sys
from typing import Any

import msgspec

import jobtape

app = jobtape.App()


class Sum(msgspec.Struct, forbid_unknown_fields=True):
    a: int
    b: int


@app.job_type("sum", timeout_s=60, max_attempts=3)
def add(ctx: jobtape.JobContext, params: Sum) -> dict[str, Any]:
    ctx.stage("adding")
    ctx.progress(50)
    return {"sum": params.a + params.b, "attempt": ctx.attempt}


@app.job_type("sleep")
def sleep(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.stage("sleeping")
    outcome = ctx.run_child([sys.executable, "-c", f"import time; time.sleep({float(params.get('seconds', 30))})"])
    return {"returncode": outcome.returncode}


@app.job_type("spin")
def spin(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
    ctx.stage("spinning")
    turns = 0
    while True:  # a long pure-Python loop stops within one check of a cancel
        ctx.check_cancelled()
        turns += 1
        if turns % 1000 == 0:
            ctx.progress(min(99, turns // 1000))
