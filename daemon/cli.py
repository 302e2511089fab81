"""argv -> config -> service; errors -> exit codes. The only place that exits."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import __version__, config, db, logs, maintain, report, service
from .errors import EX_FAILED, EX_OK, MediasortError
from .model import Outcome

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
                   "what arrives (under systemd or in the foreground)")

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

    st = sub.add_parser("status", parents=[common], help="counts by outcome, pending jobs, "
                        "recent problems, library size")
    st.add_argument("--json", action="store_true", help="print JSON")

    ver = sub.add_parser("verify", parents=[common], help="check catalog vs library vs "
                         "journal; exit 1 and list each problem if they disagree")
    ver.add_argument("--deep", action="store_true", help="re-hash every library file")
    ver.add_argument("--json", action="store_true", help="print JSON")
    ver.add_argument("--repair", action="store_true",
                     help="fix what is found (implies --deep): finish unfinished jobs, remove "
                          "staging leftovers, catalogue strays where they stand (duplicates "
                          "of catalogued files go to quarantine, non-media to rejected), move "
                          "rotten files to {rejected}/bitrot and mark their rows missing, mark "
                          "rows whose file is gone; prints each action")

    ado = sub.add_parser("adopt", parents=[common],
                         help="catalogue an existing date-sorted library in place",
                         description="Catalogue the files under PATH (the library or a folder "
                         "in it) where they stand, without renaming them: for people coming "
                         "from GoSort or another sorter. Duplicates of catalogued content go "
                         "to paths.duplicates, non-media to paths.rejected; each is listed.")
    ado.add_argument("path", metavar="PATH", help="the library, or a folder inside it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(args.config)
        logs.configure(cfg.log_level, cfg.log_format)
        log = logs.get()
        return COMMANDS[args.command](cfg, args, log)
    except MediasortError as e:
        print(f"mediasortd: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def cmd_import(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    if args.dry_run:
        counts = {o.value: 0 for o in Outcome}
        for plan in service.dry_run(cfg, args.sources):
            counts[plan.outcome] = counts.get(plan.outcome, 0) + 1
            src = plan.source.decode("utf-8", "backslashreplace")
            detail = {"filed": f"-> {plan.where} ({plan.reason})",
                      "duplicate": f"(same content as {plan.where})"}.get(
                          plan.outcome, f"({plan.reason})")
            print(f"{plan.outcome:9} {src} {detail}")
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "nothing to do"
        print(f"dry run, nothing changed: would import {sum(counts.values())} file(s): {parts}")
        return EX_OK
    summary = service.import_(cfg, args.sources, move=args.move, log=log)
    parts = ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n) or "nothing to do"
    print(f"imported {summary.total} file(s): {parts}")
    return EX_OK if summary.ok else EX_FAILED


def cmd_run(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    return service.run(cfg, log=log)


def cmd_status(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        info = report.status(cfg, conn)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(info, indent=2))
        return EX_OK
    o = info["outcomes"]
    print(f"library  {info['library']}: {info['library_files']:,} files, "
          f"{_size(info['library_bytes'])}"
          + (f", {_size(info['library_free_bytes'])} free" if info["library_free_bytes"]
             is not None else ""))
    print(f"inbox    {info['inbox']}")
    print(f"all time {o['filed']:,} filed, {o['duplicate']:,} duplicates, "
          f"{o['rejected']:,} rejected, {o['failed']:,} failed, {o['vanished']:,} vanished")
    t = info["today"]
    print(f"today    {t['filed']:,} filed, {t['duplicate']:,} duplicates, "
          f"{t['rejected']:,} rejected, {t['failed']:,} failed")
    print(f"pending  {info['pending_jobs']:,} unfinished job(s)")
    if info["library_full"]:
        print("LIBRARY FULL: files are waiting for space on the library's filesystem; "
              "they are filed by themselves once space is freed")
    if info["recent_problems"]:
        print("recent problems:")
        for p in info["recent_problems"]:
            print(f"  {p['outcome']:9} {p['source']}: {p['error']}")
    return EX_OK


def cmd_verify(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    if args.repair:
        actions, left = maintain.repair(cfg, log)
        if args.json:
            print(json.dumps({"actions": [vars(a) for a in actions], **left.as_dict()},
                             indent=2))
        else:
            for a in actions:
                print(f"{a.kind:15} {a.path}: {a.detail}")
            for p in left.problems:
                print(f"{'still ' + p.kind:15} {p.path}: {p.detail}")
            print(f"repaired {len(actions)} problem(s): "
                  + ("consistent" if left.ok else f"{len(left.problems)} left"))
        return EX_OK if left.ok else EX_FAILED
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        rep = report.verify(cfg, conn, deep=args.deep)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(rep.as_dict(), indent=2))
    else:
        for p in rep.problems:
            print(f"{p.kind:14} {p.path}: {p.detail}")
        print(f"{rep.checked:,} catalogued file(s) checked"
              f"{' (re-hashed)' if args.deep else ''}: "
              + ("consistent" if rep.ok else f"{len(rep.problems)} problem(s)"))
    return EX_OK if rep.ok else EX_FAILED


def cmd_adopt(cfg: config.Config, args: argparse.Namespace, log: Any) -> int:
    progress: service.Progress | None = None

    def on_progress(done: int, total: int) -> None:
        nonlocal progress
        if progress is None:
            progress = service.Progress(total)
        progress.done = done
        progress.update({})

    actions = maintain.adopt(cfg, args.path, log, on_progress)
    if progress is not None:
        progress.update({}, force=True)
        progress.close()
    for a in actions:
        if a.kind != "catalogued":
            print(f"{a.kind:12} {a.path}: {a.detail}")
    counts = {k: sum(a.kind == k for a in actions) for k in ("catalogued", "quarantined",
                                                              "rejected", "skipped")}
    print("adopted: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return EX_OK


def _size(n: int) -> str:
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if f < 1024 or unit == "TiB":
            return f"{f:.1f} {unit}" if unit != "B" else f"{n} B"
        f /= 1024
    return f"{n} B"


COMMANDS = {"adopt": cmd_adopt, "run": cmd_run, "import": cmd_import, "status": cmd_status,
            "verify": cmd_verify}

if __name__ == "__main__":
    sys.exit(main())
