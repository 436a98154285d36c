"""The image store of one root: records in SQLite, manifests and configs in a
content-addressed blob store, and each layer unpacked once under
<images>/l/<16 hex> for overlayfs.

Every change (import, load, pull, build, remove) runs under the root's image
lock and stages its layers in a private temp dir; layers become visible only
in the transaction that records the image. Anything not recorded (left by a
failure or a crash) is swept, so no half layer ever looks complete.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import re
import tempfile
from typing import TYPE_CHECKING, BinaryIO, Callable, ContextManager, Iterator, NamedTuple

from ferry.image import digest as digests
from ferry.image import reference
from ferry.image.blobs import BlobStore
from ferry.image.manifest import (DEFAULT_PATH_ENV, ImageConfig, Index, annotations_of, config_document,
                                  manifest_document, parse_config, parse_document, select_platform)
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import BadArchive, Conflict, InUse, NotFound, UsageError
from ferry.util.fs import remove_tree
from ferry.util.locks import file_lock
from ferry.util.timefmt import utc_now

if TYPE_CHECKING:
    from ferry.image import saving
    from ferry.util.progress import Progress

__all__ = ["Image", "ImageConfig", "ImageStore"]

DDL = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,            -- sha256 hex of the config blob
    digest TEXT NOT NULL,           -- sha256:<hex> of the manifest blob
    config TEXT NOT NULL,           -- ImageConfig as JSON
    size INTEGER NOT NULL,
    created TEXT NOT NULL,
    architecture TEXT NOT NULL,
    os TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_names (
    name TEXT PRIMARY KEY,          -- registry/repository:tag
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS image_layers (
    diff_id TEXT PRIMARY KEY,
    dir TEXT NOT NULL UNIQUE,       -- name under <images>/l
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS image_layer_refs (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,      -- 0 is the lowest layer
    diff_id TEXT NOT NULL REFERENCES image_layers(diff_id),
    PRIMARY KEY (image_id, position)
);
CREATE TABLE IF NOT EXISTS image_digests (
    repo TEXT NOT NULL,             -- registry/repository it was pulled from
    digest TEXT NOT NULL,           -- sha256:<hex> of a manifest or index that led to it
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS image_layer_refs_diff_id ON image_layer_refs(diff_id);
CREATE INDEX IF NOT EXISTS image_names_image_id ON image_names(image_id)
"""

LAYER_DIR_CHARS = 16
MAX_CONFIG_BYTES = 4 << 20
HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
HEX_PREFIX_RE = re.compile(r"^[0-9a-f]{1,64}\Z")


def _give_names(conn, image_id: str, names: list[str]) -> None:
    """`names` for the image: a name moves from another image to this one, as in
    podman (that one keeps its ID), and comes after this one's names; a name it
    has already keeps its place among them."""
    conn.executemany("DELETE FROM image_names WHERE name = ? AND image_id != ?", [(n, image_id) for n in names])
    conn.executemany("INSERT OR IGNORE INTO image_names (name, image_id) VALUES (?, ?)", [(n, image_id) for n in names])


class Image(NamedTuple):
    id: str                    # 64-hex sha256 of the image config blob
    digest: str                # "sha256:<hex>" of the manifest
    names: tuple[str, ...]     # fully qualified, e.g. "localhost/nginx:latest"
    layers: tuple[str, ...]    # diff_ids, lowest first
    config: ImageConfig
    size: int
    created: str               # RFC 3339
    architecture: str = ""     # as its config says (amd64, arm64)


def _not_found(text: str) -> NotFound:
    return NotFound(f"image {text!r} not found",
                    hint="see 'ferry images'; pull, load or import it first")


# (what to call it in messages, blob digest to verify or None, opener of its bytes)
LayerSource = tuple[str, "str | None", Callable[[], ContextManager[BinaryIO]]]


class _StagedLayer(NamedTuple):
    path: str
    size: int
    tar: str       # its uncompressed tar, zstd-compressed (what a migration sends)


