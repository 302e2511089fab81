"""The retry policy (rules/retry.py): which trouble is what, and what is decided for it,
as a table of cases. Pure: no files, no clock."""

from __future__ import annotations

import errno

import pytest

from daemon.errors import ConfigError, ToolError
from daemon.rules.retry import (
    DAEMON,
    ONESHOT,
    WRITER_PATIENCE,
    Again,
    Backoff,
    Decision,
    GiveUp,
    Policy,
    Stop,
    Trouble,
    classify,
)

T = Trouble


@pytest.mark.parametrize(
    ("error", "catalog", "kind"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), None, T.FULL),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), None, T.FULL),
        (OSError(errno.EMFILE, "Too many open files"), None, T.SYSTEM),
        (OSError(errno.EIO, "Input/output error"), None, T.SYSTEM),
        (PermissionError(errno.EACCES, "Permission denied"), None, T.SYSTEM),
        (OSError("no errno"), None, T.SYSTEM),
        (ToolError("exiftool died"), None, T.TOOL),
        (ValueError("ours"), None, T.BUG),
        (ConfigError("not a file's"), None, T.BUG),
        # the store's word on SQLite's errors comes first
        (RuntimeError("database is locked"), T.LOCKED, T.LOCKED),
        (RuntimeError("disk I/O error"), T.STATE, T.STATE),
        (RuntimeError("database disk image is malformed"), T.BROKEN, T.BROKEN),
    ],
)
def test_classify(error: BaseException, catalog: Trouble | None, kind: Trouble) -> None:
    assert classify(error, catalog) is kind


@pytest.mark.parametrize(
    ("kind", "records", "counts"),
    [
        (T.LOCKED, False, False),  # the journal cannot be written meanwhile
        (T.STATE, False, False),
        (T.BROKEN, False, False),
        (T.BUG, False, False),  # failed at once
        (T.TOOL, True, True),
        (T.SYSTEM, True, True),
        (T.FULL, True, True),
        (T.CHANGED, True, True),
        (T.REOPENED, True, True),
        (T.WRITER, True, False),  # waiting for a writer is not a failed attempt
    ],
)
def test_what_is_recorded_and_counted(kind: Trouble, records: bool, counts: bool) -> None:
    assert (kind.records, kind.counts) == (records, counts)


GAVE_UP_5 = GiveUp(" (gave up after 5 attempts)")

