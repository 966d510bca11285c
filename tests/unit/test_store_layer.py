"""SQL text lives in the store layer (issue 10): nothing outside it reaches ``.backend`` or writes SQL.

The store layer is every package named ``eventlog`` or ``projections`` under ``jobtape``
(``jobtape/eventlog/``, ``jobtape/projections/``, and a job package's own projections such
as ``jobtape/<package>/projections/``). Everywhere else, a module asks the store layer a
named question (``repository.claimable(...)``, ``store.iter_stored(...)``) instead of
holding SQL text or the backend that runs it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jobtape.eventlog.store import EventStore

PACKAGE = Path(__file__).resolve().parents[2] / "jobtape"
STORE_LAYER = {"eventlog", "projections"}
#: A string literal that reads as a statement: an upper-case keyword that starts SQL, then the word
#: that must follow it (an f-string is read with ``x`` for each placeholder).
SQL = re.compile(
    r"\b(SELECT\s+[\w*(,.' ]+\s+FROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
    r"|CREATE\s+(TABLE|INDEX|TRIGGER|VIEW)|DROP\s+(TABLE|INDEX|TRIGGER|VIEW)|ALTER\s+TABLE|PRAGMA\s+\w+)\b"
)


def _outside_store_layer(root: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if not STORE_LAYER & set(p.relative_to(root).parts[:-1]))


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal but docstrings, as ``(line, text)``; an f-string reads ``x`` for a placeholder."""
    docstrings = _docstrings(tree)
    parts: set[int] = set()
    found = []
    for node in ast.walk(tree):  # breadth first: an f-string comes before its parts
        if isinstance(node, ast.JoinedStr):
            parts.update(id(value) for value in node.values)
            text = "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "x" for v in node.values)
            found.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings | parts:
            found.append((node.lineno, node.value))
    return found


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    """``file:line: what`` for each ``.backend`` reference and each SQL string literal (docstrings aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = path.relative_to(root.parent)
    found = [
        f"{name}:{node.lineno}: reaches .backend" for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "backend"
    ]
    found += [f"{name}:{line}: SQL text {text[:60]!r}" for line, text in _strings(tree) if SQL.search(text)]
    return found


def test_no_module_outside_the_store_layer_reaches_the_backend_or_holds_sql() -> None:
    modules = _outside_store_layer()
    assert len(modules) > 50  # the scan sees the package
    problems = [problem for path in modules for problem in violations(path)]
    assert problems == [], "move these into a named query of jobtape.eventlog or jobtape.projections:\n" + "\n".join(problems)


def test_the_scan_sees_the_queries_that_lived_outside_the_store_layer(tmp_path: Path) -> None:
    """The reaper's and the claim's queries as they were before issue 10 are found; a projection's are not."""
    root = tmp_path / "jobtape"
    reaper = root / "worker" / "reaper.py"
    reaper.parent.mkdir(parents=True)
    reaper.write_text(
        "_EXPIRED = (\n"
        "    \"SELECT job_id FROM jobs WHERE status IN ('processing', 'cancelled') AND finished = 0\"\n"
        '    " AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?"\n'
        ")\n"
        "def claim(self, types):\n"
        "    return self.repository.store.backend.query(\n"
        "        f\"SELECT job_id FROM jobs WHERE job_type IN ({', '.join('?' * len(types))})\", types)\n",
        encoding="utf-8",
    )
    (root / "projections").mkdir()
    (root / "projections" / "jobs.py").write_text("SQL = 'SELECT state FROM jobs'\n", encoding="utf-8")
    assert [m.name for m in _outside_store_layer(root)] == ["reaper.py"]
    assert len(violations(reaper, root)) == 3


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("rows = store.backend.query('x')", 1),
        ("sql = 'SELECT job_id FROM jobs WHERE finished = 1'", 1),
        ('sql = f"DELETE FROM {table} WHERE job_id = ?"', 1),
        ("""sql = f"SELECT {', '.join(columns)} FROM archives" """, 1),
        ("statement = 'INSERT INTO archives (a) VALUES (?)'", 1),
        ("text = 'select the oldest job from the queue'", 0),  # prose, not a statement
        ('def f():\n    """SELECT job_id FROM jobs is how it was done."""\n', 0),  # a docstring
    ],
)
def test_the_scan_finds_backend_access_and_sql_literals(tmp_path: Path, source: str, expected: int) -> None:
    module = tmp_path / "jobtape" / "probe.py"
    module.parent.mkdir()
    module.write_text(source, encoding="utf-8")
    assert len(violations(module, tmp_path / "jobtape")) == expected


def test_the_event_insert_and_the_row_decoding_exist_once() -> None:
    """One statement inserts events (append and import share it), one function decodes a row (eventlog/stored.py)."""
    inserts, decodes = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        name = path.relative_to(PACKAGE.parent).as_posix()
        inserts += [name for _, text in _strings(tree) if re.search(r"INSERT\s+INTO\s+events\b", text)]
        decodes += [
            name
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "decode_event"
        ]
    assert inserts == ["jobtape/eventlog/stored.py"]
    assert decodes == ["jobtape/eventlog/stored.py"]


def test_select_value_reads_one_column_by_its_key_columns_or_none(store: EventStore) -> None:
    from jobtape.projections import rows
    from jobtape.projections.repository import JobRepository

    job_id = JobRepository(store).create("ingest", {"sourceType": "url", "url": "https://example.com/a.mp3"}, owner="alice").state.job_id
    assert rows.select_value(store, "jobs", "owner", {"job_id": job_id}) == "alice"
    assert rows.select_value(store, "jobs", "owner", {"job_id": job_id, "status": "complete"}) is None
    with pytest.raises(ValueError, match="at least one column"):
        rows.select_value(store, "jobs", "owner", {})
