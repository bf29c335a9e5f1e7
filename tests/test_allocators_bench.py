"""``desim bench allocators``: its tables are well formed (timings are never asserted)."""

import numpy as np
import pytest

from desim.experiments.bench import bench_allocator_times, bench_jbba_gap


def test_solve_time_table_times_or_explains_every_cell():
    t = bench_allocator_times(devices=(10, 30), blocks=(12,), milp_max_devices=10, repeats=1)
    assert t.columns.tolist() == ["allocator", "devices", "blocks", "solve_ms", "note"]
    cell = t.set_index(["allocator", "devices"])
    assert cell.loc[("crunch", 10), "note"].startswith("skipped: K < N")
    assert cell.loc[("milp", 30), "note"] == "skipped: K > 10 (HiGHS on 360 binaries)"
    assert np.isfinite(cell.loc[("crunch", 30), "solve_ms"])
    assert np.isfinite(cell.loc[("jbba-exact", 200), "solve_ms"])
    assert (t.note == "").sum() == 3  # crunch and bottleneck-exact at K=30, jbba-exact


def test_jbba_gap_table_has_no_negative_gaps():
    g = bench_jbba_gap(instances=4, devices=12, blocks=6, seed=1)
    assert len(g) >= 3
    assert (g.gap >= -1e-5).all() and (g.dual_only_gap >= g.gap - 1e-9).all()


@pytest.mark.slow
def test_bench_allocators_quick_cli(tmp_path, capsys):
    from desim.cli.main import main

    code = main(["bench", "allocators", "--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "targets" in out
    assert {p.name for p in tmp_path.iterdir()} == {
        "solve_times.csv", "jbba_gap.csv", "default_latency.csv"
    }
