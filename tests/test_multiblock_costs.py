"""Several blocks per device: the set cost model, its counts, and measured sets.

The counts (FLOPs of a set, the activations a set keeps) are checked against torch on the
meta device and a real measurement of a small model; the composition is checked against the
direct count on every set of a small model, and against the committed roberta-base
measurements (experiments/calibration/measured/multiblock/).
"""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from desim.costs.analytic import AnalyticCostModel, analytic_flops
from desim.costs.base import BlockCosts, Workload
from desim.costs.multiblock import (
    STATE_BYTES_PER_VALUE,
    derived_extra_compute_s,
    extra_activation_bytes,
    extra_flops,
    set_cost,
    set_step_flops,
)
from desim.costs.profiled import ProfiledCostModel
from desim.costs.table import TableCostModel
from desim.costs.transformer import TransformerConfig
from desim.errors import InputError, ScenarioError
from desim.io.calibration import load_profile
from desim.io.model_configs import load_model_config
from desim.profiling.request import parse_block_sets
from tests.helpers import TINY

TINY4 = replace(TINY, num_hidden_layers=4)
T5_22 = TransformerConfig("tiny-t5", 16, 2, 2, 24, 50, 0, num_decoder_layers=2, head_dim=4,
                          gated_ffn=True, tie_word_embeddings=False)
BACKWARD_METHODS = ("lora", "full", "adapter", "ia3", "lora-checkpoint")
MEASURED = Path(__file__).resolve().parent.parent / "experiments/calibration/measured/multiblock"


def subsets(n: int) -> list[tuple[int, ...]]:
    """Every non-empty subset of blocks 1..n."""
    return [c for k in range(1, n + 1) for c in combinations(range(1, n + 1), k)]


@pytest.mark.parametrize("method", [*BACKWARD_METHODS, "mezo"])
@pytest.mark.parametrize("num_blocks", [4, 2])
def test_composition_equals_the_direct_count_of_every_set(method, num_blocks):
    # the analytic model prices FLOPs at one rate, so its composed seconds times the rate are
    # the composed FLOPs; they must equal the set's step counted on the layer graphs directly
    rate = 1e9
    wl = Workload(TINY4, method, 3, 16, num_blocks)
    costs = AnalyticCostModel(rate).block_costs(wl, "cpu-reference")
    for group in subsets(num_blocks):
        assert set_cost(costs, group).compute_s * rate == pytest.approx(
            set_step_flops(wl, group), rel=1e-12), group
    if method not in ("mezo", "ia3"):  # more blocks, more weight-gradient products
        assert set_step_flops(wl, range(1, num_blocks + 1)) > set_step_flops(wl, [num_blocks])


def test_single_block_set_count_is_the_analytic_count():
    for method in (*BACKWARD_METHODS, "mezo"):
        wl = Workload(TINY4, method, 2, 24, 4)
        assert [set_step_flops(wl, [n]) for n in range(1, 5)] == list(analytic_flops(wl))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_encoder_decoder_extras_are_exact_in_the_decoder_and_never_low(method):
    wl = Workload(T5_22, method, 2, 24, 4, lora_rank=2, target_len=8)
    costs = AnalyticCostModel(1.0).block_costs(wl, "cpu-reference")
    for group in subsets(4):
        composed, direct = set_cost(costs, group).compute_s, set_step_flops(wl, group)
        if max(group) <= 2 or method == "lora":  # deepest in the decoder, or LoRA (no k/v)
            assert composed == pytest.approx(direct, rel=1e-12), group
        else:  # full: a decoder block's cross-attention keys and values counted again
            assert composed >= direct * (1 - 1e-12), group
    # block 1 above an encoder block: full fine-tuning counts its cross-attention keys' and
    # values' backward again; LoRA trains no cross-attention
    over = set_cost(costs, [1, 3]).compute_s / set_step_flops(wl, [1, 3])
    assert over > 1 + 1e-6 if method == "full" else over == pytest.approx(1, rel=1e-12)


def _shipped(method: str, b: int = 8, s: int = 128) -> tuple[Workload, BlockCosts]:
    wl = Workload(load_model_config("roberta-base"), method, b, s, 12)
    model = ProfiledCostModel({"cpu-reference": load_profile("cpu-reference")})
    return wl, model.block_costs(wl, "cpu-reference")


def _every_model() -> list[BlockCosts]:
    wl = Workload(TINY4, "full", 2, 16, 4)
    table = TableCostModel(np.array([1.0, 2, 3, 4]), np.array([5.0, 6, 7, 8]),
                           np.array([9.0, 9, 9, 9]), extra_compute_s=np.full(4, 0.5))
    return [_shipped("lora")[1], _shipped("full")[1],
            AnalyticCostModel().block_costs(wl, "cpu-reference"),
            table.block_costs(wl, "any"),
            TableCostModel(np.ones(4), np.ones(4), np.ones(4)).block_costs(wl, "any")]


