"""The ``noop`` job type of ``bench/throughput.py``: a jobtape app whose one handler does nothing.

Loaded by the real worker process the bench starts: ``PYTHONPATH=bench jobtape worker --app noop_app:app``.
"""

from __future__ import annotations

from typing import Any

import jobtape

app = jobtape.App()


@app.job_type("noop")
def noop(ctx: jobtape.JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Do nothing; the job completes with an empty result."""
    return {}
