import pandas as pd
import pytest

from desim.errors import InputError
from desim.experiments.figures import draw_figures, reduction_figure, save_figure
from desim.experiments.sweep import expand, load_sweep_spec, run_sweep

pytest.importorskip("matplotlib")

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
    assert names == ["a-devices.csv", "a-devices.pdf", "a-devices.png"]
    assert (tmp_path / "a-devices.png").stat().st_size > 5000
    plotted = pd.read_csv(tmp_path / "a-devices.csv")
    summary = pd.read_parquet(stored / "results" / "fig_a_devices" / "summary.parquet")
    expect = summary.groupby(["allocator", "devices.population.count"]).latency_s_mean.mean()
    for _, row in plotted.iterrows():
        key = (row["allocator"], row["devices.population.count"])
        assert row["latency_s_mean"] == pytest.approx(expect[key])
        assert row["seeds"] == 2


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


def test_reduction_bars_are_paired_over_seeds(stored, tmp_path):
    summary = pd.read_parquet(stored / "results" / "fig_a_devices" / "summary.parquet")
    data = reduction_figure(summary, reference="greedy")
    row = data.table.set_index("baseline").loc["random"]
    g = summary[summary.allocator == "greedy"].set_index(["devices.population.count", "seed"])
    r = summary[summary.allocator == "random"].set_index(["devices.population.count", "seed"])
    expect = (100 * (1 - g.latency_s_mean / r.latency_s_mean)).mean()
    assert row.reduction_pct == pytest.approx(expect) and row.pairs == 4
    save_figure(data, tmp_path, "j")
    assert (tmp_path / "j.pdf").exists()


def test_missing_sweep_and_unknown_figure_are_clear(tmp_path):
    with pytest.raises(InputError, match="no stored sweep"):
        draw_figures(["b-bandwidth"], tmp_path, tmp_path)
    with pytest.raises(InputError, match="unknown figure"):
        draw_figures(["zzz"], tmp_path, tmp_path)


def test_jbba_convergence_dual_is_a_lower_bound(tmp_path):
    draw_figures(["f-jbba-convergence"], tmp_path, tmp_path)
    t = pd.read_csv(tmp_path / "f-jbba-convergence.csv")
    assert (t.dual_value <= t.best_primal_latency_s + 1e-9).all()
    assert (t.dual_value <= t.optimum_s + 1e-9).all()  # weak duality against the exact optimum
    assert (t.best_primal_latency_s >= t.optimum_s * (1 - 1e-9)).all()
    assert t.best_primal_latency_s.is_monotonic_decreasing
