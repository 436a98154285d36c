"""System-level facade calls: the host preflight, disk usage, info, and system prune."""

from __future__ import annotations

import os
from typing import NamedTuple

from ferry.host import probes
from ferry.host.probes import Check


class SystemReport(NamedTuple):
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        """True when checkpoint/restore can work on this host."""
        return not self.blocking

    @property
    def blocking(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.blocking)

    def to_dict(self) -> dict:
        return {"ready": self.ready,
                "checks": {c.key: {k: v for k, v in c.to_dict().items() if k != "key"}
                           for c in self.checks}}


def system_check() -> SystemReport:
    return SystemReport(tuple(probes.run_all()))


# ---- system df, info, prune (podman 4.3.1's shapes) -------------------------------

class ImageUsage(NamedTuple):
    id: str
    names: tuple[str, ...]
    created: str
    size: int
    shared: int        # bytes of its layers that other images use too
    containers: int


class ContainerUsage(NamedTuple):
    id: str
    image_id: str
    command: str
    volumes: int       # named volumes it mounts
    size: int          # bytes it wrote (its overlay's upper dir)
    created: str
    state: str
    name: str


class VolumeUsage(NamedTuple):
    name: str
    links: int         # containers that name it
    size: int


class DiskUsage(NamedTuple):
    images: list[ImageUsage]
    containers: list[ContainerUsage]
    volumes: list[VolumeUsage]


def disk_usage(engine) -> DiskUsage:
    """`system df`: what images, containers and volumes take on disk."""
    from ferry.engine.images import container_counts
    from ferry.engine.listing import RUNNING
    from ferry.util.fs import tree_size
    counts = container_counts(engine)
    images = engine.images.list()
    users: dict[str, int] = {}
    for image in images:
        for diff_id in set(image.layers):
            users[diff_id] = users.get(diff_id, 0) + 1
    image_rows = []
    for image in images:
        shared = sum(engine.images.layer_size(d) for d in set(image.layers) if users[d] > 1)
        image_rows.append(ImageUsage(image.id, image.names, image.created, image.size, shared,
                                     counts.get(image.id, 0)))
    container_rows, links = [], {}
    for container in engine.containers.list(all_states=True):
        named = [v.source for v in container.config.named_volumes]
        for name in named:
            links[name] = links.get(name, 0) + 1
        written = tree_size(engine.layout.container_files(container.id).upper)
        container_rows.append(ContainerUsage(
            container.id, container.image_id, " ".join(container.config.args), len(named), written,
            container.created_at, "running" if container.state == RUNNING else container.state, container.name))
    volume_rows = [VolumeUsage(v["Name"], links.get(v["Name"], 0), tree_size(engine.volumes.data_dir(v["Name"])))
                   for v in engine.volumes.list()]
    return DiskUsage(image_rows, container_rows, volume_rows)


class PruneReport(NamedTuple):
    containers: list[str]      # IDs, as podman lists them
    networks: list[str]
    volumes: list[str]
    images: list[str]
    leftovers: list[str]       # what crashes left (mounts, dirs, stale imports): ferry's own
    reclaimed: int             # bytes


# What `system prune --filter` takes (podman 4.3.1: label and until).
PRUNE_FILTER_KEYS = ("label", "until")


def system_prune(engine, *, all_images: bool = False, volumes: bool = False,
                 filters: list[str] = ()) -> PruneReport:
    """`system prune`: stopped containers (never a checkpointed one: it is a
    service waiting to be restored), unused networks, unused volumes with
    `volumes`, dangling images (every unused one with `all_images`), then what
    crashes left behind."""
    from ferry.engine.images import prune_images
    texts = list(filters)
    check_prune_filters(texts)
    leftovers = engine.prune_runc_leftovers()
    containers, reclaimed = engine.prune_containers(texts)
    networks = _prune_networks(engine, texts)
    removed_volumes: list[str] = []
    if volumes:
        from ferry.util.fs import tree_size
        labels = [t.partition("=")[2] for t in texts if t.startswith("label=")]
        names = engine.volumes.prunable({"label": labels} if labels else {})
        sizes = {name: tree_size(engine.volumes.data_dir(name)) for name in names}
        removed_volumes = engine.volumes.prune(names)
        reclaimed += sum(sizes[name] for name in removed_volumes)
    images = prune_images(engine, every_unused=all_images, filters=texts)
    reclaimed += sum(size for _, size in images)
    leftovers += engine.prune_leftovers()
    return PruneReport([c for c, _ in containers], networks, removed_volumes, [i for i, _ in images],
                       leftovers, reclaimed)


def check_prune_filters(texts: list[str]) -> None:
    """Refuse what `system prune --filter` does not take, in podman's words."""
    from ferry.image.filters import parse_filters
    from ferry.util.errors import UsageError
    for text in texts:
        try:
            parse_filters([text], PRUNE_FILTER_KEYS)
        except UsageError:
            raise UsageError(f"{text.partition('=')[0].rstrip('!')} is an invalid filter",
                             hint="system prune takes label=... and until=...") from None


