"""Where things live under one state root.

All paths of a root derive from here, so two roots on one machine (as tests
use to simulate two hosts) can never share a file.
"""

from __future__ import annotations

import os
import stat
from collections import namedtuple

from ferry.util.errors import FerryError, UsageError, from_os_error

DEFAULT_ROOT = "/var/lib/ferry"
# Kernel interfaces, not filesystems: a root there fails in confusing ways, or
# writes to the kernel.
KERNEL_TREES = ("/proc", "/sys")
# What ferry keeps at the top of a root (and a filesystem's lost+found). An
# existing directory with no database that holds anything else is someone
# else's (/, /tmp, a home): forcing it to 0700 would lock its users out.
ROOT_ENTRIES = frozenset({"ferry.db", "ferry.db-wal", "ferry.db-shm", "ferry.db-journal", "tmp", "containers",
                          "images", "checkpoints", "volumes", "locks", "runc", "logs", "migrations", "agent",
                          "lost+found"})


# A named tuple rather than a frozen dataclass: every command builds a Layout,
# and importing dataclasses would cost `ferry ps` a fifth of its time.
class Layout(namedtuple("Layout", "root")):
    __slots__ = ()

    @classmethod
    def at(cls, root: str | None) -> "Layout":
        """--root, else $FERRY_ROOT, else the default. An empty value is refused:
        `--root "$UNSET"` must not quietly act on the default root."""
        if root is None:
            root = os.environ.get("FERRY_ROOT")
            if root == "":
                raise UsageError("FERRY_ROOT is set but empty", hint="unset it, or set it to a directory")
            root = root or DEFAULT_ROOT
        elif root == "":
            raise UsageError("--root needs a directory, not an empty string",
                             hint=f"leave --root out for {DEFAULT_ROOT}")
        return cls(os.path.abspath(root))

    def prepare(self) -> None:
        """Create the root, or make an existing one private to root (0700): the
        database holds containers' environments, secrets included. Each way a
        path cannot hold state gets its own one-line error."""
        real = os.path.realpath(self.root)
        for tree in KERNEL_TREES:
            if real == tree or real.startswith(tree + "/"):
                raise FerryError(f"state root {self.root} is inside {tree}, a kernel interface",
                                 hint="pick a directory on a real filesystem with --root")
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            info = os.stat(self.root)
        except FileExistsError:
            raise FerryError(f"state root {self.root} exists and is not a directory",
                             hint="pick a directory with --root") from None
        except NotADirectoryError:
            raise FerryError(f"state root {self.root} cannot be created: a part of its path is a file",
                             hint="pick a directory with --root") from None
        except OSError as error:
            from ferry.util import space
            if space.is_no_space(error):
                raise space.no_space(f"cannot create state root {self.root}", self.root, error.errno) from None
            raise from_os_error(error, f"state root {self.root} cannot be created",
                                hint="pick a writable directory with --root") from None
        if not stat.S_ISDIR(info.st_mode):
            raise FerryError(f"state root {self.root} exists and is not a directory",
                             hint="pick a directory with --root")
        if not os.path.exists(self.database):
            others = sorted(set(os.listdir(self.root)) - ROOT_ENTRIES)
            if others:
                shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
                raise FerryError(f"state root {self.root} is not ferry's: it holds {shown}",
                                 hint="pick a new or empty directory with --root")
        if stat.S_IMODE(info.st_mode) != 0o700:
            try:
                os.chmod(self.root, 0o700)
            except OSError as error:
                raise from_os_error(error, f"state root {self.root} cannot be made private (mode 0700)",
                                    hint="pick a writable directory with --root") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise FerryError(f"state root {self.root} is not writable",
                             hint="pick a writable directory with --root")

    @property
    def database(self) -> str:
        return os.path.join(self.root, "ferry.db")

    @property
    def tmp(self) -> str:
        return os.path.join(self.root, "tmp")

    @property
    def containers(self) -> str:
        return os.path.join(self.root, "containers")

    @property
    def images(self) -> str:
        return os.path.join(self.root, "images")

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.root, "checkpoints")

    def checkpoint_schedule(self, container_id: str) -> str:
        """A container's periodic checkpoints (runtime.schedule), beside its stored ones."""
        return os.path.join(self.checkpoints, container_id, "schedule.json")

    @property
    def volumes(self) -> str:
        return os.path.join(self.root, "volumes")

    @property
    def runc(self) -> str:
        """runc's --root: its state of this root's containers."""
        return os.path.join(self.root, "runc")

    @property
    def migrations(self) -> str:
        """One record per migration this root sent or received (engine/migrations.py)."""
        return os.path.join(self.root, "migrations")

    @property
    def locks(self) -> str:
        return os.path.join(self.root, "locks")

    def lock(self, name: str) -> str:
        return os.path.join(self.locks, f"{name}.lock")

    def container_dir(self, container_id: str) -> str:
        return os.path.join(self.containers, container_id)

    def container_files(self, container_id: str) -> "ContainerFiles":
        return ContainerFiles(self.container_dir(container_id))


