"""Ratios to the floor, the issue's targets, and the one table (text and JSON)."""

from __future__ import annotations

from typing import Any

from .context import Row

RSS_LIMIT_MB = 150.0
FLOOR = "cp -r + sync"


def judge(rows: list[Row], settle: float) -> list[dict[str, Any]]:
    """Fill each row's ratio to its set's floor and, for ours, whether it meets the
    targets; returns the list of checks (target, measured, met) for the JSON."""
    floors = {r.dataset: r for r in rows if r.contender == FLOOR and r.status == "ok"}
    checks: list[dict[str, Any]] = []
    for r in rows:
        floor = floors.get(r.dataset)
        if floor and floor.wall and r.wall and r.status == "ok":
            r.ratio = r.wall / floor.wall
    for r in rows:
        if r.kind != "ours":
            continue
        fails: list[str] = []

        def check(
            target: str, measured: str, ok: bool, row: Row = r, fails: list[str] = fails
        ) -> None:
            checks.append(
                {
                    "dataset": row.dataset,
                    "contender": row.contender,
                    "target": target,
                    "measured": measured,
                    "met": ok,
                }
            )
            if not ok:
                fails.append(measured)

        if r.status != "ok":
            r.met = f"no: {r.status}"
            checks.append(
                {
                    "dataset": r.dataset,
                    "contender": r.contender,
                    "target": "runs",
                    "measured": r.status,
                    "met": False,
                }
            )
            continue
        if r.maxrss_mb is not None:
            check(
                f"peak RSS < {RSS_LIMIT_MB:.0f} MB",
                f"RSS {r.maxrss_mb:.0f} MB",
                r.maxrss_mb < RSS_LIMIT_MB,
            )
        floor = floors.get(r.dataset)
        if r.dataset == "photos" and r.ratio is not None:
            check("wall <= 1.3 x floor", f"{r.ratio:.2f}x floor", r.ratio <= 1.3)
            peers = [
                p
                for p in rows
                if p.dataset == r.dataset and p.kind == "peer" and p.status == "ok" and p.wall
            ]
            if peers:
                best = min(peers, key=lambda p: p.wall or 0)
                assert r.wall is not None and best.wall is not None
                check(
                    "faster than every peer",
                    f"{r.wall:.1f} s vs {best.contender} {best.wall:.1f} s",
                    r.wall < best.wall,
                )
        if r.dataset == "small" and r.files_per_s is not None:
            check(">= 2,000 files/s", f"{r.files_per_s:,.0f} files/s", r.files_per_s >= 2000)
        if r.dataset == "videos" and r.mb_per_s is not None and floor and floor.mb_per_s:
            share = r.mb_per_s / floor.mb_per_s
            check(">= 80% of floor MB/s", f"{share:.0%} of floor", share >= 0.8)
            same = [
                p
                for p in rows
                if p.dataset == "photos" and p.contender == r.contender and p.maxrss_mb
            ]
            if same and r.maxrss_mb is not None:
                grow = r.maxrss_mb - (same[0].maxrss_mb or 0)
                check(
                    "memory does not grow with file size (<= +10 MB vs 2 MiB photos)",
                    f"RSS {grow:+.0f} MB vs photos",
                    grow <= 10,
                )
        if r.dataset == "trickle" and r.p50_ms is not None:
            limit = settle * 1000 + 100
            check(
                f"p50 <= settle + 100 ms ({limit:.0f} ms)",
                f"p50 {r.p50_ms:.0f} ms",
                r.p50_ms <= limit,
            )
        if r.contender.endswith("start-up") and r.wall is not None:
            check(
                "start-up < 2 s",
                f"{r.wall:.2f} s warm, {r.extra['cold_s']:.2f} s cold",
                r.wall < 2.0,
            )
        if r.contender == "mediasortd status" and r.wall is not None:
            check("status < 200 ms", f"{r.wall * 1000:.0f} ms warm", r.wall < 0.2)
        r.met = "yes" if not fails else "no: " + ", ".join(fails)
    return checks


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


HEAD = [
    "set",
    "contender",
    "files",
    "wall s",
    "files/s",
    "MB/s",
    "x floor",
    "CPU s/GB",
    "RSS MB",
    "tree MB",
    "p50/p99 ms",
    "target met",
]


def cells(r: Row) -> list[str]:
    if r.status in ("did not run", "skipped"):
        return [
            r.dataset,
            r.contender,
            f"{r.files:,}" if r.files else "-",
            r.status,
            *["-"] * 7,
            "-",
        ]
    lat = f"{r.p50_ms:.0f}/{r.p99_ms:.0f}" if r.p50_ms is not None and r.p99_ms else "-"
    wall = _f(r.wall, ".3f" if (r.wall or 0) < 1 else ".2f")
    if r.status != "ok":  # a failed run's throughput means nothing
        return [
            r.dataset,
            r.contender,
            f"{r.files:,}" if r.files else "-",
            f"{wall} ({r.status})",
            *["-"] * 4,
            _f(r.maxrss_mb, ".0f"),
            _f(r.tree_rss_mb, ".0f"),
            "-",
            r.met or "-",
        ]
    return [
        r.dataset,
        r.contender,
        f"{r.files:,}" if r.files else "-",
        wall,
        _f(r.files_per_s, ",.0f"),
        _f(r.mb_per_s, ",.0f"),
        _f(r.ratio, ".2f"),
        _f(r.cpu_per_gb, ".1f"),
        _f(r.maxrss_mb, ".0f"),
        _f(r.tree_rss_mb, ".0f"),
        lat,
        r.met or "-",
    ]


def table(rows: list[Row], markdown: bool = False) -> str:
    data = [HEAD] + [cells(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        lines += ["| " + " | ".join(c) + " |" for c in data[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in data) for i in range(len(HEAD))]
    right = {2, 3, 4, 5, 6, 7, 8, 9, 10}

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()

    out = [line(HEAD), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in data[1:]]
    return "\n".join(out)


def notes(rows: list[Row]) -> str:
    return "\n".join(f"- {r.dataset} / {r.contender}: {r.note}" for r in rows if r.note)
