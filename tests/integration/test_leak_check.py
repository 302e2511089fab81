"""The leak check of tests/conftest.py catches what it is for: a test run by pytest in a
subprocess with that conftest fails when it leaves a thread or an ExifTool process
running, and passes when it stops them or says why with @pytest.mark.leaves."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT

pytest_plugins = ["pytester"]

LEAKY = """
import threading
from pathlib import Path

import pytest

from daemon.media.metadata import Reader

stop = threading.Event()
readers = []


def started(tmp_path: Path) -> Reader:  # its ExifTool runs (a text file is not quick)
    (tmp_path / "notes.txt").write_text("not a photo")
    reader = Reader(timezone="UTC")
    reader.describe(bytes(tmp_path / "notes.txt"), "notes.txt", 0)
    assert reader.pid is not None
    return reader


def test_leaves_a_thread() -> None:
    threading.Thread(target=stop.wait, name="left-behind").start()


def test_leaves_an_exiftool(tmp_path: Path) -> None:
    readers.append(started(tmp_path))  # still referred to: not collected


@pytest.mark.leaves(threads=("left-behind",), why="the next test stops it")
def test_says_it_leaves_a_thread() -> None:
    threading.Thread(target=stop.wait, name="left-behind 2").start()


def test_stops_what_it_started(tmp_path: Path) -> None:
    stop.set()
    for reader in readers:
        reader.close()
    threading.Thread(target=lambda: None).start()
    started(tmp_path).close()
"""


def test_a_leaked_thread_or_exiftool_fails_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest(
        "import tests.conftest\n"
        "from tests.conftest import *  # noqa: F403\n"
        "tests.conftest.STOPPING_SECONDS = 1.0\n"
    )
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*test_leaves_a_thread left running what it started:",
            "thread 'left-behind' (daemon=False), at:",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*test_leaves_an_exiftool left running what it started:",
            "exiftool process *exiftool*-stay_open*",
        ]
    )
    assert "test_says_it_leaves_a_thread left" not in result.stdout.str()
    assert "test_stops_what_it_started left" not in result.stdout.str()
