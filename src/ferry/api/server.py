"""Running the agent: one per state root, on ADDR:PORT, with TLS if given.

SIGTERM and SIGHUP stop it as uvicorn stops on SIGINT: no new requests, and
the ones in flight (a migration's restore) end first, so none is left half
done; a restore cut short by a harder stop is undone by the next command.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
from dataclasses import dataclass

from ferry.util.errors import UsageError

DEFAULT_PORT = 7070


@dataclass(frozen=True)
class ServeOptions:
    root: str
    host: str
    port: int
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    allow_bind_mounts: bool = False   # policy: migrated containers may mount this host's paths
    allow_privileges: bool = False    # policy: ... and keep --privileged, --cap-add, --ipc host
    keys: object = None               # encryption.Opening: what opens encrypted migrations


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT (an IPv4 address), or :PORT for every address."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r} must be ADDR:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    host = host or "0.0.0.0"
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise UsageError(f"--listen {text!r}: {host!r} is not an IPv4 address") from None
    return host, int(port)


def serve(options: ServeOptions) -> int:
    import uvicorn

    from ferry.api.app import create_app
    from ferry.api.auth import load_or_make
    from ferry.engine.core import Engine
    from ferry.util.locks import owned_lock
    if bool(options.tls_cert) != bool(options.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    engine = Engine(options.root)
    engine.db   # the root exists, and is root's
    token_file = options.token_file or os.path.join(engine.layout.root, "agent", "token")
    token, made = load_or_make(token_file)
    with owned_lock(engine.layout.lock("agent"), "ferry serve", wait=0,
                    busy_message=f"another agent serves state root {engine.layout.root}"):
        # What a killed agent left: its restores' journals, and the staging of
        # a restore killed before it made a container.
        engine.containers.list(all_states=True)
        engine.checkpoints.sweep_stale_imports()
        engine.migrations.sweep_pages()
        scheme = "https" if options.tls_cert else "http"
        config = uvicorn.Config(create_app(engine.layout.root, token, allow_bind_mounts=options.allow_bind_mounts,
                                           allow_privileges=options.allow_privileges, keys=options.keys),
                                host=options.host, port=options.port,
                                ssl_certfile=options.tls_cert, ssl_keyfile=options.tls_key, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=None)
        server = uvicorn.Server(config)
        # A dropped session stops the agent the way SIGTERM does, not halfway through a request.
        signal.signal(signal.SIGHUP, lambda *_: server.handle_exit(signal.SIGTERM, None))
        print(f"ferry serve: {scheme}://{options.host}:{options.port} for state root {engine.layout.root}; "
              f"token {'made in' if made else 'from'} {token_file}", file=sys.stderr, flush=True)
        server.run()
        if not server.started:
            raise UsageError(f"cannot listen on {options.host}:{options.port}",
                             hint="is the port in use, or the address not on this host?")
    return 0
