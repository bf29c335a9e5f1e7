"""Schemes: tiny scenarios whose per-round bits, compute and energy are stated exactly."""

from __future__ import annotations

import numpy as np
import pytest

from desim.allocators import make_allocator
from desim.costs.analytic import analytic_flops as training_flops
from desim.costs.base import Workload
from desim.costs.energy import DEFAULT_POWER
from desim.costs.table import TableCostModel
from desim.engine.assembly import build_simulation
from desim.engine.simulation import Simulation
from desim.errors import ScenarioError
from desim.io.scenario import load_scenario
from desim.scenario.devices import DeviceSpec
from desim.scenario.model import HardwarePower, ServerSpec
from desim.schemes.base import Scheme
from desim.schemes.dlora import DLoRAScheme
from desim.schemes.fl_lora import FedLoRAScheme, fedavg
from desim.schemes.kill_revive import KillRevive
from desim.world.channel import SignalChannel
from desim.world.compute import SignalTimeline
from desim.world.piecewise import PiecewiseSignals
from tests.helpers import TINY
from tests.test_schemes_methods import STEP

# power of the tiny devices: compute 5 W, transmit 2.5 W, receive 1.3 W, idle 1 W
POWER = {"cpu-reference": HardwarePower(compute_w=5.0, transmit_w=2.5, receive_w=1.3,
                                        idle_w=1.0, peak_flops_per_s=1e6)}
# TINY (h=32, f=64, L=2) at b=1, s=8: counted FLOPs of training block 1 and block 2 (the
# full step), derived in tests/test_schemes_methods.py
T = 1 * 8 * 32 * 32  # one activation tensor b·s·h at 32 bits


def tiny(scheme: Scheme, rounds: int = 1) -> Simulation:
    """Two devices A (speed 2) and B (speed 1), two blocks of 2 s and 4 s, 1 Mbit each.

    B = 2 MHz shared equally (1 MHz each); a = 3e6 Hz, so each rate is 1e6·log2(4) = 2 Mbit/s.
    The server's hardware class is priced by the same table (full step 4 s).
    """
    devices = (
        DeviceSpec(name="A", speed_factor=2.0, memory_bytes=3e9),
        DeviceSpec(name="B", speed_factor=1.0, memory_bytes=3e9),
    )
    cost = TableCostModel(np.array([2.0, 4.0]), np.array([1e9, 2e9]), np.array([1e6, 1e6]))
    return Simulation(
        devices=devices,
        workload=Workload(TINY, "lora", 1, 8, 2),
        server=ServerSpec(total_bandwidth_hz=2e6, aggregation_s=0.1),
        cost_model=cost,
        channel=SignalChannel(PiecewiseSignals.constant(np.array([3e6, 3e6]))),
        compute=SignalTimeline.constant(2),
        allocator=make_allocator("greedy"),
        rounds=rounds,
        scheme=scheme,
        power=POWER,
    )


def test_training_flops_of_the_tiny_model():
    assert training_flops(Workload(TINY, "lora", 1, 8, 2)).tolist() == STEP


