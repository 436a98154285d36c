"""Stop-and-copy's memory over CRIU's page server, at both ends of a migration.

The destination runs `criu page-server` into a tmpfs before the source
freezes anything; the source's dump writes the container's pages straight
into it, and only the small rest of the checkpoint goes through the archive
stream. The archive path compresses, sends and unpacks every page in Python
on top of the dump, about 300 MiB/s on a small host; CRIU moves them at the
speed of its dump, and the restore reads them from tmpfs as they came.

The pages travel as protected as the agent's channel: behind an https agent
both ends speak CRIU's TLS with one-time key pairs exchanged in the offer and
the ticket (checkpoint/lazy.py Identity), each trusting only the other's
certificate; behind a plain-http agent they go in the clear, as the archive
itself would. The page server takes one connection and ends with it.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
from dataclasses import dataclass

from ferry.host.criulog import quote_log
from ferry.util import proc
from ferry.util.errors import BadArchive, ToolError

READY_WAIT = 30.0      # seconds for the page server to listen
DONE_WAIT = 120.0      # seconds for it to end once the archive, written after the pages, is in
IMAGES, WORK = "images", "work"
LOG = "page-server.log"
PAGE_IMAGE = re.compile(r"(pagemap(-shmem)?|pages)-\d{1,20}\.img")


@dataclass(frozen=True)
class PagePush:
    """Where a source's dump sends its pages."""
    address: str
    port: int
    tls_config: str | None   # Identity.criu_config of this side, or None in the clear


class PageReceiver:
    """A destination's `criu page-server`, in a session of its own, under a
    `timeout` that ends it if no source comes within `lifetime` seconds."""

    def __init__(self, process: subprocess.Popen, directory: str, port: int):
        self.process = process
        self.directory = directory
        self.port = port

    @property
    def images(self) -> str:
        return os.path.join(self.directory, IMAGES)

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, WORK, LOG)

    def wait(self, timeout: float = DONE_WAIT) -> None:
        """Until the source's dump has closed its connection; ToolError if the pages did not all come."""
        try:
            code = proc.wait(self.process, timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ToolError("criu page-server", None, f"the source's pages did not end within {timeout:.0f} s "
                                                      "of its archive") from None
        if code != 0:
            raise ToolError("criu page-server", code, quote_log(self.log_path) or "the page transfer failed",
                            log_path=self.log_path)

    def stop(self) -> None:
        proc.kill_group(self.process)


def start_receiver(directory: str, address: str, port: int, tls_config: str | None,
                   lifetime: float) -> PageReceiver:
    """CRIU's page server on address:port writing into directory/images, once it listens."""
    for sub in (IMAGES, WORK):
        os.makedirs(os.path.join(directory, sub), mode=0o700, exist_ok=True)
    status_r, status_w = os.pipe()
    argv = ["timeout", "--signal=KILL", str(int(lifetime)), proc.criu_binary() or "criu", "page-server",
            "-D", os.path.join(directory, IMAGES), "-W", os.path.join(directory, WORK), "-o", LOG, "-v4",
            "--address", address, "--port", str(port), "--status-fd", str(status_w)]
    try:
        process = proc.spawn(argv, desc="criu page-server", pass_fds=[status_w], new_session=True,
                             env={"CRIU_CONFIG_FILE": tls_config} if tls_config else None)
        os.close(status_w)
        status_w = -1
        receiver = PageReceiver(process, directory, port)
        ready, _, _ = select.select([status_r], [], [], READY_WAIT)
        if not ready or not os.read(status_r, 1):
            receiver.stop()
            raise ToolError("criu page-server", process.returncode,
                            quote_log(receiver.log_path) or f"it did not listen on {address}:{port}",
                            log_path=receiver.log_path)
        return receiver
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)


def merge_images(received: str, archived: str) -> None:
    """Move the archive's images (small: no pages) beside the received pages,
    so CRIU restores from one directory. The page server wrote only what the
    source sent, named by CRIU; anything else there, or pages in the archive
    as well, is refused."""
    pages = os.listdir(received)
    for name in pages:
        path = os.path.join(received, name)
        if not PAGE_IMAGE.fullmatch(name) or not os.path.isfile(path) or os.path.islink(path):
            raise BadArchive(f"the page server received an unexpected file {name[:64]!r}")
    if not any(name.startswith("pagemap-") for name in pages):
        raise BadArchive("the source's dump sent no pages")
    for name in os.listdir(archived):
        if PAGE_IMAGE.fullmatch(name) or name in pages:
            raise BadArchive(f"the archive of a migration whose pages came apart holds {name[:64]!r}")
    for name in os.listdir(archived):
        # Two tmpfs mounts: a copy, of about 150 KiB.
        shutil.move(os.path.join(archived, name), os.path.join(received, name))
