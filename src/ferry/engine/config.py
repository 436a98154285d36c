"""A container's configuration as a typed record, and the strict parsers of
what becomes one: ferry's own records, and the members of a checkpoint archive.

An archive may have been forged by someone who read this code, so every field
is checked for type, range and form, and unknown keys are refused. The only
host path a config can name is a bind volume's source, which the restoring
side must grant (engine/checkpoints.py). ValueError means invalid; callers
turn it into their own one-line error.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
import signal as posix_signals
from datetime import datetime
from typing import NamedTuple

from ferry.engine.hostconfig import DEFAULT_HOST, HostConfig, TmpfsMount
from ferry.engine.runextras import NO_EXTRAS, RunExtras
from ferry.engine.volumes import VolumeSpec
from ferry.network.ports import PortMapping
from ferry.store import ids
from ferry.util.records import checked
from ferry.util.strictjson import exact_keys, loads, shown

MAX_STRINGS = 4096              # args, env entries
MAX_STRING = 128 << 10          # one argument or environment entry
MAX_PATH = 4095
MAX_PORTS = 1024
MAX_VOLUMES = 256
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\Z")
MAX_HOSTNAME = 64               # the kernel's UTS name limit
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})?\Z")
SIGNAL_RE = re.compile(r"^((SIG)?[A-Z]{2,8}|(SIG)?RTM(IN|AX)[+-][0-9]{1,2}|[0-9]{1,2})\Z")
IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,4094}\Z")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z\Z")

CONFIG_KEYS = ("image", "image_digest", "args", "command", "env", "workdir", "user", "hostname",
               "network", "ip", "mac", "ports", "volumes", "stop_signal", "rm", "tty", "interactive")
PROFILE = "profile"     # written only when not ferry's own, so older records still read
STATIC_MAC = "static_mac"   # written only when true, for the same reason
HOST, EXTRAS = "host", "extras"   # written only when not empty, for the same reason
NETWORK_MODE = "network_mode"     # written only when not "bridge", for the same reason
MORE_NETWORKS = "more_networks"   # written only when the container joined several networks
BRIDGE, HOST_NETWORK, NO_NETWORK = "bridge", "host", "none"
NETWORK_MODES = (BRIDGE, HOST_NETWORK, NO_NETWORK)
MAX_NETWORKS = 16               # interfaces eth0..eth15
NETWORK_LINK_KEYS = ("network", "ip", "mac")
PROFILE_KEYS = ("cgroupns", "no_new_privileges", "shm_dir", "containerenv")


@checked
class SpecProfile(NamedTuple):
    """Where the container's runtime spec differs from ferry's own: CRIU
    restores the mounts and namespaces it dumped, so a container that came
    from podman keeps podman's shape in every later start and restore. None
    of these grants more than ferry's spec does."""
    cgroupns: bool = True             # podman on cgroup v1 makes none
    no_new_privileges: bool = True    # podman's default is off
    shm_dir: bool = False             # /dev/shm a bind of a directory of the container's, where podman binds its own
    containerenv: bool = False        # podman's /run/.containerenv marker file

    def _check(self):
        for key in PROFILE_KEYS:
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"profile.{key} must be true or false")

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in PROFILE_KEYS}

    @classmethod
    def from_dict(cls, data) -> "SpecProfile":
        exact_keys(data, PROFILE_KEYS, PROFILE)
        return cls(**data)


@checked
class NetworkLink(NamedTuple):
    """One more network a container joined, beyond its first (config.network,
    ip, mac): its interface is eth1, eth2... in the order given."""
    network: str
    ip: str          # "" until reserved
    mac: str

    def _check(self):
        _check_network_name(self.network)
        if not isinstance(self.ip, str) or (self.ip and not _is_ipv4(self.ip)):
            raise ValueError(f"ip {shown(self.ip)} is not an IPv4 address")
        if not isinstance(self.mac, str) or (self.mac and not MAC_RE.match(self.mac)):
            raise ValueError(f"mac {shown(self.mac)} is not a MAC address like 02:42:0a:5a:00:05")

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in NETWORK_LINK_KEYS}

    @classmethod
    def from_dict(cls, data) -> "NetworkLink":
        exact_keys(data, NETWORK_LINK_KEYS, "more_networks entry")
        return cls(**data)


