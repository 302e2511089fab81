"""powerfs's two states: the live inodes (`Node`, in memory) and the durable state
(`Store`, in a real directory), and what makes a change pass from one to the other.
The model and its reasons are in powerfs.py; this module knows nothing of FUSE.

Crash invariant: the store is always exactly the durable state (each write to it is done
before the request that caused it returns), so killing the server at any request
boundary is a power cut.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

PAGE = 4096
ROOT_INODE = 1  # pyfuse3.ROOT_INODE, FUSE_ROOT_ID


class Node:
    """A live inode."""

    __slots__ = (
        "atime",
        "ctime",
        "data",
        "dirty",
        "entries",
        "gid",
        "ino",
        "mode",
        "mtime",
        "nlink",
        "parent",
        "rdev",
        "shrunk",
        "target",
        "uid",
    )

    def __init__(self, ino: int, mode: int, uid: int = 0, gid: int = 0, rdev: int = 0) -> None:
        now = time.time_ns()
        self.ino = ino
        self.mode = mode
        self.uid, self.gid, self.rdev = uid, gid, rdev
        self.atime = self.mtime = self.ctime = now
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.data = bytearray()
        self.entries: dict[bytes, int] = {}
        self.target = b""
        self.parent = ino
        self.dirty: set[int] = set()  # pages written since the bytes were last durable
        self.shrunk: int | None = None  # smallest size truncated to since then

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def size(self) -> int:
        if stat.S_ISLNK(self.mode):
            return len(self.target)
        return 4096 if self.is_dir else len(self.data)

    def touch(self, *, content: bool = True) -> None:
        now = time.time_ns()
        self.ctime = now
        if content:
            self.mtime = now


def _name(b: bytes) -> str:
    return b.decode("latin-1")


class Store:
    """The durable state on a real directory: `<ino>.json` (attributes, and the entries of
    a directory or the target of a symlink) and `<ino>.data` (a file's durable bytes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.entries: dict[int, dict[bytes, int]] = {}  # durable entries, per directory
        self.known: set[int] = set()  # inodes that have a durable record

    def meta_path(self, ino: int) -> Path:
        return self.root / f"{ino}.json"

    def data_path(self, ino: int) -> Path:
        return self.root / f"{ino}.data"

    # -- writing the durable state ------------------------------------------------------

    def put_meta(self, node: Node) -> None:
        rec: dict[str, Any] = {
            "mode": node.mode,
            "uid": node.uid,
            "gid": node.gid,
            "rdev": node.rdev,
            "atime": node.atime,
            "mtime": node.mtime,
            "ctime": node.ctime,
        }
        if node.is_dir:
            rec["entries"] = {_name(k): v for k, v in self.entries.setdefault(node.ino, {}).items()}
        if stat.S_ISLNK(node.mode):
            rec["target"] = _name(node.target)
        self.meta_path(node.ino).write_text(json.dumps(rec))
        self.known.add(node.ino)

    def ensure(self, node: Node) -> None:
        """Give an inode a durable record (empty bytes, no entries) if it has none."""
        if node.ino not in self.known:
            self.put_meta(node)

    def put_entries(self, d: Node, nodes: dict[int, Node]) -> None:
        """fsync of a directory: all its live entries become durable, at once."""
        self.entries[d.ino] = dict(d.entries)
        for ino in d.entries.values():
            self.ensure(nodes[ino])
        self.put_meta(d)

    def set_entry(self, d: Node, name: bytes, child: Node | None) -> None:
        """One entry change reaching the disk by itself (a leak)."""
        self.ensure(d)
        ents = self.entries.setdefault(d.ino, {})
        if child is None:
            ents.pop(name, None)
        else:
            self.ensure(child)
            ents[name] = child.ino
        self.put_meta(d)

    def put_data(self, node: Node) -> None:
        """fsync/fdatasync of a file: its bytes and size become durable."""
        self.ensure(node)
        path = self.data_path(node.ino)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if node.shrunk is not None:
                os.ftruncate(fd, min(node.shrunk, os.fstat(fd).st_size))
            for page in sorted(node.dirty):
                chunk = node.data[page * PAGE : (page + 1) * PAGE]
                if chunk:
                    os.pwrite(fd, chunk, page * PAGE)
            os.ftruncate(fd, len(node.data))
        finally:
            os.close(fd)
        node.dirty.clear()
        node.shrunk = None

    def leak_write(self, node: Node, off: int, buf: bytes) -> None:
        self.ensure(node)
        fd = os.open(self.data_path(node.ino), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.pwrite(fd, buf, off)
        finally:
            os.close(fd)

    def leak_truncate(self, node: Node, size: int) -> None:
        self.ensure(node)
        fd = os.open(self.data_path(node.ino), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    # -- reading it back after a cut ----------------------------------------------------

    def load(self) -> dict[int, Node]:
        """The durable tree, as fsck would leave it; unreachable records are removed."""
        records: dict[int, dict[str, Any]] = {}
        for p in self.root.glob("*.json"):
            records[int(p.stem)] = json.loads(p.read_text())
        root_ino = ROOT_INODE
        if root_ino not in records:  # mkfs
            root = Node(root_ino, stat.S_IFDIR | 0o755)
            self.entries[root_ino] = {}
            self.put_meta(root)
            return {root_ino: root}
        nodes: dict[int, Node] = {}

        def make(ino: int) -> Node:
            rec = records[ino]
            n = Node(ino, rec["mode"], rec["uid"], rec["gid"], rec["rdev"])
            n.atime, n.mtime, n.ctime = rec["atime"], rec["mtime"], rec["ctime"]
            n.nlink = 0
            if stat.S_ISLNK(n.mode):
                n.target = rec["target"].encode("latin-1")
            elif stat.S_ISREG(n.mode):
                try:
                    n.data = bytearray(self.data_path(ino).read_bytes())
                except FileNotFoundError:
                    pass
            return n

        nodes[root_ino] = make(root_ino)
        nodes[root_ino].nlink = 2
        todo = [root_ino]
        while todo:
            d = nodes[todo.pop()]
            kept: dict[bytes, int] = {}
            for key, ino in records[d.ino].get("entries", {}).items():
                if ino not in records:
                    continue
                child = nodes.get(ino)
                if child is not None and child.is_dir:
                    continue  # a directory reachable twice: keep the first entry
                if child is None:
                    child = nodes[ino] = make(ino)
                    if child.is_dir:
                        child.parent = d.ino
                        child.nlink = 2
                        todo.append(ino)
                kept[key.encode("latin-1")] = ino
                if child.is_dir:
                    d.nlink += 1
                else:
                    child.nlink += 1
            d.entries = kept
            self.entries[d.ino] = dict(kept)
        self.known = set(nodes)
        for ino in set(records) - set(nodes):
            self.meta_path(ino).unlink()
            self.data_path(ino).unlink(missing_ok=True)
        for ino, node in nodes.items():
            if node.is_dir and records[ino].get("entries", {}) != {
                _name(k): v for k, v in node.entries.items()
            }:
                self.put_meta(node)  # fsck dropped an entry: write what is kept
        return nodes
