"""Metrics for monitoring: counters the daemon keeps, rendered in Prometheus' text format
and written to a textfile that the node exporter's textfile collector reads. Crash
invariant: the file is replaced whole (a temporary fsynced and renamed over it, its
folder fsynced), so a reader sees the old file or the new one, never half of one.

No listener: the unit keeps PrivateNetwork=. Counters by outcome start from the
journal's all-time totals; the others count since the daemon started.
"""

from __future__ import annotations

import math
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..engine.ingest import Finished, Result, Retry
from ..errors import MediasortError
from ..files.dirs import fsync_dir
from ..model import Outcome, Step

# seconds; files take from milliseconds (a duplicate) to minutes (a large video)
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# the step a failed attempt was trying to do, by the step the job was at
ACTION = {
    Step.RECORDED: "copy",
    Step.COPIED: "decide",
    Step.DECIDED: "place",
    Step.PLACED: "retire",
}


@dataclass
class Histogram:
    counts: list[int]  # per bucket, not cumulative; the last is +Inf
    total: float = 0.0

    @classmethod
    def empty(cls) -> Histogram:
        return cls([0] * (len(BUCKETS) + 1))

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value


@dataclass(frozen=True)
class Gauges:
    """What is true right now, read when the file is written."""

    queue_depth: int  # hints queued for a worker plus jobs waiting to retry
    inbox_waiting: int  # files seen in the inbox that have not settled yet
    jobs_pending: int  # unfinished jobs in the journal
    library_full: bool
    library_free_bytes: int | None
    exiftool_restarts: int
    workers: int


class Metrics:
    """Thread-safe counters, fed with every ingest result (worker threads)."""

    def __init__(
        self, base_counts: dict[str, int], base_filed_bytes: int, start_time: float
    ) -> None:
        self.lock = threading.Lock()
        self.files = {o.value: base_counts.get(o.value, 0) for o in Outcome}
        self.filed_bytes = base_filed_bytes
        self.step_failures = dict.fromkeys(ACTION.values(), 0)
        self.durations = {o.value: Histogram.empty() for o in Outcome}
        self.start_time = start_time

    def observe(self, result: Result) -> None:
        with self.lock:
            if isinstance(result, Retry):
                self.step_failures[ACTION.get(result.job.step, "copy")] += 1
            elif isinstance(result, Finished) and result.job.outcome is not None:
                outcome = result.job.outcome.value
                self.files[outcome] += 1
                if result.job.outcome is Outcome.FILED:
                    self.filed_bytes += result.job.size or 0
                self.durations[outcome].observe(result.duration_ms / 1000)

    def render(self, g: Gauges) -> str:
        with self.lock:
            out = _Text()
            out.family(
                "mediasortd_files_total",
                "counter",
                "Files handled, by outcome (all time, from the journal).",
                (({"outcome": o}, n) for o, n in self.files.items()),
            )
            out.family(
                "mediasortd_filed_bytes_total",
                "counter",
                "Bytes of new files filed into the library (all time).",
                [({}, self.filed_bytes)],
            )
            out.family(
                "mediasortd_step_failures_total",
                "counter",
                "Failed attempts at an ingest step since the daemon started; each is "
                'retried, a file that keeps failing ends as outcome="failed".',
                (({"step": s}, n) for s, n in self.step_failures.items()),
            )
            out.family(
                "mediasortd_exiftool_restarts_total",
                "counter",
                "ExifTool processes that died or hung and were replaced, since the daemon started.",
                [({}, g.exiftool_restarts)],
            )
            out.histogram(
                "mediasortd_ingest_duration_seconds",
                "Time from taking a file to finishing it, by outcome, since the daemon started.",
                self.durations,
            )
            out.family(
                "mediasortd_queue_depth",
                "gauge",
                "Files queued for a worker or waiting to retry.",
                [({}, g.queue_depth)],
            )
            out.family(
                "mediasortd_inbox_waiting",
                "gauge",
                "Files seen in the inbox that have not settled yet.",
                [({}, g.inbox_waiting)],
            )
            out.family(
                "mediasortd_jobs_pending",
                "gauge",
                "Unfinished jobs in the journal.",
                [({}, g.jobs_pending)],
            )
            out.family(
                "mediasortd_library_full",
                "gauge",
                "1 while the library's filesystem is full and copying waits for space.",
                [({}, int(g.library_full))],
            )
            if g.library_free_bytes is not None:
                out.family(
                    "mediasortd_library_free_bytes",
                    "gauge",
                    "Space left for the daemon on the library's filesystem.",
                    [({}, g.library_free_bytes)],
                )
            out.family("mediasortd_workers", "gauge", "Worker threads.", [({}, g.workers)])
            out.family(
                "mediasortd_start_time_seconds",
                "gauge",
                "When the daemon started, seconds since the Unix epoch.",
                [({}, self.start_time)],
            )
            return out.text()


class _Text:
    """Prometheus text exposition format 0.0.4."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, str], float]]
    ) -> None:
        self.lines += [f"# HELP {name} {_escape_help(help_)}", f"# TYPE {name} {kind}"]
        self.lines += [f"{name}{_labels(labels)} {_value(v)}" for labels, v in samples]

    def histogram(self, name: str, help_: str, by_outcome: dict[str, Histogram]) -> None:
        self.lines += [f"# HELP {name} {_escape_help(help_)}", f"# TYPE {name} histogram"]
        for outcome, h in by_outcome.items():
            running = 0
            for bound, n in zip((*BUCKETS, math.inf), h.counts, strict=True):
                running += n
                labels = {"outcome": outcome, "le": _value(bound)}
                self.lines.append(f"{name}_bucket{_labels(labels)} {running}")
            self.lines.append(f"{name}_sum{_labels({'outcome': outcome})} {_value(h.total)}")
            self.lines.append(f"{name}_count{_labels({'outcome': outcome})} {running}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(v: float) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


# The first line of every textfile we write (a comment to Prometheus). A file at the path
# that does not start with it is someone else's and is never replaced.
HEADER = "# mediasortd metrics textfile, rewritten by the daemon; do not edit"
_BEFORE_HEADER = b"# HELP mediasortd_files_total "  # how files written before it began


class NotOurs(MediasortError):
    """The metrics textfile's path holds a file mediasortd did not write."""


def check_ours(path: Path) -> None:
    """Raise NotOurs unless `path` is absent or a regular file that starts with HEADER."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as e:
        raise NotOurs(
            f"{path}: not replaced: cannot check it is a metrics file of ours: {e.strerror}"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotOurs(f"{path}: not replaced: not a regular file")
        first = os.read(fd, max(len(HEADER) + 1, len(_BEFORE_HEADER)))
    finally:
        os.close(fd)
    if first != (HEADER + "\n").encode() and not first.startswith(_BEFORE_HEADER):
        raise NotOurs(
            f"{path}: not replaced: it is not a metrics file written by mediasortd "
            "(its first line is not our header); move it away or choose another "
            "metrics.textfile"
        )


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` atomically: a temporary beside it (a name the node exporter does not
    read), fsynced, renamed over it, the folder fsynced. Mode 0644 whatever the umask:
    the node exporter runs as another user. Only a file we wrote (HEADER first) is ever
    replaced: anything else at the path raises NotOurs and stays as it is."""
    check_ours(path)
    text = HEADER + "\n" + text
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # a leftover, or a link someone left at this predictable name: never written through
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.fchmod(fd, 0o644)
        data = text.encode()
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    fsync_dir(os.fsencode(path.parent))
