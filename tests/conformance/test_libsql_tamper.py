"""Tamper evidence against the database's own writer (issue 11), on a real sqld.

The same tamperings as tests/integration/test_tamper_evidence.py, performed with raw SQL sent
to sqld (dropping triggers as an attacker with database credentials would), and the real
``jobtape`` CLI on ``JOB_STORE_BACKEND=libsql`` naming or refusing each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from configs import TABLES  # tests/ is on sys.path
from integration.tamper import KEY, Target, run_case, tamper_cases  # type: ignore[import-not-found]  # tests/ is on sys.path
from sqld_server import SqldServer

from jobtape import runtime
from jobtape.config import Settings
from jobtape.eventlog.libsql import LibSQLBackend
from jobtape.eventlog.store import Statement

__all__: list[str] = []


def _sqld_target(server: SqldServer, data_dir: Path, sqld_factory: Callable[..., SqldServer]) -> Target:
    data_dir.mkdir(parents=True, exist_ok=True)

    def run(statements: Sequence[Statement], read: bool = False) -> list[tuple[Any, ...]]:
        backend = LibSQLBackend(server.ws_url)
        try:
            if read:
                return backend.query(statements[0].sql)
            backend.execute_batch(statements)
            return []
        finally:
            backend.close()

    def raw(statements: Sequence[str | tuple[str, Sequence[Any]]]) -> None:
        run([Statement(item) if isinstance(item, str) else Statement(item[0], tuple(item[1])) for item in statements])

    def query(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in run([Statement(sql)], read=True)]

    def fresh() -> Target:
        target = _sqld_target(sqld_factory(), data_dir.parent / f"{data_dir.name}-fresh", sqld_factory)
        runtime.open_store(target.settings, TABLES).close()  # an empty, migrated log
        return target

    settings = Settings(data_dir=data_dir, job_store_backend="libsql", turso_database_url=server.ws_url, log_key=KEY)
    env = {"JOBTAPE_LOG_KEY": KEY, "JOBTAPE_DATA_DIR": str(data_dir), "JOB_STORE_BACKEND": "libsql", "TURSO_DATABASE_URL": server.ws_url}
    return Target(settings, env, raw, query, fresh)


@pytest.mark.parametrize("case", tamper_cases())
def test_each_tampering_of_a_sqld_database_is_named_or_refused(case: str, sqld_factory: Callable[..., SqldServer], tmp_path: Path) -> None:
    run_case(case, _sqld_target(sqld_factory(), tmp_path / "log", sqld_factory), TABLES, tmp_path)
