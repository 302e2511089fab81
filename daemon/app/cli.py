"""argv (parsed as `args` says) -> config -> the command; errors -> exit codes. The only
place that exits. Each command imports what it uses when it runs: the read-only ones
(`status`, `find`, `history`) load no logging, no ExifTool, no watchdog.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import config
from ..errors import EX_FAILED, EX_OK, ConfigError, MediasortError, UsageError
from ..model import Outcome
from ..rules.retry import ONESHOT, Policy
from ..store import db, times
from . import lookup, report, show
from .args import build_parser


def main(argv: list[str] | None = None, *, policy: Policy = ONESHOT) -> int:
    """`policy`: how `import` retries a file (a test passes a short backoff)."""
    args = build_parser().parse_args(argv)
    args.policy = policy
    cfg: config.Config | None = None
    try:
        config_error = None
        try:
            cfg = config.load(args.config)
        except ConfigError as e:
            if args.command != "status":
                raise
            cfg, config_error = _paths_only(args.config, e), str(e)
        args.config_error = config_error
        log = None
        if args.command not in QUIET:
            # the commands that only read log nothing, and import nothing they do not
            # use (structlog, watchdog...): `status` answers in a fraction of a second
            from . import logs

            on_event = None
            if (
                args.command in TALKING
                and sys.stderr.isatty()
                and logs.resolve_format(cfg.log_format) == "console"
            ):
                from .progress import Progress

                args.progress = Progress(
                    0,
                    sys.stderr,
                    verbosity=-1 if args.quiet else 1 if args.verbose else 0,
                    library=str(cfg.library),
                )
                on_event = args.progress.event
            logs.configure(cfg.log_level, cfg.log_format, on_event=on_event)
            log = logs.get()
        return COMMANDS[args.command](cfg, args, log)
    except MediasortError as e:
        print(f"mediasortd: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # the catalog's own errors (damaged, full, read-only) are told, not traced back
        known = db.as_error(e, cfg.catalog) if cfg is not None else None
        if known is None:
            raise
        print(f"mediasortd: {known}", file=sys.stderr)
        return known.exit_code


def cmd_import(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    from . import dryrun, oneshot
    from .progress import summary_table

    if args.dry_run:
        counts = {o.value: 0 for o in Outcome}
        for plan in dryrun.dry_run(cfg, args.sources):
            counts[plan.outcome] = counts.get(plan.outcome, 0) + 1
            src = plan.source.decode("utf-8", "backslashreplace")
            detail = {
                "filed": f"-> {plan.where} ({plan.reason})",
                "duplicate": f"(same content as {plan.where})",
            }.get(plan.outcome, f"({plan.reason})")
            print(show.printable(f"{plan.outcome:9} {src} {detail}"))
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing to do"
        print(f"dry run, nothing changed: would import {sum(counts.values())} file(s): {parts}")
        return EX_OK
    progress = getattr(args, "progress", None)
    summary = oneshot.import_(
        cfg, args.sources, move=args.move, log=log, progress=progress, policy=args.policy
    )
    parts = ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n) or "nothing to do"
    print(f"imported {summary.total} file(s): {parts}")
    if progress is not None and progress.on and not args.quiet:
        print("\n".join(summary_table(summary, str(cfg.library))))
    return EX_OK if summary.ok else EX_FAILED


def cmd_run(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    from . import service

    return service.run(cfg, log=log)


def _paths_only(explicit: str | None, error: ConfigError) -> config.Config:
    """For `status` when the config file has an error (a daemon may run on with its
    previous one): the config from the [paths] table alone, else the error itself."""
    try:
        return config.load_paths(explicit)
    except ConfigError:
        raise error from None


def cmd_status(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    try:
        conn = db.connect(cfg.catalog, readonly=True)
    except MediasortError:
        if args.config_error:
            raise ConfigError(args.config_error) from None
        raise
    try:
        info = report.status(cfg, conn)
    finally:
        conn.close()
    info["config_error"] = args.config_error
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(show.lines(show.status(info)))
    if args.config_error:  # shown, and the exit status says the config is broken
        print(f"mediasortd: {args.config_error}", file=sys.stderr)
        return ConfigError.exit_code
    return EX_OK


def cmd_verify(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    if args.repair:
        from . import maintain

        def say(a: Any) -> None:
            print(show.printable(f"{a.kind:15} {a.path}: {a.detail}"), flush=True)

        actions, left = maintain.repair(
            cfg, log, dry_run=args.dry_run, say=None if args.json else say
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "dry_run": args.dry_run,
                        "actions": [vars(a) for a in actions],
                        **left.as_dict(),
                    },
                    indent=2,
                )
            )
        elif args.dry_run:
            print(f"dry run, nothing changed: {len(actions)} problem(s) found")
            return EX_OK if left.ok else EX_FAILED
        else:
            for p in left.problems:
                print(show.printable(f"{'still ' + p.kind:15} {_shown(p.path)}: {p.detail}"))
            print(
                f"repaired {len(actions)} problem(s): "
                + ("consistent" if left.ok else f"{len(left.problems)} left")
            )
        return EX_OK if left.ok else EX_FAILED
    if args.dry_run:
        raise UsageError("--dry-run goes with --repair")
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        rep = report.verify(cfg, conn, deep=args.deep)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2))
    else:
        for p in rep.problems:
            print(show.printable(f"{p.kind:14} {_shown(p.path)}: {p.detail}"))
        print(
            f"{rep.checked:,} catalogued file(s) checked"
            f"{' (re-hashed)' if args.deep else ''}: "
            + ("consistent" if rep.ok else f"{len(rep.problems)} problem(s)")
        )
    return EX_OK if rep.ok else EX_FAILED


def cmd_adopt(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    from . import adopt
    from .progress import Progress

    progress: Progress | None = getattr(args, "progress", None)

    def on_progress(done: int, total: int) -> None:
        if progress is None:
            return
        if progress.total != total:
            progress.start(total)
        progress.done = done
        progress.update()

    actions = adopt.adopt(
        cfg, args.path, log, on_progress, quarantine_copies=args.quarantine_copies
    )
    if progress is not None:
        progress.update(force=True)
        progress.close()
    for a in actions:
        if a.kind not in ("catalogued", "companion"):
            print(show.printable(f"{a.kind:12} {a.path}: {a.detail}"))
    counts = {k: sum(a.kind == k for a in actions) for k in adopt.ADOPT_KINDS}
    print(
        "adopted: "
        + ", ".join(
            f"{n} {k}" for k, n in counts.items() if n or k in ("catalogued", "copy", "left")
        )
    )
    return EX_OK


def _shown(path: str) -> str:
    """A path from os.fsdecode as printable text (bytes that are not UTF-8 escaped)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def cmd_find(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        found = [lookup.find(cfg, conn, what, limit=max(1, args.limit)) for what in args.what]
    finally:
        conn.close()
    if args.json:
        print(json.dumps([f.as_dict() for f in found], indent=2))
    else:
        for f in found:
            print(show.lines(show.find(f)))
    return EX_OK if all(f.results for f in found) else EX_FAILED


def _when(text: str | None) -> str | None:
    try:
        return times.parse_when(text) if text is not None else None
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_history(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    outcomes = [o.strip() for arg in args.outcome or () for o in arg.split(",") if o.strip()]
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        rows = lookup.history(
            conn,
            since=_when(args.since),
            outcomes=outcomes or None,
            batches=args.batch,
            limit=max(0, args.limit),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(show.lines(show.history(rows, str(cfg.library))))
    return EX_OK


def cmd_undo(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    if bool(args.batches) == (args.since is not None):
        raise UsageError("undo: give BATCH... or --since WHEN (one of them)")
    from . import oneshot

    summary = oneshot.undo(
        cfg, batches=args.batches or None, since=_when(args.since), dry_run=args.dry_run, log=log
    )
    what = ", ".join(summary.undoing) if isinstance(summary.undoing, list) else summary.undoing
    if summary.resumed:
        print(f"finished an interrupted undo: {show.undo_counts(summary.resumed)}")
    if summary.preview is not None:
        for line in show.undo_preview(summary.preview):
            print(show.printable(line))
        print(f"dry run, nothing changed: undo {what}: would undo {len(summary.preview)} file(s)")
    else:
        for item in summary.items:
            print(show.printable(show.undo_item(item, summary.sources[item.job_id])))
        print(
            f"undo {what} ({summary.batch}): {len(summary.items)} file(s): "
            f"{show.undo_counts(summary.items)}"
        )
    if summary.already_undone:
        print(f"{summary.already_undone} file(s) of it were undone before")
    if summary.unfinished_jobs:
        print(
            f"{summary.unfinished_jobs} job(s) of it are unfinished and were not undone: "
            "let the daemon or an import finish them, then undo again"
        )
    return EX_OK if summary.ok else EX_FAILED


def cmd_unit_paths(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    from . import runtime

    text = runtime.unit_paths(cfg)
    if not args.write:
        print(text, end="")
        return EX_OK
    path = Path(args.write)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
    except OSError as e:
        raise UsageError(f"{path}: cannot write the drop-in: {e.strerror}") from None
    print(f"wrote {path}; now run: systemctl daemon-reload && systemctl restart mediasortd")
    return EX_OK


TALKING = frozenset({"import", "adopt"})  # a progress bar and short lines on a terminal
QUIET = frozenset({"status", "find", "history", "unit-paths"})  # read only: no logging set up
COMMANDS = {
    "adopt": cmd_adopt,
    "run": cmd_run,
    "import": cmd_import,
    "status": cmd_status,
    "verify": cmd_verify,
    "find": cmd_find,
    "history": cmd_history,
    "undo": cmd_undo,
    "unit-paths": cmd_unit_paths,
}

if __name__ == "__main__":
    sys.exit(main())