class _Staging:
    """Layers of one change, unpacked into a private dir until commit."""

    def __init__(self, store: "ImageStore", path: str):
        self.store = store
        self.path = path
        self.layers: dict[str, _StagedLayer] = {}

    def has_layer(self, diff_id: str) -> bool:
        return diff_id in self.layers or self.store._layer_row(diff_id) is not None

    def add_layer(self, source: BinaryIO, what: str, *, expected_digest: str | None = None,
                  expected_diff_id: str | None = None) -> str:
        dest = tempfile.mkdtemp(dir=self.path, prefix="layer-")
        tar = dest + ".tar.zst"
        with open(tar, "wb") as keep:
            from ferry.image.layers import unpack_layer   # tar, gzip, zstd: not for a run or a restore
            unpacked = unpack_layer(source, dest, keep=keep)
        if expected_digest:
            digests.verify(expected_digest, unpacked.digest, what)
        if expected_diff_id:
            digests.verify(expected_diff_id, unpacked.diff_id, f"{what} (uncompressed)")
        if self.has_layer(unpacked.diff_id):
            remove_tree(dest)
            os.unlink(tar)
        else:
            self.layers[unpacked.diff_id] = _StagedLayer(dest, unpacked.size, tar)
        return unpacked.diff_id

    def add_layers(self, where: str, diff_ids: tuple[str, ...], layers: list[LayerSource],
                   done: Callable[[str], None] = lambda what: None) -> None:
        """Stage each layer the store lacks, verified against its blob digest
        (when known) and its config's diff_id."""
        if len(diff_ids) != len(layers):
            raise BadArchive(f"{where}: the manifest lists {len(layers)} layers but the config "
                             f"{len(diff_ids)}", hint="the image is broken; get it again from its source")
        for (what, blob_digest, opener), diff_id in zip(layers, diff_ids):
            if not self.has_layer(diff_id):
                with opener() as source:
                    self.add_layer(source, what, expected_digest=blob_digest, expected_diff_id=diff_id)
            done(what)

    def layer_size(self, diff_id: str) -> int:
        staged = self.layers.get(diff_id)
        return staged.size if staged else self.store.layer_size(diff_id)


