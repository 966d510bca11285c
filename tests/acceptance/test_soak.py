"""The short form of ``bench/soak.py``: a few hundred real jobs through serve + two workers.

Plain assertions on what each process holds (descriptors, SQLite connections) and on the
log (no job lost or failed, verify and rebuild clean, no leftover work folder or spool
file), never on time. The 10,000-job run is ``python bench/soak.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jobtape_bench_soak", ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_three_processes_hold_no_more_after_hundreds_of_real_jobs(tmp_path: Path) -> None:
    soak = load_soak()
    report = soak.run_soak(
        160, data_dir=tmp_path, clients=4, warmup=40, sample_every=120, settle_s=13.0, max_thread_growth=10**6
    )  # threads are judged by the long run only
    print(soak.render(report))
    assert report.failures == [], report.failures
    assert set(report.samples) == {"serve", "worker-1", "worker-2"}
    for name in report.samples:
        first, last = report.growth(name)
        assert last.jobs_done == 160 and first.jobs_done < 80
        assert last.fds - first.fds <= 5, (name, first, last)
        # SQLite connections are pooled, not per job: at most one more pooled connection (its db, -wal and -shm
        # descriptors) than at the first sample, where a connection per job would be 100 or more
        assert last.db_fds <= first.db_fds + 3, (name, first, last)
    assert report.statuses.get("cancelled", 0) >= 8 and report.statuses.get("complete", 0) >= 120
    assert report.checks == {"verify": 0, "rebuild --verify": 0}
