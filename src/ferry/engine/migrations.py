"""Live migration, stop-and-copy: `ferry migrate` on the source, and what the
destination's agent (`ferry serve`) does with what arrives.

The source offers the container (preflight), dumps it into a checkpoint that
streams straight into the destination's restore, and removes its copy only
once the destination says the container runs there: the point of no return.
Before it, any failure resumes the source from the checkpoint it kept and
leaves the destination clean. Each migration has a record under
ROOT/migrations on both sides, which outlives a crash of either command.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from ferry.checkpoint.encryption import Opening, Sealing
from ferry.engine import journal
from ferry.engine.checkpoints import CheckpointOptions, RestoreOptions, privileges_asked
from ferry.engine.listing import RUNNING
from ferry.migration import wire
from ferry.migration.phases import Phase, Timings
from ferry.util import phases
from ferry.util.errors import BadArchive, Conflict, FerryError, Incompatible, NotFound, Refused, ToolError, UsageError
from ferry.util.fs import atomic_write, remove_file, remove_tree
from ferry.util.log import get_logger
from ferry.util.pipes import grow_pipe
from ferry.util.space import DISK_MARGIN, disk_free, size_text
from ferry.util.timefmt import utc_now

log = get_logger("ferry.migrations")

SOURCE, DESTINATION = "source", "destination"
# A destination's share of what may arrive: memory for the staged pages (or
# disk when they spill), and disk for the root filesystem changes and volumes,
# less space.DISK_MARGIN.
OFFER_TTL = 600.0   # seconds an accepted offer waits for its checkpoint
PAGE_SIZE = 4096
PAGES_PREFIX = "pages-"   # ROOT/tmp/pages-ID: a stop-and-copy's page server writes there
# Serialises the agent's state changes of migration records: its requests run
# in threads of one process, where the file locks of one container are re-entrant.
_records_lock = threading.Lock()
_receivers: dict = {}   # migration id -> its PageReceiver, in this agent


@dataclass(frozen=True)
class Record:
    """ROOT/migrations/ID.json."""
    id: str
    role: str                 # source | destination
    container_id: str
    name: str
    state: str                # wire.MigrationState, or on the source: streaming, confirmed, resumed
    created: str
    peer: str = ""            # the source's: the destination agent's URL
    error: str | None = None
    offer: str = ""           # the destination's: the offer it accepted (JSON)
    pid: int = 0              # the command or agent that works on it
    token: str = ""           # the source's: the destination agent's token, to ask it after a crash
    tcp_established: bool = False
    lazy: bool = False
    pages: str = ""           # lazy, the destination's: arriving, complete or failed
    page_pid: int = 0         # lazy: the source's runc that serves pages, the destination's daemon
    page_port: int = 0        # lazy: the source's page server port; push: the destination's
    push: bool = False        # stop-and-copy whose pages went to the destination's page server


@dataclass(frozen=True)
class MigrateOptions:
    to: str                           # the destination agent's URL
    token: str
    verify: bool | str = True         # TLS: verify the agent's certificate (or with this CA file)
    name: str | None = None           # the name on the destination
    ports: tuple[str, ...] | None = None
    tcp_established: bool = False
    file_locks: bool = False          # dump the file locks its processes hold (the restore finds them)
    keep_source: bool = False         # keep the stopped source container (its checkpoint dropped)
    lazy: bool = False                # post-copy: run there first, move the memory after
    through_agent: bool = False       # the memory in the archive, over the agent's connection
    sealing: Sealing | None = None    # age-encrypt the archive, memory and all, to the destination's key


@dataclass(frozen=True)
class MigrationResult:
    id: str
    container_id: str
    name: str
    destination: str
    phases: dict
    downtime: float | None
    bytes_sent: int
    lazy: bool = False
    pages_pushed: int = 0     # bytes of memory the dump sent to the destination's page server
    source_phases: dict = field(default_factory=dict)        # the checkpoint's, on this host
    destination_phases: dict = field(default_factory=dict)   # the restore's, as the destination reported them

    def stats(self) -> dict:
        return {"Id": self.container_id, "Name": self.name, "Migration": self.id, "Destination": self.destination,
                "phases": {k: round(v, 6) for k, v in self.phases.items()},
                "downtime": round(self.downtime, 6) if self.downtime is not None else None,
                "bytes_sent": self.bytes_sent, "pages_pushed": self.pages_pushed, "lazy": self.lazy,
                "source_phases": {k: round(v, 6) for k, v in self.source_phases.items()},
                "destination_phases": dict(self.destination_phases)}


class Migrations:
    def __init__(self, engine, *, allow_bind_mounts: bool = False, allow_privileges: bool = False,
                 keys: Opening | None = None):
        self.engine = engine
        self.layout = engine.layout
        # The destination's policy (ferry serve --allow-bind-mounts): a migrated
        # container gets host paths only when this host's operator said so.
        self.allow_bind_mounts = allow_bind_mounts
        # ferry serve --allow-privileges: what the container was run with beyond
        # ferry's defaults (engine/hostconfig.py grants), refused at its restore otherwise.
        self.allow_privileges = allow_privileges
        self.keys = keys   # the agent's: what opens an encrypted migration (ferry serve --decrypt-key)

    # ---- records ----------------------------------------------------------------
    def _path(self, migration_id: str) -> str:
        return os.path.join(self.layout.migrations, f"{migration_id}.json")

    def _save(self, record: Record) -> Record:
        os.makedirs(self.layout.migrations, mode=0o700, exist_ok=True)
        atomic_write(self._path(record.id), json.dumps(asdict(record)))
        return record

    def record(self, migration_id: str) -> Record:
        try:
            with open(self._path(migration_id)) as f:
                return Record(**json.load(f))
        except FileNotFoundError:
            raise NotFound(f"no migration {migration_id} on this host") from None
        except (ValueError, TypeError) as exc:
            raise FerryError(f"the record of migration {migration_id} is damaged: {exc}") from None

    def records(self) -> list[Record]:
        try:
            names = sorted(os.listdir(self.layout.migrations))
        except FileNotFoundError:
            return []
        return [self.record(n[:-len(".json")]) for n in names if n.endswith(".json")]

    # ---- the destination's side -----------------------------------------------------
    def preflight(self, offer: wire.MigrationOffer, local_address: str | None = None) -> wire.MigrationTicket:
        """Check that this host can take the container; Refused names the check that fails.
        A stop-and-copy's pages get a page server on `local_address`, the one the source reached."""
        from ferry.checkpoint import compat
        from ferry.checkpoint.hostinfo import criu_path, host_info
        here = host_info()
        for refusal in compat.refusals(offer.source, here, criu_path()):
            raise Refused(f"cannot take the container: {refusal}", check=refusal.check,
                          hint="migrate to a host with the same architecture and cgroup mode, and the same "
                               "or newer kernel, CRIU and runc")
        if offer.bind_mounts and not self.allow_bind_mounts:
            raise Refused(f"the container mounts host paths ({', '.join(offer.bind_mounts[:3])}), and this host's "
                          f"agent grants none", check="bind-mounts",
                          hint="start the destination's agent with --allow-bind-mounts, or migrate a container "
                               "without bind mounts")
        if offer.privileges and not self.allow_privileges:
            raise Refused(f"the container was run with {', '.join(offer.privileges)}, and this host's agent grants "
                          f"no privileges beyond ferry's defaults", check="privileges",
                          hint="start the destination's agent with --allow-privileges, or migrate a container "
                               "run without them")
        if offer.lazy:
            _refuse_lazy(offer)
        if offer.encrypted and self.keys is None:
            raise Refused("the migration is encrypted, and this host's agent holds no key to open it",
                          check="encryption", hint="start the destination's agent with --decrypt-key FILE "
                                                   "(or --decrypt-passphrase-file FILE)")
        self._refuse_clashes(offer)
        self._refuse_short_room(offer)
        migration_id = os.urandom(16).hex()
        client_cert = None
        if offer.lazy:
            identity = self._identity(migration_id)
            client_cert = identity.create("ferry lazy-pages client")
            identity.trust(offer.page_server_cert)
        receiver, receiver_cert = None, None
        if offer.push_pages and not offer.lazy:
            receiver, receiver_cert = self._receive_pages(migration_id, offer, local_address)
        self._save(Record(migration_id, DESTINATION, offer.container_id, offer.name, "offered", utc_now(),
                          offer=offer.model_dump_json(), pid=os.getpid(), lazy=offer.lazy, push=bool(receiver),
                          page_pid=receiver.process.pid if receiver else 0))
        missing = [] if self._has_image(offer.image_id) else \
            [d for d in dict.fromkeys(offer.layers) if not self.engine.images.has_layer(d)]
        return wire.MigrationTicket(id=migration_id, container_id=offer.container_id, missing_layers=missing,
                                    page_client_cert=client_cert, page_receiver_port=receiver.port if receiver else None,
                                    page_receiver_cert=receiver_cert)

    def _receive_pages(self, migration_id: str, offer: wire.MigrationOffer, local_address: str | None):
        """A page server for the offered container's pages, on a tmpfs that holds
        what the offer declared and no more; (None, None) where memory cannot
        hold them, and they come in the archive, whose reader bounds them."""
        from ferry.checkpoint.lazy import free_port
        from ferry.checkpoint.pagepush import start_receiver
        from ferry.util.fs import tmpfs_if_it_fits
        self.sweep_pages()
        with _records_lock:
            _receivers[migration_id] = None   # its directory is in use from here: no sweep takes it
        directory = self._pages_dir(migration_id)
        cert = tls = None
        try:
            os.makedirs(directory, mode=0o700)
            if not tmpfs_if_it_fits(directory, offer.memory_bound, exact=True):
                self._end_receiver(migration_id)
                return None, None
            if offer.page_sender_cert:
                identity = self._identity(migration_id)
                cert = identity.create("ferry page receiver")
                tls = identity.trust(offer.page_sender_cert)
            receiver = start_receiver(directory, _bind_address(local_address), free_port(), tls, OFFER_TTL)
        except BaseException:
            self._end_receiver(migration_id)
            raise
        with _records_lock:
            _receivers[migration_id] = receiver
        return receiver, cert

    def _pages_dir(self, migration_id: str) -> str:
        return os.path.join(self.layout.tmp, f"{PAGES_PREFIX}{migration_id}")

    def _end_receiver(self, migration_id: str) -> None:
        """The page server of an offer that ended (restored, failed or aborted), and its tmpfs."""
        with _records_lock:
            receiver = _receivers.pop(migration_id, None)
        if receiver:
            receiver.stop()
        remove_tree(self._pages_dir(migration_id))
        remove_tree(self._identity(migration_id).directory)

    def sweep_pages(self) -> None:
        """Page directories no offer of this agent owns: left by an agent that died."""
        stale = []
        with contextlib.suppress(FileNotFoundError), _records_lock:
            stale = [e for e in os.listdir(self.layout.tmp)
                     if e.startswith(PAGES_PREFIX) and e[len(PAGES_PREFIX):] not in _receivers]
        for entry in stale:
            try:
                remove_tree(os.path.join(self.layout.tmp, entry))
            except FerryError as exc:   # the next sweep tries again
                log.warning("cannot remove %s: %s", entry, exc)

    def _identity(self, migration_id: str):
        """This side's one-time key pair of a lazy migration (ROOT/migrations/ID.tls)."""
        from ferry.checkpoint.lazy import Identity
        return Identity(os.path.join(self.layout.migrations, f"{migration_id}.tls"))

    def _has_image(self, image_id: str) -> bool:
        try:
            self.engine.images.get(image_id)
            return True
        except NotFound:
            return False

    def receive_image(self, migration_id: str, path: str) -> None:
        """The offered container's image, from an oci-archive of the layers this
        host lacked: loaded with every digest checked, and it must be that image."""
        record = self.record(migration_id)
        if record.role != DESTINATION or record.state != "offered" or _expired(record):
            raise Conflict(f"migration {migration_id} is {record.state}, not waiting for its image")
        offer = wire.MigrationOffer.model_validate_json(record.offer)
        loaded = self.engine.images.load(path)
        if [i.id for i in loaded] != [offer.image_id]:
            raise BadArchive(f"the image sent for migration {migration_id} is not image {offer.image_id[:12]}",
                             hint="the source sent another image; do not trust it")

    def _refuse_clashes(self, offer: wire.MigrationOffer) -> None:
        containers = self.engine.containers
        for wanted, what in ((offer.container_id, "ID"), (offer.name, "name")):
            try:
                found = containers.get(wanted)
            except NotFound:
                continue
            raise Refused(f"a container with the {what} {wanted[:64]!r} exists here ({found.name}, {found.state})",
                          check="id" if what == "ID" else "name",
                          hint="migrate with --name NEW, or remove the container here first")
        try:
            self.engine.images.get(offer.image_id)
        except NotFound:
            if not offer.layers:
                raise Refused(f"image {offer.image} ({offer.image_digest or offer.image_id[:12]}) is not on this "
                              "host", check="image",
                              hint="load or pull it on the destination first (ferry load, ferry pull)") from None
        if offer.ip:
            for held in self.engine.networks.reservations():
                if held.ip == offer.ip and held.container_id != offer.container_id:
                    raise Refused(f"address {offer.ip} is held here by container {held.container_id[:12]}",
                                  check="ip", hint="free it on the destination first")
        with _records_lock:
            for record in self.records():
                if (record.role == DESTINATION and record.container_id == offer.container_id
                        and record.state in ("offered", "receiving") and _alive(record.pid)
                        and not _expired(record)):
                    raise Refused(f"migration {record.id} of this container is already under way here",
                                  check="busy")

    def _refuse_short_room(self, offer: wire.MigrationOffer) -> None:
        from ferry.util.fs import memory_available
        os.makedirs(self.layout.root, exist_ok=True)
        disk = disk_free(self.layout.root)
        memory = memory_available()
        if offer.files_bound + DISK_MARGIN > disk:
            raise Refused(f"the container's files take {size_text(offer.files_bound)}, and {size_text(disk)} of disk is "
                          f"free here", check="disk", hint="free disk space on the destination")
        if offer.memory_bound > memory and offer.memory_bound + offer.files_bound + DISK_MARGIN > disk:
            raise Refused(f"the container's memory takes {size_text(offer.memory_bound)}; this host has "
                          f"{size_text(memory)} of memory and {size_text(disk)} of disk free", check="memory",
                          hint="free memory or disk on the destination")

    def receive(self, migration_id: str, fd: int, progress=None, page_server: tuple[str, int] | None = None
                ) -> wire.RestoreReport:
        """Restore the offered container from the archive read from fd, with
        every check of a file restore; the report says it runs. A lazy one
        fetches its pages from `page_server` (the address the source connected
        from, never one it names, and the port it named)."""
        started = time.monotonic()
        with _records_lock:
            record = self.record(migration_id)
            if record.role != DESTINATION or record.state != "offered" or _expired(record):
                raise Conflict(f"migration {migration_id} is {record.state}, not waiting for its checkpoint")
            record = self._save(replace(record, state="receiving", pid=os.getpid()))
        offer = wire.MigrationOffer.model_validate_json(record.offer)
        lazy_from = None
        if record.lazy:
            from ferry.checkpoint.lazy import LazySource
            if page_server is None:
                self._save(replace(record, state="failed", error="no page server named"))
                raise UsageError(f"migration {migration_id} is lazy, and its checkpoint came without the page "
                                 "server's port")
            lazy_from = LazySource(page_server[0], page_server[1], self._identity(migration_id).criu_config)
        pages_in = None
        if record.push:
            with _records_lock:
                pages_in = _receivers.get(migration_id)
            if pages_in is None:
                self._save(replace(record, state="failed", error="its page server is gone"))
                raise Conflict(f"migration {migration_id} lost its page server (the agent restarted)",
                               hint="migrate again")
        options = RestoreOptions(import_stream=fd, name=offer.name, tcp_established=offer.tcp_established,
                                 ports=tuple(offer.ports) if offer.ports is not None else None,
                                 container_id=offer.container_id, adopt_lease=True,
                                 allow_bind_mounts=self.allow_bind_mounts, allow_privileges=self.allow_privileges,
                                 lazy_from=lazy_from, pages_in=pages_in,
                                 keys=self.keys if offer.encrypted else None)
        try:
            restored = self.engine.checkpoints.restore(None, options, progress or _no_progress)
        except BaseException as failure:
            if pages_in:
                self._end_receiver(migration_id)
            self._save(replace(record, state="failed", error=str(failure) or type(failure).__name__))
            if lazy_from:
                from ferry.checkpoint.lazy import end_page_server
                # Its source would otherwise wait, frozen, for a daemon that never comes.
                end_page_server(lazy_from.address, lazy_from.port)
                remove_tree(self._identity(migration_id).directory)
            raise
        if pages_in:
            # CRIU has read them into the container: their tmpfs goes, after the reply.
            threading.Thread(target=self._end_receiver, args=(migration_id,), daemon=True).start()
        # ---- the point of no return of a lazy migration: the container runs here ----
        record = self._save(replace(record, state="running", pages="arriving" if restored.lazy_daemon else "",
                                    page_pid=restored.lazy_daemon.pid if restored.lazy_daemon else 0))
        if restored.lazy_daemon:
            atomic_write(self.engine.containers.files(restored.id).lazy_pages_pid, f"{restored.lazy_daemon.pid}\n")
            threading.Thread(target=self._await_pages, args=(record, restored.lazy_daemon),
                             name=f"ferry-pages-{migration_id[:8]}", daemon=True).start()
        phases = {k: round(v, 6) for k, v in restored.phases.items()}
        return wire.RestoreReport(id=migration_id, container_id=restored.id, name=restored.name,
                                  seconds=round(time.monotonic() - started, 6), phases=phases)

    def _await_pages(self, record: Record, daemon) -> None:
        """Until the lazy-pages daemon has every page, for the record. If it
        fails, the container's memory is incomplete: the kernel would hand its
        tasks zero pages for the rest. Its monitor kills it (and so does this,
        in case): it must not run corrupt."""
        if self._settle_pages(record, daemon.wait()).pages == "failed":
            with contextlib.suppress(FerryError):
                self.engine.containers.kill(record.container_id, "SIGKILL")

    def _settle_pages(self, record: Record, code: int | None = None) -> Record:
        """Record how a lazy migration's pages ended: the daemon's log says
        whether they all came (`code`, its exit status, when this agent saw it
        end; None when it ended under an agent since restarted)."""
        from ferry.checkpoint.lazy import daemon_failure, pages_complete
        files = self.engine.containers.files(record.container_id)
        remove_file(files.lazy_pages_pid)
        remove_tree(self._identity(record.id).directory)
        if code in (0, None) and pages_complete(files.checkpoint_work):
            pages, error = "complete", record.error
            log.info("migration %s: the last page of container %s has arrived", record.id, record.name)
        else:
            reason = daemon_failure(files.checkpoint_work, code) if code else "the daemon ended short of pages"
            pages, error = "failed", f"pages lost: {reason}"
            log.error("migration %s: the pages of container %s stopped coming (%s): it is lost here and is "
                      "killed; its source resumes it if it still can", record.id, record.name, reason)
        with _records_lock:
            return self._save(replace(self.record(record.id), pages=pages, error=error))

    def status(self, migration_id: str) -> wire.MigrationStatus:
        record = self.record(migration_id)
        if record.pages == "arriving" and not _pages_watched(record):
            record = self._settle_pages(record)
        state = record.state
        if state in ("offered", "receiving") and not _alive(record.pid):
            state = "failed"   # the agent that took it died; its restore was undone by recovery
        elif _expired(record):
            state = "aborted"  # an offer its source never followed up
        return wire.MigrationStatus(id=record.id, container_id=record.container_id, state=state,
                                    error=record.error, pages=record.pages or None)

    def abort(self, migration_id: str) -> wire.MigrationStatus:
        """The source gives up before the point of no return: an offer is
        dropped; a container that runs here already stays (the source asks
        status first, and a running copy is never removed by a peer)."""
        with _records_lock:
            record = self.record(migration_id)
            if record.state == "offered":
                record = self._save(replace(record, state="aborted"))
        if record.state == "aborted" and record.push:
            self._end_receiver(record.id)
        return self.status(record.id)

    # ---- the source's side ---------------------------------------------------------
    def migrate(self, name_or_id: str, options: MigrateOptions,
                sent: Callable[[int], None] | None = None) -> MigrationResult:
        from ferry.migration.client import AgentClient
        containers = self.engine.containers
        container = containers.get(name_or_id)
        if container.state != RUNNING:
            raise Conflict(f"cannot migrate container {container.name!r}: it is {container.state}",
                           hint="only running containers migrate; restore or start it first")
        from ferry.engine.checkpoints import refuse_while_pages_arrive
        refuse_while_pages_arrive(containers.files(container.id), container.name)
        if options.sealing is not None:
            refuse_lazy_sealing(options.lazy, True)
            # age encrypts the archive only: the memory must travel inside it.
            options = replace(options, through_agent=True)
        timings = Timings()
        # One-time TLS keys: always for lazy pages, which cross the network
        # on their own; for pushed pages when the agent's channel is TLS too.
        tls = options.lazy or (options.to.lower().startswith("https:") and not options.through_agent)
        identity = self._identity(f"offer-{os.urandom(8).hex()}") if tls else None
        try:
            with AgentClient(options.to, options.token, verify=options.verify) as agent:
                with timings.phase(Phase.PREFLIGHT):
                    cert = identity.create("ferry page server" if options.lazy else "ferry page sender") \
                        if identity else None
                    ticket = agent.offer(self._offer(container, options, cert))
                    lazy = self._lazy_serve(agent, ticket, identity) if options.lazy else None
                    push = None if options.lazy or options.through_agent else self._page_push(agent, ticket, identity)
                if ticket.missing_layers:
                    with timings.phase(Phase.IMAGE):
                        self._send_image(agent, ticket, container.image_id)
                record = self._save(Record(ticket.id, SOURCE, container.id, container.name, "streaming",
                                           utc_now(), peer=agent.url, pid=os.getpid(), token=options.token,
                                           tcp_established=options.tcp_established, lazy=options.lazy,
                                           push=bool(push), page_port=push.port if push else 0))
                report, bytes_sent, dump = self._stream(container, options, agent, ticket, record, timings, sent,
                                                        lazy, push)
                timings.running()
                # ---- POINT OF NO RETURN: the destination runs the container ----
                # (a lazy one too: it resumed there, and from now on its memory
                # must come from here until the last page has arrived)
                phases.reached("migrate:confirmed")
                record = self._save(replace(self.record(ticket.id), state="confirmed"))
                if dump:
                    dump.commit()
                    with timings.phase(Phase.PAGES):
                        self._serve_pages(container, record, dump)
                with timings.phase(Phase.CLEANUP):
                    self._drop_source(container.id, options.keep_source, pushed=bool(push))
        finally:
            if identity:
                remove_tree(identity.directory)
        return MigrationResult(ticket.id, container.id, report.name, agent.url, timings.phases, timings.downtime,
                               bytes_sent, options.lazy, timings.pages_pushed, timings.source, report.phases)

    def _lazy_serve(self, agent, ticket: wire.MigrationTicket, identity):
        """The page server's port and TLS, trusting the destination's certificate from its ticket."""
        from ferry.checkpoint.lazy import LazyServe, free_port
        if not ticket.page_client_cert:
            with contextlib.suppress(FerryError):
                agent.abort(ticket.id)
            raise Incompatible(f"the agent at {agent.url} did not take the offer as a lazy migration",
                               hint="upgrade ferry there, or migrate without --lazy")
        return LazyServe(free_port(), identity.trust(ticket.page_client_cert))

    def _page_push(self, agent, ticket: wire.MigrationTicket, identity):
        """Where the dump sends the pages: the destination's page server, at
        the agent's own IPv4 address; None when the destination keeps them
        in the archive (no room in its memory for a page server's tmpfs)."""
        import socket
        import urllib.parse
        from ferry.checkpoint.pagepush import PagePush
        if not ticket.page_receiver_port:
            return None
        if identity and not ticket.page_receiver_cert:
            with contextlib.suppress(FerryError):
                agent.abort(ticket.id)
            raise Incompatible(f"the agent at {agent.url} offered a page server without TLS",
                               hint="upgrade ferry there")
        host = urllib.parse.urlsplit(agent.url).hostname or ""
        try:
            address = socket.getaddrinfo(host, ticket.page_receiver_port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        except (OSError, IndexError):
            with contextlib.suppress(FerryError):
                agent.abort(ticket.id)
            raise FerryError(f"cannot resolve {host!r} to an IPv4 address for its page server",
                             hint="migrate to the agent's IPv4 address") from None
        tls = identity.trust(ticket.page_receiver_cert) if identity else None
        return PagePush(address, ticket.page_receiver_port, tls)

    def _serve_pages(self, container, record: Record, dump) -> None:
        """After the point of no return of a lazy migration: until the
        destination has the last page. If the transfer fails, the copy there
        lacks memory (its monitor kills it), and CRIU has thawed the one here."""
        from ferry.engine.listing import process_alive
        try:
            dump.wait()
        except FerryError as failure:
            self.engine.checkpoints.settle_failed_checkpoint(container)
            journal.finish(self.engine.containers.dir(container.id))
            if process_alive(self.engine.containers.get(container.id).pid or 0):
                self._announce(container.id)
                self._save(replace(record, state="resumed", error=f"pages lost: {failure.message}"))
                raise FerryError(f"the page transfer to {record.peer} failed after container {container.name!r} "
                                 f"had resumed there ({failure.message}): its copy there is lost, and it runs "
                                 f"here again", hint=f"its monitor stops the copy there; check with 'ferry ps -a' "
                                                     f"on both hosts; {failure.hint or ''}".rstrip("; ")) from None
            self._save(replace(record, state="failed", error=f"pages lost: {failure.message}"))
            raise FerryError(f"the page transfer to {record.peer} failed after container {container.name!r} had "
                             f"resumed there ({failure.message}): the container is lost",
                             hint=failure.hint) from None
        self._save(replace(record, pages="complete"))
        phases.reached("migrate:pages")

    def _offer(self, container, options: MigrateOptions, cert: str | None) -> wire.MigrationOffer:
        from ferry.checkpoint.hostinfo import host_info
        here = host_info()
        image = self.engine.images.get(container.image_id)
        container_files = self.engine.containers.files(container.id)
        files = _tree_size(container_files.upper)
        with contextlib.suppress(OSError):
            files += os.path.getsize(container_files.log)
        for volume in container.config.named_volumes:
            files += _tree_size(self.engine.volumes.data_dir(volume.source))
        source = wire.SourceHost(**{k: v for k, v in here.to_dict().items() if k != "cpu"})
        return wire.MigrationOffer(
            container_id=container.id, name=options.name or container.name, image=container.config.image,
            image_id=image.id, image_digest=container.config.image_digest or None, layers=list(image.layers),
            ip=container.config.ip or None, mac=container.config.mac or None,
            ports=list(options.ports) if options.ports is not None else None,
            tcp_established=options.tcp_established, memory_bound=self.engine.containers.runc.memory_in_use(container.id) or 0,
            bind_mounts=[v.source for v in container.config.binds], privileges=privileges_asked(container.config),
            files_bound=files, source=source, lazy=options.lazy,
            page_server_cert=cert if options.lazy else None, push_pages=not (options.lazy or options.through_agent),
            page_sender_cert=None if options.lazy else cert, encrypted=options.sealing is not None)

    def _send_image(self, agent, ticket: wire.MigrationTicket, image_id: str) -> None:
        """The layers the destination lacks, before anything is frozen."""
        os.makedirs(self.layout.tmp, mode=0o700, exist_ok=True)
        path = os.path.join(self.layout.tmp, f"image-{ticket.id}.tar")
        try:
            self.engine.images.export_layers(image_id, ticket.missing_layers, path)
            agent.send_image(ticket.id, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def _stream(self, container, options: MigrateOptions, agent, ticket: wire.MigrationTicket, record: Record,
                timings: Timings, sent, lazy=None, push=None) -> tuple[wire.RestoreReport, int, object]:
        """The dump streams into the destination's restore; any failure before
        the destination's word resumes the container here. With `lazy`, the
        dump leaves out memory and returns its page server (a LazyDump)."""
        from ferry.migration.client import NoAnswer
        read_fd, write_fd = os.pipe()
        grow_pipe(write_fd)
        outcome: dict = {"sent": 0}

        def upload() -> None:
            try:
                outcome["report"] = agent.send_checkpoint(ticket.id, read_fd, sent=_counting(outcome, sent),
                                                          page_server_port=lazy.port if lazy else None)
            except BaseException as failure:   # handed to the main thread
                outcome["failure"] = failure
            finally:
                os.close(read_fd)

        uploader = threading.Thread(target=upload, name="ferry-migrate-upload", daemon=True)
        uploader.start()
        dumped = False
        dump = None
        try:
            with timings.phase(Phase.STREAM):
                try:
                    checkpoint = self.engine.checkpoints.checkpoint(
                        container.id, CheckpointOptions(export_stream=write_fd, tcp_established=options.tcp_established,
                                                        file_locks=options.file_locks, compress="zstd", migration=ticket.id, lazy=lazy,
                                                        push=push, sealing=options.sealing),
                        progress=lambda phase, done, total: timings.frozen() if phase == "dump" else None)
                    timings.source = checkpoint.phases
                    if push and checkpoint.criu:
                        timings.pages_pushed = checkpoint.criu.pages_written * PAGE_SIZE
                    dump = checkpoint.lazy
                    if dump:
                        record = self._save(replace(record, page_pid=dump.pid, page_port=dump.port))
                        phases.reached("migrate:serving")   # tests stop the page server here
                    # Until the destination answers, a crash of this command leaves
                    # the next one to ask it (engine/recovery.py: settle).
                    journal.begin(self.engine.containers.dir(container.id), journal.MIGRATE, migration=ticket.id)
                    dumped = True
                finally:
                    os.close(write_fd)   # the end of the archive, or a cut stream the destination refuses
            phases.reached("migrate:sent")
            with timings.phase(Phase.RESTORE):
                uploader.join()
        except BaseException as interruption:
            uploader.join()
            if "report" in outcome:   # the destination runs it already: the migration is done
                return outcome["report"], outcome["sent"], dump
            # A dump that fails for a broken pipe failed because the stream did: say why.
            # A dump refused for what the container holds (a file lock) is its own cause.
            cause = outcome.get("failure") if isinstance(interruption, FerryError) \
                and not isinstance(interruption, Conflict) else None
            self._resume(container, record, options, reason=str(cause or interruption) or repr(interruption),
                         dump=dump)
            if cause is not None:
                raise cause from None
            if push and isinstance(interruption, ToolError):
                interruption.hint = "; ".join(filter(None, (
                    interruption.hint, f"if port {push.port} of {push.address} (its page server) cannot be "
                                       f"reached from here, migrate with --through-agent")))
            raise
        failure = outcome.get("failure")
        if failure is None:
            return outcome["report"], outcome["sent"], dump
        if isinstance(failure, NoAnswer) and dumped:
            status = self._ask(agent, ticket.id)
            if status is not None and status.state == "running":
                return (wire.RestoreReport(id=ticket.id, container_id=container.id, name=options.name or
                                           container.name, seconds=0, phases={}), outcome["sent"], dump)
            if status is None:
                self._save(replace(record, state="unresolved", error=str(failure)))
                raise FerryError(f"cannot tell whether {agent.url} runs container {container.name!r}: {failure}",
                                 hint=f"the checkpoint is kept here; once {agent.url} answers, any ferry command "
                                      f"on {container.name!r} here finishes or undoes the migration")
        if dumped:
            with contextlib.suppress(FerryError):
                agent.abort(ticket.id)
            self._resume(container, record, options, reason=str(failure), dump=dump)
        raise failure

    def _ask(self, agent, migration_id: str) -> wire.MigrationStatus | None:
        try:
            return agent.status(migration_id)
        except FerryError as exc:
            log.warning("cannot ask %s about migration %s: %s", agent.url, migration_id, exc)
            return None

    def _resume(self, container, record: Record, options: MigrateOptions | None, reason: str,
                dump=None) -> None:
        """Before the point of no return: the container runs here again, from
        the checkpoint it was dumped into (CRIU brings back its processes,
        memory and TCP connections), or it was never stopped. A lazy dump
        still holds its tasks frozen: ending it thaws them."""
        tcp = options.tcp_established if options else record.tcp_established
        if record.push:
            # Its dump left it here, frozen and cut off; its memory is in place.
            log.warning("resuming container %s here: %s", container.name, reason)
            kept = self.engine.checkpoints.settle_failed_checkpoint(container)
            if kept is None:
                self._announce(container.id)
            journal.finish(self.engine.containers.dir(container.id))
            self._save(replace(record, state="resumed", error=reason))
            return
        if dump:
            log.warning("resuming container %s here: %s", container.name, reason)
            dump.abort()
            self.engine.checkpoints.settle_failed_checkpoint(container)
            self._announce(container.id)
        current = self.engine.containers.get(container.id)
        if current.state != RUNNING and current.checkpointed_at:
            log.warning("resuming container %s here: %s", container.name, reason)
            self.engine.checkpoints.restore(container.id, RestoreOptions(tcp_established=tcp))
        else:
            journal.finish(self.engine.containers.dir(container.id))
        self._save(replace(record, state="resumed", error=reason))

    def settle(self, container, migration_id: str) -> bool:
        """For recovery, once the migrate command that left this container's
        journal is gone: the destination's word decides. It runs the container:
        this copy goes. It does not: this copy resumes. It cannot be asked:
        nothing changes, and the next command asks again (False)."""
        from ferry.migration.client import AgentClient
        try:
            record = self.record(migration_id)
        except FerryError as exc:
            log.warning("migration %s of %s has no usable record (%s); its checkpoint stays here",
                        migration_id, container.name, exc)
            return True
        if record.lazy and record.page_pid and _alive(record.page_pid):
            log.warning("container %s still serves its pages to %s (migration %s): the next ferry command on it "
                        "settles the migration", container.name, record.peer, migration_id)
            return False
        if record.push and record.state == "confirmed":
            self._drop_source(container.id, keep=False, pushed=True)   # the command died removing it
            return True
        if record.state in ("confirmed", "resumed") or (container.state == RUNNING and not record.push):
            if container.state == RUNNING and record.state not in ("confirmed", "resumed"):
                self._save(replace(record, state="resumed", error="the dump did not stop it"))
            return True
        with AgentClient(record.peer, record.token) as agent:
            status = self._ask(agent, migration_id)
        if status is None:
            self._save(replace(record, state="unresolved"))
            log.warning("cannot tell whether %s runs container %s (migration %s): its checkpoint stays here, "
                        "and the next ferry command on it asks again", record.peer, container.name, migration_id)
            return False
        if status.state == "running":
            log.warning("container %s runs on %s (migration %s): removing its copy here",
                        container.name, record.peer, migration_id)
            self._save(replace(record, state="confirmed"))
            self._drop_source(container.id, keep=False, pushed=record.push)
            return True
        if status.state == "receiving" and record.push:
            # Its restore is under way there: resuming here could make two.
            log.warning("%s is still restoring container %s (migration %s): the next ferry command on it asks "
                        "again", record.peer, container.name, migration_id)
            return False
        self._resume(container, record, None, reason=f"the migration to {record.peer} is {status.state}")
        return True

    def _announce(self, container_id: str) -> None:
        """A lazy source that runs on: the LAN must learn that its address
        lives here again, in case the destination had announced it."""
        with contextlib.suppress(FerryError):
            self.engine.containers.networks.announce(container_id, wait=True)

    def _drop_source(self, container_id: str, keep: bool, pushed: bool = False) -> None:
        """After the point of no return: best effort, and a failure is reported, not undone.
        A pushed dump's container is still here, frozen and cut off: it is stopped first."""
        containers = self.engine.containers
        try:
            if pushed and containers.live_process(containers.get(container_id)):
                containers.stop(container_id, timeout=0)   # runc's kill --all thaws to kill
            if keep:
                containers.set_checkpointed(container_id, None)
                from ferry.util.fs import remove_tree_later
                remove_tree_later(containers.files(container_id).checkpoint_images)
                journal.finish(containers.dir(container_id))
            else:   # its anonymous volumes went with it
                containers.remove(container_id, force=True, volumes=True)
        except FerryError as exc:
            log.warning("the container runs on the destination, but its copy here was not removed: %s", exc)


def refuse_lazy_sealing(lazy: bool, sealed: bool) -> None:
    if lazy and sealed:
        raise UsageError("--lazy cannot encrypt with age: its pages cross over CRIU's TLS, with keys made for the "
                         "migration", hint="migrate with --lazy or --encrypt-to, not both")


def _bind_address(address: str | None) -> str:
    """The IPv4 address a source reached this agent on, for its page server; any where it is not one."""
    import ipaddress
    try:
        return str(ipaddress.IPv4Address(address or ""))
    except ValueError:
        return "0.0.0.0"


def _refuse_lazy(offer: wire.MigrationOffer) -> None:
    from ferry.host import probes
    check = probes.cached("userfaultfd")
    if check.status != probes.OK:
        raise Refused(f"this host cannot take a lazy migration: {check.key}: {check.detail}", check="lazy-pages",
                      hint="migrate without --lazy (stop-and-copy)")
    if not offer.page_server_cert:
        raise Refused("a lazy migration needs the source's page server certificate", check="lazy-pages")
    from ferry.checkpoint.lazy import parse_certificate
    parse_certificate(offer.page_server_cert)


def _counting(outcome: dict, sent):
    def count(total: int) -> None:
        outcome["sent"] = total
        if sent:
            sent(total)
    return count


def _no_progress(_phase: str, _done: int, _total: int) -> None:
    pass


def _expired(record: Record) -> bool:
    """An offer whose checkpoint never came within OFFER_TTL (its source died in preflight)."""
    from ferry.util.timefmt import parse
    if record.state != "offered":
        return False
    age = time.time() - parse(record.created).timestamp()
    return age > OFFER_TTL


def _pages_watched(record: Record) -> bool:
    """This agent's thread waits for the daemon, or the daemon still runs."""
    from ferry.checkpoint.lazy import daemon_alive
    return record.pid == os.getpid() or (bool(record.page_pid) and daemon_alive(record.page_pid))


def _alive(pid: int) -> bool:
    from ferry.engine.listing import process_alive
    return process_alive(pid)


def _tree_size(path: str) -> int:
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total