FERRY_PROFILE = SpecProfile()
PODMAN_PROFILE = SpecProfile(cgroupns=False, no_new_privileges=False, shm_dir=True, containerenv=True)


@checked
class ContainerConfig(NamedTuple):
    """A container's resolved configuration, stored as JSON and carried by checkpoints."""
    image: str                     # the name the user gave, resolved to a full name
    image_digest: str
    args: tuple[str, ...]
    command: tuple[str, ...]       # the CMD part of args, for ps
    env: tuple[str, ...]
    workdir: str
    user: str
    hostname: str                  # "" in a draft: the container's short ID then
    network: str
    ip: str                        # "" until reserved
    mac: str
    ports: tuple[PortMapping, ...]  # host_port 0 until first published
    volumes: tuple[VolumeSpec, ...]
    stop_signal: str
    rm: bool
    tty: bool
    interactive: bool
    profile: SpecProfile = FERRY_PROFILE
    static_mac: bool = False          # the user chose the MAC (--mac-address): a restore keeps it or refuses
    host: HostConfig = DEFAULT_HOST   # what run asked of the host beyond ferry's defaults
    extras: RunExtras = NO_EXTRAS     # labels, hosts entries, DNS, restart policy, init
    # "host" shares the host's network namespace (a grant a restore must re-check);
    # "none" a netns of ferry's with lo only. Either way `network` is the mode's name,
    # with no address, port or other network.
    network_mode: str = BRIDGE
    more_networks: tuple[NetworkLink, ...] = ()   # networks joined beyond `network`: eth1...

    def _check(self):
        if not isinstance(self.image, str) or not IMAGE_REF_RE.match(self.image):
            raise ValueError(f"image {shown(self.image)} is not an image reference")
        if not isinstance(self.image_digest, str) or not DIGEST_RE.match(self.image_digest):
            raise ValueError("image_digest must be sha256:<64 hex digits>")
        _strings(self.args, "args")
        if not self.args:
            raise ValueError("args must not be empty")
        _strings(self.command, "command")
        _strings(self.env, "env")
        for entry in self.env:
            if not entry.partition("=")[0] or "=" not in entry:
                raise ValueError(f"env entry {shown(entry)} is not KEY=VALUE")
        if not isinstance(self.workdir, str) or not self.workdir.startswith("/") or "\0" in self.workdir \
                or len(self.workdir) > MAX_PATH:
            raise ValueError(f"workdir {shown(self.workdir)} must be an absolute path")
        if not isinstance(self.user, str) or (self.user and not USER_RE.match(self.user)):
            raise ValueError(f"user {shown(self.user)} is not a user[:group] name or ID")
        if not isinstance(self.hostname, str) or (self.hostname and (
                len(self.hostname) > MAX_HOSTNAME or not HOSTNAME_RE.match(self.hostname))):
            raise ValueError(f"hostname {shown(self.hostname)} is not a host name")
        _check_network_name(self.network)
        if not isinstance(self.ip, str) or (self.ip and not _is_ipv4(self.ip)):
            raise ValueError(f"ip {shown(self.ip)} is not an IPv4 address")
        if not isinstance(self.mac, str) or (self.mac and not MAC_RE.match(self.mac)):
            raise ValueError(f"mac {shown(self.mac)} is not a MAC address like 02:42:0a:5a:00:05")
        _records(self.ports, PortMapping, MAX_PORTS, "ports")
        _records(self.volumes, VolumeSpec, MAX_VOLUMES, "volumes")
        destinations = [v.destination for v in self.volumes]
        if len(set(destinations)) != len(destinations):
            raise ValueError("two volumes are mounted at the same destination")
        if not isinstance(self.stop_signal, str) or not SIGNAL_RE.match(self.stop_signal):
            raise ValueError(f"stop_signal {shown(self.stop_signal)} is not a signal")
        for name in ("rm", "tty", "interactive"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        if not isinstance(self.profile, SpecProfile):
            raise ValueError("profile must be a SpecProfile")
        if not isinstance(self.static_mac, bool):
            raise ValueError("static_mac must be true or false")
        if not isinstance(self.host, HostConfig):
            raise ValueError("host must be a HostConfig")
        if {t.destination for t in self.host.tmpfs} & set(destinations):
            raise ValueError("a tmpfs and a volume are mounted at the same destination")
        if not isinstance(self.extras, RunExtras):
            raise ValueError("extras must be a RunExtras")
        self._check_networks()

    def _check_networks(self):
        if not isinstance(self.network_mode, str) or self.network_mode not in NETWORK_MODES:
            raise ValueError(f"network_mode {shown(self.network_mode)} is not one of {', '.join(NETWORK_MODES)}")
        _records(self.more_networks, NetworkLink, MAX_NETWORKS - 1, "more_networks")
        if self.network_mode != BRIDGE:
            if self.network != self.network_mode or self.ip or self.mac or self.static_mac or self.ports \
                    or self.more_networks:
                raise ValueError(f"network_mode {self.network_mode} has no network, address, port or other "
                                 "network")
            return
        names = [self.network, *(link.network for link in self.more_networks)]
        if len(set(names)) != len(names):
            raise ValueError("a network is joined twice")
        ips = [ip for ip in (self.ip, *(link.ip for link in self.more_networks)) if ip]
        macs = [mac for mac in (self.mac, *(link.mac for link in self.more_networks)) if mac]
        if len(set(ips)) != len(ips) or len(set(macs)) != len(macs):
            raise ValueError("two interfaces have the same address")

    def to_dict(self) -> dict:
        data = {key: getattr(self, key) for key in CONFIG_KEYS}
        data.update(args=list(self.args), command=list(self.command), env=list(self.env),
                    ports=[p.to_dict() for p in self.ports], volumes=[v.to_dict() for v in self.volumes])
        if self.profile != FERRY_PROFILE:
            data[PROFILE] = self.profile.to_dict()
        if self.static_mac:
            data[STATIC_MAC] = True
        for key, default in ((HOST, DEFAULT_HOST), (EXTRAS, NO_EXTRAS)):
            if getattr(self, key) != default:
                data[key] = getattr(self, key).to_dict()
        if self.network_mode != BRIDGE:
            data[NETWORK_MODE] = self.network_mode
        if self.more_networks:
            data[MORE_NETWORKS] = [link.to_dict() for link in self.more_networks]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data) -> "ContainerConfig":
        """Strictly from the JSON form (ValueError on anything else)."""
        optional = tuple(k for k in (PROFILE, STATIC_MAC, HOST, EXTRAS, NETWORK_MODE, MORE_NETWORKS)
                         if isinstance(data, dict) and k in data)
        exact_keys(data, CONFIG_KEYS + optional, "config")
        values = dict(data)
        for key, record in ((PROFILE, SpecProfile), (HOST, HostConfig), (EXTRAS, RunExtras)):
            if key in data:
                values[key] = record.from_dict(data[key])
        for key in ("args", "command", "env"):
            values[key] = _tuple(data[key], key)
        values["ports"] = tuple(_each(data["ports"], PortMapping.from_dict, MAX_PORTS, "ports"))
        values["volumes"] = tuple(_each(data["volumes"], VolumeSpec.from_dict, MAX_VOLUMES, "volumes"))
        if MORE_NETWORKS in data:
            values[MORE_NETWORKS] = tuple(_each(data[MORE_NETWORKS], NetworkLink.from_dict, MAX_NETWORKS - 1,
                                                MORE_NETWORKS))
            if not values[MORE_NETWORKS]:
                raise ValueError(f"{MORE_NETWORKS} is written only when not empty")
        if NETWORK_MODE in data and data[NETWORK_MODE] == BRIDGE:
            raise ValueError(f"{NETWORK_MODE} is written only when not {BRIDGE}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "ContainerConfig":
        return cls.from_dict(loads(text))

    @property
    def host_network(self) -> bool:
        """Whether it shares the host's network namespace: host access, which
        a restore of an unverified archive must be granted."""
        return self.network_mode == HOST_NETWORK

    @property
    def joined(self) -> tuple[NetworkLink, ...]:
        """Every network it joined, first (eth0) first; none in host or none mode."""
        if self.network_mode != BRIDGE:
            return ()
        return (NetworkLink(self.network, self.ip, self.mac), *self.more_networks)

    @property
    def binds(self) -> tuple[VolumeSpec, ...]:
        return tuple(v for v in self.volumes if v.kind == "bind")

    @property
    def named_volumes(self) -> tuple[VolumeSpec, ...]:
        return tuple(v for v in self.volumes if v.kind == "volume")


def _check_network_name(name) -> None:
    if not isinstance(name, str) or len(name) > ids.MAX_NAME or not ids.NAME_RE.match(name):
        raise ValueError(f"network {shown(name)} is not a valid name")


def _is_ipv4(text: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(text)) == text
    except ValueError:
        return False


def _tuple(value, what: str) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list")
    return tuple(value)


def _strings(value, what: str) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_STRINGS:
        raise ValueError(f"{what} must be a list of at most {MAX_STRINGS} strings")
    for item in value:
        if not isinstance(item, str) or "\0" in item or len(item) > MAX_STRING:
            raise ValueError(f"{what} holds {shown(item)}, which is not a string without NUL")


def _records(value, kind: type, limit: int, what: str) -> None:
    if not isinstance(value, tuple) or len(value) > limit or not all(isinstance(v, kind) for v in value):
        raise ValueError(f"{what} must be a list of at most {limit} {kind.__name__}")


def _each(value, parse, limit: int, what: str) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise ValueError(f"{what} must be a list of at most {limit} entries")
    parsed = []
    for index, item in enumerate(value):
        try:
            parsed.append(parse(item))
        except ValueError as exc:
            raise ValueError(f"{what}[{index}]: {exc}") from None
    return parsed


# ---- what a ferry archive carries ------------------------------------------

ARCHIVED_KEYS = ("id", "name", "image_id", "created_at", "config")
NETWORK_STATUS_KEYS = ("network", "ip", "mac", "ports")


@checked
class ArchivedContainer(NamedTuple):
    """config.dump of a ferry archive: the container as it was checkpointed."""
    id: str
    name: str
    image_id: str
    created_at: str
    config: ContainerConfig

    def _check(self):
        for key in ("id", "image_id"):
            if not isinstance(getattr(self, key), str) or not HEX64_RE.match(getattr(self, key)):
                raise ValueError(f"{key} must be 64 lowercase hex digits")
        if not isinstance(self.name, str) or len(self.name) > ids.MAX_NAME or not ids.NAME_RE.match(self.name):
            raise ValueError(f"name {shown(self.name)} is not a valid container name")
        if not isinstance(self.created_at, str) or not TIME_RE.match(self.created_at):
            raise ValueError(f"created_at {shown(self.created_at)} is not an RFC 3339 UTC time")
        datetime.fromisoformat(self.created_at[:19])   # ValueError on a 31st of February

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "name": self.name, "image_id": self.image_id,
                           "created_at": self.created_at, "config": self.config.to_dict()}, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ArchivedContainer":
        data = exact_keys(loads(text), ARCHIVED_KEYS, "config.dump")
        try:
            config = ContainerConfig.from_dict(data["config"])
        except ValueError as exc:
            raise ValueError(f"config: {exc}") from None
        return cls(data["id"], data["name"], data["image_id"], data["created_at"], config)


