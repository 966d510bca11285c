"""A real ``jobtape serve`` process on a free loopback port, for tests that talk HTTP to it.

``tests/`` is on ``sys.path`` (pytest inserts the folder of the root conftest), so test
modules import this as ``from serving import jobtape_serve``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
from polling import wait_for

__all__ = ["jobtape_serve"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def jobtape_serve(
    data_dir: Path, *extra: str, workers: int = 1, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Run ``jobtape serve --workers N`` over ``data_dir`` until the block ends; yield its base URL.

    ``cwd`` is the server's working folder (where ``--app`` finds a module; default: the tests').
    ``env``: more environment variables for the server (``JOBTAPE_JWT_SECRET``, ...).

    Its output goes to ``data_dir/../serve-<port>.log`` (named in the error when it dies early).

    Raises:
        AssertionError: the server exited, or did not answer ``/health`` within 60 s.
    """
    port = _free_port()
    log_path = data_dir.parent / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobtape",
                "serve",
                "--workers",
                str(workers),
                "--poll-interval",
                "0.05",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **env} if env else None,
        )
        base_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert process.poll() is None, log_path.read_text()
            try:
                return httpx.get(f"{base_url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_for(healthy, timeout_s=60, what="jobtape serve to answer /health")
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=60)