# (policy, trouble, attempts recorded (this one included), job's age s, settle s, decision)
CASES: list[tuple[Policy, Trouble, int, float, float, Decision]] = [
    # an error of the file's own or of the moment: doubling from 0.5 s, five attempts
    (ONESHOT, T.SYSTEM, 1, 0, 2, Again(1.0)),
    (ONESHOT, T.SYSTEM, 2, 0, 2, Again(2.0)),
    (ONESHOT, T.SYSTEM, 3, 0, 2, Again(4.0)),
    (ONESHOT, T.SYSTEM, 4, 0, 2, Again(8.0)),
    (ONESHOT, T.SYSTEM, 5, 0, 2, GAVE_UP_5),
    (ONESHOT, T.TOOL, 4, 0, 2, Again(8.0)),
    (ONESHOT, T.TOOL, 5, 0, 2, GAVE_UP_5),
    # the daemon never gives up; the wait stops doubling at 2**7 and at a minute
    (DAEMON, T.SYSTEM, 5, 0, 2, Again(16.0)),
    (DAEMON, T.SYSTEM, 6, 0, 2, Again(32.0)),
    (DAEMON, T.SYSTEM, 7, 0, 2, Again(60.0)),
    (DAEMON, T.TOOL, 1000, 0, 2, Again(60.0)),
    (Policy(max_attempts=None, backoff=Backoff(cap=1e9)), T.SYSTEM, 1000, 0, 2, Again(64.0)),
    # a full library: looked at again every 5 s at most, an import gives up at 10
    (ONESHOT, T.FULL, 1, 0, 2, Again(1.0)),
    (ONESHOT, T.FULL, 3, 0, 2, Again(4.0)),
    (ONESHOT, T.FULL, 4, 0, 2, Again(5.0)),
    (ONESHOT, T.FULL, 9, 0, 2, Again(5.0)),
    (ONESHOT, T.FULL, 10, 0, 2, GiveUp()),  # the reason says it: the library is full
    (DAEMON, T.FULL, 500, 0, 2, Again(5.0)),
    # the source changed while copied / a writer opened it since: after the settle time
    (ONESHOT, T.CHANGED, 1, 0, 2, Again(2.0)),
    (ONESHOT, T.CHANGED, 1, 0, 0, Again(0.5)),
    (ONESHOT, T.CHANGED, 5, 0, 2, GAVE_UP_5),
    (DAEMON, T.CHANGED, 50, 0, 0.2, Again(0.5)),
    (ONESHOT, T.REOPENED, 1, 0, 3, Again(3.0)),
    (ONESHOT, T.REOPENED, 1, 0, 0, Again(1.0)),
    (ONESHOT, T.REOPENED, 5, 0, 0, GAVE_UP_5),
    (DAEMON, T.REOPENED, 50, 0, 0, Again(1.0)),
    # a writer at work: an import waits up to a minute by the job's age, whatever the
    # attempts its own errors used; the daemon as long as it takes
    (ONESHOT, T.WRITER, 0, 0, 2, Again(2.0)),
    (ONESHOT, T.WRITER, 4, 59.9, 0, Again(1.0)),
    (ONESHOT, T.WRITER, 5, 10, 0, Again(1.0)),
    (ONESHOT, T.WRITER, 0, WRITER_PATIENCE, 2, GiveUp(" (gave up after 60 s)")),
    (ONESHOT, T.WRITER, 0, 75.4, 2, GiveUp(" (gave up after 75 s)")),
    (DAEMON, T.WRITER, 0, 86400, 2, Again(2.0)),
    # the catalog's trouble: never counted against the file
    (ONESHOT, T.LOCKED, 0, 0, 2, Again(1.0)),
    (ONESHOT, T.LOCKED, 99, 0, 2, Again(1.0)),
    (DAEMON, T.LOCKED, 0, 0, 2, Again(1.0)),
    (ONESHOT, T.STATE, 0, 0, 2, Stop()),  # a one-shot command says so (exit 75 / 73)
    (DAEMON, T.STATE, 0, 0, 2, Again(5.0)),  # the daemon waits for space
    (ONESHOT, T.BROKEN, 0, 0, 2, Stop()),
    (DAEMON, T.BROKEN, 0, 0, 2, Stop()),
    # a bug of ours fails the job at once
    (ONESHOT, T.BUG, 0, 0, 2, GiveUp()),
    (DAEMON, T.BUG, 0, 0, 2, GiveUp()),
    # an injected backoff (a test that need not wait the real one out)
    (Policy(backoff=Backoff(base=1 / 64)), T.SYSTEM, 4, 0, 2, Again(0.25)),
    (Policy(backoff=Backoff(base=1 / 64)), T.SYSTEM, 5, 0, 2, GAVE_UP_5),
    (Policy(backoff=Backoff(base=1 / 64)), T.FULL, 9, 0, 2, Again(2.0)),
    (Policy(backoff=Backoff(base=1 / 64, full_cap=1)), T.FULL, 9, 0, 2, Again(1.0)),
    (Policy(max_attempts=2), T.SYSTEM, 2, 0, 2, GiveUp(" (gave up after 2 attempts)")),
    (Policy(max_attempts=2), T.FULL, 3, 0, 2, Again(4.0)),
    (Policy(max_attempts=2), T.FULL, 4, 0, 2, GiveUp()),
]


@pytest.mark.parametrize(("policy", "kind", "attempts", "age", "settle", "decision"), CASES)
def test_decide(
    policy: Policy, kind: Trouble, attempts: int, age: float, settle: float, decision: Decision
) -> None:
    assert policy.decide(kind, attempts, age=age, settle=settle) == decision


def test_every_trouble_has_a_case() -> None:
    assert {case[1] for case in CASES} == set(Trouble)
