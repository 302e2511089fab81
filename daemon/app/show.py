"""Text for people at a terminal: the answers of `find`, `history`, `undo` and `status`
(pure: dicts and values in, lines out; times shown in local time).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from ..model import Job, UndoItem, UndoOutcome
from ..store.times import local_time
from .lookup import Found

_FIND_KINDS = {
    "file": "this file's content",
    "date": "captured on",
    "sha256": "sha256 prefix",
    "name": "original name",
    "source": "source path",
}


# What a file name may carry that a terminal would obey or a reader take for a new line:
# C0 controls (newline, escape...), DEL, C1 controls, line/paragraph separators and the
# bidirectional overrides. Text output shows them escaped (JSON escapes them itself).
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_UNSAFE.update(
    {c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)


def printable(text: str) -> str:
    """`text` with every control character escaped: one line, as a reader sees it."""
    return text.translate(_UNSAFE)


def lines(out: Iterable[str]) -> str:
    """Lines of text output joined, each made printable (a name cannot forge a line)."""
    return "\n".join(printable(line) for line in out)


def size(n: int | None) -> str:
    if n is None:
        return "?"
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if f < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"


def ago(iso: str | None, now: float | None = None) -> str:
    if not iso:
        return "never"
    secs = (now or time.time()) - datetime.fromisoformat(iso).timestamp()
    return f"{local_time(iso)} ({duration(secs)} ago)"


def duration(secs: float) -> str:
    secs = max(0.0, secs)
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= n:
            return f"{secs / n:.0f} {unit}"
    return f"{secs:.0f} s"


# -- find -------------------------------------------------------------------------------


def find(found: Found) -> Iterator[str]:
    head = f"{found.query}"
    if found.kind in _FIND_KINDS and found.kind != "name":
        head += (
            f"  ({_FIND_KINDS[found.kind]}"
            + (f" {found.sha256[:16]}..." if found.sha256 else "")
            + ")"
        )
    if found.note:
        yield f"{head}: {found.note}"
        return
    if not found.results:
        what = (
            "never seen: not in the library, and no import or the daemon met it"
            if found.kind == "file"
            else "nothing found"
        )
        yield f"{head}: {what}"
        return
    n = len(found.results)
    yield f"{head}: {n}{'+' if found.more else ''} found"
    for a in found.results:
        yield from _answer(a)
    if found.more:
        yield "  ... more; use --limit to see them"


def _raw_date(a: dict[str, Any]) -> str:
    """The raw value a date came from; a file's mtime (kept in nanoseconds) as the local
    time it stands for."""
    raw = str(a["date_raw"])
    if a.get("date_source") == "mtime" and raw.lstrip("-").isdigit():
        try:
            return datetime.fromtimestamp(int(raw) / 1e9).strftime("%Y-%m-%d %H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return raw
    return raw


def _answer(a: dict[str, Any]) -> Iterator[str]:
    outcome = a["outcome"]
    undo = a.get("undo")
    undone = undo is not None and undo["outcome"] in ("restored", "removed", "untouched")
    label = outcome + (", then undone" if undone else "")
    title = a["library_path"] or a["source"]
    yield f"  {title}  [{label}]"
    if outcome in ("filed", "pending") and a["library_path"]:
        yield f"      from      {a['original_name']}  ({a['source']})"
        if a["job"] is None:
            yield (
                f"      filed     {local_time(a['filed_at'])}  catalogued where it stood "
                "(adopt or verify --repair)"
            )
        else:
            yield (
                f"      filed     {local_time(a['filed_at'])}  batch {a['batch']}, job {a['job']}"
            )
        offset = a.get("utc_offset")
        zone = (
            f" UTC{'+' if offset >= 0 else '-'}{abs(offset) // 3600:02d}:"
            f"{abs(offset) % 3600 // 60:02d}"
            if offset is not None
            else ""
        )
        raw = f" = {_raw_date(a)!r}" if a.get("date_raw") else ""
        conf = f", {a['confidence']} confidence" if a.get("confidence") else ""
        yield f"      date      {a['captured']}{zone}  from {a['date_source']}{raw}{conf}"
        if a.get("date_skipped"):
            yield f"      skipped   {a['date_skipped']}"
        if a.get("missing_since"):
            yield f"      MISSING   from the library since {local_time(a['missing_since'])}"
    else:
        if outcome == "duplicate":
            of = a["duplicate_of"] or f"catalog file #{a['duplicate_of_id']} (undone since)"
            yield f"      same as   {of}"
        if a["was_at"]:
            yield f"      was at    {a['was_at']}"
        if a["quarantine"]:
            where = "rejected" if outcome == "rejected" else "quarantine"
            yield f"      {where:<9} {a['quarantine']}"
        elif outcome in ("duplicate", "rejected"):
            yield (
                "      left      at its source (or deleted, by on_duplicate)"
                if outcome == "duplicate"
                else "      left      at its source"
            )
        if a["reason"]:
            yield f"      reason    {a['reason']}"
        yield f"      seen      {local_time(a['filed_at'])}  batch {a['batch']}, job {a['job']}"
    if a.get("sha256"):
        yield f"      sha256    {a['sha256']}  ({size(a['size'])})"
    if undo is not None:
        if undone:
            where = f" to {undo['dest']}" if undo["outcome"] == "restored" else ""
            yield (
                f"      undone    {local_time(undo['when'])}: {undo['outcome']}{where}  "
                f"batch {undo['batch']}"
            )
        elif undo["outcome"] == "kept":
            yield f"      not undone {local_time(undo['when'])}: {undo['reason']}"


# -- history ----------------------------------------------------------------------------


def history(rows: list[dict[str, Any]], library: str) -> Iterator[str]:
    """Newest first, grouped by batch as they come."""
    if not rows:
        yield "nothing in the journal matches"
        return
    i = 0
    while i < len(rows):
        batch = rows[i]["batch"]
        j = i
        while j < len(rows) and rows[j]["batch"] == batch:
            j += 1
        group = rows[i:j]
        counts: dict[str, int] = {}
        for r in group:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        yield f"batch {batch}: " + ", ".join(f"{n} {o}" for o, n in counts.items())
        for r in group:
            yield "  " + _history_line(r, library)
        i = j


def _history_line(r: dict[str, Any], library: str) -> str:
    when = local_time(r["when"])
    outcome = r["outcome"]
    line = f"{when}  {outcome:10} {r['source']}"
    dest = r["dest"]
    if dest and dest.startswith(library.rstrip("/") + "/"):
        dest = dest[len(library.rstrip("/")) + 1 :]
    if r["kind"] == "undo":
        action = r["action"]
        if action == "restored":
            line += ": put back" if r["dest"] == r["source"] else f": put back as {r['dest']}"
        elif action == "removed":
            line += ": library copy removed (the source still had it)"
        elif action == "untouched":
            line += ": nothing to undo"
    elif outcome in ("filed", "duplicate", "rejected") and dest:
        line += f" -> {dest}"
    if r["reason"]:
        line += f": {r['reason']}"
    return line + f"  [job {r['job']}]"


# -- undo -------------------------------------------------------------------------------

_UNDO_WORDS = {
    UndoOutcome.RESTORED: "put back",
    UndoOutcome.REMOVED: "library copy removed (the source still had it)",
    UndoOutcome.UNTOUCHED: "nothing to undo",
    UndoOutcome.KEPT: "NOT undone",
}


_WOULD = {
    UndoOutcome.RESTORED: "restore",
    UndoOutcome.REMOVED: "remove",
    UndoOutcome.UNTOUCHED: "skip",
    UndoOutcome.KEPT: "keep",
}


def undo_item(item: UndoItem, source: str, dry_run: bool = False) -> str:
    assert item.outcome is not None
    word = f"would {_WOULD[item.outcome]}" if dry_run else item.outcome.value
    width = 13 if dry_run else 9
    line = f"{word:{width}} {source}"
    if item.outcome is UndoOutcome.RESTORED and item.dest is not None:
        dest = item.dest.decode("utf-8", "backslashreplace")
        line += f" <- {item.origin.decode('utf-8', 'backslashreplace') if item.origin else '?'}"
        if dest != source:
            line += f" (put at {dest})"
    elif item.outcome is UndoOutcome.REMOVED and item.origin is not None:
        line += f" (removed {item.origin.decode('utf-8', 'backslashreplace')})"
    if item.error:
        line += f": {item.error}"
    return line


def undo_counts(items: list[UndoItem]) -> str:
    parts = []
    for o in UndoOutcome:
        n = sum(i.outcome is o for i in items)
        if n:
            parts.append(f"{n} {_UNDO_WORDS[o]}")
    return ", ".join(parts) or "nothing to undo"


def undo_preview(preview: list[tuple[Job, UndoItem]]) -> Iterator[str]:
    for job, item in preview:
        yield undo_item(item, job.source.decode("utf-8", "backslashreplace"), dry_run=True)


# -- status -----------------------------------------------------------------------------


def status(info: dict[str, Any]) -> Iterator[str]:
    now = info["now"]
    w = now["writer"]
    if w is None:
        doing = "no mediasortd is running"
    elif w["command"] == "run":
        doing = f"the daemon is running (pid {w['pid']})"
    else:
        doing = f"a `mediasortd {w['command']}` is running (pid {w['pid']})"
    pending = now["in_progress"]
    if pending:
        doing += (
            f"; {pending:,} job(s) in progress"
            if w
            else f"; {pending:,} unfinished job(s) resume when it starts"
        )
    else:
        doing += "; nothing in progress"
    yield f"now        {doing}"
    if info.get("config_error"):
        yield (
            f"CONFIG     the config file has an error (shown from its [paths] alone): "
            f"{info['config_error']}"
        )
    if d := info.get("daemon"):
        if d.get("config_error"):
            yield (
                "CONFIG     the last reload failed; the daemon runs on with its previous "
                f"config: {d['config_error']}"
            )
        if d.get("needs_restart"):
            yield (
                f"CONFIG     changed but applied only after a restart: "
                f"{', '.join(d['needs_restart'])} (systemctl restart mediasortd)"
            )
        if d.get("no_lease"):
            yield (
                f"SETTLE     no read lease can be had on the inbox's files "
                f"({'; '.join(d['no_lease'])}): they are filed on the settle guess "
                f"(unchanged for {d.get('settle_seconds', 0):g} s, no writer the daemon "
                "can see, closed after its last write when seen arriving); a writer it "
                "cannot see that pauses longer is not detected (grant CAP_LEASE, or run "
                "the daemon as the inbox files' owner)"
            )
    yield f"last       filed {ago(now['last_filed'])}"
    if info["library_full"]:
        yield (
            "LIBRARY FULL: files are waiting for space on the library's filesystem; "
            "they are filed by themselves once space is freed"
        )
    if info.get("state_full"):
        yield (
            f"CATALOG FULL: the state directory {info['state_dir']} has "
            f"{size(info['state_free_bytes'] or 0)} left: nothing can be recorded, so "
            "nothing is filed; free some space there and the daemon goes on by itself"
        )
    if info.get("state_read_only"):
        yield (
            f"CATALOG READ-ONLY: the state directory {info['state_dir']} is on a "
            "read-only filesystem: nothing can be recorded, so nothing is filed"
        )
    if b := now["batch"]:
        c = b["counts"]
        yield (
            f"batch      {b['batch']} (started {local_time(b['started'])}): "
            + ", ".join(f"{n:,} {k}" for k, n in c.items())
        )
    t, o = info["today"], info["outcomes"]
    yield (
        f"today      {t['filed']:,} filed, {t['duplicate']:,} duplicates, "
        f"{t['rejected']:,} rejected, {t['failed']:,} failed"
    )
    undone = f", {o['undone']:,} undone" if o.get("undone") else ""
    yield (
        f"all time   {o['filed']:,} filed, {o['duplicate']:,} duplicates, "
        f"{o['rejected']:,} rejected, {o['failed']:,} failed, {o['vanished']:,} vanished"
        f"{undone} (net of undo)"
    )
    undated = (
        f" ({info['undated_files']:,} undated, in undated/)" if info.get("undated_files") else ""
    )
    yield (
        f"library    {info['library']}: {info['library_files']:,} files, "
        f"{size(info['library_bytes'])}{undated}"
    )
    free, total = info["library_free_bytes"], info.get("library_fs_bytes")
    if free is not None and total:
        yield f"disk       {size(free)} free of {size(total)} ({100 * free / total:.0f}% free)"
    inbox = info["inbox_waiting"]
    count = f"{inbox['files']:,}{'' if inbox['complete'] else '+'}"
    left = (
        f", {inbox['left_in_place']:,} left in place on purpose" if inbox["left_in_place"] else ""
    )
    inboxes = ", ".join(info.get("inboxes") or [info["inbox"]])
    yield f"inbox      {inboxes}: {count} file(s) waiting{left}"
    if stuck := inbox.get("filed_left_in_place"):
        why = inbox.get("filed_left_reason") or "the source could not be removed"
        yield (
            f"LEFT       {stuck:,} file(s) filed but left in the inbox: {why} "
            "(the service needs write access to the inbox)"
        )
    if d and d.get("held_files"):
        yield (
            f"held       {d['held_files']:,} file(s) settled but not taken yet: "
            + "; ".join(
                f"{n:,} {why.split(':')[0]}"
                for why, n in Counter(d["held"].values()).most_common(3)
            )
        )
    if old := inbox["oldest"]:
        yield (
            f"oldest     {old['path']}, waiting since {local_time(old['since'])} "
            f"({duration(old['waiting_seconds'])}): {old['why']}"
        )
    problems = info["recent_problems"][:5]
    if problems:
        yield "problems   (the latest first)"
        for p in problems:
            yield f"  {local_time(p['when'])}  {p['outcome']:9} {p['source']}: {p['error']}"
    else:
        yield "problems   none"
