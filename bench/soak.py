"""Soak: thousands of real jobs through a real deployment; what each process holds must stay flat.

Starts, on one SQLite file in a fresh data dir:

- ``jobtape serve`` with one embedded worker (the API and a worker in one process);
- two ``jobtape worker`` processes polling the same log.

Then ``--clients`` client threads submit ``--jobs`` real jobs over HTTP, in a fixed mix
per ten jobs: five ingests (a multipart upload of ``media/speech_librispeech.mp3``, 5.2 s
of speech, through ffmpeg's two-pass loudnorm), two previews and two saves of a random
trim of an ingested asset (random bounds, so few are cache hits), and one ingest
cancelled once the job is claimed (``POST .../cancel`` as soon as the SSE stream shows
``job.claimed``; one that already finished answers 409, and one claimed before its stream
began is not cancelled: both count as "too late").
Each client waits for its job's end on the job's SSE stream.

Every ``--sample-every`` finished jobs it stops submitting until no job is in flight and
reads, for each of the three processes, the open file descriptors (and how many of them
are ``jobtape.db*``), the threads and the resident memory (``/proc/PID``): the least of
the looks taken over ``--settle`` seconds (default 15, past the 10 s after which idle
pool threads and connections are closed), so a pool's idle members and a job thread
still cleaning up are not counted as growth. The first sample after ``--warmup`` jobs is the
baseline; growth is the last sample minus it, also shown per 1,000 jobs.

At the end the processes are stopped with SIGTERM, then ``jobtape verify`` and
``jobtape rebuild --verify`` run on the log, and the log is counted: every submitted
job must be finished (complete, failed or cancelled; none lost, none failed), and no
work folder or upload spool file may be left.

It exits 1 when a process grew by more than ``--max-fd-growth`` descriptors,
``--max-rss-growth-mb`` MB or ``--max-thread-growth`` threads after the warm-up, a job
was lost or failed, a leftover remains, or a check failed. Goal (issue 9): 10,000 jobs
with fd growth <= 5 and RSS growth <= 20 MB per process.

Usage::

    python bench/soak.py [--jobs 10000] [--clients 6] [--sample-every 500] [--data-dir DIR]
    python bench/soak.py --store libsql --storage s3   # the log on sqld, blobs on an S3 API server
    python bench/soak.py --auth required               # as deployed: serve --auth required, an API key per client

``tests/acceptance/test_soak.py`` runs a short form (a few hundred jobs) through
:func:`run_soak` and asserts on descriptors and lost jobs, never on time.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from jobtape import runtime
from jobtape.config import Settings
from jobtape.defaults import default_tables

__all__ = ["ProcessSample", "SoakReport", "main", "run_soak", "sample_process"]

TABLES = default_tables()

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "media" / "speech_librispeech.mp3"
SOURCE_DURATION_S = 5.2
TERMINAL = ("complete", "failed", "cancelled")


@dataclasses.dataclass(frozen=True)
class ProcessSample:
    """What one process held at one moment.

    Attributes:
        jobs_done: finished jobs when the sample was taken.
        fds: open file descriptors.
        db_fds: descriptors open on ``jobtape.db``, its ``-wal`` or ``-shm`` (SQLite connections).
        threads: threads of the process.
        rss_mb: resident memory, MB (VmRSS / 1024).
        sockets: descriptors that are sockets (connections to sqld, S3, the API; a pool fills up to its bound).
    """

    jobs_done: int
    fds: int
    db_fds: int
    threads: int
    rss_mb: float
    sockets: int = 0


def sample_process(pid: int, jobs_done: int) -> ProcessSample:
    """Read a live process's descriptors, threads and RSS from ``/proc/PID``.

    Raises:
        FileNotFoundError: the process is gone.
    """
    fd_dir = Path(f"/proc/{pid}/fd")
    fds = db_fds = sockets = 0
    for entry in os.listdir(fd_dir):
        fds += 1
        try:
            target = os.readlink(fd_dir / entry)
        except OSError:  # closed between listdir and readlink
            continue
        db_fds += "jobtape.db" in target
        sockets += target.startswith("socket:")
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return ProcessSample(jobs_done, fds, db_fds, int(status["Threads"]), int(status["VmRSS"].split()[0]) / 1024, sockets)


def _settled_samples(pids: dict[str, int], jobs_done: int, poke: Any, *, settle_s: float) -> dict[str, ProcessSample]:
    """The least each quiet process holds over ``settle_s`` seconds of looks (twice a second).

    Taken with no job in flight. Pools shrink only when used after an idle period (the
    API's anyio worker threads after 10 s, the SQLite pool's connections after its idle
    timeout), so each look first calls ``poke`` (a poll request); the minimum is the
    process's floor, not a job thread or an idle pool member that is about to go.
    """
    looks: dict[str, list[ProcessSample]] = {name: [] for name in pids}
    deadline = time.monotonic() + settle_s
    while True:
        poke()
        for name, pid in pids.items():
            looks[name].append(sample_process(pid, jobs_done))
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    return {
        name: ProcessSample(
            jobs_done,
            min(s.fds for s in samples),
            min(s.db_fds for s in samples),
            min(s.threads for s in samples),
            min(s.rss_mb for s in samples),
            min(s.sockets for s in samples),
        )
        for name, samples in looks.items()
    }


@dataclasses.dataclass
class SoakReport:
    """The outcome of a soak run.

    Attributes:
        jobs: jobs submitted.
        elapsed_s: seconds from the first submission to the last job's end, without the
            pauses taken for samples.
        samples: process name -> samples in order (the first after warm-up is the baseline).
        outcomes: the mix's job kind -> final status -> count.
        statuses: status -> jobs, as the log has them at the end.
        cancels_in_time / cancels_too_late: cancels that stopped a running job / came after its end.
        leftovers: work folders and upload spool files left at the end (paths).
        checks: command -> exit status (``verify``, ``rebuild --verify``).
        failures: what broke a limit, in words; empty when the run passed.
    """

    jobs: int
    elapsed_s: float = 0.0
    samples: dict[str, list[ProcessSample]] = dataclasses.field(default_factory=dict)
    outcomes: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    cancels_in_time: int = 0
    cancels_too_late: int = 0
    leftovers: list[str] = dataclasses.field(default_factory=list)
    checks: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def jobs_per_s(self) -> float:
        """Finished jobs per second over the whole run."""
        return self.jobs / self.elapsed_s if self.elapsed_s else 0.0

    def growth(self, name: str) -> tuple[ProcessSample, ProcessSample]:
        """The baseline (first sample after warm-up) and the last sample of a process."""
        return self.samples[name][0], self.samples[name][-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _jobtape(*args: str) -> list[str]:
    """The ``jobtape`` console script of this interpreter's environment, with ``args``."""
    return [str(Path(sys.executable).with_name("jobtape")), *args]


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"jobtape_soak_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class _RemoteBackends:
    """sqld (``--store libsql``) and a moto S3 server (``--storage s3``), each its own process on 127.0.0.1.

    ``env`` holds the variables that point jobtape at them (empty for the embedded defaults).
    """

    def __init__(self, store: str, storage: str, data_dir: Path, log_dir: Path) -> None:
        self.env: dict[str, str] = {}
        self.sqld: Any = None
        self.moto: subprocess.Popen[bytes] | None = None
        if store == "libsql":
            sqld_server = _load_module(ROOT / "tests" / "conformance" / "sqld_server.py")
            binary = sqld_server.find_sqld()
            if binary is None:
                raise RuntimeError("sqld is not installed: run scripts/setup-sqld.sh (or set JOBTAPE_SQLD)")
            self.sqld = sqld_server.SqldServer(binary, data_dir / "sqld")
            self.sqld.start()
            # every process on libSQL holds the same log key (docs/deploy.md)
            self.env.update(JOB_STORE_BACKEND="libsql", TURSO_DATABASE_URL=self.sqld.ws_url, JOBTAPE_LOG_KEY=secrets.token_urlsafe(48))
        if storage == "s3":
            import boto3

            port = _free_port()
            with (log_dir / "moto.log").open("wb") as log:
                self.moto = subprocess.Popen(
                    [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            endpoint = f"http://127.0.0.1:{port}"
            self.env.update(
                STORAGE_BACKEND="s3",
                S3_BUCKET="soak",
                S3_ENDPOINT_URL=endpoint,
                AWS_REGION="us-east-1",
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
            )
            client = boto3.client(
                "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.create_bucket(Bucket="soak")
                    break
                except Exception:  # not listening yet; the last one is raised
                    if time.monotonic() > deadline:
                        self.stop()
                        raise
                    time.sleep(0.1)

    def stop(self) -> None:
        """Stop the servers this started."""
        if self.sqld is not None:
            self.sqld.stop()
        if self.moto is not None:
            self.moto.terminate()
            self.moto.wait(30)


class _Deployment:
    """``jobtape serve`` (one embedded worker) plus two ``jobtape worker`` processes on one data dir."""

    def __init__(self, data_dir: Path, work_tmp: Path, log_dir: Path, backend_env: dict[str, str], auth: str = "off") -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            **backend_env,
            "JOBTAPE_DATA_DIR": str(data_dir),
            "TMPDIR": str(work_tmp),
            "JOBTAPE_WORK_DIR": str(work_tmp),  # the workers' folders: none may be left at the end
            "JOBTAPE_MAX_ACTIVE_JOBS": "100000",
            "JOBTAPE_SQLITE_SYNCHRONOUS": "FULL",
        }
        #: The clients' headers: with ``auth`` "required", an API key made now (as an operator would).
        self.headers: dict[str, str] = {}
        if auth == "required":
            made = subprocess.run(
                _jobtape("keys", "create", "--owner", "soak", "--scope", "jobs:submit,jobs:read,jobs:cancel", "--quiet"),
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            self.headers["Authorization"] = f"Bearer {made.stdout.strip()}"
        commands = {
            "serve": _jobtape("serve", "--port", str(self.port), "--workers", "1", "--poll-interval", "0.2", "--auth", auth),
            "worker-1": _jobtape("worker", "--poll-interval", "0.2"),
            "worker-2": _jobtape("worker", "--poll-interval", "0.2"),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for name, command in commands.items():
            log = (log_dir / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
            log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.processes["serve"].poll() is not None:
                self.stop()
                raise RuntimeError(f"jobtape serve did not come up; see {log_dir / 'serve.log'}")
            time.sleep(0.1)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process, wait for each (SIGKILL after 60 s); return the exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait(10)
        return codes


class _Clients:
    """The client threads: submit the mix, wait on SSE, keep the counts."""

    def __init__(self, base_url: str, jobs: int, seed: int, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.headers = headers or {}
        self.jobs = jobs
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.next_index = 0
        self.done = 0
        self.job_ids: list[str] = []
        self.assets: list[str] = []
        self.outcomes: dict[str, Counter[str]] = {}
        self.cancels_in_time = 0
        self.cancels_too_late = 0
        self.errors: list[str] = []
        self.source = SOURCE.read_bytes()
        self.open = threading.Event()  # cleared while a sample is taken: no new submissions
        self.open.set()
        self.in_flight = 0

    def _take(self) -> int | None:
        self.open.wait()
        with self.lock:
            if self.next_index >= self.jobs or len(self.errors) > 10:
                return None
            self.next_index += 1
            self.in_flight += 1
            return self.next_index - 1

    def quiesce(self, timeout_s: float = 120.0) -> None:
        """Stop new submissions and wait until every submitted job has ended."""
        self.open.clear()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    return
            time.sleep(0.05)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120, headers=self.headers) as client:
            while (index := self._take()) is not None:
                try:
                    kind, status = self._one(client, index)
                except Exception as exc:  # noqa: BLE001 - reported, and fails the run
                    with self.lock:
                        self.errors.append(f"job {index}: {type(exc).__name__}: {exc}")
                    continue
                finally:
                    with self.lock:
                        self.in_flight -= 1
                with self.lock:
                    self.outcomes.setdefault(kind, Counter())[status] += 1
                    self.done += 1

    def _one(self, client: httpx.Client, index: int) -> tuple[str, str]:
        slot = index % 10
        with self.lock:
            asset = self.rng.choice(self.assets) if self.assets else None
            start = round(self.rng.uniform(0, SOURCE_DURATION_S - 1.5), 2)
            end = round(self.rng.uniform(start + 0.5, SOURCE_DURATION_S - 0.1), 2)
        if slot < 5 or asset is None:
            kind, job_id = "ingest", self._upload(client)
        elif slot < 7:
            kind, job_id = "preview", self._edit(client, "preview", asset, start, end)
        elif slot < 9:
            kind, job_id = "save", self._edit(client, "save", asset, start, end)
        else:
            kind, job_id = "ingest+cancel", self._upload(client)
        with self.lock:
            self.job_ids.append(job_id)
        final = self._wait(client, job_id, cancel=kind == "ingest+cancel")
        if kind == "ingest" and final["status"] == "complete":
            with self.lock:
                self.assets.append(final["result"]["assetId"])
                del self.assets[:-20]
        return kind, str(final["status"])

    def _upload(self, client: httpx.Client) -> str:
        response = client.post("/api/audio/ingest", files={"file": ("speech.mp3", self.source, "audio/mpeg")})
        response.raise_for_status()
        return str(response.json()["data"]["jobId"])

    def _edit(self, client: httpx.Client, route: str, asset: str, start: float, end: float) -> str:
        response = client.post(
            f"/api/audio/edit/{route}", json={"assetId": asset, "startSec": start, "endSec": end, "fadeInSec": 0.1, "gainDb": -1}
        )
        response.raise_for_status()
        return str(response.json()["data"]["jobId"])

    def _wait(self, client: httpx.Client, job_id: str, *, cancel: bool) -> dict[str, Any]:
        """Follow the job's SSE stream to its end (cancelling once it is claimed); return the poll."""
        with client.stream("GET", f"/api/audio/jobs/{job_id}/stream") as stream:
            for line in stream.iter_lines():
                if cancel and line.startswith("data:") and '"type":"job.claimed"' in line.replace(" ", ""):
                    cancel = False
                    answer = client.post(f"/api/audio/jobs/{job_id}/cancel")
                    with self.lock:
                        if answer.status_code == 200:
                            self.cancels_in_time += 1
                        elif answer.status_code == 409:
                            self.cancels_too_late += 1
                        else:
                            answer.raise_for_status()
        if cancel:  # claimed before the stream began (or never): the job ran to its end uncancelled
            with self.lock:
                self.cancels_too_late += 1
        final = client.get(f"/api/audio/jobs/{job_id}").json()
        if final["status"] not in TERMINAL:
            raise RuntimeError(f"the stream of {job_id} closed at status {final['status']}")
        return dict(final)


def run_soak(
    jobs: int,
    *,
    data_dir: Path,
    clients: int = 6,
    sample_every: int = 500,
    warmup: int | None = None,
    seed: int = 1,
    max_fd_growth: int = 5,
    max_rss_growth_mb: float = 20.0,
    max_thread_growth: int = 2,
    settle_s: float = 15.0,
    store: str = "sqlite",
    storage: str = "local",
    auth: str = "off",
    progress: bool = False,
) -> SoakReport:
    """Run the soak (see the module docstring) and judge it.

    Args:
        jobs: jobs to submit in all.
        data_dir: an empty folder for the log, storage, work folders and process logs.
        clients: client threads submitting and waiting at once.
        sample_every: take a sample of every process each time this many more jobs finished.
        warmup: jobs before the baseline sample; default ``min(500, jobs // 5)``.
        seed: the mix's random seed (trim bounds, which asset is edited).
        max_fd_growth, max_rss_growth_mb, max_thread_growth: the largest growth allowed
            per process between the baseline and the last sample (descriptors, MB, threads).
        settle_s: seconds of quiet looks per sample (see :func:`_settled_samples`).
        store: ``sqlite`` (the embedded file) or ``libsql`` (a sqld process started here).
        storage: ``local`` (the data dir) or ``s3`` (a moto S3 server process started here).
        auth: ``serve --auth``: ``off``, or ``required`` (the clients send an API key made
            with ``jobtape keys create`` before the processes start, as deployed).
        progress: print each sample as it is taken.

    Returns:
        The report; ``report.failures`` is empty when every limit held.
    """
    warmup = min(500, jobs // 5) if warmup is None else warmup
    work_tmp, logs, store_dir = data_dir / "tmp", data_dir / "logs", data_dir / "store"
    for folder in (work_tmp, logs, store_dir):
        folder.mkdir(parents=True, exist_ok=True)
    report = SoakReport(jobs=jobs)
    remote = _RemoteBackends(store, storage, data_dir, logs)
    try:
        return _run(
            report,
            remote.env,
            store_dir,
            work_tmp,
            logs,
            clients=clients,
            sample_every=sample_every,
            warmup=warmup,
            seed=seed,
            limits=(max_fd_growth, max_rss_growth_mb, max_thread_growth),
            settle_s=settle_s,
            auth=auth,
            progress=progress,
        )
    finally:
        remote.stop()


def _run(
    report: SoakReport,
    backend_env: dict[str, str],
    store_dir: Path,
    work_tmp: Path,
    logs: Path,
    *,
    clients: int,
    sample_every: int,
    warmup: int,
    seed: int,
    limits: tuple[int, float, int],
    settle_s: float,
    auth: str,
    progress: bool,
) -> SoakReport:
    jobs = report.jobs
    max_fd_growth, max_rss_growth_mb, max_thread_growth = limits
    deployment = _Deployment(store_dir, work_tmp, logs, backend_env, auth)
    pids = {name: process.pid for name, process in deployment.processes.items()}
    load = _Clients(deployment.base_url, jobs, seed, deployment.headers)
    threads = [threading.Thread(target=load.run, name=f"soak client {n}") for n in range(clients)]
    started = time.monotonic()
    sampling_s = 0.0
    try:
        for thread in threads:
            thread.start()
        next_sample = warmup
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.2)
            with load.lock:
                done = load.done
            if done >= next_sample or not any(thread.is_alive() for thread in threads):
                paused = time.monotonic()
                load.quiesce()
                with load.lock:
                    done = load.done
                    last = load.job_ids[-1] if load.job_ids else "0" * 32
                poll_url = f"{deployment.base_url}/api/audio/jobs/{last}"
                settled = _settled_samples(pids, done, lambda url=poll_url: httpx.get(url, headers=deployment.headers), settle_s=settle_s)
                for name, sample in settled.items():
                    report.samples.setdefault(name, []).append(sample)
                load.open.set()
                sampling_s += time.monotonic() - paused
                if progress:
                    line = "  ".join(
                        f"{n}: fds {s[-1].fds} (sock {s[-1].sockets}) db {s[-1].db_fds} thr {s[-1].threads} rss {s[-1].rss_mb:.0f}MB"
                        for n, s in report.samples.items()
                    )
                    print(f"[{time.monotonic() - started:7.1f} s] {done:6d} jobs  {line}", flush=True)
                next_sample = max(next_sample, done) + sample_every
        report.elapsed_s = time.monotonic() - started - sampling_s
    finally:
        exits = deployment.stop()
    report.outcomes = load.outcomes
    report.cancels_in_time, report.cancels_too_late = load.cancels_in_time, load.cancels_too_late
    report.failures.extend(load.errors)
    for name, code in exits.items():
        if code not in (0, -signal.SIGTERM):
            report.failures.append(f"{name} exited {code} (see {logs / (name + '.log')})")
    env = {**os.environ, **backend_env, "JOBTAPE_DATA_DIR": str(store_dir)}
    for label, args in (("verify", ["verify"]), ("rebuild --verify", ["rebuild", "--verify"])):
        checked = subprocess.run(_jobtape(*args), env=env, capture_output=True, text=True, cwd=ROOT, check=False)
        report.checks[label] = checked.returncode
        if checked.returncode != 0:
            report.failures.append(f"jobtape {label} exited {checked.returncode}: {checked.stdout[-500:]}{checked.stderr[-500:]}")
    backend = runtime.open_backend(Settings.from_env(env), TABLES)
    try:
        report.statuses = {str(status): int(count) for status, count in backend.query("SELECT status, COUNT(*) FROM jobs GROUP BY status")}
        finished = {str(row[0]) for row in backend.query(f"SELECT job_id FROM jobs WHERE status IN {TERMINAL}")}
    finally:
        backend.close()
    lost = [job_id for job_id in load.job_ids if job_id not in finished]
    if lost or len(load.job_ids) != jobs:
        report.failures.append(f"{len(lost)} job(s) not finished, {jobs - len(load.job_ids)} never submitted")
    if report.statuses.get("failed"):
        report.failures.append(f"{report.statuses['failed']} job(s) failed")
    report.leftovers = sorted(str(path) for path in work_tmp.iterdir()) + sorted(
        str(path) for path in (store_dir / "upload-tmp").glob("upload-*.part")
    )
    if report.leftovers:
        report.failures.append(f"{len(report.leftovers)} leftover work folder(s) or spool file(s)")
    for name, samples in report.samples.items():
        first, last = samples[0], samples[-1]
        for what, grown, limit in (
            ("fds", last.fds - first.fds, max_fd_growth),
            ("RSS MB", last.rss_mb - first.rss_mb, max_rss_growth_mb),
            ("threads", last.threads - first.threads, max_thread_growth),
        ):
            if grown > limit:
                sockets = f" ({last.sockets - first.sockets:+d} of them sockets)" if what == "fds" else ""
                report.failures.append(f"{name}: {what} grew by {grown:g}{sockets} after warm-up (limit {limit:g})")
    return report


def render(report: SoakReport) -> str:
    """The report as the text ``main`` prints."""
    lines = [
        (
            f"{report.jobs} jobs in {report.elapsed_s:.1f} s = {report.jobs_per_s:.1f} jobs/s "
            f"(3 processes: serve with 1 embedded worker, 2 separate workers)"
        )
    ]
    mix = ", ".join(f"{kind}: {dict(counts)}" for kind, counts in sorted(report.outcomes.items()))
    lines.append(f"mix: {mix}; cancels that stopped a running job: {report.cancels_in_time}, too late: {report.cancels_too_late}")
    lines.append(f"log at the end: {report.statuses}; checks: {report.checks}; leftovers: {len(report.leftovers)}")
    lines.append(f"{'process':9} {'':9} {'jobs':>6} {'fds':>5} {'db fds':>6} {'threads':>7} {'RSS MB':>7}")
    for name in report.samples:
        first, last = report.growth(name)
        per_k = max(last.jobs_done - first.jobs_done, 1) / 1000
        lines.append(
            f"{name:9} {'baseline':9} {first.jobs_done:6d} {first.fds:5d} {first.db_fds:6d} {first.threads:7d} {first.rss_mb:7.1f}"
        )
        lines.append(f"{'':9} {'end':9} {last.jobs_done:6d} {last.fds:5d} {last.db_fds:6d} {last.threads:7d} {last.rss_mb:7.1f}")
        lines.append(
            f"{'':9} {'growth':9} {'':6} {last.fds - first.fds:+5d} {last.db_fds - first.db_fds:+6d} "
            f"{last.threads - first.threads:+7d} {last.rss_mb - first.rss_mb:+7.1f}   per 1,000 jobs: "
            f"fds {(last.fds - first.fds) / per_k:+.2f}, RSS {(last.rss_mb - first.rss_mb) / per_k:+.2f} MB"
        )
    lines.append("PASS" if not report.failures else "FAIL:\n  " + "\n  ".join(report.failures))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run the soak, print the report; exit 0 on PASS, 1 on FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--sample-every", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-fd-growth", type=int, default=5)
    parser.add_argument("--max-rss-growth-mb", type=float, default=20.0)
    parser.add_argument("--max-thread-growth", type=int, default=2)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds of quiet looks per sample")
    parser.add_argument("--data-dir", type=Path, default=None, help="an empty folder (default: a new temp folder)")
    parser.add_argument(
        "--store", choices=("sqlite", "libsql"), default="sqlite", help="libsql: the log on a sqld process started by the soak"
    )
    parser.add_argument(
        "--storage", choices=("local", "s3"), default="local", help="s3: blobs on a moto S3 server process started by the soak"
    )
    parser.add_argument(
        "--auth", choices=("off", "required"), default="off", help="required: serve --auth required, the clients with an API key"
    )
    parser.add_argument("--json", action="store_true", help="also print the samples as JSON")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="jobtape-soak-"))
    print(f"soak: {args.jobs} jobs, data dir {data_dir}", flush=True)
    report = run_soak(
        args.jobs,
        data_dir=data_dir,
        clients=args.clients,
        sample_every=args.sample_every,
        warmup=args.warmup,
        seed=args.seed,
        max_fd_growth=args.max_fd_growth,
        max_rss_growth_mb=args.max_rss_growth_mb,
        max_thread_growth=args.max_thread_growth,
        settle_s=args.settle,
        store=args.store,
        storage=args.storage,
        auth=args.auth,
        progress=True,
    )
    print(render(report))
    if args.json:
        print(json.dumps({name: [dataclasses.asdict(s) for s in samples] for name, samples in report.samples.items()}))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
