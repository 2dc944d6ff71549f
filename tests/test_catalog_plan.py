"""bench/bench_catalog_plan.py: the catalog plan's arithmetic and its replay of the measured run
(no models, no services; fast)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("bench_catalog_plan", REPO / "bench" / "bench_catalog_plan.py")
assert _spec and _spec.loader
plan = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = plan  # dataclasses look their module up
_spec.loader.exec_module(plan)


def test_the_replay_of_the_measured_run_is_within_its_tolerance(capsys):
    """52 windows x their stage means, 4 in flight, killed at 26: within +-10 % of the measured 370 s."""
    durations = [sum(plan.RUN_STAGES_S.values())] * plan.RUN_WINDOWS
    wall = plan.replay(durations, plan.RUN_IN_FLIGHT, plan.RUN_KILL_AT)
    assert abs(wall / plan.RUN_WALL_S - 1) <= plan.RUN_TOLERANCE
    assert plan.main(["--check", "--songs", "1000"]) == 0
    assert "replay of the measured run" in capsys.readouterr().out


def test_replay_counts_rounds_of_in_flight_windows():
    assert plan.replay([10.0] * 8, 4, pickup_s=0, poll_s=0) == pytest.approx(20.0)
    assert plan.replay([10.0] * 8, 4, kill_at=4, restart_s=5, pickup_s=0, poll_s=0) == pytest.approx(25.0)


def test_doubling_taggers_halves_the_wall_time_until_another_bound_takes_over():
    """Separators and in-flight windows to spare: 1 -> 2 -> 4 taggers halve the wall time (DES and
    closed form agree); beyond one explanation's reach and the in-flight windows, they stop helping."""
    work = plan.Work(windows_per_song=2, masks=256)
    base = plan.Cluster(taggers=1, separators=64, in_flight=8, t_sep=1.0)
    walls = {r: plan.simulate(replace(base, taggers=r), work, 300).wall_s for r in (1, 2, 4, 32, 64)}
    assert walls[1] / walls[2] == pytest.approx(2, rel=0.05)
    assert walls[2] / walls[4] == pytest.approx(2, rel=0.05)
    assert walls[32] / walls[64] < 1.05  # 8 in flight x 4 replicas each = 32: more taggers idle
    for r in (1, 2, 4):
        closed = min(plan.throughput_per_h(replace(base, taggers=r), work).values())
        assert plan.simulate(replace(base, taggers=r), work, 300).per_hour == pytest.approx(closed, rel=0.05)


def test_plan_bounds_and_storage():
    """The slowest resource sets the pace; stems stay, explanations only for the job TTL."""
    work = plan.Work(windows_per_song=2, masks=256)
    sep_bound = plan.plan(1000, work, plan.Cluster(taggers=8, separators=1, in_flight=64), explainers=16)
    assert sep_bound.bound == "separator"
    assert sep_bound.windows_per_h == pytest.approx(3600 / plan.T_SEP_S)
    p = plan.plan(100_000, work, plan.Cluster(taggers=2, separators=8, in_flight=16), explainers=4)
    assert p.bound == "tagger"
    assert p.wall_h == pytest.approx(200_000 * work.tagger_windows / (2 * plan.M_WINDOWS_S * 3600))
    stems = 200_000 * plan.STEMS_B
    assert stems < p.store_peak_b < stems + 200_000 * plan.SCAN_B + (p.windows_per_h + 16) * 4.5e6 + 2e9
