"""Bottleneck adapters and IA3 in the cost model: counts, memory, profiles and scenarios."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from desim.costs.analytic import AnalyticCostModel, analytic_costs, analytic_flops
from desim.costs.base import Workload
from desim.costs.flops import step_flops
from desim.costs.methods import trainable_values
from desim.costs.profiled import ProfiledCostModel
from desim.costs.transformer import (
    TransformerConfig,
    config_from_mapping,
    layer_activation_bytes,
    model_params,
)
from desim.errors import ScenarioError
from desim.io.calibration import load_profile, read_profile
from desim.io.model_configs import load_model_config
from desim.io.shipped import shipped_profiles
from tests.helpers import torch_step_flops

# h = i = 32, 3 layers, 2 heads, f = 64, V = 60, 40 positions
TINY = TransformerConfig("r", 32, 3, 2, 64, 60, 40)
TINY_DATA = {
    "model_type": "roberta", "hidden_size": 32, "num_hidden_layers": 3,
    "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 60,
    "max_position_embeddings": 40, "pad_token_id": 1, "type_vocab_size": 1,
}
# h = 16, i = 2 heads × 4, gated f = 24, two encoder and three decoder layers, V = 50
TINY_T5_DATA = {
    "_family": "t5", "d_model": 16, "d_ff": 24, "d_kv": 4, "num_heads": 2, "num_layers": 2,
    "num_decoder_layers": 3, "vocab_size": 50, "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False, "decoder_start_token_id": 0, "pad_token_id": 0,
    "eos_token_id": 1,
}


def tiny(method: str, blocks: int = 3, adapter_size: int = 8) -> Workload:
    """b = 2, s = 16 on the tiny RoBERTa."""
    return Workload(TINY, method, 2, 16, blocks, adapter_size=adapter_size)


def test_trainable_values_per_layer():
    base = load_model_config("roberta-base")
    # adapter: down 768×64 + 64 and up 64×768 + 768; IA3: key, value and attention-output
    # input (768 each) and the FFN output projection's input (3072)
    assert trainable_values(Workload(base, "adapter", 8, 128, 12)).tolist() == [99136.0] * 12
    assert trainable_values(Workload(base, "ia3", 8, 128, 12)).tolist() == [5376.0] * 12
    assert trainable_values(Workload(base, "adapter", 8, 128, 6, adapter_size=16))[0] == (
        2 * (2 * 768 * 16 + 16 + 768)
    )
    t5 = config_from_mapping(TINY_T5_DATA, "t5", "-")
    # T5 IA3: decoder layers also scale the cross-attention keys and values (4i + f = 56),
    # encoder layers 2i + f = 40; blocks count from the output, decoder first
    assert trainable_values(Workload(t5, "ia3", 1, 4, 5)).tolist() == [56.0] * 3 + [40.0] * 2
    assert trainable_values(Workload(t5, "adapter", 1, 4, 5, adapter_size=8)).tolist() == (
        [2 * 16 * 8 + 8 + 16.0] * 5
    )


def test_adapter_and_ia3_flops_by_hand():
    full = step_flops(TINY, 2, 16, 0, 3, "full", 0)
    adapter = step_flops(TINY, 2, 16, 0, 3, "adapter", 0, adapter_size=8)
    # every layer's forward adds down (bs·h·a = 32·32·8 = 8192 MACs) and up (8192)
    assert adapter.forward - full.forward == 3 * 2 * 2 * 8192
    # block 1: the backward pass stops at the lowest adapter. Down: its weight gradient only;
    # up: weight and input gradients; the head: its input gradients (dense b·h·h = 2048,
    # logits b·h·2 = 128 MACs)
    assert adapter.backward[0] == 2 * (3 * 8192 + 2048 + 128)
    ia3 = step_flops(TINY, 2, 16, 0, 3, "ia3", 0)
    assert ia3.forward == full.forward  # element-wise scalings are not counted
    # block 1: the queries need no gradient, the scaled keys and values do: scores backward
    # for K only (b·s·s·i = 16384 MACs), context for P and V (2 × 16384); then the input
    # gradients of the attention output (32768), FFN in and out (65536 each) and the head
    assert ia3.backward[0] == 2 * (3 * 16384 + 32768 + 2 * 65536 + 2048 + 128)


def test_tiny_adapter_memory_exactly():
    # weights 4·P; each crossed layer keeps Korthikanti's activations plus the adapter's GELU
    # input (4·b·s·a = 1024 B); the lowest trained layer keeps only the adapter's input, GELU
    # input and output (4·b·s·(h + 2a) = 6144 B); 16 B per trainable value and 4 B per
    # adapter value of the two other blocks (552 values per layer)
    act = layer_activation_bytes(TINY, "encoder", 2, 16, 0)
    assert (model_params(TINY), act) == (28832, 63488.0)
    flops, memory, bits = analytic_costs(tiny("adapter"))
    first = 4 * 28832 + 6144 + 16 * 552 + 4 * 2 * 552
    assert memory.tolist() == [first, first + 63488 + 1024, first + 2 * (63488 + 1024)]
    assert bits.tolist() == [32.0 * 552] * 3
    # IA3: LoRA's activation accounting, its own values
    _, ia3_memory, ia3_bits = analytic_costs(tiny("ia3"))
    assert ia3_memory[0] == 4 * 28832 + act + 16 * 160 + 4 * 2 * 160
    assert ia3_bits.tolist() == [32.0 * 160] * 3
    # two layers per block: the upper one is crossed, the lower one keeps only its adapter
    two = analytic_costs(Workload(TransformerConfig("r", 32, 4, 2, 64, 60, 40), "adapter",
                                  2, 16, 2, adapter_size=8))[1]
    assert two[1] - two[0] == 2 * (63488 + 1024)


@pytest.mark.parametrize("method", ["adapter", "ia3"])
@pytest.mark.parametrize("family", ["roberta", "t5"])
def test_analytic_flops_agree_with_torch_flop_counter(method, family):
    """The profiler's own modules (desim.profiling.models), counted by torch at every depth."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from desim.profiling.models import build_model, make_inputs

    data = TINY_DATA if family == "roberta" else TINY_T5_DATA
    b, s, t = (2, 16, 1) if family == "roberta" else (2, 12, 5)
    model, blocks = build_model(data, method, adapter_size=8)
    inputs = make_inputs(data, b, s, t if family == "t5" else 0, "cpu", 0)
    cfg = config_from_mapping(data, "tiny", "-")
    layers = cfg.num_layers
    ours = analytic_flops(Workload(cfg, method, b, s, layers, adapter_size=8, target_len=t))
    assert ours.tolist() == torch_step_flops(model, blocks, inputs).tolist()
    if family == "roberta":  # one block of all three layers
        whole = analytic_flops(Workload(cfg, method, b, s, 1, adapter_size=8))
        merged = [p for params in blocks for p in params]
        assert whole.tolist() == torch_step_flops(model, [merged], inputs).tolist()


