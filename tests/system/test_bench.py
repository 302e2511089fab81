"""The benchmark harness runs end to end (smoke sizes): its figures are not checked here,
only that every contender of ours completes (benchmarks are never timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    ours = [r for r in rows if r["kind"] == "ours"]
    assert len(ours) >= 9 and all(r["status"] == "ok" for r in ours), ours


@pytest.mark.slow
def test_scaling_smoke(tmp_path: Path) -> None:
    """bench.scaling runs its pieces end to end (tiny sizes, one shape)."""
    out = tmp_path / "scaling.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scaling",
            "--smoke",
            "--shapes",
            "shared",
            "--only",
            "import,daemon,status",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 10 and all(r["status"] == "ok" for r in rows), rows
    assert [r["slope"] is not None for r in rows].count(True) == 5
