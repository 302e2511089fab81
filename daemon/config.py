"""TOML -> a frozen Config. Parsing is pure (`parse`); `load` finds and reads the file.

Every error names the file and the key, and is a ConfigError (exit status 78).
"""

from __future__ import annotations

import os
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .layout import DEFAULT_LAYOUT, validate_layout

DEFAULT_PATH = "/etc/mediasortd/config.toml"
ENV_VAR = "MEDIASORTD_CONFIG"
ON_DUPLICATE = ("quarantine", "delete", "keep")
LOG_FORMATS = ("auto", "journal", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Config:
    source: str  # the file it was read from
    inbox: Path
    library: Path
    state_dir: Path = Path("/var/lib/mediasortd")
    duplicates: Path = Path()  # default: {library}/.duplicates
    rejected: Path = Path()  # default: {library}/.rejected
    workers: int = 4
    queue_size: int = 1000
    settle_seconds: float = 2.0
    rescan_seconds: float = 300.0
    companion_grace_seconds: float = 60.0
    on_duplicate: str = "quarantine"
    timezone: str = "local"
    layout: str = DEFAULT_LAYOUT
    file_mode: int = 0o640
    dir_mode: int = 0o750
    log_level: str = "info"
    log_format: str = "auto"
    batch_idle_seconds: float = 60.0  # the daemon starts a new batch after this much quiet
    metrics_textfile: Path | None = None  # Prometheus textfile; None: no metrics
    metrics_interval: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def catalog(self) -> Path:
        return self.state_dir / "catalog.db"

    @property
    def staging(self) -> Path:
        return self.library / ".staging"


# section -> key -> (Config field, kind)
_SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "paths": {
        "inbox": ("inbox", "path"), "library": ("library", "path"),
        "state_dir": ("state_dir", "path"), "duplicates": ("duplicates", "path"),
        "rejected": ("rejected", "path"),
    },
    "ingest": {
        "workers": ("workers", "int"), "queue_size": ("queue_size", "int"),
        "settle_seconds": ("settle_seconds", "float"),
        "rescan_seconds": ("rescan_seconds", "float"),
        "companion_grace_seconds": ("companion_grace_seconds", "float"),
        "on_duplicate": ("on_duplicate", "str"), "timezone": ("timezone", "str"),
        "layout": ("layout", "str"), "file_mode": ("file_mode", "mode"),
        "dir_mode": ("dir_mode", "mode"),
        "batch_idle_seconds": ("batch_idle_seconds", "float"),
    },
    "logging": {"level": ("log_level", "str"), "format": ("log_format", "str")},
    "metrics": {"textfile": ("metrics_textfile", "optional path"),
                "interval_seconds": ("metrics_interval", "float")},
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
    for required in ("inbox", "library"):
        if required not in values:
            raise fail(f"paths.{required}", "is required")

    library = values["library"]
    values.setdefault("duplicates", library / ".duplicates")
    values.setdefault("rejected", library / ".rejected")
    checks = [
        ("ingest.workers", values.get("workers", 4) >= 1, "must be at least 1"),
        ("ingest.queue_size", values.get("queue_size", 1000) >= 1, "must be at least 1"),
        ("ingest.settle_seconds", values.get("settle_seconds", 0) >= 0, "must not be negative"),
        ("ingest.rescan_seconds", values.get("rescan_seconds", 1) > 0, "must be positive"),
        ("ingest.companion_grace_seconds", values.get("companion_grace_seconds", 0) >= 0,
         "must not be negative"),
        ("ingest.batch_idle_seconds", values.get("batch_idle_seconds", 1) > 0,
         "must be positive"),
        ("metrics.interval_seconds", values.get("metrics_interval", 1) > 0, "must be positive"),
        ("ingest.on_duplicate", values.get("on_duplicate", "quarantine") in ON_DUPLICATE,
         f"must be one of {', '.join(ON_DUPLICATE)}"),
        ("logging.format", values.get("log_format", "auto") in LOG_FORMATS,
         f"must be one of {', '.join(LOG_FORMATS)}"),
        ("logging.level", values.get("log_level", "info") in LOG_LEVELS,
         f"must be one of {', '.join(LOG_LEVELS)}"),
        ("paths.inbox", values["inbox"] != library, "must differ from paths.library"),
        ("paths.inbox", library not in values["inbox"].parents
         and values["inbox"] not in library.parents, "must not contain or be inside the library"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise fail(key, why)
    for key in ("file_mode", "dir_mode"):
        if key in values and values[key] & 0o002:
            raise fail(f"ingest.{key}", "must not be world-writable")
    tz = values.get("timezone", "local")
    if tz != "local":
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise fail("ingest.timezone", f"{tz!r} is not 'local' or a known IANA zone") from None
    if "layout" in values and (problem := validate_layout(values["layout"])):
        raise fail("ingest.layout", problem)
    return Config(source=source, **values)


def _convert(value: Any, kind: str, fail: Any) -> Any:
    if kind == "optional path":  # "" means none
        if value == "":
            return None
        kind = "path"
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise fail("must be a non-empty string")
        if not os.path.isabs(value):
            raise fail(f"must be an absolute path, not {value!r}")
        return Path(os.path.normpath(value))
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"must be an integer, not {type(value).__name__}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"must be a number, not {type(value).__name__}")
        return float(value)
    if kind == "mode":
        if isinstance(value, str):
            try:
                value = int(value, 8)
            except ValueError:
                raise fail(f"must be an octal string like \"0640\", not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o777:
            raise fail("must be a mode like \"0640\"")
        return value
    if not isinstance(value, str):
        raise fail(f"must be a string, not {type(value).__name__}")
    return value


def find(explicit: str | None) -> str:
    """The config file to use: --config, else $MEDIASORTD_CONFIG, else the system default."""
    return explicit or os.environ.get(ENV_VAR) or DEFAULT_PATH


def load(explicit: str | None = None) -> Config:
    path = find(explicit)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (use --config or ${ENV_VAR})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(data, path)
