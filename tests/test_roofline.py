"""Roofline transfer: the byte count, the time bound, the transfer speed, the efficiency fit."""

from dataclasses import fields

import numpy as np
import pytest

from desim.costs.analytic import analytic_flops
from desim.costs.base import Workload
from desim.costs.methods import trainable_values
from desim.costs.roofline import (
    MACHINES,
    Machine,
    fit_compute_efficiency,
    roofline_time_s,
    step_bytes,
    step_bytes_moved,
    transfer_speed,
)
from desim.costs.transformer import TransformerConfig, layer_params
from desim.errors import InputError, ScenarioError
from desim.io.model_configs import load_model_config

TINY = TransformerConfig("tiny", 32, 2, 2, 64, 100, 64)  # h=32, L=2, a=2, f=64
BASE = load_model_config("roberta-base")


@pytest.mark.parametrize("method", ["lora", "full", "lora-checkpoint", "adapter", "ia3"])
@pytest.mark.parametrize("model", ["roberta-base", "roberta-large"])
def test_bytes_are_positive_and_non_decreasing_in_depth(model, method):
    cfg = load_model_config(model)
    moved = step_bytes_moved(Workload(cfg, method, 8, 128, cfg.num_layers))
    assert moved.shape == (cfg.num_layers,)
    assert np.all(moved > 0)
    assert np.all(np.diff(moved) > 0)


def test_full_moves_more_than_lora_at_every_block_at_a_small_batch():
    lora = step_bytes_moved(Workload(BASE, "lora", 1, 64, 12))
    full = step_bytes_moved(Workload(BASE, "full", 1, 64, 12))
    assert np.all(full > lora)


def test_lora_forward_traffic_exceeds_full_by_its_modules_at_b8_s128():
    # Each LoRA module (query, value) reads x, writes and reads its rank-r product, writes its
    # i-wide output, and the merge reads both i-wide tensors and writes one: bs(h + 2r + 4i)
    # values; 2 modules in each of 12 layers. At b=8, s=128 that beats full's AdamW step at
    # block 1, so there LoRA moves more bytes in total (docs/transfer.md).
    b, s, h, r = 8, 128, 768, 8
    lora = step_bytes(Workload(BASE, "lora", b, s, 12, lora_rank=r))
    full = step_bytes(Workload(BASE, "full", b, s, 12))
    extra = 4.0 * 12 * 2 * b * s * (h + 2 * r + 4 * h)
    np.testing.assert_allclose(lora.forward_activations - full.forward_activations, extra,
                               rtol=1e-12)
    assert lora.total[0] > full.total[0]


def test_forward_weight_term_is_every_parameter_read_once():
    # tiny RoBERTa layer: 4(h²+h) + (hf+f) + (fh+h) + 4h = 4224 + 2112 + 2080 + 128 = 8544
    assert layer_params(TINY) == 8544
    head = 32 * 32 + 32 + 32 * 2 + 2  # classification head: dense and out, with biases
    terms = step_bytes(Workload(TINY, "full", 1, 8, 2))
    assert terms.forward_weights.tolist() == [4.0 * (2 * 8544 + head)] * 2 == [72840.0] * 2
    lora = step_bytes(Workload(TINY, "lora", 1, 8, 2, lora_rank=2))
    lora_values = 2 * 2 * 2 * (32 + 32)  # 2 layers x (q, v) x r(h + i)
    assert lora.forward_weights.tolist() == [72840.0 + 4.0 * lora_values] * 2


@pytest.mark.parametrize("method", ["lora", "full", "adapter", "ia3"])
def test_weight_gradients_and_adamw_follow_the_trainable_values(method):
    work = Workload(BASE, method, 4, 64, 12)
    terms, trainable = step_bytes(work), trainable_values(work)
    np.testing.assert_array_equal(terms.weight_gradients, 4.0 * trainable)
    np.testing.assert_array_equal(terms.optimizer, 28.0 * trainable)


def test_checkpointing_only_adds_the_recomputed_forward():
    lora = step_bytes(Workload(BASE, "lora", 4, 64, 12))
    ckpt = step_bytes(Workload(BASE, "lora-checkpoint", 4, 64, 12))
    assert np.all(lora.recompute == 0)
    assert np.all(np.diff(ckpt.recompute) > 0)
    for f in fields(lora):
        if f.name != "recompute":
            np.testing.assert_array_equal(getattr(ckpt, f.name), getattr(lora, f.name))


@pytest.mark.parametrize("method", ["mezo", "qlora", "nope"])
def test_unmodelled_methods_are_refused_by_name(method):
    with pytest.raises(ScenarioError, match=f"'{method}'"):
        step_bytes_moved(Workload(TINY, method, 1, 8, 2))


def test_roofline_time_is_the_compute_or_the_memory_bound():
    m = Machine("m", 1e12, 1e11, compute_efficiency=0.5, memory_efficiency=0.25)
    # compute bound: 2e12 / (0.5·1e12) = 4 s against 1e9 / (0.25·1e11) = 0.04 s
    # memory bound: 1e9 / 5e11 = 0.002 s against 5e10 / 2.5e10 = 2 s
    t = roofline_time_s(np.array([2e12, 1e9]), np.array([1e9, 5e10]), m)
    assert t.tolist() == [2e12 / 5e11, 5e10 / 2.5e10] == [4.0, 2.0]


def test_roofline_time_refuses_negative_or_nan():
    m = MACHINES["cpu-reference"]
    with pytest.raises(InputError, match="flops"):
        roofline_time_s(np.array([-1.0]), np.array([1.0]), m)
    with pytest.raises(InputError, match="bytes_moved"):
        roofline_time_s(np.array([1.0]), np.array([np.nan]), m)