@pytest.mark.parametrize("method", ["adapter", "ia3"])
def test_trainable_values_equal_the_profilers_column(method, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    import json

    from desim.profiling import ProfileRequest, run_profile

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_DATA))
    table = run_profile(ProfileRequest(str(path), method, (1,), (8,), repeats=1, warmup=0))
    measured = table.sort_values("block")["trainable_params"].to_numpy(float)
    assert measured.tolist() == trainable_values(Workload(TINY, method, 1, 8, 3)).tolist()
    assert table["flops"].tolist() == analytic_flops(Workload(TINY, method, 1, 8, 3)).tolist()


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(["adapter", "ia3"]), model=st.sampled_from(
    ["roberta-base", "roberta-large", "flan-t5-small"]), b=st.integers(1, 16),
    s=st.integers(1, 512), t=st.integers(1, 64), a=st.integers(1, 256))
def test_costs_are_non_decreasing_in_depth(method, model, b, s, t, a):
    cfg = load_model_config(model)
    # T5 with a source far shorter than its target (s ≤ t/8) needs fewer FLOPs at the first
    # encoder block than at the last decoder block, for LoRA too: crossing the lowest decoder
    # layer no longer backpropagates through its self-attention, only its cross-attention
    assume(not cfg.is_seq2seq or s >= t)
    flops, memory, bits = analytic_costs(
        Workload(cfg, method, b, s, cfg.num_layers, target_len=t, adapter_size=a))
    assert np.all(np.diff(flops) >= 0)
    assert np.all(np.diff(memory) >= 0)
    assert np.all(bits > 0)


