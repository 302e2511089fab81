"""The command line: every subcommand, its options and its --help text (`cli` runs them;
`completion` offers them to the shell). Builds the parser only: nothing is read or run.
Help texts are paragraphs: argparse folds their lines and re-wraps them to the terminal.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from .. import __version__, config
from ..store import timeline

DESCRIPTION = """\
mediasortd files photos and videos into a date-sorted library
(YYYY-MM/YYYY-MM-DD HH.MM.SS.ext), recognises content it already has, records
everything in a SQLite catalog, and never loses, overwrites or duplicates a file.

The config file is --config PATH, else $MEDIASORTD_CONFIG, else
/etc/mediasortd/config.toml (see config.example.toml)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mediasortd",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"mediasortd {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"config file (default: $MEDIASORTD_CONFIG or {config.DEFAULT_PATH})",
    )
    p.add_argument("--config", metavar="PATH", help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser(
        "run",
        parents=[common],
        help="""the daemon: watch the inbox and file what arrives (under systemd or in the
            foreground); SIGHUP re-reads the config (systemctl reload)""",
        description="""The daemon: finish what an earlier run left, then watch the inbox
            (inotify, plus a rescan every rescan_seconds) and file each file once it is
            completely written. Under systemd it speaks sd_notify and logs to journald;
            elsewhere it runs in the foreground. SIGHUP re-reads the config (systemctl
            reload); Ctrl-C or SIGTERM stops it cleanly.""",
    )

    imp = sub.add_parser(
        "import",
        parents=[common],
        help="file the photos and videos under SRC... once, then exit",
        description="""Import files or folders through the same crash-safe pipeline as the
            daemon. Sources stay where they are unless --move. Exit status 0 when every file
            was handled (filed, duplicate, rejected), 1 if any failed.""",
    )
    imp.add_argument("sources", nargs="+", metavar="SRC", help="a file or a folder")
    imp.add_argument(
        "--move",
        action="store_true",
        help="remove each source once its bytes are safely in the library "
        "(duplicates and rejects go by on_duplicate and paths.rejected)",
    )
    imp.add_argument(
        "--dry-run",
        action="store_true",
        help="say where each file would go; change nothing (no lock needed)",
    )
    _talk_options(imp)

    st = sub.add_parser(
        "status",
        parents=[common],
        help="""a dashboard: what is happening now, today's and all-time counts, the last
            problems, disk space, the oldest file waiting in the inbox and why""",
        description="""A dashboard, read-only (works while the daemon runs): what is happening
            now, today's and all-time counts (net of undo), the library's size and free
            space, undated files, how many files wait in the inbox and why the oldest waits,
            the last problems. Times in local time.""",
    )
    st.add_argument("--json", action="store_true", help="print JSON")

    ver = sub.add_parser(
        "verify",
        parents=[common],
        help="check catalog vs library vs journal; exit 1 and list each problem if they disagree",
        description="""Check the catalog against the library and the journal, whatever layout
            wrote the library: missing files, size (with --deep, hash) mismatches, strays,
            staging leftovers, unfinished jobs. Exit status 0 when consistent, 1 otherwise
            (each problem listed).""",
    )
    ver.add_argument(
        "--deep",
        action="store_true",
        help="re-hash every library file and run SQLite's integrity check on the catalog",
    )
    ver.add_argument("--json", action="store_true", help="print JSON")
    ver.add_argument(
        "--repair",
        action="store_true",
        help="""fix what is found (implies --deep): finish unfinished jobs,
                         remove staging leftovers, catalogue strays where they stand
                         (duplicates of catalogued files go to quarantine, non-media to
                         rejected); a changed file is an edit (its mtime or size changed:
                         kept, its row updated, the old hash kept in history) or bit rot
                         (same size and mtime: moved to {rejected}/bitrot, its row marked
                         missing); mark rows whose file is gone; says each action before
                         doing it""",
    )
    ver.add_argument(
        "--dry-run",
        action="store_true",
        help="with --repair: say what would be done (edit or rot for each "
        "changed file) and change nothing",
    )

    ado = sub.add_parser(
        "adopt",
        parents=[common],
        help="catalogue an existing date-sorted library in place",
        description="""Catalogue the files under PATH (the library or a folder in it) where
            they stand, without renaming, moving or deleting anything: for people coming
            from GoSort or another sorter. Sidecars (.xmp, .aae, Takeout .json) are recorded
            as their photo's companions; a second copy of catalogued content (an album copy)
            is recorded as a copy; files that are not photos or videos are left where they
            are and listed.""",
    )
    ado.add_argument("path", metavar="PATH", help="the library, or a folder inside it")
    ado.add_argument(
        "--quarantine-copies",
        action="store_true",
        help="move second copies of catalogued content to paths.duplicates "
        "instead of recording them",
    )
    _talk_options(ado)

    unit = sub.add_parser(
        "unit-paths",
        parents=[common],
        help="the systemd drop-in that lets the service write to the "
        "folders named in the config (ReadWritePaths=)",
        description="Print the drop-in, or with --write install it as "
        f"{UNIT_DROPIN}; then `systemctl daemon-reload` and "
        "`systemctl restart mediasortd`. Run it again whenever [paths] "
        "or [metrics] change.",
    )
    unit.add_argument(
        "--write",
        nargs="?",
        const=UNIT_DROPIN,
        metavar="FILE",
        help=f"write it (default {UNIT_DROPIN}) instead of printing it",
    )
    _answer_parsers(sub, common)
    return p


UNIT_DROPIN = "/etc/systemd/system/mediasortd.service.d/paths.conf"


def _talk_options(p: argparse.ArgumentParser) -> None:
    """-v / -q: how much a terminal is told (off a terminal: the structured logs)."""
    talk = p.add_mutually_exclusive_group()
    talk.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="on a terminal, a line per file above the progress bar",
    )
    talk.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="on a terminal, no progress bar and no warnings: only the summary",
    )


