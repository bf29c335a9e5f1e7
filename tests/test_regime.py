"""The regime map (figure l) and desim's own baselines (figure k): their tables and drawings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import desim
from desim.errors import InputError
from desim.experiments.paper_figures.base import mean_ci95, save_figure
from desim.experiments.paper_figures.desim_baselines import (
    baselines_table,
    delivery,
    desim_baselines_figure,
)
from desim.experiments.paper_figures.regime import memory_label, regime_figure, regime_table
from desim.io.shipped import default_scenario_path

AMPLE, NONE, SCARCE = [1e9, 4e9], [1.1e9], [0.6e9, 0.6e9, 0.6e9, 1.3e9]


def _runs(allocator: str, memory: list[float], latencies: list[float], *,
          bandwidth: float = 20e6, skipped: int = 0, status: str = "ok") -> list[dict]:
    return [{"model.method": "lora", "server.total_bandwidth_hz": bandwidth,
             "devices.population.memory_bytes.values": memory, "allocator": allocator,
             "seed": seed, "status": status, "skipped_rounds": skipped,
             "latency_s_mean": lat} for seed, lat in enumerate(latencies)]


def _deft_summary() -> pd.DataFrame:
    nan = float("nan")
    rows = [
        *_runs("jbba", AMPLE, [2.0, 4.0]),
        *_runs("crunch+equal", AMPLE, [2.5, 2.5]),
        *_runs("single-device (pooled)", AMPLE, [9.0, 11.0]),
        # no device holds the deepest block: every round skipped for everyone
        *_runs("jbba", NONE, [nan, nan], skipped=5),
        *_runs("crunch+equal", NONE, [nan, nan], skipped=5),
        *_runs("single-device (pooled)", NONE, [nan, nan], skipped=5),
        # jbba infeasible in one seed: it does not count; crunch+equal does
        *_runs("jbba", SCARCE, [1.0, nan], skipped=0),
        *_runs("crunch+equal", SCARCE, [3.0, 5.0]),
        *_runs("single-device (pooled)", SCARCE, [8.0, 8.0]),
    ]
    rows[12]["skipped_rounds"] = 5  # jbba, SCARCE, seed 1
    return pd.DataFrame(rows)


def _offload_summary() -> pd.DataFrame:
    rows = []
    for speed, lat in ((1, 50.0), (10, 5.0), (100, 0.5)):
        for seed, jitter in enumerate((-0.25, 0.25)):
            rows.append({"model.method": "lora", "server.total_bandwidth_hz": 20e6,
                         "allocator": f"offload x{speed}", "seed": seed, "status": "ok",
                         "skipped_rounds": 0, "latency_s_mean": lat + jitter * lat / 50})
    return pd.DataFrame(rows)


def test_memory_regimes_read_as_budgets():
    assert memory_label([1e9, 1.5e9, 2e9, 4e9]) == "1, 1.5, 2, 4 GB"
    assert memory_label(SCARCE) == "0.6 GB (3/4), 1.3 GB (1/4)"
    assert memory_label(NONE) == "1.1 GB"


def test_regime_table_ratios_and_infeasible_cells():
    t = regime_table(_deft_summary(), _offload_summary())
    assert len(t) == 9  # 3 memory regimes x 3 server speeds at one method and bandwidth
    cell = {(r["memory"], r["server_speed"]): r for _, r in t.iterrows()}
    ample, none, scarce = memory_label(AMPLE), memory_label(NONE), memory_label(SCARCE)
    # ample: DEFT = crunch+equal 2.5 (jbba's mean is 3); single-device (pooled) 10
    x1 = cell[(ample, 1.0)]
    assert (x1["deft_s"], x1["deft_allocator"], x1["pooled_s"]) == (2.5, "crunch+equal", 10.0)
    assert (x1["baseline"], x1["baseline_s"], x1["ratio"]) == ("single-device (pooled)", 10.0,
                                                               0.25)
    assert x1["status"] == "DEFT wins" and x1["deft_wins"]
    x10, x100 = cell[(ample, 10.0)], cell[(ample, 100.0)]
    assert (x10["baseline"], x10["ratio"], x10["status"]) == ("offload", 0.5, "DEFT wins")
    assert (x100["ratio"], x100["status"], x100["deft_wins"]) == (5.0, "DEFT loses", False)
    # no device holds the deepest block: DEFT and single-device infeasible, offload remains
    for speed, lat in ((1.0, 50.0), (10.0, 5.0), (100.0, 0.5)):
        c = cell[(none, speed)]
        assert c["status"] == "DEFT infeasible" and not c["single_device_feasible"]
        assert np.isnan(c["deft_s"]) and np.isnan(c["ratio"]) and not c["deft_wins"]
        assert (c["baseline"], c["baseline_s"]) == ("offload", lat)
    # jbba infeasible in one seed of two: DEFT is crunch+equal's mean, 4
    s = cell[(scarce, 1.0)]
    assert (s["deft_s"], s["deft_allocator"], s["ratio"]) == (4.0, "crunch+equal", 0.5)


def test_a_summary_without_an_axis_is_one_clear_error():
    with pytest.raises(InputError, match=r"^fig_regime_offload: the summary has no axis "
                                         r"model.method; the sweep spec must list it"):
        regime_table(_deft_summary(), _offload_summary().drop(columns="model.method"))


def test_failed_runs_make_a_cell_missing_not_infeasible():
    deft = _deft_summary()
    deft.loc[0, ["status", "latency_s_mean"]] = ["failed", float("nan")]  # jbba, ample, seed 0
    t = regime_table(deft, _offload_summary())
    ample = t[t["memory"] == memory_label(AMPLE)]
    assert ample["status"].tolist() == ["missing runs"] * 3


def test_mean_ci95_is_students_at_95_percent():
    mean, half, n = mean_ci95([1.0, 2.0, 3.0, float("nan")])
    # t.ppf(0.975, 2) = 4.302652729749462; s = 1
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302652729749462 / np.sqrt(3),
                                                           rel=1e-12)
    assert mean_ci95([7.0]) == (7.0, 0.0, 1)


def test_baselines_table_states_what_each_round_delivers():
    summary = pd.DataFrame({"allocator": ["jbba", "jbba", "own", "own", "pool", "off"],
                            "latency_s_mean": [1.0, 3.0, 0.5, 0.5, 9.0, 5.0]})
    sections = {"jbba": {"name": "jbba"}, "own": {"name": "single-device", "data": "own"},
                "pool": {"name": "single-device", "data": "pooled"},
                "off": {"name": "offload", "server_speed_factor": 10.0}}
    t = baselines_table(summary, sections, num_blocks=12, batch_size=8)
    assert t["allocator"].tolist() == ["jbba", "own", "pool", "off"]
    assert t["latency_s_mean"].tolist() == [2.0, 0.5, 9.0, 5.0]
    assert t["samples_per_round"].tolist() == [96, 8, 96, 96]
    assert t["samples_per_update"].tolist() == [8, 8, 96, 96]
    assert t["block_updates"].tolist() == [12] * 4
    assert t["latency_s_mean_ci95"].iloc[1] == 0.0 and t["seeds"].tolist() == [2, 2, 1, 1]
    assert delivery({"name": "single-device"}, 12, 8)["data"] == "the trainer's own batch"


# --- one tiny real sweep of each -----------------------------------------------------------


def _spec(path, name: str, body: str) -> None:
    lora = default_scenario_path().parent / "profiles" / "cpu-reference_roberta-base_lora.csv"
    path.joinpath(f"{name}.toml").write_text(
        f'name = "{name}"\nbase = "default"\n{body}\n[set]\n"run.rounds" = 1\n'
        f'"run.on_infeasible" = "skip"\n"devices.population.count" = 12\n'
        f'"cost.profiles.cpu-reference" = "{lora}"\n')


def _sweep(path, name: str) -> None:
    spec, spec_dir = desim.load_sweep_spec(path / f"{name}.toml")
    desim.run_sweep(desim.expand(spec, spec_dir), path / "results" / name, workers=1)


def test_tiny_real_sweeps_draw_both_figures(tmp_path):
    alloc = '[[allocators]]\nname = "{}"\nlabel = "{}"\n{}\n'
    deft = "".join(alloc.format(*a) for a in (
        ("jbba", "jbba", ""), ("crunch", "crunch+equal", 'bandwidth = "equal"'),
        ("single-device", "single-device (pooled)", 'data = "pooled"')))
    axes = '[grid]\n"model.method" = ["lora"]\n"server.total_bandwidth_hz" = [20e6]\n'
    _spec(tmp_path, "fig_regime", 'seeds = [0]\n' + axes
          + '"devices.population.memory_bytes.values" = [[4e9], [1.1e9]]\n' + deft)
    _spec(tmp_path, "fig_regime_offload", "seeds = [0]\n" + axes
          + alloc.format("offload", "offload x10", "server_speed_factor = 10.0"))
    k = "".join(alloc.format(*a) for a in (
        ("jbba", "jbba (DEFT)", ""), ("single-device", "single-device (own)", ""),
        ("single-device", "single-device (pooled)", 'data = "pooled"')))
    _spec(tmp_path, "fig_k_desim_baselines", "seeds = [0, 1]\n" + k)
    for name in ("fig_regime", "fig_regime_offload", "fig_k_desim_baselines"):
        _sweep(tmp_path, name)
    results = tmp_path / "results"
    regime = regime_figure(results)
    t = regime.table.set_index("memory")
    assert t.loc["4 GB", "status"] in {"DEFT wins", "DEFT loses"}
    assert np.isfinite(t.loc["4 GB", "ratio"]) and t.loc["4 GB", "single_device_feasible"]
    assert t.loc["1.1 GB", "status"] == "DEFT infeasible"
    assert not t.loc["1.1 GB", "single_device_feasible"]
    assert t.loc["1.1 GB", "baseline"] == "offload"
    # the pooled trainer computes N = 12 mini-batches: DEFT, one each in parallel, is faster
    assert t.loc["4 GB", "deft_s"] < t.loc["4 GB", "pooled_s"]
    k_fig = desim_baselines_figure(results)
    assert k_fig.table["samples_per_round"].tolist() == [96, 8, 96]
    assert k_fig.table["seeds"].tolist() == [2, 2, 2]
    for name, data in (("l", regime), ("k", k_fig)):
        assert (tmp_path / "figs" / f"{name}.png") in save_figure(data, tmp_path / "figs", name)
