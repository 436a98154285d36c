"""The messages of a migration between two hosts' agents, version WIRE.

Each is a frozen pydantic record that refuses unknown fields, coercion and
out-of-range values, so both ends parse what crosses the network into typed
values before anything acts on it (P.Haul ran eval() on the same data). The
checkpoint itself travels as a ferry archive, which the restore checks as it
checks any archive.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

WIRE = 1
MAX_BYTES = 1 << 50            # a bound on any size an offer states
MAX_CPUINFO_IMAGE = 64 << 10   # base64 of CRIU's cpuinfo.img (a few hundred bytes here)

Id = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}\z")]
MigrationId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}\z")]
Name = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\z", max_length=128)]
Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}\z")]
Text = Annotated[str, StringConstraints(max_length=256, pattern=r"^[\x20-\x7e]*\z")]
Ipv4 = Annotated[str, StringConstraints(pattern=r"^(\d{1,3}\.){3}\d{1,3}\z")]
Mac = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}\z")]
PortSpec = Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9a-zA-Z.:/-]+\z")]
Bytes = Annotated[int, Field(ge=0, le=MAX_BYTES)]
Port = Annotated[int, Field(ge=1, le=65535)]
# A one-time certificate of a lazy migration's page server or client; parsed
# as X.509 before use (checkpoint/lazy.py).
Certificate = Annotated[str, StringConstraints(max_length=8192,
                                               pattern=r"^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+"
                                                       r"-----END CERTIFICATE-----\n?\z")]
Seconds = Annotated[float, Field(ge=0, le=86400 * 365)]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Versioned(Message):
    wire: Literal[1] = WIRE


class ErrorReply(Message):
    """Every failure of the agent: one line, what to do, and for a refused
    migration the check that refused it."""
    error: str
    hint: str | None = None
    check: str | None = None


class VersionReply(Versioned):
    version: Text
    api: Literal["v1"] = "v1"


class SourceHost(Message):
    """What the destination checks a checkpoint of this host against."""
    arch: Text
    kernel: Text
    criu_version: Text
    runc_version: Text
    cgroup_mode: Literal["v1", "hybrid", "v2", "none"]
    hostname: Text
    cpuinfo_image: Annotated[str, StringConstraints(max_length=MAX_CPUINFO_IMAGE,
                                                    pattern=r"^[A-Za-z0-9+/]*={0,2}\z")]


Detail = Annotated[str, StringConstraints(max_length=1024)]


class CompatCheck(Message):
    """One row of `ferry system compat`: a checkpoint's host against the agent's."""
    check: Text
    key: Text
    checkpoint: Detail
    host: Detail
    verdict: Literal["same", "harmless", "refused", "missing"]
    detail: Detail


class CompatReply(Versioned):
    checks: list[CompatCheck] = Field(max_length=32)


class HostReply(Versioned):
    host: SourceHost
    memory_available: Bytes
    disk_free: Bytes


class ContainerReply(Message):
    id: Id
    name: Name
    image: Text
    state: Literal["created", "running", "exited"]
    checkpointed: bool
    ip: Ipv4 | None = None


class ImageReply(Message):
    id: Id
    digest: Digest | None = None
    names: list[Text] = Field(default_factory=list, max_length=1024)


class MigrationOffer(Versioned):
    """The source's proposal, before anything is frozen: the destination
    checks it (preflight) and answers with a ticket or a refusal."""
    container_id: Id
    name: Name                      # the name on the destination
    image: Text
    image_id: Id
    image_digest: Digest | None = None
    layers: list[Digest] = Field(default_factory=list, max_length=256)   # the image's diff_ids, lowest first
    ip: Ipv4 | None = None
    mac: Mac | None = None
    ports: list[PortSpec] | None = Field(default=None, max_length=256)   # None: the archived ones
    tcp_established: bool = False
    bind_mounts: list[Annotated[str, StringConstraints(max_length=4096, pattern=r"^/[^\x00-\x1f]*\z")]] = \
        Field(default_factory=list, max_length=256)   # host paths the container mounts: the destination's policy
    # What the container was run with beyond ferry's defaults (--privileged,
    # --cap-add ..., --ipc host, --network host): the destination's policy too (serve --allow-privileges).
    privileges: list[Text] = Field(default_factory=list, max_length=8)
    memory_bound: Bytes             # what the checkpoint's pages may take
    files_bound: Bytes              # its root filesystem changes and volumes
    source: SourceHost
    lazy: bool = False              # post-copy: the memory stays on the source until pages are faulted in
    page_server_cert: Certificate | None = None   # lazy: the source's page server presents this one
    # Stop-and-copy: the dump sends the pages to a page server there, apart
    # from the archive; over TLS with this certificate as the client's, if given.
    push_pages: bool = False
    page_sender_cert: Certificate | None = None
    # The archive stream is encrypted with age to a key the destination's
    # agent holds (ferry serve --decrypt-key), the memory inside it.
    encrypted: bool = False


class MigrationTicket(Versioned):
    id: MigrationId
    container_id: Id
    missing_layers: list[Digest] = Field(default_factory=list, max_length=256)   # send these first
    page_client_cert: Certificate | None = None   # lazy: the destination's daemon presents this one
    page_receiver_port: Port | None = None        # push_pages: the page server waits there
    page_receiver_cert: Certificate | None = None  # push_pages over TLS: and presents this one


MigrationState = Literal["offered", "receiving", "running", "failed", "aborted"]


class MigrationStatus(Versioned):
    """Where a migration stands on the destination: a source that lost its
    connection asks this before it decides to resume its copy."""
    id: MigrationId
    container_id: Id
    state: MigrationState
    error: str | None = None
    pages: Literal["arriving", "complete", "failed"] | None = None   # lazy: after the container runs


class RestoreReport(Versioned):
    """The destination's answer once the container runs there: the point of no return."""
    id: MigrationId
    container_id: Id
    name: Name
    seconds: Seconds
    phases: dict[Annotated[str, StringConstraints(max_length=64)], Seconds] = Field(max_length=64)