WHEN_HELP = "WHEN: 2h, 30m, 7d, 1w, today, yesterday, 2024-06-03, '2024-06-03 14:00' (local time)"


def _answer_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """find, history, undo: the catalog and the journal answer people's questions."""
    fnd = sub.add_parser(
        "find",
        parents=[common],
        help="where did my photo go? look up files by content, name, date or sha256",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
        Each WHAT is one of:
          a file          hashed, then looked up: is its content in the library, where, and
                          which imports met it (duplicates, rejects)
          a date          2024-06-03 or 2024-06: files captured then
          a sha256 prefix at least 6 hex digits
          a source path   has a '/' and no longer exists: files that came from there
                          (a glob: '/srv/inbox/phone/*')
          a name or glob  an original name, IMG_1234.JPG or 'IMG_12*' (quote it),
                          case-insensitive
        Each answer shows the library path, the original name and source, when it was
        filed (batch and job), the capture date and the tag or rule it came from; for
        duplicates and rejects the quarantine path and the reason. Exit status 0 when
        every WHAT found something, 1 otherwise."""),
    )
    fnd.add_argument("what", nargs="+", metavar="WHAT")
    fnd.add_argument(
        "--limit", type=int, default=50, metavar="N", help="answers per WHAT (default 50)"
    )
    fnd.add_argument("--json", action="store_true", help="print JSON")

    his = sub.add_parser(
        "history",
        parents=[common],
        help="what happened to each file, newest first",
        description="""The per-file audit trail from the journal, newest first, grouped by
            batch (an import run, a daemon burst, an undo): filed, duplicate, rejected,
            failed, vanished, pending, undone, not-undone, with the reasons. """
        + WHEN_HELP,
    )
    his.add_argument("--since", metavar="WHEN", help="only what happened since WHEN")
    his.add_argument(
        "--outcome",
        action="append",
        metavar="OUTCOME",
        help="only these outcomes (repeat, or comma-separated): "
        + ", ".join(timeline.HISTORY_OUTCOMES),
    )
    his.add_argument("--batch", action="append", metavar="BATCH", help="only this batch")
    his.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N rows (default 100; 0: all)"
    )
    his.add_argument("--json", action="store_true", help="print JSON")

    und = sub.add_parser(
        "undo",
        parents=[common],
        help="put the files of an import or a daemon burst back where they came from",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
        Undo every file of BATCH (an import run or a daemon burst, as shown by
        `mediasortd history`; a unique prefix will do), or of everything finished since
        WHEN. Each file's library copy is moved back to where it came from and its catalog
        row removed; quarantined duplicates and rejected files go back too.

        - An import done without --move left its sources: their library copies and rows
          are just removed (if a source is gone since, the file is put back instead).
        - Nothing at the source is ever overwritten: if a different file stands there now,
          the restored one is put beside it as NAME.1.EXT.
        - Files the daemon took from the inbox are not put back into it (it would file
          them again): they go to {library}/.undone/BATCH/ with their path in the inbox.
        - A file whose source folder is gone, or that cannot be written there, stays in
          the library and is reported; run undo again once that is fixed.

        Undo is journalled and crash-safe like an import: if it is interrupted, the next
        undo, import or daemon start finishes it. It needs the daemon stopped (the lock).
        Exit status 0 when every file was undone, 1 when some were left (each listed).
        """)
        + WHEN_HELP,
    )
    und.add_argument("batches", nargs="*", metavar="BATCH")
    und.add_argument("--since", metavar="WHEN", help="undo everything finished since WHEN")
    und.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be put back where; change nothing (no lock needed)",
    )
