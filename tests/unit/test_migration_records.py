"""The destination's migration records, without a host: an offer its source
never followed up expires; a record whose agent died reads as failed."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from ferry.engine import migrations
from ferry.engine.migrations import DESTINATION, Migrations, Record
from ferry.store.layout import Layout
from ferry.util.errors import Conflict, NotFound

ID, CONTAINER = "0" * 32, "c" * 64


@pytest.fixture
def records(tmp_path):
    return Migrations(SimpleNamespace(layout=Layout(str(tmp_path / "root"))))


def offer(records, created: str, pid: int = os.getpid(), state: str = "offered") -> None:
    records._save(Record(ID, DESTINATION, CONTAINER, "web", state, created, pid=pid))


def test_a_fresh_offer_waits_and_a_stale_one_has_expired(records, monkeypatch):
    offer(records, "2026-11-29T12:00:00.000000000Z")
    monkeypatch.setattr(migrations.time, "time", lambda: 1_795_953_600.0 + 60)     # 12:01 that day
    assert records.status(ID).state == "offered"
    monkeypatch.setattr(migrations.time, "time", lambda: 1_795_953_600.0 + 3600)   # an hour later
    assert records.status(ID).state == "aborted"
    with pytest.raises(Conflict, match="not waiting for its checkpoint"):
        records.receive(ID, -1)


def test_a_record_whose_agent_died_reads_as_failed(records):
    offer(records, "2026-11-29T12:00:00.000000000Z", pid=2 ** 22 + 7, state="receiving")
    assert records.status(ID).state == "failed"


def test_an_unknown_migration_is_not_found(records):
    with pytest.raises(NotFound, match=f"no migration {ID}"):
        records.status(ID)


# ---- the source's stream: how each failure of the destination is read -----------

from ferry.engine.migrations import MigrateOptions, SOURCE                  # noqa: E402
from ferry.checkpoint.lazy import LazyServe                                  # noqa: E402
from ferry.migration import wire                                            # noqa: E402
from ferry.migration.client import NoAnswer, StreamCut                      # noqa: E402
from ferry.migration.phases import Timings                                  # noqa: E402
from ferry.util.errors import FerryError                                    # noqa: E402

TICKET = wire.MigrationTicket(id=ID, container_id=CONTAINER)
REPORT = wire.RestoreReport(id=ID, container_id=CONTAINER, name="web", seconds=0.5, phases={})


class FakeAgent:
    url = "http://dest:7070"

    def __init__(self, answer, status=None):
        self.answer, self._status, self.aborted = answer, status, False

    def send_checkpoint(self, migration_id, fd, sent=None, page_server_port=None):
        self.page_server_port = page_server_port
        total = 0
        while data := os.read(fd, 1 << 16):
            total += len(data)
            if sent:
                sent(total)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def status(self, migration_id):
        if self._status is None:
            raise FerryError("cannot reach the agent")
        return wire.MigrationStatus(id=migration_id, container_id=CONTAINER, state=self._status)

    def abort(self, migration_id):
        self.aborted = True


@pytest.fixture
def source(tmp_path, monkeypatch):
    container_dir = tmp_path / "container"
    container_dir.mkdir()

    class Checkpoints:
        def checkpoint(self, name, options, progress):
            progress("dump", 0, 1)
            os.write(options.export_stream, b"archive bytes")
            return SimpleNamespace(lazy=FakeLazyDump() if options.lazy else None, phases={"runc_checkpoint": 0.1})
    engine = SimpleNamespace(layout=Layout(str(tmp_path / "root")), checkpoints=Checkpoints(),
                             containers=SimpleNamespace(dir=lambda _id: str(container_dir)))
    made = Migrations(engine)
    made.resumed = []
    monkeypatch.setattr(Migrations, "_resume", lambda self, container, record, options, reason, dump=None:
                        self.resumed.append((reason, dump) if dump else reason))
    monkeypatch.setattr(migrations.phases, "reached", lambda name: None)
    return made


class FakeLazyDump:
    pid = 4242
    port = 40123


def stream(source, agent, lazy=None):
    record = source._save(Record(ID, SOURCE, CONTAINER, "web", "streaming", "2026-11-29T12:00:00Z", peer=agent.url,
                                 lazy=lazy is not None))
    container = SimpleNamespace(id=CONTAINER, name="web")
    report, sent, dump = source._stream(container, MigrateOptions(to=agent.url, token="t" * 40, lazy=bool(lazy)),
                                        agent, TICKET, record, Timings(), None, lazy)
    assert (dump is not None) == (lazy is not None)
    return report, sent


def test_the_destination_s_word_is_the_point_of_no_return(source):
    report, sent = stream(source, FakeAgent(REPORT))
    assert report == REPORT and sent == len(b"archive bytes") and source.resumed == []


def test_a_lazy_stream_names_its_page_server_and_records_who_serves_the_pages(source):
    agent = FakeAgent(REPORT)
    report, _ = stream(source, agent, lazy=LazyServe(port=40123, tls_config="/x/criu-tls.conf"))
    assert report == REPORT and agent.page_server_port == 40123 and source.resumed == []
    assert source.record(ID).page_pid == FakeLazyDump.pid   # recovery waits while it serves


def test_a_cut_lazy_stream_ends_the_page_server_to_resume_the_source(source):
    agent = FakeAgent(StreamCut("the checkpoint stream broke"))
    with pytest.raises(StreamCut):
        stream(source, agent, lazy=LazyServe(port=40123, tls_config="/x/criu-tls.conf"))
    [(reason, dump)] = source.resumed
    assert reason == "the checkpoint stream broke" and isinstance(dump, FakeLazyDump) and agent.aborted


def test_a_cut_stream_resumes_the_source(source):
    agent = FakeAgent(StreamCut("the checkpoint stream broke"))
    with pytest.raises(StreamCut):
        stream(source, agent)
    assert source.resumed == ["the checkpoint stream broke"] and agent.aborted


def test_a_lost_answer_is_asked_for_and_a_running_destination_wins(source):
    report, _ = stream(source, FakeAgent(NoAnswer("no answer"), status="running"))
    assert report.container_id == CONTAINER and source.resumed == []


def test_a_lost_answer_from_a_destination_that_failed_resumes_the_source(source):
    with pytest.raises(NoAnswer):
        stream(source, FakeAgent(NoAnswer("no answer"), status="failed"))
    assert source.resumed == ["no answer"]


def test_a_destination_that_cannot_be_asked_leaves_the_checkpoint_unresolved(source):
    with pytest.raises(FerryError, match="cannot tell whether http://dest:7070 runs container 'web'"):
        stream(source, FakeAgent(NoAnswer("no answer"), status=None))
    assert source.resumed == [] and source.record(ID).state == "unresolved"
