"""Minimal Debian images from Debian's own packages (debootstrap, variant
minbase), their root filesystems cached machine-wide as tars under
/var/cache/ferry/debian so that a second build, or CI on a fresh clone,
costs seconds."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable

from ferry.image.manifest import DEFAULT_PATH_ENV, ImageConfig, normalise_port
from ferry.util import proc
from ferry.util.errors import NotFound, ToolError, UsageError
from ferry.util.fs import remove_tree, unmount_under
from ferry.util.locks import file_lock
from ferry.util.log import get_logger

log = get_logger("ferry.image.debian")

CACHE_DIR = "/var/cache/ferry/debian"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "FERRY_DEBIAN_MIRROR"
BUILD_TIMEOUT = 1800
# Part of the cache key: bump it when the tidy-up below changes, so old
# cached root filesystems are not reused.
CACHE_FORMAT = 1
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+\Z")
SUITE_RE = re.compile(r"^[a-z][a-z0-9-]*\Z")
SOURCES = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")


@dataclass(frozen=True)
class Service:
    cmd: tuple[str, ...]
    expose: tuple[str, ...]
    stop_signal: str = ""


# Packages whose image should start their service by default, in the foreground.
SERVICES = {
    pkg: Service(("nginx", "-g", "daemon off;"), ("80/tcp",), "SIGQUIT")
    for pkg in ("nginx-light", "nginx", "nginx-full", "nginx-extras", "nginx-core")
}


@dataclass(frozen=True)
class Recipe:
    suite: str
    include: tuple[str, ...]              # sorted, unique
    cmd: tuple[str, ...] | None = None    # None: the service default, else bash
    expose: tuple[str, ...] = ()
    env: tuple[str, ...] = ()

    @classmethod
    def make(cls, suite: str, include, *, cmd=None, expose=(), env=()) -> "Recipe":
        if not SUITE_RE.match(suite):
            raise UsageError(f"invalid Debian suite {suite!r}", hint="e.g. --suite bookworm")
        packages = sorted({p.strip() for p in include if p.strip()})
        for package in packages:
            if not PACKAGE_RE.match(package):
                raise UsageError(f"invalid Debian package name {package!r}",
                                 hint="use --include pkg1,pkg2 with Debian package names")
        for port in expose:
            number, _, protocol = normalise_port(port).partition("/")
            if not number.isdigit() or not 0 < int(number) < 65536 or protocol not in ("tcp", "udp", "sctp"):
                raise UsageError(f"invalid port {port!r} to expose", hint="e.g. --expose 80/tcp")
        for item in env:
            if "=" not in item:
                raise UsageError(f"invalid environment entry {item!r}", hint="use NAME=VALUE")
        return cls(suite, tuple(packages), tuple(cmd) if cmd else None,
                   tuple(normalise_port(p) for p in expose), tuple(env))

    @property
    def key(self) -> str:
        """What the cached root filesystem depends on: suite and packages only."""
        text = json.dumps([CACHE_FORMAT, self.suite, list(self.include)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def service(self) -> Service | None:
        return next((SERVICES[p] for p in self.include if p in SERVICES), None)

    def image_config(self) -> ImageConfig:
        service = self.service() if self.cmd is None else None
        cmd = self.cmd or (service.cmd if service else ("bash",))
        expose = self.expose or (service.expose if service else ())
        env = self.env if any(e.startswith("PATH=") for e in self.env) else (DEFAULT_PATH_ENV, *self.env)
        return ImageConfig(cmd=cmd, env=tuple(env), exposed_ports=expose,
                           stop_signal=service.stop_signal if service else "")

    def describe(self) -> str:
        return f"{self.suite} minbase" + (f" +{','.join(self.include)}" if self.include else "")


def host_mirror(suite: str) -> str:
    """The Debian mirror this host's apt already uses for `suite`, so builds
    go where the host's package installs go; deb.debian.org otherwise."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV]
    files = [SOURCES[0]] + sorted(glob.glob(os.path.join(SOURCES[1], "*.list"))
                                  + glob.glob(os.path.join(SOURCES[1], "*.sources")))
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        mirror = mirror_in_sources(text, suite)
        if mirror:
            return mirror
    return DEFAULT_MIRROR


