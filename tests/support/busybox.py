"""Tiny images made from the host's static busybox: fast, and no registry needed."""

from __future__ import annotations

import os
import shutil
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "echo", "sleep", "httpd", "nc", "wget", "mkdir", "rm", "touch",
           "ps", "id", "env", "hostname", "ip", "ifconfig", "true", "false", "kill", "sed",
           "grep", "head", "tail", "wc", "date", "printf", "test", "mount", "uname", "pwd",
           "stat", "ping", "seq", "tee")


def make_rootfs(dest: str) -> str:
    """A minimal root filesystem with busybox and its applets as symlinks."""
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/www", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    for applet in APPLETS:
        link = os.path.join(dest, "bin", applet)
        if not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    with open(os.path.join(dest, "var", "www", "index.html"), "w") as f:
        f.write("hello from busybox\n")
    return dest


def make_rootfs_tar(path: str, workdir: str) -> str:
    """The same root filesystem as an uncompressed tar (as `podman export` writes)."""
    rootfs = make_rootfs(os.path.join(workdir, "busybox-rootfs"))
    with tarfile.open(path, "w") as tar:
        for name in sorted(os.listdir(rootfs)):
            tar.add(os.path.join(rootfs, name), arcname=name,
                    filter=lambda info: _as_root(info))
    shutil.rmtree(rootfs)
    return path


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
