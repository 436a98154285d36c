"""CRIU over its RPC (`criu swrk`), with pycriu's protobuf messages.

runc drives CRIU for containers; this driver is for what runc cannot express
(stats, lazy pages, page server) and for dumping plain process trees. The swrk
process is started through util.proc like every other tool, and CRIU's
failures are translated here into errors that quote the log and keep its path.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

from ferry.host import probes
from ferry.host.criulog import quote_log
from ferry.util import proc
from ferry.util.errors import Incompatible, NotFound, ToolError

LOG_LEVEL = 4            # CRIU's debug level: the log is what users send us
DEFAULT_TIMEOUT = 600.0  # seconds for one RPC request; big dumps take minutes
FILE_LOCKS_IMAGE = "filelocks.img"   # CRIU writes it when --file-locks dumped some


class DumpStats(NamedTuple):
    """CRIU's own account of a dump (stats-dump), times in microseconds."""
    freezing_time_us: int
    frozen_time_us: int
    memdump_time_us: int
    memwrite_time_us: int
    pages_scanned: int
    pages_written: int
    pages_lazy: int


class RestoreStats(NamedTuple):
    forking_time_us: int
    restore_time_us: int
    pages_restored: int


def _rpc():
    try:
        from pycriu import rpc_pb2
    except ImportError as exc:
        raise Incompatible(f"pycriu is not importable ({exc})", hint="run 'make setup' as root") from None
    return rpc_pb2


def ensure_pipe_max_size(wanted: int = probes.WANTED_PIPE_MAX_SIZE,
                         path: str = "/proc/sys/fs/pipe-max-size") -> None:
    """Raise fs.pipe-max-size so CRIU's page pipes can grow (HOST-NOTES)."""
    with open(path) as f:
        current = int(f.read().strip())
    if current < wanted:
        with open(path, "w") as f:
            f.write(str(wanted))


