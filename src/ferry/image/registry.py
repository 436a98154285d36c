"""A client for the OCI distribution (docker registry v2) API: reads
manifests and blobs over http or https with anonymous, basic or bearer-token
auth. It verifies what it reads, and turns every failure into one FerryError
line that names the registry and says what to do."""

from __future__ import annotations

import base64
import contextlib
import re
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Iterator

import httpx

from ferry.image import digest as digests
from ferry.image.manifest import ACCEPT
from ferry.util.errors import FerryError, NotFound, PermissionDenied, ToolError, UsageError
from ferry.util.log import get_logger
from ferry.util.progress import Progress

log = get_logger("ferry.image.registry")

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_MANIFEST_BYTES = 4 << 20
# docker.io is an alias; its API lives elsewhere.
API_HOSTS = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}



class RegistryError(ToolError):
    """The registry answered, but not with what the protocol promises."""

    def __init__(self, message: str, hint: str | None = None):
        FerryError.__init__(self, message, hint)
        self.desc, self.code, self.output_tail, self.log_path = message, None, "", None


@dataclass(frozen=True)
class Challenge:
    scheme: str               # lower case: "basic" or "bearer"
    params: dict[str, str]


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*,?')
_SCHEME_RE = re.compile(rf"\s*,?\s*({_TOKEN})(?:\s+|$)")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Challenges of a WWW-Authenticate header (RFC 7235), e.g.
    `Bearer realm="https://auth/token",service="registry",scope="repository:x:pull"`."""
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        scheme = _SCHEME_RE.match(header, pos)
        if not scheme:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while True:
            param = _PARAM_RE.match(header, pos)
            if not param:
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        challenges.append(Challenge(scheme.group(1).lower(), params))
    return challenges


def split_creds(creds: str | None) -> tuple[str, str] | None:
    if creds is None:
        return None
    user, sep, password = creds.partition(":")
    if not sep or not user:
        raise UsageError("--creds must be USERNAME:PASSWORD", hint="e.g. --creds alice:s3cret")
    return user, password


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _caused_by_ssl(exc: BaseException) -> ssl.SSLError | None:
    seen = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(exc: BaseException) -> str:
    ssl_error = _caused_by_ssl(exc)
    if ssl_error is not None:
        return getattr(ssl_error, "verify_message", None) or getattr(ssl_error, "reason", None) or str(ssl_error)
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text:
        return "connection refused"
    return text.splitlines()[0]


def _registry_errors(response: httpx.Response) -> str:
    """The `errors` codes a registry puts in its JSON body, e.g. MANIFEST_UNKNOWN."""
    try:
        body = response.json()
        return ", ".join(f"{e.get('code')}: {e.get('message')}" for e in body.get("errors", []))
    except Exception:
        return ""


class _StreamReader:
    """File-like read() over an httpx response body, for the layer unpacker."""

    def __init__(self, chunks: Iterator[bytes], progress: Callable[[int], None]):
        self._chunks = chunks
        self._buffer = b""
        self._progress = progress
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
            self.done += len(chunk)
            self._progress(self.done)
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


# A request body: bytes, or a maker of a fresh iterator over it (a retry sends it again).
Content = bytes | Callable[[], Iterator[bytes]] | None


class RegistryClient:
    def __init__(self, registry: str, *, tls_verify: bool = True, creds: str | None = None):
        self.registry = registry
        self.host = API_HOSTS.get(registry, registry)
        self.tls_verify = tls_verify
        self.creds = split_creds(creds)
        # trust_env=False: a proxy from the environment must not see loopback registries
        # or credentials; a registry is reached directly, as podman does by default.
        self._client = httpx.Client(verify=tls_verify, follow_redirects=True, trust_env=False,
                                    timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT))
        self._base: str | None = None
        self._authorization: str | None = None
        self._bearer: Challenge | None = None
        self._scope: str | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- connection and auth ---------------------------------------------

    def _unreachable(self, exc: BaseException) -> FerryError:
        return NotFound(f"registry {self.registry} is unreachable: {_reason(exc)}",
                        hint="check the registry address and port, and that it is running")

    def _ping(self) -> httpx.Response:
        """GET /v2/ over https, or plain http when TLS verification is off
        (podman's --tls-verify=false), and remember which one answered."""
        try:
            response = self._client.get(f"https://{self.host}/v2/")
            self._base = f"https://{self.host}"
            return response
        except httpx.TransportError as exc:
            ssl_error = _caused_by_ssl(exc)
            if ssl_error is None:
                raise self._unreachable(exc) from None
            if isinstance(ssl_error, ssl.SSLCertVerificationError):
                raise PermissionDenied(
                    f"registry {self.registry}: TLS certificate not trusted: {_reason(exc)}",
                    hint="use --tls-verify=false for a registry with a self-signed certificate") from None
            if self.tls_verify:
                raise PermissionDenied(
                    f"registry {self.registry}: TLS handshake failed: {_reason(exc)}",
                    hint="use --tls-verify=false for a registry that speaks plain http") from None
            https_error = exc
        try:
            response = self._client.get(f"http://{self.host}/v2/")
        except httpx.TransportError:
            raise self._unreachable(https_error) from None
        self._base = f"http://{self.host}"
        return response

    def login(self, repository: str, *, push: bool = False) -> None:
        """Settle how to authenticate for pulling (or pushing) `repository`."""
        response = self._ping()
        self._scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        if response.status_code == 200:
            return
        if response.status_code != 401:
            raise RegistryError(f"registry {self.registry} answered {response.status_code} to /v2/: "
                                f"it does not look like a registry",
                                hint="check the registry address and port")
        self._answer(response)

    def _answer(self, response: httpx.Response) -> None:
        """Meet the challenge of a 401 response."""
        challenges = [c for header in response.headers.get_list("www-authenticate")
                      for c in parse_www_authenticate(header)]
        by_scheme = {c.scheme: c for c in challenges}
        if "bearer" in by_scheme:
            self._bearer = by_scheme["bearer"]
            scope = self._bearer.params.get("scope") or self._scope
            self._authorization = f"Bearer {self._fetch_token(self._bearer, scope)}"
        elif "basic" in by_scheme:
            if self.creds is None:
                raise self._needs_creds()
            self._authorization = basic_authorization(*self.creds)
            check = self._send("GET", f"{self._base}/v2/")
            if check.status_code == 401:
                raise self._refused()
        else:
            raise PermissionDenied(f"registry {self.registry} asks for an unsupported authentication "
                                   f"scheme ({', '.join(sorted(by_scheme)) or 'none given'})",
                                   hint="ferry supports anonymous, basic and bearer-token auth")

    def _needs_creds(self) -> PermissionDenied:
        return PermissionDenied(f"registry {self.registry} requires authentication",
                                hint="pass --creds USERNAME:PASSWORD")

    def _refused(self) -> PermissionDenied:
        return PermissionDenied(f"registry {self.registry} refused the credentials",
                                hint="check the user name and password given to --creds")

    def _fetch_token(self, challenge: Challenge, scope: str | None) -> str:
        realm = challenge.params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise RegistryError(f"registry {self.registry} sent a bearer challenge without a usable realm",
                                hint="the registry's token auth is misconfigured")
        params = {k: v for k, v in (("service", challenge.params.get("service")), ("scope", scope)) if v}
        auth = httpx.BasicAuth(*self.creds) if self.creds else None
        try:
            response = self._client.get(realm, params=params, auth=auth)
        except httpx.TransportError as exc:
            raise NotFound(f"token server {realm} of registry {self.registry} is unreachable: {_reason(exc)}",
                           hint="check that the registry's auth service is running") from None
        if response.status_code in (401, 403):
            raise self._refused() if self.creds else self._needs_creds()
        if response.status_code != 200:
            raise RegistryError(f"token server {realm} answered {response.status_code}",
                                hint="the registry's auth service is failing; try again later")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):   # not JSON, or not an object
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {realm} sent no token",
                                hint="the registry's auth service is misconfigured")
        return token

    # ---- requests -----------------------------------------------------------

    def _send(self, method: str, url: str, headers: dict | None = None,
              stream: bool = False, content: Content = None) -> httpx.Response:
        headers = dict(headers or {})
        if self._authorization:
            headers["Authorization"] = self._authorization
        body = content() if callable(content) else content
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            response = self._client.send(request, stream=stream)
        except httpx.TransportError as exc:
            log.debug("%s %s failed: %s", method, url, exc)
            raise self._unreachable(exc) from None
        log.debug("%s %s -> %s", method, url, response.status_code)
        return response

    def _request(self, method: str, path: str, what: str, headers: dict | None = None,
                 stream: bool = False, content: Content = None, url: str | None = None,
                 missing_ok: bool = False) -> httpx.Response | None:
        if self._base is None:
            raise RuntimeError("login() first")
        url = url or f"{self._base}/v2/{path}"
        response = self._send(method, url, headers, stream, content)
        if response.status_code == 401 and self._bearer is not None:
            # The token may have expired, or this request needs another scope.
            response.close()
            self._answer(response)
            response = self._send(method, url, headers, stream, content)
        if response.status_code < 400:
            return response
        if missing_ok and response.status_code == 404:
            response.close()
            return None
        if stream:
            response.read()
        detail = _registry_errors(response)
        status = response.status_code
        response.close()
        if status in (401, 403):
            # Credentials were already accepted at login; registries such as
            # Docker Hub also answer so for a repository that does not exist.
            raise PermissionDenied(
                f"registry {self.registry} denied access to {what}" + (f" ({detail})" if detail else ""),
                hint="check the repository name; " + ("these credentials may not allow it"
                                                      if self.creds else "it may need --creds USERNAME:PASSWORD"))
        if status == 404:
            raise NotFound(f"{what} not found in registry {self.registry}"
                           + (f" ({detail})" if detail else ""),
                           hint="check the repository name and tag")
        raise RegistryError(f"registry {self.registry} answered {status} for {what}"
                            + (f": {detail}" if detail else ""),
                            hint="the registry is failing; try again later")

    def manifest(self, repository: str, reference: str, what: str) -> tuple[bytes, str, str]:
        """(body, content type, digest) of a manifest or index, verified
        against the digest asked for or the one the registry announces."""
        response = self._request("GET", f"{repository}/manifests/{reference}", what,
                                 headers={"Accept": ACCEPT}, stream=True)
        try:
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise RegistryError(f"manifest of {what} is larger than {MAX_MANIFEST_BYTES} bytes",
                                        hint="the registry is misbehaving")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        finally:
            response.close()
        actual = digests.of_bytes(body)
        if reference.startswith("sha256:"):
            digests.verify(reference, actual, f"manifest of {what}")
        announced = response.headers.get("docker-content-digest")
        if announced and announced.startswith("sha256:"):
            digests.verify(announced, actual, f"manifest of {what}")
        return body, response.headers.get("content-type", ""), actual

    @contextlib.contextmanager
    def blob(self, repository: str, digest: str, what: str, size: int = -1,
             progress: Progress | None = None) -> Iterator[_StreamReader]:
        """A reader over a blob's bytes. The caller hashes what it reads and
        verifies the digest; transfer failures become one-line errors."""
        response = self._request("GET", f"{repository}/blobs/{digest}", what, stream=True)
        report = (lambda done: progress(what, done, size)) if progress else (lambda done: None)
        try:
            yield _StreamReader(response.iter_bytes(), report)
        except httpx.TransportError as exc:
            raise RegistryError(f"download of {what} from {self.registry} broke off: {_reason(exc)}",
                                hint="check the network and pull again") from None
        finally:
            response.close()

    def blob_bytes(self, repository: str, digest: str, what: str, limit: int) -> bytes:
        with self.blob(repository, digest, what) as reader:
            data = reader.read(limit + 1)
        if len(data) > limit:
            raise RegistryError(f"{what} is larger than {limit} bytes", hint="the registry is misbehaving")
        digests.verify(digest, digests.of_bytes(data), what)
        return data

    # ---- pushing ------------------------------------------------------------

    def has_blob(self, repository: str, digest: str, what: str) -> bool:
        response = self._request("HEAD", f"{repository}/blobs/{digest}", what, missing_ok=True)
        if response is None:
            return False
        response.close()
        return True

    def upload_blob(self, repository: str, digest: str, size: int, content, what: str) -> None:
        """One monolithic upload (POST, then PUT with the digest) of `size`
        bytes; the registry checks the digest before it keeps the blob."""
        started = self._request("POST", f"{repository}/blobs/uploads/", what,
                                headers={"Content-Length": "0"})
        started.close()
        location = started.headers.get("location")
        if not location:
            raise RegistryError(f"registry {self.registry} started an upload of {what} without a Location",
                                hint="the registry is misbehaving")
        url = urllib.parse.urljoin(f"{self._base}/v2/", location)
        if urllib.parse.urlsplit(url)[:2] != urllib.parse.urlsplit(self._base)[:2]:
            # Credentials go to the registry named, never to a host its answer names.
            raise RegistryError(f"registry {self.registry} sent the upload of {what} to another host",
                                hint="push to that host directly if it is the registry")
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + urllib.parse.urlencode({"digest": digest})
        done = self._request("PUT", "", what, url=url, content=content,
                             headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        done.close()

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str, what: str) -> str:
        """Upload a manifest under a tag (or its digest); the digest of what was stored."""
        done = self._request("PUT", f"{repository}/manifests/{reference}", what, content=body,
                             headers={"Content-Type": media_type})
        done.close()
        digest = digests.of_bytes(body)
        announced = done.headers.get("docker-content-digest")
        if announced and announced != digest:
            raise RegistryError(f"registry {self.registry} stored {what} as {announced}, not as {digest}",
                                hint="the registry changed the manifest; push again, or use another registry")
        return digest