def test_a_set_of_one_block_costs_exactly_that_block():
    for costs in _every_model():
        for n in range(1, len(costs.compute_s) + 1):
            got = set_cost(costs, [n])
            assert got == (costs.compute_s[n - 1], costs.memory_bytes[n - 1],
                           costs.upload_bits[n - 1])


def test_set_cost_sums_extras_above_the_deepest_and_every_upload():
    costs = _every_model()[3]  # compute 1..4, memory 5..8, bits 9, extras 0.5 and 0
    assert set_cost(costs, [4, 1, 1, 2]) == (4 + 2 * 0.5, 8.0, 27.0)
    assert set_cost(costs, range(1, 5)) == (4 + 3 * 0.5, 8.0, 36.0)
    plain = _every_model()[4]  # no extras given: zeros
    assert set_cost(plain, [1, 2, 3]) == (1.0, 1.0, 3.0)
    for bad in ([], [0], [5], [1, 7]):
        with pytest.raises(ScenarioError, match=r"block set needs blocks in 1\.\.4"):
            set_cost(costs, bad)


def test_lora_extras_are_tiny_and_full_extras_large():
    (_, lora), (_, full) = _shipped("lora"), _shipped("full")
    # full fine-tuning: every weight's gradient and a 7M-value AdamW step, each block
    assert np.all(full.extra_compute_s > 0.03 * full.compute_s[-1])
    assert np.all(full.extra_memory_bytes > 80e6)
    # LoRA: 24,576 values a block; its extras are two orders of magnitude smaller
    assert np.all(lora.extra_compute_s < 0.01 * full.extra_compute_s)
    assert np.all(lora.extra_memory_bytes < 0.05 * full.extra_memory_bytes)
    assert np.all(lora.extra_compute_s < 0.001 * lora.compute_s[-1])
    for costs in (AnalyticCostModel().block_costs(_shipped(m)[0], "cpu-reference")
                  for m in ("lora", "full")):
        assert np.all(costs.extra_compute_s > 0)
    wl = Workload(load_model_config("roberta-base"), "lora", 8, 128, 12)
    assert np.all(extra_flops(wl) < 0.01 * extra_flops(replace(wl, method="full")))


def test_profiled_extra_memory_is_measured_state_plus_counted_activations():
    wl, full = _shipped("full")
    rows = load_profile("cpu-reference")
    rows = rows[(rows["model"] == "roberta-base") & (rows["method"] == "full")]
    state = (rows.groupby("block")["grad_bytes"].max() + rows.groupby("block")[
        "optimizer_bytes"].max()).to_numpy(float)
    b, s, h, f = 8, 128, 768, 3072
    assert extra_activation_bytes(wl)[0] == 4 * b * s * (3 * h + f)  # RoBERTa, full
    assert np.array_equal(full.extra_memory_bytes, state + 4 * b * s * (3 * h + f))
    lora = replace(wl, method="lora")
    assert extra_activation_bytes(lora)[0] == 4 * b * s * (h + 2 * 8)
    # the analytic model: 12 bytes a value, and the same activations
    analytic = AnalyticCostModel().block_costs(wl, "cpu-reference")
    assert analytic.extra_memory_bytes[0] == (STATE_BYTES_PER_VALUE * 7087872
                                              + 4 * b * s * (3 * h + f))


def test_derived_extras_are_the_step_plus_weight_flops_at_the_depth_slope():
    flops = np.array([10.0, 12, 14, 16])
    compute = 1.0 + 0.5 * flops  # 0.5 s a FLOP
    got = derived_extra_compute_s(compute, flops, np.full(4, 0.1), np.array([2.0, 2, 2, 2]))
    assert np.allclose(got, 0.1 + 0.5 * 2)
    flat = derived_extra_compute_s(np.ones(4), np.full(4, 3.0), np.full(4, 0.2), np.ones(4))
    assert np.allclose(flat, 0.2)  # MeZO: the FLOPs do not grow with depth


def test_parse_block_sets():
    assert parse_block_sets("1,2;1,12; 3,7,11;1-4;2-3,9") == (
        (1, 2), (1, 12), (3, 7, 11), (1, 2, 3, 4), (2, 3, 9))
    assert parse_block_sets("5,1,5") == ((1, 5),)
    for bad, why in (("1,x", "expected blocks"), ("1;;2", "empty set"), ("0,1", "from 1"),
                     ("4-2", "a <= b")):
        with pytest.raises(InputError, match=why):
            parse_block_sets(bad)


