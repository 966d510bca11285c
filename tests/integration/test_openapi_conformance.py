"""The OpenAPI document tells the truth: schemathesis (all checks) against a real ``jobtape serve``.

A real server process on 127.0.0.1, ``--auth required`` (issue 11: the run covers the
authenticated API; schemathesis sends an admin API key made with ``jobtape keys create`` as
``Authorization: Bearer``, and its ``ignored_auth`` check sends requests without it, which
must answer 401), with a fresh data dir and one embedded worker (so the
jobs the run creates finish, and their event streams close), holding a real asset and a
real preview that ``schemathesis.toml`` names (so the byte routes answer 200/206, not only
404); schemathesis's CLI
(``st run``) reads ``/schema/openapi.json`` and sends generated requests, valid and invalid,
to every operation, checking each answer: no 5xx, only documented status codes, content
types, headers and bodies as documented, schema-invalid requests refused, schema-valid ones
accepted. The run is bounded (a fixed seed, :data:`MAX_EXAMPLES` per operation and phase)
so it takes about a minute on two cores. The one per-operation setting is in
``schemathesis.toml`` beside this file, with its reason. A second run serves a user's app
(``serve --app tests.apps.sums:app``) and checks the generic ``/api/jobs`` routes, with
``schemathesis-app.toml``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import wait_for  # type: ignore[import-not-found]  # tests/ is on sys.path
from serving import jobtape_serve  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[2]
MEDIA = ROOT / "media"

CONFIG = Path(__file__).with_name("schemathesis.toml")
APP_CONFIG = Path(__file__).with_name("schemathesis-app.toml")
#: Test cases per operation and phase: enough to hit every parameter's bounds, bounded in time.
MAX_EXAMPLES = 25
SEED = 9


def admin_key(data_dir: Path) -> str:
    """A new API key with the ``admin`` scope in ``data_dir``'s log (``jobtape keys create --quiet``); its token."""
    command = [sys.executable, "-m", "jobtape", "keys", "create", "--owner", "ops", "--scope", "admin", "--data-dir", str(data_dir), "-q"]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout.strip()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``jobtape serve --workers 1 --auth required`` on a free loopback port, holding a real asset and a real preview.

    Yields:
        The base URL, and the environment that names the data for ``schemathesis.toml``
        (``JOBTAPE_CONFORMANCE_TOKEN``: the admin key schemathesis sends).
    """
    token = admin_key(tmp_path / "data")
    with (
        jobtape_serve(tmp_path / "data", "--auth", "required", workers=1) as base_url,
        httpx.Client(base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client,
    ):
        files = {"file": ("speech.wav", (MEDIA / "speech_ljspeech.wav").read_bytes(), "audio/wav")}
        ingest = _finished(client, client.post("/api/audio/ingest", files=files).json()["data"]["jobId"])
        recipe = {"assetId": ingest["result"]["assetId"], "startSec": 0.5, "endSec": 1.5}
        preview = _finished(client, client.post("/api/audio/edit/preview", json=recipe).json()["data"]["jobId"])
        link = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(preview["downloadUrl"]).query))
        yield (
            base_url,
            {
                "JOBTAPE_CONFORMANCE_PREVIEW_JOB": preview["jobId"],
                "JOBTAPE_CONFORMANCE_KEY": link["key"],
                "JOBTAPE_CONFORMANCE_EXPIRES": link["expires"],
                "JOBTAPE_CONFORMANCE_SIGNATURE": link["signature"],
                "JOBTAPE_CONFORMANCE_TOKEN": token,
            },
        )


def _finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def complete() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/api/audio/jobs/{job_id}").json()
        assert view["status"] not in ("failed", "cancelled"), view
        return view if view["status"] == "complete" else None

    found: dict[str, Any] = wait_for(complete, timeout_s=120, what=f"job {job_id} to complete")
    return found


def _schemathesis(base_url: str, tmp_path: Path, env: dict[str, str], *options: str, config: Path = CONFIG) -> dict[str, Any]:
    """Run schemathesis (all checks) against the server's document; return its JSON report, asserting a clean run."""
    report_dir = tmp_path / "report"
    # One schemathesis worker: with two threads, CPython 3.11.7's ast.parse (which hypothesis calls to
    # describe filter lambdas) can fail with "SystemError: AST constructor recursion depth mismatch"
    # (a thread-safety bug in the interpreter, not in the API under test).
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{base_url}/schema/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--report",
        "json",
        "--report-dir",
        str(report_dir),
        "--no-color",
        *options,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,  # its cache goes there
        env={**os.environ, **env, "SCHEMATHESIS_TELEMETRY": "false"},
    )
    reports = list(report_dir.glob("json-*.json"))
    assert reports, done.stdout[-5000:] + done.stderr[-5000:]
    report: dict[str, Any] = json.loads(reports[0].read_text())
    cases = report["test_cases"]
    summary = f"{cases['generated']} cases, {cases['unique_failures']} failures, {len(report['errors'])} errors; phases {report['phases']}"
    print(summary)
    assert report["complete"] and report["failures"] == [] and report["errors"] == [], summary + "\n" + done.stdout[-20000:]
    assert done.returncode == 0, done.stdout[-5000:]
    return report


def test_every_operation_conforms_to_the_openapi_document(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base_url, data = server
    report = _schemathesis(base_url, tmp_path, data, "--header", f"Authorization: Bearer {data['JOBTAPE_CONFORMANCE_TOKEN']}")
    operations = report["operations"]
    assert operations["tested"] == operations["total"] >= 16, operations  # GET and HEAD count apart
    assert report["test_cases"]["generated"] >= 16 * MAX_EXAMPLES


def test_the_generic_job_routes_conform_with_a_users_app(tmp_path: Path) -> None:
    """``serve --app``: ``POST /api/jobs`` documents each type's params schema (a oneOf on ``type``);
    schema-valid bodies are accepted (202), schema-invalid ones refused; the poll, cancel and events
    routes answer for the jobs the run creates. No worker, so the jobs stay pending (a spin job would
    never end); hence no stream here: a pending job's stream stays open by design. The stream's
    handler is the one the default app's run above checks, on both of its paths."""
    with jobtape_serve(tmp_path / "data", "--app", "tests.apps.sums:app", "--max-active-jobs", "1000000", workers=0, cwd=ROOT) as base_url:
        report = _schemathesis(
            base_url, tmp_path, {}, "--include-path-regex", "^/api/jobs", "--exclude-path-regex", "/stream$", config=APP_CONFIG
        )
    operations = report["operations"]
    assert operations["tested"] == 4, operations
    assert report["test_cases"]["generated"] >= 4 * MAX_EXAMPLES
