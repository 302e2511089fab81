"""The package's layout is its design (STYLE.md: layered modules). Sub-packages by role,
and rules between them rather than a chain of levels:

- `model` and `errors` import nothing of ours; `config` only them and `rules`;
- `rules/` (pure: names, companions, dates, retries) imports nothing of ours but
  model and errors;
- `files/` (the filesystem) imports only model, errors and rules;
- `store/`, `media/` and `inbox/` stand side by side above `files/`: none imports another;
- `engine/` (the steps) never imports `app/`; `app/` (programs, output) may import all;
- third-party libraries stay in their package: apsw in `store/` (at run time; a type
  under TYPE_CHECKING is fine), watchdog in `inbox/`, systemd and structlog in `app/`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "daemon"
SUBPACKAGES = {"rules", "store", "files", "media", "inbox", "engine", "app"}
BASE = {"model", "errors"}

# what each part of the package may import of ours ("" is the package root itself)
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "errors": set(),
    "config": BASE | {"rules"},
    "rules": BASE,
    "files": BASE | {"rules"},
    "store": BASE | {"config", "rules", "files"},
    "media": BASE | {"config", "rules", "files"},
    "inbox": BASE | {"config", "rules", "files"},
    "engine": BASE | {"config", "rules", "files", "store", "media", "inbox"},
    "app": BASE | {"config", "rules", "files", "store", "media", "inbox", "engine"},
    "__main__": {"app"},
    "__init__": set(),
}
# third-party libraries and the parts that may import them at run time
ONLY = {"apsw": {"store"}, "watchdog": {"inbox"}, "systemd": {"app"}, "structlog": {"app"}}
# exceptions to the apsw rule: none since issue 14 (a module added here must say why)
APSW_OUTSIDE_STORE: set[str] = set()
MAX_LINES = 400
# exceptions to the size rule: none since issue 14 (a module added here must say why)
OVERSIZE: set[str] = set()


def modules() -> dict[str, Path]:
    """'store.db' -> path, 'model' -> path, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def part(name: str) -> str:
    """The part of the package a module belongs to: its sub-package, or its own name."""
    return name.split(".", maxsplit=1)[0]


def runtime_nodes(tree: ast.Module) -> list[ast.stmt]:
    """Top-level and nested import statements, leaving out `if TYPE_CHECKING:` blocks."""
    out: list[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append(child)
            visit(child)

    visit(tree)
    return out


def imports(name: str, path: Path, runtime: bool = False) -> tuple[set[str], set[str]]:
    """The parts of ours a module imports, and the third-party top-level names."""
    tree = ast.parse(path.read_text())
    nodes = runtime_nodes(tree) if runtime else list(ast.walk(tree))
    here = name.split(".")[:-1]  # the package the module is in ("app.__init__": app)
    internal: set[str] = set()
    external: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                internal.add(target[0])
            else:  # from .. import x, y: each name is a part
                internal.update(a.name for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")
            if top[0] == "daemon":
                internal.update([top[1]] if len(top) > 1 else [a.name for a in node.names])
            else:
                external.add(top[0])
        elif isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")
                if top[0] == "daemon" and len(top) > 1:
                    internal.add(top[1])
                elif top[0] != "daemon":
                    external.add(top[0])
    return internal, external


def test_every_module_sits_in_a_known_part() -> None:
    parts = {part(name) for name in modules()}
    assert parts <= set(ALLOWED) | SUBPACKAGES, sorted(parts - set(ALLOWED))
    assert set(ALLOWED) >= SUBPACKAGES


def test_imports_follow_the_rules_between_parts() -> None:
    wrong = []
    for name, path in modules().items():
        mine = part(name)
        internal, _ = imports(name, path)
        for dep in internal - {mine}:
            if dep not in ALLOWED[mine]:
                wrong.append(f"{name} imports {dep}")
    assert not wrong, wrong


def test_third_party_imports_stay_in_their_part() -> None:
    wrong = []
    for name, path in modules().items():
        _, external = imports(name, path, runtime=True)
        for lib, allowed in ONLY.items():
            if lib in external and part(name) not in allowed:
                if lib == "apsw" and name in APSW_OUTSIDE_STORE:
                    continue
                wrong.append(f"{name} imports {lib}")
    assert not wrong, wrong
    still = {n for n in APSW_OUTSIDE_STORE if "apsw" in imports(n, modules()[n], True)[1]}
    assert still == APSW_OUTSIDE_STORE, f"no longer importing apsw: {APSW_OUTSIDE_STORE - still}"


def test_modules_are_small_and_say_what_they_own() -> None:
    big, silent = [], []
    for name, path in modules().items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and name not in OVERSIZE:
            big.append(f"{name}: {lines} lines")
        if not ast.get_docstring(ast.parse(path.read_text())) and path.stat().st_size:
            silent.append(name)
    assert not big, big
    assert not silent, silent
    shrunk = {n for n in OVERSIZE if len(modules()[n].read_text().splitlines()) <= MAX_LINES}
    assert not shrunk, f"now small, take off OVERSIZE: {shrunk}"


def test_only_the_watchdog_adapter_imports_watchdog() -> None:
    """The inbox logic (inbox.scan: scans, candidates, settling, pruning) needs no
    watchdog, so `status` can look at the inbox without loading it."""
    users = {name for name, path in modules().items() if "watchdog" in imports(name, path)[1]}
    assert users == {"inbox.watcher"}, users


MAX_OPENING_LINES = 5


def test_docstrings_open_short_and_without_levels() -> None:
    """Each module's docstring opens with at most 5 lines (what it owns, its crash
    invariant), and none speaks of the old chain's levels."""
    long, levelled = [], []
    for name, path in modules().items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        opening = doc.strip().split("\n\n", maxsplit=1)[0]
        if len(opening.splitlines()) > MAX_OPENING_LINES:
            long.append(f"{name}: {len(opening.splitlines())} lines")
        if "(level" in doc.lower():
            levelled.append(name)
    assert not long, long
    assert not levelled, levelled


def test_the_cli_loads_no_watchdog_logging_or_systemd() -> None:
    """`status`, `find`, `history` answer in a fraction of a second: importing the CLI
    loads no watchdog (report scans the inbox through inbox.scan, not the watchdog
    adapter), and neither structlog nor systemd (each command imports what it uses)."""
    code = (
        "import sys, daemon.app.cli; "
        "print(*sorted({'watchdog', 'structlog', 'systemd'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent, check=True
    ).stdout.split()
    assert out == [], out
