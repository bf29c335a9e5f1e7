"""Fine-tuning methods in the analytic cost model: exact tiny-model memory and FLOPs."""

from __future__ import annotations

import pytest

from desim.components import build_simulation
from desim.cost import AnalyticCostModel, Workload, analytic_costs
from desim.io import load_scenario
from tests.helpers import TINY

# TINY: h=32, f=64, a=2 heads, L=2, vocab 100, 64 positions; b=1, s=8
LAYER = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 4 * 32  # 8544 parameters
WEIGHTS = 4.0 * (100 * 32 + 64 * 32 + 2 * LAYER)  # fp32 bytes
ACT = 4.0 * (17 * 8 * 32 + 2.5 * 2 * 64)  # one layer's saved activations, bytes
LORA = 4 * 32 * 8  # LoRA r=8 values per layer
F = 16 * (4 * 32**2 + 2 * 32 * 64) + 4 * 64 * 32  # one layer forward, FLOPs


def costs(method: str):  # type: ignore[no-untyped-def]
    return analytic_costs(Workload(TINY, method, 1, 8, 2))


def test_method_memory_exactly_and_ordered():
    mem = {m: costs(m)[1].tolist() for m in ("mezo", "lora", "full", "lora-checkpoint")}
    assert mem["lora"] == [WEIGHTS + n * ACT + 16 * LORA for n in (1, 2)]
    assert mem["full"] == [WEIGHTS + n * ACT + 16 * LAYER for n in (1, 2)]
    assert mem["mezo"] == [WEIGHTS + ACT + 4 * LORA] * 2
    assert mem["lora-checkpoint"] == [WEIGHTS + n * 4 * 8 * 32 + ACT + 16 * LORA for n in (1, 2)]
    for n in range(2):
        assert mem["mezo"][n] < mem["lora"][n] < mem["full"][n]
    # checkpointing keeps less activation memory once the backward crosses two layers
    assert mem["lora-checkpoint"][1] < mem["lora"][1]


def test_method_flops_and_bits():
    wgrad = 2 * 8 * LORA
    assert costs("lora")[0].tolist() == [3 * F + wgrad, 4 * F + wgrad]
    assert costs("lora-checkpoint")[0].tolist() == [4 * F + wgrad, 6 * F + wgrad]
    assert costs("mezo")[0].tolist() == [4 * F, 4 * F]  # two forward passes, any depth
    assert costs("mezo")[2].tolist() == [32.0, 32.0]  # one projected-gradient scalar
    assert costs("lora")[2].tolist() == [32.0 * LORA] * 2
    qlora = costs("qlora")[1].tolist()
    assert qlora == [0.5625 * WEIGHTS / 4 + n * ACT + 16 * LORA for n in (1, 2)]


def test_qlora_is_labelled_an_estimate_in_results():
    wl = Workload(TINY, "qlora", 1, 8, 2)
    assert AnalyticCostModel().block_costs(wl, "cpu-reference").source == "analytic-estimate"
    sim = build_simulation(load_scenario(None, ['model.method="qlora"', "run.rounds=1"]))
    assert sim.cost_source == ["analytic-estimate"]
    sim = build_simulation(load_scenario(None, ['model.method="mezo"', "run.rounds=1"]))
    assert sim.cost_source == ["analytic"]  # no measured MeZO profile: the fallback prices it
    dev = sim.run().device_rounds_frame()
    assert dev.upload_bits.tolist() == [32.0] * 12


def test_unknown_method_is_rejected_with_the_known_ones():
    from desim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="model.method"):
        load_scenario(None, ['model.method="galore"'])
