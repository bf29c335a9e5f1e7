"""``desim bench``: the measured figures of the README (engine speed, sweep speedup, allocators)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from desim.cli.consoles import out

bench_app = typer.Typer(help="Benchmarks (measured figures for the README).", no_args_is_help=True)


@bench_app.command("engine")
def bench_engine_cmd(
    rounds: Annotated[int, typer.Option(help="Rounds to simulate.")] = 1000,
    devices: Annotated[int, typer.Option(help="Number of devices.")] = 100,
    repeats: Annotated[int, typer.Option(help="Best of this many runs.")] = 3,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a scenario key: section.key=value (repeatable)."),
    ] = None,
) -> None:
    """Simulated rounds per second, and wall time relative to a bare SimPy loop (goal ≤ 3)."""
    from desim.experiments.bench import bench_engine

    b = bench_engine(rounds=rounds, devices=devices, repeats=repeats, overrides=tuple(set_ or ()))
    table = Table(title="desim bench engine", show_header=True)
    for col in (
        "rounds",
        "devices",
        "blocks",
        "desim wall (s)",
        "bare SimPy (s)",
        "rounds/s",
        "ratio",
    ):
        table.add_column(col, justify="right")
    table.add_row(
        str(b.rounds),
        str(b.devices),
        str(b.blocks),
        f"{b.desim_wall_s:.3f}",
        f"{b.bare_wall_s:.3f}",
        f"{b.rounds_per_s:,.0f}",
        f"{b.ratio:.2f}",
    )
    out.print(table)


@bench_app.command("sweep")
def bench_sweep_cmd(
    runs: Annotated[int, typer.Option(help="Number of runs (at least 200 for the README).")] = 200,
    rounds: Annotated[int, typer.Option(help="Rounds per run.")] = 100,
) -> None:
    """Speedup of a sweep with 2 local workers over 1 worker (goal ≥ 1.8 on 2 cores)."""
    from desim.experiments.bench import bench_sweep

    b = bench_sweep(runs=runs, rounds=rounds)
    table = Table(title="desim bench sweep", show_header=True)
    for col in ("runs", "rounds/run", "1 worker (s)", "2 workers (s)", "speedup"):
        table.add_column(col, justify="right")
    table.add_row(str(b.runs), str(b.rounds_per_run), f"{b.wall_1_s:.2f}", f"{b.wall_2_s:.2f}",
                  f"{b.speedup:.2f}")
    out.print(table)


@bench_app.command("overhead")
def bench_overhead_cmd(
    runs: Annotated[int, typer.Option(help="One-round runs to sweep on one worker.")] = 60,
) -> None:
    """Sweep overhead per run and efficiency on one-round runs (goals ≤ 20 ms, ≥ 50%)."""
    from desim.experiments.bench import bench_sweep_overhead

    b = bench_sweep_overhead(runs=runs)
    table = Table(title="desim bench overhead", show_header=True)
    for col in ("runs", "sweep (s)", "one round (ms)", "overhead/run (ms)", "setup",
                "efficiency"):
        table.add_column(col, justify="right")
    table.add_row(str(b.runs), f"{b.sweep_wall_s:.2f}", f"{b.round_s * 1e3:.2f}",
                  f"{b.overhead_per_run_s * 1e3:.1f}", f"{b.setup_share:.0%}",
                  f"{b.efficiency:.1%}")
    out.print(table)
    total = sum(b.phases_s.values())
    phases = Table(title="per run, by phase (timed in-process on the same runs)")
    for col in ("phase", "ms/run", "share"):
        phases.add_column(col, justify="right")
    for name, sec in b.phases_s.items():
        phases.add_row(name, f"{sec * 1e3:.1f}", f"{sec / total:.0%}")
    out.print(phases)


@bench_app.command("scale")
def bench_scale_cmd(
    quick: Annotated[bool, typer.Option(help="A small grid (seconds), for a smoke test.")] = False,
    plot: Annotated[
        Path | None, typer.Option(help="Write the log-log plots to this PNG (plot extra).")
    ] = None,
    out_json: Annotated[
        Path | None, typer.Option("--out", help="Write the measured points to this JSON.")
    ] = None,
    from_json: Annotated[
        Path | None, typer.Option("--from", help="Report and plot stored points, no measuring.")
    ] = None,
) -> None:
    """Wall time and peak memory against K (10 to 10^4), N (12, 24) and rounds (10 to 10^4)."""
    from desim.experiments.bench_scale import (
        PHASES,
        bench_scale,
        fitted_exponents,
        load_points,
        plot_scale,
        save_points,
    )

    points = load_points(str(from_json)) if from_json else bench_scale(quick=quick)
    if out_json is not None:
        save_points(points, str(out_json))
    table = Table(title="desim bench scale (each point a fresh process)", show_header=True)
    for col in ("axis", "K", "N", "rounds", "wall (s)", "peak RSS (MB)", "dominant"):
        table.add_column(col, justify="right")
    for p in points:
        table.add_row(p.axis, str(p.devices), str(p.blocks), str(p.rounds), f"{p.wall_s:.2f}",
                      f"{p.peak_rss_bytes / 1e6:,.0f}", p.dominant)
    out.print(table)
    phases = Table(title="seconds by phase (build, then the run's parts)", show_header=True)
    for col in ("axis", "K", "N", "rounds", *PHASES):
        phases.add_column(col, justify="right")
    for p in points:
        phases.add_row(p.axis, str(p.devices), str(p.blocks), str(p.rounds),
                       *(f"{p.phases_s[k]:.3f}" for k in PHASES))
    out.print(phases)
    fits = Table(title="fitted log-log exponents", show_header=True)
    for col in ("axis", "wall", "run (no build)", "peak memory"):
        fits.add_column(col, justify="right")
    for axis, f in fitted_exponents(points).items():
        fits.add_row(axis, f"{f['wall']:.2f}", f"{f['run']:.2f}", f"{f['memory']:.2f}")
    out.print(fits)
    if plot is not None:
        from desim.experiments.paper_figures.base import require_matplotlib

        require_matplotlib()
        plot_scale(points, str(plot))
        out.print(f"plots written to {plot}")


@bench_app.command("allocators")
def bench_allocators_cmd(
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer sizes, instances and rounds (a minute).")
    ] = False,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the CSV tables.")
    ] = Path("results/bench-allocators"),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key of the default scenario (latency table)."),
    ] = None,
) -> None:
    """Solve time vs K and N, JBBA's optimality gap, and latency of every allocator."""
    from desim.experiments.bench import bench_allocator_times, bench_default_latency, bench_jbba_gap
    from desim.io.atomic import write_csv

    times = bench_allocator_times(
        milp_max_devices=100 if quick else 1000, repeats=3 if quick else 5
    )
    gap = bench_jbba_gap(instances=20 if quick else 100)
    lat = bench_default_latency(rounds=5 if quick else 20, overrides=tuple(set_ or ()))
    out_dir.mkdir(parents=True, exist_ok=True)
    for frame, stem in ((times, "solve_times"), (gap, "jbba_gap"), (lat, "default_latency")):
        write_csv(frame, out_dir / f"{stem}.csv")
    _print_allocator_bench(times, gap, lat)
    out.print(f"tables written to {out_dir}/ (solve_times, jbba_gap, default_latency .csv)")


