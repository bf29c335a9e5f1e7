"""The ``desim`` command: a thin layer over the library (parse, call, print).

Every :class:`~desim.errors.DesimError` becomes one ``error:`` line on stderr and its exit code,
and every usage error one line and exit 2 (README "Exit codes"); no traceback reaches the user.
Set ``DESIM_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from desim import __version__
from desim.cli.sweep import sweep
from desim.cli.traces import traces_app
from desim.errors import DesimError, DesimWarning, InputError, Interrupted

app = typer.Typer(
    help="desim: discrete-event simulator of device-edge cooperative fine-tuning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks (measured figures for the README).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(traces_app, name="traces")
app.command()(sweep)

# markup off: paths, keys and values from the user are printed verbatim, never parsed as markup
out = Console(markup=False)
err = Console(stderr=True, markup=False)


def _version(value: bool) -> None:
    if value:
        print(f"desim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """desim: discrete-event simulator of device-edge cooperative fine-tuning."""


@app.command()
def run(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario TOML (default: the built-in scenario).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a scenario key: section.key=value (repeatable)."),
    ] = None,
    allocator: Annotated[
        str | None, typer.Option(help="Allocator name (desim allocators).")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Number of rounds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Results directory (default: results/<name>-<allocator>-"
                     "seed<seed>-<run key>)."),
    ] = None,
    trace_out: Annotated[
        Path | None,
        typer.Option("--trace-out", help="Also write a Chrome/Perfetto trace JSON of the run."),
    ] = None,
) -> None:
    """Simulate a scenario and write rounds/device_rounds tables and run.json."""
    from desim.engine.assembly import build_simulation
    from desim.experiments.sweep import run_key
    from desim.io.files import (
        check_output_dir,
        check_output_file,
        load_scenario,
        write_chrome_trace,
        write_results,
    )

    overrides = list(set_ or [])
    if allocator is not None:
        overrides.insert(0, f'allocator.name="{allocator}"')
    if rounds is not None:
        overrides.append(f"run.rounds={rounds}")
    if seed is not None:
        overrides.append(f"run.seed={seed}")
    scen = load_scenario(scenario, overrides)
    name = "default" if scenario is None else scenario.stem
    # the folder name carries the run key (a hash of the resolved scenario and the files it
    # reads): a run of another configuration never overwrites these results
    target = out_dir or Path("results") / (
        f"{name}-{scen.allocator.name}-seed{scen.run.seed}-{run_key(scen)[:8]}"
    )
    check_output_dir(target, "--out")
    if trace_out is not None:
        check_output_file(trace_out, "--trace-out")
    sim = build_simulation(scen)
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("rounds", total=scen.run.rounds)
        try:
            result = sim.run(on_round=lambda _: progress.advance(task))
        except KeyboardInterrupt:
            done = int(progress.tasks[0].completed)
            raise Interrupted(
                f"after {done} of {scen.run.rounds} rounds; nothing was written (a run's results "
                "are written whole or not at all): run the same command again"
            ) from None
    write_results(result, target)
    _print_summary(result.rounds_frame(), scen.allocator.name, result.metadata, target)
    if trace_out is not None:
        write_chrome_trace(result, trace_out)
        out.print(f"timeline trace written to {trace_out} (open in ui.perfetto.dev)")


def _print_summary(rounds, allocator: str, metadata: dict, target: Path) -> None:  # type: ignore[no-untyped-def]
    done = rounds[rounds["status"] == "ok"]
    lat, plan = done["latency_s"].to_numpy(), done["planned_latency_s"].to_numpy()
    if lat.size == 0:  # every round was skipped: nothing to summarise but the reasons
        lat = plan = np.full(1, np.nan)
    scheme = metadata.get("scheme", "deft")
    label = allocator if scheme == "deft" else f"scheme {scheme}"
    table = Table(title=f"desim run: {label}, {len(rounds)} rounds", show_header=True)
    table.add_column("metric")
    table.add_column("realised", justify="right")
    table.add_column("planned", justify="right")
    for label, fn in (
        ("mean", np.mean),
        ("p50", np.median),
        ("p95", lambda x: np.percentile(x, 95)),
    ):
        table.add_row(f"round latency {label} (s)", f"{fn(lat):.4f}", f"{fn(plan):.4f}")
    skipped = int((rounds["status"] != "ok").sum())
    if skipped or rounds["dropouts"].any():
        lost = int(rounds["dropouts"].sum())
        table.add_row("skipped rounds / lost tasks", f"{skipped} / {lost}", "")
    table.add_row("total simulated time (s)", f"{rounds['end_s'].iloc[-1]:.2f}", "")
    solve = rounds["solve_wall_s"].to_numpy() * 1e3
    table.add_row("solver time mean / max (ms)", f"{solve.mean():.3f} / {solve.max():.3f}", "")
    head = rounds["min_memory_headroom_bytes"].min() / 1e6
    table.add_row("min memory headroom (MB)", f"{head:.1f}", "")
    if "energy_j" in rounds:
        table.add_row("device energy per round mean (J)", f"{done['energy_j'].mean():.2f}", "")
    table.add_row("cost model", ", ".join(metadata.get("cost_model", [])), "")
    out.print(table)
    out.print(
        f"results written to {target}/ (rounds, device_rounds, fault_events, timing as "
        ".parquet and .csv; run.json)"
    )


@app.command("allocators")
def list_allocators() -> None:
    """List the registered allocators and their parameters."""
    from desim.allocators import ALLOCATORS

    table = Table(show_header=True)
    table.add_column("name")
    table.add_column("description")
    table.add_column("parameters")
    for name in sorted(ALLOCATORS):
        info = ALLOCATORS[name]
        params = ", ".join(f"{k}: {v}" for k, v in info.parameters().items())
        table.add_row(name, info.description, params)
    out.print(table)


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
    from desim.io.files import write_csv

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


@app.command()
def figures(
    names: Annotated[list[str] | None, typer.Argument(help="Figure names (default: all).")] = None,
    results: Annotated[
        Path, typer.Option(help="Directory holding one folder per sweep.")
    ] = Path("results/sweeps"),
    out_dir: Annotated[Path, typer.Option("--out", help="Where figures go.")] = Path("figures"),
    all_: Annotated[
        bool, typer.Option("--all", help="Run missing sweeps first (resumable), then draw all.")
    ] = False,
    specs: Annotated[Path, typer.Option(help="Directory of sweep specs.")] = Path("experiments"),
    workers: Annotated[int, typer.Option(help="Workers for missing sweeps.")] = 1,
) -> None:
    """Draw paper figures (PNG, PDF and the plotted CSV) from stored sweep results."""
    from desim.experiments.figures import FIGURES, draw_figures, require_matplotlib, sweeps_of
    from desim.experiments.sweep import expand, load_sweep_spec, run_sweep

    require_matplotlib()
    chosen = list(names or FIGURES)
    if all_:
        needed = [s for n in chosen if n in FIGURES for s in sweeps_of(FIGURES[n])]
        for sweep_name in dict.fromkeys(needed):
            spec, spec_dir = load_sweep_spec(specs / f"{sweep_name}.toml")
            runs = expand(spec, spec_dir)
            err.print(f"sweep {sweep_name}: {len(runs)} runs")
            report = run_sweep(runs, results / sweep_name, workers=workers, resume=True)
            if report.failed:
                err.print(f"  {report.failed} run(s) failed; see {results / sweep_name}/failures")
    written = draw_figures(chosen, results, out_dir)
    for name, paths in written.items():
        out.print(f"{name}: " + ", ".join(str(p) for p in paths))


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{option}: expected integers separated by commas, got {text!r}") from None


def _points(text: str) -> tuple[tuple[int, int], ...]:
    pts = []
    for item in text.split(","):
        b, sep, s = item.strip().partition("x")
        try:
            pts.append((int(b), int(s)))
        except ValueError:
            raise InputError(
                f"--points: expected BATCHxSEQ pairs like 2x96, got {item!r}"
            ) from None
        if not sep or pts[-1][0] <= 0 or pts[-1][1] <= 0:
            raise InputError(f"--points: expected positive BATCHxSEQ pairs, got {item!r}")
    return tuple(pts)


@app.command()
def profile(
    model: Annotated[
        str | None,
        typer.Option(help="roberta-base, roberta-large, flan-t5-small, flan-t5-base or a "
                     "config .json path."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="lora, lora-checkpoint, qlora, mezo, adapter, ia3 or full.")
    ] = "lora",
    batch: Annotated[
        str | None, typer.Option("--batch", help="Batch size(s), comma-separated: 1,4,8.")
    ] = None,
    seq_len: Annotated[
        str | None,
        typer.Option("--seq-len", help="Sequence length(s), comma-separated (T5: encoder)."),
    ] = None,
    target_len: Annotated[
        int | None,
        typer.Option("--target-len", help="Decoder target tokens (T5 only; default 32)."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    repeats: Annotated[int, typer.Option(help="Timed repetitions per grid point.")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed repetitions per grid point.")] = 1,
    threads: Annotated[
        int, typer.Option(help="torch threads on CPU (0: torch's default).")
    ] = 1,
    hardware: Annotated[
        str | None, typer.Option(help="Hardware-class name stored in the table.")
    ] = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Profile CSV to write (validation: report CSV).")
    ] = None,
    validate: Annotated[
        Path | None,
        typer.Option("--validate", help="Validate this profile on held-out batch/seq values."),
    ] = None,
    points: Annotated[
        str | None,
        typer.Option(help="BATCHxSEQ pairs, e.g. 2x96,6x192: the grid (instead of --batch x "
                     "--seq-len), or the held-out points of --validate."),
    ] = None,
    count_flops: Annotated[
        Path | None,
        typer.Option("--count-flops", help="Count the flops column of this profile (times "
                     "untouched); writes --out, or the file itself."),
    ] = None,
    kr_scores: Annotated[
        bool,
        typer.Option("--kr-scores", help="Measure Kill-and-Revive gradient-norm scores of the "
                     "LoRA modules over --steps real training steps (one --batch, --seq-len)."),
    ] = False,
    steps: Annotated[int, typer.Option(help="Training steps of --kr-scores.")] = 20,
) -> None:
    """Measure per-block training costs (or, with --validate, the fitted model's error)."""
    from desim.profiling import ProfileRequest, require_profiling, run_profile

    require_profiling()
    if validate is not None:
        _profile_validate(validate, model, points, repeats, out_path)
        return
    if count_flops is not None:
        from desim.io.files import read_profile, write_profile
        from desim.profiling import run_count_flops

        counted = run_count_flops(read_profile(count_flops), model)
        target = out_path or count_flops
        write_profile(counted, target)
        out.print(f"flops counted for {len(counted)} rows; written to {target}")
        return
    if kr_scores:
        _profile_kr_scores(model, batch, seq_len, target_len, steps, threads, out_path)
        return
    grid = _points(points) if points else ()
    if grid:
        batch = batch or ",".join(str(b) for b, _ in grid)
        seq_len = seq_len or ",".join(str(s) for _, s in grid)
    if model is None or batch is None or seq_len is None or out_path is None:
        raise InputError("desim profile needs --model, --batch, --seq-len (or --points) and --out")
    from desim.io.files import write_profile

    request = ProfileRequest(
        model=model,
        method=method,
        batches=_int_list(batch, "--batch"),
        seq_lens=_int_list(seq_len, "--seq-len"),
        points=grid,
        device=device,
        repeats=repeats,
        warmup=warmup,
        threads=threads or None,
        hardware=hardware,
        target_len=target_len,
    )
    with _profile_progress(f"profiling {model} {method}") as tick:
        table = run_profile(request, on_progress=tick)
    write_profile(table, out_path)
    out.print(f"{len(table)} rows written to {out_path}")


def _profile_validate(
    validate: Path, model: str | None, points: str | None, repeats: int, out_path: Path | None
) -> None:
    from desim.io.files import read_profile, write_report_csv
    from desim.profiling import run_validation
    from desim.profiling.report import print_validation

    table = read_profile(validate)
    with _profile_progress("validating") as tick:
        report = run_validation(
            table, _points(points) if points else None, repeats=repeats,
            model_path=model, on_progress=tick,
        )
    print_validation(report, out)
    target = out_path or validate.with_name(validate.stem + "-validation.csv")
    write_report_csv(report.summary, target)
    stem = target.with_suffix("")
    write_report_csv(report.rows, stem.with_name(stem.name + "-rows.csv"))
    write_report_csv(report.violations, stem.with_name(stem.name + "-monotonicity.csv"))
    out.print(f"MAPE table written to {target} (per-block rows: {stem.name}-rows.csv, "
              f"depth violations: {stem.name}-monotonicity.csv)")


def _profile_kr_scores(
    model: str | None, batch: str | None, seq_len: str | None, target_len: int | None,
    steps: int, threads: int, out_path: Path | None,
) -> None:
    from desim.io.files import write_kr_scores
    from desim.profiling import run_kr_scores

    if model is None or batch is None or seq_len is None or out_path is None:
        raise InputError("desim profile --kr-scores needs --model, --batch, --seq-len and --out")
    b, s = _int_list(batch, "--batch"), _int_list(seq_len, "--seq-len")
    if len(b) != 1 or len(s) != 1:
        raise InputError("--kr-scores: give one --batch and one --seq-len")
    scores = run_kr_scores(model, steps, b[0], s[0], target_len=target_len,
                           threads=threads or None)
    write_kr_scores(scores, out_path)
    modules = scores["module"].nunique()
    out.print(f"{steps} steps x {modules} modules written to {out_path}")


@contextlib.contextmanager
def _profile_progress(label: str):  # type: ignore[no-untyped-def]
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("repetitions"),
        TimeRemainingColumn(), console=err, transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app and return its exit code (README "Exit codes").

    0 success; 2 bad input or usage (one ``error:`` line, with typer's "Did you mean" hint); 3
    cannot proceed; 130 interrupted (Ctrl-C); 1 a bug (``internal error``, or the traceback
    with ``DESIM_DEBUG=1``). Each :class:`~desim.errors.DesimWarning` is one ``warning:`` line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("default", DesimWarning)
        warnings.showwarning = _show_warning
        try:
            code = app(args=argv, prog_name="desim", standalone_mode=False)
        except Interrupted as exc:
            _error(str(exc), prefix="interrupted: ")
            return exc.exit_code
        except DesimError as exc:
            _error(str(exc))
            return exc.exit_code
        except typer.TyperException as exc:  # usage: unknown option or command, bad value
            return _usage_error(exc)
        except (KeyboardInterrupt, typer.Abort):
            _error("interrupted", prefix="")
            return 130
        except Exception as exc:  # a bug: still no raw traceback unless asked for
            if os.environ.get("DESIM_DEBUG"):
                raise
            _error(f"internal error: {type(exc).__name__}: {exc} (set DESIM_DEBUG=1 for a "
                   "traceback)", prefix="")
            return 1
    # typer returns the code of a typer.Exit (130 for a Ctrl-C inside a command), else None
    if code == 130:
        _error("interrupted", prefix="")
    return code if isinstance(code, int) else 0


def _error(message: str, prefix: str = "error: ") -> None:
    """One line on stderr, printed verbatim: user text is never read as rich markup."""
    err.print(f"{prefix}{message}", markup=False, highlight=False, soft_wrap=True)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    if issubclass(category, DesimWarning):
        _error(str(message), prefix="warning: ")
    else:  # a library's own warning: Python's usual format
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _usage_error(exc: typer.TyperException) -> int:
    """A usage error as one line and exit 2; no arguments at all also shows the help above."""
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message()
    if not message:  # no arguments: typer has printed the help
        _error("missing command: choose one of the commands listed above")
        return 2
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _error(message + hint)
    return 2


if __name__ == "__main__":
    sys.exit(main())
