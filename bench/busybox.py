"""Tiny images made from the host's static busybox: fast, and no registry needed.
The tests and the benchmark both build theirs here, so both run the same image."""

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


def make_oci_archive(path: str, workdir: str, name: str = "localhost/busybox:latest",
                     extra_config: dict | None = None) -> str:
    """The busybox rootfs as an oci-archive (as `podman save --format oci-archive` writes);
    `extra_config` adds to its image config (Volumes, ExposedPorts...).

    Loading the same archive into two roots gives both the same image ID and
    digest, which a cross-root restore needs.
    """
    import hashlib
    import io
    import json
    layer = make_rootfs_tar(os.path.join(workdir, "layer.tar"), workdir)
    with open(layer, "rb") as f:
        layer_bytes = f.read()
    os.unlink(layer)
    layer_digest = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], **(extra_config or {})},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer_bytes)}]}).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": name}}]}).encode()
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    for blob in (layer_bytes, config, manifest):
        files["blobs/sha256/" + hashlib.sha256(blob).hexdigest()] = blob
    with tarfile.open(path, "w") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path
