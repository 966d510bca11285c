"""A user's app whose job writes a blob: the ``report`` type declares its output and its download.

``jobtape archive --app tests.apps.reports:app`` removes the blobs its jobs own: the input a
submit hands to the job (``owned_keys``) and the report the handler declares
(``ctx.output_written``); a poll links to the report (``ctx.set_download``); the object-storage
download route signs ``reports/`` keys (``app.downloadable``).
"""

from __future__ import annotations

from typing import Any

import msgspec

import jobtape


class Report(msgspec.Struct, forbid_unknown_fields=True):
    title: str
    input_key: str | None = None  # a blob the submitter stored and handed to the job
    fail: bool = False
    link: bool = True  # declare the download (without it the poll gets no downloadUrl)


def report_key(job_id: str) -> str:
    """Where the ``report`` job of ``job_id`` stores its output."""
    return f"reports/{job_id}.txt"


def install(app: jobtape.App) -> jobtape.App:
    """Register the ``report`` type and the ``reports/`` download prefix on ``app``."""
    app.downloadable("reports/")

    @app.job_type("report", timeout_s=60)
    def report(ctx: jobtape.JobContext, params: Report) -> dict[str, Any]:
        body = params.title.encode()
        if params.input_key is not None:
            body += b"\n" + b"".join(ctx.storage.open_stream(params.input_key))
        if params.fail:
            raise jobtape.JobFailed(f"could not report on {params.title!r}", retryable=False)
        key = report_key(ctx.job_id)
        ctx.output_written(key)
        if params.link:
            ctx.set_download(key)
        ctx.storage.put_stream(key, [body.upper()])
        return {"bytes": len(body)}

    return app


app = install(jobtape.App())
