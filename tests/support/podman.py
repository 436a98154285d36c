"""The real podman that setup installs, for tests that compare with it or
trade checkpoints with it: run as the benchmark runs it, in a private mount
namespace with its own storage under /tmp (podman refuses a runroot path
longer than 50 characters, and pytest's are)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Iterator

from bench.engines import Podman, PodmanNamespace

TIMEOUT = 300


@contextlib.contextmanager
def private_podman(prefix: str, volume_path: str | None = None) -> Iterator[tuple[Podman, pathlib.Path]]:
    """(podman, a scratch dir of its own); everything it made goes at the end."""
    base = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    namespace = PodmanNamespace(str(base / "ns"))
    os.makedirs(namespace.base)
    namespace.start()
    engine = Podman(str(base / "engine"), namespace, volume_path=volume_path)
    try:
        yield engine, base
    finally:
        subprocess.run(engine.argv("rm", "-a", "-f", "-t", "0"), capture_output=True, timeout=120)
        subprocess.run(engine.argv("volume", "rm", "-a", "-f"), capture_output=True, timeout=120)
        namespace.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def podman_for_tests(prefix: str, volume_path: str | None = None) -> Iterator[tuple[Podman, pathlib.Path]]:
    """private_podman, or the test skipped when the host lacks what podman's containers need."""
    from tests.conftest import require
    for key in ("criu", "runc", "overlayfs", "netns", "nftables"):
        require(key)
    with private_podman(prefix, volume_path) as pair:
        yield pair


def podman(engine: Podman, *args: str) -> str:
    """Run podman; its stdout, or an AssertionError with its stderr."""
    done = subprocess.run(engine.argv(*args), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout


def in_namespace(engine: Podman, *argv: str) -> str:
    """Another tool (buildah) in podman's mount namespace: its mounts stay there."""
    done = subprocess.run([*engine.namespace.prefix(), *argv], capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


class Sides:
    """The same command line, given to podman and to ferry."""

    def __init__(self, podman: Podman, ferry):
        self.podman, self.ferry = podman, ferry

    def both(self, *args: str, run_flags: bool = False) -> tuple[subprocess.CompletedProcess,
                                                                 subprocess.CompletedProcess]:
        podman_args = list(args)
        if run_flags:   # podman's default ulimits exceed this host's (no CAP_SYS_RESOURCE)
            podman_args[1:1] = self.podman.run_flags()
        theirs = subprocess.run(self.podman.argv(*podman_args), capture_output=True, text=True, timeout=TIMEOUT)
        ours = self.ferry(*args, check=False)
        return theirs, ours


@contextlib.contextmanager
def busybox_sides(prefix: str, *setup: tuple[str, ...]) -> Iterator[Sides]:
    """A private podman and a ferry root beside it, both holding busybox and
    having run each `setup` command line (run ones with podman's run flags)
    alike; at the end ferry's containers go, and nothing of them may be left."""
    from bench.busybox import make_oci_archive
    from tests.support.cli import Ferry, leftovers
    with podman_for_tests(prefix) as (engine, base):
        ferry = Ferry(str(base / "ferry"))
        ids: set[str] = set()
        try:
            pair = Sides(engine, ferry)
            image = make_oci_archive(str(base / "busybox-oci.tar"), str(base))
            for args in (("load", "-i", image), *setup):
                theirs, ours = pair.both(*args, run_flags=args[0] in ("run", "create"))
                # a command's own exit code (`run ... sh -c 'exit 3'`) must be the same
                assert theirs.returncode == ours.returncode and (ours.returncode == 0 or args[0] == "run"), \
                    (args, theirs.stderr, ours.stderr)
            yield pair
        finally:
            ids = {c["Id"] for c in ferry.json("ps", "-a", "--format", "json")}
            ferry.remove_everything()
    assert leftovers(ferry.root, ids) == []
