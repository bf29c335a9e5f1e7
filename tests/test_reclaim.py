"""The work-conserving uplink (``server.uplink = "reclaim"``): hand computations and properties.

The rules (desim/engine/uplink.py): whenever anyone uploads, the uploaders share the whole band
``B``; ``proportional`` splits it by the planned shares, ``minmax`` equalises the finish times
on the remaining bits. The fixed uplink stays byte-identical (tests/test_golden.py).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from desim.engine.assembly import build_simulation
from desim.engine.realise import World, realise
from desim.engine.uplink import SharedUplink
from desim.io.scenario import load_scenario
from desim.plan import Phase, PlanRows, RoundPlan
from desim.scenario.model import FaultEvent, FaultsSpec, ServerSpec
from desim.world.channel import SignalChannel
from desim.world.compute import SignalTimeline
from desim.world.piecewise import PiecewiseSignals
from tests.helpers import tiny_simulation

SMALL = ["run.rounds=3", "devices.population.count=14"]
RECLAIM = 'server.uplink="reclaim"'


def rate(bw: float, a: float) -> float:
    """The Shannon rate ``B log2(1 + a/B)`` in bit/s."""
    return bw * np.log2(1.0 + a / bw)


def world_of(snr_hz, speed=None, rule="proportional", total_hz=2e6) -> World:
    """Constant channel and speed (``None``: 1), sharing ``total_hz`` by ``rule``."""
    snr = np.asarray(snr_hz, dtype=float)
    ones = np.ones(snr.size)
    compute = SignalTimeline(PiecewiseSignals.constant(ones if speed is None else speed),
                             PiecewiseSignals.constant(ones))
    return World(compute, SignalChannel(PiecewiseSignals.constant(snr)),
                 tuple(f"d{k}" for k in range(snr.size)), SharedUplink(total_hz, rule))


def deft_plan(shares_hz, compute_s, bits) -> RoundPlan:
    """A DEFT-shaped plan: participant ``k`` is device ``k``, one block each."""
    P = len(shares_hz)
    nan = np.full(P, np.nan)
    rows = PlanRows(np.arange(P), np.arange(1, P + 1), np.asarray(bits, float), nan, nan,
                    nan, nan, nan, one_per_participant=True)
    return RoundPlan(np.arange(P), np.asarray(shares_hz, float),
                     ((Phase("compute", np.asarray(compute_s, float)),
                       Phase("up", np.asarray(bits, float))),), (0.0,), rows, float("nan"))


def held_at(steps, t_s: float) -> np.ndarray:
    """Each participant's bandwidth at ``t_s`` from a realisation's steps."""
    out = np.zeros(int(steps.participant.max()) + 1)
    for p, t, b in zip(steps.participant, steps.time_s, steps.bandwidth_hz):
        if t <= t_s:
            out[p] = b
    return out


# --- hand computations ------------------------------------------------------------------------


def test_two_devices_starting_together_match_the_hand_computation():
    B1, B2, a1, a2, D1, D2 = 0.8e6, 1.2e6, 3e6, 15e6, 1e6, 4e6
    real = realise(deft_plan([B1, B2], [0.0, 0.0], [D1, D2]), 0.0, world_of([a1, a2]), 0)
    t1 = D1 / rate(B1, a1)
    assert t1 < D2 / rate(B2, a2)  # device 0 ends first: the rest of the band goes to device 1
    t2 = t1 + (D2 - rate(B2, a2) * t1) / rate(B1 + B2, a2)
    assert real.up_last == pytest.approx([t1, t2], rel=1e-12)
    assert real.up_bits.tolist() == [D1, D2]
    assert real.up_last[1] < D2 / rate(B2, a2)  # earlier than on the fixed uplink


def test_two_devices_with_different_compute_ends_match_the_hand_computation():
    B, B1, B2, a1, a2, D1, D2 = 2e6, 0.8e6, 1.2e6, 3e6, 15e6, 3e6, 6e6
    c1, c2 = 0.5, 1.0  # device 0 uploads alone at the whole band until device 1 starts
    real = realise(deft_plan([B1, B2], [c1, c2], [D1, D2]), 0.0, world_of([a1, a2]), 0)
    left1 = D1 - rate(B, a1) * (c2 - c1)
    assert left1 > 0
    t1 = c2 + left1 / rate(B1, a1)  # then at the planned shares, B1 + B2 = B
    assert t1 - c2 < D2 / rate(B2, a2)  # device 0 still ends first
    t2 = t1 + (D2 - rate(B2, a2) * (t1 - c2)) / rate(B, a2)
    assert real.compute_last.tolist() == [c1, c2]
    assert real.up_last == pytest.approx([t1, t2], rel=1e-12)
    steps = real.bandwidth_steps
    assert held_at(steps, 0.7) == pytest.approx([B, 0.0])
    assert held_at(steps, 1.5) == pytest.approx([B1, B2])
    assert held_at(steps, (t1 + t2) / 2) == pytest.approx([0.0, B])
    assert held_at(steps, t2 + 1) == pytest.approx([0.0, 0.0])


def test_minmax_equalises_the_finish_of_uploads_that_start_together():
    a, bits = [3e6, 15e6, 8e6], [1e6, 4e6, 2.5e6]
    real = realise(deft_plan([1e6, 0.5e6, 0.5e6], [1.0, 1.0, 1.0], bits), 0.0,
                   world_of(a, rule="minmax"), 0)
    ends = real.up_last
    assert ends.max() - ends.min() < 1e-9 * ends.max()
    shares = held_at(real.bandwidth_steps, 1.5)
    assert shares.sum() == pytest.approx(2e6, rel=1e-12)
    # each finishes in T at its constant share: the shares are the min-max split itself
    T = ends[0] - 1.0
    assert [rate(b, ak) * T for b, ak in zip(shares, a)] == pytest.approx(bits, rel=1e-9)


def test_a_lost_device_hands_its_share_to_the_others_at_the_loss():
    B1, B2, a1, a2, D1, D2 = 1e6, 1e6, 15e6, 15e6, 4e6, 4e6
    fail = np.array([0.25, np.inf])
    real = realise(deft_plan([B1, B2], [0.0, 0.0], [D1, D2]), 0.0, world_of([a1, a2]), 0,
                   fail, np.array(["dropout", ""], dtype=object))
    assert real.lost.tolist() == [True, False]
    assert real.up_bits.tolist() == [0.0, D2]  # a cut upload delivers nothing
    assert real.up_busy_s[0] == pytest.approx(0.25)
    t2 = 0.25 + (D2 - rate(B2, a2) * 0.25) / rate(B1 + B2, a2)
    assert real.up_last[1] == pytest.approx(t2, rel=1e-12)
    assert held_at(real.bandwidth_steps, 0.25) == pytest.approx([0.0, B1 + B2])


# --- properties on the engine ------------------------------------------------------------------


def run_tables(*overrides: str) -> dict[str, pd.DataFrame]:
    return build_simulation(load_scenario(None, list(overrides))).run().tables()


def assert_band_is_used_whole(tables: dict[str, pd.DataFrame], total_hz: float) -> int:
    """Whenever a row of ``device_rounds`` is uploading, the steps sum to ``B``; returns checks."""
    steps, dev = tables["bandwidth_steps"], tables["device_rounds"]
    checked = 0
    for r, rows in dev.groupby("round"):
        st = steps[steps["round"] == r]
        # every step time, and the midpoints between them
        times = np.unique(st["time_s"].to_numpy())
        samples = np.concatenate([times, (times[1:] + times[:-1]) / 2])
        for t in samples:
            last = st[st["time_s"] <= t].groupby("device")["bandwidth_hz"].last()
            busy = ((rows["upload_start_s"] <= t) & (t < rows["upload_end_s"])
                    & (rows["upload_bits"] > 0) & (rows["outcome"] == "done"))
            in_use = float(last.sum())
            if busy.any():
                assert in_use == pytest.approx(total_hz, rel=1e-9), (r, t)
                checked += 1
            assert in_use <= total_hz * (1 + 1e-9)
    return checked


@pytest.mark.parametrize("rule", ["proportional", "minmax"])
@pytest.mark.parametrize("allocator", ["crunch", "jbba"])
def test_the_band_in_use_is_b_whenever_anyone_uploads(allocator, rule):
    tables = run_tables(*SMALL, f'allocator.name="{allocator}"', RECLAIM,
                        f'server.reclaim="{rule}"')
    assert assert_band_is_used_whole(tables, 20e6) > 3 * 12
    # every upload's share steps start at its upload start and end (0 Hz) at its end
    dev, steps = tables["device_rounds"], tables["bandwidth_steps"]
    # the engine's clock, played event by event, ends each round at its last upload end
    last = dev.groupby("round")["upload_end_s"].max().to_numpy() + 0.01
    assert tables["rounds"]["end_s"].to_numpy() == pytest.approx(last, rel=1e-14)
    for row in dev.itertuples():
        mine = steps[(steps["round"] == row.round) & (steps["device"] == row.device)]
        assert mine["time_s"].iloc[0] == row.upload_start_s
        assert mine["time_s"].iloc[-1] == row.upload_end_s
        assert mine["bandwidth_hz"].iloc[-1] == 0.0


@pytest.mark.parametrize("allocator", ["crunch", "jbba"])
def test_proportional_reclaim_never_ends_an_upload_later_than_fixed(allocator):
    sim = build_simulation(load_scenario(None, ["devices.population.count=16", "run.seed=3",
                                                f'allocator.name="{allocator}"', RECLAIM]))
    shared = sim.world
    shared = World(shared.compute, shared.channel, shared.device_names,
                   SharedUplink(sim.server.total_bandwidth_hz))
    state = sim.planner.new_state(len(sim.devices), np.random.default_rng(0))
    t0, earlier = 0.0, 0
    for r in range(6):  # the default channel and compute load vary within a round
        plan = sim.planner.plan(sim.context(r, t0), state, np.random.default_rng(r))
        fixed = realise(plan, t0, sim.world, r)
        reclaim = realise(plan, t0, shared, r)
        assert np.all(reclaim.up_last <= fixed.up_last)
        assert np.array_equal(reclaim.compute_last, fixed.compute_last)
        earlier += int(np.sum(reclaim.up_last < fixed.up_last))
        t0 = float(fixed.end_s.max()) + 0.01
    assert earlier > 6 * 10  # almost every upload but the last of a round gains


def test_a_scripted_outage_hands_the_share_on_and_the_block_is_replanned():
    base = [*SMALL, 'allocator.name="crunch"', RECLAIM, "run.rounds=1"]
    steps = run_tables(*base)["bandwidth_steps"]
    # a device sharing the band with another: lose it halfway through that stretch
    shared = steps[(steps["bandwidth_hz"] > 0) & (steps["bandwidth_hz"] < 20e6)].iloc[0]
    mine = steps[steps["device"] == shared.device]
    after = mine[mine["time_s"] > shared.time_s]["time_s"].iloc[0]
    t_loss = float((shared.time_s + after) / 2)
    event = f'faults.events=[{{device="{shared.device}", time_s={t_loss!r}}}]'
    tables = run_tables(*base, event)
    assert tables["fault_events"][["device", "kind", "time_s"]].values.tolist() == [
        [shared.device, "outage", t_loss]]
    steps = tables["bandwidth_steps"]
    at_loss = steps[steps["time_s"] == t_loss]
    assert at_loss.loc[at_loss["device"] == shared.device, "bandwidth_hz"].tolist() == [0.0]
    others = steps[(steps["time_s"] <= t_loss) & (steps["device"] != shared.device)]
    in_use = others.groupby("device")["bandwidth_hz"].last().sum()
    assert in_use == pytest.approx(20e6, rel=1e-9)  # the others hold the whole band at once
    rounds = tables["rounds"]
    assert rounds["reassigned_blocks"].tolist() == [1]
    assert assert_band_is_used_whole(tables, 20e6) > 0


def test_a_replanned_block_shares_the_band_with_the_upload_still_running():
    # tests/helpers.py: A trains block 2, B block 1 (2 s of compute each, 1 Mbit, 1 MHz each of
    # B = 2 MHz); B is lost at 2.1 s mid-upload and block 1 goes to C (2 s more compute)
    a_A, a_C, D = 3e5, 15e6, 1e6
    sim = tiny_simulation(
        channel=SignalChannel(PiecewiseSignals.constant(np.array([a_A, a_C, a_C]))),
        faults=FaultsSpec(events=(FaultEvent(device="B", time_s=2.1),)))
    sim = dataclasses.replace(sim, server=ServerSpec(total_bandwidth_hz=2e6, aggregation_s=0.1,
                                                     uplink="reclaim"))
    tables = sim.run().tables()
    dev = tables["device_rounds"].set_index("device")
    assert dev.loc["B", "outcome"] == "outage" and dev.loc["C", "block"] == 1
    c_end = 4.1 + D / rate(1e6, a_C)  # C shares the band with A from its compute end
    # A: alone from B's loss, shares with C, then alone again
    left = D - rate(1e6, a_A) * 0.1 - rate(2e6, a_A) * 2.0 - rate(1e6, a_A) * (c_end - 4.1)
    a_end = c_end + left / rate(2e6, a_A)
    assert dev.loc["C", "upload_end_s"] == pytest.approx(c_end, rel=1e-12)
    assert dev.loc["A", "upload_end_s"] == pytest.approx(a_end, rel=1e-12)
    assert a_end < 2.0 + D / rate(1e6, a_A)  # earlier than at A's fixed share
    assert tables["rounds"]["latency_s"][0] == pytest.approx(a_end + 0.1, rel=1e-12)
    steps = tables["bandwidth_steps"]
    assert steps[steps["device"] == "A"][["time_s", "bandwidth_hz"]].values.tolist() == [
        [2.0, 1e6], [2.1, 2e6], [4.1, 1e6], [pytest.approx(c_end), 2e6],
        [pytest.approx(a_end), 0.0]]


def test_faults_and_a_deadline_with_replanning_keep_the_band_whole():
    tables = run_tables("run.rounds=4", 'allocator.name="crunch"', "faults.dropout_rate=0.1",
                        'run.straggler_policy="deadline"', "run.deadline_s=2.2",
                        "faults.upload_timeout_s=2.0", 'run.on_infeasible="skip"', RECLAIM)
    assert len(tables["fault_events"]) > 0
    assert assert_band_is_used_whole(tables, 20e6) > 0


@pytest.mark.parametrize("scheme", ['scheme.name="fl-lora"', 'scheme.name="dlora"'])
def test_schemes_run_on_the_shared_band(scheme):
    tables = run_tables("run.rounds=2", "devices.population.count=14", scheme, RECLAIM)
    steps = tables["bandwidth_steps"]
    assert len(steps) > 0 and (tables["rounds"]["status"] == "ok").all()
    for _, st in steps.groupby("round"):
        times = np.unique(st["time_s"].to_numpy())
        for t in times:
            last = st[st["time_s"] <= t].groupby("device")["bandwidth_hz"].last()
            assert last.sum() == pytest.approx(20e6, rel=1e-9) or last.sum() == 0.0


# --- fixed stays as it was; records and trace ------------------------------------------------


def test_fixed_is_the_default_and_writes_no_bandwidth_steps():
    default = run_tables(*SMALL, 'allocator.name="crunch"')
    fixed = run_tables(*SMALL, 'allocator.name="crunch"', 'server.uplink="fixed"')
    assert "bandwidth_steps" not in fixed
    for name in ("rounds", "device_rounds", "fault_events"):
        assert default[name].to_csv() == fixed[name].to_csv()
    reclaim = run_tables(*SMALL, 'allocator.name="crunch"', RECLAIM)
    assert "bandwidth_steps" in reclaim
    # round 0 plans the same at the same start: the shared band only makes it faster
    first = reclaim["device_rounds"][reclaim["device_rounds"]["round"] == 0]
    assert first["bandwidth_hz"].tolist() == fixed["device_rounds"].query(
        "round == 0")["bandwidth_hz"].tolist()  # the planned shares are still recorded
    assert reclaim["rounds"]["latency_s"][0] < fixed["rounds"]["latency_s"][0]


def test_run_json_and_the_trace_record_the_uplink(tmp_path):
    from desim.io.outputs import write_chrome_trace, write_results

    result = build_simulation(load_scenario(None, [*SMALL, RECLAIM,
                                                   'server.reclaim="minmax"'])).run()
    assert result.metadata["uplink"] == {"mode": "reclaim", "reclaim": "minmax"}
    write_results(result, tmp_path / "r")
    assert (tmp_path / "r" / "bandwidth_steps.csv").exists()
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["uplink"]["mode"] == "reclaim"
    events = json.loads(write_chrome_trace(result, tmp_path / "t.json").read_text())
    counters = [e for e in events["traceEvents"] if e["ph"] == "C"]
    steps = result.bandwidth_steps_frame()
    assert len(counters) == len(steps)
    first = steps.iloc[0]
    match = [e for e in counters if e["name"] == f"bandwidth {first.device}"]
    assert match[0]["ts"] == pytest.approx(first.time_s * 1e6)
    assert match[0]["args"]["hz"] == first.bandwidth_hz
