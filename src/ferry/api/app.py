"""The agent's routes: FastAPI over the engine of one state root.

Requests and replies are the wire records of migration/wire.py. Every
request needs the bearer token (a 401 says nothing else); a body that is not
a valid message is a 400 naming the field; every failure is JSON
{"error", "hint"} (and "check" for a refused migration).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

import ferry
from ferry.api.auth import bearer_matches
from ferry.migration import wire
from ferry.migration.client import stream_idle_timeout
from ferry.util import phases
from ferry.util.errors import (BadArchive, Conflict, DiskFull, FerryError, Incompatible, NotFound,
                               PermissionDenied, Refused, UsageError)
from ferry.util.log import get_logger
from ferry.util.pipes import grow_pipe
from ferry.util.space import disk_free, margin

log = get_logger("ferry.api")

STATUS = ((Refused, 409), (UsageError, 400), (BadArchive, 400), (NotFound, 404), (Conflict, 409),
          (Incompatible, 412), (PermissionDenied, 403), (DiskFull, 507))
MigrationIdPath = Path(pattern=r"^[0-9a-f]{32}\z")
NOT_FOUND_HINT = "the API is under /v1/; see /v1/openapi.json"
FIRST_BYTES_WAIT = 1800.0   # seconds: as long as a dump may take (engine/recovery.py's TOOL_WAIT)


def create_app(root: str, token: str, *, allow_bind_mounts: bool = False, allow_privileges: bool = False,
               keys=None) -> FastAPI:
    app = FastAPI(title="ferry agent", version=ferry.__version__, openapi_url="/v1/openapi.json",
                  docs_url=None, redoc_url=None)

    def engine():
        from ferry.engine.core import Engine
        from ferry.engine.migrations import Migrations
        made = Engine(root)
        made.migrations = Migrations(made, allow_bind_mounts=allow_bind_mounts, allow_privileges=allow_privileges,
                                     keys=keys)
        return made

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if not bearer_matches(request.headers.get("authorization"), token):
            return JSONResponse({"error": "unauthorized"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        problem = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in problem.get("loc", ())) or "request"
        return _error(400, f"invalid request: {where}: {problem.get('msg', 'invalid')}",
                      hint="see /v1/openapi.json for the message's fields")

    @app.exception_handler(FerryError)
    async def failed(_request: Request, exc: FerryError):
        status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
        if status == 500:   # not the request's fault: the agent's log keeps how it happened
            log.warning("%s %s failed: %s", _request.method, _request.url.path, exc, exc_info=exc)
        return _error(status, exc.message, exc.hint, getattr(exc, "check", None))

    @app.exception_handler(404)
    async def unknown(_request: Request, _exc):
        return _error(404, "no such route", NOT_FOUND_HINT)

    @app.get("/v1/version", response_model=wire.VersionReply)
    def version() -> wire.VersionReply:
        return wire.VersionReply(version=ferry.__version__)

    @app.get("/v1/host", response_model=wire.HostReply)
    def host() -> wire.HostReply:
        from ferry.checkpoint.hostinfo import host_info
        from ferry.util.fs import memory_available
        info = {k: v for k, v in host_info().to_dict().items() if k != "cpu"}
        return wire.HostReply(host=wire.SourceHost(**info), memory_available=memory_available(),
                              disk_free=disk_free(root if os.path.isdir(root) else "/"))

    @app.post("/v1/compat", response_model=wire.CompatReply)
    def compat(source: wire.SourceHost) -> wire.CompatReply:
        """Whether a checkpoint of `source`'s containers would restore here:
        the checks a migration's preflight makes, CRIU's CPU check included."""
        from ferry.checkpoint import compat as checks
        from ferry.checkpoint.hostinfo import criu_path, host_info
        return wire.CompatReply(checks=[wire.CompatCheck(**row)
                                        for row in checks.report(source, host_info(), criu_path())])

    @app.get("/v1/containers", response_model=list[wire.ContainerReply])
    def containers() -> list[wire.ContainerReply]:
        return [_container(c) for c in engine().containers.list(all_states=True)]

    @app.get("/v1/containers/{name}", response_model=wire.ContainerReply)
    def container(name: str = Path(max_length=128)) -> wire.ContainerReply:
        return _container(engine().containers.get(name))

    @app.get("/v1/images", response_model=list[wire.ImageReply])
    def images() -> list[wire.ImageReply]:
        return [wire.ImageReply(id=i.id, digest=i.digest or None, names=list(i.names)) for i in engine().images.list()]

    @app.get("/v1/checkpoints", response_model=list[wire.ContainerReply])
    def checkpoints() -> list[wire.ContainerReply]:
        """The containers whose local checkpoint this root keeps."""
        return [_container(c) for c in engine().containers.list(all_states=True) if c.checkpointed_at]

    @app.get("/v1/migrations", response_model=list[wire.MigrationStatus])
    def migrations() -> list[wire.MigrationStatus]:
        migrations = engine().migrations
        return [migrations.status(r.id) for r in migrations.records()]

    @app.post("/v1/migrations", response_model=wire.MigrationTicket, status_code=201)
    def offer(offer: wire.MigrationOffer, request: Request) -> wire.MigrationTicket:
        """Preflight: check that this host can take the container. A page
        server for its pages listens where the source reached this agent."""
        local = request.scope.get("server") or (None,)
        return engine().migrations.preflight(offer, local_address=local[0])

    @app.get("/v1/migrations/{migration_id}", response_model=wire.MigrationStatus)
    def status(migration_id: str = MigrationIdPath) -> wire.MigrationStatus:
        return engine().migrations.status(migration_id)

    @app.delete("/v1/migrations/{migration_id}", response_model=wire.MigrationStatus)
    def abort(migration_id: str = MigrationIdPath) -> wire.MigrationStatus:
        return engine().migrations.abort(migration_id)

    @app.put("/v1/migrations/{migration_id}/image", response_model=wire.MigrationStatus)
    async def receive_image(request: Request, migration_id: str = MigrationIdPath) -> wire.MigrationStatus:
        """An oci-archive of the image layers this host lacks, before the checkpoint."""
        made = engine()
        tmp = made.layout.tmp
        os.makedirs(tmp, mode=0o700, exist_ok=True)
        path = os.path.join(tmp, f"image-{migration_id}.tar")
        room = disk_free(tmp) - margin(tmp)
        written = 0
        try:
            with open(path, "wb") as out:
                async for chunk in request.stream():
                    written += len(chunk)
                    if written > room:
                        raise DiskFull(f"the image sent for migration {migration_id} does not fit in {tmp}",
                                       hint="free disk space on the destination")
                    out.write(chunk)
            await asyncio.get_running_loop().run_in_executor(
                None, functools.partial(made.migrations.receive_image, migration_id, path))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return engine().migrations.status(migration_id)

    @app.put("/v1/migrations/{migration_id}/checkpoint", response_model=wire.RestoreReport)
    async def receive(request: Request, migration_id: str = MigrationIdPath,
                      page_server_port: int | None = Query(None, ge=1, le=65535)) -> wire.RestoreReport:
        """The checkpoint archive, streamed in the body, into a restore that
        runs beside the transfer; the reply comes once the container runs. A
        lazy migration's pages come from page_server_port at the address the
        request came from: the source cannot point this host elsewhere."""
        page_server = (request.client.host, page_server_port) if page_server_port and request.client else None
        read_fd, write_fd = os.pipe()
        grow_pipe(write_fd)
        os.set_blocking(write_fd, False)
        loop = asyncio.get_running_loop()
        restore = loop.run_in_executor(None, functools.partial(_receive, engine(), migration_id, read_fd,
                                                               page_server))
        chunks = request.stream().__aiter__()
        # The first bytes come once the source's dump is over (minutes for
        # many GiB); after that, a stall is a cut link.
        wait = FIRST_BYTES_WAIT
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(chunks.__anext__(), wait)
                except StopAsyncIteration:
                    break
                if not await _write_all(loop, write_fd, chunk):
                    break   # the restore refused the archive: its error is the answer
                if wait == FIRST_BYTES_WAIT:
                    phases.reached("migration:receiving")   # tests stop the agent mid-stream here
                wait = stream_idle_timeout()
        except (ClientDisconnect, asyncio.TimeoutError):
            log.warning("the checkpoint stream of migration %s was cut", migration_id)   # the restore refuses it
        finally:
            os.close(write_fd)   # the end of the archive, or a cut the restore refuses
        return await restore

    return app


def _receive(engine, migration_id: str, read_fd: int, page_server) -> wire.RestoreReport:
    try:
        return engine.migrations.receive(migration_id, read_fd, page_server=page_server)
    finally:
        os.close(read_fd)   # a writer still feeding the pipe learns that the restore stopped


async def _write_all(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> bool:
    """Write data into the restore's pipe without blocking the event loop;
    False once the restore has stopped reading."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            writable = loop.create_future()
            loop.add_writer(fd, writable.set_result, None)
            try:
                await writable
            finally:
                loop.remove_writer(fd)
        except BrokenPipeError:
            return False
    return True


def _container(container) -> wire.ContainerReply:
    return wire.ContainerReply(id=container.id, name=container.name, image=container.config.image,
                               state=container.state, checkpointed=bool(container.checkpointed_at),
                               ip=container.config.ip or None)


def _error(status: int, message: str, hint: str | None = None, check: str | None = None) -> JSONResponse:
    body = wire.ErrorReply(error=message, hint=hint, check=check)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)