def _print_allocator_bench(times, gap, lat) -> None:  # type: ignore[no-untyped-def]
    table = Table(title="solve time (ms, best of repeats; random instances)", show_header=True)
    for col in ("allocator", "K", "N", "solve (ms)", "note"):
        table.add_column(col, justify="left" if col in ("allocator", "note") else "right")
    for r in times.itertuples():
        ms = "-" if np.isnan(r.solve_ms) else f"{r.solve_ms:.3f}"
        table.add_row(r.allocator, str(r.devices), str(r.blocks), ms, r.note)
    out.print(table)
    table = Table(title="default scenario: mean round latency vs jbba-exact", show_header=True)
    for col in ("allocator", "same snapshots (s)", "x exact", "own run: planned (s)",
                "realised (s)", "x exact", "solve (ms)"):
        table.add_column(col, justify="left" if col == "allocator" else "right")
    for r in lat.itertuples():
        if r.note:
            table.add_row(r.allocator, r.note[:70], "", "", "", "", "")
            continue
        table.add_row(r.allocator, f"{r.snapshot_s:.4f}", f"{r.snapshot_vs_exact:.3f}",
                      f"{r.planned_s:.4f}", f"{r.realised_s:.4f}", f"{r.realised_vs_exact:.3f}",
                      f"{r.solve_ms:.2f}")
    out.print(table)
    t = times.set_index(["allocator", "devices", "blocks"]).solve_ms
    crunch_big = t.get(("crunch", 10000, 24), np.nan)
    # the least speedup over the two block counts at K = 1000 (NaN where milp was skipped)
    speedup = min(
        (t.get(("milp", 1000, n), np.nan) / t.get(("crunch", 1000, n), np.nan) for n in (12, 24)),
        key=lambda v: np.inf if np.isnan(v) else v,
    )
    exact_200 = t.get(("jbba-exact", 200, 24), np.nan)
    within = float((gap.gap <= 0.01).mean())
    plain = float((gap.dual_only_gap <= 0.01).mean())
    table = Table(title="targets", show_header=True)
    for col in ("target", "measured", "met"):
        table.add_column(col)
    for target, measured, ok in (
        ("crunch K=10000, N=24 <= 10 ms", f"{crunch_big:.3f} ms", crunch_big <= 10),
        ("crunch >= 100x faster than milp at K=1000", "not measured (milp skipped)"
         if np.isnan(speedup) else f"{speedup:,.0f}x", speedup >= 100),
        ("jbba-exact K=200, N=24 <= 200 ms", f"{exact_200:.2f} ms", exact_200 <= 200),
        ("jbba within 1% on >= 95%", f"{within:.1%} of {len(gap)} (worst gap "
         f"{gap.gap.max():.3%}); dual ascent alone {plain:.1%} (worst "
         f"{gap.dual_only_gap.max():.2%})", within >= 0.95),
    ):
        table.add_row(target, measured, "yes" if ok else "no")
    out.print(table)
