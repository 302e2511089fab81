"""Issue 12 through the real `mediasortd import`: a video is filed with a same-named still
only when it is that still's Live Photo (same Apple ContentIdentifier, or no date of its
own, or dates that agree), never at the cost of a good date of its own; and `find` shows a
future date that was skipped, with its tag and why."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.store import db
from tests.helpers import cli, make_config, tree_hashes
from tests.integration import media_factory as make


def _rows(cfg_catalog: Path) -> dict[str, tuple[str, str, str | None]]:
    conn = db.connect(cfg_catalog)
    try:
        return {
            name: (path, source, cid)
            for name, path, source, cid in conn.execute(
                "SELECT original_name, path, date_source, content_id FROM files"
            )
        }
    finally:
        conn.close()


def test_live_photo_pairs_and_name_collisions(tmp_path: Path) -> None:
    cfg, cfg_path = make_config(tmp_path, timezone="Europe/Berlin")
    card = tmp_path / "card"
    card.mkdir()
    # 1. The collision: a camera's IMG_0001.JPG and a phone's IMG_0001.MOV, five years
    #    apart, in one card dump: each is filed under its own date.
    make.apple_still(card / "IMG_0001.JPG", "2023:08:09 10:11:12", None)
    make.apple_video(card / "IMG_0001.MOV", "2018-08-09T10:11:12+0200", None)
    # 2. A true Live Photo: the same ContentIdentifier, dates 1 s apart: filed together
    #    under the still's name.
    make.apple_still(
        card / "IMG_0002.JPG", "2021:03:04 05:06:07", "5F2A-LIVE-0002", "+01:00", color="blue"
    )
    make.apple_video(card / "IMG_0002.MOV", "2021-03-04T05:06:08+0100", "5F2A-LIVE-0002")
    # 3. Same name, dates 1 s apart, but ContentIdentifiers that differ: two shots.
    make.apple_still(
        card / "IMG_0003.JPG", "2021:03:04 06:00:00", "5F2A-LIVE-0003", "+01:00", color="green"
    )
    make.apple_video(card / "IMG_0003.MOV", "2021-03-04T06:00:01+0100", "5F2A-OTHER")
    r = cli(cfg_path, "import", str(card))
    assert r.returncode == 0, r.stderr
    rows = _rows(cfg.catalog)
    assert rows["IMG_0001.JPG"][:2] == (
        "2023-08/2023-08-09 10.11.12.jpg",
        "ExifIFD:DateTimeOriginal",
    )
    assert rows["IMG_0001.MOV"][:2] == ("2018-08/2018-08-09 10.11.12.mov", "Keys:CreationDate")
    assert rows["IMG_0002.JPG"] == (
        "2021-03/2021-03-04 05.06.07.jpg",
        "Composite:SubSecDateTimeOriginal",
        "5F2A-LIVE-0002",
    )
    assert rows["IMG_0002.MOV"] == (
        "2021-03/2021-03-04 05.06.07.mov",
        "partner:2021-03/2021-03-04 05.06.07.jpg",
        "5F2A-LIVE-0002",
    )
    assert rows["IMG_0003.JPG"][0] == "2021-03/2021-03-04 06.00.00.jpg"
    assert rows["IMG_0003.MOV"][:2] == ("2021-03/2021-03-04 06.00.01.mov", "Keys:CreationDate")
    assert sorted(tree_hashes(cfg.library)) == sorted(path for path, _, _ in rows.values())
    assert cli(cfg_path, "verify", "--deep").returncode == 0


def test_find_shows_the_future_date_that_was_skipped(tmp_path: Path) -> None:
    _, cfg_path = make_config(tmp_path, timezone="UTC")
    photo = make.image(tmp_path / "clock_wrong.jpg")
    make.write_tags(
        {photo: {"DateTimeOriginal": "2099:01:01 00:00:00", "CreateDate": "2020:02:02 02:02:02"}}
    )
    assert cli(cfg_path, "import", str(photo)).returncode == 0
    skipped = "ExifIFD:DateTimeOriginal = '2099:01:01 00:00:00': in the future (after now + 1 day)"
    r = cli(cfg_path, "find", "--json", "clock_wrong.jpg")
    assert r.returncode == 0, r.stderr
    (found,) = json.loads(r.stdout)[0]["results"]
    assert (found["path"], found["date_source"], found["date_skipped"]) == (
        "2020-02/2020-02-02 02.02.02.jpg",
        "ExifIFD:CreateDate",
        skipped,
    )
    text = cli(cfg_path, "find", "clock_wrong.jpg").stdout
    assert f"skipped   {skipped}" in text, text