def test_fl_lora_round_bits_compute_and_energy_exactly():
    # E = 2 full steps: A 2·4/2 = 4 s, B 2·4 = 8 s; upload 2 Mbit (both blocks) at 2 Mbit/s:
    # 1 s; barrier at 9 s + 0.1 s FedAvg; broadcast 2 Mbit down (reciprocal): 1 s -> 10.1 s
    result = tiny(FedLoRAScheme(local_steps=2), rounds=2).run()
    rounds = result.rounds_frame()
    assert rounds.latency_s.tolist() == pytest.approx([10.1, 10.1], abs=1e-9)
    assert rounds.planned_latency_s.tolist() == pytest.approx([10.1, 10.1], abs=1e-9)
    dev = result.device_rounds_frame()
    r0 = dev[dev["round"] == 0].set_index("device")
    assert r0.upload_bits.tolist() == [2e6, 2e6]
    assert r0.download_bits.tolist() == [2e6, 2e6]
    assert r0.compute_busy_s.tolist() == pytest.approx([4.0, 8.0])
    assert r0.upload_end_s.tolist() == pytest.approx([5.0, 9.0])
    assert r0.download_start_s.tolist() == pytest.approx([9.1, 9.1])
    assert r0.download_end_s.tolist() == pytest.approx([10.1, 10.1])
    assert r0.memory_bytes.tolist() == [2e9, 2e9]  # the deepest block's peak
    assert r0.flops.tolist() == [2 * STEP[1]] * 2
    assert r0.samples.tolist() == [2.0, 2.0] and r0.tokens.tolist() == [16.0, 16.0]
    # energy: A 4·5 + 1·2.5 + 1·1.3 + (10.1 − 6)·1 = 27.9 J; B 40 + 2.5 + 1.3 + 0.1 = 43.9 J
    assert r0.energy_j.tolist() == pytest.approx([27.9, 43.9])
    assert rounds.energy_j.tolist() == pytest.approx([71.8, 71.8])
    assert rounds.tokens_per_s_per_w.iloc[0] == pytest.approx(32 / 71.8)
    assert r0.granularity.tolist() == pytest.approx([2.0, 4.0])
    assert rounds.granularity.iloc[0] == pytest.approx(12.0 / 4.0)
    # MFU: FLOPs / (compute s × peak·σ): A's peak is 2e6, B's 1e6
    flops = 2 * STEP[1]
    assert r0.mfu.tolist() == pytest.approx([flops / (4 * 2e6), flops / (8 * 1e6)])
    assert rounds.mfu.iloc[0] == pytest.approx(2 * flops / (10.1 * 3e6))


def test_fl_lora_fixed_downlink_rate_and_fastest_selection():
    result = tiny(FedLoRAScheme(downlink_rate_bps=4e6, selection="fastest", clients=1)).run()
    dev = result.device_rounds_frame()
    # A alone (the fastest), with the whole band: 4/2 = 2 s; rate 2e6·log2(2.5) bit/s
    assert dev.device.tolist() == ["A"]
    assert dev.bandwidth_hz.tolist() == [2e6]
    up = 2e6 / (2e6 * np.log2(2.5))
    assert dev.upload_end_s.iloc[0] == pytest.approx(2.0 + up)
    # the broadcast at the fixed 4 Mbit/s takes 0.5 s after aggregation
    assert result.rounds_frame().latency_s.iloc[0] == pytest.approx(2.0 + up + 0.1 + 0.5)


def test_fl_lora_random_selection_is_seeded():
    def clients(seed: int) -> list[list[str]]:
        sim = tiny(FedLoRAScheme(selection="random", clients=1), rounds=6)
        sim.seed = seed
        dev = sim.run().device_rounds_frame()
        return [g.device.tolist() for _, g in dev.groupby("round")]

    picks = clients(3)
    assert picks == clients(3)
    assert all(len(p) == 1 for p in picks)


def test_fedavg_bookkeeping():
    updates = np.array([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]])
    assert fedavg(updates, np.array([1.0, 3.0])).tolist() == [2.5, 5.0, 7.5]
    assert fedavg(updates, np.array([2.0, 2.0])).tolist() == [2.0, 4.0, 6.0]
    result = tiny(FedLoRAScheme(local_steps=3)).run()
    diag = result.metadata["scheme_diagnostics"][0]
    assert diag["clients"] == [0, 1]
    assert diag["fedavg_weights"] == [0.5, 0.5]
    assert diag["aggregated_values"] == 2e6 / 32  # both blocks' LoRA values, 32-bit each
    # every client uploads every block's values once per round; the server gets 2 × 2 Mbit
    assert result.rounds_frame().upload_bits.iloc[0] == 4e6


def test_dlora_split_round_exactly():
    # L = 2 layers, 4 modules, all active (no Kill-and-Revive). Per step and device: down =
    # up = (4 modules + 2 layers)·T bits; 4 server layer phases of 4 s/10/4 = 0.1 s; the
    # device runs 4 × 3·4bshr FLOPs at its sustained rate (full step FLOPs ÷ its step time)
    result = tiny(DLoRAScheme(kill_revive=None)).run()
    dev = result.device_rounds_frame().set_index("device")
    assert dev.upload_bits.tolist() == [6 * T, 6 * T]
    assert dev.download_bits.tolist() == [6 * T, 6 * T]
    module_flops = 3 * 4 * 1 * 8 * 32 * 8
    assert dev.flops.tolist() == [4 * module_flops] * 2
    step = STEP[1]
    comp = [4 * module_flops / (step / 2.0), 4 * module_flops / (step / 4.0)]
    assert dev.compute_busy_s.tolist() == pytest.approx(comp)
    assert dev.upload_busy_s.tolist() == pytest.approx([6 * T / 2e6] * 2)
    assert dev.download_busy_s.tolist() == pytest.approx([6 * T / 2e6] * 2)
    # memory: 4 modules × 2·h·r values × 16 B plus the two layer inputs (bytes)
    assert dev.memory_bytes.tolist() == [16.0 * 4 * 2 * 32 * 8 + 2 * T / 8] * 2
    latency = 0.4 + comp[1] + 12 * T / 2e6 + 0.1
    assert result.rounds_frame().latency_s.iloc[0] == pytest.approx(latency)