def test_transfer_speed_is_one_to_itself_and_two_to_a_machine_twice_as_fast():
    work = Workload(BASE, "lora", 8, 128, 12)
    flops, moved = analytic_flops(work), step_bytes_moved(work)
    for m in MACHINES.values():
        assert transfer_speed(flops, moved, m, m).tolist() == [1.0] * 12
        double = Machine("2x", 2 * m.peak_flops_per_s, 2 * m.memory_bytes_per_s,
                         m.compute_efficiency, m.memory_efficiency)
        assert transfer_speed(flops, moved, m, double).tolist() == [2.0] * 12
    # one step compute bound, one memory bound on the same pair of machines
    cpu = Machine("c", 1e11, 1e10)
    gpu = Machine("g", 1e13, 1e11)
    speed = transfer_speed(np.array([1e12, 1e10]), np.array([1e9, 1e10]), cpu, gpu)
    # 10 s -> max(0.1, 0.01) = 0.1 s (100x); 1 s -> max(0.001, 0.1) = 0.1 s (10x)
    np.testing.assert_allclose(speed, [100.0, 10.0], rtol=1e-15)


def test_transfer_speed_refuses_an_empty_step():
    m = MACHINES["cpu-reference"]
    with pytest.raises(InputError, match="neither"):
        transfer_speed(np.array([0.0]), np.array([0.0]), m, m)


def test_fit_compute_efficiency_recovers_an_injected_efficiency():
    m = MACHINES["cpu-reference"]
    flops = np.array([1.9e11, 2.5e11, 3.6e11, 7.7e11])
    measured = flops / (0.37 * m.peak_flops_per_s)
    assert fit_compute_efficiency(flops, measured, m) == pytest.approx(0.37, rel=1e-14)
    # the geometric mean: one step at twice, one at half the efficiency
    halves = np.array([flops[0] / (0.74 * m.peak_flops_per_s),
                       flops[1] / (0.185 * m.peak_flops_per_s)])
    assert fit_compute_efficiency(flops[:2], halves, m) == pytest.approx(0.37, rel=1e-14)


@pytest.mark.parametrize("flops, measured", [
    ([1.0, 2.0], [1.0, 0.0]), ([1.0, -2.0], [1.0, 1.0]), ([1.0], [np.inf]),
    ([1.0, 2.0], [1.0]), ([], []),
])
def test_fit_compute_efficiency_refuses_bad_inputs(flops, measured):
    with pytest.raises(InputError):
        fit_compute_efficiency(np.array(flops), np.array(measured), MACHINES["cpu-reference"])


@pytest.mark.parametrize("field, value", [
    ("compute_efficiency", 0.0), ("compute_efficiency", 1.5), ("memory_efficiency", 0.0),
    ("memory_efficiency", 1.01), ("peak_flops_per_s", -1.0), ("memory_bytes_per_s", np.inf),
])
def test_machine_refuses_bad_fields_by_name(field, value):
    kwargs = {"peak_flops_per_s": 1e12, "memory_bytes_per_s": 1e11, field: value}
    with pytest.raises(ScenarioError, match=field):
        Machine("m", **kwargs)


def test_known_machines_and_their_ridge_points():
    assert set(MACHINES) == {"cpu-reference", "cpu-reference-2t", "jetson-agx-orin"}
    assert all(name == m.name for name, m in MACHINES.items())
    orin = MACHINES["jetson-agx-orin"]
    assert orin.ridge_flops_per_byte() == 5.3e12 / 204.8e9
    assert orin.ridge_flops_per_byte(sustained=True) == pytest.approx(
        0.2 * 5.3e12 / (0.7 * 204.8e9), rel=1e-15)
    assert MACHINES["cpu-reference-2t"].peak_flops_per_s == 2 * 1.92e11


# --- the roofline transfer as a borrowed profile's option ------------------------------------

def _jetson(overrides=()):
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    scen = load_scenario("experiments/scenarios/jetson-flan-t5-small.toml",
                         ["run.rounds=1", *overrides])
    return build_simulation(scen)


def test_a_roofline_class_runs_its_profile_at_the_machines_sustained_ratio():
    from desim.costs.roofline import MACHINES

    sim = _jetson()
    cost, workload = sim.cost_model, sim.workload
    src = cost.block_costs(workload, "cpu-reference")
    tgt = cost.block_costs(workload, "jetson-agx-orin")
    # every block is compute bound on both machines: the speed is the ratio of sustained peaks,
    # with the source's efficiency fitted to the profile's own times
    cpu, orin = MACHINES["cpu-reference"], MACHINES["jetson-agx-orin"]
    eta = float(np.exp(np.mean(np.log(src.flops / (src.compute_s * cpu.peak_flops_per_s)))))
    expected = orin.compute_efficiency * orin.peak_flops_per_s / (eta * cpu.peak_flops_per_s)
    np.testing.assert_allclose(src.compute_s / tgt.compute_s, expected, rtol=1e-12)
    assert 13.0 < expected < 14.5  # the bare assumption it replaces was 14
    np.testing.assert_array_equal(tgt.memory_bytes, src.memory_bytes)
    transfer = sim.metadata["pricing"]["jetson-agx-orin"]["transfer"]
    assert transfer["kind"] == "roofline" and transfer["target"] == "jetson-agx-orin"
    assert transfer["source_compute_efficiency"] == pytest.approx(eta, rel=1e-12)
    assert sim.metadata["pricing"]["jetson-agx-orin"]["host_match"] is None  # not measured


def test_a_roofline_transfer_names_an_unknown_machine():
    from desim.errors import ScenarioError as Refused

    with pytest.raises(Refused, match="no roofline machine 'nano'.*known: cpu-reference"):
        _jetson(['cost.profiles.jetson-agx-orin={profile="cpu-reference", transfer="roofline",'
                 ' target="nano"}'])
