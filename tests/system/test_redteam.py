"""Red-team findings against issues 12, 13 and 16: each test is a way the new code could
still fail, lose or misplace a file, through the real `mediasortd` on real files."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from tests.helpers import (
    check_consistent,
    cli,
    jpeg_bytes,
    make_config,
    rows,
    sha,
    tree_hashes,
    write,
)
from tests.integration import media_factory
from tests.integration.media_factory import photo
from tests.system.adoptable import BASE, sorted_library

WHEN = datetime(2023, 5, 6, 7, 8, 9)  # a camera's date (test_naming's)


def test_values_that_clean_to_dots_still_file(tmp_path: Path) -> None:
    """A name or tag like ' . .x' or '.. ..' must not clean to a hidden, '.' or '..'
    part: stripping blanks and leading dots once left one of them behind, and the file
    failed instead of being filed."""
    cfg, cfg_path = make_config(tmp_path, layout="{make}/{model}/{original}{ext}", undated="folder")
    src = tmp_path / "src"
    files = {
        write(src / " . .x.jpg", photo(WHEN, 1, make=". .", model=".. ..")): b"",
        write(src / " . .scan.jpg", photo(None, 2)): b"",
    }  # undated: undated/{original}
    files = {p: p.read_bytes() for p in files}
    done = cli(cfg_path, "import", str(src))
    assert done.returncode == 0, done.stdout + done.stderr
    lib = set(tree_hashes(cfg.library))
    assert lib == {"unknown/unknown/x.jpg", "undated/scan.jpg"}, lib
    check_consistent(cfg, files, move=False)


def test_a_hostile_takeout_json_does_not_fail_its_photo(tmp_path: Path) -> None:
    """A Takeout JSON nested deeper than the JSON decoder's recursion limit beside an
    undated photo: the photo failed with a RecursionError (logged as a bug) instead of
    being filed without the JSON's date."""
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "src"
    files = {
        write(src / "IMG_1.JPG", photo(None, 1)): b"",
        write(src / "IMG_1.JPG.json", b'{"photoTakenTime": ' + b"[" * 100_000): b"",
    }
    files = {p: p.read_bytes() for p in files}
    done = cli(cfg_path, "import", str(src))
    assert "ingest.bug" not in done.stderr and "failed" not in done.stdout, done.stderr
    assert set(tree_hashes(cfg.library)) == {"undated/IMG_1.jpg", "undated/IMG_1.jpg.json"}
    check_consistent(cfg, files, move=False)


def test_a_file_deleted_beside_its_album_copy_is_not_filed_twice(tmp_path: Path) -> None:
    """adopt recorded an album copy; the user deletes the dated file. repair marked the row
    missing although the album copy still has the bytes: the next import of those bytes
    filed them again (a second copy in the library), and the album copy, its record
    gone with the row, turned into a stray."""
    cfg, cfg_path = make_config(tmp_path)
    sorted_library(cfg)
    assert cli(cfg_path, "adopt", str(cfg.library)).returncode == 0
    (cfg.library / "2019/05/IMG_1.JPG").unlink()
    dry = cli(cfg_path, "verify", "--repair", "--dry-run")
    assert "would move its row to the intact copy Albums/Trip/IMG_1 copy.JPG" in dry.stdout
    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(
        cfg, f"SELECT path, missing_since FROM files WHERE sha256 = '{sha(jpeg_bytes(BASE, 1))}'"
    ) == [("Albums/Trip/IMG_1 copy.JPG", None)]
    before = tree_hashes(cfg.library)
    write(tmp_path / "phone" / "IMG_1.JPG", jpeg_bytes(BASE, 1))
    done = cli(cfg_path, "import", str(tmp_path / "phone"))
    assert done.returncode == 0 and "1 duplicate" in done.stdout, done.stdout + done.stderr
    assert tree_hashes(cfg.library) == before
    v = cli(cfg_path, "verify", "--deep")
    assert v.returncode == 0, v.stdout


