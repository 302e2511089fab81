"""Companions travel together: sidecars (XMP, AAE, Takeout JSON) and Live Photo halves are
filed beside their photo under its new base name; a sidecar whose photo never comes is
rejected with the reason, never dropped."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from daemon.store import db
from tests.helpers import cli, jpeg_bytes, make_config, tree_hashes, wait_for, write
from tests.system.daemon_harness import Daemon

WHEN = datetime(2023, 8, 9, 10, 11, 12)
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>\n'


def mov(path: Path, utc: str) -> bytes:
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=blue:s=16x16:d=0.1",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", f"-QuickTime:CreateDate={utc}", str(path)],
        check=True,
    )
    return path.read_bytes()


def test_sidecars_live_photos_and_takeout_json(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path, timezone="UTC")
    src = tmp_path / "card"
    write(src / "IMG_0001.JPG", jpeg_bytes(WHEN, 1))
    write(src / "IMG_0001.JPG.xmp", XMP + b"1")  # full-name sidecar
    write(src / "IMG_0001.AAE", b"<plist>edits</plist>")  # Apple edits, by stem
    write(src / "IMG_0002.JPG", jpeg_bytes(WHEN, 2))  # same second: .1
    write(src / "IMG_0002.xmp", XMP + b"2")  # stem sidecar follows the .1 name
    # a Live Photo: the still and its motion half, the video's own time 2 s later
    write(src / "IMG_0003.JPG", jpeg_bytes(datetime(2023, 8, 9, 11, 0, 0), 3))
    mov(src / "IMG_0003.MOV", "2023:08:09 11:00:02")
    # Google Takeout: a photo with no date of its own, dated by its JSON
    write(src / "takeout" / "PXL_photo.jpg", jpeg_bytes(None, 4))
    write(
        src / "takeout" / "PXL_photo.jpg.supplemental-metadata.json",
        json.dumps(
            {"title": "PXL_photo.jpg", "photoTakenTime": {"timestamp": "1600000000"}}
        ).encode(),
    )
    write(src / "lonely.xmp", XMP + b"lonely")  # its photo is nowhere
    r = cli(cfg_path, "import", "--move", str(src))
    assert r.returncode == 0, r.stderr
    taken = datetime.fromtimestamp(1_600_000_000, UTC).strftime("%Y-%m/%Y-%m-%d %H.%M.%S")
    conn = db.connect(cfg.catalog)
    try:
        where = dict(conn.execute("SELECT original_name, path FROM files"))
    finally:
        conn.close()
    # IMG_0001 and IMG_0002 share a second: which gets ".1" depends on the workers' race
    assert {where["IMG_0001.JPG"], where["IMG_0002.JPG"]} == {
        "2023-08/2023-08-09 10.11.12.jpg",
        "2023-08/2023-08-09 10.11.12.1.jpg",
    }
    one, two = where["IMG_0001.JPG"][:-4], where["IMG_0002.JPG"][:-4]
    assert sorted(tree_hashes(cfg.library)) == sorted(
        [
            f"{one}.jpg",
            f"{one}.jpg.xmp",
            f"{one}.aae",
            f"{two}.jpg",
            f"{two}.xmp",
            "2023-08/2023-08-09 11.00.00.jpg",
            "2023-08/2023-08-09 11.00.00.mov",
            f"{taken}.jpg",
            f"{taken}.jpg.json",
        ]
    )
    assert (cfg.rejected / "lonely.xmp").exists()
    conn = db.connect(cfg.catalog)
    try:
        sources = dict(conn.execute("SELECT original_name, date_source FROM files"))
        reason = conn.execute("SELECT error FROM jobs WHERE outcome = 'rejected'").fetchall()
    finally:
        conn.close()
    assert sources["PXL_photo.jpg"] == "Takeout:photoTakenTime"
    assert sources["IMG_0003.MOV"] == "partner:2023-08/2023-08-09 11.00.00.jpg"
    assert reason == [("a sidecar whose photo is not in the library",)]
    assert cli(cfg_path, "verify", "--deep").returncode == 0


def test_daemon_waits_for_a_photo_whose_sidecar_came_first(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path, settle_seconds=0.2, companion_grace_seconds=30.0)
    d = Daemon(tmp_path, cfg_path)
    try:
        d.ready()
        write(cfg.inbox / "DSC_9.JPG.xmp", XMP)

        def waiting() -> bool:
            conn = db.connect(cfg.catalog)
            try:
                return bool(
                    conn.execute(
                        "SELECT 1 FROM jobs WHERE error LIKE 'waiting for%' OR step = 'copied'"
                    ).fetchall()
                )
            finally:
                conn.close()

        wait_for(waiting, 15, "the sidecar to wait for its photo")
        write(cfg.inbox / "DSC_9.JPG", jpeg_bytes(WHEN, 9))
        wait_for(
            lambda: (
                sorted(tree_hashes(cfg.library))
                == ["2023-08/2023-08-09 10.11.12.jpg", "2023-08/2023-08-09 10.11.12.jpg.xmp"]
            ),
            30,
            "photo and sidecar filed together",
        )
        assert d.terminate() == 0
    finally:
        d.close()
    assert not os.listdir(cfg.inbox)
