"""Capture date and file type from ExifTool; the only module that talks to it (level 2).

`ExifTool` keeps one stay-open exiftool process; `decide` is the pure rule book that
turns its tags into a MediaInfo; `Reader` (one per worker) joins the two. Invariant: a
bad file never crashes a worker. Whatever a file does to ExifTool (an error, a hang, a
crash), `Reader.describe` returns NotMedia with the reason; only a missing exiftool raises.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
import weakref
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Self

from .errors import MediasortError, ToolError
from .layout import clean_ext
from .model import MediaInfo, NotMedia

# -G1 names tags by their precise group ("ExifIFD:DateTimeOriginal", "Keys:CreationDate").
# No -n: dates stay ExifTool's raw "YYYY:MM:DD HH:MM:SS[.ss][+hh:mm]" strings. No -fast:
# it saves nothing on local files, and -fast2 stops at 'mdat' (most MP4s keep 'moov'
# after it). -config "" keeps a user's ~/.ExifTool_config from changing the answers. No
# -charset filename: on Linux exiftool opens the name's bytes as given.
_READ_ARGS = ("-json", "-G1", "-api", "LargeFileSupport=1", "-time:all",
              "-FileType", "-MIMEType", "-FileTypeExtension", "-Error", "-Warning")
_STOP_SECONDS = 5.0


class ExifToolFailed(MediasortError):
    """ExifTool died or timed out while reading a file."""

    def __init__(self, message: str, path: bytes, done: list[dict[str, Any]],
                 timed_out: bool) -> None:
        super().__init__(message)
        self.path = path  # the file it was reading
        self.done = done  # the results for the paths before it, in order
        self.timed_out = timed_out


def _arg_line(path: bytes) -> bytes:
    """`path` as one line of an ExifTool argfile, or ValueError when it cannot be one."""
    if not path or any(c in path for c in b"\n\r\0"):
        # The argfile is line based and trailing CR/LF are stripped: such a name
        # would be read as another argument or as another file.
        raise ValueError(f"path not usable in an ExifTool argfile: {path!r}")
    if not path.startswith(b"/"):
        # Relative names could start with '-' (an option), '#' (a comment) or blanks
        # (stripped). exiftool runs in '/', so make them absolute from our cwd.
        path = os.path.join(os.getcwdb(), path)
    return path


def _line_at(buf: bytearray, marker: bytes) -> int:
    """Where `marker` starts a line of `buf`, or -1. JSON strings cannot hold a newline,
    so a tag value cannot fake one."""
    at = buf.find(marker)
    while at > 0 and buf[at - 1] != 0x0A:
        at = buf.find(marker, at + 1)
    return at


def _cut(buf: bytearray, marker: bytes) -> bytes:
    """Remove and return what precedes `marker` (which _line_at found)."""
    at = _line_at(buf, marker)
    head = bytes(buf[:at])
    del buf[: at + len(marker)]
    return head


def _status(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class _Process:
    """One running exiftool and its pipes; knows nothing of the ExifTool that owns it."""

    def __init__(self, argv: list[str]) -> None:
        # Own session: a Ctrl-C meant for the daemon does not kill exiftool mid-file
        # (the daemon drains its workers first), and killpg reaches all of it.
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, cwd="/", start_new_session=True)
        assert self.popen.stdin and self.popen.stdout and self.popen.stderr
        self.fd_in = self.popen.stdin.fileno()
        self.fd_out = self.popen.stdout.fileno()
        self.fd_err = self.popen.stderr.fileno()
        for fd in (self.fd_in, self.fd_out, self.fd_err):
            os.set_blocking(fd, False)
        self.out = bytearray()
        self.err = bytearray()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd_out, selectors.EVENT_READ)
        self.selector.register(self.fd_err, selectors.EVENT_READ)
        self.stopped = False

    def exchange(self, payload: bytes, ids: list[int],
                 timeout: float) -> tuple[list[tuple[bytes, bytes]], str | None]:
        """Send `payload` and collect each command's (stdout, stderr) in order.

        Stops early at the first command that does not finish within `timeout` of the
        one before it, or when the process dies: returns what finished and why not.
        """
        done: list[tuple[bytes, bytes]] = []
        todo = memoryview(payload)
        # Writing the whole request could block while exiftool blocks writing answers
        # we are not reading yet: feed stdin only when it is writable.
        self.selector.register(self.fd_in, selectors.EVENT_WRITE)
        writing, eof = True, False
        deadline = time.monotonic() + timeout
        try:
            while len(done) < len(ids):
                ready, echoed = b"{ready%d}\n" % ids[len(done)], b"{done%d}\n" % ids[len(done)]
                if _line_at(self.out, ready) >= 0 and _line_at(self.err, echoed) >= 0:
                    done.append((_cut(self.out, ready), _cut(self.err, echoed)))
                    deadline = time.monotonic() + timeout
                    continue
                left = deadline - time.monotonic()
                if eof:
                    return done, "died"
                if left <= 0:
                    return done, f"timed out after {timeout:g} s"
                for key, _ in self.selector.select(left):
                    if key.fd == self.fd_in:
                        try:
                            todo = todo[os.write(self.fd_in, todo[:65536]):]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            eof = True
                            continue
                        if not todo:
                            self.selector.unregister(self.fd_in)
                            writing = False
                        continue
                    try:
                        chunk = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    eof = eof or not chunk
                    (self.out if key.fd == self.fd_out else self.err).extend(chunk)
            return done, None
        finally:
            if writing:
                self.selector.unregister(self.fd_in)

    def last_words(self) -> bytes:
        """Kill it and return all it wrote to stderr (why it would not start)."""
        try:
            self.popen.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        self.kill(release=False)
        try:
            while chunk := os.read(self.fd_err, 65536):
                self.err.extend(chunk)
        except BlockingIOError:
            pass  # nothing more: whoever else holds the pipe is not writing
        self._release()
        return bytes(self.err)

    def kill(self, release: bool = True) -> None:
        if self.popen.returncode is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()
        if release:
            self._release()

    def stop(self) -> None:
        """Ask exiftool to exit; kill it if it does not within _STOP_SECONDS."""
        if self.stopped:
            return
        if self.popen.poll() is None:
            try:
                os.write(self.fd_in, b"-stay_open\nFalse\n")
            except OSError:
                pass
            assert self.popen.stdin
            self.popen.stdin.close()
            try:
                self.popen.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _release(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.selector.close()
            for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
                if stream:
                    stream.close()


class ExifTool:
    """One exiftool process in stay-open mode, started on first use. Not thread-safe.

    Several files go out in one request, each as its own command, so one bad file cannot
    shift the answers of the others. `timeout` applies to each file. If the process dies
    or hangs it is killed, `restarts` counts it, the request raises ExifToolFailed and the
    next request starts a fresh process.
    """

    def __init__(self, executable: str = "exiftool", timeout: float = 30.0) -> None:
        self.executable = executable
        self.timeout = timeout
        self.restarts = 0
        self.version = ""
        self._proc: _Process | None = None
        self._finalizer: weakref.finalize[[], ExifTool] | None = None
        self._seq = 0
        self._resolve()  # fail early: ToolError at construction when it is missing

    @property
    def pid(self) -> int | None:
        """The running exiftool's pid, or None before first use and after close."""
        return self._proc.popen.pid if self._proc else None

    def read(self, paths: list[bytes]) -> list[dict[str, Any]]:
        """ExifTool's tags for each path, in order: one dict per path.

        A file ExifTool cannot read gets a dict with "ExifTool:Error". Raises ValueError
        for a path that cannot be passed (newline), ExifToolFailed, ToolError.
        """
        lines = [_arg_line(p) for p in paths]
        if not lines:
            return []
        proc = self._running()
        payload = bytearray()
        ids = []
        for line in lines:
            self._seq += 1
            ids.append(self._seq)
            payload += line + b"\n-echo4\n{done%d}\n-execute%d\n" % (self._seq, self._seq)
        try:
            answers, failure = proc.exchange(bytes(payload), ids, self.timeout)
        except BaseException:
            self._discard()  # interrupted mid-request: its answers would mix with the next
            raise
        done = [_parse(out, err, p) for (out, err), p in zip(answers, paths)]
        if failure is not None:
            bad = paths[len(done)]
            died = failure == "died"
            self._discard(grace=1.0 if died else 0.0)
            if died:
                failure = f"died ({_status(proc.popen.returncode)})"
            raise ExifToolFailed(f"exiftool {failure} reading {os.fsdecode(bad)}", bad, done,
                                 timed_out=not died)
        return done

    def close(self) -> None:
        """Stop exiftool. Idempotent; a later read starts a new process."""
        if self._finalizer is not None:
            self._finalizer()  # runs _Process.stop once, then detaches
        self._proc = None
        self._finalizer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _resolve(self) -> str:
        found = shutil.which(self.executable)
        if found is None:
            raise ToolError(f"exiftool not found: {self.executable!r} is not an executable "
                            "(install libimage-exiftool-perl)")
        return found

    def _running(self) -> _Process:
        if self._proc is not None and self._proc.popen.poll() is not None:
            self._discard()  # died between requests (killed, OOM): replace it
        if self._proc is None:
            self._proc = self._start()
        return self._proc

    def _start(self) -> _Process:
        argv = [self._resolve(), "-config", "", "-stay_open", "True", "-@", "-",
                "-common_args", *_READ_ARGS]
        # exiftool does not exit when its stdin closes (it polls the argfile forever),
        # so a daemon killed with SIGKILL would leave it running: have the kernel kill it.
        # The kernel does so when the *thread* that started it ends: start it from the
        # worker that uses it (the start is lazy, so the first read does).
        setpriv = shutil.which("setpriv")
        if setpriv:
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        try:
            proc = _Process(argv)
        except OSError as e:
            raise ToolError(f"exiftool could not be started: {argv[0]}: {e}") from e
        self._seq += 1
        answers, failure = proc.exchange(b"-ver\n-echo4\n{done%d}\n-execute%d\n"
                                         % (self._seq, self._seq), [self._seq], self.timeout)
        if failure is not None:
            err = proc.last_words().decode("utf-8", "replace").strip()
            raise ToolError(f"exiftool did not start ({failure}): {err or 'no message'}")
        self.version = answers[0][0].decode("utf-8", "replace").strip()
        self._finalizer = weakref.finalize(self, proc.stop)
        return proc

    def _discard(self, grace: float = 0.0) -> None:
        """Kill the process (after `grace` seconds to exit by itself) and count it."""
        if self._proc is not None:
            if self._finalizer is not None:
                self._finalizer.detach()
            try:
                self._proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
            self._proc.kill()
            self._proc = None
            self._finalizer = None
            self.restarts += 1