def test_a_sidecar_of_a_photo_adopted_under_a_non_utf8_name(tmp_path: Path) -> None:
    """adopt catalogues names that are not UTF-8 (stored as BLOBs). A phone then syncs the
    same photo (a duplicate of that row) with its sidecar: the sidecar is filed beside
    the adopted photo, whose name is not UTF-8. Reserving that name looked it up as text
    and failed with a UnicodeEncodeError."""
    cfg, cfg_path = make_config(tmp_path)
    lib = os.fsencode(cfg.library)
    os.makedirs(os.path.join(lib, b"2019"))
    with open(os.path.join(lib, b"2019", b"caf\xe9.jpg"), "wb") as f:
        f.write(jpeg_bytes(BASE, 5))
    assert cli(cfg_path, "adopt", str(cfg.library)).returncode == 0
    phone = tmp_path / "phone"
    write(phone / "IMG_5.JPG", jpeg_bytes(BASE, 5))
    write(phone / "IMG_5.JPG.xmp", b"<x:xmpmeta>rating 5</x:xmpmeta>")
    done = cli(cfg_path, "import", str(phone))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ingest.bug" not in done.stderr, done.stderr
    assert sorted(os.listdir(os.path.join(lib, b"2019"))) == [b"caf\xe9.jpg", b"caf\xe9.jpg.xmp"]
    v = cli(cfg_path, "verify", "--deep")
    assert v.returncode == 0, v.stdout


def test_links_and_fifos_in_an_adopted_library_are_no_strays(tmp_path: Path) -> None:
    """adopt records what is not a photo or video so that verify does not call it a stray;
    symbolic links (to outside the library, to a library file) and FIFOs were skipped
    unrecorded instead, and verify failed on them forever (repair skipped them too)."""
    cfg, cfg_path = make_config(tmp_path)
    lib = cfg.library
    write(lib / "2019" / "a.jpg", jpeg_bytes(BASE, 1))
    os.symlink("/etc/passwd", lib / "2019" / "out.jpg")
    os.symlink("a.jpg", lib / "2019" / "in.jpg")
    os.mkfifo(lib / "2019" / "fifo.jpg")
    r = cli(cfg_path, "adopt", str(lib))
    assert r.returncode == 0, r.stdout + r.stderr
    v = cli(cfg_path, "verify")
    assert v.returncode == 0, v.stdout
    assert sorted(os.listdir(lib / "2019")) == ["a.jpg", "fifo.jpg", "in.jpg", "out.jpg"]
    assert os.readlink(lib / "2019" / "out.jpg") == "/etc/passwd"
    # a link that appears later is a stray: repair moves it (never its target) to rejected
    os.symlink("/etc/hostname", lib / "2019" / "late.jpg")
    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(cfg.rejected / "2019" / "late.jpg") == "/etc/hostname"
    assert Path("/etc/hostname").exists() and not os.path.lexists(lib / "2019" / "late.jpg")


def test_a_file_named_twice_is_counted_once(tmp_path: Path) -> None:
    """`import DIR DIR/a.jpg DIR/`: the pool files each path once, but the summary and the
    progress bar counted every mention ('imported 5 file(s): 2 filed'), so the bar never
    reached its end and the summary did not add up."""
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "src"
    files = {
        write(src / "a.jpg", jpeg_bytes(BASE, 1)): jpeg_bytes(BASE, 1),
        write(src / "b.jpg", jpeg_bytes(BASE, 2)): jpeg_bytes(BASE, 2),
    }
    done = cli(cfg_path, "import", str(src), str(src / "a.jpg"), f"{src}/", f"{src}/./b.jpg")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 2 file(s): 2 filed"), done.stdout
    check_consistent(cfg, files, move=False)


def test_import_does_not_wait_for_a_partner_it_was_not_given(tmp_path: Path) -> None:
    """`import DIR/IMG_1.MOV DIR/IMG_2.JPG.xmp` with IMG_1.JPG and IMG_2.JPG beside them but
    not imported: the companions waited 10 minutes (WAIT_LIMIT) for partners that this
    import would never bring, although import waits only for photos it imports too."""
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "src"
    write(src / "IMG_1.JPG", jpeg_bytes(BASE, 1))
    media_factory.video(src / "IMG_1.MOV")
    write(src / "IMG_2.JPG", jpeg_bytes(BASE, 2))
    write(src / "IMG_2.JPG.xmp", b"<x:xmpmeta>rating 2</x:xmpmeta>")
    done = cli(cfg_path, "import", str(src / "IMG_1.MOV"), str(src / "IMG_2.JPG.xmp"), timeout=60)
    assert done.stdout.startswith("imported 2 file(s): 1 filed, 1 rejected"), (
        done.stdout + done.stderr
    )
    assert [p for p in tree_hashes(cfg.library) if p.endswith(".mov")]
    assert "a sidecar whose photo is not in the library" in done.stderr