def _prune_networks(engine, filters: list[str]) -> list[str]:
    """Networks no container uses (never the default one), as `network prune` finds them."""
    from ferry.engine import networks
    labels = [text.partition("=")[2] for text in filters if text.startswith("label=")]
    return networks.prune_networks(engine, networks.prunable_networks(engine, labels or None))


# ---- info and version ----------------------------------------------------------------

def host_info(engine) -> dict:
    """`info`: podman's sections (host, store, registries, plugins, version)
    with what ferry can say truthfully, and a `ferry` section of its own paths
    and tools. Reads the state root only when it exists: info creates nothing."""
    import socket
    import ferry
    from ferry.image.manifest import host_architecture
    layout = engine.layout
    uname = os.uname()
    memory = _meminfo()
    containers = {"number": 0, "paused": 0, "running": 0, "stopped": 0}
    image_count = 0
    if os.path.exists(layout.database) and os.geteuid() == 0:
        for summary in engine.listing.containers(all_states=True):
            state = summary.state if summary.state in ("running", "paused") else "stopped"
            containers["number"] += 1
            containers[state] += 1
        from ferry.image.listing import list_images
        image_count = len(list_images(engine.db))
    runc_path, runc_version = _tool_version("runc")
    criu_path, criu_version = _tool_version("criu")
    return {
        "host": {
            "arch": host_architecture(),
            "cgroupManager": "cgroupfs",
            "cgroupVersion": "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1",
            "cgroupControllers": _cgroup_controllers(),
            "cpus": os.cpu_count() or 0,
            "distribution": _distribution(),
            "hostname": socket.gethostname(),
            "kernel": uname.release,
            "memFree": memory.get("MemFree", 0),
            "memTotal": memory.get("MemTotal", 0),
            "ociRuntime": {"name": "runc", "package": "", "path": runc_path, "version": runc_version},
            "os": "linux",
            "swapFree": memory.get("SwapFree", 0),
            "swapTotal": memory.get("SwapTotal", 0),
            "uptime": _uptime(),
        },
        "store": {
            "containerStore": containers,
            "graphDriverName": "overlay",
            "graphRoot": layout.root,
            "imageStore": {"number": image_count},
            "volumePath": os.path.join(layout.root, "volumes"),
        },
        "registries": {},
        "plugins": {"volume": ["local"], "network": ["bridge"], "log": ["k8s-file"], "authorization": None},
        "version": version_info(),
        "ferry": {"version": ferry.__version__, "root": layout.root, "database": layout.database,
                  "images": layout.images, "containers": layout.containers, "checkpoints": layout.checkpoints,
                  "criu": {"path": criu_path, "version": criu_version}},
    }


def version_info() -> dict:
    """podman's version keys: ferry's version, and Python's where podman names Go's.
    No build time is recorded: Built is 0, shown as podman shows its own 0."""
    import platform
    import ferry
    from ferry.image.manifest import host_architecture
    return {"APIVersion": ferry.__version__, "Version": ferry.__version__,
            "GoVersion": f"python{platform.python_version()}", "GitCommit": "",
            "BuiltTime": "Thu Jan  1 00:00:00 1970",
            "Built": 0, "OsArch": f"linux/{host_architecture()}", "Os": "linux"}


def _meminfo() -> dict[str, int]:
    found = {}
    try:
        with open("/proc/meminfo") as lines:
            for text in lines:
                key, _, rest = text.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    found[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return found


def _cgroup_controllers() -> list[str]:
    """The controllers ferry's containers can use: v2's list, or v1's mounted hierarchies."""
    try:
        with open("/sys/fs/cgroup/cgroup.controllers") as f:
            return f.read().split()
    except OSError:
        pass
    wanted = ("cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls", "perf_event",
              "net_prio", "hugetlb", "pids", "rdma", "misc")
    return [name for name in wanted if os.path.isdir(f"/sys/fs/cgroup/{name}")]


def _distribution() -> dict:
    fields = {}
    try:
        with open("/etc/os-release") as lines:
            for text in lines:
                key, _, value = text.strip().partition("=")
                fields[key] = value.strip('"')
    except OSError:
        pass
    return {"distribution": fields.get("ID", ""), "version": fields.get("VERSION_ID", ""),
            "codename": fields.get("VERSION_CODENAME", "")}


def _uptime() -> str:
    """podman's words: '9h 32m 14.00s (Approximately 0.38 days)'."""
    try:
        with open("/proc/uptime") as f:
            seconds = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return ""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours)}h {int(minutes)}m {secs:.2f}s (Approximately {seconds / 86400:.2f} days)"


def _tool_version(name: str) -> tuple[str, str]:
    """(path, `NAME --version`'s text) of a tool ferry runs; empty when it is missing."""
    import shutil
    from ferry.util import proc
    from ferry.util.errors import FerryError
    path = (proc.criu_binary() if name == "criu" else shutil.which(name, path=proc.TOOL_PATH)) or ""
    if not path:
        return "", ""
    try:
        return path, proc.run([path, "--version"], desc=f"{name} --version", timeout=10).stdout.strip()
    except FerryError:
        return path, ""