SHIPPED = sorted(shipped_profiles())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_analytic_flops_equal_the_shipped_flops_column(path):
    """Every shipped table's counted FLOPs (torch) equal the analytic count at every row."""
    table = read_profile(path)
    cfg = load_model_config(str(table["model"].iloc[0]))
    for (method, b, s, t), rows in table.groupby(["method", "batch_size", "seq_len",
                                                  "target_len"]):
        rows = rows.sort_values("block")
        wl = Workload(cfg, str(method), int(b), int(s), int(rows["num_blocks"].iloc[0]),
                      target_len=max(int(t), 1))
        # the CSV keeps 10 significant digits
        assert analytic_flops(wl) == pytest.approx(rows["flops"].to_numpy(float), rel=1e-8)


def _profiled(method: str) -> ProfiledCostModel:
    table = load_profile("cpu-reference")
    assert (table["method"] == method).any(), f"the shipped {method} profile is missing"
    return ProfiledCostModel({"cpu-reference": table})


@pytest.mark.parametrize(("method", "values"), [("adapter", 99136), ("ia3", 5376)])
def test_shipped_profiles_price_adapter_and_ia3(method, values):
    model = _profiled(method)
    wl = Workload(load_model_config("roberta-base"), method, 4, 128, 12)
    costs = model.block_costs(wl, "cpu-reference")
    assert costs.source == "profiled:cpu-reference" and costs.flops_source == "profiled"
    assert costs.upload_bits.tolist() == [32.0 * values] * 12
    assert np.all(np.diff(costs.compute_s) >= 0) and np.all(np.diff(costs.memory_bytes) >= 0)
    assert costs.flops == pytest.approx(analytic_flops(wl), rel=1e-6)


def test_profiled_adapter_rejects_another_adapter_width():
    model = _profiled("adapter")
    wl = Workload(load_model_config("roberta-base"), "adapter", 4, 128, 12, adapter_size=32)
    with pytest.raises(ScenarioError, match="model.adapter_size: .* adapter width 64, got 32"):
        model.block_costs(wl, "cpu-reference")
    # the analytic model prices any width
    costs = AnalyticCostModel().block_costs(wl, "cpu-reference")
    assert costs.upload_bits[0] == 32.0 * (2 * 768 * 32 + 32 + 768)


def test_adapter_scenario_runs_end_to_end():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    scenario = load_scenario(None, ['model.method="adapter"', "run.rounds=1"])
    assert scenario.model.adapter_size == 64
    sim = build_simulation(scenario)
    assert sim.workload.adapter_size == 64
    dev = sim.run().device_rounds_frame()
    assert sorted(dev.block) == list(range(1, 13))
    assert (dev.upload_bits == 32.0 * 99136).all()
    # the analytic model at another width
    narrow = load_scenario(None, ['model.method="adapter"', "model.adapter_size=16",
                                  'cost.model="analytic"', "run.rounds=1"])
    dev = build_simulation(narrow).run().device_rounds_frame()
    assert (dev.upload_bits == 32.0 * (2 * 768 * 16 + 16 + 768)).all()


def test_ia3_scenario_and_adapter_size_validation():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    sim = build_simulation(load_scenario(None, ['model.method="ia3"', "run.rounds=1"]))
    assert (sim.run().device_rounds_frame().upload_bits == 32.0 * 5376).all()
    with pytest.raises(ScenarioError, match="model.adapter_size"):
        load_scenario(None, ["model.adapter_size=0"])
    with pytest.raises(ScenarioError, match="model.adapter_size: expected >= 1, got 0"):
        Workload(TINY, "adapter", 1, 8, 3, adapter_size=0)