# The names in a container's directory, each said once. Archives reuse some
# (a checkpoint's images go in as checkpoint/, the log as ctr.log), as podman's do.
SPEC = "config.json"                # the OCI spec runc runs
EXIT_RECORD = "exit.json"           # the monitor writes it once the process has ended
MONITOR_PID = "monitor.pid"
CONTAINER_PID = "container.pid"     # runc's --pid-file
CONTAINER_LOG = "ctr.log"
ATTACH_SOCKET = "attach.sock"
CONSOLE_SOCKET = "console.sock"     # where runc hands a tty container's pty to the monitor
RUNC_LOG = "runc.log"
MONITOR_LOG = "monitor.log"
JOURNAL = "journal.json"            # engine/journal.py's record of an operation in flight
TOOL_LOCK = "tool.lock"             # held by a runc checkpoint for as long as it lives (journal.hold_for_tool)
CHECKPOINT_IMAGES = "checkpoint"    # a local checkpoint's CRIU images
CHECKPOINT_WORK = "checkpoint-work"  # CRIU's work dir (its logs), never archived
# A marker: the exit that follows is a checkpoint's. The checkpointing command
# cleans up after it, so the monitor runs no exit command then (a whole ferry
# process, 0.1-0.2 s the checkpoint would wait for).
CHECKPOINTING = "checkpointing"
CRIU_CONFIG = "criu.conf"           # runc hands it to CRIU (the org.criu.config annotation)
LAZY_PAGES_PID = "lazy-pages.pid"   # a lazily restored container's memory is still arriving (its daemon)
CRIU_RESTORE_HOOK = "criu-restore-hook"
SPACE_RESERVE = "space.reserve"     # the monitor's room for the log when the disk fills
ETC_FILES = ("hosts", "hostname", "resolv.conf")   # bind-mounted over the container's /etc
SHM_DIR = "shm"                     # /dev/shm of a container in podman's shape (SpecProfile.shm_dir)
CONTAINERENV = ".containerenv"      # podman's /run/.containerenv, for the same


class ContainerFiles(namedtuple("ContainerFiles", "dir")):
    """The paths in one container's directory."""
    __slots__ = ()

    def at(self, name: str) -> str:
        return os.path.join(self.dir, name)

    spec = property(lambda self: self.at(SPEC))
    exit_record = property(lambda self: self.at(EXIT_RECORD))
    monitor_pid = property(lambda self: self.at(MONITOR_PID))
    container_pid = property(lambda self: self.at(CONTAINER_PID))
    log = property(lambda self: self.at(CONTAINER_LOG))
    attach_socket = property(lambda self: self.at(ATTACH_SOCKET))
    console_socket = property(lambda self: self.at(CONSOLE_SOCKET))
    runc_log = property(lambda self: self.at(RUNC_LOG))
    monitor_log = property(lambda self: self.at(MONITOR_LOG))
    journal = property(lambda self: self.at(JOURNAL))
    tool_lock = property(lambda self: self.at(TOOL_LOCK))
    checkpoint_images = property(lambda self: self.at(CHECKPOINT_IMAGES))
    checkpoint_work = property(lambda self: self.at(CHECKPOINT_WORK))
    checkpointing = property(lambda self: self.at(CHECKPOINTING))
    criu_config = property(lambda self: self.at(CRIU_CONFIG))
    lazy_pages_pid = property(lambda self: self.at(LAZY_PAGES_PID))
    criu_restore_hook = property(lambda self: self.at(CRIU_RESTORE_HOOK))
    space_reserve = property(lambda self: self.at(SPACE_RESERVE))
    rootfs = property(lambda self: self.at("rootfs"))     # the overlay's mount point
    upper = property(lambda self: self.at("upper"))       # the container's own changes
    overlay_work = property(lambda self: self.at("work"))
    shm = property(lambda self: self.at(SHM_DIR))
    containerenv = property(lambda self: self.at(CONTAINERENV))