def check_network_status(text: str | bytes, config: ContainerConfig) -> None:
    """network.status, in archives written before ferry wrote podman's shape
    (podman would ask its network for ferry's address), must agree with the
    container's record: a member that disagrees was edited."""
    data = exact_keys(loads(text), NETWORK_STATUS_KEYS, "network.status")
    ports = tuple(_each(data["ports"], PortMapping.from_dict, MAX_PORTS, "ports"))
    if (data["network"], data["ip"], data["mac"], ports) != (config.network, config.ip, config.mac, config.ports):
        raise ValueError("it disagrees with the container's record")


MAX_DELETED = 1 << 20


def parse_deleted_files(text: str | bytes) -> tuple[str, ...]:
    """deleted.files: the paths the container deleted from its image, relative
    to its root; each is checked again where it is applied."""
    data = loads(text)
    if not isinstance(data, list) or len(data) > MAX_DELETED:
        raise ValueError(f"must be a list of at most {MAX_DELETED} paths")
    for path in data:
        if not isinstance(path, str) or not path or "\0" in path or len(path) > MAX_PATH \
                or path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"holds {shown(path)}, which is not a relative path inside the container")
    return tuple(data)


# ---- what another engine's archive carries -------------------------------------

# Mounts podman's and CRI-O's specs make that ferry's spec makes too.
PROVIDED_MOUNTS = frozenset({"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
                             "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run/.containerenv"})


