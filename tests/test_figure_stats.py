"""Statistics of the figures: t-intervals over seeds, paired reductions, captions.

Small synthetic summary tables stand in for stored sweeps, so no simulation runs here.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from desim.experiments.paper_figures.base import (
    FIGURES,
    PAPER_ALLOCATORS,
    FigureData,
    ci95_half_width,
    draw_figures,
    paired_reductions,
    save_figure,
    seed_stats,
)

pytest.importorskip("matplotlib")

EXPERIMENTS = Path(__file__).parent.parent / "experiments"
MINE = ("a-devices", "b-bandwidth", "c-memory", "d-heterogeneity", "e-solve-time",
        "f-jbba-convergence", "g-depth-profile", "h-gantt", "i-trace-cdf", "j-reduction",
        "schemes", "dlora-kr")
# t(0.975, 4) and t(0.975, 1), from a printed t table
T4, T1 = 2.7764451051977987, 12.706204736174696


def test_ci95_half_width_matches_a_hand_computation():
    # mean 3.2, squared deviations 4.84 + 1.44 + 0.04 + 0.64 + 7.84 = 14.8, s^2 = 14.8 / 4
    assert ci95_half_width([1, 2, 3, 4, 6]) == pytest.approx(T4 * math.sqrt(3.7) / math.sqrt(5))
    assert ci95_half_width([1, 2, 3, 4, 6]) == pytest.approx(2.388388, abs=1e-6)
    assert ci95_half_width([0.0, 2.0]) == pytest.approx(T1)  # s = sqrt(2), n = 2
    assert ci95_half_width([5.0]) == 0.0  # one seed: no interval, not NaN
    assert ci95_half_width([3.0, 3.0, 3.0]) == 0.0
    assert math.isnan(ci95_half_width([]))
    assert ci95_half_width([1, 2, 3, 4, 6, float("nan")]) == ci95_half_width([1, 2, 3, 4, 6])


def test_seed_stats_means_intervals_and_counts():
    frame = pd.DataFrame({"allocator": ["a"] * 3 + ["b"], "x": [1, 1, 1, 1],
                          "v": [1.0, 2.0, 6.0, 4.0]})
    t = seed_stats(frame, ["allocator", "x"], ["v"]).set_index("allocator")
    assert t.columns.tolist() == ["x", "v", "v_ci95", "seeds"]
    assert t.loc["a", "v"] == pytest.approx(3.0)
    # deviations -2, -1, 3: s^2 = 14 / 2 = 7; t(0.975, 2) = 4.302652729911275
    assert t.loc["a", "v_ci95"] == pytest.approx(4.302652729911275 * math.sqrt(7.0) / math.sqrt(3))
    assert t.loc["b", "seeds"] == 1 and t.loc["b", "v_ci95"] == 0.0


# ---------------------------------------------------------------------------------------------
# synthetic sweeps


def _summary(axis: dict[str, list], allocators=PAPER_ALLOCATORS, seeds=range(5),
             value: str = "latency_s_mean") -> pd.DataFrame:
    """One row per (point, allocator, seed); the realisation (and random) varies by seed."""
    (key, points), = axis.items()
    rows = []
    for p_i, point in enumerate(points):
        for a_i, alloc in enumerate(allocators):
            for seed in seeds:
                realisation = 1.0 + 0.1 * seed + 0.05 * seed**2  # same for every allocator
                lat = (1.0 + 0.2 * a_i + 0.1 * p_i) * realisation
                if alloc == "random":
                    lat *= 1.0 + 0.3 * ((seed * 7) % 5)
                rows.append({key: point, "allocator": alloc, "seed": seed, "status": "ok",
                             "run_key": f"k{p_i}{a_i}{seed}", "latency_s_mean": lat,
                             "planned_latency_s_mean": 0.9 * lat,
                             "solve_wall_s_mean": 1e-3 * lat})
    return pd.DataFrame(rows)


def _store(root: Path, sweep: str, summary: pd.DataFrame) -> None:
    (root / sweep).mkdir(parents=True)
    summary.to_parquet(root / sweep / "summary.parquet")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    results, out = root / "results", root / "fig"
    _store(results, "fig_a_devices", _summary({"devices.population.count": [12, 20, 30]}))
    _store(results, "fig_b_bandwidth", _summary({"server.total_bandwidth_hz": [1e6, 1e7]}))
    mem = _summary({"devices.population.memory_bytes.values": [0, 1]})
    mem["devices.population.memory_bytes.values"] = mem[
        "devices.population.memory_bytes.values"].map(lambda i: [1e9 * (i + 1), 2e9 * (i + 1)])
    _store(results, "fig_c_memory", mem)
    het = _summary({"devices.population.speed_factor.low": [2.0, 1.0]})
    het["devices.population.speed_factor.high"] = 4.0 / het[
        "devices.population.speed_factor.low"]
    _store(results, "fig_d_heterogeneity", het)
    solve = _summary({"devices.population.count": [12, 50]}, ("jbba", "crunch", "milp"),
                     range(3))
    _store(results, "fig_e_solve_time", solve)
    names = ["a-devices", "b-bandwidth", "c-memory", "d-heterogeneity", "e-solve-time",
             "j-reduction"]
    draw_figures(names, results, out)
    return results, out


@pytest.mark.parametrize("name", ["a-devices", "b-bandwidth", "c-memory", "d-heterogeneity",
                                  "e-solve-time"])
def test_line_figure_csv_has_a_nonzero_ci_wherever_seeds_vary(drawn, name):
    _, out = drawn
    t = pd.read_csv(out / f"{name}.csv")
    ci = [c for c in t.columns if c.endswith("_ci95")]
    assert ci and "seeds" in t
    for c in ci:
        value = c.removesuffix("_ci95")
        assert value in t
        assert t.columns.get_loc(c) == t.columns.get_loc(value) + 1  # beside its value
        # every synthetic realisation varies by seed, and random varies on top
        assert (t.loc[t["seeds"] >= 2, c] > 0).all(), c
    assert set(t["seeds"]) == ({3} if name == "e-solve-time" else {5})


def test_line_figure_ci_is_the_t_interval_of_the_seed_values(drawn):
    results, out = drawn
    t = pd.read_csv(out / "a-devices.csv").set_index(["allocator", "devices.population.count"])
    s = pd.read_parquet(results / "fig_a_devices" / "summary.parquet")
    vals = s[(s.allocator == "random") & (s["devices.population.count"] == 20)]
    x = vals["latency_s_mean"].to_numpy()
    expect = T4 * x.std(ddof=1) / math.sqrt(5)
    assert t.loc[("random", 20), "latency_s_mean_ci95"] == pytest.approx(expect)
    assert t.loc[("random", 20), "latency_s_mean"] == pytest.approx(x.mean())


def test_line_figures_draw_only_the_papers_allocators(tmp_path):
    extra = _summary({"devices.population.count": [12]},
                     (*PAPER_ALLOCATORS, "minsum", "single-device"), range(2))
    _store(tmp_path, "fig_a_devices", extra)
    draw_figures(["a-devices", "j-reduction"], tmp_path, tmp_path / "fig")
    a = pd.read_csv(tmp_path / "fig" / "a-devices.csv")
    j = pd.read_csv(tmp_path / "fig" / "j-reduction.csv")
    assert list(dict.fromkeys(a["allocator"])) == list(PAPER_ALLOCATORS)
    assert set(j["baseline"]) == set(PAPER_ALLOCATORS) - {"jbba"}


# ---------------------------------------------------------------------------------------------
# paired reductions


def test_paired_reduction_is_the_mean_of_per_seed_paired_differences():
    # seed 0: jbba 1.0 vs greedy 2.0 (50%); seed 1: jbba 2.0 vs greedy 2.5 (20%); rows shuffled
    s = pd.DataFrame({
        "allocator": ["greedy", "jbba", "jbba", "greedy"],
        "seed": [1, 0, 1, 0],
        "devices.population.count": [12, 12, 12, 12],
        "status": ["ok"] * 4,
        "latency_s_mean": [2.5, 1.0, 2.0, 2.0],
    })
    row = paired_reductions(s, "jbba").set_index("baseline").loc["greedy"]
    assert row["reduction_pct"] == pytest.approx(35.0)
    # differences 50 and 20: s = 15 sqrt(2), half-width t(0.975, 1) * 15
    assert row["reduction_pct_ci95"] == pytest.approx(T1 * 15.0)
    assert row["pairs"] == 2
    # unpaired, the means give 100 (1 - 1.5 / 2.25) = 33.3%: the pairing is what is reported
    assert row["reduction_pct"] != pytest.approx(100 * (1 - 1.5 / 2.25))


def test_reduction_figure_csv_pairs_every_seed_and_point(drawn):
    results, out = drawn
    j = pd.read_csv(out / "j-reduction.csv")
    s = pd.read_parquet(results / "fig_a_devices" / "summary.parquet")
    key = ["devices.population.count", "seed"]
    for quantity, col in (("realised", "latency_s_mean"), ("planned", "planned_latency_s_mean")):
        jb = s[s.allocator == "jbba"].set_index(key)[col]
        rnd = s[s.allocator == "random"].set_index(key)[col]
        diffs = (100 * (1 - jb / rnd)).to_numpy()
        row = j[(j.quantity == quantity) & (j.baseline == "random")].iloc[0]
        assert row["pairs"] == 15  # 3 points x 5 seeds
        assert row["reduction_pct"] == pytest.approx(diffs.mean())
        assert row["reduction_pct_ci95"] == pytest.approx(
            2.1447866879169273 * diffs.std(ddof=1) / math.sqrt(15))  # t(0.975, 14)
        assert row["reduction_pct_ci95"] > 0


# ---------------------------------------------------------------------------------------------
# schemes: paired ratios to deft


def test_schemes_ratio_ci_is_nonzero_over_seeds(tmp_path):
    schemes, seeds = ("deft", "fl-lora"), (0, 1, 2)
    for sweep in ("fig_schemes", "fig_schemes_t5"):
        rows = []
        for s_i, scheme in enumerate(schemes):
            for seed in seeds:
                key = f"{sweep}-{scheme}-{seed}"
                rows.append({"scheme.name": scheme, "allocator": "jbba", "seed": seed,
                             "status": "ok", "run_key": key})
                folder = tmp_path / sweep / "runs" / key
                folder.mkdir(parents=True)
                lat = (1.0 + seed) * (1.0 + s_i * (1 + 0.5 * seed))
                pd.DataFrame({"status": ["ok"] * 2, "latency_s": [lat, lat], "samples": [96] * 2,
                              "energy_j": [10.0 * lat] * 2, "upload_bits": [1e6] * 2,
                              "download_bits": [0.0] * 2, "tokens_per_s_per_w": [1.0] * 2,
                              "mfu": [0.1] * 2, "granularity": [1.0] * 2,
                              "active_devices": [12] * 2}).to_parquet(folder / "rounds.parquet")
                pd.DataFrame({"memory_bytes": [1e9]}).to_parquet(
                    folder / "device_rounds.parquet")
        (tmp_path / sweep / "summary.parquet").parent.mkdir(exist_ok=True)
        pd.DataFrame(rows).to_parquet(tmp_path / sweep / "summary.parquet")
    draw_figures(["schemes"], tmp_path, tmp_path / "fig")
    t = pd.read_csv(tmp_path / "fig" / "schemes.csv")
    fl = t[t.scheme == "fl-lora"].iloc[0]
    logs = np.log([2.0, 2.5, 3.0])  # fl-lora / deft of the same seed: 2 + 0.5 seed
    assert fl["latency_s_ratio"] == pytest.approx(math.exp(logs.mean()))
    assert fl["latency_s_log_ratio_ci95"] == pytest.approx(
        4.302652729911275 * logs.std(ddof=1) / math.sqrt(3))  # t(0.975, 2)
    assert fl["latency_s_log_ratio_ci95"] > 0
    deft = t[t.scheme == "deft"].iloc[0]
    assert deft["latency_s_ratio"] == 1.0 and deft["latency_s_log_ratio_ci95"] == 0.0


# ---------------------------------------------------------------------------------------------
# captions and specs


def test_every_figure_of_this_family_has_a_caption_written_beside_its_csv(drawn):
    _, out = drawn
    for name in MINE:
        assert len(FIGURES[name].obj.caption.split()) >= 15, name
    text = (out / "a-devices.caption.txt").read_text()
    assert text.strip() == FIGURES["a-devices"].obj.caption
    assert "trace-replay" in text and "95% Student-t" in text and "distinct" in text


def test_a_figure_without_a_caption_writes_none(tmp_path):
    data = FigureData(pd.DataFrame({"x": [1]}), lambda ax, t: None, "untitled")
    written = save_figure(data, tmp_path, "plain")
    assert sorted(p.name for p in written) == ["plain.csv", "plain.pdf", "plain.png"]
    written = save_figure(data, tmp_path, "told", caption="What it shows.")
    assert (tmp_path / "told.caption.txt").read_text() == "What it shows.\n"


@pytest.mark.parametrize("sweep", ["fig_a_devices", "fig_b_bandwidth", "fig_c_memory",
                                   "fig_d_heterogeneity"])
def test_main_sweeps_have_five_seeds_ten_rounds_and_the_papers_allocators(sweep):
    spec = tomllib.loads((EXPERIMENTS / f"{sweep}.toml").read_text())
    assert len(spec["seeds"]) >= 5
    assert spec["set"]["run.rounds"] == 10  # the captions say 10 rounds
    labels = {a.get("label", a["name"]) for a in spec["allocators"]}
    assert labels == set(PAPER_ALLOCATORS)


def test_paper_claims_pool_paired_runs_over_both_sweeps():
    """p-claims: one paired reduction per (grid point, seed) of each sweep, pooled."""
    from desim.experiments.paper_figures.paper import paired_claims

    def sweep(axis: str, lat: dict[str, list[float]]) -> pd.DataFrame:
        rows = [{axis: x, "seed": s, "status": "ok", "allocator": a, "latency_s_mean": v}
                for a, vals in lat.items() for (x, s), v in zip([(1, 0), (1, 1), (2, 0)], vals)]
        return pd.DataFrame(rows)

    k = sweep("devices.population.count", {"jbba": [1.0, 2.0, 3.0], "greedy": [2.0, 4.0, 4.0],
                                           "crunch+equal": [1.0, 2.0, 3.0],
                                           "bottleneck-exact": [1.0, 2.0, 3.0]})
    b = sweep("server.total_bandwidth_hz", {"jbba": [1.0, 1.0, 1.0], "greedy": [4.0, 2.0, 1.0]})
    t = paired_claims({"fig_p_devices": k, "fig_p_bandwidth": b}).set_index("claim")
    diffs = [50.0, 50.0, 25.0, 75.0, 50.0, 0.0]
    got = t.loc["jbba vs greedy"]
    assert got["pairs"] == 6 and got["reduction_pct"] == pytest.approx(np.mean(diffs))
    assert got["reduction_pct_ci95"] == pytest.approx(ci95_half_width(diffs))
    assert bool(got["holds"])
    exact = t.loc["crunch+equal vs bottleneck-exact"]
    assert exact["pairs"] == 3 and exact["reduction_pct"] == 0 and bool(exact["holds"])
    assert t.loc["jbba vs offload", "pairs"] == 0 and not t.loc["jbba vs offload", "holds"]
