"""The schemes comparison figure: its table is computed from the stored runs exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from desim.figures import EPOCH_SAMPLES, draw_figures
from desim.sweep import expand, load_sweep_spec, run_sweep

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


def test_schemes_figure_table_matches_the_stored_runs(tmp_path):
    spec_path = tmp_path / "fig_schemes.toml"
    spec_path.write_text(SPEC)
    spec, d = load_sweep_spec(spec_path)
    out = tmp_path / "results" / "fig_schemes"
    run_sweep(expand(spec, d), out)
    draw_figures(["schemes"], tmp_path / "results", tmp_path / "fig")
    table = pd.read_csv(tmp_path / "fig" / "schemes.csv").set_index("scheme")
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
