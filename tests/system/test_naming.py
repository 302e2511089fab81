"""Names people choose, through the real `mediasortd` (import, adopt, verify, status) on
real files: layout fields with hostile values, RAW+JPEG pairs in a burst, bursts in
sub-second order, undated files, layouts refused at load (issues 13.1, 13.2, 16.2)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from PIL import Image

from daemon.store import db
from tests.helpers import check_consistent, cli, make_config, tree_hashes, write
from tests.integration import media_factory
from tests.integration.media_factory import photo

WHEN = datetime(2023, 5, 6, 7, 8, 9)
STEM = "2023-05/2023-05-06 07.08.09"


def raws(paths: list[Path], when: datetime, seed: int = 0) -> dict[Path, bytes]:
    """Real DNG files (TIFF with DNGVersion, tagged by the real exiftool), one per path."""
    for i, p in enumerate(paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        tif = p.with_suffix(".tif")
        Image.new("RGB", (8, 8), (i * 40 % 256, seed, 9)).save(tif, format="TIFF")
        tif.rename(p)
    media_factory.write_tags(
        {
            p: {
                "DNGVersion": "1.4.0.0",
                "Make": "Canon",
                "DateTimeOriginal": when.strftime("%Y:%m:%d %H:%M:%S"),
            }
            for p in paths
        }
    )
    return {p: p.read_bytes() for p in paths}


def catalog_paths(cfg_path: Path) -> dict[str, str]:
    """original name -> library path, from `find --json`."""
    out = cli(cfg_path, "find", "--json", "--limit", "1000", "*")
    assert out.returncode == 0, out.stderr
    return {
        r["original_name"]: r["path"]
        for f in json.loads(out.stdout)
        for r in f["results"]
        if r["outcome"] == "filed"
    }


def test_layout_fields_are_plain_cleaned_values(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(
        tmp_path,
        layout="{source|elsewhere}/{make|nocam}/{model}/{kind}/{original}{ext}",
        undated="mtime",
    )  # the video ffmpeg makes has no date
    inbox = tmp_path / "inbox"
    files = {
        inbox / "bob-phone" / "IMG_1.JPG": photo(WHEN, 1, make="Canon", model="EOS R5"),
        # hostile camera tags and names: '/', '..', control bytes, leading dots, length
        inbox / "bob-phone" / "..\x1b[31mevil.jpg": photo(
            WHEN, 2, make="../../etc", model="\x01." + "é" * 200
        ),
        inbox / "bob-phone" / ".hidden.jpg": photo(WHEN, 3),
        inbox / "top.jpg": photo(WHEN, 4, make="/", model=".."),
    }
    for p, data in files.items():
        write(p, data)
    video = media_factory.video(inbox / "bob-phone" / "clip.mp4")
    files[video] = video.read_bytes()
    done = cli(cfg_path, "import", str(inbox))
    assert done.returncode == 0, done.stderr
    names = catalog_paths(cfg_path)
    assert names["IMG_1.JPG"] == "bob-phone/Canon/EOS R5/photo/IMG_1.jpg"
    evil = names["..\x1b[31mevil.jpg"]
    assert evil.startswith("bob-phone/_.._etc/")
    model, original = evil.split("/")[2], evil.split("/")[4]
    assert model.startswith("_.") and len(model.encode()) <= 64
    model.encode("utf-8")  # cut between characters
    assert original == "_[31mevil.jpg"
    assert names[".hidden.jpg"] == "bob-phone/nocam/unknown/photo/hidden.jpg"
    assert names["top.jpg"] == "elsewhere/_/unknown/photo/top.jpg"  # not in a sub-folder
    assert names["clip.mp4"] == "bob-phone/nocam/unknown/video/clip.mp4"
    for rel in tree_hashes(cfg.library):
        assert not any(part.startswith(".") or part in ("", "..") for part in rel.split("/"))
    check_consistent(cfg, files, move=False)


def test_raw_and_jpeg_pairs_keep_one_stem_in_a_burst(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    card = tmp_path / "card" / "DCIM"
    files = raws([card / f"IMG_{i}.DNG" for i in range(4)], WHEN)
    for i in range(4):  # four pairs shot in one second, and a lone JPEG in it too
        files[card / f"IMG_{i}.JPG"] = photo(WHEN, 10 + i)
    files[card / "OTHER.JPG"] = photo(WHEN, 20)
    for p, data in files.items():
        write(p, data)
    done = cli(cfg_path, "import", str(card))
    assert done.returncode == 0, done.stderr
    assert "9 filed" in done.stdout
    names = catalog_paths(cfg_path)
    stems = {}
    for i in range(4):
        raw, jpg = names[f"IMG_{i}.DNG"], names[f"IMG_{i}.JPG"]
        assert raw.endswith(".dng") and jpg.endswith(".jpg")
        assert raw[:-4] == jpg[:-4], (raw, jpg)  # one stem per pair: never x.1.jpg
        stems[i] = raw[:-4]
    assert len(set(stems.values()) | {names["OTHER.JPG"][:-4]}) == 5  # each its own .N
    assert all(s == STEM or s.startswith(STEM + ".") for s in stems.values())
    # the JPEGs of a second burst arrive in a later import: they find their RAW's stem
    later = raws([tmp_path / "card2" / f"B_{i}.DNG" for i in range(3)], WHEN, seed=1)
    assert cli(cfg_path, "import", str(tmp_path / "card2")).returncode == 0
    for i in range(3):
        shot = photo(WHEN, 30 + i)
        later[write(tmp_path / "card2" / f"B_{i}.JPG", shot)] = shot
    assert cli(cfg_path, "import", str(tmp_path / "card2")).returncode == 0
    names = catalog_paths(cfg_path)
    for i in range(3):
        assert names[f"B_{i}.DNG"][:-4] == names[f"B_{i}.JPG"][:-4]
    check_consistent(cfg, {**files, **later}, move=False)


def test_a_burst_is_numbered_in_sub_second_order(tmp_path: Path) -> None:
    _cfg, cfg_path = make_config(tmp_path, workers=1)
    src = tmp_path / "burst"
    # names sort against the shots' order: z was taken first
    for name, subsec in (("a.jpg", "90"), ("m.jpg", "50"), ("z.jpg", "05")):
        write(src / name, photo(WHEN, ord(name[0]), subsec=subsec))
    assert cli(cfg_path, "import", str(src)).returncode == 0
    names = catalog_paths(cfg_path)
    assert [names[n] for n in ("z.jpg", "m.jpg", "a.jpg")] == [
        f"{STEM}.jpg",
        f"{STEM}.1.jpg",
        f"{STEM}.2.jpg",
    ]


def test_undated_files_go_to_their_own_folder(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "scans"
    files = {
        write(src / "1998" / "scan001.jpg", photo(None, 1)): b"",
        write(src / "other" / "scan001.jpg", photo(None, 2)): b"",
        write(src / "IMG_20200101_101010.jpg", photo(None, 3)): b"",  # dated by name
        write(src / "dated.jpg", photo(WHEN, 4)): b"",
    }
    files = {p: p.read_bytes() for p in files}
    done = cli(cfg_path, "import", str(src))
    assert done.returncode == 0, done.stderr
    lib = set(tree_hashes(cfg.library))
    assert {"undated/scan001.jpg", "undated/scan001.1.jpg"} <= lib
    assert "2020-01/2020-01-01 10.10.10.jpg" in lib and f"{STEM}.jpg" in lib
    info = json.loads(cli(cfg_path, "status", "--json").stdout)
    assert info["undated_files"] == 2
    assert "(2 undated, in undated/)" in cli(cfg_path, "status").stdout
    check_consistent(cfg, files, move=False)


def test_undated_mtime_and_reject(tmp_path: Path) -> None:
    mtime = datetime(2001, 2, 3, 4, 5, 6).timestamp()
    for mode in ("mtime", "reject"):
        (tmp_path / mode).mkdir()
        cfg, cfg_path = make_config(tmp_path / mode, undated=mode)
        scan = write(tmp_path / mode / "src" / "scan.jpg", photo(None, 5))
        os.utime(scan, (mtime, mtime))
        done = cli(cfg_path, "import", "--move", str(scan.parent))
        assert done.returncode == 0, done.stderr
        lib = set(tree_hashes(cfg.library))
        if mode == "mtime":
            assert lib == {"2001-02/2001-02-03 04.05.06.jpg"}
        else:
            assert lib == set() and (cfg.rejected / "scan.jpg").exists()
            hist = cli(cfg_path, "history", "--json")
            assert "no capture date" in hist.stdout


def test_dangerous_layouts_are_refused_at_load(tmp_path: Path) -> None:
    for i, layout in enumerate(
        (
            "{month:/>1.0}{day:.>2.0}{ext}",
            "{year}/{camera}{ext}",
            "{year}/../{ext}",
            "{year}/{original}",
            "{year}/{ext}",
            "/abs/{year}{ext}",
            "{year}/{model|a/b}{ext}",
        )
    ):
        (tmp_path / str(i)).mkdir()
        _, cfg_path = make_config(tmp_path / str(i))
        text = cfg_path.read_text().replace(
            "[ingest]", f"[ingest]\nlayout = {layout!r}".replace("'", '"')
        )
        cfg_path.write_text(text)
        out = cli(cfg_path, "status")
        assert out.returncode == 78, (layout, out.stderr)
        assert "ingest.layout" in out.stderr, out.stderr


def test_adopt_and_verify_a_library_written_with_another_layout(tmp_path: Path) -> None:
    layout = "{make|nocam}/{year}/{month}/{original} {hour}{minute}{second}{ext}"
    cfg, cfg_path = make_config(tmp_path, layout=layout)
    src = tmp_path / "src"
    for i in range(4):
        write(src / f"P{i}.jpg", photo(WHEN, 40 + i, make="Nikon" if i % 2 else None))
    assert cli(cfg_path, "import", str(src)).returncode == 0
    lib = tree_hashes(cfg.library)
    assert "Nikon/2023/05/P1 070809.jpg" in lib and "nocam/2023/05/P0 070809.jpg" in lib
    assert cli(cfg_path, "verify", "--deep").returncode == 0
    # a new catalog adopts that library where it stands, and finds it consistent
    for name in os.listdir(cfg.state_dir):
        os.unlink(cfg.state_dir / name)
    adopted = cli(cfg_path, "adopt", str(cfg.library))
    assert adopted.returncode == 0, adopted.stderr
    assert "4 catalogued" in adopted.stdout
    assert tree_hashes(cfg.library) == lib
    verify = cli(cfg_path, "verify", "--deep")
    assert verify.returncode == 0, verify.stdout
    conn = db.connect(cfg.catalog, readonly=True)
    try:
        assert {r[0] for r in conn.execute("SELECT path FROM files")} == set(lib)
    finally:
        conn.close()


def test_status_counts_are_net_of_undo(tmp_path: Path) -> None:
    _cfg, cfg_path = make_config(tmp_path)
    for i in range(10):
        write(tmp_path / ("a" if i < 7 else "b") / f"P{i}.jpg", photo(WHEN, 60 + i))
    assert cli(cfg_path, "import", str(tmp_path / "a")).returncode == 0
    assert cli(cfg_path, "import", str(tmp_path / "b")).returncode == 0
    batch = json.loads(cli(cfg_path, "history", "--json").stdout)[0]["batch"]
    undone = cli(cfg_path, "undo", batch)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    info = json.loads(cli(cfg_path, "status", "--json").stdout)
    assert info["outcomes"]["filed"] == info["library_files"] == 7
    assert info["outcomes"]["undone"] == 3 and info["today"]["filed"] == 7
    assert "7 filed" in cli(cfg_path, "status").stdout


def test_the_daemon_names_by_source(tmp_path: Path) -> None:
    """{source}: the inbox sub-folder with one inbox, the inbox's own name with several;
    the real daemon, files dropped in while it runs."""
    from tests.helpers import wait_for
    from tests.system.daemon_harness import Daemon

    layout = "{source|inbox}/{original}{ext}"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, one_path = make_config(tmp_path / "one", layout=layout, settle_seconds=0.2)
    two, two_path = make_config(tmp_path / "two", layout=layout, settle_seconds=0.2)
    bob, alice = tmp_path / "two" / "bob-phone", tmp_path / "two" / "alice-phone"
    bob.mkdir()
    alice.mkdir()
    text = two_path.read_text()
    two_path.write_text(text.replace(f'inbox = "{two.inbox}"', f'inbox = ["{bob}", "{alice}"]'))
    daemons = [Daemon(tmp_path / "one", one_path), Daemon(tmp_path / "two", two_path)]
    try:
        for d in daemons:
            d.ready()
        write(one.inbox / "bob-phone" / "DCIM" / "a.jpg", photo(WHEN, 80))
        write(one.inbox / "b.jpg", photo(WHEN, 81))
        write(bob / "DCIM" / "c.jpg", photo(WHEN, 82))
        write(alice / "d.jpg", photo(WHEN, 83))
        wait_for(lambda: len(tree_hashes(one.library)) == 2, 30, "one inbox filed")
        wait_for(lambda: len(tree_hashes(two.library)) == 2, 30, "two inboxes filed")
        assert set(tree_hashes(one.library)) == {"bob-phone/a.jpg", "inbox/b.jpg"}
        assert set(tree_hashes(two.library)) == {"bob-phone/c.jpg", "alice-phone/d.jpg"}
        assert all(d.terminate() == 0 for d in daemons)
    finally:
        for d in daemons:
            d.close()
