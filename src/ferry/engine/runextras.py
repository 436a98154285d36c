"""What `run` records about a container that neither grants nor limits
anything on the host: labels, extra /etc/hosts entries, DNS, the restart
policy, an init process.

Every field may come from a forged archive, so each is checked for type,
size and form. A key is written only when it differs from its default.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import NamedTuple

from ferry.engine.hostconfig import known_keys, non_defaults
from ferry.util.records import checked
from ferry.util.strictjson import shown

MAX_LABELS = 1024
MAX_LABEL = 64 << 10
LABEL_KEY_RE = re.compile(r"^[^\x00-\x1f=]{1,1024}\Z")
MAX_HOSTS = 256                 # --add-host entries
MAX_DNS = 64                    # servers, search domains, options: resolv.conf readers take far fewer
# A name in /etc/hosts: podman takes any name without ':' (fo_o is fine); no
# blanks, '#' or control characters, which would change what the line says.
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}\Z")
DOMAIN_RE = re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}\Z")
DNS_OPTION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_.:-]{1,64})?\Z")
RESTART_POLICIES = ("", "no", "on-failure", "always", "unless-stopped")
MAX_RETRIES = 1 << 20


@checked
class RunExtras(NamedTuple):
    labels: tuple[tuple[str, str], ...] = ()   # (key, value), in the order given; a later key wins
    add_hosts: tuple[tuple[str, str], ...] = ()   # (name, ip) lines put first in /etc/hosts
    dns: tuple[str, ...] = ()          # nameservers replacing the host's
    dns_none: bool = False             # --dns none: no /etc/resolv.conf of ferry's at all
    dns_search: tuple[str, ...] = ()   # search domains replacing the host's
    dns_options: tuple[str, ...] = ()  # resolv.conf options replacing the host's
    restart: str = ""                  # podman's restart policy name ("" when none was given)
    restart_retries: int = 0           # on-failure:N; 0 means no limit
    init: bool = False                 # catatonit as PID 1 (podman's --init)

    def _check(self):
        self._check_labels()
        _pairs(self.add_hosts, MAX_HOSTS, "add_hosts")
        for name, ip in self.add_hosts:
            if not isinstance(name, str) or not HOST_NAME_RE.match(name):
                raise ValueError(f"add_hosts name {shown(name)} is not a host name")
            if not _is_ip(ip):
                raise ValueError(f"add_hosts address {shown(ip)} is not an IP address")
        _strings(self.dns, "dns")
        for server in self.dns:
            if not _is_ip(server):
                raise ValueError(f"dns server {shown(server)} is not an IP address")
        _strings(self.dns_search, "dns_search")
        for domain in self.dns_search:
            if not DOMAIN_RE.match(domain):
                raise ValueError(f"dns_search {shown(domain)} is not a domain")
        _strings(self.dns_options, "dns_options")
        for option in self.dns_options:
            if not DNS_OPTION_RE.match(option):
                raise ValueError(f"dns_options {shown(option)} is not a resolv.conf option")
        for key in ("dns_none", "init"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false")
        if self.dns_none and (self.dns or self.dns_search or self.dns_options):
            raise ValueError("dns_none and dns servers, search domains or options together")
        if not isinstance(self.restart, str) or self.restart not in RESTART_POLICIES:
            raise ValueError(f"restart {shown(self.restart)} is not a restart policy")
        if type(self.restart_retries) is not int or not 0 <= self.restart_retries <= MAX_RETRIES \
                or (self.restart_retries and self.restart != "on-failure"):
            raise ValueError(f"restart_retries {shown(self.restart_retries)} is not a count for on-failure")

    def _check_labels(self):
        if not isinstance(self.labels, tuple) or len(self.labels) > MAX_LABELS:
            raise ValueError(f"labels must be at most {MAX_LABELS} pairs")
        for pair in self.labels:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ValueError("each label must be a [key, value] pair")
            key, value = pair
            if not isinstance(key, str) or not LABEL_KEY_RE.match(key):
                raise ValueError(f"label key {shown(key)} is not a label name")
            if not isinstance(value, str) or "\0" in value or len(value) > MAX_LABEL:
                raise ValueError(f"label {shown(key)} has a value that is not a string without NUL")
        if len({k for k, _ in self.labels}) != len(self.labels):
            raise ValueError("a label key appears twice")

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def to_dict(self) -> dict:
        return non_defaults(self, NO_EXTRAS)

    @classmethod
    def from_dict(cls, data) -> "RunExtras":
        values = dict(known_keys(data, cls._fields, "extras"))
        if "labels" in values:
            labels = values["labels"]
            if not isinstance(labels, list) or len(labels) > MAX_LABELS:
                raise ValueError(f"extras.labels must be a list of at most {MAX_LABELS} pairs")
            values["labels"] = tuple(tuple(p) if isinstance(p, list) else p for p in labels)
        for key in ("add_hosts", "dns", "dns_search", "dns_options"):
            if key in values:
                items = values[key]
                if not isinstance(items, list) or len(items) > MAX_HOSTS:
                    raise ValueError(f"extras.{key} must be a list of at most {MAX_HOSTS} entries")
                values[key] = tuple(tuple(p) if isinstance(p, list) else p for p in items)
        return cls(**values)

    def restarts_after(self, exit_code: int, restart_count: int) -> bool:
        """Whether a container that exited on its own (not stopped, killed or
        checkpointed by a command) starts again under its policy."""
        if self.restart in ("always", "unless-stopped"):
            return True
        if self.restart == "on-failure":
            return exit_code != 0 and (not self.restart_retries or restart_count < self.restart_retries)
        return False


def parse_labels(texts: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """--label KEY[=VALUE] options (podman: a later KEY wins, a bare KEY is empty)."""
    labels: dict[str, str] = {}
    for text in texts:
        key, _, value = text.partition("=")
        if not key:
            raise ValueError(f"--label {text!r}: the key is empty")
        labels[key] = value
    return tuple(labels.items())


def _is_ip(text) -> bool:
    """An IP address in its canonical form; no IPv6 zone (`%eth0`), which
    Python takes with any character in it, and podman's parser refuses."""
    if not isinstance(text, str) or len(text) > 64 or "%" in text:
        return False
    try:
        return str(ipaddress.ip_address(text)) == text
    except ValueError:
        return False


