"""Faults and failures: dropouts, stalls, deadlines, infeasible rounds, reproducibility.

The tiny scenario (tests/helpers.py): greedy puts block 2 on A (compute 0-2 s, upload 2-2.5 s at
2 Mbit/s) and block 1 on B (compute 0-2 s, upload 2-2.25 s at 4 Mbit/s); C (1.5 GB) can only
hold block 1. B = 2 MHz, aggregation 0.1 s. Fault-free round latency: 2.6 s.
"""

import filecmp

import numpy as np
import pytest

from desim.engine.assembly import build_simulation
from desim.errors import InfeasibleError
from desim.io.outputs import write_results
from desim.io.scenario import load_scenario
from desim.scenario.model import FaultEvent, FaultsSpec, RunSpec
from desim.world.channel import SignalChannel
from desim.world.compute import SignalTimeline
from desim.world.piecewise import PiecewiseSignals
from tests.helpers import tiny_simulation

# after a loss at 2.25 s B alone takes block 2: 4 s of compute, then the whole 2 MHz band,
# rate 2e6 * log2(1 + 15e6 / 2e6) bit/s for 1 Mbit
B_TAKES_BLOCK_2_S = 4.0 + 1e6 / (2e6 * np.log2(1 + 15e6 / 2e6))


def test_scripted_dropout_mid_upload_is_reassigned_exactly():
    # A goes offline at 2.2 s, mid-upload. At 2.2 B is still uploading and C cannot hold block 2,
    # so the block waits for B to finish at 2.25 s, then B trains it from scratch.
    faults = FaultsSpec(events=(FaultEvent(device="A", time_s=2.2),))
    result = tiny_simulation(faults=faults).run()
    r = result.rounds_frame().iloc[0]
    assert r.latency_s == pytest.approx(2.25 + B_TAKES_BLOCK_2_S + 0.1, abs=1e-12)
    assert r.dropouts == 1 and r.reassigned_blocks == 1 and r.status == "ok"
    ev = result.fault_events_frame().iloc[0]
    assert (ev.device, ev.block, ev.kind) == ("A", 2, "outage")
    assert ev.time_s == pytest.approx(2.2) and ev.lost_s == pytest.approx(2.2)
    dev = result.device_rounds_frame()
    done = dev[dev.outcome == "done"].set_index("block")
    assert done.loc[2, "device"] == "B" and done.loc[1, "device"] == "B"
    assert done.loc[2, "compute_start_s"] == pytest.approx(2.25)
    assert sorted(done.index) == [1, 2]  # no block missing
    # A stays out in later rounds while its outage lasts
    result2 = tiny_simulation(faults=faults, rounds=2).run()
    second = result2.device_rounds_frame().query("round == 1")
    assert "A" not in set(second.device)


def test_zero_rate_period_stalls_the_upload_exactly():
    # A's link is dead on [2.1, 2.3): 0.2 Mbit by 2.1, stall, remaining 0.8 Mbit at 2 Mbit/s
    sig = PiecewiseSignals(
        np.array([0.0, 2.1, 2.3]),
        np.array([[3e6, 0.0, 3e6], [15e6] * 3, [15e6] * 3]),
        100.0,
        "hold",
    )
    result = tiny_simulation(channel=SignalChannel(sig)).run()
    assert result.rounds_frame().latency_s[0] == pytest.approx(2.7 + 0.1, abs=1e-12)
    assert result.fault_events_frame().empty


def test_upload_timeout_turns_a_stall_into_a_dropout():
    sig = PiecewiseSignals(
        np.array([0.0, 2.1]), np.array([[3e6, 0.0], [15e6] * 2, [15e6] * 2]), 100.0, "hold"
    )
    faults = FaultsSpec(upload_timeout_s=0.4)
    result = tiny_simulation(channel=SignalChannel(sig), faults=faults).run()
    ev = result.fault_events_frame().iloc[0]
    assert (ev.device, ev.kind) == ("A", "upload-timeout") and ev.time_s == pytest.approx(2.4)
    # B is idle since 2.25, so block 2 restarts on B at 2.4
    assert result.rounds_frame().latency_s[0] == pytest.approx(2.4 + B_TAKES_BLOCK_2_S + 0.1)


