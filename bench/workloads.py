"""The workloads, each the same root filesystem in both engines.

busybox httpd: the test suite's busybox OCI archive, loaded into both engines.
nginx and redis: ferry builds them with `image build-debian` (debootstrap,
cached as one tar under /var/cache/ferry/debian); podman loads an OCI archive
whose one layer is that very tar and whose config is ferry's image config, so
both engines unpack byte-identical files (the run checks that the layer
digests match).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
from dataclasses import dataclass

from bench.busybox import make_oci_archive
from bench.engines import BenchError, Ferry, wait_until

MIB = 1 << 20
GIB = 1 << 30
SUITE = "bookworm"
REDIS_CMD = ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no",
             "--enable-debug-command", "yes"]
# `python -c REDIS_CLIENT IP` from the checkout, in another netns: one
# connection; each stdin line is a command, each answer one stdout line.
REDIS_CLIENT = """
import sys
from bench.workloads import Redis
client = Redis(sys.argv[1], 6379, timeout=60)
print("connected", flush=True)
for line in sys.stdin:
    print(client.command(*line.split()), flush=True)
"""
# nginx closes a keep-alive connection after 1000 requests by default, which
# would break the client's one connection; the access log would grow the
# archives with every request. Both engines run this same command.
NGINX_CMD = ["sh", "-c",
             "sed -i 's|access_log /var/log/nginx/access.log;|access_log off; keepalive_requests 1000000000; "
             "keepalive_timeout 3600s;|' /etc/nginx/nginx.conf && exec nginx -g 'daemon off;'"]
BUSYBOX_CMD = ["httpd", "-f", "-p", "80", "-h", "/var/www"]
# DEBUG POPULATE's own values ("value:N", no size argument): memory is then
# mostly redis' dict entries, objects and small strings, as with real keys,
# rather than long runs of zeros that compress to nothing.
REDIS_VALUE_SIZE: int | None = None
POPULATE_TIMEOUT = 300


@dataclass(frozen=True)
class Workload:
    name: str           # e.g. redis-1g
    kind: str           # busybox | nginx | redis
    image: str
    command: tuple[str, ...]
    proto: str          # bench.client protocol
    port: int
    fill_bytes: int = 0

    @property
    def gib(self) -> float:
        return self.fill_bytes / GIB

    def timeout(self) -> float:
        """For one checkpoint or restore: generous, and growing with memory."""
        return 120 + 240 * self.gib


def redis(size_mib: int) -> Workload:
    label = f"{size_mib // 1024}g" if size_mib >= 1024 else f"{size_mib}m"
    return Workload(f"redis-{label}", "redis", "localhost/bench-redis:latest", tuple(REDIS_CMD),
                    "redis", 6379, size_mib * MIB)


BUSYBOX = Workload("busybox-httpd", "busybox", "localhost/bench-busybox:latest", tuple(BUSYBOX_CMD),
                   "http-close", 80)
NGINX = Workload("nginx", "nginx", "localhost/bench-nginx:latest", tuple(NGINX_CMD), "http", 80)
QUICK = (redis(256),)
FULL = (BUSYBOX, NGINX, redis(256), redis(1024), redis(2048))
BY_NAME = {w.name: w for w in (*FULL,)}
# Addresses for ferry's benchmark containers on its default network
# (10.90.0.0/16), far from the low addresses IPAM hands out first.
FERRY_IPS = {w.name: f"10.90.250.{10 + i}" for i, w in enumerate(FULL)}


# ---- images -------------------------------------------------------------------

def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def oci_config(ferry_config: dict) -> dict:
    """ferry's `image inspect` Config as an OCI image config's `config` object."""
    config = {"Env": list(ferry_config.get("Env") or []), "Cmd": list(ferry_config.get("Cmd") or [])}
    if ferry_config.get("Entrypoint"):
        config["Entrypoint"] = list(ferry_config["Entrypoint"])
    for key in ("WorkingDir", "User", "StopSignal"):
        if ferry_config.get(key):
            config[key] = ferry_config[key]
    if ferry_config.get("ExposedPorts"):
        config["ExposedPorts"] = {port: {} for port in ferry_config["ExposedPorts"]}
    return config


def write_oci_archive(path: str, layer_tar: str, config: dict, ref: str) -> str:
    """An oci-archive with `layer_tar` as its one (uncompressed) layer, streamed."""
    layer_digest = _sha256_file(layer_tar)
    layer_size = os.path.getsize(layer_tar)
    config_bytes = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest(), "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}]}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + hashlib.sha256(manifest).hexdigest(), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref}}]}).encode()

    def add(tar: tarfile.TarFile, member: str, data: bytes) -> None:
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", index)
        for data in (config_bytes, manifest):
            add(tar, "blobs/sha256/" + hashlib.sha256(data).hexdigest(), data)
        info = tarfile.TarInfo("blobs/sha256/" + layer_digest.split(":", 1)[1])
        info.size = layer_size
        with open(layer_tar, "rb") as layer:
            tar.addfile(info, layer)
    return path


def debian_rootfs_tar(include: list[str]) -> str:
    """The cached root filesystem tar that `ferry image build-debian` used."""
    from ferry.image import debian   # ferry's own cache key: the same tar, not a rebuild
    recipe = debian.Recipe.make(SUITE, include)
    path = os.path.join(debian.CACHE_DIR, f"{recipe.suite}-{recipe.key}.tar")
    if not os.path.isfile(path):
        raise BenchError(f"ferry's cached Debian root filesystem {path} is missing after build-debian")
    return path


def make_busybox_archive(workdir: str) -> str:
    """The busybox root filesystem the tests use, as an oci-archive."""
    return make_oci_archive(os.path.join(workdir, "busybox-oci.tar"), workdir, name=BUSYBOX.image)


def prepare_images(kinds: set[str], ferry: Ferry, engines: list, workdir: str, log) -> dict:
    """Give every engine the images of `kinds`; return per image the layer digests."""
    archives: dict[str, str] = {}
    if "busybox" in kinds:
        archives[BUSYBOX.image] = make_busybox_archive(workdir)
        ferry.load(archives[BUSYBOX.image])
    for kind, include, cmd in (("nginx", ["nginx-light"], None), ("redis", ["redis-server"], REDIS_CMD)):
        if kind not in kinds:
            continue
        ref = NGINX.image if kind == "nginx" else QUICK[0].image
        log(f"ferry image build-debian {ref} --include {','.join(include)}")
        ferry.build_debian(ref, include, cmd)
        archive = os.path.join(workdir, f"{kind}-oci.tar")
        write_oci_archive(archive, debian_rootfs_tar(include), oci_config(ferry.image_config(ref)), ref)
        archives[ref] = archive
    layers = {}
    for ref, archive in archives.items():
        for engine in engines:
            if engine is not ferry:
                log(f"{engine.name} load -i {os.path.basename(archive)}")
                engine.load(archive)
        layers[ref] = {engine.name: engine.image_layers(ref) for engine in engines}
        distinct = {json.dumps(v) for v in layers[ref].values()}
        if len(distinct) != 1:
            raise BenchError(f"{ref}: the engines' layers differ ({layers[ref]}), so the root "
                             "filesystems are not the same")
        os.unlink(archive)
    return layers


# ---- talking to the workloads -------------------------------------------------

class Redis:
    """A minimal RESP client over one connection."""

    def __init__(self, host: str, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def command(self, *args, timeout: float | None = None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(parts))
        return self._reply()

    def _fill(self, need) -> None:
        while not need():
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buffer += chunk

    def _reply(self):
        self._fill(lambda: b"\r\n" in self.buffer)
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            self._fill(lambda: len(self.buffer) >= size + 2)
            data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
            return data.decode(errors="replace")
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected redis reply {line!r}")


def info_memory(r: Redis) -> dict:
    text = r.command("INFO", "memory")
    return {k: v for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def http_get(host: str, port: int, timeout: float = 2.0) -> str:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    text = data.decode(errors="replace")
    if not text.startswith("HTTP/1.") or " 200 " not in text.split("\r\n", 1)[0] + " ":
        raise RuntimeError(f"unexpected HTTP reply {text[:80]!r}")
    return text


def wait_ready(workload: Workload, ip: str, timeout: float = 30) -> None:
    def ping():
        if workload.kind == "redis":
            with Redis(ip, workload.port, timeout=2) as r:
                return r.command("PING") == "PONG"
        return bool(http_get(ip, workload.port))
    wait_until(ping, f"{workload.name} at {ip}:{workload.port}", timeout)


def populate(r: Redis, keys: int) -> None:
    """Keys key:0 .. key:N-1 (DEBUG POPULATE skips the ones that exist)."""
    size = () if REDIS_VALUE_SIZE is None else (REDIS_VALUE_SIZE,)
    r.command("DEBUG", "POPULATE", keys, "key", *size)


def fill(workload: Workload, ip: str) -> dict:
    """DEBUG POPULATE until INFO memory's used_memory reaches the target."""
    if workload.kind != "redis":
        return {}
    target = workload.fill_bytes
    started = time.monotonic()
    with Redis(ip, workload.port, timeout=POPULATE_TIMEOUT) as r:
        base = int(info_memory(r)["used_memory"])
        probe = 20000
        populate(r, probe)
        used = int(info_memory(r)["used_memory"])
        per_key = max(1.0, (used - base) / probe)
        keys = probe
        for _ in range(8):
            if used >= target:
                break
            keys += max(100, int((target - used) / per_key) + 1)
            populate(r, keys)
            used = int(info_memory(r)["used_memory"])
        if used < target:
            raise BenchError(f"{workload.name}: used_memory {used} is below {target} after DEBUG POPULATE")
        dbsize = r.command("DBSIZE")
        memory = info_memory(r)
    return {"keys": dbsize, "value_size": REDIS_VALUE_SIZE, "used_memory": int(memory["used_memory"]),
            "used_memory_rss": int(memory.get("used_memory_rss", 0)), "fill_seconds": time.monotonic() - started}


def verify(workload: Workload, ip: str, expected: dict) -> None:
    """After a restore: the server answers, and redis still holds every key."""
    wait_ready(workload, ip)
    if workload.kind == "redis":
        with Redis(ip, workload.port, timeout=30) as r:
            keys = r.command("DBSIZE")
            value = r.command("GET", "key:1")
        if keys != expected.get("keys") or not (value or "").startswith("value:1"):
            raise BenchError(f"{workload.name} at {ip} came back with {keys} keys "
                             f"(expected {expected.get('keys')}) and key:1 = {str(value)[:20]!r}")
