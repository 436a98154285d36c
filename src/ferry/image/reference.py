"""Image references (`[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`), parsed and
normalised the way podman does.

Two defaults exist: a name given to a local image (import, build, load) gets
the `localhost` registry, a name given to `pull` gets docker.io (with
`library/` for one-component names), as podman's unqualified search does.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ferry.util.errors import UsageError

LOCAL_REGISTRY = "localhost"
DEFAULT_PULL_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}\Z")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_DOMAIN_RE = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)"
                        r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?\Z|"
                        r"^\[[0-9a-fA-F:]+\](?::[0-9]+)?\Z")
MAX_NAME = 255


class Reference(NamedTuple):
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repo(self) -> str:
        """`registry/repository`, the name without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def name(self) -> str:
        """The fully qualified name recorded on an image: `registry/repository:tag`."""
        return f"{self.repo}:{self.tag or DEFAULT_TAG}"

    def __str__(self) -> str:
        text = self.repo
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _bad(text: str, why: str) -> UsageError:
    return UsageError(f"invalid image reference {text!r}: {why}",
                      hint="use [REGISTRY/]NAME[:TAG][@sha256:DIGEST] in lower case, "
                      "e.g. localhost/nginx:latest")


def split_domain(name: str) -> tuple[str | None, str]:
    """(registry or None, rest). The first component is a registry when it
    looks like a host: it has a dot or a port, or is `localhost` (docker's rule)."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == LOCAL_REGISTRY or first != first.lower()):
        return first, rest
    return None, name


def parse(text: str, *, default_registry: str = LOCAL_REGISTRY,
          default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise `text`; raises UsageError with a hint on bad syntax."""
    if not text or len(text) > MAX_NAME:
        raise _bad(text, "empty" if not text else f"longer than {MAX_NAME} characters")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise _bad(text, "the digest must be sha256: followed by 64 lower-case hex digits")
    registry, path = split_domain(remainder)
    tag = None
    last_slash = path.rfind("/")
    colon = path.rfind(":")
    if colon > last_slash:
        path, tag = path[:colon], path[colon + 1:]
        if not _TAG_RE.match(tag):
            raise _bad(text, f"bad tag {tag!r}")
    if registry is not None and not _DOMAIN_RE.match(registry):
        raise _bad(text, f"bad registry {registry!r}")
    if not _REPOSITORY_RE.match(path):
        raise _bad(text, "the name must be lower-case letters, digits and separators (. _ - /)")
    if registry is None:
        registry = default_registry
        if registry == DEFAULT_PULL_REGISTRY and "/" not in path:
            path = f"library/{path}"
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry, path, tag, digest)


def parse_local(text: str) -> Reference:
    """A name for a local image: `nginx` means `localhost/nginx:latest`."""
    return parse(text, default_registry=LOCAL_REGISTRY)


def parse_pull(text: str) -> Reference:
    """A name to pull: `nginx` means `docker.io/library/nginx:latest`."""
    return parse(text, default_registry=DEFAULT_PULL_REGISTRY)


def is_qualified(text: str) -> bool:
    """Whether `text` names its registry explicitly."""
    return split_domain(text.split("@", 1)[0])[0] is not None


def split_name(name: str) -> tuple[str, str]:
    """`registry/repo:tag` -> (`registry/repo`, `tag`) for a stored full name."""
    repo, _, tag = name.rpartition(":")
    if "/" in tag or not repo:
        return name, ""
    return repo, tag
