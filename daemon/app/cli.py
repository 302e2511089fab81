"""argv -> config -> service; errors -> exit codes. The only place that exits."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import __version__, config
from ..errors import EX_FAILED, EX_OK, ConfigError, MediasortError, UsageError
from ..model import Outcome
from ..rules.retry import ONESHOT, Policy
from ..store import db, query
from . import lookup, report, show

DESCRIPTION = """\
mediasortd files photos and videos into a date-sorted library
(YYYY-MM/YYYY-MM-DD HH.MM.SS.ext), recognises content it already has, records
everything in a SQLite catalog, and never loses, overwrites or duplicates a file.

The config file is --config PATH, else $MEDIASORTD_CONFIG, else
/etc/mediasortd/config.toml (see config.example.toml)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mediasortd", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"mediasortd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $MEDIASORTD_CONFIG or "
                             f"{config.DEFAULT_PATH})")
    p.add_argument("--config", metavar="PATH", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("run", parents=[common], help="the daemon: watch the inbox and file "
                   "what arrives (under systemd or in the foreground); SIGHUP re-reads the "
                   "config (systemctl reload)",
                   description="The daemon: finish what an earlier run left, then watch the "
                   "inbox (inotify, plus a rescan every rescan_seconds) and file each file "
                   "once it is completely written. Under systemd it speaks sd_notify and "
                   "logs to journald; elsewhere it runs in the foreground. SIGHUP re-reads "
                   "the config (systemctl reload); Ctrl-C or SIGTERM stops it cleanly.")

    imp = sub.add_parser("import", parents=[common],
                         help="file the photos and videos under SRC... once, then exit",
                         description="Import files or folders through the same crash-safe "
                         "pipeline as the daemon. Sources stay where they are unless --move. "
                         "Exit status 0 when every file was handled (filed, duplicate, "
                         "rejected), 1 if any failed.")
    imp.add_argument("sources", nargs="+", metavar="SRC", help="a file or a folder")
    imp.add_argument("--move", action="store_true",
                     help="remove each source once its bytes are safely in the library "
                          "(duplicates and rejects go by on_duplicate and paths.rejected)")
    imp.add_argument("--dry-run", action="store_true",
                     help="say where each file would go; change nothing (no lock needed)")
    _talk_options(imp)

    st = sub.add_parser("status", parents=[common], help="a dashboard: what is happening "
                        "now, today's and all-time counts, the last problems, disk space, the "
                        "oldest file waiting in the inbox and why",
                        description="A dashboard, read-only (works while the daemon runs): "
                        "what is happening now, today's and all-time counts (net of undo), "
                        "the library's size and free space, undated files, how many files "
                        "wait in the inbox and why the oldest waits, the last problems. "
                        "Times in local time.")
    st.add_argument("--json", action="store_true", help="print JSON")

    ver = sub.add_parser("verify", parents=[common], help="check catalog vs library vs "
                         "journal; exit 1 and list each problem if they disagree",
                         description="Check the catalog against the library and the journal, "
                         "whatever layout wrote the library: missing files, size (with "
                         "--deep, hash) mismatches, strays, staging leftovers, unfinished "
                         "jobs. Exit status 0 when consistent, 1 otherwise (each problem "
                         "listed).")
    ver.add_argument("--deep", action="store_true", help="re-hash every library file and "
                     "run SQLite's integrity check on the catalog")
    ver.add_argument("--json", action="store_true", help="print JSON")
    ver.add_argument("--repair", action="store_true",
                     help="fix what is found (implies --deep): finish unfinished jobs, remove "
                          "staging leftovers, catalogue strays where they stand (duplicates "
                          "of catalogued files go to quarantine, non-media to rejected); a "
                          "changed file is an edit (its mtime or size changed: kept, its row "
                          "updated, the old hash kept in history) or bit rot (same size and "
                          "mtime: moved to {rejected}/bitrot, its row marked missing); mark "
                          "rows whose file is gone; says each action before doing it")
    ver.add_argument("--dry-run", action="store_true",
                     help="with --repair: say what would be done (edit or rot for each "
                          "changed file) and change nothing")

    ado = sub.add_parser("adopt", parents=[common],
                         help="catalogue an existing date-sorted library in place",
                         description="Catalogue the files under PATH (the library or a folder "
                         "in it) where they stand, without renaming, moving or deleting "
                         "anything: for people coming from GoSort or another sorter. Sidecars "
                         "(.xmp, .aae, Takeout .json) are recorded as their photo's "
                         "companions; a second copy of catalogued content (an album copy) is "
                         "recorded as a copy; files that are not photos or videos are left "
                         "where they are and listed.")
    ado.add_argument("path", metavar="PATH", help="the library, or a folder inside it")
    ado.add_argument("--quarantine-copies", action="store_true",
                     help="move second copies of catalogued content to paths.duplicates "
                          "instead of recording them")
    _talk_options(ado)

    unit = sub.add_parser("unit-paths", parents=[common],
                          help="the systemd drop-in that lets the service write to the "
                               "folders named in the config (ReadWritePaths=)",
                          description="Print the drop-in, or with --write install it as "
                          f"{UNIT_DROPIN}; then `systemctl daemon-reload` and "
                          "`systemctl restart mediasortd`. Run it again whenever [paths] "
                          "or [metrics] change.")
    unit.add_argument("--write", nargs="?", const=UNIT_DROPIN, metavar="FILE",
                      help=f"write it (default {UNIT_DROPIN}) instead of printing it")
    _answer_parsers(sub, common)
    return p


UNIT_DROPIN = "/etc/systemd/system/mediasortd.service.d/paths.conf"


def _talk_options(p: argparse.ArgumentParser) -> None:
    """-v / -q: how much a terminal is told (off a terminal: the structured logs)."""
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true",
                      help="on a terminal, a line per file above the progress bar")
    talk.add_argument("-q", "--quiet", action="store_true",
                      help="on a terminal, no progress bar and no warnings: only the summary")


