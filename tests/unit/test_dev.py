"""./dev run writes var/config.toml only when it does not exist (issue 13.6): its
local_config function, run by bash as ./dev runs it."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _local_config(cwd: Path) -> subprocess.CompletedProcess[str]:
    script = (
        f"HERE={shlex.quote(str(cwd))}; "
        f'eval "$(sed -n "/^toml_str() /p;/^local_config() {{/,/^}}/p" "{ROOT}/dev")"; '
        "local_config"
    )
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, check=True
    )


def test_dev_run_keeps_an_edited_config(tmp_path: Path) -> None:
    _local_config(tmp_path)
    cfg = tmp_path / "var" / "config.toml"
    assert f'inbox = "{tmp_path}/var/inbox"' in cfg.read_text()
    cfg.write_text(cfg.read_text() + "# my edit\n")
    again = _local_config(tmp_path)
    assert cfg.read_text().endswith("# my edit\n")
    assert "existing var/config.toml" in again.stderr


def test_dev_run_config_loads_from_any_checkout_path(tmp_path: Path) -> None:
    """A checkout whose path holds a backslash or a double quote: the written TOML broke
    (exit 78) or, worse, read `\\n` in the path as a newline and named other folders."""
    from daemon import config

    here = tmp_path / 'it\'s a "dev" \\new dir'
    here.mkdir()
    _local_config(here)
    cfg = config.load(str(here / "var" / "config.toml"))
    assert cfg.inbox == here / "var" / "inbox" and cfg.library == here / "var" / "library"
    assert cfg.state_dir == here / "var" / "state"