class Criu:
    """One CRIU binary, spoken to over RPC. A request spawns one `criu swrk`."""

    def __init__(self, binary: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        binary = binary or proc.criu_binary()
        if binary is None:
            raise NotFound("criu is not installed", hint="run 'make setup' as root")
        self.binary = binary
        self.timeout = timeout

    def _request(self, req_type: str, opts, *, desc: str, log_path: str | None):
        rpc = _rpc()
        req = rpc.criu_req(type=getattr(rpc, req_type), opts=opts)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with ours:
            with theirs:
                worker = proc.spawn([self.binary, "swrk", str(theirs.fileno())],
                                    desc=desc, pass_fds=[theirs.fileno()])
            try:
                ours.settimeout(self.timeout)
                ours.send(req.SerializeToString())
                size = len(ours.recv(1, socket.MSG_PEEK | socket.MSG_TRUNC))
                data = ours.recv(size)
            except (socket.timeout, OSError) as exc:
                worker.kill()
                worker.wait()
                reason = "timed out" if isinstance(exc, socket.timeout) else str(exc)
                raise ToolError(desc, None, f"{reason}; {quote_log(log_path or '')}".strip("; "),
                                log_path=log_path) from None
        worker.wait()
        resp = rpc.criu_resp()
        resp.ParseFromString(data)
        if not resp.success:
            raise self._failure(desc, req_type, resp, log_path)
        return resp

    def _failure(self, desc: str, req_type: str, resp, log_path: str | None) -> ToolError:
        quoted = quote_log(log_path) if log_path else ""
        if not quoted:
            quoted = resp.cr_errmsg or (os.strerror(resp.cr_errno) if resp.cr_errno else "no reason given")
        hint = f"CRIU's log is kept at {log_path}" if log_path else None
        if req_type == "RESTORE" and resp.cr_errno == errno.EEXIST:
            hint = "a process with the checkpointed PID already exists; " + (hint or "")
        return ToolError(desc, resp.cr_errno or 1, quoted, hint=hint, log_path=log_path)

    def _opts(self, images_dir: str, log_name: str):
        rpc = _rpc()
        return rpc.criu_opts(images_dir_fd=-1, images_dir=os.path.abspath(images_dir),
                             log_level=LOG_LEVEL, log_file=log_name)

    def dump(self, pid: int, images_dir: str, *, leave_running: bool = False,
             tcp_established: bool = False, shell_job: bool = False,
             log_name: str = "dump.log") -> DumpStats:
        """Dump the process tree rooted at `pid` into `images_dir`."""
        os.makedirs(images_dir, mode=0o700, exist_ok=True)
        ensure_pipe_max_size()
        opts = self._opts(images_dir, log_name)
        opts.pid = pid
        opts.leave_running = leave_running
        opts.tcp_established = tcp_established
        opts.shell_job = shell_job
        log_path = os.path.join(images_dir, log_name)
        self._request("DUMP", opts, desc=f"criu dump of pid {pid}", log_path=log_path)
        return read_dump_stats(images_dir)

    def restore(self, images_dir: str, *, tcp_established: bool = False,
                shell_job: bool = False, log_name: str = "restore.log") -> int:
        """Restore a dumped tree; returns the PID of its root task.

        The restored tree is reparented away from the short-lived swrk worker,
        so it outlives this call.
        """
        opts = self._opts(images_dir, log_name)
        opts.tcp_established = tcp_established
        opts.shell_job = shell_job
        log_path = os.path.join(images_dir, log_name)
        resp = self._request("RESTORE", opts, desc="criu restore", log_path=log_path)
        return resp.restore.pid


IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, STATS_MAGIC = 0x54564319, 0x55105940, 0x57093306
# Field numbers in CRIU's images/stats.proto: stats_entry's, and the ones
# read of dump_stats_entry and restore_stats_entry, in DumpStats' and
# RestoreStats' order.
DUMP_STATS, RESTORE_STATS = 1, 2
DUMP_FIELDS = {"freezing_time": 1, "frozen_time": 2, "memdump_time": 3, "memwrite_time": 4,
               "pages_scanned": 5, "pages_written": 7, "pages_lazy": 9}
MAX_STATS_IMAGE = 64 << 10   # CRIU's are under 100 bytes
RESTORE_FIELDS = {"forking_time": 3, "restore_time": 4, "pages_restored": 5}


def _stats_entry(images_dir: str, name: str) -> dict[int, int | bytes]:
    """The fields of the stats_entry in CRIU's stats-dump or stats-restore.

    The image is a magic and one length-prefixed protobuf message. Its few
    integers are read here directly: pycriu decodes the same, but loading its
    sixty protobuf modules costs every checkpoint and restore 50-75 ms.
    """
    path = os.path.join(images_dir, name)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATS_IMAGE + 1)
        if len(data) > MAX_STATS_IMAGE:
            raise ValueError("too large")
        magic, = struct.unpack_from("<I", data)
        pos = 8 if magic in (IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC) else 4
        if struct.unpack_from("<I", data, pos - 4)[0] != STATS_MAGIC:
            raise ValueError("not a stats image")
        size, = struct.unpack_from("<I", data, pos)
        if pos + 4 + size > len(data):
            raise ValueError("truncated")
        return _protobuf_fields(data[pos + 4:pos + 4 + size])
    except (OSError, ValueError, struct.error) as exc:
        raise NotFound(f"CRIU wrote no readable {name} in {images_dir} ({exc})") from None


def _protobuf_fields(message: bytes) -> dict[int, int | bytes]:
    """Field number -> value of a protobuf message holding varints and
    nested messages only, as CRIU's stats entries do."""
    fields: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            fields[number], pos = _varint(message, pos)
        elif wire_type == 2:
            length, pos = _varint(message, pos)
            if pos + length > len(message):
                raise ValueError("truncated field")
            fields[number], pos = message[pos:pos + length], pos + length
        else:
            raise ValueError(f"unexpected wire type {wire_type}")
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _nested(entry: dict, number: int, what: str, images_dir: str) -> dict[int, int | bytes]:
    if not isinstance(entry.get(number), bytes):
        raise NotFound(f"CRIU's {what} in {images_dir} holds no {what.split('-')[1]} statistics")
    try:
        return _protobuf_fields(entry[number])
    except ValueError as exc:
        raise NotFound(f"CRIU wrote no readable {what} in {images_dir} ({exc})") from None


def read_dump_stats(images_dir: str) -> DumpStats:
    d = _nested(_stats_entry(images_dir, "stats-dump"), DUMP_STATS, "stats-dump", images_dir)
    return DumpStats(*(_number(d, number) for number in DUMP_FIELDS.values()))


def read_restore_stats(images_dir: str) -> RestoreStats:
    r = _nested(_stats_entry(images_dir, "stats-restore"), RESTORE_STATS, "stats-restore", images_dir)
    return RestoreStats(*(_number(r, number) for number in RESTORE_FIELDS.values()))


def _number(fields: dict, number: int) -> int:
    """A varint field, or 0: an image from an archive may put bytes anywhere."""
    value = fields.get(number, 0)
    return value if isinstance(value, int) else 0
