"""powerfs: a FUSE filesystem that forgets, on a power cut, all that was not made durable.

Run as a child process (`python -m tests.faults.powerfs --store S --ctl C MOUNTPOINT`);
tests drive it through `tests/faults/powercut.py`. Crash invariant: after the server is
SIGKILLed, `--store` holds exactly the durable state, and the next server mounts that.

The model (the weakest POSIX allows; ext4 with data=writeback, no auto_da_alloc, is
stronger in every point):

- Two states. The *live* state (inodes with their bytes and attributes, directories with
  their entries) is what every caller sees while the power is on; it is kept in memory.
  The *durable* state is what a cut leaves; it is kept in `--store` (powerstore.py: one
  JSON record per inode, plus `<ino>.data` with its bytes), written synchronously by the
  handler that makes something durable, so a SIGKILL of this process *is* the power cut.
- File bytes, size, mode and times become durable only by fsync of that file;
  fdatasync (FUSE's datasync flag) makes the bytes and size durable, not the times/mode.
- A directory's entries (create, mknod, mkdir, symlink, link, unlink, rmdir, rename in
  or out) become durable only by fsync of *that* directory, and then all of them at once.
  fsync of a file does NOT make its own entry durable (ext4 generally does in practice,
  POSIX does not promise it), and fsync of a directory does not make the directory's own
  entry in its parent durable.
- A rename is two entry changes: the new name is durable after fsync of the destination
  directory, the removal of the old name after fsync of the source directory; a cut in
  between leaves both names (a hard link), never neither once the destination was synced.
- An entry made durable before its inode's bytes are leaves the inode empty (size 0 for
  a file that was never fsynced; its mode and owner are those at the time of the dir
  fsync: on real filesystems the inode is created with its entry).
- "Leaks": a real kernel may write back anything at any time, before any fsync. With
  `leak P` each mutating operation, as it happens, is also applied to the durable state
  with probability P (seeded), as one unit, in the order operations happen (a rename
  leaks whole; a write leaks whole: torn writes within one write() are not modelled, nor
  are writes of bytes nobody wrote). P=0 is the classic "drop everything not fsynced".
- After a cut, the durable tree is loaded like fsck would: inodes no entry reaches are
  dropped; a directory reachable through two entries (a half-persisted directory rename)
  keeps the first one found.

Cutting. `arm N` makes the N-th next mutating request (counted: create, mknod, mkdir,
symlink, link, unlink, rmdir, rename, write, setattr, fsync, fsyncdir, open with
O_TRUNC) freeze *before* it is applied: that request and every later one never return,
`{ctl}/fired` appears, and the test then SIGKILLs the processes that use the mount and
this server (the power cut), unmounts, and mounts again on the store. Counting requests
instead of wall-clock time makes a cut point land anywhere in a run with equal weight,
and a seed reproduces it (up to thread scheduling in the program under test).

Control: a file `.powerfs` in the root, hidden from readdir and exempt from counting and
freezing: write one line (`sync`, `arm N [LEAK [SEED]]`, `leak P [SEED]`, `freeze`,
`stats`) and the reply is written as JSON to `{ctl}/reply.json` before write() returns.

Kernel side: no direct_io and no writeback cache, so write() reaches this server before
it returns (what a SIGKILLed program had written is live, not lost in a kernel buffer)
while mmap (SQLite's -shm) works through the page cache; the page cache is coherent
because every change goes through this one mount, and a cut throws the whole mount away
(kernel caches included) rather than resetting it in place. Pages of a shared mapping
not yet written back are lost by a cut, as they would be. POSIX and BSD locks are left
to the kernel (no lock handlers), which is right for one host. Entry and attribute
timeouts are 0: the kernel asks every time (slower, never stale). st_ino is our inode
number, the same through every hard link and across cuts. st_dev is the kernel's: with
`--device` (fuseblk on a loop device) it is that device's number, the same at every
mount, like a partition's across reboots; a plain FUSE mount gets an anonymous number
that other mounts on the machine may take in between.

POWERFS_TRACE=1 in the environment logs every counted request to stderr.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import random
import stat
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import trio

from tests.faults.powerstore import PAGE, Node, Store

CTL_NAME = b".powerfs"
CTL_INO = 1 << 62  # never allocated to a real inode
TIMEOUT = 0.0  # entry and attribute cache seconds: the kernel asks every time

log = logging.getLogger("powerfs")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def handler(fn: F) -> F:
    """Turn an unexpected exception into EIO (and a traceback on stderr), so one bug in
    the model shows up as an I/O error rather than a hung mount."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception:  # noqa: BLE001 - any bug in the model: EIO, not a dead mount
            traceback.print_exc()
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