WHEN_HELP = ("WHEN: 2h, 30m, 7d, 1w, today, yesterday, 2024-06-03, '2024-06-03 14:00' "
             "(local time)")


def _answer_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """find, history, undo: the catalog and the journal answer people's questions."""
    fnd = sub.add_parser(
        "find", parents=[common], help="where did my photo go? look up files by content, "
        "name, date or sha256", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Each WHAT is one of:\n"
        "  a file          hashed, then looked up: is its content in the library, where, and\n"
        "                  which imports met it (duplicates, rejects)\n"
        "  a date          2024-06-03 or 2024-06: files captured then\n"
        "  a sha256 prefix at least 6 hex digits\n"
        "  a source path   has a '/' and no longer exists: files that came from there\n"
        "                  (a glob: '/srv/inbox/phone/*')\n"
        "  a name or glob  an original name, IMG_1234.JPG or 'IMG_12*' (quote it),\n"
        "                  case-insensitive\n"
        "Each answer shows the library path, the original name and source, when it was\n"
        "filed (batch and job), the capture date and the tag or rule it came from; for\n"
        "duplicates and rejects the quarantine path and the reason. Exit status 0 when\n"
        "every WHAT found something, 1 otherwise.")
    fnd.add_argument("what", nargs="+", metavar="WHAT")
    fnd.add_argument("--limit", type=int, default=50, metavar="N",
                     help="answers per WHAT (default 50)")
    fnd.add_argument("--json", action="store_true", help="print JSON")

    his = sub.add_parser(
        "history", parents=[common], help="what happened to each file, newest first",
        description="The per-file audit trail from the journal, newest first, grouped by "
        "batch (an import run, a daemon burst, an undo): filed, duplicate, rejected, failed, "
        "vanished, pending, undone, not-undone, with the reasons. " + WHEN_HELP)
    his.add_argument("--since", metavar="WHEN", help="only what happened since WHEN")
    his.add_argument("--outcome", action="append", metavar="OUTCOME",
                     help="only these outcomes (repeat, or comma-separated): "
                          + ", ".join(query.HISTORY_OUTCOMES))
    his.add_argument("--batch", action="append", metavar="BATCH", help="only this batch")
    his.add_argument("--limit", type=int, default=100, metavar="N",
                     help="at most N rows (default 100; 0: all)")
    his.add_argument("--json", action="store_true", help="print JSON")

    und = sub.add_parser(
        "undo", parents=[common], help="put the files of an import or a daemon burst back "
        "where they came from", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Undo every file of BATCH (an import run or a daemon burst, as shown by\n"
        "`mediasortd history`; a unique prefix will do), or of everything finished since\n"
        "WHEN. Each file's library copy is moved back to where it came from and its catalog\n"
        "row removed; quarantined duplicates and rejected files go back too.\n"
        "\n"
        "- An import done without --move left its sources: their library copies and rows\n"
        "  are just removed (if a source is gone since, the file is put back instead).\n"
        "- Nothing at the source is ever overwritten: if a different file stands there now,\n"
        "  the restored one is put beside it as NAME.1.EXT.\n"
        "- Files the daemon took from the inbox are not put back into it (it would file\n"
        "  them again): they go to {library}/.undone/BATCH/ with their path in the inbox.\n"
        "- A file whose source folder is gone, or that cannot be written there, stays in\n"
        "  the library and is reported; run undo again once that is fixed.\n"
        "\n"
        "Undo is journalled and crash-safe like an import: if it is interrupted, the next\n"
        "undo, import or daemon start finishes it. It needs the daemon stopped (the lock).\n"
        "Exit status 0 when every file was undone, 1 when some were left (each listed).\n"
        + WHEN_HELP)
    und.add_argument("batches", nargs="*", metavar="BATCH")
    und.add_argument("--since", metavar="WHEN", help="undo everything finished since WHEN")
    und.add_argument("--dry-run", action="store_true",
                     help="say what would be put back where; change nothing (no lock needed)")


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
            if args.command in TALKING and sys.stderr.isatty() \
                    and logs.resolve_format(cfg.log_format) == "console":
                from . import oneshot

                args.progress = oneshot.Progress(
                    0, sys.stderr, verbosity=-1 if args.quiet else 1 if args.verbose else 0,
                    library=str(cfg.library))
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
    from . import oneshot

    if args.dry_run:
        counts = {o.value: 0 for o in Outcome}
        for plan in oneshot.dry_run(cfg, args.sources):
            counts[plan.outcome] = counts.get(plan.outcome, 0) + 1
            src = plan.source.decode("utf-8", "backslashreplace")
            detail = {"filed": f"-> {plan.where} ({plan.reason})",
                      "duplicate": f"(same content as {plan.where})"}.get(
                          plan.outcome, f"({plan.reason})")
            print(show.printable(f"{plan.outcome:9} {src} {detail}"))
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing to do"
        print(f"dry run, nothing changed: would import {sum(counts.values())} file(s): {parts}")
        return EX_OK
    progress = getattr(args, "progress", None)
    summary = oneshot.import_(cfg, args.sources, move=args.move, log=log, progress=progress,
                              policy=args.policy)
    parts = ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n) or "nothing to do"
    print(f"imported {summary.total} file(s): {parts}")
    if progress is not None and progress.on and not args.quiet:
        print("\n".join(oneshot.summary_table(summary, str(cfg.library))))
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

        actions, left = maintain.repair(cfg, log, dry_run=args.dry_run,
                                        say=None if args.json else say)
        if args.json:
            print(json.dumps({"dry_run": args.dry_run, "actions": [vars(a) for a in actions],
                              **left.as_dict()}, indent=2))
        elif args.dry_run:
            print(f"dry run, nothing changed: {len(actions)} problem(s) found")
            return EX_OK if left.ok else EX_FAILED
        else:
            for p in left.problems:
                print(show.printable(f"{'still ' + p.kind:15} {_shown(p.path)}: {p.detail}"))
            print(f"repaired {len(actions)} problem(s): "
                  + ("consistent" if left.ok else f"{len(left.problems)} left"))
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
        print(f"{rep.checked:,} catalogued file(s) checked"
              f"{' (re-hashed)' if args.deep else ''}: "
              + ("consistent" if rep.ok else f"{len(rep.problems)} problem(s)"))
    return EX_OK if rep.ok else EX_FAILED