class ImageStore:
    def __init__(self, layout: Layout, db: Database):
        self.layout = layout
        self.db = db
        self.root = layout.images
        self.layer_root = os.path.join(self.root, "l")
        self.tar_root = os.path.join(self.root, "t")   # each layer's tar, zstd: its diff_id's exact bytes
        self.tmp_root = os.path.join(self.root, "tmp")
        self.blobs = BlobStore(os.path.join(self.root, "blobs"))
        db.ensure(DDL)

    # ---- reading ------------------------------------------------------------

    def _layer_row(self, diff_id: str):
        return self.db.read().execute("SELECT dir, size FROM image_layers WHERE diff_id = ?",
                                      (diff_id,)).fetchone()

    def _image(self, image_id: str) -> Image:
        conn = self.db.read()
        row = conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        if row is None:
            raise _not_found(image_id)
        names = tuple(r[0] for r in conn.execute(
            "SELECT name FROM image_names WHERE image_id = ? ORDER BY rowid", (image_id,)))
        layers = tuple(r[0] for r in conn.execute(
            "SELECT diff_id FROM image_layer_refs WHERE image_id = ? ORDER BY position", (image_id,)))
        config = ImageConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in json.loads(row["config"]).items()})
        return Image(row["id"], row["digest"], names, layers, config, row["size"], row["created"],
                     row["architecture"])

    def list(self) -> list[Image]:
        ids = [r[0] for r in self.db.read().execute("SELECT id FROM images")]
        return sorted((self._image(i) for i in ids), key=lambda image: image.created, reverse=True)

    def get(self, ref_or_id: str) -> Image:
        return self._image(self.resolve(ref_or_id)[0])

    def get_named(self, ref_or_id: str) -> tuple[Image, str]:
        """The image, and the name a container made from it shows (podman's
        ImageName): the full name the reference resolved to, `repo@digest`
        for a digest, the first name (or the ID) for an ID."""
        image_id, by_name = self.resolve(ref_or_id)
        image = self._image(image_id)
        if by_name is not None:
            return image, by_name
        ref = None
        with contextlib.suppress(UsageError):
            ref = reference.parse_local(ref_or_id)
        if ref is not None and ref.digest:
            repos = self._repos(image_id)
            repo = ref.repo if ref.repo in repos or reference.is_qualified(ref_or_id) else next(
                (r for r in repos if r.endswith(f"/{ref.repository}")), ref.repo)
            return image, f"{repo}@{ref.digest}"
        return image, image.names[0] if image.names else image.id

    def resolve(self, text: str) -> tuple[str, str | None]:
        """(image id, the name it was found by, or None when found by ID)."""
        conn = self.db.read()
        key = text[len("sha256:"):] if text.startswith("sha256:") else text
        if HEX64_RE.match(key):
            if conn.execute("SELECT 1 FROM images WHERE id = ?", (key,)).fetchone():
                return key, None
            raise _not_found(text)
        parse_error = None
        try:
            ref = reference.parse_local(text)
        except UsageError as exc:   # bad syntax: it may still be an ID prefix
            ref, parse_error = None, exc
        if ref is not None:
            found = self._by_reference(text, ref)
            if found is not None:
                return found
        if HEX_PREFIX_RE.match(key):
            ids = [r[0] for r in conn.execute("SELECT id FROM images WHERE id LIKE ? LIMIT 2",
                                              (key + "%",))]
            if len(ids) > 1:
                raise Conflict(f"image ID prefix {key!r} is ambiguous",
                               hint="give more characters of the ID")
            if ids:
                return ids[0], None
        if parse_error is not None:
            raise parse_error
        raise _not_found(text)

    def _by_reference(self, text: str, ref: reference.Reference) -> tuple[str, str | None] | None:
        conn = self.db.read()
        qualified = reference.is_qualified(text)
        if ref.digest:
            # Its own manifest's digest, or any digest it was pulled by (an index's).
            rows = conn.execute("SELECT id FROM images WHERE digest = ? UNION "
                                "SELECT image_id FROM image_digests WHERE digest = ?",
                                (ref.digest, ref.digest)).fetchall()
            ids = sorted(r[0] for r in rows)
            if qualified or len(ids) > 1:
                ids = [i for i in ids if ref.repo in self._repos(i)] or ids
            return (ids[0], None) if ids else None
        row = conn.execute("SELECT image_id FROM image_names WHERE name = ?", (ref.name,)).fetchone()
        if row:
            return row[0], ref.name
        if qualified:
            return None
        # A short name: any registry, as long as only one image matches.
        suffix = f"/{ref.repository}:{ref.tag}"
        rows = [r for r in conn.execute("SELECT name, image_id FROM image_names")
                if r[0].endswith(suffix)]
        if len(rows) > 1:
            raise Conflict(f"short name {text!r} is ambiguous: it matches "
                           f"{', '.join(sorted(r[0] for r in rows))}",
                           hint="use the fully qualified name")
        return (rows[0][1], rows[0][0]) if rows else None

    def _repos(self, image_id: str) -> list[str]:
        """`registry/repository` of each name and each pull by digest, first seen first."""
        repos = [reference.split_name(name)[0] for name in self._image(image_id).names]
        repos += [r[0] for r in self.db.read().execute(
            "SELECT repo FROM image_digests WHERE image_id = ? ORDER BY rowid", (image_id,))]
        return list(dict.fromkeys(repos))

    def _pulled_digests(self, image_id: str) -> list[str]:
        """`repo@digest` of each pull by digest (an index's digest among them)."""
        return [f"{r[0]}@{r[1]}" for r in self.db.read().execute(
            "SELECT repo, digest FROM image_digests WHERE image_id = ? ORDER BY rowid", (image_id,))]

    def export_layers(self, ref_or_id: str, diff_ids: list[str], path: str) -> None:
        """An oci-archive at `path` of the image with only the layers `diff_ids`
        (each as its kept tar, zstd): enough for a store that has the others.
        NotFound when a layer's tar was never kept (stored by an older ferry)."""
        import tarfile

        from ferry.image import saving
        image = self.get(ref_or_id)
        with tarfile.open(path, "w") as out:
            saving.write_oci_subset(out, self.stored(image), image.names[0] if image.names else None, diff_ids)

    def save(self, refs: list[str], path: str | None, fmt: str = "docker-archive") -> None:
        """`ferry save`: the images as a docker-archive or oci-archive at `path`
        (stdout when None), named as they were asked for (all their names when
        asked for by ID)."""
        from ferry.image import saving
        saving.check_format(fmt, len(refs))
        named = []
        for ref in refs:
            image_id, by_name = self.resolve(ref)
            image = self._image(image_id)
            named.append((self.stored(image), [by_name] if by_name else list(image.names)))
        with saving.archive_file(path) as out:
            if fmt == "oci-archive":
                stored, names = named[0]
                saving.write_oci(out, stored, names[0] if names else None)
            else:
                saving.write_docker(out, named)

    def stored(self, image: Image) -> saving.Stored:
        """What writing the image out (save, push, a migration) reads of it."""
        from ferry.image import saving
        return saving.Stored(image.id, image.names[0] if image.names else image.id[:12], image.layers,
                             self.blobs.get(f"sha256:{image.id}"), self.annotations(image),
                             {d: self.layer_tar(d) for d in image.layers},
                             {d: self.layer_size(d) for d in image.layers})

    def layer_size(self, diff_id: str) -> int:
        row = self._layer_row(diff_id)
        if row is None:
            raise NotFound(f"layer {diff_id} is missing from the store",
                           hint="remove the image and pull, load or import it again")
        return row[1]

    def annotations(self, image: Image) -> dict[str, str]:
        """The image manifest's annotations (a checkpoint image's say what it holds)."""
        try:
            return annotations_of(self.blobs.get(image.digest))
        except FileNotFoundError:
            return {}

    def has_layer(self, diff_id: str) -> bool:
        return self._layer_row(diff_id) is not None

    def has_image(self, image_id: str) -> bool:
        return self.db.read().execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone() is not None

    def layer_tar(self, diff_id: str) -> str:
        """Where the layer's tar is kept (layers stored before ferry kept them have none)."""
        return os.path.join(self.tar_root, f"{digests.hex_of(diff_id)}.tar.zst")

    def layer_paths(self, image: Image) -> list[str]:
        """Unpacked layer directories, lowest first, each once (a layer that
        repeats is kept at its highest position, which gives the same view)."""
        conn = self.db.read()
        paths: list[str] = []
        for diff_id in image.layers:
            row = conn.execute("SELECT dir FROM image_layers WHERE diff_id = ?", (diff_id,)).fetchone()
            if row is None:
                raise NotFound(f"layer {diff_id} of image {image.id[:12]} is missing from the store",
                               hint="remove the image and pull, load or import it again")
            path = os.path.join(self.layer_root, row[0])
            if path in paths:
                paths.remove(path)
            paths.append(path)
        return paths

    def inspect(self, ref_or_id: str) -> dict:
        image = self.get(ref_or_id)
        row = self.db.read().execute("SELECT os FROM images WHERE id = ?", (image.id,)).fetchone()
        repo_digests = [f"{repo}@{image.digest}" for repo in self._repos(image.id)]
        repo_digests += [d for d in self._pulled_digests(image.id) if d not in repo_digests]
        cfg = image.config
        return {
            "Id": image.id,
            "Digest": image.digest,
            "RepoTags": list(image.names),
            "RepoDigests": repo_digests,
            "Created": image.created,
            "Size": image.size,
            "Architecture": image.architecture,
            "Os": row["os"],
            "Config": {
                "Env": list(cfg.env),
                "Cmd": list(cfg.cmd),
                "Entrypoint": list(cfg.entrypoint),
                "WorkingDir": cfg.working_dir,
                "ExposedPorts": {port: {} for port in cfg.exposed_ports},
                "User": cfg.user,
                "StopSignal": cfg.stop_signal,
            },
            "RootFS": {"Type": "layers", "Layers": list(image.layers)},
            "Annotations": self.annotations(image),
        }

    # ---- changing -------------------------------------------------------------

    @contextlib.contextmanager
    def _change(self) -> Iterator[_Staging]:
        """Hold the image lock, sweep what a crash left, stage in a private
        dir, and on failure drop everything that was not recorded."""
        for path in (self.layer_root, self.tar_root, self.tmp_root, self.blobs.root):
            os.makedirs(path, mode=0o700, exist_ok=True)
        with file_lock(self.layout.lock("images")):
            self._sweep()
            staging = _Staging(self, tempfile.mkdtemp(dir=self.tmp_root, prefix="op-"))
            try:
                yield staging
            except BaseException:
                self._collect_garbage()
                raise
            finally:
                remove_tree(staging.path)

    def _sweep(self) -> None:
        """Remove temp dirs and layer dirs or blobs no record points to."""
        for name in os.listdir(self.tmp_root):
            remove_tree(os.path.join(self.tmp_root, name))
        known = {r[0] for r in self.db.read().execute("SELECT dir FROM image_layers")}
        for name in os.listdir(self.layer_root):
            if name not in known:
                remove_tree(os.path.join(self.layer_root, name))
        layers = {digests.hex_of(r[0]) for r in self.db.read().execute("SELECT diff_id FROM image_layers")}
        for name in os.listdir(self.tar_root) if os.path.isdir(self.tar_root) else ():
            if name.removesuffix(".tar.zst") not in layers:
                os.unlink(os.path.join(self.tar_root, name))
        wanted = set()
        for image_id, manifest_digest in self.db.read().execute("SELECT id, digest FROM images"):
            wanted.update({f"sha256:{image_id}", manifest_digest})
        for blob in self.blobs.digests():
            if blob not in wanted:
                self.blobs.delete(blob)
        for name in os.listdir(self.blobs.root):
            if name.startswith(".tmp-"):
                os.unlink(os.path.join(self.blobs.root, name))

    def _collect_garbage(self) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM image_layers WHERE diff_id NOT IN "
                         "(SELECT diff_id FROM image_layer_refs)")
        self._sweep()

    def _layer_dir_name(self, diff_id: str, taken: set[str]) -> str:
        name = digests.hex_of(diff_id)[:LAYER_DIR_CHARS]
        while name in taken or self.db.read().execute(
                "SELECT 1 FROM image_layers WHERE dir = ?", (name,)).fetchone():
            name = os.urandom(LAYER_DIR_CHARS // 2).hex()   # a prefix collision: any free name
        return name

    def _commit(self, staging: _Staging, config_bytes: bytes, manifest_bytes: bytes,
                names: list[str], pulled_by: tuple[str, list[str]] | None = None) -> Image:
        """Record the image; `pulled_by` is (repo, digests a pull asked for) so
        that `REPO@DIGEST` finds it again, an index's digest included."""
        parsed = parse_config(config_bytes)
        image_id = digests.hex_of(digests.of_bytes(config_bytes))
        manifest_digest = digests.of_bytes(manifest_bytes)
        size = sum(staging.layer_size(d) for d in dict.fromkeys(parsed.diff_ids) if staging.has_layer(d))
        new_layers: list[tuple[str, str, int]] = []
        taken: set[str] = set()
        for diff_id in dict.fromkeys(parsed.diff_ids):
            staged = staging.layers.get(diff_id)
            if staged is None:
                if self._layer_row(diff_id) is None:
                    raise BadArchive(f"layer {diff_id} of image {image_id[:12]} was never supplied",
                                     hint="the image source is incomplete")
                continue
            name = self._layer_dir_name(diff_id, taken)
            taken.add(name)
            os.rename(staged.path, os.path.join(self.layer_root, name))
            os.rename(staged.tar, self.layer_tar(diff_id))
            new_layers.append((diff_id, name, staged.size))
            del staging.layers[diff_id]
        self.blobs.put(config_bytes)
        self.blobs.put(manifest_bytes)
        with self.db.write() as conn:
            conn.executemany("INSERT INTO image_layers (diff_id, dir, size) VALUES (?, ?, ?)", new_layers)
            exists = conn.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone()
            if not exists:
                conn.execute("INSERT INTO images (id, digest, config, size, created, architecture, os) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (image_id, manifest_digest, json.dumps(parsed.config._asdict()),
                              size, parsed.created or utc_now(digits=6),
                              parsed.architecture, parsed.os))
                conn.executemany("INSERT INTO image_layer_refs (image_id, position, diff_id) "
                                 "VALUES (?, ?, ?)",
                                 [(image_id, i, d) for i, d in enumerate(parsed.diff_ids)])
            _give_names(conn, image_id, names)
            if pulled_by is not None:
                repo, pulled_digests = pulled_by
                conn.executemany("INSERT OR REPLACE INTO image_digests (repo, digest, image_id) "
                                 "VALUES (?, ?, ?)", [(repo, d, image_id) for d in pulled_digests])
        return self._image(image_id)

    def _make_image(self, staging: _Staging, diff_id: str, name: str, config: ImageConfig,
                    comment: str, created: str | None = None) -> Image:
        """Record a one-layer image that ferry itself made (import, build)."""
        # Sub-second precision, so two imports of one tar are two images, as in podman.
        created = created or utc_now(digits=6)
        config_bytes = config_document(config, [diff_id], created, comment)
        manifest_bytes = manifest_document(digests.of_bytes(config_bytes), len(config_bytes),
                                           [(diff_id, staging.layer_size(diff_id))])
        return self._commit(staging, config_bytes, manifest_bytes, [name])

    def import_rootfs(self, tar_path: str, ref: str, *, config: ImageConfig | None = None,
                      comment: str | None = None) -> Image:
        """`ferry image import ROOTFS.tar NAME[:TAG]`: a one-layer image from a
        root filesystem tar (plain, gzip or zstd)."""
        name = reference.parse_local(ref).name
        if not os.path.isfile(tar_path):
            raise NotFound(f"root filesystem tar {tar_path!r} not found", hint="check the path")
        config = config or ImageConfig(env=(DEFAULT_PATH_ENV,))
        with self._change() as staging, open(tar_path, "rb") as source:
            diff_id = staging.add_layer(source, f"root filesystem tar {tar_path}")
            return self._make_image(staging, diff_id, name,
                                    config, comment or f"ferry image import {os.path.basename(tar_path)}")

    def tag(self, ref_or_id: str, targets: list[str]) -> Image:
        """`ferry tag IMAGE TARGET...`: more names for the image; a name that
        another image had moves to this one, as in podman."""
        names = [reference.parse_local(target) for target in targets]
        for ref in names:
            if ref.digest:
                raise UsageError(f"cannot tag with a digest: {ref}", hint="give NAME[:TAG]")
        with self._change():
            image_id, _ = self.resolve(ref_or_id)
            with self.db.write() as conn:
                _give_names(conn, image_id, [ref.name for ref in names])
            return self._image(image_id)

    def untag(self, ref_or_id: str, names: list[str]) -> tuple[str, list[str]]:
        """`ferry untag IMAGE [NAME...]`: those names off the image (every name
        without any, as podman's untag), which stays; its ID and the names taken.
        A name the image lacks is refused, and none is taken then."""
        with self._change():
            image_id, _ = self.resolve(ref_or_id)
            held = self._image(image_id).names
            if not names:
                dropped = list(held)
            else:
                dropped = []
                for text in names:
                    name = reference.parse_local(text).name
                    if name not in held:
                        raise NotFound(f"{name}: tag not known", hint="see the image's names with 'ferry images'")
                    if name not in dropped:
                        dropped.append(name)
            with self.db.write() as conn:
                conn.executemany("DELETE FROM image_names WHERE name = ? AND image_id = ?",
                                 [(name, image_id) for name in dropped])
            return image_id, dropped

    def commit_checkpoint(self, archive_path: str, ref: str, annotations: dict[str, str]) -> Image:
        """A checkpoint image, as podman's --create-image makes one: one layer
        holding the checkpoint archive's members, an empty config, and
        annotations saying whose checkpoint it is."""
        name = reference.parse_local(ref).name
        created = utc_now(digits=6)
        with self._change() as staging, open(archive_path, "rb") as source:
            diff_id = staging.add_layer(source, f"checkpoint archive {archive_path}")
            config_bytes = config_document(ImageConfig(), [diff_id], created,
                                           "ferry container checkpoint --create-image")
            manifest_bytes = manifest_document(digests.of_bytes(config_bytes), len(config_bytes),
                                               [(diff_id, staging.layer_size(diff_id))], annotations=annotations)
            return self._commit(staging, config_bytes, manifest_bytes, [name])

    def commit_layer(self, base: Image, layer_path: str, ref: str | None, config: ImageConfig, *,
                     comment: str, author: str = "") -> Image:
        """`ferry commit`: `base`'s layers and history, one more layer (an OCI
        layer tar), and `config`; named `ref` (a full name) or left unnamed."""
        created = utc_now(digits=6)
        try:
            base_doc = json.loads(self.blobs.get(f"sha256:{base.id}"))
        except (OSError, ValueError):
            base_doc = {}
        with self._change() as staging, open(layer_path, "rb") as source:
            diff_id = staging.add_layer(source, "the container's changes")
            doc = json.loads(config_document(config, [*base.layers, diff_id], created, "/bin/sh"))
            entry = {"created": created, "created_by": "/bin/sh", **({"author": author} if author else {}),
                     "comment": comment}
            history = base_doc.get("history") if isinstance(base_doc.get("history"), list) else []
            doc["history"] = [*history, entry]
            if author:
                doc["author"] = author
            config_bytes = json.dumps(doc, separators=(",", ":")).encode()
            manifest_bytes = manifest_document(digests.of_bytes(config_bytes), len(config_bytes),
                                               [(d, staging.layer_size(d)) for d in [*base.layers, diff_id]])
            return self._commit(staging, config_bytes, manifest_bytes, [ref] if ref else [])

    def load(self, archive_path: str) -> list[Image]:
        """`ferry load -i ARCHIVE`: every image of a docker-archive or
        oci-archive (as `podman save` writes them); all of them or none. Each
        comes with the names the archive gave it (what podman's load prints),
        not every name it has here."""
        if not os.path.isfile(archive_path):
            raise NotFound(f"archive {archive_path!r} not found", hint="check the path given to -i")
        from ferry.image import archive as archives   # tarfile and gzip: only `load` reads archives
        with self._change() as staging, archives.ImageArchive(archive_path) as archive:
            found = archive.images()
            staged = []
            for item in found:
                parsed = parse_config(item.config, f"config in {archive_path}")
                staging.add_layers(f"archive {archive_path}", parsed.diff_ids, [
                    (f"layer {layer.member} in {archive_path}", layer.digest,
                     functools.partial(archive.open, layer.member)) for layer in item.layers])
                manifest_bytes = item.manifest or manifest_document(
                    digests.of_bytes(item.config), len(item.config),
                    [(d, staging.layer_size(d)) for d in parsed.diff_ids])
                staged.append((item, manifest_bytes))
            return [self._commit(staging, item.config, manifest_bytes, item.names)._replace(names=tuple(item.names))
                    for item, manifest_bytes in staged]

    def pull(self, ref: str, *, tls_verify: bool = True, creds: str | None = None,
             progress: Progress | None = None) -> Image:
        """`ferry pull REF`: fetch linux/<host arch> from an OCI distribution registry."""
        target = reference.parse_pull(ref)
        # httpx is imported only when something is pulled: it costs every command 30 ms.
        from ferry.image.registry import RegistryClient
        report: Progress = progress or (lambda what, done, total: None)
        with RegistryClient(target.registry, tls_verify=tls_verify, creds=creds) as client, \
                self._change() as staging:
            client.login(target.repository)
            what = str(target)
            body, content_type, asked_digest = client.manifest(target.repository, target.digest or target.tag,
                                                               what)
            document = parse_document(body, content_type, f"manifest of {what}")
            if isinstance(document, Index):
                entry = select_platform(document, what)
                what = f"{what} ({entry.platform})"
                body, content_type, _ = client.manifest(target.repository, entry.digest, what)
                digests.verify(entry.digest, digests.of_bytes(body), f"manifest of {what}")
                document = parse_document(body, content_type, f"manifest of {what}")
                if isinstance(document, Index):
                    raise BadArchive(f"{what}: an index points at another index",
                                     hint="ferry reads one level of manifest list")
            config_what = f"config {document.config.digest[7:19]}"
            config_bytes = client.blob_bytes(target.repository, document.config.digest,
                                             config_what, MAX_CONFIG_BYTES)
            report(config_what, len(config_bytes), len(config_bytes))
            parsed = parse_config(config_bytes, f"config of {what}")
            sizes = {f"blob {layer.digest[7:19]}": max(layer.size, 0) for layer in document.layers}
            staging.add_layers(what, parsed.diff_ids, [
                (f"blob {layer.digest[7:19]}", layer.digest,
                 functools.partial(client.blob, target.repository, layer.digest,
                                   f"blob {layer.digest[7:19]}", layer.size, report))
                for layer in document.layers], done=lambda blob: report(blob, sizes[blob], sizes[blob]))
            pulled_by = (target.repo, [asked_digest]) if target.digest else None
            return self._commit(staging, config_bytes, body, [target.name] if target.tag else [], pulled_by)

    def build_debian(self, ref: str, include: list[str], suite: str = "bookworm", *,
                     cmd: list[str] | None = None, expose: tuple[str, ...] | list[str] = (),
                     env: tuple[str, ...] | list[str] = (),
                     progress: Callable[[str], None] | None = None) -> Image:
        """A minimal Debian image (debootstrap minbase + `include`), its root
        filesystem cached machine-wide, recorded as the one-layer image `ref`."""
        from ferry.image import debian
        name = reference.parse_local(ref).name
        recipe = debian.Recipe.make(suite, include, cmd=cmd, expose=expose, env=env)
        tar_path = debian.rootfs_tar(recipe, progress=progress)
        # Created when its root filesystem was: one recipe built in two roots
        # that share the cache is one image, by ID, which a migration between
        # them needs (the destination restores onto the image the source ran).
        built = datetime.datetime.fromtimestamp(os.stat(tar_path).st_mtime, datetime.timezone.utc)
        with self._change() as staging, open(tar_path, "rb") as source:
            diff_id = staging.add_layer(source, f"cached Debian root filesystem {tar_path}")
            return self._make_image(staging, diff_id, name, recipe.image_config(),
                                    f"ferry image build-debian {recipe.describe()}",
                                    created=built.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    def remove(self, ref_or_id: str, *, force: bool = False,
               in_use: Callable[[str], list[str]] = lambda image_id: [],
               every_name: bool = False) -> list[str]:
        """`ferry rmi`: untag a name the image shares with others, or delete
        the image and every layer and blob no other image uses (whatever names
        it has with `every_name`: rmi -a, prune). Returns the lines podman
        prints ("Untagged: NAME", "Deleted: ID")."""
        with self._change():
            image_id, by_name = self.resolve(ref_or_id)
            image = self._image(image_id)
            if by_name is not None and len(image.names) > 1 and not every_name:
                with self.db.write() as conn:
                    conn.execute("DELETE FROM image_names WHERE name = ?", (by_name,))
                return [f"Untagged: {by_name}"]
            if by_name is None and len(image.names) > 1 and not (force or every_name):
                raise Conflict(f"image {image_id[:12]} has several names ({', '.join(image.names)})",
                               hint="remove it by name, one name at a time, or force with rmi -f")
            users = in_use(image_id)
            if users and not force:
                raise InUse(f"image {image_id[:12]} is in use by container(s) {', '.join(users)}",
                                 hint="remove those containers first, or force with rmi -f")
            with self.db.write() as conn:
                conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
            self._collect_garbage()
            return [f"Untagged: {name}" for name in image.names] + [f"Deleted: {image_id}"]