def config_from_foreign(found, spec, *, image: str, image_digest: str, network: str) -> ContainerConfig:
    """The container a podman or CRI-O archive describes, as ferry records one
    (checkpoint/foreign.py parsed `found`, its config.dump, and `spec`, its
    spec.dump). The address is left to this host: the subnets differ. A bind
    of a host path becomes a bind volume, which the restore must be granted.
    ValueError names what ferry cannot give such a container."""
    podman = found.podman
    named = {posixpath.normpath(v.dest): v for v in (podman.named_volumes if podman else ())}
    volumes = [VolumeSpec("volume", v.name, dest, "ro" in v.options) for dest, v in named.items()]
    tmpfs = []
    for mount in spec.mounts:
        destination = posixpath.normpath(mount.destination)
        if destination in named or destination in PROVIDED_MOUNTS:
            continue
        if mount.type == "bind" or {"bind", "rbind"} & set(mount.options):
            volumes.append(VolumeSpec("bind", mount.source or "", destination, "ro" in mount.options))
            continue
        if mount.type == "tmpfs":   # podman's --tmpfs, and --read-only's /run, /tmp, /var/tmp
            tmpfs.append(_foreign_tmpfs(destination, mount.options))
            continue
        raise ValueError(f"spec.dump mounts {shown(mount.type or 'something')} at {shown(destination)}, which "
                         "ferry cannot give a restored container")
    ports = []
    for mapping in podman.ports if podman else ():
        for protocol in mapping.protocol.split(","):
            for offset in range(max(mapping.range, 1)):
                if len(ports) >= MAX_PORTS:
                    raise ValueError(f"config.dump publishes more than {MAX_PORTS} ports")
                ports.append(PortMapping(mapping.host_ip, mapping.host_port + offset if mapping.host_port else 0,
                                         mapping.container_port + offset, protocol))
    process = spec.process
    stop = podman.stop_signal if podman and podman.stop_signal else posix_signals.SIGTERM
    try:
        stop_signal = posix_signals.Signals(stop).name
    except ValueError:
        stop_signal = str(stop)
    shm = next((m for m in spec.mounts if posixpath.normpath(m.destination) == "/dev/shm"), None)
    profile = SpecProfile(
        cgroupns="cgroup" in spec.namespaces, no_new_privileges=process.no_new_privileges,
        shm_dir=shm is not None and (shm.type == "bind" or "bind" in shm.options or "rbind" in shm.options),
        containerenv=any(posixpath.normpath(m.destination) == "/run/.containerenv" for m in spec.mounts))
    user = process.user
    return ContainerConfig(
        image=image, image_digest=image_digest, args=tuple(process.args),
        command=tuple(podman.command) if podman and podman.command else tuple(process.args),
        env=tuple(process.env), workdir=process.cwd,
        user=f"{user.uid}:{user.gid}" if user.uid or user.gid else "",
        hostname=spec.hostname or "", network=network, ip="", mac="", ports=tuple(ports),
        volumes=tuple(volumes), stop_signal=stop_signal, rm=False, tty=process.terminal,
        interactive=bool(podman and podman.stdin), profile=profile,
        # its /run, /tmp and /var/tmp of --read-only are in its mounts, as tmpfs
        host=HostConfig(read_only=spec.root.readonly, read_only_tmpfs=not spec.root.readonly, tmpfs=tuple(tmpfs)))


def _foreign_tmpfs(destination: str, options) -> TmpfsMount:
    """A tmpfs of another engine's spec, with the options ferry allows
    (rprivate aside: ferry adds it to every tmpfs)."""
    try:
        return TmpfsMount(destination, tuple(o for o in options if o != "rprivate"))
    except ValueError as exc:
        raise ValueError(f"spec.dump mounts a tmpfs at {shown(destination)}, which ferry cannot give a "
                         f"restored container: {exc}") from None
