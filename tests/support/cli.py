"""Run the real ferry CLI against one state root, and check it left nothing behind."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

TIMEOUT = 120


@dataclass
class Ferry:
    root: str

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "ferry", "--root", self.root, *args],
                              input=input, capture_output=True, text=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
        return done

    def json(self, *args: str):
        return json.loads(self(*args).stdout)

    def inspect(self, name: str) -> dict:
        return self.json("inspect", name)[0]

    def names(self) -> set[str]:
        return {c["Names"][0] for c in self.json("ps", "-a", "--format", "json")}

    def remove_everything(self) -> None:
        for name in self.names():
            self("rm", "-f", name, check=False)
        self("system", "prune", "-f", check=False)
        # The default network's bridge is shared by roots: removing this root's
        # use of it deletes the bridge once no other root needs it.
        self("network", "rm", "-f", "ferry", check=False)


@contextlib.contextmanager
def busybox_root(workdir):
    """A root holding the busybox image, for one module's tests (the runtime's
    tools must be here); emptied and checked for leftovers afterwards."""
    from bench.busybox import make_oci_archive
    from tests.conftest import require
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    ferry = Ferry(str(workdir / "root"))
    ferry("load", "-i", make_oci_archive(str(workdir / "busybox-oci.tar"), str(workdir)))
    ferry.workdir = workdir
    ferry.seen = set()
    yield ferry
    ferry.remove_everything()
    assert leftovers(ferry.root, ferry.seen) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, deadline: float = 20.0) -> str:
    """GET with retries until the server answers (it may still be starting)."""
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def wait_for(predicate, what: str, deadline: float = 30.0):
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def leftovers(root: str, container_ids: set[str]) -> list[str]:
    """Everything of these containers still on the host: processes, cgroups, files, netns."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ferry.runtime.monitor" in cmdline and root in cmdline:
            found.append(f"monitor process {pid}")
        if cmdline.startswith("ferry-ports:") and any(cid in cmdline for cid in container_ids):
            found.append(f"port holder {pid}")
    for cid in container_ids:
        found += [f"cgroup {p}" for p in glob.glob(f"/sys/fs/cgroup/*/ferry*/{cid}")]
        if os.path.exists(os.path.join(root, "containers", cid)):
            found.append(f"container dir {cid[:12]}")
        # ferry-ID, or ferry-ID-ROOTTAG for a container adopted from another root
        found += [f"netns {os.path.basename(p)}" for p in glob.glob(f"/run/netns/ferry-{cid[:12]}*")]
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    found += [f"nft rules of {cid[:12]}" for cid in container_ids if cid[:12] in ruleset]
    runc_root = os.path.join(root, "runc")
    if os.path.isdir(runc_root):
        found += [f"runc state {d}" for d in os.listdir(runc_root)]
    return found


@contextlib.contextmanager
def image_store(root: str):
    """The image store of a state root, opened as the engine opens it."""
    from ferry.image.store import ImageStore
    from ferry.store.db import Database
    from ferry.store.layout import Layout
    layout = Layout.at(root)
    db = Database(layout.database)
    try:
        yield ImageStore(layout, db)
    finally:
        db.close()
