"""What a checkpoint holds, decoded for people: the process tree with command
lines (and environments), the memory dumped per process, open files,
sockets with their TCP 4-tuples and states, mounts, and the file locks a
dump with --file-locks took along.

The images are hostile input here as in a restore: they are read with the
image check's bounded reader (CriuImages: regular files only, no symlink,
each image under its size bound, every message checked before use), and a
command line or an environment is read from the dumped pages only inside
the pagemap's runs, at most MAX_ARGS bytes. Anything that does not decode
is BadArchive, never a crash.
"""

from __future__ import annotations

import os
import socket
import struct

from ferry.checkpoint.criu import FILE_LOCKS_IMAGE
from ferry.checkpoint.imagecheck import FSTYPES, MAX_BYTES, PAGE_SIZE, PE_PARENT, PE_PRESENT, CriuImages
from ferry.util.errors import BadArchive, from_os_error

MAX_TASKS = 4096
MAX_FILE_LOCKS = 4096
MAX_ARGS = 128 << 10     # Linux's own limit for one argument string is 128 KiB
MAX_TEXT = 4096          # one shown string (a path, an argument)
HINT = "the checkpoint is damaged or forged"

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
              7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}
LOCK_KINDS = {1: "posix", 2: "flock", 4: "ofd", 8: "lease"}   # CRIU's FL_* (criu/include/file-lock.h)
LOCK_TYPES = {0: "read", 1: "write", 2: "unlock"}             # fcntl's F_RDLCK, F_WRLCK, F_UNLCK


def _text(value, limit: int = MAX_TEXT) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "?" for c in str(value)[:limit])
    return text + ("..." if len(str(value)) > limit else "")


def _address(family: int, words) -> str:
    """CRIU keeps an address as the kernel's 32-bit words, in network order in memory."""
    try:
        if family == socket.AF_INET and len(words) >= 1:
            return socket.inet_ntop(socket.AF_INET, struct.pack("<I", words[0]))
        if family == socket.AF_INET6 and len(words) >= 4:
            return socket.inet_ntop(socket.AF_INET6, struct.pack("<4I", *words[:4]))
    except (struct.error, ValueError):
        pass
    return "?"