def cmd_adopt(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    from . import maintain, oneshot

    progress: oneshot.Progress | None = getattr(args, "progress", None)

    def on_progress(done: int, total: int) -> None:
        if progress is None:
            return
        if progress.total != total:
            progress.start(total)
        progress.done = done
        progress.update()

    actions = maintain.adopt(cfg, args.path, log, on_progress,
                             quarantine_copies=args.quarantine_copies)
    if progress is not None:
        progress.update(force=True)
        progress.close()
    for a in actions:
        if a.kind not in ("catalogued", "companion"):
            print(show.printable(f"{a.kind:12} {a.path}: {a.detail}"))
    counts = {k: sum(a.kind == k for a in actions) for k in maintain.ADOPT_KINDS}
    print("adopted: " + ", ".join(f"{n} {k}" for k, n in counts.items()
                                  if n or k in ("catalogued", "copy", "left")))
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
        return query.parse_when(text) if text is not None else None
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_history(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    outcomes = [o.strip() for arg in args.outcome or () for o in arg.split(",") if o.strip()]
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        rows = lookup.history(conn, since=_when(args.since), outcomes=outcomes or None,
                              batches=args.batch, limit=max(0, args.limit))
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

    summary = oneshot.undo(cfg, batches=args.batches or None, since=_when(args.since),
                           dry_run=args.dry_run, log=log)
    what = ", ".join(summary.undoing) if isinstance(summary.undoing, list) else summary.undoing
    if summary.resumed:
        print(f"finished an interrupted undo: {show.undo_counts(summary.resumed)}")
    if summary.preview is not None:
        for line in show.undo_preview(summary.preview):
            print(show.printable(line))
        print(f"dry run, nothing changed: undo {what}: would undo {len(summary.preview)} "
              "file(s)")
    else:
        for item in summary.items:
            print(show.printable(show.undo_item(item, summary.sources[item.job_id])))
        print(f"undo {what} ({summary.batch}): {len(summary.items)} file(s): "
              f"{show.undo_counts(summary.items)}")
    if summary.already_undone:
        print(f"{summary.already_undone} file(s) of it were undone before")
    if summary.unfinished_jobs:
        print(f"{summary.unfinished_jobs} job(s) of it are unfinished and were not undone: "
              "let the daemon or an import finish them, then undo again")
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
COMMANDS = {"adopt": cmd_adopt, "run": cmd_run, "import": cmd_import, "status": cmd_status,
            "verify": cmd_verify, "find": cmd_find, "history": cmd_history, "undo": cmd_undo,
            "unit-paths": cmd_unit_paths}

if __name__ == "__main__":
    sys.exit(main())
