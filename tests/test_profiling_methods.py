"""Profiler methods, FLOP counts, FLAN-T5 blocks and Kill-and-Revive scores on tiny models.

Needs the ``profile`` extra. Models: RoBERTa with hidden 64, 4 layers, intermediate 128,
vocabulary 100; T5 with d_model 32, 2 encoder and 3 decoder layers.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from desim.cli.main import main
from desim.errors import InputError
from desim.io.calibration import read_kr_scores, read_profile, write_profile

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from desim.io.model_configs import model_config_data  # noqa: E402
from desim.profiling import ProfileRequest, run_profile  # noqa: E402
from desim.profiling.measure import (  # noqa: E402
    block_optimizers,
    flops_by_depth,
    live_peak_by_depth,
)
from desim.profiling.mezo import mezo_step  # noqa: E402
from desim.profiling.models import build_model, make_inputs  # noqa: E402

ROBERTA = {
    "model_type": "roberta", "hidden_size": 64, "num_hidden_layers": 4,
    "num_attention_heads": 2, "intermediate_size": 128, "vocab_size": 100,
    "max_position_embeddings": 130, "pad_token_id": 1, "type_vocab_size": 1,
    "layer_norm_eps": 1e-05,
}
T5 = {
    "model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 2, "num_layers": 2,
    "num_decoder_layers": 3, "vocab_size": 100, "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 8, "tie_word_embeddings": False,
    "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1,
}
B, S = 4, 64


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for name, cfg in (("tiny-roberta", ROBERTA), ("tiny-t5", T5)):
        out[name] = folder / f"{name}.json"
        out[name].write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def tables(paths):
    """One grid point (b=4, s=64) of the tiny RoBERTa for four methods."""
    return {
        m: run_profile(ProfileRequest(str(paths["tiny-roberta"]), m, (B,), (S,), repeats=1,
                                      warmup=0))
        for m in ("lora", "full", "lora-checkpoint", "mezo")
    }


def _meta(paths, method, name="tiny-roberta", target=0):
    data = model_config_data(str(paths[name]))
    model, blocks = build_model(data, method, device="meta")
    inputs = make_inputs(data, B, S, target, "meta", 0)
    return model, blocks, block_optimizers(blocks, method), inputs


# ---- FLOPs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["lora", "full", "lora-checkpoint", "mezo"])
def test_flops_on_meta_equal_flops_on_cpu(paths, method):
    data = model_config_data(str(paths["tiny-roberta"]))
    counts = []
    for device in ("cpu", "meta"):
        model, blocks = build_model(data, method, device=device)
        inputs = make_inputs(data, 2, 24, 0, device, 0)
        counts.append(flops_by_depth(model, blocks, block_optimizers(blocks, method), inputs))
    assert list(counts[0]) == list(counts[1])
    assert (counts[0] > 0).all()


def test_flops_of_checkpointing_and_mezo_follow_from_the_forward(paths, tables):
    from torch.utils.flop_counter import FlopCounterMode

    model, _, _, inputs = _meta(paths, "lora")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    forward = counter.get_total_flops()
    lora = tables["lora"]["flops"].to_numpy()
    # MeZO: exactly two forward passes, at every depth
    assert list(tables["mezo"]["flops"]) == [2 * forward] * 4
    # checkpointing recomputes the forward of each crossed layer: n x one layer's forward
    extra = tables["lora-checkpoint"]["flops"].to_numpy() - lora
    assert extra[0] > 0
    assert list(extra) == [n * extra[0] for n in (1, 2, 3, 4)]
    # the backward pass to block n crosses n layers: FLOPs grow by one layer's backward
    assert len(set(np.diff(lora))) == 1 and np.diff(lora)[0] > 0


# ---- memory --------------------------------------------------------------------------------

def test_memory_ordering_mezo_lora_full_at_every_depth(tables):
    mezo, lora, full = (tables[m]["peak_memory_bytes"].to_numpy() for m in ("mezo", "lora", "full"))
    assert (mezo < lora).all(), (mezo, lora)
    assert (lora < full).all(), (lora, full)
    assert set(tables["mezo"]["memory_method"]) == {"live-tensors"}
    assert (tables["mezo"][["saved_bytes", "grad_bytes", "optimizer_bytes"]] == 0).all().all()


def test_live_tensor_peak_cross_checks_the_saved_tensor_accounting(paths, tables):
    live = {m: live_peak_by_depth(*_meta(paths, m)) for m in ("lora", "full")}
    for m in ("lora", "full"):
        accounted = tables[m]["peak_memory_bytes"].to_numpy()
        assert (live[m] >= accounted).all(), (m, live[m], accounted)
    # for LoRA the live peak is the accounted peak plus the forward pass's transients at its
    # high-water mark: less than what one layer keeps for backward
    accounted = tables["lora"]["peak_memory_bytes"].to_numpy()
    diff = live["lora"] - accounted
    assert (diff > 0).all() and (diff < np.diff(accounted).min()).all(), diff
    mezo = tables["mezo"]["peak_memory_bytes"].to_numpy()
    assert (mezo < live["lora"]).all() and (live["lora"] < live["full"]).all()


def test_checkpointing_lowers_activation_memory(paths, tables):
    lora, ckpt = tables["lora"], tables["lora-checkpoint"]
    deepest = 3
    assert ckpt["saved_bytes"].iloc[deepest] < lora["saved_bytes"].iloc[deepest] / 4
    params = lora["param_bytes"].iloc[0]
    live_lora = live_peak_by_depth(*_meta(paths, "lora"))
    assert ckpt["peak_memory_bytes"].iloc[deepest] - params < (live_lora[deepest] - params) / 2
    # what checkpointing keeps: one layer input (b x s x h fp32) per crossed layer
    assert list(np.diff(ckpt["saved_bytes"])) == [4 * B * S * 64] * 3
    assert set(ckpt["memory_method"]) == {"live-tensors"}


def test_mezo_step_moves_along_the_regenerated_direction():
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    for p in lin.parameters():
        p.requires_grad_(False)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x, y):
            return type("Out", (), {"loss": ((self.lin(x) - y) ** 2).mean()})

    model = Model()
    x, y = torch.randn(5, 3), torch.randn(5, 1)
    params = [lin.weight]
    before = lin.weight.clone()
    eps, lr = 1e-2, 0.5
    z = torch.randn(lin.weight.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        lin.weight += eps * z
        plus = model(x, y).loss
        lin.weight -= 2 * eps * z
        minus = model(x, y).loss
        lin.weight.copy_(before)
    g = (plus - minus) / (2 * eps)
    mezo_step(model, params, {"x": x, "y": y}, seed=7, eps=eps, lr=lr)
    assert torch.allclose(lin.weight, before - lr * g * z, atol=1e-6)
    mezo_step(model, params, {"x": x, "y": y}, seed=8, eps=eps, lr=0.0)
    assert torch.allclose(lin.weight, before - lr * g * z, atol=1e-6)  # lr 0: restored


# ---- qlora ---------------------------------------------------------------------------------

def test_qlora_without_bitsandbytes_is_one_clear_error(paths, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    code = main(["profile", "--model", str(paths["tiny-roberta"]), "--method", "qlora",
                 "--batch", "1", "--seq-len", "8", "--out", "x.csv"])
    err = capsys.readouterr().err
    assert code == 2
    assert "bitsandbytes" in err and "analytic-estimate" in err and "Traceback" not in err


def test_qlora_profile_where_bitsandbytes_runs(paths):
    pytest.importorskip("bitsandbytes")
    q = run_profile(ProfileRequest(str(paths["tiny-roberta"]), "qlora", (2,), (16,), repeats=1,
                                   warmup=0))
    lora = run_profile(ProfileRequest(str(paths["tiny-roberta"]), "lora", (2,), (16,), repeats=1,
                                      warmup=0))
    assert (q["param_bytes"] < lora["param_bytes"]).all()  # 4-bit layer weights
    assert list(q["trainable_params"]) == list(lora["trainable_params"])
    assert list(q["flops"]) == list(lora["flops"])  # counted on the LoRA model of same shapes
    assert set(q["memory_method"]) == {"live-tensors"}


# ---- FLAN-T5 -------------------------------------------------------------------------------

def test_t5_blocks_count_decoder_then_encoder(paths):
    t = run_profile(ProfileRequest(str(paths["tiny-t5"]), "full", (2,), (16,), repeats=1,
                                   warmup=0, target_len=8))
    assert list(t["block"]) == [1, 2, 3, 4, 5] and set(t["num_blocks"]) == {5}
    assert set(t["target_len"]) == {8}
    h, f, inner = 32, 64, 16
    attention = 4 * h * inner  # q, k, v, o without biases
    encoder = attention + 3 * h * f + 2 * h  # gated FFN (wi_0, wi_1, wo) and two RMS norms
    decoder = 2 * attention + 3 * h * f + 3 * h
    bias = 8 * 2  # relative attention buckets x heads, in the first layer of each stack
    assert list(t["trainable_params"]) == [decoder, decoder, decoder + bias, encoder,
                                           encoder + bias]
    # the backward pass to an encoder block crosses the whole decoder
    flops = t["flops"].to_numpy()
    assert (np.diff(flops) > 0).all()
    assert (np.diff(t["peak_memory_bytes"]) > 0).all()


def test_t5_lora_targets_self_attention_query_and_value(paths):
    t = run_profile(ProfileRequest(str(paths["tiny-t5"]), "lora", (2,), (16,), repeats=1,
                                   warmup=0))
    assert set(t["target_len"]) == {32}  # the default
    r, h, inner = 8, 32, 16
    assert set(t["trainable_params"]) == {2 * r * (h + inner)}


def test_t5_checkpointing_keeps_one_input_per_crossed_decoder_layer(paths):
    model, blocks, _, inputs = _meta(paths, "lora-checkpoint", "tiny-t5", target=8)
    from desim.profiling.measure import saved_bytes_by_depth

    saved = saved_bytes_by_depth(model, blocks, inputs)
    # decoder blocks 1..3: one more decoder layer input (b x t x d_model fp32) per block; no
    # grad-requiring position bias drags the layers below block n into the graph
    assert list(np.diff(saved[:3])) == [4 * B * 8 * 32] * 2


def test_target_len_is_rejected_for_encoder_only_models(paths):
    with pytest.raises(InputError, match="--target-len: .* encoder-only"):
        run_profile(ProfileRequest(str(paths["tiny-roberta"]), "lora", (1,), (8,),
                                   target_len=4))


def test_shipped_flan_t5_configs_load():
    small, base = model_config_data("flan-t5-small"), model_config_data("flan-t5-base")
    assert small["_family"] == base["_family"] == "t5"
    assert (small["d_model"], small["num_heads"], small["num_layers"]) == (512, 6, 8)
    assert (base["d_model"], base["num_heads"], base["num_decoder_layers"]) == (768, 12, 12)


# ---- FLOPs of older tables -----------------------------------------------------------------

def test_count_flops_fills_an_older_table(paths, tables, tmp_path, capsys):
    old = tmp_path / "old.csv"
    write_profile(tables["lora"], old)
    import pandas as pd

    frame = pd.read_csv(old).drop(columns=["flops", "target_len"])
    frame.to_csv(old, index=False)
    loaded = read_profile(old)
    assert loaded["flops"].isna().all() and (loaded["target_len"] == 0).all()
    code = main(["profile", "--count-flops", str(old), "--model", str(paths["tiny-roberta"])])
    assert code == 0, capsys.readouterr().err
    assert list(read_profile(old)["flops"]) == list(tables["lora"]["flops"])


# ---- Kill-and-Revive scores ----------------------------------------------------------------

def test_kr_scores_command_writes_normalised_scores(paths, tmp_path, capsys):
    out = tmp_path / "kr.csv"
    code = main(["profile", "--kr-scores", "--model", str(paths["tiny-t5"]), "--batch", "2",
                 "--seq-len", "16", "--target-len", "8", "--steps", "3", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    scores = read_kr_scores(out)
    assert scores.shape == (3, 2 * (2 + 3))
    assert np.allclose(scores.mean(axis=1), 1.0)
    assert (scores > 0).all()
    import pandas as pd

    rows = pd.read_csv(out)
    assert list(rows.columns) == ["step", "module", "layer", "target", "score"]
    first = rows[rows["step"] == 1]
    assert list(first["module"]) == list(range(10))
    assert list(first["layer"]) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # encoder 1-2, decoder 3-5
    assert list(first["target"][:2]) == ["query", "value"]


def test_kr_scores_errors_are_one_line(paths, capsys):
    code = main(["profile", "--kr-scores", "--model", str(paths["tiny-roberta"]), "--batch",
                 "1,2", "--seq-len", "8", "--out", "x.csv"])
    assert code == 2
    assert "one --batch and one --seq-len" in capsys.readouterr().err