def _pairs(value, limit: int, what: str) -> None:
    if not isinstance(value, tuple) or len(value) > limit:
        raise ValueError(f"{what} must be a list of at most {limit} pairs")
    for pair in value:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError(f"each of {what} must be a pair")


def _strings(value, what: str) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_DNS or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of at most {MAX_DNS} strings")


NO_EXTRAS = RunExtras()

# ---- the flags, as podman 4.3 parses them (ValueError: a one-line reason) ----

def parse_add_host(text: str) -> tuple[str, str]:
    """--add-host HOST:IP; the IP may hold colons (IPv6), so the split is at the first."""
    name, sep, ip = text.partition(":")
    if not sep or not name:
        raise ValueError(f"bad format for add-host: {text!r}")
    if not _is_ip(ip):
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            ip = ""
        if not _is_ip(ip):
            raise ValueError(f"invalid IP address in add-host: {text.partition(':')[2]!r}")
    if not HOST_NAME_RE.match(name):
        raise ValueError(f"invalid host name in add-host: {name!r}")
    return name, ip


def parse_dns(servers: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    """--dns values: the servers, and whether `none` asked for no resolv.conf."""
    if "none" in servers:
        if len(servers) > 1:
            raise ValueError("none is not allowed to be specified with other DNS ip addresses")
        return (), True
    parsed = []
    for server in servers:
        try:
            parsed.append(str(ipaddress.ip_address(server)))
        except ValueError:
            parsed.append("")
        if not _is_ip(parsed[-1]):
            raise ValueError(f"{server} is not an ip address")
    if len(parsed) > MAX_DNS:
        raise ValueError(f"at most {MAX_DNS} --dns servers")
    return tuple(parsed), False


def parse_dns_search(domains: tuple[str, ...]) -> tuple[str, ...]:
    """--dns-search values; "." alone means no search domains (podman)."""
    if domains == (".",):
        return ()
    for domain in domains:
        if domain == "." or not DOMAIN_RE.match(domain.removesuffix(".")):
            raise ValueError(f"{domain} is not a valid domain")
    if len(domains) > MAX_DNS:
        raise ValueError(f"at most {MAX_DNS} --dns-search domains")
    return tuple(domains)


def parse_dns_options(options: tuple[str, ...]) -> tuple[str, ...]:
    for option in options:
        if not DNS_OPTION_RE.match(option):
            raise ValueError(f"invalid argument {option!r} for \"--dns-option\" flag")
    if len(options) > MAX_DNS:
        raise ValueError(f"at most {MAX_DNS} --dns-option values")
    return tuple(options)


def parse_restart(text: str | None) -> tuple[str, int]:
    """--restart POLICY[:N], with podman's messages."""
    if text is None:
        return "", 0
    name, sep, count = text.partition(":")
    if name not in RESTART_POLICIES:
        raise ValueError(f"{text!r} is not a valid restart policy")
    if not sep:
        return name, 0
    if name != "on-failure":
        raise ValueError("restart policy retries can only be specified with on-failure restart policy")
    try:
        retries = int(count, 10)
    except ValueError:
        raise ValueError(f"parsing restart policy retry count: {count!r} is not a number") from None
    if retries < 0 or retries > MAX_RETRIES:
        raise ValueError("must specify restart policy retry count as a number greater than 0")
    return name, retries


def parse_env_file(path: str, environ=None) -> tuple[str, ...]:
    """podman's --env-file: KEY=VALUE lines, leading blanks and '#' comment
    lines dropped, the value kept as written (no quotes removed); a bare KEY
    takes the value from ferry's environment (KEY* every variable with that
    prefix), or is dropped when unset."""
    environ = os.environ if environ is None else environ
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as error:
        raise ValueError(f"parsing env file {path!r}: {error.strerror.lower()}") from None
    entries: list[str] = []
    for raw in lines:
        line = raw.lstrip(" \t\n")
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not key:
            raise ValueError(f"parsing env file {path!r}: invalid environment variable: {line!r}")
        if "\0" in line:
            raise ValueError(f"parsing env file {path!r}: a NUL in {key!r}")
        if sep:
            entries.append(f"{key}={value}")
        elif key.endswith("*"):
            entries += [f"{k}={v}" for k, v in environ.items() if k.startswith(key[:-1])]
        elif key in environ:
            entries.append(f"{key}={environ[key]}")
    return tuple(entries)