def test_dlora_kill_and_revive_changes_bits_on_schedule():
    # scores per round (modules: layer 1 q, v, layer 2 q, v); threshold 1, patience 1,
    # revive every 3 rounds. Round 0 trains all 4, then 3 are killed; round 1 trains module 0
    # only (layer 1: 1 module, 1 layer -> 2T); its low score cannot kill the last module;
    # round 3 revives all.
    scores = ((2.0, 0.5, 0.5, 0.5), (0.1, 0.1, 0.1, 0.1), (0.1, 0.1, 0.1, 0.1),
              (2.0, 2.0, 2.0, 2.0))
    kr = KillRevive(threshold=1.0, patience=1, revive_period=3)
    result = tiny(DLoRAScheme(kill_revive=kr, score="trace", scores=scores), rounds=5).run()
    dev = result.device_rounds_frame()
    per_round = dev.groupby("round").upload_bits.first().tolist()
    assert per_round == [6 * T, 2 * T, 2 * T, 6 * T, 6 * T]
    active = [d["active_modules"] for d in result.metadata["scheme_diagnostics"]]
    assert active == [[4.0, 4.0], [1.0, 1.0], [1.0, 1.0], [4.0, 4.0], [4.0, 4.0]]


def test_kill_and_revive_never_deactivates_every_module():
    kr = KillRevive(threshold=1.0, patience=2, revive_period=5, min_active=2)
    state = kr.new_state(3, 6)
    rng = np.random.default_rng(0)
    counts = []
    for r in range(12):
        active = kr.active_for(state, r).copy()
        counts.append(active.sum(axis=1).tolist())
        kr.observe(state, np.arange(3), rng.uniform(0.0, 0.9, (3, 6)))  # always below
    # all active until two low rounds pass, then the floor of 2; revived at rounds 5 and 10
    assert counts == [[6] * 3, [6] * 3, [2] * 3, [2] * 3, [2] * 3, [6] * 3, [6] * 3,
                      [2] * 3, [2] * 3, [2] * 3, [6] * 3, [6] * 3]


def test_kill_and_revive_spares_the_best_scoring_module():
    kr = KillRevive(threshold=1.0, patience=1, revive_period=100)
    state = kr.new_state(1, 3)
    kr.observe(state, np.array([0]), np.array([[0.2, 0.7, 0.1]]))
    assert state.active.tolist() == [[False, True, False]]


def test_energy_sums_over_devices_and_phases():
    result = tiny(FedLoRAScheme(local_steps=1), rounds=3).run()
    dev = result.device_rounds_frame()
    parts = dev[["compute_energy_j", "upload_energy_j", "download_energy_j", "idle_energy_j"]]
    assert dev.energy_j.to_numpy() == pytest.approx(parts.sum(axis=1).to_numpy())
    rounds = result.rounds_frame()
    assert rounds.energy_j.to_numpy() == pytest.approx(
        dev.groupby("round").energy_j.sum().to_numpy()
    )
    # each device is busy or idle for the whole round: time-weighted watts add up
    span = rounds.latency_s.to_numpy()[dev["round"].to_numpy()]
    busy = dev.compute_busy_s + dev.upload_busy_s + dev.download_busy_s
    assert (busy <= span + 1e-12).all()
    assert dev.idle_energy_j.to_numpy() == pytest.approx((span - busy).to_numpy() * 1.0)


