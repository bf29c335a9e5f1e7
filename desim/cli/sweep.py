"""``desim sweep``: expand a sweep spec, run it on a process pool or Ray, resume it.

A thin layer like :mod:`desim.cli.main`: parse options, call :mod:`desim.experiments.sweep`, print.
``--dry-run``
streams: it counts the runs without resolving them and resolves only the rows it shows, so a
grid of a million runs lists in about a second. Ctrl-C prints how far the sweep got and the
command that resumes it, then exits 130.
"""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from desim.errors import InputError, Interrupted

if TYPE_CHECKING:
    from desim.experiments.sweep import SweepReport
    from desim.experiments.sweep_spec import Run, SweepSpec

out = Console(markup=False)  # user text (paths, keys) is never parsed as rich markup
err = Console(stderr=True, markup=False)


def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep spec TOML (see experiments/README.md).")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Results directory (default: results/sweeps/<name>)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count the runs, list the first --show, and exit.")
    ] = False,
    backend: Annotated[str, typer.Option(help="local (process pool) or ray.")] = "local",
    workers: Annotated[int, typer.Option(help="Worker processes (local) or CPUs (ray).")] = 1,
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Skip runs already completed.")] = False,
    show: Annotated[int, typer.Option(help="Rows --dry-run lists (it counts them all).")] = 50,
) -> None:
    """Run a parameter sweep (resumable; identical results on every backend)."""
    from desim.experiments.sweep_spec import expand, load_sweep_spec

    if backend not in ("local", "ray"):
        raise InputError(f"--backend: expected local or ray, got {backend!r}")
    if workers < 1:
        raise InputError(f"--workers: expected at least 1, got {workers}")
    if show < 0:
        raise InputError(f"--show: expected 0 or more rows, got {show}")
    sweep_spec, spec_dir = load_sweep_spec(spec)
    target = out_dir or Path("results") / "sweeps" / sweep_spec.name
    if dry_run:
        _list_runs(sweep_spec, spec_dir, target, show)
        return
    runs = expand(sweep_spec, spec_dir)
    try:
        report = _run_with_progress(runs, target, backend, workers, address, resume)
    except KeyboardInterrupt:
        raise _interrupted(spec, target, {r.key for r in runs}) from None
    out.print(f"sweep {sweep_spec.name}: {report.succeeded} run, {report.skipped} already done, "
              f"{report.failed} failed of {report.total}; summary: {report.summary_path}")
    if report.failed:
        out.print(f"failed runs are described in {target / 'failures'}/")


def _list_runs(spec: SweepSpec, spec_dir: Path, target: Path, show: int) -> None:
    """Print the run count and the first ``show`` runs, resolving only those."""
    from desim.experiments.sweep_spec import MAX_RUNS, iter_runs, run_count
    from desim.experiments.sweep_store import completed_keys

    total = run_count(spec)
    done = completed_keys(target)
    table = Table(title=f"sweep {spec.name}: {total:,} runs", show_header=True)
    table.add_column("#")
    table.add_column("key", min_width=16, no_wrap=True)  # whole keys: they name runs/<key>/
    for col in (*spec.axis_keys, "allocator", "seed", "stored"):
        table.add_column(col)
    for r in itertools.islice(iter_runs(spec, spec_dir), show):
        table.add_row(str(r.index), r.key, *(str(r.axes[k]) for k in spec.axis_keys),
                      r.allocator, str(r.seed), "yes" if r.key in done else "")
    out.print(table)
    if total > show:
        out.print(f"showing the first {show:,} of {total:,} runs (--show N lists more)")
    if total > MAX_RUNS:
        out.print(f"a sweep of more than {MAX_RUNS:,} runs is refused: split the grid over "
                  "several specs")


def _run_with_progress(runs: list[Run], target: Path, backend: str, workers: int,
                       address: str | None, resume: bool) -> SweepReport:
    """:func:`desim.experiments.sweep.run_sweep` under a progress bar on stderr."""
    from desim.experiments.sweep import run_sweep

    with Progress(
        TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fail]}"),
        TimeRemainingColumn(), console=err, transient=True,
        disable=not err.is_terminal,  # in a log it would leave only a blank line
    ) as progress:
        task = progress.add_task("runs", total=len(runs), fail="")
        failures = 0

        def tick(ok: bool) -> None:
            nonlocal failures
            failures += not ok
            progress.update(task, advance=1, fail=f"{failures} failed" if failures else "")

        report = run_sweep(runs, target, backend=backend,  # type: ignore[arg-type]
                           workers=workers, address=address, resume=resume, progress=tick)
        progress.update(task, completed=len(runs))
    return report


def _interrupted(spec: Path, target: Path, keys: set[str]) -> Interrupted:
    """How many runs are stored and the command that resumes the sweep (main prints it)."""
    from desim.experiments.sweep_store import completed_keys

    stored = len(completed_keys(target) & keys)
    return Interrupted(
        f"{stored} of {len(keys)} runs stored in {target}; resume with: desim sweep "
        f"{shlex.quote(str(spec))} --out {shlex.quote(str(target))} --resume"
    )
