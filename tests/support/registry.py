"""A real registry for tests: Debian's docker-registry (distribution 2.8) on
loopback, in plain http, https with htpasswd basic auth, or bearer-token auth
with a tiny token server signing JWTs (RS256, x5c header) whose certificate is
the registry's rootcertbundle. Also builds test images and pushes them with
plain HTTP calls of the distribution API."""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import os
import secrets
import subprocess
import tarfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import zstandard
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from tests.support.cli import free_port  # noqa: F401  (tests import it from here too)

REGISTRY_BIN = "/usr/bin/docker-registry"
START_DEADLINE = 20.0
STOP_DEADLINE = 10.0

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- certificates and tokens ---------------------------------------------------

def self_signed(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A key and a self-signed CA certificate valid for 127.0.0.1."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def write_pem(directory: str, stem: str, key, cert) -> tuple[str, str]:
    key_path, cert_path = os.path.join(directory, f"{stem}.key"), os.path.join(directory, f"{stem}.crt")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The `auth: token:` realm: GET /token?service=&scope= with basic auth
    answers {"token": JWT}; anonymous or wrong credentials get 401, and a
    token for a `forbidden` repository grants no action on it."""

    issuer = "ferry-test-issuer"
    service = "ferry-test-registry"

    def __init__(self, workdir: str, users: dict[str, str], forbidden: frozenset[str] = frozenset()):
        self.users = users
        self.forbidden = forbidden
        self.key, self.cert = self_signed("ferry test token signer")
        _, self.cert_path = write_pem(workdir, "token", self.key, self.cert)
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                url = urllib.parse.urlparse(self.path)
                if url.path != "/token":
                    self._answer(404, {"error": "not found"})
                    return
                user = server.authenticate(self.headers.get("Authorization", ""))
                if user is None:
                    self._answer(401, {"error": "bad credentials"})
                    return
                query = urllib.parse.parse_qs(url.query)
                access = [server.parse_scope(s) for s in query.get("scope", [])]
                token = server.mint(user, [a for a in access if a and a["name"] not in server.forbidden])
                self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._http.server_address[1]
        self.realm = f"http://127.0.0.1:{self.port}/token"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def start(self) -> "TokenServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(STOP_DEADLINE)

    def authenticate(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        return user if self.users.get(user) == password else None

    @staticmethod
    def parse_scope(scope: str) -> dict | None:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if not kind or not name:
            return None
        return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}

    def mint(self, subject: str, access: list[dict]) -> str:
        now = int(time.time())
        der = self.cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


# ---- the registry ------------------------------------------------------------------

@dataclass
class Registry:
    """docker-registry serving from `workdir`; start() waits until it answers."""
    workdir: str
    tls: bool = False
    users: dict[str, str] = field(default_factory=dict)   # htpasswd basic auth when set
    token_server: TokenServer | None = None
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _config(self) -> dict:
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": os.path.join(self.workdir, "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if self.tls:
            key, cert = self_signed("ferry test registry")
            key_path, cert_path = write_pem(self.workdir, "registry", key, cert)
            config["http"]["tls"] = {"certificate": cert_path, "key": key_path}
        if self.users:
            htpasswd = os.path.join(self.workdir, "htpasswd")
            with open(htpasswd, "w") as f:
                for user, password in self.users.items():
                    line = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                          capture_output=True, text=True).stdout.strip()
                    f.write(line + "\n")
            config["auth"] = {"htpasswd": {"realm": "ferry-test", "path": htpasswd}}
        if self.token_server is not None:
            config["auth"] = {"token": {"realm": self.token_server.realm,
                                        "service": self.token_server.service,
                                        "issuer": self.token_server.issuer,
                                        "rootcertbundle": self.token_server.cert_path}}
        return config

    def start(self) -> "Registry":
        os.makedirs(self.workdir, exist_ok=True)
        self.port = self.port or free_port()
        config_path = os.path.join(self.workdir, "config.yml")
        with open(config_path, "w") as f:
            json.dump(self._config(), f)   # JSON is YAML
        self.log_path = os.path.join(self.workdir, "registry.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([REGISTRY_BIN, "serve", config_path], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()
        self.http = httpx.Client(verify=False, trust_env=False, timeout=30)
        return self

    def _wait_ready(self) -> None:
        end = time.monotonic() + START_DEADLINE
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"docker-registry exited {self.process.returncode}: {self.log()}")
            try:
                httpx.get(f"{self.url}/v2/", verify=False, trust_env=False, timeout=2)
                return
            except httpx.TransportError:
                if time.monotonic() > end:
                    self.stop()
                    raise AssertionError(f"docker-registry did not answer in {START_DEADLINE}s: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-2000:]

    def stop(self) -> None:
        if getattr(self, "http", None) is not None:
            self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def blob_file(self, digest: str) -> str:
        """Where the registry keeps a blob on disk (to corrupt it in a test)."""
        hex_ = digest.split(":", 1)[1]
        return os.path.join(self.workdir, "data", "docker", "registry", "v2", "blobs", "sha256",
                            hex_[:2], hex_, "data")

    # ---- pushing, with the distribution API ---------------------------------

    def _auth(self, repository: str) -> dict:
        if self.token_server is not None:
            token = self.token_server.mint("pusher", [{"type": "repository", "name": repository,
                                                       "actions": ["pull", "push"]}])
            return {"Authorization": f"Bearer {token}"}
        if self.users:
            user, password = next(iter(self.users.items()))
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    def push_blob(self, repository: str, data: bytes) -> str:
        digest = sha256(data)
        headers = self._auth(repository)
        started = self.http.post(f"{self.url}/v2/{repository}/blobs/uploads/", headers=headers)
        assert started.status_code == 202, started.text
        location = urllib.parse.urljoin(self.url, started.headers["Location"])
        sep = "&" if "?" in location else "?"
        done = self.http.put(f"{location}{sep}digest={digest}", content=data,
                             headers={**headers, "Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
        return digest

    def push_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        done = self.http.put(f"{self.url}/v2/{repository}/manifests/{reference}", content=body,
                             headers={**self._auth(repository), "Content-Type": media_type})
        assert done.status_code == 201, done.text
        return sha256(body)

    def push_image(self, repository: str, tag: str | None, layers: list[bytes], *,
                   architecture: str = "amd64", compression: str = "gzip", oci: bool = False,
                   cmd: list[str] | None = None, exposed: tuple[str, ...] = (),
                   annotations: dict[str, str] | None = None) -> "PushedImage":
        """Push an image made of uncompressed layer tars; returns its descriptors."""
        config = image_config([sha256(layer) for layer in layers], architecture, cmd, exposed)
        blobs = [compress(layer, compression) for layer in layers]
        layer_type = {"gzip": OCI_LAYER_GZIP if oci else DOCKER_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[compression]
        manifest = {
            "schemaVersion": 2, "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                       "digest": self.push_blob(repository, config), "size": len(config)},
            "layers": [{"mediaType": layer_type, "digest": self.push_blob(repository, blob),
                        "size": len(blob)} for blob in blobs],
        }
        if annotations:
            manifest["annotations"] = annotations
        body = json.dumps(manifest).encode()
        media_type = manifest["mediaType"]
        digest = self.push_manifest(repository, tag or sha256(body), body, media_type)
        return PushedImage(digest, len(body), media_type, sha256(config)[7:], architecture,
                           [sha256(layer) for layer in layers], [sha256(b) for b in blobs])

    def push_index(self, repository: str, tag: str, images: list["PushedImage"], oci: bool = False) -> str:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX if oci else DOCKER_LIST,
                 "manifests": [{"mediaType": image.media_type, "digest": image.digest,
                                "size": image.size,
                                "platform": {"os": "linux", "architecture": image.architecture}}
                               for image in images]}
        return self.push_manifest(repository, tag, json.dumps(index).encode(), index["mediaType"])


@dataclass(frozen=True)
class PushedImage:
    digest: str            # of the manifest
    size: int
    media_type: str
    image_id: str          # sha256 hex of the config, as ferry and podman name images
    architecture: str
    diff_ids: list[str]
    blob_digests: list[str]


# ---- test images ------------------------------------------------------------------

def image_config(diff_ids: list[str], architecture: str = "amd64", cmd: list[str] | None = None,
                 exposed: tuple[str, ...] = ()) -> bytes:
    config = {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd or ["sh"]}
    if exposed:
        config["ExposedPorts"] = {port: {} for port in exposed}
    return json.dumps({"created": "2024-01-02T03:04:05Z", "architecture": architecture, "os": "linux",
                       "config": config,
                       "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return gzip.compress(data, mtime=0)


class LayerTar:
    """An uncompressed layer tar built in memory, members as root:root."""

    def __init__(self):
        self._buffer = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buffer, mode="w", format=tarfile.PAX_FORMAT)

    def _add(self, name: str, kind: bytes, data: bytes = b"", mode: int = 0o644, link: str = "") -> "LayerTar":
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.size, info.linkname, info.mtime = kind, mode, len(data), link, 1700000000
        self._tar.addfile(info, io.BytesIO(data) if data else None)
        return self

    def dir(self, name: str, mode: int = 0o755) -> "LayerTar":
        return self._add(name, tarfile.DIRTYPE, mode=mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> "LayerTar":
        return self._add(name, tarfile.REGTYPE, data, mode)

    def symlink(self, name: str, target: str) -> "LayerTar":
        return self._add(name, tarfile.SYMTYPE, link=target, mode=0o777)

    def hardlink(self, name: str, target: str) -> "LayerTar":
        return self._add(name, tarfile.LNKTYPE, link=target)

    def whiteout(self, name: str) -> "LayerTar":
        parent, _, base = name.rpartition("/")
        return self.file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", b"")

    def opaque(self, directory: str) -> "LayerTar":
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def add_tree(self, tar_path: str) -> "LayerTar":
        """Every member of an existing tar (e.g. the busybox rootfs tar)."""
        with tarfile.open(tar_path) as source:
            for member in source:
                data = source.extractfile(member) if member.isreg() else None
                self._tar.addfile(member, data)
        return self

    def bytes(self) -> bytes:
        self._tar.close()
        return self._buffer.getvalue()
