"""What an import or adopt shows on a terminal: the progress line (files, bytes, rate, time
left) with short lines above it (also the structlog renderer there), and the summary
table at the end. Output only: nothing here changes a file or the catalog.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from .show import printable
from .show import size as human_size

if TYPE_CHECKING:
    from .oneshot import ImportSummary


class Progress:
    """A terminal that talks: one progress line (files, bytes, rate, time left) redrawn in
    place, warnings and errors as short lines above it (per-file lines too with
    verbose), nothing with quiet. It is also the structlog renderer on a terminal
    (logs.configure(renderer=...)): events become those short lines, in local time.
    Silent when `out` is not a terminal (the structured logs are used there)."""

    def __init__(
        self,
        total: int,
        out: TextIO = sys.stderr,
        *,
        total_bytes: int = 0,
        verbosity: int = 0,
        library: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.total_bytes = total_bytes
        self.out = out
        self.on = out.isatty()
        self.verbosity = verbosity  # -1 quiet, 0 normal, 1 verbose
        self.library = library.rstrip("/") + "/" if library else ""
        self.clock = clock
        self.done = 0
        self.done_bytes = 0
        self.counts: dict[str, int] = {}
        self.started = clock()
        self.last = 0.0
        self.drawn = False
        self.lock = threading.Lock()

    def start(self, total: int, total_bytes: int = 0) -> None:
        with self.lock:
            self.total, self.total_bytes, self.started = total, total_bytes, self.clock()

    def advance(self, size: int, counts: dict[str, int]) -> None:
        """One more file handled (from any worker thread)."""
        with self.lock:
            self.done += 1
            self.done_bytes += size
        self.update(dict(counts))

    def update(self, counts: dict[str, int] | None = None, force: bool = False) -> None:
        with self.lock:
            if counts is not None:
                self.counts = counts
            now = self.clock()
            if (
                not self.on
                or self.verbosity < 0
                or self.total == 0
                or (not force and now - self.last < 0.1)
            ):
                return
            self.last = now
            self._draw()

    def _draw(self) -> None:
        width = 24
        filled = int(width * self.done / self.total) if self.total else width
        elapsed = max(self.clock() - self.started, 1e-6)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done:,}/{self.total:,} files"
        if self.total_bytes:
            rate = self.done_bytes / elapsed
            line += f", {human_size(self.done_bytes)}/{human_size(self.total_bytes)}"
            line += f", {human_size(int(rate))}/s" if self.done_bytes else ""
            if rate > 0 and self.done < self.total:
                line += f", {_duration((self.total_bytes - self.done_bytes) / rate)} left"
        parts = ", ".join(f"{n:,} {k}" for k, n in self.counts.items() if n)
        self.out.write(f"\r{line}{'  ' + parts if parts else ''}\x1b[K")
        self.out.flush()
        self.drawn = True

    def line(self, text: str) -> None:
        """A short line above the progress line (control characters of names escaped)."""
        with self.lock:
            if not self.on or self.verbosity < 0:
                return
            self.out.write(f"\r\x1b[K{printable(text)}\n")
            if self.drawn:
                self._draw()
            else:
                self.out.flush()

    def close(self) -> None:
        with self.lock:
            if self.on and self.drawn:
                self.out.write("\n")
                self.out.flush()
            self.drawn = False

    # -- the log, on a terminal (logs.configure(on_event=...)) ---------------------------

    def event(self, event: dict[str, Any]) -> None:
        text = self.describe(event)
        if text is not None:
            self.line(f"{time.strftime('%H:%M:%S')} {text}")

    def describe(self, event: dict[str, Any]) -> str | None:
        """The short line for a log event, or None when it says nothing people need
        here (per-file lines only when verbose)."""
        name = str(event.get("event", ""))
        level = str(event.get("level", "info"))
        src = event.get("source")
        if name == "ingest.finished":
            outcome, error = event.get("outcome"), event.get("error")
            dest = str(event.get("dest") or "")
            dest = dest.removeprefix(self.library)
            if outcome in ("rejected", "failed") or (error and outcome != "filed"):
                return (
                    f"{str(outcome).upper() if outcome == 'failed' else outcome}  "
                    f"{src}: {error or ''}".rstrip(": ")
                )
            if self.verbosity > 0:
                return f"{outcome:9} {src}" + (f" -> {dest}" if dest else "")
            return None
        if level in ("warning", "error", "critical", "exception"):
            extra = ", ".join(
                f"{k}={v}"
                for k, v in event.items()
                if k in ("source", "path", "error", "reason") and v is not None
            )
            return f"{level}: {name}" + (f": {extra}" if extra else "")
        if self.verbosity > 0 and name not in ("import.started", "import.finished"):
            extra = " ".join(
                f"{k}={v}"
                for k, v in event.items()
                if k not in ("event", "level", "timestamp") and v is not None
            )
            return f"{name} {extra}".rstrip()
        return None


def _duration(secs: float) -> str:
    secs = max(0, int(secs))
    if secs >= 3600:
        return f"{secs // 3600}h{secs % 3600 // 60:02d}m"
    if secs >= 60:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs}s"


def summary_table(summary: ImportSummary, library: str) -> list[str]:
    """The end of an import on a terminal: what became of the files, the top reasons,
    where the library is."""
    c = summary.counts
    rate = summary.bytes / summary.seconds if summary.seconds > 0 else 0
    lines = [
        (
            f"  {summary.total:,} file(s), {human_size(summary.bytes)} in "
            f"{_duration(summary.seconds)} ({human_size(int(rate))}/s), batch {summary.batch}"
        )
    ]
    rows = [
        ("filed", c.get("filed", 0), f"into {library}"),
        ("duplicates", c.get("duplicate", 0), "content already in the library"),
        ("rejected", c.get("rejected", 0), ""),
        ("failed", c.get("failed", 0), ""),
        ("vanished", c.get("vanished", 0), "gone before they could be read"),
    ]
    for name, n, note in rows:
        if not n and name == "vanished":
            continue
        key = {"duplicates": "duplicate"}.get(name, name)
        top = summary.reasons.get(key)
        if top and name in ("rejected", "failed"):
            text = "; ".join(f"{why} ({k})" for why, k in top.most_common(3))
        else:
            text = note
        lines.append(printable(f"  {name:<11}{n:>7,}  {text}".rstrip()))
    return lines