def _parse(out: bytes, err: bytes, path: bytes) -> dict[str, Any]:
    """One command's answer as a dict; ExifTool's complaints go in "ExifTool:Error"."""
    message = err.decode("utf-8", "replace").strip().removeprefix("Error: ")
    try:
        found = json.loads(out.decode("utf-8", "replace")) if out.strip() else []
    except ValueError:
        found = None
    if isinstance(found, list) and len(found) == 1 and isinstance(found[0], dict):
        return found[0]
    if out.strip():  # a directory (several files) or garbage: not one file's answer
        message = f"unexpected answer from exiftool: {out[:200]!r}"
    return {"SourceFile": os.fsdecode(path), "ExifTool:Error": message or "no answer"}


# ---------------------------------------------------------------------------------------
# The rules: which files are media, and when they were captured.

# Camera RAW formats: media whatever MIME type an ExifTool version gives them.
_RAW_TYPES = frozenset({"3FR", "ARI", "ARQ", "ARW", "CR2", "CR3", "CRW", "DCR", "DNG", "ERF",
                        "FFF", "GPR", "IIQ", "K25", "KDC", "MEF", "MOS", "MRW", "NEF", "NRW",
                        "ORF", "ORI", "PEF", "RAF", "RAW", "RW2", "RWL", "SR2", "SRF", "SRW",
                        "X3F"})
_VIDEO_TYPES = frozenset({"MXF", "M2T", "M2TS", "CRM", "R3D"})  # some MIME types are odd
_NOT_PHOTOS = frozenset({"SVG", "DWG", "ICO", "CUR", "DJVU"})  # image/*, but not photos
# Extensions that name the same content: a JPEG called .jpeg keeps .jpeg.
_SAME_EXT = (frozenset({"jpg", "jpeg", "jpe", "jfif"}), frozenset({"tif", "tiff"}),
             frozenset({"heic", "heif", "hif"}), frozenset({"mts", "m2ts", "m2t", "ts"}),
             frozenset({"mpg", "mpeg", "mpe"}), frozenset({"mov", "qt"}),
             frozenset({"3gp", "3gpp"}))

_STAMP = re.compile(r"\s*(\d{4})[:\-/.](\d{1,2})[:\-/.](\d{1,2})"
                    r"(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:[.,](\d+))?)?)?"
                    r"\s*(Z|[+-]\d{1,2}:?\d{2})?\s*", re.ASCII)
_OFFSET = re.compile(r"\s*(?:Z|([+-])(\d{1,2}):?(\d{2}))\s*", re.ASCII)
_EPOCH_DAYS = ((1904, 1, 1), (1970, 1, 1))  # what empty QuickTime and Unix times read as
_FIRST_YEAR = 1826  # the oldest surviving photograph