class _Memory:
    """A task's dumped memory: its page count, and the bytes of the address
    ranges `wanted` (its arguments, its environment) where the dump holds them.
    Only runs that touch those ranges are kept: a pagemap may hold a million."""

    def __init__(self, images: CriuImages, pid: int, wanted: list[tuple[int, int]]):
        self.images = images
        self.runs: list[tuple[int, int, int]] = []   # (vaddr, bytes, offset in the pages image)
        self.pages = None
        self.total = 0
        name = f"pagemap-{pid}.img"
        data = images.raw(name, MAX_BYTES["PAGEMAP"])
        if data is None:
            return
        entries = images.decode(name, data, "PAGEMAP", images.pb.pagemap_head, images.pb.pagemap_entry, reuse=True)
        head = next(entries, None)
        if head is None:
            return
        self.pages = f"pages-{head.pages_id}.img"
        offset = 0
        for entry in entries:
            flags = (entry.flags if entry.HasField("flags") else PE_PRESENT) | (PE_PARENT if entry.in_parent else 0)
            count = entry.nr_pages if entry.HasField("nr_pages") else entry.compat_nr_pages
            self.total += count
            if flags & PE_PRESENT and not flags & PE_PARENT:
                size = count * PAGE_SIZE
                if any(entry.vaddr < end and start < entry.vaddr + size for start, end in wanted):
                    self.runs.append((entry.vaddr, size, offset))
                offset += size

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) as dumped, cut at MAX_ARGS and at the first
        address the dump does not hold."""
        end = min(end, start + MAX_ARGS)
        if self.pages is None or end <= start:
            return b""
        fd = self.images.open(self.pages, 1 << 62)
        if fd is None:
            return b""
        try:
            found, address = [], start
            for vaddr, size, offset in self.runs:
                if not vaddr <= address < vaddr + size:
                    continue
                length = min(end, vaddr + size) - address
                found.append(os.pread(fd, length, offset + address - vaddr))
                address += length
                if address >= end:
                    break
            return b"".join(found)
        except OSError as exc:
            raise from_os_error(exc, f"CRIU image {self.pages} cannot be read", BadArchive, hint=HINT) from None
        finally:
            os.close(fd)


def _strings(data: bytes) -> list[str]:
    return [_text(part) for part in data.split(b"\0") if part]


def _socket(entry) -> dict:
    isk = entry.isk
    return {"id": entry.id, "family": {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}.get(isk.family, str(isk.family)),
            "protocol": PROTOCOLS.get(isk.proto, str(isk.proto)),
            "state": TCP_STATES.get(isk.state, str(isk.state)) if isk.proto == 6 else "",
            "source": f"{_address(isk.family, isk.src_addr)}:{isk.src_port}",
            "destination": f"{_address(isk.family, isk.dst_addr)}:{isk.dst_port}"}


def _describe_file(entry) -> str:
    kind = entry.type
    if entry.HasField("reg"):
        return _text(entry.reg.name)
    if entry.HasField("isk"):
        found = _socket(entry)
        return f"{found['protocol']} {found['source']} -> {found['destination']} {found['state']}".strip()
    if entry.HasField("usk"):
        return f"unix socket {_text(entry.usk.name) or '(unnamed)'}"
    if entry.HasField("pipe"):
        return f"pipe:[{entry.pipe.pipe_id}]"
    if entry.HasField("fifo"):
        return f"fifo:[{entry.fifo.pipe_id}]"
    return f"{kind}"


def describe(images_dir: str, *, env: bool = False) -> dict:
    """The checkpoint in `images_dir` (CRIU's images), for `ferry checkpoint inspect`."""
    images = CriuImages(images_dir)
    try:
        kinds = dict((number, name) for name, number in images.pb.fd_types.items())
        tasks = images.entries("pstree.img", "PSTREE", "pstree_entry") or []
        if not tasks:
            raise BadArchive("the checkpoint has no process tree (pstree.img)", hint=HINT)
        files = {}
        for entry in images.entries("files.img", "FILES", "file_entry") or ():
            files[entry.id] = entry
        processes = []
        for task in tasks[:MAX_TASKS]:
            processes.append(_process(images, task, files, kinds, env))
        sockets = [_socket(entry) for entry in files.values() if entry.HasField("isk")]
        mounts = []
        for name in sorted(images.names):
            if name.startswith("mountpoints-") and name.endswith(".img"):
                for mount in images.entries(name, "MNTS", "mnt_entry") or ():
                    mounts.append({"mountpoint": _text(mount.mountpoint), "source": _text(mount.source),
                                   "root": _text(mount.root),
                                   "fstype": _text(mount.fsname) or ("bind" if mount.fstype == 0 else
                                                                              FSTYPES.get(mount.fstype, str(mount.fstype)))})
        return {"processes": processes, "sockets": sockets, "mounts": mounts, "file_locks": _file_locks(images),
                "memory_pages": sum(p["memory_pages"] for p in processes), "page_size": PAGE_SIZE}
    finally:
        images.close()


def _file_locks(images: CriuImages) -> list[dict]:
    """The locks in filelocks.img, at most MAX_FILE_LOCKS of them; a number
    CRIU does not write (a lease breaking, a forged image) shows as itself."""
    data = images.raw(FILE_LOCKS_IMAGE, MAX_BYTES["FILE_LOCKS"])
    if data is None:
        return []
    cls = images.pb.file_lock_entry
    locks = []
    # Every entry is decoded, so damage past the cap is refused as anywhere else;
    # one reused message keeps a forged million-lock image cheap.
    for entry in images.decode(FILE_LOCKS_IMAGE, data, "FILE_LOCKS", cls, cls, reuse=True):
        if len(locks) < MAX_FILE_LOCKS:
            locks.append({"kind": LOCK_KINDS.get(entry.flag, str(entry.flag)),
                          "type": LOCK_TYPES.get(entry.type, str(entry.type)),
                          "pid": entry.pid, "fd": entry.fd, "start": entry.start, "len": entry.len})
    return locks


def _process(images: CriuImages, task, files: dict, kinds: dict, env: bool) -> dict:
    pid = task.pid
    core = images.one(f"core-{pid}.img", "CORE", "core_entry", required=False)
    mm = images.one(f"mm-{pid}.img", "MM", "mm_entry", required=False)
    wanted = [] if mm is None else [(mm.mm_arg_start, mm.mm_arg_end), (mm.mm_env_start, mm.mm_env_end)]
    memory = _Memory(images, pid, wanted if env else wanted[:1])
    found = {"pid": pid, "ppid": task.ppid, "threads": len(task.threads),
             "comm": _text(core.tc.comm) if core is not None and core.HasField("tc") else "",
             "cmdline": [], "memory_pages": memory.total, "files": []}
    if mm is not None:
        found["cmdline"] = _strings(memory.read(mm.mm_arg_start, mm.mm_arg_end))
        if env:
            found["environment"] = _strings(memory.read(mm.mm_env_start, mm.mm_env_end))
    ids = images.one(f"ids-{pid}.img", "IDS", "task_kobj_ids_entry", required=False)
    if ids is not None and ids.HasField("files_id"):
        for fd in images.entries(f"fdinfo-{ids.files_id}.img", "FDINFO", "fdinfo_entry") or ():
            entry = files.get(fd.id)
            found["files"].append({"fd": fd.fd, "type": kinds.get(fd.type, str(fd.type)),
                                   "description": _describe_file(entry) if entry is not None else ""})
    return found

