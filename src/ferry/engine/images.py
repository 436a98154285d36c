"""Image operations that reach beyond the image store: removing an image
must know which containers were made from it, a restore finds its image
by ID or in the archive the user hands it, and a push compresses with the
archive codecs. The image verbs record podman's image events here, once done."""

from __future__ import annotations

from ferry.util.errors import InUse, NotFound

# What a save to stdout's event names: podman names its own temporary pipe there.
SAVED_TO_STDOUT = "/dev/stdout"


def remove_image(engine, ref_or_id: str, *, force: bool = False, every_name: bool = False) -> list[str]:
    """`rmi`: refuse while containers use the image; with force, remove those
    containers first, as podman's `rmi -f` does. Returns podman's lines.
    `every_name` deletes the image whatever name it was given by (`rmi -a`)."""
    containers = engine.containers

    def in_use(image_id: str) -> list[str]:
        # Called by the store only once it has decided to delete the image
        # (not when it merely untags one of several names).
        users = containers.users_of_image(image_id)
        if not force:
            return users
        for name in users:
            containers.remove(name, force=True)
        return []

    return remove_recorded(engine, ref_or_id, force=force, in_use=in_use, every_name=every_name)


def remove_recorded(engine, ref_or_id: str, **options) -> list[str]:
    """The store's remove, and podman's events of it."""
    image_id, by_name = engine.images.resolve(ref_or_id)
    lines = engine.images.remove(ref_or_id, **options)
    for status, name in removal_events(by_name, lines):
        record_image_event(engine, status, image_id, name)
    return lines


def removal_events(by_name: str | None, lines: list[str]) -> list[tuple[str, str]]:
    """(status, name) of podman's events for one removal that printed `lines`:
    an untag per name it lost, then a remove, even when only a name went,
    naming what it was asked by (nothing when asked by ID)."""
    untagged = [text.removeprefix("Untagged: ") for text in lines if text.startswith("Untagged: ")]
    return [("untag", name) for name in untagged] + [("remove", by_name or "")]


def record_image_event(engine, status: str, image_id: str = "", name: str = "") -> None:
    from ferry.engine import events
    events.record(engine.layout, status, kind="image", id=image_id, name=name)


# ---- the other image verbs, with podman 4.3.1's events (their IDs and names as podman's) ----

def pull_image(engine, ref: str, **options):
    """`pull`: podman's event has no ID and the reference as given."""
    image = engine.images.pull(ref, **options)
    record_image_event(engine, "pull", name=ref)
    return image


def load_images(engine, archive_path: str) -> list:
    """`load`: one event for the archive, however many images it held."""
    images = engine.images.load(archive_path)
    record_image_event(engine, "loadfromarchive", name=archive_path)
    return images


def import_image(engine, tar_path: str, ref: str):
    """`import`: podman records only the tag of the new image."""
    image = engine.images.import_rootfs(tar_path, ref)
    record_image_event(engine, "tag", image.id, ref)
    return image


def tag_image(engine, ref_or_id: str, targets: list[str]):
    """`tag`: an event per new name, as it was given."""
    image = engine.images.tag(ref_or_id, targets)
    for target in targets:
        record_image_event(engine, "tag", image.id, target)
    return image


def untag_image(engine, ref_or_id: str, names: list[str]) -> None:
    """`untag`: an event per name taken, as podman records them."""
    image_id, dropped = engine.images.untag(ref_or_id, names)
    for name in dropped:
        record_image_event(engine, "untag", image_id, name)


def save_images(engine, refs: list[str], path: str | None, fmt: str) -> None:
    """`save`: an event per image asked for, named by the archive's path."""
    engine.images.save(refs, path, fmt)
    for ref in refs:
        record_image_event(engine, "save", engine.images.resolve(ref)[0], path or SAVED_TO_STDOUT)


def build_debian_image(engine, ref: str, include: list[str], **options):
    """`image build-debian`: podman's build event, which has no ID and names
    the new image by its ID."""
    image = engine.images.build_debian(ref, include, **options)
    record_image_event(engine, "build", name=image.id)
    return image


def image_by_id(images, image_id: str, image_archive: str | None, what: str, missing: str, hint: str,
                archive_hint: str | None = None):
    """The image of this ID, loading --image-archive first when it is not here:
    a restore looks an image up by the ID its archive records, as podman does
    (a name may point at another image here). `missing` and `hint` say why
    and how when neither has it."""
    try:
        return images.get(image_id)
    except NotFound:
        if not image_archive:
            raise NotFound(missing, hint=hint) from None
    images.load(image_archive)
    try:
        return images.get(image_id)
    except NotFound:
        raise NotFound(f"--image-archive {image_archive} does not hold {what}", hint=archive_hint) from None


