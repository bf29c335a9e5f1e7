"""The small-population figure (k-sweep) from a small run of its shipped spec."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from desim.experiments.paper_figures.base import draw_figures
from desim.experiments.sweep import run_sweep
from desim.experiments.sweep_spec import expand, load_sweep_spec

pytest.importorskip("matplotlib")

SPEC = Path(__file__).parent.parent / "experiments" / "fig_k_sweep.toml"
K = "devices.population.count"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    root = tmp_path_factory.mktemp("k_sweep")
    spec, folder = load_sweep_spec(SPEC)
    spec = spec.model_copy(update={"seeds": [0, 1], "set": {**spec.set, "run.rounds": 2},
                                   "grid": {K: [4, 12]}})
    run_sweep(expand(spec, folder), root / "fig_k_sweep")
    draw_figures(["k-sweep"], root, root / "out")
    summary = pd.read_parquet(root / "fig_k_sweep" / "summary.parquet")
    return summary, pd.read_csv(root / "out" / "k-sweep.csv"), root


def test_the_spec_spans_two_to_two_n_with_the_four_allocators():
    spec, _ = load_sweep_spec(SPEC)
    assert spec.grid[K][0] == 2 and spec.grid[K][-1] == 24  # N = 12 roberta-base blocks
    assert [a.label or a.name for a in spec.allocators] == [
        "crunch-multi", "single-device", "offload", "crunch+equal"]
    assert len(spec.seeds) >= 5


def test_one_block_per_device_is_drawn_only_from_k_equal_n(drawn):
    summary, table, _ = drawn
    assert (summary["status"] == "ok").all()  # crunch at K = 4 ran (as crunch-multi's fallback)
    crunch = table[table["allocator"] == "crunch+equal"]
    assert list(crunch[K]) == [12]
    assert set(table[table[K] == 4]["allocator"]) == {"crunch-multi", "single-device", "offload"}


def test_ratios_are_paired_by_seed_and_crunch_multi_never_plans_above_single_device(drawn):
    summary, table, _ = drawn
    ok = summary.set_index(["allocator", K, "seed"])
    for k in (4, 12):
        ratios = [ok.loc[("offload", k, s), "latency_s_mean"]
                  / ok.loc[("single-device", k, s), "latency_s_mean"] for s in (0, 1)]
        row = table[(table["allocator"] == "offload") & (table[K] == k)].iloc[0]
        assert row["latency_vs_single"] == pytest.approx(sum(ratios) / 2)
        multi = table[(table["allocator"] == "crunch-multi") & (table[K] == k)].iloc[0]
        assert multi["planned_vs_single"] <= 1 + 1e-12  # single-device is one of its candidates
        assert 1 <= multi["devices_used_mean"] <= min(k, 12)
    ref = table[table["allocator"] == "single-device"]
    assert (ref["latency_vs_single"] == 1.0).all()


def test_the_figure_is_drawn_with_its_caption(drawn):
    _, _, root = drawn
    assert (root / "out" / "k-sweep.png").stat().st_size > 5000
    caption = (root / "out" / "k-sweep.caption.txt").read_text()
    assert "single-device" in caption and "K >= N" in caption