class PowerFS(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, store: Store, ctl: Path) -> None:
        super().__init__()
        self.store = store
        self.ctl = ctl
        self.nodes = store.load()
        self.next_ino = max(self.nodes) + 1
        self.handles: dict[int, int] = {}  # fh -> ino (files)
        self.dirs: dict[int, tuple[int, list[tuple[bytes, int]]]] = {}  # fh -> listing
        self.next_fh = 1
        self.ops = 0
        self.armed: int | None = None
        self.arm_base = 0
        self.fired = False
        self.frozen = False
        self.leak_p = 0.0
        self.rng = random.Random(0)
        self.leaks = 0

    # -- the power switch ---------------------------------------------------------------

    async def gate(self, what: str | None = None) -> None:
        """Every request passes here: frozen after the cut point; `what` counts a
        mutating request and freezes before it when it is the armed one."""
        if self.frozen:
            await trio.sleep_forever()
        if what is None:
            return
        self.ops += 1
        if os.environ.get("POWERFS_TRACE"):
            print(f"op {self.ops}: {what}", file=sys.stderr, flush=True)
        if self.armed is not None and self.ops >= self.armed:
            self.frozen = self.fired = True
            (self.ctl / "fired").write_text(f"op {self.ops - self.arm_base}: {what}\n")
            await trio.sleep_forever()

    def leak(self) -> bool:
        if self.leak_p and self.rng.random() < self.leak_p:
            self.leaks += 1
            return True
        return False

    def sync_all(self) -> None:
        for node in list(self.nodes.values()):
            if node.is_dir:
                self.store.put_entries(node, self.nodes)
            elif stat.S_ISREG(node.mode):
                self.store.put_data(node)
                self.store.put_meta(node)
            else:
                self.store.put_meta(node)

    def volatile(self) -> dict[str, int]:
        files = sum(1 for n in self.nodes.values() if n.dirty or n.shrunk is not None)
        dirs = sum(
            1
            for n in self.nodes.values()
            if n.is_dir and self.store.entries.get(n.ino) != n.entries
        )
        return {"files_with_unsynced_bytes": files, "dirs_with_unsynced_entries": dirs}

    def control(self, line: str) -> dict[str, Any]:
        words = line.split()
        cmd, args = (words[0], words[1:]) if words else ("stats", [])
        if cmd == "sync":
            self.sync_all()
        elif cmd == "arm":
            self.arm_base = self.ops
            self.armed = self.ops + int(args[0])
            if len(args) > 1:
                self.leak_p = float(args[1])
                self.rng = random.Random(int(args[2]) if len(args) > 2 else 0)
        elif cmd == "leak":
            self.leak_p = float(args[0])
            self.rng = random.Random(int(args[1]) if len(args) > 1 else 0)
        elif cmd == "freeze":
            self.frozen = True
        elif cmd != "stats":
            return {"error": f"unknown command {line!r}"}
        return {
            "ops": self.ops,
            "armed": self.armed,
            "fired": self.fired,
            "frozen": self.frozen,
            "leak": self.leak_p,
            "leaks": self.leaks,
            "inodes": len(self.nodes),
            **self.volatile(),
        }

    # -- helpers ------------------------------------------------------------------------

    def node(self, ino: int) -> Node:
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def dir(self, ino: int) -> Node:
        d = self.node(ino)
        if not d.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return d

    def attrs(self, n: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = n.ino
        a.generation = 0
        a.entry_timeout = TIMEOUT
        a.attr_timeout = TIMEOUT
        a.st_mode = n.mode
        a.st_nlink = n.nlink
        a.st_uid, a.st_gid, a.st_rdev = n.uid, n.gid, n.rdev
        a.st_size = n.size
        a.st_blksize = PAGE
        a.st_blocks = (n.size + 511) // 512
        a.st_atime_ns, a.st_mtime_ns, a.st_ctime_ns = n.atime, n.mtime, n.ctime
        return a

    def ctl_attrs(self) -> pyfuse3.EntryAttributes:
        n = Node(CTL_INO, stat.S_IFREG | 0o600)
        return self.attrs(n)

    def new_node(self, parent: Node, name: bytes, mode: int, ctx: Any, rdev: int = 0) -> Node:
        if name in parent.entries or (parent.ino == pyfuse3.ROOT_INODE and name == CTL_NAME):
            raise pyfuse3.FUSEError(errno.EEXIST)
        n = Node(self.next_ino, mode, ctx.uid, ctx.gid, rdev)
        self.next_ino += 1
        self.nodes[n.ino] = n
        if n.is_dir:
            n.parent = parent.ino
            parent.nlink += 1
        parent.entries[name] = n.ino
        parent.touch()
        return n

    def remove_entry(self, parent: Node, name: bytes) -> Node:
        child = self.node(parent.entries.pop(name))
        if child.is_dir:
            parent.nlink -= 1
            child.nlink = 0
        else:
            child.nlink -= 1
        child.touch(content=False)
        parent.touch()
        return child

    def truncate(self, n: Node, size: int) -> None:
        old = len(n.data)
        if size < old:
            del n.data[size:]
            n.shrunk = size if n.shrunk is None else min(n.shrunk, size)
        elif size > old:
            n.data.extend(bytes(size - old))
        n.touch()
        if self.leak():
            self.store.leak_truncate(n, size)

    # -- lookups and attributes ---------------------------------------------------------

    @handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        if parent_inode == pyfuse3.ROOT_INODE and name == CTL_NAME:
            return self.ctl_attrs()
        await self.gate()
        d = self.dir(parent_inode)
        if name == b".":
            return self.attrs(d)
        if name == b"..":
            return self.attrs(self.node(d.parent))
        ino = d.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs(self.node(ino))

    @handler
    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        if inode == CTL_INO:
            return self.ctl_attrs()
        await self.gate()
        return self.attrs(self.node(inode))

    @handler
    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if inode == CTL_INO:
            return self.ctl_attrs()
        await self.gate("setattr")
        n = self.node(inode)
        if fields.update_size:
            if n.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            self.truncate(n, attr.st_size)
        if fields.update_mode:
            n.mode = stat.S_IFMT(n.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            n.uid = attr.st_uid
        if fields.update_gid:
            n.gid = attr.st_gid
        if fields.update_atime:
            n.atime = attr.st_atime_ns
        if fields.update_mtime:
            n.mtime = attr.st_mtime_ns
        n.ctime = time.time_ns()
        if self.leak():
            self.store.ensure(n)
            self.store.put_meta(n)
        return self.attrs(n)

    @handler
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        await self.gate()
        n = self.node(inode)
        if not stat.S_ISLNK(n.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return n.target

    @handler
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        await self.gate()
        s = pyfuse3.StatvfsData()
        used = sum((len(n.data) + PAGE - 1) // PAGE for n in self.nodes.values())
        s.f_bsize = s.f_frsize = PAGE
        s.f_blocks = 1 << 20
        s.f_bfree = s.f_bavail = max(0, s.f_blocks - used)
        s.f_files = 1 << 20
        s.f_ffree = s.f_favail = s.f_files - len(self.nodes)
        s.f_namemax = 255
        return s

    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        return True

    async def forget(self, inode_list: Any) -> None:
        pass  # unlinked inodes are kept in memory until the next cut: tests are small

    # -- directory entries --------------------------------------------------------------

    @handler
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        await self.gate("mknod")
        d = self.dir(parent_inode)
        n = self.new_node(d, name, mode, ctx, rdev)
        if self.leak():
            self.store.set_entry(d, name, n)
        return self.attrs(n)

    @handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        await self.gate("mkdir")
        d = self.dir(parent_inode)
        n = self.new_node(d, name, stat.S_IFDIR | stat.S_IMODE(mode), ctx)
        if self.leak():
            self.store.set_entry(d, name, n)
        return self.attrs(n)

    @handler
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        await self.gate("symlink")
        d = self.dir(parent_inode)
        n = self.new_node(d, name, stat.S_IFLNK | 0o777, ctx)
        n.target = bytes(target)
        if self.leak():
            self.store.set_entry(d, name, n)
        return self.attrs(n)

    @handler
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        await self.gate("link")
        d = self.dir(new_parent_inode)
        n = self.node(inode)
        if n.is_dir:
            raise pyfuse3.FUSEError(errno.EPERM)
        if new_name in d.entries:
            raise pyfuse3.FUSEError(errno.EEXIST)
        d.entries[new_name] = n.ino
        n.nlink += 1
        n.touch(content=False)
        d.touch()
        if self.leak():
            self.store.set_entry(d, new_name, n)
        return self.attrs(n)

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.gate("unlink")
        d = self.dir(parent_inode)
        ino = d.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if self.node(ino).is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self.remove_entry(d, name)
        if self.leak():
            self.store.set_entry(d, name, None)

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.gate("rmdir")
        d = self.dir(parent_inode)
        ino = d.entries.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        child = self.node(ino)
        if not child.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if child.entries:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self.remove_entry(d, name)
        if self.leak():
            self.store.set_entry(d, name, None)

    @handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        await self.gate("rename")
        src, dst = self.dir(parent_inode_old), self.dir(parent_inode_new)
        if name_old not in src.entries:
            raise pyfuse3.FUSEError(errno.ENOENT)
        moved = self.node(src.entries[name_old])
        other_ino = dst.entries.get(name_new)
        if flags & ~(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE):
            raise pyfuse3.FUSEError(errno.EINVAL)
        if flags & pyfuse3.RENAME_EXCHANGE:
            if other_ino is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            other = self.node(other_ino)
            src.entries[name_old], dst.entries[name_new] = other.ino, moved.ino
            for n, parent in ((moved, dst), (other, src)):
                if n.is_dir and src is not dst:
                    self.nodes[n.parent].nlink -= 1
                    n.parent = parent.ino
                    parent.nlink += 1
            src.touch()
            dst.touch()
            if self.leak():
                self.store.set_entry(src, name_old, other)
                self.store.set_entry(dst, name_new, moved)
            return
        if other_ino == moved.ino:
            return  # two names of one file: POSIX says do nothing
        if other_ino is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            other = self.node(other_ino)
            if moved.is_dir and not other.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if other.is_dir and not moved.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if other.is_dir and other.entries:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self.remove_entry(dst, name_new)
        del src.entries[name_old]
        dst.entries[name_new] = moved.ino
        if moved.is_dir:
            src.nlink -= 1
            dst.nlink += 1
            moved.parent = dst.ino
        moved.touch(content=False)
        src.touch()
        dst.touch()
        if self.leak():  # one unit: both halves reach the disk together
            self.store.set_entry(dst, name_new, moved)
            self.store.set_entry(src, name_old, None)

    # -- files --------------------------------------------------------------------------

    def new_fh(self, ino: int) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = ino
        return fh

    @handler
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if inode == CTL_INO:
            return pyfuse3.FileInfo(fh=self.new_fh(CTL_INO), direct_io=True)
        await self.gate("open O_TRUNC" if flags & os.O_TRUNC else None)
        n = self.node(inode)
        if n.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC and (flags & os.O_ACCMODE) != os.O_RDONLY:
            self.truncate(n, 0)
        return pyfuse3.FileInfo(fh=self.new_fh(n.ino), keep_cache=True)

    @handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        await self.gate("create")
        d = self.dir(parent_inode)
        n = self.new_node(d, name, stat.S_IFREG | stat.S_IMODE(mode), ctx)
        if self.leak():
            self.store.set_entry(d, name, n)
        return pyfuse3.FileInfo(fh=self.new_fh(n.ino), keep_cache=True), self.attrs(n)

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        ino = self.handles[fh]
        if ino == CTL_INO:
            return b""
        await self.gate()
        return bytes(self.node(ino).data[off : off + size])

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        ino = self.handles[fh]
        if ino == CTL_INO:
            reply = self.control(bytes(buf).decode().strip())
            (self.ctl / "reply.tmp").write_text(json.dumps(reply))
            os.replace(self.ctl / "reply.tmp", self.ctl / "reply.json")
            return len(buf)
        await self.gate("write")
        n = self.node(ino)
        end = off + len(buf)
        if off > len(n.data):
            n.data.extend(bytes(off - len(n.data)))
        n.data[off:end] = buf
        n.dirty.update(range(off // PAGE, (end - 1) // PAGE + 1))
        n.touch()
        if self.leak():
            self.store.leak_write(n, off, bytes(buf))
        return len(buf)

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        self.handles.pop(fh, None)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        ino = self.handles[fh]
        if ino == CTL_INO:
            return
        await self.gate("fdatasync" if datasync else "fsync")
        n = self.node(ino)
        self.store.put_data(n)
        if not datasync:
            self.store.put_meta(n)

    # -- directories --------------------------------------------------------------------

    @handler
    async def opendir(self, inode: int, ctx: Any) -> int:
        await self.gate()
        d = self.dir(inode)
        fh = self.next_fh
        self.next_fh += 1
        self.dirs[fh] = (d.ino, sorted(d.entries.items()))
        return fh

    @handler
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        await self.gate()
        listing = self.dirs[fh][1]
        for i in range(start_id, len(listing)):
            name, ino = listing[i]
            if not pyfuse3.readdir_reply(token, name, self.attrs(self.node(ino)), i + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.gate("fsyncdir")
        self.store.put_entries(self.dir(self.dirs[fh][0]), self.nodes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="powerfs", description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, required=True, help="the durable state (a directory)")
    p.add_argument("--ctl", type=Path, required=True, help="where replies and `fired` go")
    p.add_argument(
        "--device",
        help="a block device to name as the source (fuseblk): its "
        "number becomes st_dev, the same at every mount",
    )
    p.add_argument("mountpoint", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    args.ctl.mkdir(parents=True, exist_ok=True)
    fs = PowerFS(Store(args.store), args.ctl)
    options = set(pyfuse3.default_options) | {"subtype=powerfs"}
    options |= {"blkdev", f"fsname={args.device}"} if args.device else {"fsname=powerfs"}
    pyfuse3.init(fs, str(args.mountpoint), options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
