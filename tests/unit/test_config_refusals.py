"""Configs an admin can get wrong are refused at load time with exit 78 and one line naming
the key (and, for overlapping folders, both keys and both paths): never a traceback,
never a daemon that destroys its own state."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from daemon import config
from daemon.errors import EX_CONFIG, ConfigError

ROOT = Path(__file__).resolve().parents[2]
FOLDER_KEYS = ("inbox", "library", "duplicates", "rejected", "state_dir")


def write_config(tmp: Path, paths: Mapping[str, Path | str], extra: str = "") -> Path:
    lines = ["[paths]", *(f'{k} = "{v}"' for k, v in paths.items())]
    cfg = tmp / "config.toml"
    cfg.write_text("\n".join(lines) + "\n" + extra)
    return cfg


def separate(tmp: Path) -> dict[str, Path]:
    return {k: tmp / k for k in FOLDER_KEYS}


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        config.load(str(path))
    assert e.value.exit_code == EX_CONFIG
    assert "\n" not in str(e.value)
    return str(e.value)


def test_separate_folders_and_the_documented_defaults_are_accepted(tmp_path: Path) -> None:
    paths = separate(tmp_path)
    config.load(str(write_config(tmp_path, paths)))
    lib = tmp_path / "library"
    default = {"inbox": tmp_path / "in", "library": lib, "state_dir": tmp_path / "st"}
    cfg = config.load(str(write_config(tmp_path, default)))
    assert cfg.duplicates == lib / ".duplicates" and cfg.rejected == lib / ".rejected"
    hidden = {**default, "duplicates": lib / ".q/dups", "rejected": lib / ".rej"}
    config.load(str(write_config(tmp_path, hidden)))


@pytest.mark.parametrize(
    "outer, inner",
    [
        (a, b)
        for a, b in itertools.permutations(FOLDER_KEYS, 2)
        if not (a == "library" and b in ("duplicates", "rejected"))
    ],
)
def test_every_folder_inside_every_other_is_refused(tmp_path: Path, outer: str, inner: str) -> None:
    paths = separate(tmp_path)
    paths[inner] = paths[outer] / "sub"
    msg = refused(write_config(tmp_path, paths))
    assert f"paths.{inner}" in msg and f"paths.{outer}" in msg
    assert str(paths[inner]) in msg and str(paths[outer]) in msg


@pytest.mark.parametrize("a, b", list(itertools.combinations(FOLDER_KEYS, 2)))
def test_two_keys_naming_one_folder_are_refused(tmp_path: Path, a: str, b: str) -> None:
    paths = separate(tmp_path)
    paths[b] = paths[a]
    msg = refused(write_config(tmp_path, paths))
    assert f"paths.{a}" in msg and f"paths.{b}" in msg and "same folder" in msg


@pytest.mark.parametrize("inner", [".staging", ".staging/dups", ".undone", "visible"])
def test_quarantine_in_the_library_only_as_a_hidden_folder_of_its_own(
    tmp_path: Path, inner: str
) -> None:
    paths = separate(tmp_path)
    paths["duplicates"] = paths["library"] / inner
    msg = refused(write_config(tmp_path, paths))
    assert "paths.duplicates" in msg and "paths.library" in msg


def test_a_library_symlinked_into_the_inbox_is_refused(tmp_path: Path) -> None:
    paths = separate(tmp_path)
    (tmp_path / "inbox" / "lib").mkdir(parents=True)
    (tmp_path / "library").symlink_to(tmp_path / "inbox" / "lib")
    msg = refused(write_config(tmp_path, paths))
    assert "paths.library" in msg and "paths.inbox" in msg
    assert f"resolved: {tmp_path / 'inbox' / 'lib'}" in msg


def test_a_state_dir_behind_a_symlinked_parent_inside_the_library_is_refused(
    tmp_path: Path,
) -> None:
    paths = separate(tmp_path)
    (tmp_path / "library" / "2020").mkdir(parents=True)
    (tmp_path / "var").symlink_to(tmp_path / "library" / "2020")
    paths["state_dir"] = tmp_path / "var" / "state"  # does not exist yet
    msg = refused(write_config(tmp_path, paths))
    assert "paths.state_dir" in msg and "paths.library" in msg


@pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")
def test_the_same_folder_under_a_bind_mount_is_recognised_by_its_inode(tmp_path: Path) -> None:
    paths = separate(tmp_path)
    for p in paths.values():
        p.mkdir()
    (tmp_path / "library" / "inside").mkdir()
    if subprocess.run(
        ["mount", "--bind", str(tmp_path / "library" / "inside"), str(paths["state_dir"])],
        check=False,
        capture_output=True,
    ).returncode:
        pytest.skip("mount --bind is not allowed here")
    try:
        msg = refused(write_config(tmp_path, paths))
        assert "paths.state_dir" in msg and "paths.library" in msg
    finally:
        subprocess.run(["umount", str(paths["state_dir"])], check=True)


@pytest.mark.parametrize("where", ["inbox", "library", "duplicates", "rejected", "state_dir"])
def test_the_metrics_textfile_is_never_inside_a_folder_of_ours(tmp_path: Path, where: str) -> None:
    paths = separate(tmp_path)
    prom = paths[where] / "mediasortd.prom"
    msg = refused(write_config(tmp_path, paths, f'[metrics]\ntextfile = "{prom}"\n'))
    assert "metrics.textfile" in msg and f"paths.{where}" in msg


@pytest.mark.parametrize("name", ["photo.jpg", "metrics.txt", "mediasortd", ".prom", "x.prom.bak"])
def test_the_metrics_textfile_must_end_in_prom(tmp_path: Path, name: str) -> None:
    paths = separate(tmp_path)
    msg = refused(
        write_config(tmp_path, paths, f'[metrics]\ntextfile = "{tmp_path / "node" / name}"\n')
    )
    assert msg.startswith(f"{tmp_path / 'config.toml'}: metrics.textfile:") and ".prom" in msg


def test_a_metrics_textfile_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "node" / "x.prom").mkdir(parents=True)
    msg = refused(
        write_config(
            tmp_path,
            separate(tmp_path),
            f'[metrics]\ntextfile = "{tmp_path / "node" / "x.prom"}"\n',
        )
    )
    assert "metrics.textfile" in msg and "folder" in msg


MINIMAL = '[paths]\ninbox = "/in"\nlibrary = "/lib"\n'


@pytest.mark.parametrize(
    "body, key",
    [
        ("workers = 0", "ingest.workers"),
        ("workers = -3", "ingest.workers"),
        ("workers = 100000", "ingest.workers"),
        ("workers = 9223372036854775807", "ingest.workers"),
        ("queue_size = 0", "ingest.queue_size"),
        ("queue_size = -1", "ingest.queue_size"),
        ("settle_seconds = 0", "ingest.settle_seconds"),
        ("settle_seconds = -1.5", "ingest.settle_seconds"),
        ("settle_seconds = nan", "ingest.settle_seconds"),
        ("settle_seconds = inf", "ingest.settle_seconds"),
        ("rescan_seconds = 0", "ingest.rescan_seconds"),
        ("rescan_seconds = inf", "ingest.rescan_seconds"),
        ("rescan_seconds = 1e308", "ingest.rescan_seconds"),
        ("rescan_seconds = 0.001", "ingest.rescan_seconds"),
        ("companion_grace_seconds = 0", "ingest.companion_grace_seconds"),
        ("companion_grace_seconds = -inf", "ingest.companion_grace_seconds"),
        ("batch_idle_seconds = 0", "ingest.batch_idle_seconds"),
        ("batch_idle_seconds = -nan", "ingest.batch_idle_seconds"),
        ('file_mode = "0666"', "ingest.file_mode"),
        ('dir_mode = "0777"', "ingest.dir_mode"),
        ('file_mode = "0642"', "ingest.file_mode"),
        ('file_mode = "0990"', "ingest.file_mode"),
        ('file_mode = "rw-r-----"', "ingest.file_mode"),
        ("file_mode = 640", "ingest.file_mode"),
        ("file_mode = 0o640", "ingest.file_mode"),
        ('file_mode = "0x1a0"', "ingest.file_mode"),
        ('file_mode = "0040"', "ingest.file_mode"),
        ('dir_mode = "0640"', "ingest.dir_mode"),
        ('file_mode = ""', "ingest.file_mode"),
        ('file_mode = "01777"', "ingest.file_mode"),
        ('timezone = "Mars/Olympus"', "ingest.timezone"),
        ('timezone = ""', "ingest.timezone"),
        ('timezone = "../../../etc/passwd"', "ingest.timezone"),
        ('timezone = "/etc/localtime"', "ingest.timezone"),
        ('timezone = "UTC\\u0000"', "ingest.timezone"),
    ],
)
def test_values_out_of_range_are_refused(body: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(tomllib.loads(MINIMAL + "[ingest]\n" + body + "\n"), "t.toml")
    assert str(e.value).startswith(f"t.toml: {key}:"), str(e.value)


@pytest.mark.parametrize("key", ["inbox", "library", "state_dir", "duplicates", "rejected"])
@pytest.mark.parametrize("value", ['""', '"/srv/in\\u0000x"', '"relative"', "[]", "1"])
def test_bad_paths_are_refused(key: str, value: str) -> None:
    paths = {"inbox": '"/in"', "library": '"/lib"', key: value}
    text = "[paths]\n" + "".join(f"{k} = {v}\n" for k, v in paths.items())
    with pytest.raises(ConfigError) as e:
        config.parse(tomllib.loads(text), "t.toml")
    assert str(e.value).startswith(f"t.toml: paths.{key}:")


def test_accepted_modes_and_limits() -> None:
    cfg = config.parse(
        tomllib.loads(
            MINIMAL + '[ingest]\nfile_mode = "600"\n'
            'dir_mode = "0o750"\nworkers = 256\n'
            "settle_seconds = 0.05\n"
        ),
        "t.toml",
    )
    assert (cfg.file_mode, cfg.dir_mode, cfg.workers) == (0o600, 0o750, 256)


WRONG_VALUES: list[Any] = [
    "",
    "x",
    "/abs",
    0,
    -1,
    2**63 - 1,
    1.5,
    float("nan"),
    float("inf"),
    True,
    [],
    ["/a"],
    {},
    {"a": 1},
    "\x00",
    "0640",
    "é" * 5000,
]


def test_every_key_fed_any_wrong_value_is_a_config_error_or_accepted() -> None:
    """The loader never raises anything but ConfigError, whatever a key holds."""
    for section, keys in config._SCHEMA.items():
        for key in keys:
            for value in WRONG_VALUES:
                data: dict[str, Any] = {"paths": {"inbox": "/in", "library": "/lib"}}
                data.setdefault(section, {})[key] = value
                try:
                    config.parse(data, "t.toml")
                except ConfigError as e:
                    assert str(e).startswith("t.toml: "), (section, key, value)
    docs: list[dict[str, Any]] = [
        {"paths": 1},
        {"paths": []},
        {"x": {}},
        {},
        {"paths": {"inbox": "/in"}},
    ]
    for doc in docs:
        with pytest.raises(ConfigError):
            config.parse(doc, "t.toml")


def test_random_bytes_never_crash_the_loader(tmp_path: Path) -> None:
    rng = random.Random(16)
    base = (
        b'[paths]\ninbox = "/in"\nlibrary = "/lib"\n[ingest]\nworkers = 4\n'
        b'settle_seconds = 2.0\nfile_mode = "0640"\ntimezone = "Europe/Berlin"\n'
    )
    path = tmp_path / "fuzz.toml"
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            config.load(str(path))
        except ConfigError:
            pass
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for special in (fifo, tmp_path, Path("/dev/zero")):
        with pytest.raises(ConfigError):
            config.load(str(special))
    path.write_bytes(b"#" * (config.MAX_BYTES + 1))
    with pytest.raises(ConfigError):
        config.load(str(path))
    for raw in (
        b"\xff\xfe[paths]\n",
        b"[" * 100_000,
        b"a = " + b"[" * 100_000,
        base + b"# caf\xe9\n",
        b"\x00" * 10,
    ):
        path.write_bytes(raw)
        with pytest.raises(ConfigError):
            config.load(str(path))


def run(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "--config", str(cfg), *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_the_cli_exits_78_with_one_line_on_a_non_utf8_or_overlapping_config(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[paths]\ninbox = "/srv/b\xe9b\xe9"\nlibrary = "/lib"\n')
    r = run(bad, "status")
    assert r.returncode == 78 and "Traceback" not in r.stderr, r.stderr
    assert f"{bad}: not UTF-8" in r.stderr
    paths = separate(tmp_path)
    paths["state_dir"] = paths["inbox"] / ".state"
    r = run(write_config(tmp_path, paths), "run")
    assert r.returncode == 78 and "Traceback" not in r.stderr, r.stderr
    assert "paths.state_dir" in r.stderr and "paths.inbox" in r.stderr
    assert not (paths["inbox"] / ".state").exists(), "nothing is created before refusing"
