"""Forge checkpoint archives the way an attacker who read ferry's code would:
unpack a real one, edit a member, recompute every digest, repack.

Format 2 archives are written here by hand (an attacker needs no ferry to do
it); format 3 ones with ferry's own writer, which anyone can run."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time

import xxhash

HEAD = "manifest.json"
# Members of ferry's own bookkeeping, rewritten by each repack.
BOOKKEEPING = {HEAD, "checksums.json", "checksums.sig"}


def unpack(archive: str, dest: str) -> dict:
    """Every member of a plain .tar archive into dest; the head (manifest.json) as a dict."""
    os.makedirs(dest, exist_ok=True)
    head = None
    with tarfile.open(archive) as tar:
        for member in tar:
            data = tar.extractfile(member).read() if member.isfile() else None
            if member.name == HEAD:
                head = json.loads(data)
                continue
            if member.name in BOOKKEEPING or data is None:
                continue
            path = os.path.join(dest, member.name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
    return head


def members(directory: str) -> list[str]:
    """Relative paths of every file under `directory`, in a stable order."""
    found = []
    for current, _, files in os.walk(directory):
        for name in files:
            found.append(os.path.relpath(os.path.join(current, name), directory))
    return sorted(found)


def edit_json(directory: str, name: str, change) -> None:
    """Load a JSON member, let `change` edit it in place, write it back."""
    path = os.path.join(directory, name)
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


def repack_v2(directory: str, head: dict, dest: str, *, container: dict | None = None,
              declared_sizes: dict[str, int] | None = None, truncate_after_headers: bool = False) -> str:
    """A format 2 archive (manifest first, xxh3 digests recomputed) of every file
    in `directory`. `declared_sizes` overrides sizes in the manifest and the tar
    headers, with no data behind them when `truncate_after_headers`."""
    names = members(directory)
    declared_sizes = declared_sizes or {}
    entries = []
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        entries.append({"name": name, "size": declared_sizes.get(name, len(data)),
                        "xxh3_128": xxhash.xxh3_128(data).hexdigest()})
    manifest = {"format_version": 2, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "host": head["host"], "container": container or head["container"], "compression": "none",
                "members": entries}
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, HEAD, json.dumps(manifest).encode())
        for entry in entries:
            with open(os.path.join(directory, entry["name"]), "rb") as f:
                data = f.read()
            if entry["name"] in declared_sizes:
                info = tarfile.TarInfo(entry["name"])
                info.size = entry["size"]
                tar.fileobj.write(info.tobuf(tarfile.PAX_FORMAT))
                if truncate_after_headers:
                    break
                continue
            _add(tar, entry["name"], data)
    return dest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def repack_v3(archive: str, dest: str, *, edit_head=None, signer=None) -> str:
    """`archive` (a plain .tar of format 3) written again by ferry's own writer,
    its head edited by `edit_head(head dict)` and signed by `signer` (a key
    path or None), every digest recomputed: what anyone holding the key can make."""
    from ferry.checkpoint.archive import write_archive
    from ferry.checkpoint.hostinfo import HostInfo
    directory = dest + ".members"
    head = unpack(archive, directory)
    with tarfile.open(archive) as tar:
        names = [m.name for m in tar if m.isfile() and m.name not in BOOKKEEPING]
    if edit_head:
        edit_head(head)
    return write_archive(dest, directory, names, container=head["container"], compression="none",
                         host=HostInfo.from_dict(head["host"]), signer=signer).path