def test_deadline_policy_reassigns_the_straggler():
    # A (speed 0.2 at t >= 1) would compute until 1 + 1/0.2 = 6 s; the deadline at 3 s abandons it
    speed = PiecewiseSignals(
        np.array([0.0, 1.0]), np.array([[1.0, 0.2], [1.0, 1.0], [1.0, 1.0]]), 100.0, "hold"
    )
    timeline = SignalTimeline(speed, PiecewiseSignals.constant(np.ones(3)))
    policy = RunSpec(straggler_policy="deadline", deadline_s=3.0)
    result = tiny_simulation(compute=timeline, policy=policy).run()
    ev = result.fault_events_frame().iloc[0]
    assert (ev.device, ev.block, ev.kind) == ("A", 2, "deadline") and ev.lost_s == pytest.approx(3)
    assert result.rounds_frame().latency_s[0] == pytest.approx(3.0 + B_TAKES_BLOCK_2_S + 0.1)
    # without the deadline the straggler is waited for: 6 s compute + 0.5 s upload + 0.1
    waited = tiny_simulation(compute=timeline).run()
    assert waited.rounds_frame().latency_s[0] == pytest.approx(6.6)


def _only_a_until(t_back: float) -> SignalTimeline:
    avail = PiecewiseSignals(
        np.array([0.0, t_back]), np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]), 100.0, "hold"
    )
    return SignalTimeline(PiecewiseSignals.constant(np.ones(3)), avail)


def test_infeasible_round_error_policy_names_round_and_block():
    with pytest.raises(InfeasibleError, match=r"round 0: block 1 .*1 of 3 devices available"):
        tiny_simulation(compute=_only_a_until(2.5)).run()


def test_infeasible_round_skip_policy_records_and_continues():
    policy = RunSpec(on_infeasible="skip", retry_after_s=1.0)
    result = tiny_simulation(compute=_only_a_until(2.5), policy=policy, rounds=4).run()
    rounds = result.rounds_frame()
    assert rounds.status.tolist() == ["skipped", "skipped", "skipped", "ok"]
    assert rounds.start_s.tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0])
    assert rounds.reason[0].startswith("round 0: block 1")
    assert rounds.latency_s[3] == pytest.approx(2.6)


def test_availability_drop_mid_round_loses_the_work():
    # B goes offline at 1.0 while computing block 1; C (idle, fits block 1) takes it at 1.0:
    # 2 s compute, then 1 MHz (B's freed share): 1 Mbit at 4 Mbit/s = 0.25 s -> 3.25
    avail = PiecewiseSignals(
        np.array([0.0, 1.0]), np.array([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]]), 100.0, "hold"
    )
    timeline = SignalTimeline(PiecewiseSignals.constant(np.ones(3)), avail)
    result = tiny_simulation(compute=timeline).run()
    ev = result.fault_events_frame().iloc[0]
    assert (ev.device, ev.block, ev.kind, ev.time_s) == ("B", 1, "offline", pytest.approx(1.0))
    assert result.rounds_frame().latency_s[0] == pytest.approx(3.25 + 0.1, abs=1e-12)


def _scenario(*overrides):
    return load_scenario(None, ["run.rounds=200", 'allocator.name="crunch"', *overrides])


def test_ten_percent_dropouts_every_round_trains_all_blocks():
    result = build_simulation(_scenario("faults.dropout_rate=0.1")).run()
    rounds = result.rounds_frame()
    assert (rounds.status == "ok").all() and rounds.dropouts.sum() > 100
    dev = result.device_rounds_frame()
    done = dev[dev.outcome == "done"]
    per_round = done.groupby("round").block.apply(lambda b: sorted(b.tolist()))
    assert len(per_round) == 200
    assert all(blocks == list(range(1, 13)) for blocks in per_round)
    assert len(result.fault_events_frame()) == rounds.dropouts.sum()


