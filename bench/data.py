"""The benchmark's own data: real JPEGs with EXIF DateTimeOriginal, real MP4s with a
QuickTime CreateDate padded to size, and a catalog of N rows in the project's schema.

Every file has its own SHA-256 and its own capture second (so library names never
collide and a file's library path is known in advance). A set is made once per work dir
and reused while its manifest matches the parameters (`--keep` keeps it across runs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import struct
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

FILES_PER_FOLDER = 1000  # like DCIM/100CANON, 101CANON, ...
LAYOUT = "{year}-{month}/{year}-{month}-{day} {hour}.{minute}.{second}{ext}"


@dataclass(frozen=True)
class FileSpec:
    rel: str  # path under the set's root
    size: int
    captured: str  # "YYYY-MM-DD HH:MM:SS", the wall time in the file's metadata

    def library_rel(self, ext: str = ".jpg") -> str:
        """Where mediasortd files it (the default layout; JPEG dates have no zone)."""
        t = datetime.fromisoformat(self.captured)
        return LAYOUT.format(
            year=f"{t.year:04d}",
            month=f"{t.month:02d}",
            day=f"{t.day:02d}",
            hour=f"{t.hour:02d}",
            minute=f"{t.minute:02d}",
            second=f"{t.second:02d}",
            ext=ext,
        )


@dataclass(frozen=True)
class DataSet:
    name: str  # "photos" | "small" | "videos"
    root: Path
    files: list[FileSpec]

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


# -- JPEGs ------------------------------------------------------------------------------


def _noise_jpeg(width: int, height: int, seed: int) -> bytes:
    """A real baseline JPEG of noise (incompressible, so its size is its pixel count),
    without JFIF/EXIF segments: SOI followed directly by the tables and the scan."""
    raw = random.Random(seed).randbytes(width * height * 3)
    img = Image.frombytes("RGB", (width, height), raw)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    data = out.getvalue()
    return _strip_app_segments(data)


def _strip_app_segments(data: bytes) -> bytes:
    """Drop APPn segments (Pillow's JFIF APP0) right after SOI: our APP1 Exif goes first."""
    assert data[:2] == b"\xff\xd8"
    at = 2
    while data[at] == 0xFF and 0xE0 <= data[at + 1] <= 0xEF:
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        at += 2 + length
    return b"\xff\xd8" + data[at:]


def _base_jpeg(target: int, seed: int) -> bytes:
    """A noise JPEG whose size is just under `target` (within about 1%)."""
    width = 4 * max(8, int((target / 0.75) ** 0.5 * 4 / 3) // 4)  # 4:3, ~0.75 B/pixel at q85
    lo, hi = 8, max(16, int(target / 0.75 / width * 2))
    best = _noise_jpeg(width, lo, seed)
    while lo <= hi:  # binary search the height
        mid = (lo + hi) // 2
        data = _noise_jpeg(width, mid, seed)
        if len(data) <= target - 300:
            best, lo = data, mid + 1
        else:
            hi = mid - 1
    return best


def _exif_app1(captured: datetime, description: str) -> bytes:
    exif = Image.Exif()
    stamp = captured.strftime("%Y:%m:%d %H:%M:%S")
    exif[0x010F] = "mediasortd-bench"  # Make
    exif[0x010E] = description  # ImageDescription: unique bytes per file
    exif.get_ifd(0x8769)[0x9003] = stamp  # ExifIFD:DateTimeOriginal
    payload = exif.tobytes()  # starts with b"Exif\0\0"
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_exif(base: bytes, captured: datetime, description: str) -> bytes:
    return base[:2] + _exif_app1(captured, description) + base[2:]


# -- videos -----------------------------------------------------------------------------


def _tiny_mp4(path: Path, created: datetime) -> bytes:
    """A real 1 s MPEG-4 video with moov first and a QuickTime CreateDate (UTC)."""
    stamp = created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10:duration=1",
            "-c:v",
            "mpeg4",
            "-metadata",
            f"creation_time={stamp}",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
    )
    return path.read_bytes()


def _write_padded_video(path: Path, head: bytes, size: int, unique: bytes, block: bytes) -> None:
    """`head` (a complete MP4) followed by one 64-bit `free` atom filling the file up to
    `size`: ExifTool walks the top-level atoms and seeks over it."""
    pad = size - len(head)
    assert pad >= 16 + len(unique), f"video size {size} is smaller than its header"
    with open(path, "wb") as f:
        f.write(head)
        f.write(struct.pack(">I4sQ", 1, b"free", pad))
        f.write(unique)
        left = pad - 16 - len(unique)
        view = memoryview(block)
        while left > 0:
            n = min(left, len(block))
            f.write(view[:n])
            left -= n


# -- sets -------------------------------------------------------------------------------

PHOTO_EPOCH = datetime(2019, 1, 1, 8, 0, 0)  # photos: one every 3,607 s from here
SMALL_EPOCH = datetime(2004, 1, 1, 8, 0, 0)  # small: one every 1,201 s
VIDEO_EPOCH = datetime(2023, 6, 1, 12, 0, 0)  # videos: one a day


def _manifest_ok(root: Path, params: dict[str, Any]) -> list[FileSpec] | None:
    try:
        m = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if m.get("params") != params:
        return None
    return [FileSpec(**f) for f in m["files"]]


def _save_manifest(root: Path, params: dict[str, Any], files: list[FileSpec]) -> None:
    (root / "manifest.json").write_text(
        json.dumps({"params": params, "files": [vars(f) for f in files]})
    )


def _fresh(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)


def make_jpegs(
    root: Path,
    name: str,
    count: int,
    size: int,
    epoch: datetime,
    step_s: int,
    log: Any = print,
    per_folder: int = FILES_PER_FOLDER,
) -> DataSet:
    """`count` JPEGs of about `size` bytes under root/files, DCIM-like folders of
    `per_folder` files; captured `step_s` seconds apart (0: all in the same second)."""
    params = {
        "kind": "jpeg",
        "count": count,
        "size": size,
        "epoch": epoch.isoformat(),
        "step": step_s,
        "v": 2,
        **({"per_folder": per_folder} if per_folder != FILES_PER_FOLDER else {}),
    }
    files = _manifest_ok(root, params)
    if files is not None:
        return DataSet(name, root / "files", files)
    log(f"bench: making {count:,} JPEGs of {size:,} bytes in {root}")
    _fresh(root)
    base = _base_jpeg(size - 200, seed=size)  # the EXIF segment adds ~170 bytes
    files = []
    for i in range(count):
        captured = epoch + timedelta(seconds=i * step_s)
        folder = f"DCIM/{100 + i // per_folder}BENCH"
        rel = f"{folder}/IMG_{i:06d}.JPG"
        data = jpeg_with_exif(base, captured, f"mediasortd bench {name} {i:08d}")
        path = root / "files" / rel
        if i % per_folder == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        ts = captured.timestamp()
        os.utime(path, (ts, ts))  # like a camera copy; also old enough for photosort
        files.append(FileSpec(rel, len(data), captured.isoformat(sep=" ")))
    _save_manifest(root, params, files)
    return DataSet(name, root / "files", files)


def make_videos(root: Path, count: int, size: int, log: Any = print) -> DataSet:
    params = {"kind": "mp4", "count": count, "size": size, "v": 2}
    files = _manifest_ok(root, params)
    if files is not None:
        return DataSet("videos", root / "files", files)
    log(f"bench: making {count} videos of {size:,} bytes in {root}")
    _fresh(root)
    (root / "files" / "DCIM" / "100VIDEO").mkdir(parents=True)
    block = b"".join(hashlib.sha256(b"video-pad-%d" % i).digest() for i in range(1 << 15))
    block = block * 8  # 8 MiB, written again and again: the disk sees real bytes
    files = []
    for i in range(count):
        created = (VIDEO_EPOCH + timedelta(days=i, seconds=17 * i)).replace(tzinfo=UTC)
        head = _tiny_mp4(root / "tiny.mp4", created)
        rel = f"DCIM/100VIDEO/MVI_{i:04d}.MP4"
        path = root / "files" / rel
        _write_padded_video(path, head, size, b"mediasortd bench video %08d\n" % i, block)
        ts = created.timestamp()
        os.utime(path, (ts, ts))
        local = datetime.fromtimestamp(ts)  # mediasortd names UTC QuickTime dates locally
        files.append(FileSpec(rel, size, local.isoformat(sep=" ")))
    (root / "tiny.mp4").unlink()
    _save_manifest(root, params, files)
    return DataSet("videos", root / "files", files)


def check_exiftool_reads(ds: DataSet) -> str:
    """ExifTool's date for the first file of a set (a sanity check of the generator)."""
    path = ds.root / ds.files[0].rel
    out = subprocess.run(
        [
            "exiftool",
            "-j",
            "-api",
            "LargeFileSupport=1",
            "-DateTimeOriginal",
            "-QuickTime:CreateDate",
            "-FileType",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tags = json.loads(out)[0]
    return str(tags.get("DateTimeOriginal") or tags.get("CreateDate") or "")


# -- the catalog ------------------------------------------------------------------------


def make_catalog(state_dir: Path, rows: int, log: Any = print) -> Path:
    """A catalog of `rows` files (and as many finished jobs) in the project's own schema
    (daemon.store.db.connect creates and migrates it), inserted in big transactions."""
    from daemon.store import db, schema

    params = {"rows": rows, "v": 2, "migrations": len(schema.MIGRATIONS)}
    stamp = state_dir / "bench-manifest.json"
    path = state_dir / "catalog.db"
    try:
        if json.loads(stamp.read_text()) == params and path.exists():
            return path
    except (OSError, ValueError):
        pass
    log(f"bench: making a catalog of {rows:,} rows in {state_dir}")
    if state_dir.exists():
        shutil.rmtree(state_dir)
    conn = db.connect(path)
    conn.execute("PRAGMA synchronous=OFF")  # data generation, not the thing measured
    conn.execute("PRAGMA cache_size=-262144")
    epoch = datetime(2000, 1, 1)
    now = datetime.now(UTC).replace(tzinfo=None)
    chunk = 50_000
    for start in range(1, rows + 1, chunk):
        files, jobs = [], []
        for i in range(start, min(rows, start + chunk - 1) + 1):
            t = epoch + timedelta(seconds=i * 613)
            sha = hashlib.sha256(b"catalog-%d" % i).hexdigest()
            rel = f"{t:%Y-%m}/{t:%Y-%m-%d %H.%M.%S}.jpg"
            name = f"IMG_{i:07d}.JPG"
            source = b"/srv/inbox/DCIM/%d/IMG_%07d.JPG" % (100 + i // 1000, i)
            done = (now - timedelta(seconds=(rows - i) * 90)).isoformat(timespec="milliseconds")
            size = 2_000_000 + i % 100_000
            files.append(
                (
                    i,
                    sha,
                    size,
                    rel,
                    t.isoformat(sep=" "),
                    None,
                    "ExifIFD:DateTimeOriginal",
                    t.strftime("%Y:%m:%d %H:%M:%S"),
                    "high",
                    name,
                    source,
                    done,
                    "JPEG",
                    "image/jpeg",
                    "image",
                    i,
                )
            )
            jobs.append(
                (
                    i,
                    "bench-import",
                    source,
                    2049,
                    1_000_000 + i,
                    size,
                    int(t.timestamp()) * 10**9,
                    1,
                    "done",
                    b"/srv/library/.staging/job-%d" % i,
                    sha,
                    size,
                    b"/srv/library/" + rel.encode(),
                    "filed",
                    None,
                    0,
                    None,
                    done,
                    done,
                    done,
                )
            )
        with db.transaction(conn):
            conn.executemany(
                "INSERT INTO files (id, sha256, size, path, captured, utc_offset, date_source,"
                " date_raw, confidence, original_name, source_path, imported_at, file_type,"
                " mime, kind, job_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                files,
            )
            conn.executemany(
                "INSERT INTO jobs (id, batch, source, dev, ino, size, mtime_ns, move, step,"
                " staged, sha256, bytes, dest, outcome, error, attempts, duplicate_of,"
                " created_at, updated_at, finished_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                jobs,
            )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    stamp.write_text(json.dumps(params))
    return path
