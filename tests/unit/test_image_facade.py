"""engine.images.remove_image: containers made from an image block its
removal, and `rmi -f` removes them first (a real store, fake containers)."""

from __future__ import annotations

import pytest

from ferry.engine.images import remove_image
from ferry.image.store import ImageStore
from ferry.store.db import Database
from ferry.store.layout import Layout
from ferry.util.errors import Conflict
from tests.support.registry import LayerTar
from tests.unit.test_image_store import docker_archive


class FakeContainers:
    def __init__(self, users: dict[str, list[str]]):
        self.users = users
        self.removed: list[str] = []

    def users_of_image(self, image_id: str) -> list[str]:
        return [n for n in self.users.get(image_id, []) if n not in self.removed]

    def remove(self, name: str, *, force: bool = False) -> str:
        assert force
        self.removed.append(name)
        return name


class FakeEngine:
    def __init__(self, images: ImageStore, containers: FakeContainers):
        self.images, self.containers, self.layout = images, containers, images.layout


@pytest.fixture
def engine(tmp_path):
    layout = Layout.at(str(tmp_path / "root"))
    db = Database(layout.database)
    images = ImageStore(layout, db)
    archive = tmp_path / "a.tar"
    archive.write_bytes(docker_archive([(["app", "app:second"], [LayerTar().file("f", b"x").bytes()])]))
    [image] = images.load(str(archive))
    yield FakeEngine(images, FakeContainers({image.id: ["web", "worker"]}))
    db.close()


def test_containers_block_removal(engine):
    remove_image(engine, "app:second")
    with pytest.raises(Conflict) as used:
        remove_image(engine, "app")
    assert "web, worker" in used.value.message
    assert engine.containers.removed == []


def test_untagging_one_of_several_names_touches_no_container(engine):
    assert remove_image(engine, "app:second", force=True) == ["Untagged: localhost/app:second"]
    assert engine.containers.removed == []


def test_force_removes_the_containers_first(engine):
    image = engine.images.get("app")
    lines = remove_image(engine, image.id, force=True)
    assert lines[-1] == f"Deleted: {image.id}"
    assert engine.containers.removed == ["web", "worker"]
    assert engine.images.list() == []