def mirror_in_sources(text: str, suite: str) -> str | None:
    """The URI serving `suite` in one-line (`deb URI SUITE ...`) or deb822 sources."""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[0] == "deb" and not fields[1].startswith("["):
            if fields[2] == suite:
                return fields[1]
    for stanza in re.split(r"\n\s*\n", text):
        values: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, _, value = line.partition(":")
                values[key.strip().lower()] = value.strip()
        if "deb" in values.get("types", "").split() and suite in values.get("suites", "").split():
            uris = values.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def _empty_dir(path: str) -> None:
    for name in os.listdir(path) if os.path.isdir(path) else ():
        entry = os.path.join(path, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            shutil.rmtree(entry)
        else:
            os.unlink(entry)


def tidy_rootfs(rootfs: str, recipe: Recipe) -> None:
    """Drop what an image should not carry: apt's downloads and lists, logs,
    device nodes (the runtime provides /dev) and the build host's identity."""
    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/log/*.log", "var/log/apt/*"):
        for path in glob.glob(os.path.join(rootfs, pattern)):
            if os.path.isfile(path) or os.path.islink(path):
                os.unlink(path)
    lists = os.path.join(rootfs, "var/lib/apt/lists")
    _empty_dir(lists)
    os.makedirs(os.path.join(lists, "partial"), exist_ok=True)
    _empty_dir(os.path.join(rootfs, "dev"))
    with open(os.path.join(rootfs, "etc/hostname"), "w") as f:
        f.write("localhost\n")
    with open(os.path.join(rootfs, "etc/resolv.conf"), "w"):
        pass
    if recipe.service() is not None and os.path.isdir(os.path.join(rootfs, "var/log/nginx")):
        # Logs go to the container's stdout/stderr, as in the official nginx image.
        for name, target in (("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")):
            path = os.path.join(rootfs, "var/log/nginx", name)
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(target, path)


def _debootstrap_error(recipe: Recipe, result: proc.Result, log_path: str, full_log: str) -> Exception:
    output = result.stdout + result.stderr
    missing = re.search(r"Couldn't find these debs: (.*)", output)
    if missing:
        return NotFound(f"Debian {recipe.suite} has no package(s) {missing.group(1).strip()}",
                        hint="check the names given to --include")
    with open(log_path, "w") as f:
        f.write(full_log)
    if re.search(r"Failed getting release file|Couldn't download", output):
        hint = f"check that the Debian mirror can be reached; log kept in {log_path}"
    else:
        hint = f"see the log kept in {log_path}"
    return ToolError("debootstrap", result.returncode, proc.tail(output, 2), hint=hint, log_path=log_path)


def rootfs_tar(recipe: Recipe, *, cache_dir: str = CACHE_DIR,
               progress: Callable[[str], None] | None = None) -> str:
    """The cached root filesystem tar of `recipe`, built on first use."""
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    tar_path = os.path.join(cache_dir, f"{recipe.suite}-{recipe.key}.tar")
    if os.path.exists(tar_path):
        return tar_path
    with file_lock(os.path.join(cache_dir, f".{recipe.key}.lock")):
        if os.path.exists(tar_path):
            return tar_path   # another process built it while we waited
        mirror = host_mirror(recipe.suite)
        if progress:
            progress(f"building Debian {recipe.describe()} from {mirror} (cached in {cache_dir})")
        work = tempfile.mkdtemp(dir=cache_dir, prefix=".build-")
        try:
            rootfs = os.path.join(work, "rootfs")
            argv = ["debootstrap", "--variant=minbase"]
            if recipe.include:
                argv.append("--include=" + ",".join(recipe.include))
            try:
                result = proc.run([*argv, recipe.suite, rootfs, mirror], desc="debootstrap",
                                  timeout=BUILD_TIMEOUT, check=False)
            finally:
                unmount_under(rootfs)  # debootstrap mounts /proc and /sys in its target
            if result.returncode != 0:
                detail = os.path.join(rootfs, "debootstrap", "debootstrap.log")
                full_log = result.stdout + result.stderr
                if os.path.isfile(detail):
                    with open(detail, errors="replace") as f:
                        full_log += f.read()
                log_path = os.path.join(cache_dir, f"{recipe.suite}-{recipe.key}.log")
                raise _debootstrap_error(recipe, result, log_path, full_log)
            tidy_rootfs(rootfs, recipe)
            building = os.path.join(work, "rootfs.tar")
            proc.run(["tar", "--create", "--file", building, "--numeric-owner", "--sort=name",
                      "--xattrs", "--xattrs-include=security.capability", "--directory", rootfs, "."],
                     desc="pack the Debian root filesystem", timeout=BUILD_TIMEOUT)
            with open(building, "rb") as f:
                os.fsync(f.fileno())
            os.replace(building, tar_path)
            log.debug("cached %s as %s", recipe.describe(), tar_path)
        finally:
            remove_tree(work)
    return tar_path