def test_fault_realisation_is_paired_across_allocators():
    runs = {
        a: build_simulation(_scenario("faults.dropout_rate=0.2", f'allocator.name="{a}"'))
        for a in ("crunch", "greedy")
    }
    draws = {a: [sim.faults.draw(20) for _ in range(5)] for a, sim in runs.items()}
    for x, y in zip(draws["crunch"], draws["greedy"], strict=True):
        np.testing.assert_array_equal(x.drops, y.drops)
        np.testing.assert_array_equal(x.fraction, y.fraction)


def test_same_seed_gives_byte_identical_files(tmp_path):
    for name in ("a", "b"):
        res = build_simulation(_scenario("faults.dropout_rate=0.1", "run.rounds=30")).run()
        write_results(res, tmp_path / name)
    files = [
        "rounds.parquet",
        "rounds.csv",
        "device_rounds.parquet",
        "device_rounds.csv",
        "fault_events.parquet",
        "fault_events.csv",
        "run.json",
    ]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert mismatch == [] and errors == [] and sorted(match) == sorted(files)


def test_unknown_fault_device_is_named():
    from desim.errors import ScenarioError

    with pytest.raises(ScenarioError, match=r"faults.events.0.device: unknown device 'zz'"):
        build_simulation(_scenario('faults.events=[{device="zz", time_s=1.0}]'))


@pytest.mark.parametrize("allocator", ["crunch-multi", "single-device"])
def test_lost_sets_of_blocks_are_replanned_as_sets(allocator):
    # four devices, twelve blocks: every placement is grouped, and so is every re-plan
    sim = build_simulation(load_scenario(None, [
        "run.rounds=20", f'allocator.name="{allocator}"', "devices.population.count=4",
        "faults.dropout_rate=0.5", 'run.on_infeasible="skip"']))
    result = sim.run()
    rounds, dev = result.rounds_frame(), result.device_rounds_frame()
    replanned = rounds[(rounds.status == "ok") & (rounds.reassigned_blocks > 0)]
    assert len(replanned) >= 2
    done = dev[dev.outcome == "done"]
    for r in rounds[rounds.status == "ok"]["round"]:
        assert sorted(done[done["round"] == r].block) == list(range(1, 13))  # each block once
    # a re-plan put several lost blocks on one device, within that device's memory
    later = done[done["round"].isin(replanned["round"])]
    assert later.groupby(["round", "device", "compute_start_s"]).block.size().max() > 1
    assert (done.memory_bytes <= done.memory_budget_bytes).all()


def test_a_device_with_two_tasks_in_a_round_is_charged_for_both():
    sim = build_simulation(_scenario("faults.dropout_rate=0.2", "run.rounds=30"))
    result = sim.run()
    rounds, dev = result.rounds_frame(), result.device_rounds_frame()
    tasks = dev.groupby(["round", "device"]).task.nunique()
    assert (tasks > 1).sum() >= 5  # devices given lost blocks after their own
    ok = rounds[rounds.status == "ok"]
    # every block trained once on one mini-batch, and its gradient uploaded whole
    assert (ok.samples == 12 * sim.workload.batch_size).all()
    assert (ok.upload_bits >= sim.context(0, 0.0).upload_bits.sum()).all()
    assert (dev.groupby("round").flops.sum()[ok["round"]].to_numpy() == ok.flops).all()
    # each task's compute is charged at the class's power; idle once per device and round
    power = result.device_power.loc[dev.device, "compute_w"].to_numpy()
    np.testing.assert_allclose(dev.compute_energy_j, power * dev.compute_busy_s, rtol=1e-12)
    assert (dev.groupby(["round", "device"]).idle_energy_j.apply(lambda e: (e > 0).sum())
            <= 1).all()
