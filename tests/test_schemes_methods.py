"""Fine-tuning methods in the analytic cost model: exact tiny-model memory and FLOPs."""

from __future__ import annotations

import pytest

from desim.costs.analytic import AnalyticCostModel, analytic_costs
from desim.costs.base import Workload
from desim.engine.assembly import build_simulation
from desim.io.scenario import load_scenario
from tests.helpers import TINY

# TINY: h=32, f=64, a=2 heads, L=2, vocab 100, 64 positions; b=1, s=8, LoRA r=8
LAYER = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 4 * 32  # 8544 parameters
WEIGHTS = 4.0 * (100 * 32 + 64 * 32 + 2 * LAYER)  # fp32 bytes
# one layer's saved activations, fp32 bytes: 2·(10bsh + 8bsi + 4bsf + 5ab s²), i = h
ACT = 2.0 * (10 * 8 * 32 + 8 * 8 * 32 + 4 * 8 * 64 + 5 * 2 * 8 * 8)
LORA = 2 * 8 * (32 + 32)  # LoRA r=8 values per layer: query and value, r·(h + i) each

# Counted FLOPs, as multiply-accumulates (MACs) of each product (FLOPs = 2 × MACs):
PROJ = 8 * 32 * 32  # one h×h projection (query, key, value, output) on b·s = 8 tokens
ATT = 8 * 8 * 32  # scores QKᵀ or context PV, summed over the heads
FFN = 8 * 32 * 64 + 8 * 64 * 32  # the two feed-forward matrices
LA = LB = 8 * 32 * 8  # a LoRA module's x·A and (xA)·B
HEAD = 32 * 32 + 32 * 2  # the classification head on the first token (h×h, h×2)
LAYER_FWD = 4 * PROJ + 2 * ATT + FFN + 2 * (LA + LB)
FWD = 2 * (2 * LAYER_FWD + HEAD)  # the forward pass, FLOPs
# backward of the trained block's layer (its input needs no grad): each LoRA module's A once
# and B twice (its weight and its input), the scores for Q only (the key needs no grad), the
# context for both operands, and the input gradients of the output projection and the FFN
TRAINED = 2 * (2 * (LA + 2 * LB) + ATT + 2 * ATT + PROJ + FFN)
# backward of a crossed frozen layer: the input gradient of every product, both attention
# operands, and the LoRA path to the input
CROSSED = 2 * (4 * PROJ + 4 * ATT + FFN + 2 * (LA + LB))
HEAD_BWD = 2 * HEAD  # the head's input gradients
STEP = [FWD + HEAD_BWD + TRAINED, FWD + HEAD_BWD + CROSSED + TRAINED]  # blocks 1 and 2


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
    assert STEP == [434432, 598272]
    assert costs("lora")[0].tolist() == STEP
    # checkpointing recomputes the forward pass of every crossed layer
    ckpt = [STEP[0] + 2 * LAYER_FWD, STEP[1] + 2 * 2 * LAYER_FWD]
    assert costs("lora-checkpoint")[0].tolist() == ckpt
    assert costs("mezo")[0].tolist() == [2 * FWD, 2 * FWD]  # two forward passes, any depth
    assert costs("mezo")[2].tolist() == [32.0, 32.0]  # one projected-gradient scalar
    assert costs("lora")[2].tolist() == [32.0 * LORA] * 2
    qlora = costs("qlora")[1].tolist()
    assert qlora == [0.5625 * WEIGHTS / 4 + n * ACT + 16 * LORA for n in (1, 2)]
    # full fine-tuning (no LoRA modules). The trained layer: weight gradients of query, key
    # and value (their input needs no grad), weight and input gradients of the output
    # projection and the FFN, both attention operands. A crossed layer: input gradients.
    fwd = 2 * (2 * (4 * PROJ + 2 * ATT + FFN) + HEAD)
    trained = 2 * (3 * PROJ + 2 * PROJ + 4 * ATT + 2 * FFN)
    crossed = 2 * (4 * PROJ + 4 * ATT + FFN)
    assert costs("full")[0].tolist() == [fwd + HEAD_BWD + trained,
                                         fwd + HEAD_BWD + crossed + trained]


def test_qlora_is_labelled_an_estimate_unless_measured():
    wl = Workload(TINY, "qlora", 1, 8, 2)
    assert AnalyticCostModel().block_costs(wl, "cpu-reference").source == "analytic-estimate"
    # roberta-large has no measured QLoRA or MeZO profile: the analytic fallback prices them
    large = ['model.name="roberta-large"', "model.num_blocks=24", "devices.population.count=24",
             "run.rounds=1"]
    sim = build_simulation(load_scenario(None, ['model.method="qlora"', *large]))
    assert sim.cost_source == ["analytic-estimate"]
    sim = build_simulation(load_scenario(None, ['model.method="mezo"', *large]))
    assert sim.cost_source == ["analytic"]
    # roberta-base ships measured QLoRA (bitsandbytes) and MeZO profiles
    for method in ("qlora", "mezo"):
        sim = build_simulation(load_scenario(None, [f'model.method="{method}"', "run.rounds=1"]))
        assert sim.cost_source == ["profiled:cpu-reference"]
    dev = sim.run().device_rounds_frame()
    assert dev.upload_bits.tolist() == [32.0] * 12  # MeZO: one projected-gradient scalar


def test_unknown_method_is_rejected_with_the_known_ones():
    from desim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="model.method"):
        load_scenario(None, ['model.method="galore"'])