def push_image(engine, ref: str, dest: str | None, **options) -> str:
    """`ferry push`, its layers compressed by the archive codecs."""
    from ferry.checkpoint.archive.codecs import sink_for
    from ferry.image.push import push
    digest = push(engine.images, ref, dest, sink_for=sink_for, tmp_dir=engine.layout.tmp, **options)
    record_image_event(engine, "push", engine.images.resolve(ref)[0], dest or ref)
    return digest


# ---- filters, prune, history, rmi -a (podman 4.3.1's) -----------------------

def image_facts(engine) -> list:
    """What the image filters see of every image here, newest first."""
    from ferry.image.filters import ImageFacts
    from ferry.image.listing import list_images
    from ferry.util.timefmt import go_time_ns
    counts = container_counts(engine)
    facts = []
    for image in list_images(engine.db):
        try:
            created = go_time_ns(image.created)
        except ValueError:   # a config without a readable time: the epoch, as Go's zero-ish
            created = 0
        labels = engine.images.get(image.id).config.labels
        facts.append(ImageFacts(image.id, image.digest, image.names, created, labels, counts.get(image.id, 0)))
    return facts


def container_counts(engine) -> dict[str, int]:
    """How many containers each image ID has (checkpointed ones count: they restore onto it)."""
    counts: dict[str, int] = {}
    try:
        for (image_id,) in engine.db.read().execute("SELECT image_id FROM containers"):
            counts[image_id] = counts.get(image_id, 0) + 1
    except Exception as exc:   # sqlite3.OperationalError: no container was ever made here
        if "no such table" not in str(exc):
            raise
    return counts


def filter_images(engine, texts: list[str], allowed=None) -> list:
    """The facts of the images every filter in `texts` (podman's KEY=VALUE) lets through."""
    from ferry.image import filters
    from ferry.util.timefmt import go_time_ns
    parsed = filters.parse_filters(texts, allowed or filters.IMAGE_FILTERS)
    facts = image_facts(engine)
    if not parsed:
        return facts

    def created_of(ref: str) -> int:
        try:
            image = engine.images.get(ref)
        except NotFound:
            raise NotFound(f"could not find local image for filter {ref!r}",
                           hint="before, since and after name an image here") from None
        try:
            return go_time_ns(image.created)
        except ValueError:
            return 0

    test = filters.predicate(parsed, created_of)
    return [image for image in facts if test(image)]


def prune_images(engine, *, every_unused: bool = False, filters: list[str] = ()) -> list[tuple[str, int]]:
    """`image prune`: dangling images (every unused one with `every_unused`)
    that no container uses and the filters let through; (ID, size) of each
    removed, as podman lists them. ferry's images have no parent chain, so
    one pass finds all that podman's repeated passes would."""
    from ferry.image.filters import PRUNE_FILTERS
    removed: list[tuple[str, int]] = []
    sizes = {}
    for image in filter_images(engine, list(filters), PRUNE_FILTERS):
        if image.containers or (image.names and not every_unused):
            continue
        sizes[image.id] = engine.images.get(image.id).size
    for image_id in stored_order(engine, sizes):   # podman's order: as they came into the store
        size = sizes[image_id]
        try:
            remove_recorded(engine, image_id, every_name=True,
                            in_use=lambda found: engine.containers.users_of_image(found))
        except (NotFound, InUse):   # gone, or taken into use, since the listing
            continue
        removed.append((image_id, size))
    return removed


def remove_all_images(engine, *, force: bool = False) -> tuple[list[str], list]:
    """`rmi -a`: every image, each with all its names. Returns podman's lines
    and the errors of the ones that could not go (in use, without force)."""
    from ferry.util.errors import FerryError
    lines: list[str] = []
    failures: list[FerryError] = []
    for image_id in stored_order(engine, [image.id for image in engine.images.list()]):
        try:
            lines += remove_image(engine, image_id, force=force, every_name=True)
        except FerryError as error:
            failures.append(error)
    return lines, failures


def stored_order(engine, image_ids) -> list[str]:
    """These image IDs in the order they came into the store (podman lists,
    prunes and removes in its store's order)."""
    wanted = set(image_ids)
    rows = engine.db.read().execute("SELECT id FROM images ORDER BY rowid")
    return [row[0] for row in rows if row[0] in wanted]


def image_history(engine, ref: str) -> list:
    """`image history IMAGE`: its config's history entries, newest first."""
    from ferry.image.history import history_of
    image = engine.images.get(ref)
    config_bytes = engine.images.blobs.get(f"sha256:{image.id}")
    # Which local images end at each of its layers (itself first, then the oldest).
    by_layers: dict[tuple[str, ...], list[str]] = {}
    for other in sorted(engine.images.list(), key=lambda i: (i.id != image.id, i.created, i.id)):
        by_layers.setdefault(other.layers, []).append(other.id)
    return history_of(image.id, config_bytes, [engine.images.layer_size(d) for d in image.layers],
                      lambda position: by_layers.get(image.layers[:position + 1], []))
