"""What the runs of one process share: cost models by content, Parquet schemas by layout.

A sweep worker builds the cost model of a ``[cost]`` section once and reuses it while the files
it read are unchanged (:mod:`desim.costs.cache`); an edited profile, an edited trace or another
scenario must never get what was built before. Shared arrays are read-only, the build's
warnings are given on every reuse, and the Parquet files are those pandas writes.
"""

from __future__ import annotations

import csv
import io
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from desim.costs import cache as cost_cache
from desim.engine.assembly import build_simulation
from desim.errors import DesimWarning
from desim.io.arrow import parquet_bytes
from desim.io.scenario import load_scenario
from desim.io.shipped import data_file, shipped_profiles
from desim.io.traces import read_trace

SMALL = ["run.rounds=1", "devices.population.count=12"]


def _profile_copy(tmp_path, scale_block_5: float = 1.0):  # type: ignore[no-untyped-def]
    """The shipped roberta-base LoRA profile, block 5's compute at b=8, s=128 scaled."""
    src = next(p for p in shipped_profiles() if p.name == "cpu-reference_roberta-base_lora.csv")
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        if (r["block"], r["batch_size"], r["seq_len"]) == ("5", "8", "128"):
            r["compute_s"] = repr(float(r["compute_s"]) * scale_block_5)
    path = tmp_path / "profile.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _work_s(overrides: list[str]) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesimWarning)
        return build_simulation(load_scenario(None, [*SMALL, *overrides]))._work_s


def test_same_section_shares_one_model_with_read_only_costs():
    a = build_simulation(load_scenario(None, SMALL))
    b = build_simulation(load_scenario(None, [*SMALL, "run.seed=3"]))
    assert a.cost_model is b.cost_model
    costs = a.cost_model.block_costs(a.workload, "cpu-reference")
    assert not costs.compute_s.flags.writeable and not costs.memory_bytes.flags.writeable
    with pytest.raises(ValueError):
        costs.compute_s[0] = 0.0
    # each caller gets its own provenance (it ends up in run.json, which callers extend)
    again = a.cost_model.block_costs(a.workload, "cpu-reference")
    assert again.provenance == costs.provenance and again.provenance is not costs.provenance


def test_an_edited_profile_file_misses_the_cache(tmp_path):
    path = _profile_copy(tmp_path)
    key = f'cost.profiles.cpu-reference="{path}"'
    before = _work_s([key])
    _profile_copy(tmp_path, scale_block_5=1.5)  # same path, new content
    after = _work_s([key])
    assert not np.array_equal(before, after)
    cost_cache._MODELS.clear()  # a cold build of the edited file agrees
    np.testing.assert_array_equal(after, _work_s([key]))


def test_a_new_file_in_a_profile_folder_misses_the_cache(tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    lora = next(p for p in shipped_profiles() if p.name.endswith("roberta-base_lora.csv"))
    shutil.copy(lora, folder / lora.name)
    key = f'cost.profiles.cpu-reference="{folder}"'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DesimWarning)
        first = build_simulation(load_scenario(None, [*SMALL, key])).cost_model
        shutil.copy(next(p for p in shipped_profiles() if p.name.endswith("roberta-base_full.csv")),
                    folder / "full.csv")
        second = build_simulation(load_scenario(None, [*SMALL, key])).cost_model
    assert first is not second


def test_a_changed_cost_section_misses_the_cache():
    slow = _work_s(['cost.model="analytic"', "cost.analytic_flops_per_s=1e10"])
    fast = _work_s(['cost.model="analytic"', "cost.analytic_flops_per_s=2e10"])
    np.testing.assert_allclose(slow, 2 * fast)


def test_the_build_warnings_are_given_on_every_reuse(tmp_path):
    down = _profile_copy(tmp_path, scale_block_5=0.3)
    key = f'cost.profiles.cpu-reference="{down}"'
    for _ in range(2):
        with pytest.warns(DesimWarning, match="decreases with depth at block"):
            build_simulation(load_scenario(None, [*SMALL, key]))


def test_an_edited_trace_file_misses_the_trace_cache(tmp_path):
    path = tmp_path / "load.csv"
    shutil.copy(data_file("traces", "compute-load-20dev.csv"), path)
    first = read_trace(path)
    assert read_trace(path) is first
    text = path.read_text()
    path.write_text(text.replace("\ndev00,0,0.736914,1\n", "\ndev00,0,0.5,1\n"))
    assert path.read_text() != text
    second = read_trace(path)
    assert second is not first
    assert not np.array_equal(second.row_columns["speed_factor"], first.row_columns["speed_factor"])


def test_parquet_bytes_are_what_pandas_writes():
    result = build_simulation(load_scenario(None, ["run.rounds=2", "faults.dropout_rate=0.2",
                                                   'run.on_infeasible="skip"'])).run()
    frames = [*result.tables().values(), pd.DataFrame({"x": []}),
              pd.DataFrame({"s": ["a", None], "b": [True, False],
                            "o": pd.Series(["a", "b"], dtype=object)})]
    for frame in frames:
        for _ in range(2):  # the second call reuses the schema of the first
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            assert parquet_bytes(frame) == buf.getvalue()


def test_the_cache_keeps_the_most_recent_models():
    for flops in range(cost_cache.MAX_MODELS + 3):
        _work_s(['cost.model="analytic"', f"cost.analytic_flops_per_s={1e10 + flops}"])
    assert len(cost_cache._MODELS) == cost_cache.MAX_MODELS
