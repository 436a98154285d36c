"""The client of another host's agent (`ferry serve`): typed requests, typed
replies, and each failure turned into one FerryError naming the agent.

Every reply is parsed into its wire record: an agent is another host, and
what it says is checked like anything else that crosses a host boundary.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import httpx
from pydantic import ValidationError

from ferry.migration import wire
from ferry.util.errors import (Conflict, FerryError, Incompatible, NotFound, PermissionDenied, Refused,
                               UsageError)

CONNECT_TIMEOUT = 10.0
# A restore of many GiB answers only once it runs; the stream itself is
# bounded by the source's progress, not by a timer.
REPLY_TIMEOUT = 600.0


def stream_idle_timeout() -> float:
    """Seconds a checkpoint stream may stall (a cut link) before either side
    gives up on it; FERRY_STREAM_IDLE_TIMEOUT shortens it for tests."""
    try:
        return max(1.0, float(os.environ.get("FERRY_STREAM_IDLE_TIMEOUT", "")))
    except ValueError:
        return 60.0
CHUNK = 1 << 20
MAX_REPLY = 1 << 20

Reply = TypeVar("Reply", bound=wire.Message)


class StreamCut(FerryError):
    """The checkpoint did not reach the destination whole: it cannot run there."""


class NoAnswer(FerryError):
    """The destination got everything but its answer never came: whether it runs
    the container is unknown until it is asked (status)."""


def read_token(path: str) -> str:
    try:
        with open(path) as f:
            token = f.read(4096).strip()
    except FileNotFoundError:
        raise NotFound(f"token file {path} does not exist",
                       hint="copy the token file that 'ferry serve' printed on the destination") from None
    except OSError as exc:
        raise FerryError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise UsageError(f"token file {path} is empty")
    return token


class AgentClient:
    def __init__(self, url: str, token: str, *, verify: bool | str = True):
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"agent URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                  verify=verify, timeout=httpx.Timeout(REPLY_TIMEOUT, connect=CONNECT_TIMEOUT,
                                                                       write=stream_idle_timeout()))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # ---- requests ------------------------------------------------------------
    def version(self) -> wire.VersionReply:
        return self._call("GET", "/v1/version", wire.VersionReply)

    def compat(self, here) -> wire.CompatReply:
        """The agent's verdict on a checkpoint of this host (HostInfo `here`)."""
        source = wire.SourceHost(**{k: v for k, v in here.to_dict().items() if k != "cpu"})
        return self._call("POST", "/v1/compat", wire.CompatReply, body=source)

    def offer(self, offer: wire.MigrationOffer) -> wire.MigrationTicket:
        return self._call("POST", "/v1/migrations", wire.MigrationTicket, body=offer)

    def status(self, migration_id: str) -> wire.MigrationStatus:
        return self._call("GET", f"/v1/migrations/{migration_id}", wire.MigrationStatus)

    def abort(self, migration_id: str) -> wire.MigrationStatus:
        return self._call("DELETE", f"/v1/migrations/{migration_id}", wire.MigrationStatus)

    def send_image(self, migration_id: str, path: str) -> wire.MigrationStatus:
        """An oci-archive of the image layers the destination lacks."""
        with open(path, "rb") as archive:
            try:
                response = self._http.put(f"/v1/migrations/{migration_id}/image", content=archive,
                                          headers={"Content-Type": "application/x-tar"})
            except httpx.HTTPError as exc:
                raise FerryError(f"cannot send the image to {self.url}: {_reason(exc)}") from None
        return self._reply(response, wire.MigrationStatus)

    def send_checkpoint(self, migration_id: str, fd: int, sent: Callable[[int], None] | None = None,
                        page_server_port: int | None = None) -> wire.RestoreReport:
        """Stream the archive read from fd (until its end) into the
        destination's restore, and return its report once the container runs
        there. StreamCut if the archive did not get through whole; NoAnswer if
        it did and no valid answer came."""
        progress = {"sent": 0, "ended": False}

        def chunks():
            while data := os.read(fd, CHUNK):
                yield data
                progress["sent"] += len(data)
                if sent:
                    sent(progress["sent"])
            progress["ended"] = True

        try:
            response = self._http.put(f"/v1/migrations/{migration_id}/checkpoint", content=chunks(),
                                      params={"page_server_port": page_server_port} if page_server_port else None,
                                      headers={"Content-Type": "application/x-tar"})
        except httpx.HTTPError as exc:
            if not progress["ended"]:
                raise StreamCut(f"the checkpoint stream to {self.url} broke after {progress['sent']} bytes: "
                                f"{_reason(exc)}") from None
            raise NoAnswer(f"{self.url} took the whole checkpoint but did not answer: {_reason(exc)}") from None
        if not progress["ended"] and response.is_success:
            raise NoAnswer(f"{self.url} answered before the checkpoint ended")
        try:
            return self._reply(response, wire.RestoreReport)
        except (Refused, Conflict, Incompatible, NotFound, UsageError, PermissionDenied):
            raise
        except FerryError as failure:
            if response.status_code >= 500 or not progress["ended"]:
                raise
            raise NoAnswer(str(failure)) from None

    # ---- plumbing -------------------------------------------------------------
    def _call(self, method: str, path: str, model: type[Reply], body: wire.Message | None = None) -> Reply:
        try:
            response = self._http.request(method, path, content=body.model_dump_json() if body else None,
                                          headers={"Content-Type": "application/json"} if body else None)
        except httpx.HTTPError as exc:
            raise FerryError(f"cannot reach the agent at {self.url}: {_reason(exc)}",
                             hint="check the URL, that 'ferry serve' runs there, and the network") from None
        return self._reply(response, model)

    def _reply(self, response: httpx.Response, model: type[Reply]) -> Reply:
        body = response.read()[:MAX_REPLY]
        if response.is_success:
            try:
                return model.model_validate_json(body)
            except ValidationError as exc:
                raise FerryError(f"the agent at {self.url} sent a reply ferry cannot read: "
                                 f"{_first_problem(exc)}") from None
        try:
            error = wire.ErrorReply.model_validate_json(body)
        except ValidationError:
            error = wire.ErrorReply(error=f"HTTP {response.status_code}")
        message = f"{self.url}: {_printable(error.error)}"
        hint = _printable(error.hint) if error.hint else None
        status = response.status_code
        if status == 401:
            raise PermissionDenied(f"the agent at {self.url} refused the token",
                                   hint="use the token file that 'ferry serve' printed on that host")
        if error.check:
            raise Refused(message, hint=hint, check=_printable(error.check))
        kind = {400: UsageError, 404: NotFound, 409: Conflict, 412: Incompatible}.get(status, FerryError)
        raise kind(message, hint=hint)


def _reason(exc: Exception) -> str:
    return _printable(str(exc) or type(exc).__name__)


def _printable(text: str, limit: int = 400) -> str:
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


def _first_problem(exc: ValidationError) -> str:
    problem = exc.errors()[0]
    where = ".".join(str(p) for p in problem.get("loc", ())) or "reply"
    return f"{where}: {problem.get('msg', 'invalid')}"
