"""Encoder-decoder (T5) workloads: config, counted FLOPs, memory, profile fits and FLOP sources."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from desim.costs.analytic import AnalyticCostModel, analytic_costs, analytic_flops
from desim.costs.base import Workload
from desim.costs.fit import SEQ2SEQ_FEATURES, fit_profile, seq2seq_features
from desim.costs.methods import upload_bits
from desim.costs.profiled import ProfiledCostModel
from desim.costs.table import TableCostModel
from desim.costs.transformer import TransformerConfig, config_from_mapping
from desim.errors import InputError, ScenarioError
from desim.io.calibration import PROFILE_COLUMNS
from desim.io.model_configs import load_model_config
from tests.helpers import torch_step_flops

# h=16, i = 2 heads × d_kv 4 = 8, gated FFN f=24, one encoder and one decoder layer, V=50
TINY_T5 = TransformerConfig(
    "tiny-t5", 16, 1, 2, 24, 50, 0, num_decoder_layers=1, head_dim=4, gated_ffn=True,
    relative_attention_num_buckets=32, tie_word_embeddings=False,
)


def tiny_t5(method: str = "lora", blocks: int = 2) -> Workload:
    """b=1, s=4 source tokens, t=2 target tokens, LoRA r=2."""
    return Workload(TINY_T5, method, 1, 4, blocks, lora_rank=2, target_len=2)


def test_t5_config_from_its_hugging_face_keys():
    raw = {"_family": "t5", "d_model": 512, "d_ff": 1024, "d_kv": 64, "num_heads": 6,
           "num_layers": 8, "num_decoder_layers": 8, "vocab_size": 32128,
           "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
    cfg = config_from_mapping(raw, "t5-x", "x.json")
    assert (cfg.hidden_size, cfg.inner_size, cfg.intermediate_size) == (512, 384, 1024)
    assert (cfg.num_layers, cfg.num_decoder_layers, cfg.gated_ffn) == (16, 8, True)
    assert cfg.relative_attention_num_buckets == 32  # T5's default
    assert cfg.layer_kinds() == ("decoder",) * 8 + ("encoder",) * 8  # numbered from the output
    with pytest.raises(InputError, match=r"x.json: missing or non-positive integer fields: d_kv"):
        config_from_mapping({**raw, "d_kv": 0}, "t5-x", "x.json")


def test_shipped_flan_t5_configs_load():
    small, base = load_model_config("flan-t5-small"), load_model_config("flan-t5-base")
    assert (small.hidden_size, small.intermediate_size, small.inner_size) == (512, 1024, 384)
    assert (small.num_hidden_layers, small.num_decoder_layers, small.vocab_size) == (8, 8, 32128)
    assert (base.hidden_size, base.intermediate_size, base.inner_size) == (768, 2048, 768)
    assert (base.num_layers, base.gated_ffn, base.tie_word_embeddings) == (24, True, False)


def test_block_split_counts_decoder_and_encoder_layers():
    assert tiny_t5(blocks=2).layers_per_block == 1
    assert tiny_t5(blocks=1).layers_per_block == 2  # analytic: any divisor of Ld + Le
    with pytest.raises(ScenarioError, match="does not divide the 2 layers of tiny-t5"):
        tiny_t5(blocks=3)
    with pytest.raises(ScenarioError, match="model.target_len"):
        Workload(TINY_T5, "lora", 1, 4, 2, target_len=0)
    assert tiny_t5().tokens_per_sample == 6  # s + t
    assert Workload(TransformerConfig("r", 8, 2, 2, 8, 10, 8), "lora", 1, 4, 2).decoder_len == 0


# Counted FLOPs of the tiny T5 in multiply-accumulates (MACs; FLOPs = 2 × MACs). b=1, s=4, t=2.
# Encoder layer on 4 tokens: q, k, v (16→8) 3·4·16·8; o (8→16) 4·8·16; scores and context
# 4·4·8 each; gated FFN wi0, wi1 (16→24) and wo (24→16); LoRA q, v: x·A 4·16·2, (xA)·B 4·2·8.
ENC = 3 * 512 + 512 + 2 * 128 + (2 * 4 * 16 * 24 + 4 * 24 * 16) + 2 * (128 + 64)
# Decoder layer: self-attention on 2 tokens (with LoRA), cross-attention from 2 queries over
# 4 encoder outputs (its keys and values project the 4 encoder tokens), FFN on 2 tokens.
DEC_SELF = 3 * 256 + 256 + 2 * 32 + 2 * (64 + 32)
DEC_CROSS = 256 + 2 * 512 + 2 * 64 + 256
DEC = DEC_SELF + DEC_CROSS + (2 * 2 * 16 * 24 + 2 * 24 * 16)
HEAD = 2 * 16 * 50  # the LM head on 2 target tokens
FWD = ENC + DEC + HEAD


def test_tiny_t5_flops_exactly():
    assert (ENC, DEC, FWD) == (7296, 5248, 14144)
    # block 1 = the decoder layer. Its LoRA modules: A once, B twice; self-attention scores
    # for Q only, context for both; the output projection; cross-attention query and output
    # projections, scores for Q only and context for P only (the encoder needs no grad: its
    # key and value projections are skipped); FFN and LM head input gradients
    block1 = 2 * (64 + 2 * 32) + 32 + 64 + 256 + (256 + 64 + 64 + 256) + 2304 + HEAD
    # block 2 = the encoder layer (the same pattern on 4 tokens); the decoder is crossed from
    # its cross-attention on: the self-attention reads frozen target embeddings and needs no
    # backward, the cross-attention backpropagates into its keys and values
    enc = 2 * (128 + 2 * 64) + 128 + 256 + 512 + 4608
    dec = 2 * 512 + 64 + 128 + 256 + 2304
    block2 = enc + dec + HEAD
    assert analytic_flops(tiny_t5()).tolist() == [2 * (FWD + block1), 2 * (FWD + block2)]
    assert analytic_flops(tiny_t5()).tolist() == [38592, 51072]
    assert analytic_flops(tiny_t5("mezo")).tolist() == [4 * FWD] * 2


def test_tiny_t5_memory_and_bits_exactly():
    # parameters: shared embedding and untied LM head 2·50·16; encoder layer 4hi + 3hf + 2h;
    # decoder layer 8hi + 3hf + 3h; two final norms; two relative-bias tables 32 × 2 heads
    params = 2 * 800 + (512 + 1152 + 32) + (1024 + 1152 + 48) + 32 + 2 * 64
    # saved activations, fp32: 2·(10bsh + 8bsi + 6bsf + 5ab s²) and, for the decoder,
    # 2·(15bth + 12bti + 4bsi + 6btf + 5ab t² + 5abts); LM head 4·(bth + 2btV)
    enc = 2 * (10 * 64 + 8 * 32 + 6 * 96 + 5 * 2 * 16)
    dec = 2 * (15 * 32 + 12 * 16 + 4 * 32 + 6 * 48 + 5 * 2 * 4 + 5 * 2 * 8)
    head = 4 * (32 + 2 * 100)
    lora = 2 * 2 * (16 + 8)  # q and v of the self-attention: r·(h + i) each
    flops, memory, bits = analytic_costs(tiny_t5())
    assert memory.tolist() == [4 * params + dec + head + 16 * lora,
                               4 * params + dec + enc + head + 16 * lora]
    assert bits.tolist() == [32.0 * lora] * 2
    assert analytic_costs(tiny_t5("mezo"))[2].tolist() == [32.0, 32.0]


@pytest.mark.parametrize("method", ["lora", "full", "lora-checkpoint", "qlora", "mezo"])
@pytest.mark.parametrize(("b", "s", "t"), [(1, 16, 4), (4, 128, 32), (8, 512, 8)])
def test_flan_t5_costs_are_non_decreasing_in_depth(method, b, s, t):
    cfg = config_from_mapping(
        {"_family": "t5", "d_model": 512, "d_ff": 1024, "d_kv": 64, "num_heads": 6,
         "num_layers": 8, "vocab_size": 32128, "feed_forward_proj": "gated-gelu"}, "t5", "-")
    flops, memory, _ = analytic_costs(Workload(cfg, method, b, s, 16, target_len=t))
    assert np.all(np.diff(flops) >= 0)
    if method != "mezo":
        assert flops[8] > flops[7]  # crossing into the encoder costs more
    if method != "full":
        assert np.all(np.diff(memory) >= 0)
    elif b * s <= 16:
        # full fine-tuning of a decoder layer keeps optimizer state for its cross-attention
        # too (16 B × 4hi more than an encoder layer): with few tokens, block Ld + 1 needs
        # less memory than block Ld, and CRUNCH's monotone premise fails (allocators check it)
        assert memory[8] < memory[7]
        assert np.all(np.diff(memory[:8]) >= 0) and np.all(np.diff(memory[8:]) >= 0)


def _split(model, pattern, decoder_layers, layers, marker):  # type: ignore[no-untyped-def]
    import re

    blocks: list[list] = [[] for _ in range(layers)]
    for name, p in model.named_parameters():
        p.requires_grad_(False)
        found = re.search(pattern, name)
        if found is None or (marker and marker not in name):
            continue
        index = int(found.groups()[-1])
        if found.groups()[0] == "decoder":
            blocks[decoder_layers - 1 - index].append(p)
        else:
            blocks[layers - 1 - index].append(p)
    return blocks


@pytest.mark.parametrize("method", ["lora", "full"])
def test_analytic_flops_agree_with_torch_flop_counter(method):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    hf = transformers.T5Config(
        d_model=16, d_ff=24, d_kv=4, num_heads=2, num_layers=2, num_decoder_layers=3,
        vocab_size=50, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        use_cache=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    model = transformers.T5ForConditionalGeneration(hf)
    if method == "lora":
        lora = peft.LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0,
                               target_modules=r".*\.SelfAttention\.(q|v)$")
        model = peft.get_peft_model(model, lora)
    model.train()
    blocks = _split(model, r"(encoder|decoder)\.block\.(\d+)\.", 3, 5,
                    "lora_" if method == "lora" else "")
    inputs = {"input_ids": torch.randint(3, 50, (2, 12)), "labels": torch.randint(3, 50, (2, 5))}
    counted = torch_step_flops(model, blocks, inputs)
    cfg = TransformerConfig("t", 16, 2, 2, 24, 50, 0, num_decoder_layers=3, head_dim=4,
                            gated_ffn=True, tie_word_embeddings=False)
    ours = analytic_flops(Workload(cfg, method, 2, 12, 5, lora_rank=2, target_len=5))
    assert ours == pytest.approx(counted, rel=0.01)  # exact with transformers 5.x eager T5


def test_roberta_analytic_flops_agree_with_torch_flop_counter():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    hf = transformers.RobertaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                    intermediate_size=64, vocab_size=60,
                                    max_position_embeddings=40, num_labels=2)
    model = transformers.RobertaForSequenceClassification(hf)
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                       target_modules=["query", "value"]))
    model.train()
    blocks = _split(model, r"(encoder)\.layer\.(\d+)\.", 0, 3, "lora_")
    inputs = {"input_ids": torch.randint(3, 60, (2, 16)), "labels": torch.randint(0, 2, (2,))}
    counted = torch_step_flops(model, blocks, inputs)
    ours = analytic_flops(Workload(TransformerConfig("r", 32, 3, 2, 64, 60, 40), "lora", 2, 16, 3,
                                   lora_rank=4))
    assert ours == pytest.approx(counted, rel=0.01)


# ---------------------------------------------------------------------------------------------
# Profiled seq2seq tables.

LD = 2  # two decoder and two encoder layers: blocks 1-2 decoder, 3-4 encoder
# seconds and bytes as the 11 regressors of seq2seq_features (fixed t = 8)
TIME = np.array([0.02, 1e-3, 2e-5, 1e-8, 0.004, 5e-4, 1e-5, 0.006, 3e-5, 2e-8, 1e-5])
MEMORY = np.array([4e8, 1e6, 3e4, 5.0, 2e5, 6e5, 1e4, 3e5, 5e4, 30.0, 2e4])
GRID = [(b, s) for b in (1, 2, 4) for s in (32, 64, 128)]


def seq2seq_table(method="lora", flops=None, target_len=8, grid=GRID):  # type: ignore[no-untyped-def]
    """A profile of a 2+2-layer model; ``flops(b, s)`` gives the (4,) FLOPs column."""
    rows = []
    for b, s in grid:
        n = np.arange(1, 2 * LD + 1)
        x = seq2seq_features(n, b, s, LD)
        f = flops(b, s) if flops is not None else np.full(4, np.nan)
        for i in range(2 * LD):
            row = {c: 0 for c in PROFILE_COLUMNS}
            row.update(hardware="hw", model="tiny-t5", method=method, lora_rank=2, batch_size=b,
                       seq_len=s, target_len=target_len, block=i + 1, num_blocks=2 * LD,
                       compute_s=float(x[i] @ TIME), peak_memory_bytes=float(x[i] @ MEMORY),
                       flops=float(f[i]), trainable_params=96, device="cpu")
            rows.append(row)
    return pd.DataFrame(rows)


T5_22 = TransformerConfig("tiny-t5", 16, 2, 2, 24, 50, 0, num_decoder_layers=2, head_dim=4,
                          gated_ffn=True, tie_word_embeddings=False)


def t5_22(b=2, s=64, t=8, method="lora", rank=2):  # type: ignore[no-untyped-def]
    return Workload(T5_22, method, b, s, 4, lora_rank=rank, target_len=t)


def test_seq2seq_fit_recovers_its_coefficients_and_stays_monotone():
    assert len(SEQ2SEQ_FEATURES) == TIME.size
    fit = fit_profile(seq2seq_table(), decoder_layers=LD)
    assert (fit.decoder_layers, fit.target_len) == (LD, 8)
    assert np.abs(fit.time_residuals).max() < 1e-6
    assert np.abs(fit.memory_residuals).max() < 1e-6
    assert fit.time_coef == pytest.approx(TIME, rel=1e-4)
    n = np.arange(1, 5)
    # off the grid (b=3, s=48) the fit gives the generating model, non-decreasing in depth
    assert fit.compute_s(n, 3, 48) == pytest.approx(seq2seq_features(n, 3, 48, LD) @ TIME)
    costs = ProfiledCostModel({"hw": seq2seq_table()}).block_costs(t5_22(b=3, s=48), "hw")
    assert np.all(np.diff(costs.compute_s) > 0) and np.all(np.diff(costs.memory_bytes) > 0)
    assert costs.upload_bits.tolist() == [96 * 32.0] * 4


def test_seq2seq_regressors_count_crossed_layers_of_each_stack():
    x = seq2seq_features(np.arange(1, 5), 2, 10, LD)
    # columns d, e and x (times b·s) for blocks 1..4: decoder, decoder, encoder, encoder
    assert x[:, 4].tolist() == [1, 2, 2, 2]
    assert x[:, 7].tolist() == [0, 0, 1, 2]
    assert x[:, 10].tolist() == [0, 0, 20, 20]


def test_seq2seq_profile_checks_target_len_and_decoder_layers():
    model = ProfiledCostModel({"hw": seq2seq_table()})
    with pytest.raises(ScenarioError, match="model.target_len: .* target length 8, got 16"):
        model.block_costs(t5_22(t=16), "hw")
    with pytest.raises(ScenarioError, match="rank 2, got 4"):
        model.block_costs(t5_22(rank=4), "hw")
    with pytest.raises(ScenarioError, match="target_len 8 in the table but 0 decoder layers"):
        fit_profile(seq2seq_table())
    with pytest.raises(ScenarioError, match="2 batch sizes"):
        fit_profile(seq2seq_table(grid=[(2, 32), (2, 64), (2, 128)]), decoder_layers=LD)


def test_profile_flops_column_prices_block_flops_exactly():
    # a table whose FLOPs column is the exact count: the fit reproduces it off the grid
    table = seq2seq_table(flops=lambda b, s: analytic_flops(t5_22(b=b, s=s)))
    costs = ProfiledCostModel({"hw": table}).block_costs(t5_22(b=3, s=48), "hw")
    assert costs.flops_source == "profiled"
    assert costs.flops == pytest.approx(analytic_flops(t5_22(b=3, s=48)), rel=1e-9)
    # without the column (older tables) the analytic count is used and said so
    plain = ProfiledCostModel({"hw": seq2seq_table()}).block_costs(t5_22(), "hw")
    assert plain.flops_source == "analytic"
    assert plain.flops.tolist() == analytic_flops(t5_22()).tolist()
    # a (hypothetical) counter that reports 10% more is followed, not the analytic count
    table = seq2seq_table(flops=lambda b, s: 1.1 * analytic_flops(t5_22(b=b, s=s)))
    costs = ProfiledCostModel({"hw": table}).block_costs(t5_22(), "hw")
    assert costs.flops == pytest.approx(1.1 * analytic_flops(t5_22()), rel=1e-9)


def test_mezo_profile_uploads_one_scalar_per_block():
    model = ProfiledCostModel({"hw": seq2seq_table(method="mezo")})
    costs = model.block_costs(t5_22(method="mezo"), "hw")
    assert costs.upload_bits.tolist() == [32.0] * 4
    assert upload_bits("mezo", [96, 96], 16).tolist() == [16.0, 16.0]
    assert upload_bits("adapter", [96, 48], 16).tolist() == [1536.0, 768.0]


def test_engine_uses_each_class_block_flops_and_records_their_source():
    from tests.helpers import tiny_simulation

    sim = tiny_simulation()
    assert sim.flops_source == {"cpu-reference": "analytic"}
    sim.cost_model = TableCostModel(np.array([2.0, 4.0]), np.array([1e9, 2e9]),
                                    np.array([1e6, 1e6]), flops=np.array([7.0, 11.0]))
    sim.__post_init__()
    result = sim.run()
    assert result.metadata["flops_source"] == {"cpu-reference": "table"}
    assert result.device_rounds_frame().sort_values("block").flops.tolist() == [7.0, 11.0]


def test_flan_t5_scenario_runs_on_the_analytic_model():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    scenario = load_scenario(None, ['model.name="flan-t5-small"', "model.num_blocks=16",
                                    "model.target_len=16", 'cost.model="analytic"',
                                    "run.rounds=1", "devices.population.count=16"])
    assert scenario.model.target_len == 16
    sim = build_simulation(scenario)
    assert sim.workload.config.num_layers == 16
    dev = sim.run().device_rounds_frame()
    assert len(dev) == 16 and (dev.tokens == 8 * (128 + 16)).all()
    flops = analytic_flops(sim.workload)
    assert dev.sort_values("block").flops.tolist() == flops.tolist()
    assert AnalyticCostModel().block_costs(sim.workload, "cpu-reference").flops_source == (
        "analytic"
    )