def _committed(method: str) -> pd.DataFrame:
    return pd.read_csv(MEASURED / f"roberta-base_{method}_8x128-measured.csv")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_committed_roberta_base_sets_match_the_composition(method):
    # the committed measurement (README there): the composition from its own single blocks
    from desim.profiling.set_validation import composed_costs

    table = _committed(method)
    wl = Workload(load_model_config("roberta-base"), method, 8, 128, 12)
    costs = composed_costs(table[table["set_size"] == 1], wl)
    sets = table[table["set_size"] > 1]
    assert len(sets) >= 6
    pred = np.array([set_cost(costs, map(int, g.split(","))) for g in sets["blocks"]])
    time_ape = np.abs(pred[:, 0] / sets["compute_s"] - 1)
    assert time_ape.mean() < 0.05
    assert np.abs(pred[:, 1] / sets["peak_memory_bytes"] - 1).max() < 1e-4
    # and the profiled model's memory from the shipped profile, which is host-independent
    _, shipped = _shipped(method)
    mem = np.array([set_cost(shipped, map(int, g.split(","))).memory_bytes
                    for g in sets["blocks"]])
    assert np.abs(mem / sets["peak_memory_bytes"] - 1).max() < 1e-3
    if method == "full":  # ignoring the other blocks would miss by far more
        deepest = costs.compute_s[sets["deepest"].to_numpy() - 1]
        assert np.abs(deepest / sets["compute_s"] - 1).mean() > 3 * time_ape.mean()


# ---- measured with torch ------------------------------------------------------------------

SMALL = {"model_type": "roberta", "hidden_size": 128, "num_hidden_layers": 4,
         "num_attention_heads": 4, "intermediate_size": 512, "vocab_size": 100,
         "max_position_embeddings": 130, "pad_token_id": 1, "type_vocab_size": 1,
         "layer_norm_eps": 1e-05}


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    path = tmp_path_factory.mktemp("models") / "small.json"
    path.write_text(json.dumps({**SMALL, "hidden_size": 32, "intermediate_size": 64,
                                "num_attention_heads": 2}))
    big = path.with_name("small128.json")
    big.write_text(json.dumps(SMALL))
    return path


@pytest.mark.parametrize("method", ["lora", "full", "adapter", "ia3"])
def test_torch_counts_of_sets_equal_the_analytic_counts(small_path, method):
    from desim.io.model_configs import model_config_data
    from desim.profiling.measure import block_optimizers
    from desim.profiling.models import build_model, make_inputs
    from desim.profiling.sets import flops_of_sets, saved_bytes_of_sets

    data = model_config_data(str(small_path))
    model, blocks = build_model(data, method, device="meta")
    inputs = make_inputs(data, 3, 20, 0, "meta", 0)
    groups = subsets(4)
    flops = flops_of_sets(model, blocks, block_optimizers(blocks, method), inputs, groups)
    wl = Workload(load_model_config(str(small_path)), method, 3, 20, 4)
    assert list(flops) == [set_step_flops(wl, g) for g in groups]
    saved = dict(zip(groups, saved_bytes_of_sets(model, blocks, inputs, groups), strict=True))
    act = extra_activation_bytes(wl)
    for g in groups:  # the saved bytes of a set: its deepest block's plus each other's extra
        assert saved[g] == saved[(g[-1],)] + act[np.array(g[:-1], dtype=int) - 1].sum(), g


T5_SMALL = {"model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2,
            "num_layers": 2, "num_decoder_layers": 3, "vocab_size": 100,
            "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 8,
            "tie_word_embeddings": False, "decoder_start_token_id": 0, "pad_token_id": 0,
            "eos_token_id": 1}


