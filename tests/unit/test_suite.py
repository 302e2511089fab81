"""The suite's own rules (issue 14.6): tests do not import the benchmark (they run it as
`python -m bench` when they test it), and no module imports a test module: what tests
share lives in helper modules (tests/helpers.py, tests/system/users.py...) and fixtures
in conftest.py."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    """The modules `path` imports (absolute names; relative imports as written)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add("." * node.level + node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_test_imports_the_benchmark() -> None:
    found = {
        str(p.relative_to(TESTS)): sorted(
            n for n in imported(p) if n == "bench" or n.startswith("bench.")
        )
        for p in sorted(TESTS.rglob("*.py"))
    }
    assert {p: n for p, n in found.items() if n} == {}


def test_no_module_imports_a_test_module() -> None:
    def is_test_module(name: str) -> bool:
        parts = name.split(".")
        return parts[0] == "tests" and any(part.startswith("test_") for part in parts)

    found = {
        str(p.relative_to(TESTS)): sorted(n for n in imported(p) if is_test_module(n))
        for p in sorted(TESTS.rglob("*.py"))
    }
    assert {p: n for p, n in found.items() if n} == {}
