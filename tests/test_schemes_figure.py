"""The schemes comparison figure: its table is computed from the stored runs exactly."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from desim.errors import InputError
from desim.experiments.paper_figures.base import draw_figures
from desim.experiments.paper_figures.comparisons import (
    DLORA_SWEEP,
    EPOCH_SAMPLES,
    FL_LORA_SWEEP,
    SCHEME_WORKLOADS,
    dlora_reduction_table,
)
from desim.experiments.sweep import run_sweep
from desim.experiments.sweep_spec import expand, load_sweep_spec

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
JETSON = EXPERIMENTS / "scenarios" / "jetson-flan-t5-small.toml"

pytest.importorskip("matplotlib")

SPEC = """
name = "fig_schemes"
seeds = [0]
[set]
"run.rounds" = 2
[grid]
"scheme.name" = ["deft", "fl-lora", "dlora", "offload"]
[[allocators]]
name = "greedy"
"""


def _sweep(tmp_path: Path, text: str, name: str) -> Path:
    spec_path = tmp_path / f"{name}.toml"
    spec_path.write_text(text)
    spec, d = load_sweep_spec(spec_path)
    out = tmp_path / "results" / name
    run_sweep(expand(spec, d), out)
    return out


def test_schemes_figure_table_matches_the_stored_runs(tmp_path):
    out = _sweep(tmp_path, SPEC, "fig_schemes")
    t5_spec = SPEC.replace('name = "fig_schemes"', f'name = "fig_schemes_t5"\nbase = "{JETSON}"')
    out_t5 = _sweep(tmp_path, t5_spec, "fig_schemes_t5")
    draw_figures(["schemes"], tmp_path / "results", tmp_path / "fig")
    both = pd.read_csv(tmp_path / "fig" / "schemes.csv")
    assert both["workload"].unique().tolist() == [w.label for w in SCHEME_WORKLOADS]
    t5 = both[both["workload"] == SCHEME_WORKLOADS[1].label].set_index("scheme")
    # FLAN-T5-small on 16 boards: DEFT places its 16 blocks on all 16; offload sends 16
    # mini-batches of b=8 sequences of s + t = 128 + 32 token ids of 32 bits
    assert t5.loc["deft", "participants"] == 16
    assert t5.loc["offload", "bits_sent"] == 16 * 8 * (128 + 32) * 32
    summary = pd.read_parquet(out_t5 / "summary.parquet").set_index("scheme.name")
    rounds = pd.read_parquet(out_t5 / "runs" / summary.loc["fl-lora", "run_key"] / "rounds.parquet")
    assert t5.loc["fl-lora", "epoch_s"] == pytest.approx(
        SCHEME_WORKLOADS[1].epoch_samples / rounds.samples.mean() * rounds.latency_s.mean()
    )
    table = both[both["workload"] == SCHEME_WORKLOADS[0].label].set_index("scheme")
    assert table.index.tolist() == ["deft", "fl-lora", "dlora", "offload"]
    summary = pd.read_parquet(out / "summary.parquet").set_index("scheme.name")
    for scheme in table.index:
        run = out / "runs" / summary.loc[scheme, "run_key"]
        rounds = pd.read_parquet(run / "rounds.parquet")
        dev = pd.read_parquet(run / "device_rounds.parquet")
        row = table.loc[scheme]
        assert row["latency_s"] == pytest.approx(rounds.latency_s.mean())
        assert row["epoch_s"] == pytest.approx(
            EPOCH_SAMPLES / rounds.samples.mean() * rounds.latency_s.mean()
        )
        assert row["device_energy_j"] == pytest.approx(dev.energy_j.sum() / 2)
        assert row["bits_sent"] == pytest.approx(
            (dev.upload_bits.sum() + dev.download_bits.sum()) / 2
        )
        assert row["peak_device_memory_bytes"] == dev.memory_bytes.max()
    # DEFT trains 12 blocks on 12 devices, one mini-batch (8 samples) each; offload moves the
    # same 12 mini-batches as token ids and keeps nothing on the devices
    assert table.loc["deft", "participants"] == 12
    assert table.loc["offload", "peak_device_memory_bytes"] == 0
    assert table.loc["offload", "bits_sent"] == 12 * 8 * 128 * 32


def _per_sample(out: Path, key: str) -> tuple[float, float]:
    r = pd.read_parquet(out / "runs" / key / "rounds.parquet")
    bits = r.upload_bits + r.download_bits
    return r.flops.sum() / r.samples.sum(), bits.sum() / r.samples.sum()


def test_dlora_kr_table_is_the_reduction_of_the_runs_it_names(tmp_path):
    results = tmp_path / "results"
    with pytest.raises(InputError, match="no stored sweep"):  # drawn from stored runs only
        dlora_reduction_table(results)
    for name in (DLORA_SWEEP, FL_LORA_SWEEP):  # the shipped specs, 4 rounds instead of 20
        spec, d = load_sweep_spec(EXPERIMENTS / f"{name}.toml")
        spec = spec.model_copy(update={"set": {**spec.set, "run.rounds": 4}})
        run_sweep(expand(spec, d), results / name)
    t = dlora_reduction_table(results)
    assert len(t) == 6
    measured = t[t["comparison"] == "DLoRA, KR on measured scores vs KR off"]
    # KR deactivates modules, so the device computes and sends less than with every module on
    assert (measured["desim_reduction_pct"] > 0).all()
    assert (measured["desim_reduction_pct"] < 100).all()
    assert measured["paper_reduction_pct"].tolist() == [82.0, 87.5]
    summary = pd.read_parquet(results / DLORA_SWEEP / "summary.parquet")
    on = summary[summary["scheme.kill_revive"] & (summary["scheme.kr_score"] == "trace")]
    off = summary[~summary["scheme.kill_revive"]]
    kr, plain = (_per_sample(results / DLORA_SWEEP, s.run_key.iloc[0]) for s in (on, off))
    fl_key = pd.read_parquet(results / FL_LORA_SWEEP / "summary.parquet").run_key.iloc[0]
    fl = _per_sample(results / FL_LORA_SWEEP, fl_key)
    assert measured["desim_reduction_pct"].tolist() == pytest.approx(
        [100 * (1 - kr[i] / plain[i]) for i in range(2)]
    )
    vs_fl = t[t["comparison"] == "DLoRA, KR on measured scores vs fl-lora"]
    assert vs_fl["desim_reduction_pct"].tolist() == pytest.approx(
        [100 * (1 - kr[i] / fl[i]) for i in range(2)]
    )
