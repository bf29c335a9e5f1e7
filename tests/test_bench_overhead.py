"""``desim bench overhead``: the per-run split adds up and the CLI prints both tables."""

from __future__ import annotations

from desim.cli.main import main
from desim.experiments.bench import OverheadBench, bench_sweep_overhead


def test_overhead_is_the_sweep_less_its_rounds():
    b = OverheadBench(runs=10, sweep_wall_s=2.0, round_s=0.01, phases_s={"build": 0.1})
    assert b.overhead_per_run_s == (2.0 - 10 * 0.01) / 10
    assert b.efficiency == 10 * 0.01 / 2.0


def test_bench_overhead_measures_every_phase(capsys):
    b = bench_sweep_overhead(runs=4, long_rounds=3)
    assert b.runs == 4 and b.sweep_wall_s > 0 and b.round_s > 0
    assert set(b.phases_s) == {"build", "simulate", "tables", "store"}
    assert all(v > 0 for v in b.phases_s.values())
    assert 0 < b.efficiency < 1
    assert main(["bench", "overhead", "--runs", "4"]) in (0, None)
    printed = capsys.readouterr().out
    assert "overhead/run (ms)" in printed and "build" in printed and "store" in printed
