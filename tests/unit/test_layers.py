"""The package is layered: a module imports only from levels below its own (STYLE.md).
A new module must be given a level here."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "daemon"

LEVELS = {
    "errors": 0, "model": 0,
    "config": 1, "layout": 0, "companions": 0,
    "db": 2, "journal": 2, "catalog": 2, "query": 2, "undolog": 2,
    "fsops": 2, "complete": 1, "exiftool": 2, "quickmeta": 2, "metadata": 3, "watcher": 3, "notify": 2, "logs": 2,
    "pairing": 3, "ingest": 4, "report": 4, "lookup": 3, "undo": 3,
    "pool": 5, "metrics": 5, "show": 4,
    "service": 6, "oneshot": 7, "maintain": 8,
    "cli": 9, "__main__": 10, "completion": 10, "__init__": 0,
}
# modules allowed to import apsw (SQL lives only there), systemd, watchdog
ONLY = {"apsw": {"db", "journal", "catalog", "query", "undolog", "ingest", "pairing", "pool", "report",
                 "lookup", "undo", "maintain", "service", "oneshot", "metrics", "show"},
        "systemd": {"notify", "logs"}, "watchdog": {"watcher"}, "structlog": {"logs"}}


def imports(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    internal, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                internal.add(node.module.split(".")[0])
            else:
                internal.update(a.name for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.ImportFrom) and node.module:
            external.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            external.update(a.name.split(".")[0] for a in node.names)
    return internal, external


def test_every_module_has_a_level() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules <= set(LEVELS), f"give these a level: {sorted(modules - set(LEVELS))}"


def test_imports_point_down() -> None:
    wrong = []
    for path in PACKAGE.glob("*.py"):
        internal, _ = imports(path)
        for dep in internal:
            if dep != "__init__" and LEVELS[dep] >= LEVELS[path.stem]:
                wrong.append(f"{path.stem} (level {LEVELS[path.stem]}) imports {dep} "
                             f"(level {LEVELS[dep]})")
    assert not wrong, wrong


def test_third_party_imports_stay_in_their_module() -> None:
    wrong = []
    for path in PACKAGE.glob("*.py"):
        _, external = imports(path)
        for lib, allowed in ONLY.items():
            if lib in external and path.stem not in allowed:
                wrong.append(f"{path.stem} imports {lib}")
    assert not wrong, wrong
