"""Metrics: real ingest results counted and rendered in Prometheus' text format, checked
with prometheus_client's own parser; the real daemon writing its textfile atomically."""

from __future__ import annotations

import os
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from daemon import config
from daemon.app import logs
from daemon.app.metrics import BUCKETS, Gauges, Metrics, write_textfile
from daemon.engine.ingest import Finished, Result, Retry
from tests.helpers import ingestor, jpeg_bytes, make_config, wait_for, write
from tests.system.daemon_harness import Daemon

logs.configure("warning", "json")
WHEN = datetime(2024, 6, 3, 10, 11, 12)


def families(text: str) -> dict[str, Any]:
    """name -> family, parsed by Prometheus' reference parser for the text format."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(fams: dict[str, Any], family: str, name: str | None = None, **labels: str) -> float:
    for s in fams[family].samples:
        if s.name == (name or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError((family, name, labels))


def ingest(cfg: config.Config, paths: list[Path]) -> list[Result]:
    with ingestor(cfg) as ing:
        return [ing.take(os.fsencode(p), True) for p in paths]


def test_real_results_render_as_valid_prometheus_text(tmp_path: Path) -> None:
    cfg, _ = make_config(tmp_path)
    cfg.staging.mkdir(parents=True)
    photos = [write(cfg.inbox / f"IMG_{i}.JPG", jpeg_bytes(WHEN, i)) for i in range(3)]
    dup = write(cfg.inbox / "copy.JPG", jpeg_bytes(WHEN, 0))
    text = write(cfg.inbox / "notes.txt", b"hello")
    results = ingest(cfg, [*photos, dup, text])
    # a real fault: staging is a file, so the copy fails (ENOTDIR) and is retried
    cfg.staging.rmdir()
    cfg.staging.write_bytes(b"")
    [retry] = ingest(cfg, [write(cfg.inbox / "later.jpg", jpeg_bytes(WHEN, 9))])
    assert isinstance(retry, Retry)

    m = Metrics({"filed": 10, "rejected": 1}, 1000, start_time=1_700_000_000.5)
    for r in [*results, retry]:
        m.observe(r)
    gauges = Gauges(
        queue_depth=4,
        inbox_waiting=2,
        jobs_pending=1,
        library_full=False,
        library_free_bytes=123_456,
        exiftool_restarts=1,
        workers=3,
    )
    out = tmp_path / "node" / "mediasortd.prom"
    out.parent.mkdir()
    os.umask(0o077)  # the unit's UMask is 0027; the node exporter must still read it
    try:
        write_textfile(out, m.render(gauges))
    finally:
        os.umask(0o022)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert os.listdir(out.parent) == ["mediasortd.prom"]  # no temporary left

    fams = families(out.read_text())
    assert fams["mediasortd_files"].type == "counter"
    assert sample(fams, "mediasortd_files", "mediasortd_files_total", outcome="filed") == 13
    assert sample(fams, "mediasortd_files", "mediasortd_files_total", outcome="duplicate") == 1
    assert sample(fams, "mediasortd_files", "mediasortd_files_total", outcome="rejected") == 2
    # the three photos, filed (outcome="filed" above is 10 + 3)
    filed_bytes = sum(r.job.size or 0 for r in results[:3] if isinstance(r, Finished))
    assert (
        sample(fams, "mediasortd_filed_bytes", "mediasortd_filed_bytes_total") == 1000 + filed_bytes
    )
    assert (
        sample(fams, "mediasortd_step_failures", "mediasortd_step_failures_total", step="copy") == 1
    )
    assert sample(fams, "mediasortd_exiftool_restarts", "mediasortd_exiftool_restarts_total") == 1
    for name, value in (
        ("mediasortd_queue_depth", 4),
        ("mediasortd_inbox_waiting", 2),
        ("mediasortd_jobs_pending", 1),
        ("mediasortd_library_full", 0),
        ("mediasortd_library_free_bytes", 123_456),
        ("mediasortd_workers", 3),
        ("mediasortd_start_time_seconds", 1_700_000_000.5),
    ):
        assert fams[name].type == "gauge" and sample(fams, name) == value
    hist = fams["mediasortd_ingest_duration_seconds"]
    assert hist.type == "histogram"
    buckets = [
        s for s in hist.samples if s.name.endswith("_bucket") and s.labels["outcome"] == "filed"
    ]
    assert [s.labels["le"] for s in buckets] == [*(str(float(b)) for b in BUCKETS), "+Inf"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and counts[-1] == 3  # cumulative, all three filed
    assert (
        sample(
            fams,
            "mediasortd_ingest_duration_seconds",
            "mediasortd_ingest_duration_seconds_count",
            outcome="filed",
        )
        == 3
    )
    assert (
        sample(
            fams,
            "mediasortd_ingest_duration_seconds",
            "mediasortd_ingest_duration_seconds_sum",
            outcome="filed",
        )
        > 0
    )


def test_the_daemon_writes_its_textfile_atomically_every_interval(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.2)
    prom = tmp_path / "node" / "mediasortd.prom"
    prom.parent.mkdir()
    with open(cfg_path, "a") as f:
        f.write(f'[metrics]\ntextfile = "{prom}"\ninterval_seconds = 0.1\n')
    assert config.load(str(cfg_path)).metrics_textfile == prom
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        fams = families(wait_for(lambda: prom.exists() and prom.read_text(), 10, "metrics"))
        assert sample(fams, "mediasortd_files", "mediasortd_files_total", outcome="filed") == 0
        for i in range(3):
            write(cfg.inbox / f"IMG_{i}.JPG", jpeg_bytes(WHEN, 40 + i))
        write(cfg.inbox / "copy.JPG", jpeg_bytes(WHEN, 40))
        write(cfg.inbox / "notes.txt", b"hello")

        def counted() -> dict[str, Any] | None:
            # every read sees a whole file (written to a temporary, renamed over it)
            fams = families(prom.read_text())
            filed = sample(fams, "mediasortd_files", "mediasortd_files_total", outcome="filed")
            return (
                fams
                if filed == 3
                and sample(fams, "mediasortd_files", "mediasortd_files_total", outcome="rejected")
                == 1
                and sample(fams, "mediasortd_jobs_pending") == 0
                else None
            )

        fams = wait_for(counted, 20, "3 filed, 1 rejected in the metrics")
        assert sample(fams, "mediasortd_files", "mediasortd_files_total", outcome="duplicate") == 1
        assert (
            sample(
                fams,
                "mediasortd_ingest_duration_seconds",
                "mediasortd_ingest_duration_seconds_count",
                outcome="filed",
            )
            == 3
        )
        assert sample(fams, "mediasortd_library_free_bytes") > 0
        assert sample(fams, "mediasortd_start_time_seconds") <= time.time()
        seen = {prom.stat().st_ino}

        def rewritten() -> bool:
            seen.add(prom.stat().st_ino)
            return len(seen) > 2

        wait_for(rewritten, 10, "rewrites")
        assert d.terminate() == 0
    finally:
        d.close()
    assert sample(families(prom.read_text()), "mediasortd_queue_depth") == 0
    assert sorted(os.listdir(prom.parent)) == ["mediasortd.prom"]


def test_only_a_metrics_file_of_ours_is_ever_replaced(tmp_path: Path) -> None:
    """A textfile path that already holds someone else's file (a photo, a config, a
    symlink, a folder of the node exporter's) is left exactly as it is; ours is rewritten."""
    from daemon.app.metrics import HEADER, NotOurs

    m = Metrics({}, 0, start_time=1.0)
    g = Gauges(
        queue_depth=0,
        inbox_waiting=0,
        jobs_pending=0,
        library_full=False,
        library_free_bytes=None,
        exiftool_restarts=0,
        workers=1,
    )
    node = tmp_path / "node"
    node.mkdir()
    theirs = {
        "photo.prom": jpeg_bytes(WHEN, 1),
        "empty.prom": b"",
        "other.prom": b"# HELP node_x something\nnode_x 1\n",
        "almost.prom": HEADER.encode()[:-1] + b"\n",
    }
    for name, data in theirs.items():
        write(node / name, data)
    (node / "target.jpg").write_bytes(b"precious")
    (node / "link.prom").symlink_to(node / "target.jpg")
    os.mkfifo(node / "fifo.prom")
    for name in [*theirs, "link.prom", "fifo.prom"]:
        try:
            write_textfile(node / name, m.render(g))
        except NotOurs as e:
            assert str(node / name) in str(e)
        else:
            raise AssertionError(f"{name} was replaced")
    assert all((node / n).read_bytes() == d for n, d in theirs.items())
    assert (node / "target.jpg").read_bytes() == b"precious"
    assert os.readlink(node / "link.prom") == str(node / "target.jpg")
    assert not [n for n in os.listdir(node) if n.endswith(".tmp")]
    older = node / "older.prom"  # written by a version from before the header
    older.write_text(m.render(g))
    write_textfile(older, m.render(g))
    assert older.read_text().startswith(HEADER + "\n")
    ours = node / "ours.prom"
    write_textfile(ours, m.render(g))
    first = ours.stat().st_ino
    write_textfile(ours, m.render(g))
    assert ours.read_text().startswith(HEADER + "\n") and ours.stat().st_ino != first
    assert "mediasortd_workers" in families(ours.read_text())


def test_the_daemon_never_overwrites_a_foreign_file_at_its_textfile_path(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.2)
    prom = tmp_path / "node" / "mediasortd.prom"
    write(prom, b"# someone else's metrics\nnode_thing 1\n")
    with open(cfg_path, "a") as f:
        f.write(f'[metrics]\ntextfile = "{prom}"\ninterval_seconds = 0.1\n')
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        write(cfg.inbox / "IMG_1.JPG", jpeg_bytes(WHEN, 7))
        wait_for(
            lambda: (
                "metrics.write_failed" in (tmp_path / "daemon.log").read_text()
                and not any(cfg.inbox.iterdir())
            ),
            20,
            "the refusal logged, the photo filed",
        )
        assert d.terminate() == 0
    finally:
        d.close()
    assert prom.read_bytes() == b"# someone else's metrics\nnode_thing 1\n"
    assert "not a metrics file written by mediasortd" in (tmp_path / "daemon.log").read_text()