def test_deft_rows_carry_flops_and_energy_of_each_block():
    from tests.helpers import tiny_simulation

    sim = tiny_simulation()
    sim.power = POWER
    result = sim.run()
    dev = result.device_rounds_frame().set_index("block")
    assert dev.flops.tolist() == STEP
    assert dev.download_bits.tolist() == [0.0, 0.0]
    # hand computation of tests/test_engine.py: B trains block 1 (2 s, 0.25 s upload),
    # A block 2 (2 s, 0.5 s upload); round 2.6 s
    assert dev.energy_j.tolist() == pytest.approx(
        [2 * 5 + 0.25 * 2.5 + (2.6 - 2.25), 2 * 5 + 0.5 * 2.5 + (2.6 - 2.5)]
    )


def test_offload_scheme_runs_the_offload_allocator():
    sim = build_simulation(
        load_scenario(None, ['scheme.name="offload"', "run.rounds=1", 'allocator.name="greedy"'])
    )
    assert sim.planner.allocator.registry_name == "offload"  # the scenario's is unused
    dev = sim.run().device_rounds_frame()
    assert dev.upload_bits.tolist() == [8 * 128 * 32.0] * 12  # one mini-batch of token ids
    assert dev.flops.tolist() == [0.0] * 12
    assert dev.memory_bytes.tolist() == [0.0] * 12


def test_schemes_are_registered_with_their_own_parameters():
    from desim.schemes import SCHEMES

    assert sorted(SCHEMES) == ["deft", "dlora", "fl-lora", "offload"]
    assert "kr_threshold" in SCHEMES["dlora"].params.model_fields
    assert "kr_threshold" not in SCHEMES["fl-lora"].params.model_fields
    with pytest.raises(ScenarioError, match=r"scheme.name: unknown scheme 'fedavg'; known: "
                                            r"deft, dlora, fl-lora, offload"):
        load_scenario(None, ['scheme.name="fedavg"'])
    with pytest.raises(ScenarioError, match=r"scheme.kr_treshold: unknown parameter of 'dlora'"):
        load_scenario(None, ['scheme.name="dlora"', "scheme.kr_treshold=2.0"])
    with pytest.raises(ScenarioError, match=r"scheme.kr_patience: Input should be greater"):
        load_scenario(None, ['scheme.name="dlora"', "scheme.kr_patience=0"])


def test_a_key_of_another_scheme_is_ignored_with_a_warning():
    from desim.errors import DesimWarning

    with pytest.warns(DesimWarning, match=r"scheme.kr_threshold is a parameter of 'dlora', "
                                          r"not of 'fl-lora': ignored"):
        sc = load_scenario(None, ['scheme.name="fl-lora"', "scheme.kr_threshold=2.0",
                                  "run.rounds=1"])
    build_simulation(sc).run()


def test_a_sweep_that_varies_the_scheme_sets_its_keys_without_a_warning(tmp_path):
    """A spec gridding scheme.name over deft and dlora sets DLoRA's keys on purpose; a key of
    a scheme the sweep never names still warns."""
    import warnings

    from desim.errors import DesimWarning
    from desim.experiments.sweep_spec import iter_runs, load_sweep_spec

    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nbase = "default"\nseeds = [0]\n[set]\n'
                    '"scheme.kr_threshold" = 2.0\n'
                    '[grid]\n"scheme.name" = ["deft", "dlora"]\n'
                    '[[allocators]]\nname = "greedy"\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error", DesimWarning)
        assert len(list(iter_runs(*load_sweep_spec(spec)))) == 2
    spec.write_text(spec.read_text().replace('["deft", "dlora"]', '["deft", "fl-lora"]'))
    with pytest.warns(DesimWarning, match=r"scheme.kr_threshold is a parameter of 'dlora'"):
        list(iter_runs(*load_sweep_spec(spec)))


def test_scenario_scheme_section_validates():
    with pytest.raises(ScenarioError, match="scheme.clients"):
        load_scenario(None, ['scheme.name="fl-lora"', 'scheme.selection="random"'])
    with pytest.raises(ScenarioError, match="scheme.name"):
        load_scenario(None, ['scheme.name="split"'])
    sim = build_simulation(load_scenario(None, ['scheme.name="dlora"', "run.rounds=1"]))
    assert isinstance(sim.scheme, DLoRAScheme)
    assert sim.power is not None and sim.power["cpu-reference"] == DEFAULT_POWER["cpu-reference"]
