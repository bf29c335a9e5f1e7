"""desim.profiling on a tiny RoBERTa (2 layers, hidden 32): needs the ``profile`` extra."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from desim.cli.main import main
from desim.errors import InputError, UnknownNameError
from desim.io.calibration import PROFILE_COLUMNS, read_profile, write_profile
from desim.profiling import ProfileRequest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from desim.profiling import run_profile  # noqa: E402
from desim.profiling.memory import SavedTensorMeter  # noqa: E402

TINY = {
    "model_type": "roberta",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 130,
    "pad_token_id": 1,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-05,
}


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def tiny_lora(tiny_path):
    request = ProfileRequest(str(tiny_path), "lora", (1, 4), (16, 32), repeats=5)
    return run_profile(request)


def test_saved_tensor_accounting_matches_hand_count():
    # y = relu(W x + b) with W trainable, x (2, 4) frozen; loss = sum(y * y).
    # addmm saves x for W's gradient: 2*4 floats = 32 B. relu saves its output y (2*3 floats
    # = 24 B), and mul saves y twice more: one storage, counted once. W is a parameter
    # (excluded). Total 56 B.
    lin = torch.nn.Linear(4, 3)
    lin.bias.requires_grad_(False)
    x = torch.randn(2, 4)
    with SavedTensorMeter(exclude=lin.parameters()) as meter:
        y = torch.relu(lin(x))
        loss = (y * y).sum()
    assert loss.grad_fn is not None  # the graph, which holds what was saved, is alive
    assert meter.saved_bytes == 56
    assert meter.tensors == 4


def test_tiny_profile_has_documented_columns_and_units(tiny_lora):
    t = tiny_lora
    assert list(t.columns) == list(PROFILE_COLUMNS)
    assert len(t) == 2 * 2 * 2  # batches x seq_lens x blocks
    assert sorted(set(t["block"])) == [1, 2]
    # LoRA r=8 on query and value: 2 * (32*8 + 8*32) values per layer
    assert set(t["trainable_params"]) == {2 * 2 * 32 * 8}
    assert (t["compute_s"] > 0).all() and (t["compute_s"] < 5).all()  # seconds
    recomposed = t["saved_bytes"] + t["param_bytes"] + t["grad_bytes"] + t["optimizer_bytes"]
    assert (t["peak_memory_bytes"] == recomposed).all()
    assert (t["grad_bytes"] == 4 * t["trainable_params"]).all()  # fp32 gradients
    # AdamW: two fp32 moments per value plus one step counter per tensor
    assert (t["optimizer_bytes"] >= 8 * t["trainable_params"]).all()
    assert set(t["clock"]) == {"thread-cpu"} and set(t["threads"]) == {1}
    assert set(t["memory_method"]) == {"saved-tensors"}


def test_tiny_profile_is_monotone_in_depth(tiny_lora):
    for _, g in tiny_lora.groupby(["batch_size", "seq_len"]):
        g = g.sort_values("block")
        assert np.all(np.diff(g["peak_memory_bytes"]) > 0)
        assert np.all(np.diff(g["saved_bytes"]) > 0)
        assert g["fwd_s"].nunique() == 1  # one forward pass shared by every depth
    # Measured times of a 2-layer toy differ by well under a millisecond between depths, which
    # timing noise can invert on a shared machine; time monotonicity is asserted on the
    # shipped profiles (tests/test_cost_profiled.py) and reported by `desim profile --validate`.


def test_meta_accounting_equals_cpu_accounting(tiny_path):
    from desim.io.model_configs import model_config_data
    from desim.profiling.measure import saved_bytes_by_depth
    from desim.profiling.models import build_model, make_inputs

    data = model_config_data(str(tiny_path))
    for method in ("lora", "full", "adapter", "ia3", "lora-checkpoint"):
        cpu = saved_bytes_by_depth(
            *build_model(data, method), make_inputs(data, 3, 24, 0, "cpu", 0)
        )
        meta = saved_bytes_by_depth(
            *build_model(data, method, device="meta"), make_inputs(data, 3, 24, 0, "meta", 0)
        )
        assert list(cpu) == list(meta)


# adapter: down 32x64 + 64, up 64x32 + 32; IA3 (peft's RoBERTa targets): key, value and
# attention output scale 32 outputs each, the feed-forward output scales its 64 inputs
@pytest.mark.parametrize(
    ("method", "per_layer"),
    [("full", None), ("adapter", 2 * 32 * 64 + 64 + 32), ("ia3", 3 * 32 + 64)],
)
def test_other_methods_profile(tiny_path, method, per_layer):
    t = run_profile(ProfileRequest(str(tiny_path), method, (2,), (16,), repeats=1, warmup=0))
    assert len(t) == 2
    if per_layer is not None:
        assert set(t["trainable_params"]) == {per_layer}
    else:  # full layer: attention 4(h^2+h), FFN 2hf+f+h, two LayerNorms 4h
        h, f = 32, 64
        assert set(t["trainable_params"]) == {4 * (h * h + h) + 2 * h * f + f + h + 4 * h}


def test_profile_round_trips_through_csv(tiny_lora, tmp_path):
    path = write_profile(tiny_lora, tmp_path / "p.csv")
    back = read_profile(path)
    assert back[["block", "batch_size", "peak_memory_bytes"]].equals(
        tiny_lora[["block", "batch_size", "peak_memory_bytes"]]
    )
    assert np.allclose(back["compute_s"], tiny_lora["compute_s"], rtol=1e-8)


def test_unknown_model_and_method_and_bad_batch_are_clear(tiny_path):
    with pytest.raises(UnknownNameError, match="unknown model 'nope'.*roberta-base"):
        run_profile(ProfileRequest("nope", "lora", (1,), (8,)))
    with pytest.raises(UnknownNameError, match="unknown method 'prefix'.*lora, adapter, ia3, full"):
        ProfileRequest(str(tiny_path), "prefix", (1,), (8,))
    with pytest.raises(InputError, match="--batch: must be a positive integer"):
        ProfileRequest(str(tiny_path), "lora", (0,), (8,))
    with pytest.raises(InputError, match="--seq-len: 600 exceeds"):
        run_profile(ProfileRequest(str(tiny_path), "lora", (1,), (600,)))


def test_cli_profile_and_validate(tiny_path, tmp_path, capsys):
    out = tmp_path / "tiny.csv"
    code = main(["profile", "--model", str(tiny_path), "--method", "lora", "--batch", "1,4",
                 "--seq-len", "16,32,48", "--repeats", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert len(read_profile(out)) == 12
    report = tmp_path / "val.csv"
    code = main(["profile", "--validate", str(out), "--model", str(tiny_path), "--points",
                 "2x24,3x40", "--repeats", "2", "--out", str(report)])
    text = capsys.readouterr().out
    assert code == 0
    assert "held-out MAPE" in text and "depth monotonicity" in text
    import pandas as pd

    summary = pd.read_csv(report)
    assert list(summary["batch_size"]) == [2, 3, 0]
    # memory is deterministic and exactly affine in the features: tiny error
    assert summary["memory_mape_pct"].max() < 1.0
    assert (tmp_path / "val-rows.csv").exists() and (tmp_path / "val-monotonicity.csv").exists()


def test_cli_profile_errors(tiny_path, capsys):
    assert main(["profile", "--model", str(tiny_path), "--method", "bogus", "--batch", "1",
                 "--seq-len", "8", "--out", "x.csv"]) == 2
    assert "unknown method 'bogus'" in capsys.readouterr().err
    assert main(["profile", "--model", str(tiny_path), "--batch", "-1", "--seq-len", "8",
                 "--out", "x.csv"]) == 2
    assert "--batch: must be a positive integer" in capsys.readouterr().err


def test_importing_desim_does_not_import_torch():
    code = (
        "import sys, desim, desim.cli.main, desim.engine.assembly, desim.costs.analytic, "
        "desim.io.atomic, desim.io.calibration, desim.io.model_configs, desim.io.outputs, "
        "desim.io.scenario, desim.io.shipped, desim.io.traces, desim.profiling;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