def test_an_album_copy_replaced_by_another_photo_is_catalogued(tmp_path: Path) -> None:
    """adopt recorded an album copy; the user then saves another photo over it. verify
    (even --deep) said all was well, and that photo was never catalogued: the record said
    'a copy of IMG_1' whatever the file held."""
    cfg, cfg_path = make_config(tmp_path)
    sorted_library(cfg)
    assert cli(cfg_path, "adopt", str(cfg.library)).returncode == 0
    copy = cfg.library / "Albums/Trip/IMG_1 copy.JPG"
    copy.write_bytes(jpeg_bytes(BASE, 42))  # another photo, another size
    v = cli(cfg_path, "verify")
    assert v.returncode == 1 and "Albums/Trip/IMG_1 copy.JPG" in v.stdout, v.stdout
    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert copy.read_bytes() == jpeg_bytes(BASE, 42)  # where it stands
    assert rows(cfg, f"SELECT path FROM files WHERE sha256 = '{sha(jpeg_bytes(BASE, 42))}'") == [
        ("Albums/Trip/IMG_1 copy.JPG",)
    ]
    assert cli(cfg_path, "verify", "--deep").returncode == 0


def test_names_cannot_drive_the_terminal_during_an_import(tmp_path: Path) -> None:
    """On a terminal, import prints rejects as short lines above its progress bar (and
    adopt its listing): a file name holding escape sequences or a newline reached the
    terminal raw (set the title, clear the screen, forge a line)."""
    from tests.system.terminal import on_terminal, terminal_config

    cfg_path = terminal_config(tmp_path)
    src = tmp_path / "src"
    write(src / "evil\x1b]0;pwned\x07\x1b[2J\nFAKE  line.txt", b"not a photo\n")
    write(src / "ok.jpg", jpeg_bytes(BASE, 1))
    rc, out = on_terminal(cfg_path, "import", "-v", str(src))
    assert rc == 0, out
    assert "\x1b]0;" not in out and "\x1b[2J" not in out, repr(out)
    assert "\nFAKE" not in out.replace("\r\n", "\n"), repr(out)


def test_the_metrics_temporary_never_truncates_a_file_linked_at_its_name(tmp_path: Path) -> None:
    """The metrics textfile is written through a temporary with a predictable name
    (.NAME.PID.tmp) opened with O_TRUNC and without O_EXCL: a hard link left at that name
    in the (shared) textfile folder had its target truncated and rewritten."""
    from tests.helpers import wait_for
    from tests.system.daemon_harness import Daemon

    _, cfg_path = make_config(tmp_path)
    prom = tmp_path / "prom"
    prom.mkdir()
    textfile = prom / "mediasortd.prom"
    cfg_path.write_text(
        cfg_path.read_text() + f'[metrics]\ntextfile = "{textfile}"\ninterval_seconds = 0.1\n'
    )
    canary = write(tmp_path / "canary.txt", b"precious bytes\n")
    daemon = Daemon(tmp_path, cfg_path)
    try:
        daemon.ready()
        first = wait_for(
            lambda: textfile.exists() and os.stat(textfile).st_ino, 30, "the first metrics textfile"
        )
        os.link(canary, prom / f".mediasortd.prom.{daemon.proc.pid}.tmp")
        wait_for(
            lambda: (
                os.stat(textfile).st_ino != first
                and os.stat(textfile).st_ino != os.stat(canary).st_ino
            ),
            30,
            "the textfile rewritten",
        )
        assert canary.read_bytes() == b"precious bytes\n"
        assert daemon.terminate() == 0
    finally:
        daemon.close()


