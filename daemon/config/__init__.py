"""The configuration: TOML -> a frozen Config, every key with its default and its check.
`parse` is pure; `load` finds and reads the file, then `check_folders` (config/folders.py)
holds the folders apart as they really are (links resolved, mounts recognised). It only
reads: no crash invariant. Every error names the file and the key (ConfigError, exit 78).
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..rules.layout import DEFAULT_LAYOUT, validate_layout
from .folders import check_folders, folders, inside, inside_allowed, overlap, pairs

DEFAULT_PATH = "/etc/mediasortd/config.toml"
ENV_VAR = "MEDIASORTD_CONFIG"
ON_DUPLICATE = ("quarantine", "delete", "keep")
LOG_FORMATS = ("auto", "journal", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
_MODE_RE = re.compile(r"(0o?)?[0-7]{3}")
UNDATED = ("folder", "mtime", "reject")  # what becomes of a file with no date but its mtime


@dataclass(frozen=True)
class Config:
    source: str  # the file it was read from
    inbox: Path  # the first of `inboxes`
    library: Path
    state_dir: Path = Path("/var/lib/mediasortd")
    duplicates: Path = Path()  # default: {library}/.duplicates
    rejected: Path = Path()  # default: {library}/.rejected
    workers: int = 4
    queue_size: int = 1000
    settle_seconds: float = 2.0
    rescan_seconds: float = 300.0
    companion_grace_seconds: float = 60.0
    incomplete_grace_seconds: float = 3600.0
    on_duplicate: str = "quarantine"
    timezone: str = "local"
    layout: str = DEFAULT_LAYOUT
    undated: str = "folder"  # one of UNDATED
    file_mode: int = 0o640
    dir_mode: int = 0o750
    log_level: str = "info"
    log_format: str = "auto"
    batch_idle_seconds: float = 60.0  # the daemon starts a new batch after this much quiet
    prune_folders: bool = True  # remove inbox folders the daemon emptied (not synced ones)
    metrics_textfile: Path | None = None  # Prometheus textfile; None: no metrics
    metrics_interval: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)
    # every inbox (paths.inbox: one path or a list); all feed the one library and catalog
    inboxes: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if not self.inboxes:
            object.__setattr__(self, "inboxes", (self.inbox,))

    def inbox_of(self, path: bytes) -> Path | None:
        """The inbox a source path lies in (its `{source}` sub-folder is the next
        component), or None for a path outside every inbox (an import)."""
        for inbox in self.inboxes:
            if path.startswith(os.fsencode(inbox) + b"/"):
                return inbox
        return None

    @property
    def catalog(self) -> Path:
        return self.state_dir / "catalog.db"

    @property
    def staging(self) -> Path:
        return self.library / ".staging"


# section -> key -> (Config field, kind)
_SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "paths": {
        "inbox": ("inboxes", "paths"),
        "library": ("library", "path"),
        "state_dir": ("state_dir", "path"),
        "duplicates": ("duplicates", "path"),
        "rejected": ("rejected", "path"),
    },
    "ingest": {
        "workers": ("workers", "int"),
        "queue_size": ("queue_size", "int"),
        "settle_seconds": ("settle_seconds", "float"),
        "rescan_seconds": ("rescan_seconds", "float"),
        "companion_grace_seconds": ("companion_grace_seconds", "float"),
        "incomplete_grace_seconds": ("incomplete_grace_seconds", "float"),
        "on_duplicate": ("on_duplicate", "str"),
        "timezone": ("timezone", "str"),
        "layout": ("layout", "str"),
        "undated": ("undated", "str"),
        "file_mode": ("file_mode", "mode"),
        "dir_mode": ("dir_mode", "mode"),
        "batch_idle_seconds": ("batch_idle_seconds", "float"),
        "prune_folders": ("prune_folders", "bool"),
    },
    "logging": {"level": ("log_level", "str"), "format": ("log_format", "str")},
    "metrics": {
        "textfile": ("metrics_textfile", "optional path"),
        "interval_seconds": ("metrics_interval", "float"),
    },
}


def parse(data: dict[str, Any], source: str) -> Config:
    """Validate a parsed TOML document and build the Config."""

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {why}")

    values: dict[str, Any] = {}
    for section, body in data.items():
        if section not in _SCHEMA:
            raise fail(section, f"unknown section; known: {', '.join(_SCHEMA)}")
        if not isinstance(body, dict):
            raise fail(section, "must be a table")
        for key, value in body.items():
            name = f"{section}.{key}"
            if key not in _SCHEMA[section]:
                raise fail(name, f"unknown key; known: {', '.join(_SCHEMA[section])}")
            attr, kind = _SCHEMA[section][key]
            values[attr] = _convert(value, kind, lambda why, n=name: fail(n, why))
    for key, attr in (("inbox", "inboxes"), ("library", "library")):
        if attr not in values:
            raise fail(f"paths.{key}", "is required")
    values["inbox"] = values["inboxes"][0]

    library = values["library"]
    values.setdefault("duplicates", library / ".duplicates")
    values.setdefault("rejected", library / ".rejected")
    values.setdefault("state_dir", Config.state_dir)
    _check_values(values, fail)
    _check_metrics_textfile(values, fail)
    for (key_a, a), (key_b, b) in pairs(folders(values)):
        if inside(b, a) and not inside_allowed(key_b, b, key_a, a):
            raise fail(key_b, overlap(b, key_a, a))
    _check_naming(values, fail)
    return Config(source=source, **values)


def _check_naming(values: dict[str, Any], fail: Any) -> None:
    """ingest.layout renders only known fields, as plain values, to paths beneath the
    library (tried on hostile sample values); ingest.undated is one of UNDATED."""
    if "layout" in values and (problem := validate_layout(values["layout"])):
        raise fail("ingest.layout", problem)
    if values.get("undated", "folder") not in UNDATED:
        raise fail("ingest.undated", f"must be one of {', '.join(UNDATED)}")


# attr -> (key, lowest, highest, whether the lowest itself is allowed). Zero workers or a
# zero settle time would stall or take half-written files; an infinite or absurd value
# would overflow a timer or start a thread per unit: both are refused, never clamped.
_DAY = 86400.0
_NUMBERS: dict[str, tuple[str, float, float, bool]] = {
    "workers": ("ingest.workers", 1, 256, True),
    "queue_size": ("ingest.queue_size", 1, 10_000_000, True),
    "settle_seconds": ("ingest.settle_seconds", 0, _DAY, False),
    "rescan_seconds": ("ingest.rescan_seconds", 1, 30 * _DAY, True),
    "companion_grace_seconds": ("ingest.companion_grace_seconds", 0, 30 * _DAY, False),
    "incomplete_grace_seconds": ("ingest.incomplete_grace_seconds", 0, 30 * _DAY, False),
    "batch_idle_seconds": ("ingest.batch_idle_seconds", 0, 30 * _DAY, False),
    "metrics_interval": ("metrics.interval_seconds", 0, _DAY, False),
}
_CHOICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "on_duplicate": ("ingest.on_duplicate", ON_DUPLICATE),
    "log_format": ("logging.format", LOG_FORMATS),
    "log_level": ("logging.level", LOG_LEVELS),
}


def _check_values(values: dict[str, Any], fail: Callable[[str, str], ConfigError]) -> None:
    """Numbers in range and finite, known choices, modes, the time zone."""
    for attr, (key, low, high, low_ok) in _NUMBERS.items():
        if attr not in values:
            continue
        v = values[attr]
        if not math.isfinite(v):
            raise fail(key, f"must be a finite number, not {v}")
        if v < low or (v == low and not low_ok):
            raise fail(key, f"must be at least {low:g}" if low_ok else "must be positive")
        if v > high:
            raise fail(key, f"must be at most {high:g}, not {v:g}")
    for attr, (key, allowed) in _CHOICES.items():
        if attr in values and values[attr] not in allowed:
            raise fail(key, f"must be one of {', '.join(allowed)}")
    for attr in ("file_mode", "dir_mode"):
        if attr in values and values[attr] & 0o002:
            raise fail(f"ingest.{attr}", "must not be world-writable")
    if values.get("dir_mode", 0o700) & 0o700 != 0o700:
        raise fail("ingest.dir_mode", "must give the owner rwx (the daemon works in its folders)")
    if values.get("file_mode", 0o600) & 0o600 != 0o600:
        raise fail("ingest.file_mode", "must give the owner rw")
    tz = values.get("timezone", "local")
    if tz != "local":
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise fail("ingest.timezone", f"{tz!r} is not 'local' or a known IANA zone") from None


def _check_metrics_textfile(
    values: dict[str, Any], fail: Callable[[str, str], ConfigError]
) -> None:
    path = values.get("metrics_textfile")
    if path is not None and (path.suffix != ".prom" or path.name.startswith(".")):
        raise fail(
            "metrics.textfile",
            f"{path}: must be a file name ending in .prom (the "
            "node exporter reads *.prom; the daemon replaces only such a file)",
        )


def _convert(value: Any, kind: str, fail: Any) -> Any:
    if kind == "paths":  # one path, or a non-empty list of them
        items = value if isinstance(value, list) else [value]
        if not items:
            raise fail("must be a path or a non-empty list of paths")
        return tuple(_convert(v, "path", fail) for v in items)
    if kind == "optional path":  # "" means none
        if value == "":
            return None
        kind = "path"
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise fail("must be a non-empty string")
        if "\0" in value:
            raise fail(f"must not contain a NUL character: {value!r}")
        if not os.path.isabs(value):
            raise fail(f"must be an absolute path, not {value!r}")
        return Path(os.path.normpath(value))
    if kind == "bool":
        if not isinstance(value, bool):
            raise fail(f"must be true or false, not {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"must be an integer, not {type(value).__name__}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"must be a number, not {type(value).__name__}")
        return float(value)
    if kind == "mode":  # a string, so that 640 can never be read as decimal
        if not isinstance(value, str) or not _MODE_RE.fullmatch(value):
            raise fail(f'must be an octal string like "0640", not {value!r}')
        return int(value.removeprefix("0o"), 8)
    if not isinstance(value, str):
        raise fail(f"must be a string, not {type(value).__name__}")
    if "\0" in value:
        raise fail(f"must not contain a NUL character: {value!r}")
    return value


def find(explicit: str | None) -> str:
    """The config file to use: --config, else $MEDIASORTD_CONFIG, else the system default."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


MAX_BYTES = 1 << 20  # a config file is a few KiB; more is not a config


def _read(path: str) -> bytes:
    """The file's bytes: a regular file of at most MAX_BYTES (a FIFO or a device would
    block or never end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > MAX_BYTES:
            raise ConfigError(f"{path}: {st.st_size:,} bytes: too large for a config file")
        data = b""
        while len(data) <= MAX_BYTES and (chunk := os.read(fd, 1 << 16)):
            data += chunk
        return data
    finally:
        os.close(fd)


def load(explicit: str | None = None) -> Config:
    path = find(explicit)
    try:
        data = tomllib.loads(_read(path).decode())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (use --config or ${ENV_VAR})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start}): TOML files are UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from None
    cfg = parse(data, path)
    check_folders(cfg)
    return cfg


def load_paths(explicit: str | None = None) -> Config:
    """The config from the file's [paths] table alone: for `status` while the file has
    an error elsewhere (a daemon runs on with its previous config). ConfigError if even
    that cannot be read."""
    path = find(explicit)
    try:
        paths = tomllib.loads(_read(path).decode()).get("paths")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError):
        raise ConfigError(f"{path}: cannot read its [paths]") from None
    return parse({"paths": paths} if isinstance(paths, dict) else {}, path)