@dataclass(frozen=True)
class _Rule:
    tag: str  # "Group:Tag"; "Track*:Tag" tries Track1, Track2, ... in order
    utc: bool  # the value is UTC (QuickTime): converted to local wall time
    confidence: str
    offset_tag: str | None = None  # the tag that holds its zone, in any group


@dataclass(frozen=True)
class _Found:
    captured: datetime
    utc_offset: int | None
    source: str
    raw: str
    confidence: str


_ORIGINAL, _DIGITIZED, _MODIFIED = "OffsetTimeOriginal", "OffsetTimeDigitized", "OffsetTime"
# In order, the first valid value wins; then the file name, then _LATE, then the mtime.
_EARLY = (
    _Rule("Composite:SubSecDateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("ExifIFD:DateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("IFD0:DateTimeOriginal", False, "high", _ORIGINAL),
    _Rule("Composite:SubSecCreateDate", False, "high", _DIGITIZED),
    _Rule("ExifIFD:CreateDate", False, "high", _DIGITIZED),
    _Rule("Keys:CreationDate", False, "high"),
    _Rule("QuickTime:CreateDate", True, "high", _ORIGINAL),
    _Rule("Track*:MediaCreateDate", True, "high", _ORIGINAL),
    _Rule("Track*:TrackCreateDate", True, "high", _ORIGINAL),
    _Rule("H264:DateTimeOriginal", False, "high"),  # AVCHD camcorders
    _Rule("RIFF:DateTimeOriginal", False, "high"),  # AVI from cameras
    _Rule("QuickTime:DateTimeOriginal", False, "medium"),
    _Rule("UserData:DateTimeOriginal", False, "medium"),
    _Rule("UserData:ContentCreateDate", False, "medium"),
    _Rule("ItemList:ContentCreateDate", False, "medium"),
    _Rule("Matroska:DateTimeOriginal", True, "medium"),  # often the muxing date
    _Rule("ASF:CreationDate", True, "medium"),
    _Rule("PNG:CreationTime", False, "medium"),
    _Rule("XMP-exif:DateTimeOriginal", False, "medium"),
    _Rule("XMP-photoshop:DateCreated", False, "medium"),
    _Rule("Composite:DateTimeCreated", False, "medium"),  # IPTC DateCreated + TimeCreated
    _Rule("XMP-xmp:CreateDate", False, "medium"),
    _Rule("IPTC:DateCreated", False, "medium"),
)
_LATE = (
    _Rule("Composite:SubSecModifyDate", False, "medium", _MODIFIED),
    _Rule("IFD0:ModifyDate", False, "medium", _MODIFIED),
)

# Dates in file names, in order. A name with a date and no time gets 00:00:00.
_NAME_PATTERNS = (
    # IMG_20200101_123456, 20200101_123456, PXL_20210101_123456789, Screenshot_20190521-104552
    re.compile(r"(?<!\d)(?P<y>\d{4})(?P<mo>\d\d)(?P<d>\d\d)[_\-T ]?"
               r"(?P<h>\d\d)(?P<mi>\d\d)(?P<s>\d\d)(?P<ms>\d{3})?(?!\d)", re.ASCII),
    # Screenshot 2019-05-21 at 10.45.52 PM, signal-2021-01-01-12-30-00-123, 2021-01-01 12.30.00
    re.compile(r"(?<!\d)(?P<y>\d{4})[-_.](?P<mo>\d\d)[-_.](?P<d>\d\d)(?:[ _\-T]+|[ _]+at[ _]+)"
               r"(?P<h>\d{1,2})[-_.:h]?(?P<mi>\d\d)[-_.:m]?(?P<s>\d\d)(?:[-_.](?P<ms>\d{3}))?"
               r"(?:[\s\u202f]*(?P<ampm>[AaPp][Mm]))?(?!\d)", re.ASCII),
    # FB_IMG_1609459200000: Unix time in milliseconds
    re.compile(r"FB_IMG_(?P<epoch>\d{13})(?!\d)", re.ASCII),
    # IMG-20200101-WA0001, VID-20200101-WA0001 (WhatsApp)
    re.compile(r"(?<!\d)(?P<y>\d{4})(?P<mo>\d\d)(?P<d>\d\d)-WA\d", re.ASCII),
    # holiday 2021-01-01
    re.compile(r"(?<!\d)(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)(?!\d)", re.ASCII),
)


def _fixed(offset: int) -> tzinfo:
    return timezone(timedelta(seconds=offset))


def _parse_offset(text: str) -> int | None:
    """'+09:00', '-0530', 'Z' -> seconds east; None for anything else."""
    m = _OFFSET.fullmatch(text)
    if not m:
        return None
    if not m[1]:
        return 0
    hours, minutes = int(m[2]), int(m[3])
    if hours > 18 or minutes > 59:
        return None
    return (-1 if m[1] == "-" else 1) * (hours * 3600 + minutes * 60)


class _Clock:
    """The configured zone and `now`: turns values into wall times, refuses the future."""

    def __init__(self, tz: tzinfo, now: datetime) -> None:
        self.tz = tz
        self.now = now if now.tzinfo else now.replace(tzinfo=tz)
        self.limit = self.now + timedelta(days=1)
        self.limit_wall = self.limit.astimezone(tz).replace(tzinfo=None)

    def sensible(self, wall: datetime) -> bool:
        return (_FIRST_YEAR <= wall.year <= self.limit_wall.year + 1
                and (wall.year, wall.month, wall.day) not in _EPOCH_DAYS)

    def local(self, instant: datetime, offset: int | None) -> tuple[datetime, int] | None:
        """An aware `instant` as wall time in `offset`, else in the zone; None if future."""
        if instant > self.limit:
            return None
        local = instant.astimezone(_fixed(offset) if offset is not None else self.tz)
        delta = local.utcoffset() or timedelta()
        return local.replace(tzinfo=None), int(delta.total_seconds())

    def wall(self, wall: datetime, offset: int | None) -> tuple[datetime, int | None] | None:
        """A wall time kept as written; None if future."""
        if offset is None and wall > self.limit_wall:
            return None
        if offset is not None and wall.replace(tzinfo=_fixed(offset)) > self.limit:
            return None
        return wall, offset


def _from_value(raw: str, rule: _Rule, tags: dict[str, Any],
                clock: _Clock) -> tuple[datetime, int | None] | None:
    """The wall time and offset `raw` stands for under `rule`, or None if not valid."""
    m = _STAMP.fullmatch(raw)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, zone = m.groups()
    try:
        wall = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                        int((frac or "0")[:6].ljust(6, "0")))
    except ValueError:
        return None
    offset = _parse_offset(zone) if zone else None
    if (zone and offset is None) or not clock.sensible(wall):
        return None
    side = None
    if rule.offset_tag:
        side = next((_parse_offset(str(v)) for k, v in tags.items()
                     if k.endswith(":" + rule.offset_tag)), None)
    if rule.utc or zone == "Z":
        # An instant: QuickTime times are UTC by its spec, and "Z" says so outright.
        return clock.local(wall.replace(tzinfo=_fixed(offset or 0)), side)
    return clock.wall(wall, offset if offset is not None else side)


