"""One ExifTool process in stay-open mode: the only module that runs exiftool. Crash
invariant: the process dies with the thread that started it (setpriv --pdeathsig), so a
SIGKILLed daemon leaves none behind.

`ExifTool.read` sends several files per request and parses the JSON answers. A death or
a hang is contained: the process is killed and replaced (`restarts` counts it), and the
request raises ExifToolFailed saying which file it was reading.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import time
import weakref
from typing import Any, Self

from ..errors import MediasortError, ToolError

# -G1 names tags by their precise group ("ExifIFD:DateTimeOriginal", "Keys:CreationDate").
# No -n: dates stay ExifTool's raw "YYYY:MM:DD HH:MM:SS[.ss][+hh:mm]" strings. No -fast:
# it saves nothing on local files, and -fast2 stops at 'mdat' (most MP4s keep 'moov'
# after it). -config "" keeps a user's ~/.ExifTool_config from changing the answers. No
# -charset filename: on Linux exiftool opens the name's bytes as given.
_READ_ARGS = (
    "-json",
    "-G1",
    "-api",
    "LargeFileSupport=1",
    "-time:all",
    "-ContentIdentifier",
    "-MediaGroupUUID",  # Live Photo pairs
    "-MajorBrand",  # AVIF sequences, which ExifTool 12.57 calls MP4
    "-FileType",
    "-MIMEType",
    "-FileTypeExtension",
    "-Error",
    "-Warning",
    "-Make",
    "-Model",
)
_STOP_SECONDS = 5.0


class ExifToolFailed(MediasortError):
    """ExifTool died or timed out while reading a file."""

    def __init__(
        self, message: str, path: bytes, done: list[dict[str, Any]], timed_out: bool
    ) -> None:
        super().__init__(message)
        self.path = path  # the file it was reading
        self.done = done  # the results for the paths before it, in order
        self.timed_out = timed_out


def arg_line(path: bytes) -> bytes:
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
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            start_new_session=True,
        )
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

    def exchange(
        self, payload: bytes, ids: list[int], timeout: float
    ) -> tuple[list[tuple[bytes, bytes]], str | None]:
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
                            todo = todo[os.write(self.fd_in, todo[:65536]) :]
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
        lines = [arg_line(p) for p in paths]
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
            raise ExifToolFailed(
                f"exiftool {failure} reading {os.fsdecode(bad)}", bad, done, timed_out=not died
            )
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
            raise ToolError(
                f"exiftool not found: {self.executable!r} is not an executable "
                "(install libimage-exiftool-perl)"
            )
        return found

    def _running(self) -> _Process:
        if self._proc is not None and self._proc.popen.poll() is not None:
            self._discard()  # died between requests (killed, OOM): replace it
        if self._proc is None:
            self._proc = self._start()
        return self._proc

    def _start(self) -> _Process:
        argv = [
            self._resolve(),
            "-config",
            "",
            "-stay_open",
            "True",
            "-@",
            "-",
            "-common_args",
            *_READ_ARGS,
        ]
        # exiftool does not exit when its stdin closes (it polls the argfile forever),
        # so a daemon killed with SIGKILL would leave it running: have the kernel kill it.
        # The kernel does so when the *thread* that started it ends: start it from the
        # worker that uses it (the start is lazy, so the first read does).
        # If the daemon dies between fork and setpriv's prctl, no signal ever comes: the
        # shell, started after the prctl, checks its parent is still us, else gives up.
        setpriv = shutil.which("setpriv")
        if setpriv:
            argv = [
                setpriv,
                "--pdeathsig",
                "KILL",
                "--",
                "/bin/sh",
                "-c",
                'if [ "$PPID" != "$0" ]; then exit 1; fi; exec "$@"',
                str(os.getpid()),
                *argv,
            ]
        try:
            proc = _Process(argv)
        except OSError as e:
            raise ToolError(f"exiftool could not be started: {argv[0]}: {e}") from e
        self._seq += 1
        answers, failure = proc.exchange(
            b"-ver\n-echo4\n{done%d}\n-execute%d\n" % (self._seq, self._seq),
            [self._seq],
            self.timeout,
        )
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
