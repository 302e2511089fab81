"""`adopt` never moves or deletes a user's file, `verify --repair` tells a user's edit from
bit rot, and both handle every name Linux allows and quarantine folders on another
filesystem. The real command on real libraries, real ExifTool edits, a real tmpfs."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import apsw
import pytest

from daemon.app import report
from tests.helpers import cli, jpeg_bytes, make_config, rot, rows, sha, tree_hashes, write
from tests.system.adoptable import BASE, sorted_library

OTHER_FS = Path("/dev/shm")


def tree(root: Path) -> dict[bytes, str]:
    """Every file under root (hidden ones too), by its name's bytes: what adopt must keep
    (the library's catalog marker aside: the catalog claims the library it adopts)."""
    out = {}
    for folder, _, files in os.walk(os.fsencode(root)):
        for name in files:
            p = os.path.join(folder, name)
            rel = os.path.relpath(p, os.fsencode(root))
            if rel == report.MARKER:
                continue
            with open(p, "rb") as f:
                out[rel] = sha(f.read())
    return out


def test_adopt_moves_and_deletes_nothing(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    files = sorted_library(cfg)
    before = tree(cfg.library)
    r = cli(cfg_path, "adopt", str(cfg.library))
    assert r.returncode == 0, r.stderr
    assert tree(cfg.library) == before, "adopt moved, removed or changed a file"
    assert "adopted: 3 catalogued, 3 companion, 1 copy, 3 left" in r.stdout, r.stdout
    assert "copy         Albums/Trip/IMG_1 copy.JPG: same content as 2019/05/IMG_1.JPG" in r.stdout
    for left in ("notes.txt", "orphan.xmp", "empty.jpg"):
        assert f"left         2019/05/{left}:" in r.stdout
    companions = dict(
        rows(cfg, "SELECT path, date_source FROM files WHERE date_source LIKE 'partner:%'")
    )
    assert companions == {
        "2019/05/IMG_1.JPG.xmp": "partner:2019/05/IMG_1.JPG",
        "2019/05/IMG_2.xmp": "partner:2019/05/IMG_2.jpg",
        "2019/05/IMG_3.jpg.json": "partner:2019/05/IMG_3.jpg",
    }
    # kept files are no strays: verify is content, repair has nothing to do
    deep = cli(cfg_path, "verify", "--deep")
    assert deep.returncode == 0, deep.stdout
    fixed = cli(cfg_path, "verify", "--repair")
    assert fixed.returncode == 0 and "repaired 0 problem(s)" in fixed.stdout, fixed.stdout
    assert tree(cfg.library) == before
    again = cli(cfg_path, "adopt", str(cfg.library))
    assert again.stdout.startswith("adopted: 0 catalogued, 0 copy, 0 left"), again.stdout
    # the album copy's content is known: an import of it is a duplicate
    src = write(tmp_path / "card" / "DSC.JPG", files["2019/05/IMG_1.JPG"])
    assert "1 duplicate" in cli(cfg_path, "import", str(src.parent)).stdout
    # a kept file the user deletes later: verify says so, repair forgets it
    (cfg.library / "2019/05/notes.txt").unlink()
    gone = cli(cfg_path, "verify")
    assert gone.returncode == 1 and "kept_missing   2019/05/notes.txt" in gone.stdout
    assert "forgotten       2019/05/notes.txt" in cli(cfg_path, "verify", "--repair").stdout
    assert cli(cfg_path, "verify", "--deep").returncode == 0


def test_adopt_quarantines_album_copies_only_when_asked(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    sorted_library(cfg)
    r = cli(cfg_path, "adopt", "--quarantine-copies", str(cfg.library))
    assert r.returncode == 0, r.stderr
    assert "1 quarantined" in r.stdout and "3 left" in r.stdout
    assert not (cfg.library / "Albums/Trip/IMG_1 copy.JPG").exists()
    assert (cfg.duplicates / "Albums/Trip/IMG_1 copy.JPG").exists()
    assert (cfg.library / "2019/05/notes.txt").exists()
    assert cli(cfg_path, "verify", "--deep").returncode == 0


def later(path: Path) -> None:
    """The mtime an edit gives, whatever the clock's resolution."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


@pytest.mark.parametrize("old_rows", [False, True], ids=["mtime recorded", "rows from before"])
def test_repair_tells_an_edit_from_bit_rot(tmp_path: Path, old_rows: bool) -> None:
    cfg, cfg_path = make_config(tmp_path)
    card = tmp_path / "card"
    for i in range(4):
        write(card / f"IMG_{i}.JPG", jpeg_bytes(BASE + timedelta(minutes=i), 10 + i))
    write(card / "IMG_0.JPG.xmp", b"<x:xmpmeta>rating 1</x:xmpmeta>")
    assert cli(cfg_path, "import", str(card)).returncode == 0
    if old_rows:  # a catalog from before the mtime was recorded
        conn = apsw.Connection(str(cfg.catalog))
        conn.execute("UPDATE files SET mtime_ns = NULL")
        conn.close()
    assert all(r[0] is None for r in rows(cfg, "SELECT mtime_ns FROM files")) == old_rows
    lib = sorted(p for p in tree_hashes(cfg.library) if p.endswith(".jpg"))
    rated, same_size, rotten, untouched = (cfg.library / p for p in lib)
    xmp = cfg.library / (lib[0] + ".xmp")
    # a rating written with ExifTool (size and mtime change)
    subprocess.run(
        ["exiftool", "-q", "-overwrite_original", "-XMP:Rating=5", str(rated)], check=True
    )
    later(rated)
    # bytes changed in place by a program, size the same, mtime new
    data = bytearray(same_size.read_bytes())
    data[-3] ^= 0x01
    same_size.write_bytes(bytes(data))
    later(same_size)
    xmp.write_bytes(b"<x:xmpmeta>rating 5, edited in darktable</x:xmpmeta>")
    later(xmp)
    rot(rotten)
    before = tree(cfg.library)
    catalog_before = rows(cfg, "SELECT * FROM files ORDER BY id")

    dry = cli(cfg_path, "verify", "--repair", "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    for edited in (rated, same_size, xmp):
        rel = str(edited.relative_to(cfg.library))
        assert f"would update    {rel}: " in dry.stdout and "an edit" in dry.stdout
    assert f"would quarantine {rotten.relative_to(cfg.library)}" in dry.stdout
    assert "bit rot" in dry.stdout and "nothing changed" in dry.stdout
    assert tree(cfg.library) == before and not cfg.rejected.exists()
    assert rows(cfg, "SELECT * FROM files ORDER BY id") == catalog_before

    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for edited in (rated, same_size, xmp):
        rel = str(edited.relative_to(cfg.library))
        assert out.index(f"edit            {rel}") < out.index(f"edited          {rel}")
    rot_rel = str(rotten.relative_to(cfg.library))
    assert out.index(f"rot             {rot_rel}") < out.index(f"rot_quarantined {rot_rel}")
    after = tree(cfg.library)
    for edited in (rated, same_size, xmp, untouched):
        assert edited.exists(), f"{edited} was taken away"
    assert os.fsencode(rot_rel) not in after
    assert (cfg.rejected / "bitrot" / rot_rel).exists()
    history = rows(cfg, "SELECT path, sha256 FROM file_history ORDER BY path")
    assert [h[0] for h in history] == sorted(
        str(e.relative_to(cfg.library)) for e in (rated, same_size, xmp)
    )
    filed = {str(r[3]): r[1] for r in catalog_before}
    assert all(h[1] == filed[h[0]] for h in history)
    verify = json.loads(cli(cfg_path, "verify", "--deep", "--json").stdout)
    assert verify["ok"], verify
    status = json.loads(cli(cfg_path, "status", "--json").stdout)
    assert status["library_bytes"] == sum(
        r[0] for r in rows(cfg, "SELECT size FROM files")
    )  # the tally follows edited sizes


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    if not OTHER_FS.is_dir() or os.stat(OTHER_FS).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip(f"{OTHER_FS} is not another filesystem here")
    folder = Path(tempfile.mkdtemp(dir=OTHER_FS, prefix="mediasortd-test-"))
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_non_utf8_names_and_quarantine_on_another_filesystem(
    tmp_path: Path, other_fs: Path
) -> None:
    cfg, cfg_path = make_config(tmp_path)
    text = cfg_path.read_text().replace(
        "[paths]\n", f'[paths]\nduplicates = "{other_fs}/dups"\nrejected = "{other_fs}/rej"\n'
    )
    cfg_path.write_text(text)
    lib = os.fsencode(cfg.library)
    folder = os.path.join(lib, b"2019 \xe9t\xe9")
    os.makedirs(folder)
    names = {
        b"caf\xe9.jpg": jpeg_bytes(BASE, 50),
        b"\xff\xfe.jpg": jpeg_bytes(BASE, 51),
        b"r\xe9sum\xe9.txt": b"latin-1 notes",
        b"caf\xe9.jpg.xmp": b"<x:xmpmeta/>",
        b"copy \xe9.jpg": jpeg_bytes(BASE, 50),
    }
    for name, data in names.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
    before = tree(cfg.library)
    r = cli(cfg_path, "adopt", str(cfg.library))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "adopted: 2 catalogued, 1 companion, 1 copy, 1 left" in r.stdout, r.stdout
    assert "2019 \\xe9t\\xe9/r\\xe9sum\\xe9.txt" in r.stdout
    assert tree(cfg.library) == before
    ok = cli(cfg_path, "verify", "--deep")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # rot in a non-UTF-8 name, a stray duplicate and a stray non-media file: all go to
    # the other filesystem, copied, fsynced, then removed here; nothing is overwritten
    rot(Path(os.fsdecode(os.path.join(folder, b"\xff\xfe.jpg"))))
    with open(os.path.join(folder, b"dup \xe0.jpg"), "wb") as f:
        f.write(jpeg_bytes(BASE, 50))
    with open(os.path.join(folder, b"junk \xe0.bin"), "wb") as f:
        f.write(b"\x00junk")
    write(other_fs / "rej" / "bitrot" / "2019 \udce9t\udce9" / "placeholder", b"")
    rep = cli(cfg_path, "verify", "--repair")
    assert rep.returncode == 0 and "Traceback" not in rep.stderr, rep.stdout + rep.stderr
    assert "rot_quarantined 2019 \\xe9t\\xe9/\\xff\\xfe.jpg" in rep.stdout
    assert "quarantined     2019 \\xe9t\\xe9/dup \\xe0.jpg" in rep.stdout
    assert "rejected        2019 \\xe9t\\xe9/junk \\xe0.bin" in rep.stdout
    dest = os.fsencode(other_fs)
    assert os.path.exists(os.path.join(dest, b"rej/bitrot/2019 \xe9t\xe9/\xff\xfe.jpg"))
    with open(os.path.join(dest, b"dups/2019 \xe9t\xe9/dup \xe0.jpg"), "rb") as f:
        assert f.read() == jpeg_bytes(BASE, 50)
    assert os.path.exists(os.path.join(dest, b"rej/2019 \xe9t\xe9/junk \xe0.bin"))
    for gone in (b"\xff\xfe.jpg", b"dup \xe0.jpg", b"junk \xe0.bin"):
        assert not os.path.lexists(os.path.join(folder, gone))
    assert not [
        n
        for n in os.listdir(os.path.join(dest, b"dups/2019 \xe9t\xe9"))
        if n.startswith(b".mediasortd")
    ]
    assert cli(cfg_path, "verify", "--deep").returncode == 0


def test_rot_in_a_file_with_an_album_copy_leaves_the_row_on_the_intact_copy(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path)
    sorted_library(cfg)
    assert cli(cfg_path, "adopt", str(cfg.library)).returncode == 0
    rot(cfg.library / "2019/05/IMG_1.JPG")
    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "its row now stands for the intact copy Albums/Trip/IMG_1 copy.JPG" in r.stdout
    assert (cfg.rejected / "bitrot/2019/05/IMG_1.JPG").exists()
    assert (cfg.library / "Albums/Trip/IMG_1 copy.JPG").read_bytes() == jpeg_bytes(BASE, 1)
    assert rows(
        cfg, f"SELECT path, missing_since FROM files WHERE sha256 = '{sha(jpeg_bytes(BASE, 1))}'"
    ) == [("Albums/Trip/IMG_1 copy.JPG", None)]
    assert cli(cfg_path, "verify", "--deep").returncode == 0
