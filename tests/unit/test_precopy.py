"""The pre-copy policy, driven with made-up rounds, and its refusal on a host
without soft-dirty tracking, with criu faked at the subprocess chokepoint."""

from __future__ import annotations

import math

import pytest

from ferry.engine.system import system_check
from ferry.host import probes
from ferry.migration import precopy
from ferry.migration.precopy import Round, Step, next_step
from ferry.util.errors import Incompatible
from tests.unit.test_probes import FakeTools

MiB = 1 << 20
PAGE = 4096


def simulate(memory: int, writes: float, throughput: float) -> tuple[list[Round], list[precopy.Decision]]:
    """Run the loop a caller runs: a workload writing `writes` bytes/s over a
    link moving `throughput` bytes/s, each round taking what was written while
    the round before ran, until the policy asks for the final dump."""
    rounds, decisions = [], []
    size = memory
    while True:
        seconds = size / throughput
        rounds.append(Round(pages=size // PAGE, bytes=size, seconds=seconds, throughput=throughput))
        decisions.append(next_step(rounds))
        if decisions[-1].final:
            return rounds, decisions
        assert len(rounds) < 100, "the policy never stopped"
        size = int(writes * seconds)


def test_a_converging_workload_stops_when_the_rest_fits_the_target_downtime():
    # 1000 MiB at 100 MiB/s, writing 30 MiB/s: rounds of 1000, 300, 90 and 27 MiB;
    # after the 4th the rest is 30 MiB/s * 0.27 s = 8.1 MiB, 81 ms on the link.
    rounds, decisions = simulate(1000 * MiB, 30 * MiB, 100 * MiB)
    assert [r.bytes // MiB for r in rounds] == [1000, 300, 90, 27]
    assert [d.step for d in decisions] == [Step.PRE_DUMP] * 3 + [Step.FINAL_DUMP]
    assert decisions[-1].reason == ("the final dump should move about 8.1 MiB in 81 ms, "
                                    "within the 200 ms target")
    # Round 3 left 27 MiB, 270 ms: just above the target, so one more round.
    assert decisions[2].reason == "the final dump would take about 270 ms, above the 200 ms target"


def test_a_workload_writing_faster_than_the_link_stops_after_the_second_round():
    # The dirty set shrank (by compression, say), yet the container writes
    # 90 MiB/s where the link moves 80: no round can catch up.
    rounds = [Round(pages=256000, bytes=1000 * MiB, seconds=10, throughput=100 * MiB),
              Round(pages=200000, bytes=900 * MiB, seconds=9, throughput=80 * MiB)]
    assert not next_step(rounds[:1]).final
    decision = next_step(rounds)
    assert decision.step is Step.FINAL_DUMP
    assert decision.reason == ("pre-copy cannot catch up: the container writes 90.0 MiB/s, "
                               "and the link moves 80.0 MiB/s")


def test_a_stalled_dirty_set_has_converged():
    # 5% fewer pages: the writes are slower than the link, but the set stays.
    first = Round(pages=100000, bytes=1000 * MiB, seconds=10, throughput=100 * MiB)
    stalled = Round(pages=95000, bytes=500 * MiB, seconds=5, throughput=100 * MiB)
    decision = next_step([first, stalled])
    assert decision.final
    assert decision.reason == ("the dirty set has converged: it shrank 5% (100000 pages, then 95000), "
                               "less than the 10% another round needs")
    grown = Round(pages=120000, bytes=500 * MiB, seconds=5, throughput=100 * MiB)
    assert "it did not shrink (100000 pages, then 120000)" in next_step([first, grown]).reason
    shrunk = Round(pages=89000, bytes=500 * MiB, seconds=5, throughput=100 * MiB)
    assert next_step([first, shrunk]).step is Step.PRE_DUMP


def test_rounds_stop_at_the_cap_while_still_shrinking():
    # Each round halves the set (writes at half the link's speed), but 100 GiB
    # halved 7 times still takes 4 s: the cap ends it, not convergence.
    rounds, decisions = simulate(100 * 1024 * MiB, 50 * MiB, 100 * MiB)
    assert len(rounds) == precopy.MAX_ROUNDS == 8
    assert all(d.step is Step.PRE_DUMP for d in decisions[:-1])
    assert decisions[-1].reason == ("8 pre-dump rounds ran, the most allowed; "
                                    "the final dump should take about 4000 ms")


def test_a_small_container_needs_one_round():
    # All memory moves within the target, so the rest can only be smaller.
    decision = next_step([Round(pages=2560, bytes=10 * MiB, seconds=0.1, throughput=100 * MiB)])
    assert decision.final and "within the 200 ms target" in decision.reason


def test_degenerate_rounds():
    assert next_step([]) == precopy.Decision(Step.PRE_DUMP, "no pre-dump has run yet")
    first = Round(pages=256000, bytes=1000 * MiB, seconds=10, throughput=100 * MiB)
    idle = Round(pages=0, bytes=0, seconds=0.01, throughput=100 * MiB)
    assert next_step([first, idle]).reason == "round 2 found no dirty pages"
    no_link = Round(pages=1000, bytes=4 * MiB, seconds=1, throughput=0)
    assert next_step([first, no_link]).reason.startswith("round 2 measured no throughput")
    # A round that took no time gives no write rate: the next one's whole set
    # stands in for the rest (400 MiB, 4 s), and nothing divides by zero.
    instant = Round(pages=256000, bytes=1000 * MiB, seconds=0, throughput=100 * MiB)
    after = Round(pages=102400, bytes=400 * MiB, seconds=4, throughput=100 * MiB)
    assert precopy.dirty_rate(instant, after) is None
    assert next_step([instant, after]).reason == ("the final dump would take about 4000 ms, "
                                                  "above the 200 ms target")
    # Pages after an empty round (which the policy would have stopped at) still decide.
    empty = Round(pages=0, bytes=0, seconds=10, throughput=100 * MiB)
    grown = Round(pages=1000, bytes=400 * MiB, seconds=4, throughput=100 * MiB)
    assert "did not shrink (0 pages, then 1000)" in next_step([empty, grown]).reason


@pytest.mark.parametrize("field,value", [("pages", -1), ("bytes", -1), ("seconds", -0.5),
                                         ("throughput", math.nan), ("seconds", math.nan)])
def test_a_round_rejects_negative_and_nan_measurements(field, value):
    good = dict(pages=1, bytes=PAGE, seconds=1.0, throughput=1.0)
    with pytest.raises(ValueError, match=f"{field} must be >= 0"):
        Round(**{**good, field: value})


# ---- the refusal --------------------------------------------------------

DIRTY_TRACKING_OFF = "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n"


@pytest.fixture
def fake_criu(monkeypatch, tmp_path):
    """criu answered at the chokepoint, and the probe cache emptied on both
    sides, so that no other test (or integration skip) sees the fake's answer."""
    binary = tmp_path / "criu"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("FERRY_CRIU", str(binary))
    probes.cached.cache_clear()

    def install(answers):
        fake = FakeTools(answers)
        monkeypatch.setattr(probes.proc, "_execute", fake)
        return fake
    yield install
    probes.cached.cache_clear()


def test_pre_copy_is_refused_in_the_words_of_system_check(fake_criu):
    fake = fake_criu({("check", "--feature", "mem_dirty_track"): (1, "", DIRTY_TRACKING_OFF)})
    with pytest.raises(Incompatible) as refused:
        precopy.check_pre_copy_possible()
    row = next(c for c in system_check().checks if c.key == "soft_dirty")
    assert row.status == probes.MISSING
    assert refused.value.message == f"--pre-copy is not possible on this host: soft_dirty: {row.detail}"
    assert refused.value.message == ("--pre-copy is not possible on this host: soft_dirty: criu check "
                                     "--feature mem_dirty_track: Dirty tracking is OFF. "
                                     "Memory snapshot will not work.")
    assert "without --pre-copy" in refused.value.hint and "--lazy" in refused.value.hint
    # Asking again reuses the probe's answer: criu ran once for it.
    probe_calls = sum(1 for argv in fake.calls if "mem_dirty_track" in argv)
    with pytest.raises(Incompatible):
        precopy.check_pre_copy_possible()
    assert sum(1 for argv in fake.calls if "mem_dirty_track" in argv) == probe_calls


def test_pre_copy_is_allowed_when_criu_tracks_dirty_pages(fake_criu):
    fake_criu({("check", "--feature", "mem_dirty_track"): (0, "mem_dirty_track is supported\n", "")})
    assert precopy.check_pre_copy_possible() is None


def test_pre_copy_is_refused_without_criu(monkeypatch):
    monkeypatch.setenv("FERRY_CRIU", "/nonexistent/criu")
    probes.cached.cache_clear()
    try:
        with pytest.raises(Incompatible, match="soft_dirty: criu not found, so it cannot be probed"):
            precopy.check_pre_copy_possible()
    finally:
        probes.cached.cache_clear()


def test_refusal_is_built_from_any_failed_check():
    check = probes.Check("soft_dirty", probes.MISSING, "no", "off for a test", probes.IMPACT["soft_dirty"], False)
    error = precopy.refusal(check)
    assert isinstance(error, Incompatible)
    assert str(error) == "--pre-copy is not possible on this host: soft_dirty: off for a test"
