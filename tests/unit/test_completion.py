"""The bash completion script generated from the argparse parser, run by a real bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from daemon.app.args import build_parser
from daemon.app.completion import _subcommands, bash_script

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def complete(script: Path, line: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the last word of `line` (a trailing space: a new word)."""
    words = line.split(" ")
    array = " ".join(f"'{w}'" for w in words)
    code = (
        f"source '{script}'\nCOMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
        "_mediasortd; printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    ).stdout
    return sorted(w for w in out.splitlines() if w)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "mediasortd"
    path.write_text(bash_script())
    subprocess.run(["bash", "-n", str(path)], check=True)
    return path


def test_offers_every_subcommand(script: Path) -> None:
    want = sorted(_subcommands(build_parser()))
    assert {"run", "import", "status", "find", "history", "undo", "verify", "adopt"} <= set(want)
    assert complete(script, "mediasortd ") == want
    assert complete(script, "mediasortd st") == ["status"]
    assert complete(script, "mediasortd --config /etc/x.toml h") == ["history"]


def test_offers_each_subcommands_options(script: Path) -> None:
    imp = _subcommands(build_parser())["import"]
    want = sorted(o for a in imp._actions for o in a.option_strings if o.startswith("--"))
    assert {"--config", "--dry-run", "--help", "--move"} <= set(want)
    assert complete(script, "mediasortd import --") == want
    assert "--outcome" in complete(script, "mediasortd history --o")
    assert complete(script, "mediasortd --") == ["--config", "--help", "--version"]


def test_files_where_a_path_goes_and_nothing_after_other_values(
    script: Path, tmp_path: Path
) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"x")
    (tmp_path / "conf.toml").write_text("")
    assert complete(script, "mediasortd status --config co", tmp_path) == ["conf.toml"]
    assert complete(script, "mediasortd import --move ph", tmp_path) == ["photo.jpg"]
    assert complete(script, "mediasortd find ph", tmp_path) == ["photo.jpg"]
    assert complete(script, "mediasortd history --limit ", tmp_path) == []
    assert complete(script, "mediasortd status ", tmp_path) == []