def _keys(tags: dict[str, Any], pattern: str) -> list[str]:
    group, _, name = pattern.partition(":")
    if not group.endswith("*"):
        return [pattern] if pattern in tags else []
    track = re.compile(re.escape(group[:-1]) + r"(\d+):" + re.escape(name), re.ASCII)
    found = [(int(m[1]), k) for k in tags if (m := track.fullmatch(k))]
    return [k for _, k in sorted(found)]


def _from_tags(rules: tuple[_Rule, ...], tags: dict[str, Any], clock: _Clock) -> _Found | None:
    for rule in rules:
        for key in _keys(tags, rule.tag):
            raw = tags[key]
            if isinstance(raw, (str, int, float)) and (got := _from_value(str(raw), rule,
                                                                          tags, clock)):
                return _Found(got[0], got[1], key, str(raw), rule.confidence)
    return None


def _from_name(name: str, clock: _Clock) -> _Found | None:
    stem = os.path.splitext(name.rsplit("/", 1)[-1])[0]
    for pattern in _NAME_PATTERNS:
        for m in pattern.finditer(stem):
            got = _name_match(m.groupdict(), stem.startswith("PXL_"), clock)
            if got:
                return _Found(got[0], got[1], "filename", m[0], "medium")
    return None


def _name_match(g: dict[str, str | None], pixel: bool,
                clock: _Clock) -> tuple[datetime, int | None] | None:
    if g.get("epoch"):
        instant = datetime.fromtimestamp(int(g["epoch"] or 0) / 1000, UTC)
        return clock.local(instant, None) if clock.sensible(instant) else None
    hour, ampm = int(g.get("h") or 0), (g.get("ampm") or "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    try:
        wall = datetime(int(g["y"] or 0), int(g["mo"] or 0), int(g["d"] or 0), hour,
                        int(g.get("mi") or 0), int(g.get("s") or 0), int(g.get("ms") or 0) * 1000)
    except ValueError:
        return None
    if not clock.sensible(wall):
        return None
    if pixel and g.get("h"):
        return clock.local(wall.replace(tzinfo=UTC), None)  # Pixel phones name files in UTC
    return clock.wall(wall, None)


def _from_mtime(mtime_ns: int, clock: _Clock) -> _Found:
    try:
        instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=mtime_ns // 1000)
        local = instant.astimezone(clock.tz)
    except OverflowError:
        local = clock.now.astimezone(clock.tz)  # an impossible mtime: nothing else is left
    delta = local.utcoffset() or timedelta()
    return _Found(local.replace(tzinfo=None), int(delta.total_seconds()), "mtime",
                  str(mtime_ns), "low")


def _content(tags: dict[str, Any], original_name: str) -> tuple[str, str, str, str] | NotMedia:
    """(kind, file type, MIME type, library extension) by content, or why it is not media."""
    ftype = str(tags.get("File:FileType") or "")
    mime = str(tags.get("File:MIMEType") or "")
    error = str(tags.get("ExifTool:Error") or "")
    said = f" (ExifTool says: {error})" if error else ""
    if not ftype:
        return NotMedia("empty file" if error == "File is empty" else
                        f"unrecognised file type{said}")
    if mime.startswith("video/") or ftype in _VIDEO_TYPES:
        kind = "video"
    elif (mime.startswith("image/") or ftype in _RAW_TYPES) and ftype not in _NOT_PHOTOS:
        kind = "image"
    else:
        return NotMedia(f"not a photo or video (ExifTool says: {ftype}, {mime or 'no MIME type'})")
    if error:
        return NotMedia(f"unreadable {ftype} file{said}")
    real = str(tags.get("File:FileTypeExtension") or ftype).lower()
    own = os.path.splitext(original_name)[1][1:].lower()
    agrees = own == real or any(own in same and real in same for same in _SAME_EXT)
    ext = (clean_ext(own) if agrees else "") or clean_ext(real)
    if not ext:
        return NotMedia(f"no usable file extension for {ftype} content")
    return kind, ftype, mime, ext


def decide(tags: dict[str, Any], original_name: str, mtime_ns: int, tz: tzinfo,
           now: datetime) -> MediaInfo | NotMedia:
    """What ExifTool's `tags` say the file is and when it was captured (pure).

    `original_name` is the inbox name (for a date in it and the extension), `tz` the zone
    for UTC values and the mtime, `now` (aware; naive means wall time in `tz`) the
    reference for dates in the future.
    """
    what = _content(tags, original_name)
    if isinstance(what, NotMedia):
        return what
    kind, ftype, mime, ext = what
    clock = _Clock(tz, now)
    found = (_from_tags(_EARLY, tags, clock) or _from_name(original_name, clock)
             or _from_tags(_LATE, tags, clock) or _from_mtime(mtime_ns, clock))
    return MediaInfo(kind=kind, file_type=ftype, mime=mime, ext=ext, captured=found.captured,
                     utc_offset=found.utc_offset, date_source=found.source, date_raw=found.raw,
                     confidence=found.confidence)


def resolve_timezone(name: str) -> tzinfo:
    """'local' (TZ, else /etc/localtime, else UTC) or an IANA name -> a tzinfo."""
    if name != "local":
        return zoneinfo.ZoneInfo(name)
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return zoneinfo.ZoneInfo(env)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as f:
            return zoneinfo.ZoneInfo.from_file(f, key="localtime")
    except (OSError, ValueError):
        return UTC


class Reader:
    """ExifTool plus the rules, for one worker: staged file -> MediaInfo | NotMedia."""

    def __init__(self, timezone: str = "local", exiftool: str = "exiftool",
                 timeout: float = 30.0) -> None:
        self.tz = resolve_timezone(timezone)
        self._exiftool = ExifTool(exiftool, timeout)

    @property
    def restarts(self) -> int:
        """How many times its exiftool died or hung and was replaced."""
        return self._exiftool.restarts

    @property
    def pid(self) -> int | None:
        return self._exiftool.pid

    def describe(self, path: bytes, original_name: str, mtime_ns: int) -> MediaInfo | NotMedia:
        """What the staged file at `path` is; `original_name` is its name in the inbox."""
        return self.describe_many([(path, original_name, mtime_ns)])[0]

    def describe_many(self, items: Sequence[tuple[bytes, str, int]]
                      ) -> list[MediaInfo | NotMedia]:
        """describe() for several files, read in one ExifTool request."""
        now = datetime.now(UTC)
        answers = self._read([path for path, _, _ in items])
        return [a if isinstance(a, NotMedia) else decide(a, name, mtime_ns, self.tz, now)
                for a, (_, name, mtime_ns) in zip(answers, items)]

    def close(self) -> None:
        self._exiftool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, paths: list[bytes]) -> list[dict[str, Any] | NotMedia]:
        answers: dict[int, dict[str, Any] | NotMedia] = {}
        todo = []
        for i, path in enumerate(paths):
            try:
                _arg_line(path)
                todo.append(i)
            except ValueError:
                answers[i] = NotMedia(f"path cannot be passed to ExifTool: {path!r}")
        retried: set[int] = set()
        while todo:
            try:
                for i, tags in zip(todo, self._exiftool.read([paths[i] for i in todo])):
                    answers[i] = tags
                break
            except ExifToolFailed as e:
                for i, tags in zip(todo, e.done):
                    answers[i] = tags
                bad = todo[len(e.done)]
                todo = todo[len(e.done):]
                # A death may be someone else's kill: read that file once more.
                if e.timed_out or bad in retried:
                    answers[bad] = NotMedia(f"ExifTool failed on this file: {e}")
                    todo = todo[1:]
                retried.add(bad)
        return [answers[i] for i in range(len(paths))]
