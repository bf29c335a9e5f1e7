import json
from pathlib import Path

import pandas as pd
import pytest

from desim.errors import InputError
from desim.experiments.paper_figures.base import FIGURES, draw_figures, save_figure, sweeps_of
from desim.experiments.paper_figures.comparisons import reduction_figure
from desim.experiments.paper_figures.runs import DUAL_ASCENT, EXACT, JBBA_SWEEP
from desim.experiments.sweep import run_sweep
from desim.experiments.sweep_spec import expand, load_sweep_spec

pytest.importorskip("matplotlib")

EXPERIMENTS = Path(__file__).parent.parent / "experiments"

SPEC = """
name = "fig_a_devices"
seeds = [0, 1]
[set]
"run.rounds" = 3
[grid]
"devices.population.count" = [12, 16]
[[allocators]]
name = "greedy"
[[allocators]]
name = "random"
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    root = tmp_path_factory.mktemp("fig")
    spec_path = root / "fig_a_devices.toml"
    spec_path.write_text(SPEC)
    spec, d = load_sweep_spec(spec_path)
    run_sweep(expand(spec, d), root / "results" / "fig_a_devices")
    return root


def test_line_figure_writes_png_pdf_csv_matching_results(stored, tmp_path):
    written = draw_figures(["a-devices"], stored / "results", tmp_path)
    names = sorted(p.name for p in written["a-devices"])
    assert names == ["a-devices.caption.txt", "a-devices.csv", "a-devices.pdf", "a-devices.png"]
    assert (tmp_path / "a-devices.png").stat().st_size > 5000
    plotted = pd.read_csv(tmp_path / "a-devices.csv")
    summary = pd.read_parquet(stored / "results" / "fig_a_devices" / "summary.parquet")
    by = summary.groupby(["allocator", "devices.population.count"])
    for _, row in plotted.iterrows():
        key = (row["allocator"], row["devices.population.count"])
        for col in ("latency_s_mean", "planned_latency_s_mean"):
            assert row[col] == pytest.approx(by[col].mean()[key])
            expect = 12.706204736174696 * by[col].std()[key] / 2**0.5  # t(0.975, 1), n = 2
            assert row[f"{col}_ci95"] == pytest.approx(expect)
        assert row["seeds"] == 2
    # seeds are replicates (population, trace offsets, fading): random's latency varies
    random = plotted[plotted.allocator == "random"]
    assert (random["latency_s_mean_ci95"] > 0).all()


def test_gantt_from_a_stored_run(stored, tmp_path):
    import shutil

    shutil.copytree(
        stored / "results" / "fig_a_devices",
        stored / "results" / "fig_h_timeline",
        dirs_exist_ok=True,
    )
    draw_figures(["h-gantt"], stored / "results", tmp_path)
    table = pd.read_csv(tmp_path / "h-gantt.csv")
    assert set(table["round"]) == {0, 1, 2}
    assert (table.upload_end_s >= table.upload_start_s).all()
    # the round boundaries drawn are the stored run's round start and end times
    summary = pd.read_parquet(stored / "results" / "fig_h_timeline" / "summary.parquet")
    key = summary[summary.status == "ok"].run_key.iloc[0]
    run = stored / "results" / "fig_h_timeline" / "runs" / key
    rounds = pd.read_parquet(run / "rounds.parquet")
    got = table.groupby("round")[["round_start_s", "round_end_s"]].first()
    assert got.round_start_s.tolist() == rounds.start_s.iloc[:3].tolist()
    assert (table.compute_start_s >= table.round_start_s).all()
    assert (table.upload_end_s <= table.round_end_s).all()


def test_reduction_bars_are_paired_over_seeds(stored, tmp_path):
    summary = pd.read_parquet(stored / "results" / "fig_a_devices" / "summary.parquet")
    data = reduction_figure(summary, reference="greedy")
    realised = data.table[data.table.quantity == "realised"]
    row = realised.set_index("baseline").loc["random"]
    g = summary[summary.allocator == "greedy"].set_index(["devices.population.count", "seed"])
    r = summary[summary.allocator == "random"].set_index(["devices.population.count", "seed"])
    diffs = 100 * (1 - g.latency_s_mean / r.latency_s_mean)
    assert row.reduction_pct == pytest.approx(diffs.mean()) and row.pairs == 4
    assert row.reduction_pct_ci95 == pytest.approx(3.182446305284263 * diffs.std() / 2)  # t(3)
    save_figure(data, tmp_path, "j")
    assert (tmp_path / "j.pdf").exists()


def test_missing_sweep_and_unknown_figure_are_clear(tmp_path):
    with pytest.raises(InputError, match="no stored sweep"):
        draw_figures(["b-bandwidth"], tmp_path, tmp_path)
    with pytest.raises(InputError, match=r"unknown figure 'zzz'; known: .*a-devices.*dlora-kr"):
        draw_figures(["a-devices", "zzz"], tmp_path, tmp_path)  # before drawing anything


def run_shipped_spec(name: str, results: Path, **overrides) -> Path:
    """Run ``experiments/<name>.toml`` (``overrides``: extra ``[set]`` keys) into ``results``."""
    spec, d = load_sweep_spec(EXPERIMENTS / f"{name}.toml")
    if overrides:
        spec = spec.model_copy(update={"set": {**spec.set, **overrides}})
    run_sweep(expand(spec, d), results / name)
    return results / name


def test_every_figure_names_a_shipped_spec_for_each_sweep_it_reads():
    for name, entry in FIGURES.items():
        for sweep in sweeps_of(entry):
            spec, _ = load_sweep_spec(EXPERIMENTS / f"{sweep}.toml")
            assert spec.name == sweep, name


def test_jbba_convergence_dual_is_a_lower_bound(tmp_path):
    with pytest.raises(InputError, match="no stored sweep"):  # drawn from stored runs only
        draw_figures(["f-jbba-convergence"], tmp_path, tmp_path)
    out = run_shipped_spec(JBBA_SWEEP, tmp_path)
    draw_figures(["f-jbba-convergence"], tmp_path, tmp_path)
    t = pd.read_csv(tmp_path / "f-jbba-convergence.csv")
    assert (t.dual_value <= t.best_primal_latency_s + 1e-9).all()
    assert (t.dual_value <= t.optimum_s + 1e-9).all()  # weak duality against the exact optimum
    assert (t.best_primal_latency_s >= t.optimum_s * (1 - 1e-9)).all()
    assert t.best_primal_latency_s.is_monotonic_decreasing
    # the plotted trace is the one the dual-ascent run stored, the optimum the exact run's
    summary = pd.read_parquet(out / "summary.parquet").set_index("allocator")
    meta = json.loads((out / "runs" / summary.loc[DUAL_ASCENT, "run_key"] / "run.json").read_text())
    stored = [d for d in meta["allocator_diagnostics"] if d["round"] == 0][0]["trace"]
    assert t[["iteration", "dual_value", "best_primal_latency_s"]].values.tolist() == stored
    assert t.optimum_s.iloc[0] == summary.loc[EXACT, "planned_latency_s_mean"]  # one round
    # the shipped instance shows convergence: the ascent improves its first primal point and
    # the duality gap falls by more than a factor 10 (round 0 of K = 20, seed 0 would not)
    assert t.best_primal_latency_s.iloc[-1] < t.best_primal_latency_s.iloc[0] * (1 - 1e-3)
    assert t.duality_gap_rel.iloc[-1] < t.duality_gap_rel.iloc[0] / 10
    assert t.duality_gap_rel.is_monotonic_decreasing
