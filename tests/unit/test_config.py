"""Config parsing: every key, its default, and errors that name the file and key."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon import config
from daemon.errors import EX_CONFIG, ConfigError
from daemon.rules.layout import DEFAULT_LAYOUT

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str) -> config.Config:
    return config.parse(tomllib.loads(text), "test.toml")


MINIMAL = '[paths]\ninbox = "/in"\nlibrary = "/lib"\n'


def test_minimal_config_gets_defaults() -> None:
    cfg = parse(MINIMAL)
    assert cfg.inbox == Path("/in") and cfg.library == Path("/lib")
    assert cfg.state_dir == Path("/var/lib/mediasortd")
    assert cfg.duplicates == Path("/lib/.duplicates")
    assert cfg.rejected == Path("/lib/.rejected")
    assert cfg.on_duplicate == "quarantine" and cfg.timezone == "local"
    assert cfg.layout == DEFAULT_LAYOUT
    assert (cfg.file_mode, cfg.dir_mode) == (0o640, 0o750)
    assert cfg.catalog == Path("/var/lib/mediasortd/catalog.db")


def test_example_config_documents_every_default() -> None:
    """config.example.toml parses, and its values are exactly the defaults."""
    example = (ROOT / "config.example.toml").read_text()
    cfg = config.parse(tomllib.loads(example), "config.example.toml")
    minimal = parse('[paths]\ninbox = "/srv/media/inbox"\nlibrary = "/srv/media/library"\n')
    assert cfg == config.Config(**{**vars(minimal), "source": "config.example.toml"})
    for section, keys in config._SCHEMA.items():
        for key in keys:
            assert f"{key} =" in example, f"{section}.{key} is not documented"


@pytest.mark.parametrize(
    "text, key",
    [
        ('[paths]\ninbox = "/in"\n', "paths.library"),
        (MINIMAL + '[ingest]\nworkers = "4"\n', "ingest.workers"),
        (MINIMAL + "[ingest]\nworkers = true\n", "ingest.workers"),
        (MINIMAL + "[ingest]\nworkerz = 4\n", "ingest.workerz"),
        (MINIMAL + "[ingets]\nworkers = 4\n", "ingets"),
        ('[paths]\ninbox = "in"\nlibrary = "/lib"\n', "paths.inbox"),
        (MINIMAL + '[ingest]\non_duplicate = "shred"\n', "ingest.on_duplicate"),
        (MINIMAL + '[ingest]\ntimezone = "Mars/Olympus"\n', "ingest.timezone"),
        (MINIMAL + '[ingest]\nlayout = "{year}/../{ext}"\n', "ingest.layout"),
        (MINIMAL + '[ingest]\nlayout = "{year}/{camera}{ext}"\n', "ingest.layout"),
        (MINIMAL + '[ingest]\nfile_mode = "0666"\n', "ingest.file_mode"),
        (MINIMAL + '[logging]\nformat = "xml"\n', "logging.format"),
        ('[paths]\ninbox = "/lib/inbox"\nlibrary = "/lib"\n', "paths.inbox"),
    ],
)
def test_errors_name_file_and_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert str(e.value).startswith(f"test.toml: {key}:")
    assert e.value.exit_code == EX_CONFIG


def test_config_is_found_from_flag_then_env_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.ENV_VAR, "/from/env.toml")
    assert config.find("/flag.toml") == "/flag.toml"
    assert config.find(None) == "/from/env.toml"
    monkeypatch.delenv(config.ENV_VAR)
    assert config.find(None) == config.DEFAULT_PATH


def test_cli_exits_78_on_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[ingest]\nworkers = 0\n")
    r = subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(bad), "status"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 78
    assert f"{bad}: ingest.workers: must be at least 1" in r.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert missing.returncode == 78 and "no such config file" in missing.stderr


def test_inbox_is_one_path_or_a_list() -> None:
    one = parse(MINIMAL)
    assert one.inboxes == (Path("/in"),) and one.inbox == Path("/in")
    two = parse('[paths]\ninbox = ["/in/bob", "/in2/alice/"]\nlibrary = "/lib"\n')
    assert two.inboxes == (Path("/in/bob"), Path("/in2/alice")) and two.inbox == Path("/in/bob")
    assert two.inbox_of(b"/in2/alice/DCIM/x.jpg") == Path("/in2/alice")
    assert two.inbox_of(b"/in2/alicex/y.jpg") is None
    for bad in (
        "[]",
        '["/in", "/in/sub"]',
        '["/in", "/in"]',
        '["/in", "/lib/x"]',
        '["/in", "rel"]',
        '["/in", 3]',
    ):
        with pytest.raises(ConfigError) as e:
            parse(f'[paths]\ninbox = {bad}\nlibrary = "/lib"\n')
        assert str(e.value).startswith("test.toml: paths.inbox:"), bad


def test_undated_key() -> None:
    assert config.parse(tomllib.loads(MINIMAL), "t").undated == "folder"
    for mode in ("folder", "mtime", "reject"):
        cfg = config.parse(tomllib.loads(MINIMAL + f'[ingest]\nundated = "{mode}"\n'), "t")
        assert cfg.undated == mode
    with pytest.raises(ConfigError, match=r"ingest\.undated"):
        config.parse(tomllib.loads(MINIMAL + '[ingest]\nundated = "later"\n'), "t")


def test_hostile_layout_is_refused_with_exit_78() -> None:
    with pytest.raises(ConfigError, match=r"ingest\.layout") as e:
        config.parse(
            tomllib.loads(MINIMAL + '[ingest]\nlayout = "{month:/>1.0}{day:.>2.0}{ext}"\n'), "t"
        )
    assert e.value.exit_code == 78
