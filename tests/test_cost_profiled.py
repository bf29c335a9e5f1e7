"""ProfiledCostModel: fitting measured tables, prediction, errors, and the default scenario."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from desim.costs.analytic import AnalyticCostModel
from desim.costs.base import Workload
from desim.costs.fit import fit_profile, profile_features
from desim.costs.profiled import ProfiledCostModel
from desim.costs.transformer import TransformerConfig
from desim.errors import InputError, ScenarioError, UnknownNameError
from desim.io.calibration import PROFILE_COLUMNS, load_profile, read_profile, write_profile
from desim.io.shipped import shipped_profiles

CFG = TransformerConfig("toy", 32, 4, 2, 64, 100, 130)
# seconds and bytes as (c0 + c1 n) + (c2 + c3 n) T + (c4 + c5 n) b s^2
TIME = np.array([0.05, 0.01, 2e-4, 1e-4, 1e-7, 5e-8])
MEMORY = np.array([5e8, 1e6, 4e4, 6e4, 10.0, 40.0])
GRID = [(b, s) for b in (1, 4, 8, 16) for s in (64, 128, 256)]


def synthetic_table(grid=GRID, blocks=4, hardware="hw", model="toy", method="lora"):
    rows = []
    for b, s in grid:
        for n in range(1, blocks + 1):
            x = profile_features(n, b, s)
            row = {c: 0 for c in PROFILE_COLUMNS}
            row.update(
                hardware=hardware, model=model, method=method, lora_rank=8, batch_size=b,
                seq_len=s, block=n, num_blocks=blocks, compute_s=float(x @ TIME),
                fwd_s=float(x @ TIME) / 2, peak_memory_bytes=int(round(x @ MEMORY)),
                trainable_params=512, repeats=3, memory_method="saved-tensors", device="cpu",
                device_name="test", clock="thread-cpu", torch_version="x",
                transformers_version="x", peft_version="x", date="2026-01-01T00:00:00Z",
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))


def workload(b=8, s=128, blocks=4, method="lora", rank=8, cfg=CFG):
    return Workload(cfg, method, b, s, blocks, lora_rank=rank)


def test_fit_recovers_a_table_in_its_family():
    fit = fit_profile(synthetic_table())
    assert np.abs(fit.time_residuals).max() < 1e-6
    assert np.abs(fit.memory_residuals).max() < 1e-6
    # between grid points (b=6, s=96 is none of them) the fit gives the generating model
    n = np.arange(1, 5)
    assert np.allclose(fit.compute_s(n, 6, 96), profile_features(n, 6, 96) @ TIME, rtol=1e-6)
    assert np.allclose(fit.memory_bytes(n, 6, 96), profile_features(n, 6, 96) @ MEMORY)


def test_profiled_cost_model_reproduces_grid_points():
    table = synthetic_table()
    model = ProfiledCostModel({"hw": table})
    costs = model.block_costs(workload(b=4, s=256), "hw")
    rows = table[(table["batch_size"] == 4) & (table["seq_len"] == 256)].sort_values("block")
    assert np.allclose(costs.compute_s, rows["compute_s"], rtol=1e-6)
    assert np.allclose(costs.memory_bytes, rows["peak_memory_bytes"], rtol=1e-6)
    assert np.array_equal(costs.upload_bits, np.full(4, 512 * 32.0))
    assert costs.source == "profiled:hw"


def test_predictions_are_non_decreasing_in_depth_and_between_neighbours():
    model = ProfiledCostModel({"hw": synthetic_table()})
    lo, mid, hi = (model.block_costs(workload(b=b, s=128), "hw") for b in (4, 6, 8))
    assert np.all(np.diff(mid.compute_s) >= 0) and np.all(np.diff(mid.memory_bytes) >= 0)
    assert np.all((lo.compute_s < mid.compute_s) & (mid.compute_s < hi.compute_s))
    assert np.all((lo.memory_bytes < mid.memory_bytes) & (mid.memory_bytes < hi.memory_bytes))


def test_unprofiled_class_or_workload_falls_back_or_fails_clearly():
    table = synthetic_table()
    analytic = AnalyticCostModel(hardware_speed=(("hw", 1.0), ("other", 1.0)))
    with_fallback = ProfiledCostModel({"hw": table}, fallback=analytic)
    assert with_fallback.block_costs(workload(), "other").source == "analytic"
    assert with_fallback.block_costs(workload(method="full"), "hw").source == "analytic"
    strict = ProfiledCostModel({"hw": table})
    with pytest.raises(UnknownNameError, match="no profile for hardware class 'other'"):
        strict.block_costs(workload(), "other")
    with pytest.raises(UnknownNameError, match="no rows for toy/full; it has: toy/lora"):
        strict.block_costs(workload(method="full"), "hw")
    with pytest.raises(ScenarioError, match="num_blocks"):
        strict.block_costs(workload(blocks=2), "hw")
    with pytest.raises(ScenarioError, match="rank 8, got 4"):
        strict.block_costs(workload(rank=4), "hw")


def test_fit_needs_enough_grid_points():
    with pytest.raises(ScenarioError, match="at least 3"):
        fit_profile(synthetic_table(grid=[(1, 64), (4, 64)]))


def test_read_profile_errors_name_file_line_and_column(tmp_path):
    table = synthetic_table()
    path = write_profile(table, tmp_path / "p.csv")
    assert read_profile(path).equals(read_profile(path))
    bad = table.astype({"fwd_s": object})
    bad.loc[2, "fwd_s"] = "fast"
    write_profile(bad, tmp_path / "bad.csv")
    with pytest.raises(InputError, match=r"bad.csv: line 4: column fwd_s: expected a non-neg"):
        read_profile(tmp_path / "bad.csv")
    zero = table.copy()
    zero.loc[0, "batch_size"] = 0
    write_profile(zero, tmp_path / "zero.csv")
    with pytest.raises(InputError, match=r"line 2: column batch_size: expected a positive"):
        read_profile(tmp_path / "zero.csv")
    table.drop(columns=["step_s"]).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InputError, match=r"short.csv: missing profile columns: step_s"):
        read_profile(tmp_path / "short.csv")
    pd.concat([table, table.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(InputError, match=r"dup.csv: line 50: duplicate row"):
        read_profile(tmp_path / "dup.csv")
    with pytest.raises(UnknownNameError, match="unknown profile 'gpu-x'"):
        load_profile("gpu-x")


def test_read_profile_caches_by_content_and_hands_out_copies(tmp_path):
    """A sweep worker parses a profile once; an edited file is parsed again."""
    table = synthetic_table()
    path = write_profile(table, tmp_path / "p.csv")
    first = read_profile(path)
    first.loc[0, "fwd_s"] = -1.0  # a caller's change must not reach the cache
    assert read_profile(path).loc[0, "fwd_s"] == pytest.approx(table.loc[0, "fwd_s"])
    edited = table.copy()
    edited.loc[0, "fwd_s"] = float(table.loc[0, "fwd_s"]) * 2
    write_profile(edited, path)
    assert read_profile(path).loc[0, "fwd_s"] == pytest.approx(edited.loc[0, "fwd_s"])


def test_fits_are_shared_by_content_and_read_only():
    from desim.costs.profiled import shared_fit

    table = synthetic_table()
    first = shared_fit(table)
    assert shared_fit(table.copy()) is first  # same rows, another frame: one fit
    with pytest.raises(ValueError, match="read-only"):
        first.time_coef[0] = 0.0
    slower = table.copy()
    slower["compute_s"] = slower["compute_s"] * 2
    assert shared_fit(slower) is not first


@pytest.mark.parametrize("model", ["roberta-base", "roberta-large"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_shipped_profiles_are_monotone_and_fit(model, method):
    assert f"cpu-reference_{model}_{method}" in {p.stem for p in shipped_profiles()}
    table = load_profile("cpu-reference")
    rows = table[(table["model"] == model) & (table["method"] == method)]
    blocks = 12 if model == "roberta-base" else 24
    assert len(rows) == blocks * rows[["batch_size", "seq_len"]].drop_duplicates().shape[0]
    for _, g in rows.groupby(["batch_size", "seq_len"]):
        g = g.sort_values("block")
        assert np.all(np.diff(g["peak_memory_bytes"]) > 0)
        assert np.all(np.diff(g["compute_s"]) >= 0), g[["block", "compute_s"]]
    fit = fit_profile(rows)
    assert np.abs(fit.memory_residuals).max() < 0.01
    assert np.abs(fit.time_residuals).max() < 0.15


def test_default_scenario_uses_shipped_profile_and_admits_every_block():
    from desim.engine.assembly import build_simulation, devices_of
    from desim.io.scenario import load_scenario

    scenario = load_scenario()
    sim = build_simulation(scenario)
    assert sim.cost_source == ["profiled:cpu-reference"]
    memory = sim._memory
    budgets = np.array([d.memory_bytes for d in devices_of(scenario)])
    n_blocks = len(memory)
    # Hall's condition for nested neighbourhoods (DESIGN §2): block j needs N - j + 1 devices
    # able to hold blocks j..N
    for j in range(1, n_blocks + 1):
        assert (budgets >= memory[j - 1]).sum() >= n_blocks - j + 1
    # tight: the smallest budget cannot hold the deepest block
    assert budgets.min() < memory[-1]


def test_borrowed_profile_scales_compute_only():
    """A class priced by another class's profile runs `speed` times faster, nothing else."""
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    base = load_scenario(None, ["run.rounds=1"])
    borrowed = load_scenario(None, [
        'cost.profiles={"cpu-reference"={profile="cpu-reference", speed=4.0}}', "run.rounds=1"
    ])
    a = build_simulation(base)
    b = build_simulation(borrowed)
    ca = a.cost_model.block_costs(a.workload, "cpu-reference")
    cb = b.cost_model.block_costs(b.workload, "cpu-reference")
    np.testing.assert_allclose(cb.compute_s, ca.compute_s / 4.0, rtol=1e-12)
    np.testing.assert_array_equal(cb.memory_bytes, ca.memory_bytes)
    np.testing.assert_array_equal(cb.upload_bits, ca.upload_bits)
    np.testing.assert_array_equal(cb.flops, ca.flops)
    assert "/4 for cpu-reference" in cb.source


def test_borrowed_profile_rejects_a_non_positive_speed():
    from desim.errors import ScenarioError as Err
    from desim.io.scenario import load_scenario

    with pytest.raises(Err, match="cost.profiles"):
        load_scenario(None, ['cost.profiles={"x"={profile="cpu-reference", speed=0}}'])