@pytest.mark.parametrize("method", ["lora", "full", "adapter", "ia3"])
def test_torch_counts_of_encoder_decoder_sets(small_path, method):
    # FLOPs of every set exactly; the peak of a set within 2% (the lowest decoder layer's
    # self-attention path and cross-attention maps are not counted exactly;
    # desim.costs.multiblock.extra_activation_bytes)
    from desim.io.model_configs import model_config_data
    from desim.profiling.measure import block_optimizers
    from desim.profiling.memory import tensor_bytes
    from desim.profiling.models import build_model, make_inputs
    from desim.profiling.sets import flops_of_sets, saved_bytes_of_sets

    path = small_path.with_name("t5.json")
    path.write_text(json.dumps(T5_SMALL))
    data = model_config_data(str(path))
    model, blocks = build_model(data, method, device="meta")
    inputs = make_inputs(data, 2, 12, 6, "meta", 0)
    groups = subsets(5)
    wl = Workload(load_model_config(str(path)), method, 2, 12, 5, target_len=6)
    flops = flops_of_sets(model, blocks, block_optimizers(blocks, method), inputs, groups)
    assert list(flops) == [set_step_flops(wl, g) for g in groups]
    costs = AnalyticCostModel(1.0).block_costs(wl, "cpu-reference")
    over = [set_cost(costs, g).compute_s / f for g, f in zip(groups, flops, strict=True)]
    assert min(over) == pytest.approx(1.0) and max(over) < 1.01  # never low, 1% high at most
    saved = dict(zip(groups, saved_bytes_of_sets(model, blocks, inputs, groups), strict=True))
    act, fixed = extra_activation_bytes(wl), tensor_bytes(model.parameters())
    state = np.array([12.0 * sum(p.numel() for p in ps) for ps in blocks])
    for g in groups:
        i = np.array(g) - 1
        measured = saved[g] + fixed + state[i].sum()
        predicted = saved[(g[-1],)] + fixed + state[i].sum() + act[i[:-1]].sum()
        assert predicted == pytest.approx(measured, rel=0.02), g
        if method == "adapter" or (method == "lora" and 3 not in g[:-1]):
            assert predicted == measured, g  # the adapter's tensors: exact; LoRA but block Ld


@pytest.mark.parametrize("method", ["full", "lora"])
def test_composed_sets_match_measured_sets_on_a_small_model(small_path, method):
    from desim.profiling import ProfileRequest, run_set_validation

    big = str(small_path.with_name("small128.json"))
    report = run_set_validation(ProfileRequest(
        big, method, (4,), (64,), repeats=5, sets=parse_block_sets("1,2;1-4;2,4;1,3;1,4")))
    rows = report.rows[report.rows["set_size"] > 1]
    assert len(report.rows) == 4 + 5 and len(rows) == 5
    assert rows["same_run_memory_ape_pct"].max() < 1e-3  # memory: exact (to a few bytes)
    mape = rows["same_run_ape_pct"].mean()
    assert mape < 8.0, rows[["blocks", "measured_compute_s", "same_run_compute_s"]]
    if method == "full":  # weight gradients of 128×512 layers: ignoring them misses
        assert mape < rows["deepest_only_ape_pct"].mean()


def test_cli_measures_sets_and_validates_them(small_path, tmp_path, capsys):
    from desim.cli.main import main

    out = tmp_path / "sets.csv"
    assert main(["profile", "--model", str(small_path), "--method", "full", "--points", "2x16",
                 "--sets", "1,2;1-4", "--repeats", "1", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert list(table["blocks"]) == ["1,2", "1,2,3,4"] and list(table["deepest"]) == [2, 4]
    assert (table["grad_bytes"] == 4 * table["trainable_params"]).all()
    prof = tmp_path / "p.csv"
    assert main(["profile", "--model", str(small_path), "--method", "full", "--points",
                 "1x16,1x32,2x16,2x32", "--repeats", "1", "--out", str(prof)]) == 0
    capsys.readouterr()
    report = tmp_path / "v.csv"
    assert main(["profile", "--validate", str(prof), "--model", str(small_path), "--sets",
                 "1,2;1-4", "--points", "2x24", "--repeats", "1", "--out", str(report)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the console wraps lines
    assert "latency MAPE" in text and "deepest block only" in text
    summary = pd.read_csv(report)
    assert list(summary["sets"]) == [2, 2] and "profile_mape_pct" in summary
    assert (tmp_path / "v-rows.csv").exists() and (tmp_path / "v-measured.csv").exists()
    assert main(["profile", "--model", str(small_path), "--points", "2x16", "--sets",
                 "1,9", "--out", str(out)]) == 2
    assert "--sets: small has 4 blocks" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_set_trained_in_one_pass_records_the_sets_counted_flops(method):
    # the deepest block's step plus the others' weight gradients: the set's own count
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    sim = build_simulation(load_scenario(None, [
        "run.rounds=2", 'allocator.name="crunch-multi"', "devices.population.count=4",
        f'model.method="{method}"']))
    dev = sim.run().device_rounds_frame()
    for _, task in dev.groupby(["round", "task"]):
        want = set_step_flops(sim.workload, task.block.tolist())
        assert task.flops.iloc[0] == pytest.approx(want, rel=1e-9)  # the profile's rounding
        assert (task.flops.iloc[1:] == 0).all()
    assert (dev.groupby(["round", "task"]).size() > 1).any()