def test_import_dry_run_files_sidecars_beside_their_photo(tmp_path: Path) -> None:
    """`import --dry-run` said every sidecar would be rejected ('not a photo or video')
    while the import files it beside its photo: the dry run must say what import does."""
    _cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "src"
    write(src / "IMG_1.JPG", jpeg_bytes(BASE, 1))
    write(src / "IMG_1.JPG.xmp", b"<x:xmpmeta>rating 1</x:xmpmeta>")
    write(src / "IMG_1.AAE", b"<plist>edits</plist>")  # sorts before its photo
    write(src / "lonely.jpg.xmp", b"<x:xmpmeta>no photo</x:xmpmeta>")
    dry = cli(cfg_path, "import", "--dry-run", str(src))
    assert dry.returncode == 0, dry.stderr
    said = {line.split()[1]: line.split()[0] for line in dry.stdout.splitlines()[:-1]}
    assert said == {
        str(src / "IMG_1.JPG"): "filed",
        str(src / "IMG_1.JPG.xmp"): "filed",
        str(src / "IMG_1.AAE"): "filed",
        str(src / "lonely.jpg.xmp"): "rejected",
    }, dry.stdout
    assert "2019-05/2019-05-06 07.08.09.jpg.xmp" in dry.stdout
    assert "2019-05/2019-05-06 07.08.09.aae" in dry.stdout
    done = cli(cfg_path, "import", str(src))
    assert "3 filed, 1 rejected" in done.stdout, done.stdout + done.stderr


def test_the_daemon_files_hostile_source_folders_and_names(tmp_path: Path) -> None:
    """The daemon's {source} is an inbox sub-folder anyone who can write the inbox names:
    '. .', '.. ..' and ' . .x' must become plain names, never a hidden or '..' part."""
    from tests.helpers import wait_for
    from tests.system.daemon_harness import Daemon

    cfg, cfg_path = make_config(tmp_path, layout="{source}/{original}{ext}")
    inbox = tmp_path / "inbox"
    daemon = Daemon(tmp_path, cfg_path)
    try:
        daemon.ready()
        write(inbox / ". ." / " . .a.jpg", photo(WHEN, 1))
        write(inbox / ".. .." / "b.jpg", photo(WHEN, 2))
        write(inbox / " . .x" / "c.jpg", photo(None, 3))  # undated: undated/{original}
        want = {"unknown/a.jpg", "unknown/b.jpg", "undated/c.jpg"}
        wait_for(
            lambda: set(tree_hashes(cfg.library)) == want,
            30,
            lambda: f"library {sorted(tree_hashes(cfg.library))}",
        )
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    assert not [p for p in (tmp_path / "inbox").rglob("*") if p.is_file()]


def test_verify_when_a_folder_of_the_library_became_a_file(tmp_path: Path) -> None:
    """A catalogued file's folder replaced by a file (or made unreadable): verify, verify
    --repair and its --dry-run died with a NotADirectoryError traceback; the row is
    missing (repair marks it so) and the new file is a stray like any other."""
    cfg, cfg_path = make_config(tmp_path)
    src = tmp_path / "src"
    write(src / "IMG_1.JPG", jpeg_bytes(BASE, 1))
    assert cli(cfg_path, "import", str(src)).returncode == 0
    folder = cfg.library / "2019-05"
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    folder.write_bytes(b"a file where a folder was\n")
    for args in (("verify",), ("verify", "--repair", "--dry-run")):
        r = cli(cfg_path, *args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "missing" in r.stdout and "stray" in r.stdout, r.stdout
    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert (cfg.rejected / "2019-05").read_bytes() == b"a file where a folder was\n"
    assert cli(cfg_path, "verify").returncode == 0
    again = cli(cfg_path, "import", str(src))  # the lost photo comes back from its source
    assert "1 filed" in again.stdout, again.stdout + again.stderr
    assert cli(cfg_path, "verify", "--deep").returncode == 0


def test_a_kept_non_media_file_replaced_by_a_photo_is_catalogued(tmp_path: Path) -> None:
    """adopt lists what is not a photo or video (notes.txt, a symbolic link) as kept; a
    photo saved later under such a name was never catalogued and verify said nothing."""
    cfg, cfg_path = make_config(tmp_path)
    sorted_library(cfg)
    os.symlink("IMG_1.JPG", cfg.library / "2019/05/link.jpg")
    assert cli(cfg_path, "adopt", str(cfg.library)).returncode == 0
    assert cli(cfg_path, "verify").returncode == 0
    notes = cfg.library / "2019/05/notes.txt"
    notes.unlink()
    notes.write_bytes(jpeg_bytes(BASE, 43))  # a photo under the old name
    v = cli(cfg_path, "verify")
    assert v.returncode == 1 and "2019/05/notes.txt" in v.stdout, v.stdout
    r = cli(cfg_path, "verify", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(cfg, f"SELECT path FROM files WHERE sha256 = '{sha(jpeg_bytes(BASE, 43))}'") == [
        ("2019/05/notes.txt",)
    ]
    assert cli(cfg_path, "verify", "--deep").returncode == 0
