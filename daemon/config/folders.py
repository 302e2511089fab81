"""The folders' rule of a config: the inboxes, library, quarantine folders, state dir and
metrics textfile lie apart (only duplicates and rejected may be hidden folders of the
library), by their paths (`parse`) and as they really are on disk (`check_folders`:
symlinks, bind mounts, the same folder under two names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from . import Config


# The folders the daemon works in, by key. A folder lying inside another (or being the
# same) is refused: quarantine inside the inbox is re-ingested forever, a state dir in the
# inbox or library is filed or repaired away, an inbox in the library is filed into itself.
# The one exception: duplicates and rejected in a hidden folder of the library (the
# defaults .duplicates and .rejected), which the library's scans skip, but not in the
# folders the daemon owns there (.staging is swept; .undone holds undone files).
_OWN_HIDDEN = (".staging", ".undone")


def folders(values: dict[str, Any]) -> list[tuple[str, Path]]:
    """Every configured folder (and the metrics textfile) with its key."""
    found = [
        *(("paths.inbox", inbox) for inbox in values["inboxes"]),
        ("paths.library", values["library"]),
        ("paths.duplicates", values["duplicates"]),
        ("paths.rejected", values["rejected"]),
        ("paths.state_dir", values["state_dir"]),
    ]
    if values.get("metrics_textfile") is not None:
        found.append(("metrics.textfile", values["metrics_textfile"]))
    return found


def pairs(items: list[tuple[str, Path]]) -> Iterator[tuple[tuple[str, Path], tuple[str, Path]]]:
    for i, a in enumerate(items):
        for j, b in enumerate(items):
            if i != j:
                yield a, b


def inside(b: Path, a: Path) -> bool:
    """b is a or lies beneath it (paths already normalised)."""
    return b == a or a in b.parents


def inside_allowed(key_b: str, b: Path, key_a: str, a: Path) -> bool:
    if key_a != "paths.library" or key_b not in ("paths.duplicates", "paths.rejected"):
        return False
    if b == a or a not in b.parents:
        return False
    top = b.relative_to(a).parts[0]
    return top.startswith(".") and top not in _OWN_HIDDEN


def overlap(
    b: Path, key_a: str, a: Path, real_b: Path | None = None, real_a: Path | None = None
) -> str:
    def shown(p: Path, real: Path | None) -> str:
        return f"{p} (resolved: {real})" if real is not None and real != p else str(p)

    how = "is the same folder as" if (real_b or b) == (real_a or a) else "lies inside"
    return (
        f"{shown(b, real_b)} {how} {key_a} {shown(a, real_a)}; the folders must be "
        "apart (only duplicates and rejected may be hidden folders of the library, as "
        "by default)"
    )


def check_folders(cfg: Config) -> None:
    """The overlap rule again on the folders as they really are: symlinks resolved, and an
    existing folder recognised by device and inode wherever it is mounted (a library
    symlinked into the inbox, a bind mount). Touches the disk, so `load` runs it."""
    entries = folders(vars(cfg))  # by position: several inboxes share one key
    real = {p: Path(os.path.realpath(p)) for _, p in entries}
    ids = {p: _identity(real[p]) for _, p in entries}
    mounts = _mounts()
    in_fs = {p: _in_filesystem(real[p], mounts) for _, p in entries}
    for (key_a, a), (key_b, b) in pairs(entries):
        ra, rb = real[a], real[b]
        fa, fb = in_fs[a], in_fs[b]
        within = (
            inside(rb, ra)
            or (ids[a] is not None and ids[a] == ids[b])
            or (fa is not None and fb is not None and fa[0] == fb[0] and inside(fb[1], fa[1]))
        )
        if within and not inside_allowed(key_b, rb, key_a, ra):
            raise ConfigError(f"{cfg.source}: {key_b}: {overlap(b, key_a, a, rb, ra)}")
    textfile = cfg.metrics_textfile
    if textfile is not None and os.path.isdir(textfile):
        raise ConfigError(
            f"{cfg.source}: metrics.textfile: {textfile} is a folder; it must "
            "name a file ending in .prom"
        )


def _mounts() -> list[tuple[Path, str, Path]]:
    """(mount point, device, the folder of that filesystem mounted there), longest mount
    point first, from /proc/self/mountinfo; [] where it cannot be read."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:

            def unescape(s: str) -> Path:
                return Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), s))

            found.append((unescape(fields[4]), fields[2], unescape(fields[3])))
    return sorted(found, key=lambda m: len(m[0].parts), reverse=True)


def _in_filesystem(real: Path, mounts: list[tuple[Path, str, Path]]) -> tuple[str, Path] | None:
    """Where `real` lies within its filesystem (device, path from the filesystem's root):
    the same folder bind-mounted elsewhere gives the same answer."""
    for point, device, root in mounts:
        if inside(real, point):
            return device, root / real.relative_to(point)
    return None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino
