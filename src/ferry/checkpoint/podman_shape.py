"""config.dump and spec.dump of a ferry archive, in the shapes podman 4.3
reads on `podman container restore --import`: libpod's ContainerConfig, and
the OCI spec podman hands runc. ferry's own record of the container travels
beside them (engine/checkpoints.py FERRY_CONFIG). Pure functions of plain
values; docs/compatibility.md says where podman's source uses each field.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re

from ferry.util import signals

# Mounts podman drops from spec.dump on import and makes again with its own
# files (libpod/runtime_ctr.go setupContainer, makeBindMounts).
PODMAN_OWNED_MOUNTS = ("/dev/shm", "/etc/resolv.conf", "/etc/hostname", "/etc/hosts",
                       "/run/.containerenv", "/run/secrets")
# Annotations naming files of a ferry root: runc hands org.criu.config to
# CRIU on restore, where it would be another engine's (or a missing) file.
FERRY_ANNOTATIONS = ("org.criu.config", "io.ferry.name")
DEFAULT_VOLUME_DIR = "/var/lib/containers/storage/volumes"   # podman's graphroot + /volumes
DEFAULT_SHM_SIZE = 65536000      # containers.conf shm_size "65536k", as podman records it
# What `podman run --ulimit nofile=1024:1024 --ulimit nproc=1000:1000` records.
PODMAN_RLIMITS = {"RLIMIT_NOFILE": (1024, 1024), "RLIMIT_NPROC": (1000, 1000)}
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_PROTOCOLS = ("tcp", "udp", "sctp")


def podman_config_dump(*, container_id: str, name: str, image_id: str, image_name: str, created: str,
                       spec: dict, ports=(), volumes=(), command=(), user: str = "",
                       network: str = "podman", runtime: str = "runc", stop_signal: str | int = 15,
                       stop_timeout: int = 10, shm_size: int = DEFAULT_SHM_SIZE,
                       log_driver: str = "k8s-file", host_network: bool = False) -> bytes:
    """config.dump: the libpod ContainerConfig podman makes the new container from.

    container_id: 64 hex digits; kept by a restore under the original name
        (podman then checks the new container has it), replaced with --name.
    name: the container's name; --name NEW replaces it.
    image_id: 64 hex digits (rootfsImageID): the image the rootfs is made from.
    image_name: a name podman resolves locally (rootfsImageName): podman
        "pulls" it with policy missing first, so it must be loaded there.
    created: RFC 3339 time; podman sets the restore's time instead.
    spec: the OCI spec as a dict (podman reads spec.dump, not this copy; give
        the same dict as podman_spec_dump's input or output).
    ports: (host_ip, host_port, container_port, protocol) tuples, published again.
    volumes: (name, destination) tuples of named volumes: podman creates each
        (refusing the import when one exists) and fills it from volumes/NAME.tar.
    command: the container's command, shown by `podman ps`.
    user: USER as given at run ("" for root); libpod refuses a spec whose
        uid or gid is not 0 while this is empty.
    network: the podman network to join: it must exist, as a bridge.
    host_network: the container shares the host's network namespace (podman's
        own dump of a --network host container: createNetNS false, no network).
    runtime: must equal podman's --runtime (cmd/podman/root.go compares the
        strings; without --runtime podman adopts this one).
    stop_signal: a number or a name (SIGTERM, TERM, 15).
    """
    if not isinstance(container_id, str) or not _HEX64.match(container_id):
        raise ValueError("container_id must be 64 lowercase hex digits")
    if not isinstance(image_id, str) or not _HEX64.match(image_id):
        raise ValueError("image_id must be 64 lowercase hex digits")
    if not name or not image_name or not runtime:
        raise ValueError("name, image_name and runtime must not be empty")
    config = {
        "spec": spec,
        "id": container_id,
        "name": name,
        "rootfsImageID": image_id,
        "rootfsImageName": image_name,
        "RawImageName": image_name,
        "shmSize": int(shm_size),
        # Without these three podman restores into a netns it never joins to
        # its network: no address, no published port.
        "createNetNS": not host_network,
        **({} if host_network else {"networkMode": "bridge", "newNetworks": {network: {"interface_name": "eth0"}}}),
        "command": list(command),
        "stopSignal": _stop_signal(stop_signal),
        "stopTimeout": int(stop_timeout),
        "createdTime": created,
        "logDriver": log_driver,
        "runtime": runtime,
    }
    mappings = [_port(p) for p in ports]
    if mappings:
        config["newPortMappings"] = mappings
    named = [{"volumeName": volume, "dest": destination, "options": ["rw", "rprivate", "rbind"]}
             for volume, destination in volumes]
    if named:
        config["namedVolumes"] = named
    if user:
        config["user"] = user
    return json.dumps(config, indent=1).encode()


def podman_spec_dump(spec: dict, *, volumes=(), volume_dir: str = DEFAULT_VOLUME_DIR,
                     rlimits: dict | None = None) -> bytes:
    """spec.dump: ferry's OCI spec as podman must hand it to `runc restore`.

    spec: the spec ferry ran the container with (its config.json), unchanged
        by this function.
    volumes: (name, destination) tuples; each bind at a destination is pointed
        at podman's copy of the volume, volume_dir/NAME/_data: libpod keeps
        spec.dump's mount sources as they are, and the dump's source is
        ferry's volume, which podman neither fills nor owns.
    volume_dir: the restoring podman's graphroot + "/volumes".
    rlimits: {"RLIMIT_NOFILE": (soft, hard), ...} replacing process.rlimits
        (PODMAN_RLIMITS suits a host without CAP_SYS_RESOURCE). The restored
        processes keep their dumped limits whatever this says, but `podman
        exec` applies these through conmon, whose RLIMIT_NPROC (32768) is
        below ferry's clamp: exec then fails with EPERM.
    """
    out = copy.deepcopy(spec)
    out["annotations"] = {k: v for k, v in (out.get("annotations") or {}).items()
                          if k not in FERRY_ANNOTATIONS}
    by_destination = {destination: volume for volume, destination in volumes}
    mounts = []
    for mount in out.get("mounts") or []:
        destination = mount.get("destination")
        if destination in PODMAN_OWNED_MOUNTS:
            continue
        if destination in by_destination and mount.get("type") == "bind":
            source = posixpath.join(volume_dir, by_destination[destination], "_data")
            mount = dict(mount, source=source)
        mounts.append(mount)
    out["mounts"] = mounts
    if rlimits is not None:
        out.setdefault("process", {})["rlimits"] = [
            {"type": kind, "soft": int(soft), "hard": int(hard)} for kind, (soft, hard) in rlimits.items()]
    return json.dumps(out, indent=1).encode()


def _port(mapping) -> dict:
    host_ip, host_port, container_port, protocol = mapping
    if protocol not in _PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(_PROTOCOLS)}")
    for port in (host_port, container_port):
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port {port!r} is not 1-65535")
    return {"host_ip": host_ip, "container_port": container_port, "host_port": host_port,
            "range": 1, "protocol": protocol}


def _stop_signal(value) -> int:
    number = signals.number_of(value)
    if number is None:
        raise ValueError(f"stop_signal {value!r} is not a signal")
    return number
