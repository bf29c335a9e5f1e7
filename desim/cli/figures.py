"""``desim figures``: draw the paper figures from stored sweep results (running missing sweeps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from desim.cli.consoles import err, out


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
    from desim.experiments.paper_figures.base import (
        FIGURES,
        draw_figures,
        require_matplotlib,
        sweeps_of,
    )
    from desim.experiments.sweep import run_sweep
    from desim.experiments.sweep_spec import expand, load_sweep_spec

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
