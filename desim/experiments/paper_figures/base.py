"""The figure registry and what every figure shares: drawing, saving, reading stored results.

A figure registers a build function under its name with :func:`figure`, naming the sweeps it
reads (specs under ``experiments/``). The build function reads stored results only: a sweep's
``summary.parquet``, a stored run's tables and ``run.json``, or data shipped with desim. It
never runs a simulation (``desim figures --all`` runs a figure's missing sweeps first) and
returns a :class:`FigureData`: the tidy table it plots and how to draw it. Every figure is
written as PNG and PDF together with the CSV of exactly the data it plots. matplotlib is
imported lazily.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from desim.errors import InputError
from desim.registry import Entry, Registry

LATENCY = "latency_s_mean"
"""The summary column most figures plot: a run's mean round latency."""


@dataclass(frozen=True)
class FigureData:
    """What a figure plots: a tidy table and how to draw it."""

    table: pd.DataFrame
    draw: Callable[[Any, pd.DataFrame], None]
    title: str
    size: tuple[float, float] = (6.4, 4.2)
    panels: int = 1  # >1: ``draw`` gets a row of that many axes instead of one


Build = Callable[[Path], FigureData]
"""A figure's build function: the results folder (one folder per sweep) to the figure."""


@dataclass(frozen=True)
class FigureSpec:
    """How a registered figure is made: the sweeps it reads and its build function.

    Every input a sweep needs ships in the package (figure (i)'s real trace included), so a
    fresh clone draws every figure.

    Attributes:
        sweeps: sweep names (``experiments/<sweep>.toml``, results in ``<results>/<sweep>``);
            none for a figure of data shipped with desim.
        build: reads the stored results and returns the figure.
    """

    sweeps: tuple[str, ...]
    build: Build


FIGURES: Registry[FigureSpec] = Registry("figure")
"""Every figure of ``desim figures``, in drawing order; an unknown name lists the known ones."""


def figure(name: str, description: str, *sweeps: str) -> Callable[[Build], Build]:
    """Decorator registering a build function in :data:`FIGURES`.

    Args:
        name: the figure's name (``desim figures NAME`` writes ``NAME.png``, ``.pdf``, ``.csv``).
        description: one line for listings and the docs gallery.
        sweeps: the sweeps the build function reads, in the order they are run.
    """

    def deco(build: Build) -> Build:
        FIGURES.register(name, description)(FigureSpec(tuple(sweeps), build))
        return build

    return deco


def sweeps_of(entry: Entry[FigureSpec]) -> tuple[str, ...]:
    """The sweep names a registered figure reads (none, one or several)."""
    return entry.obj.sweeps


def figure_names() -> list[str]:
    """Registered figure names, in order."""
    return list(FIGURES)


def require_matplotlib() -> None:
    """Stop at once, before any sweep runs, when the ``plot`` extra is missing.

    Raises:
        InputError: with the install hint.
    """
    _matplotlib()


def _matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError('figures need matplotlib: pip install ".[plot]"') from None
    return plt


def save_figure(data: FigureData, out_dir: Path, name: str) -> list[Path]:
    """Draw ``data``; write ``<name>.png``, ``<name>.pdf`` and ``<name>.csv`` into ``out_dir``."""
    from desim.io.atomic import write_csv

    plt = _matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, data.panels, figsize=data.size, constrained_layout=True)
    data.draw(ax, data.table)
    if data.panels == 1:
        ax.set_title(data.title, fontsize=10)
    else:
        fig.suptitle(data.title, fontsize=10)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=150)
        paths.append(path)
    plt.close(fig)
    paths.append(write_csv(data.table, out_dir / f"{name}.csv"))
    return paths


def draw_figures(names: list[str], results: Path, out: Path) -> dict[str, list[Path]]:
    """Build and save each named figure from the stored results under ``results``.

    Raises:
        UnknownNameError: for an unknown name, before anything is drawn, listing the known ones.
        InputError: a sweep a figure reads is not stored (the message gives the command).
    """
    specs = {n: FIGURES.get_obj(n) for n in names}
    return {n: save_figure(spec.build(results), out, n) for n, spec in specs.items()}


# ---------------------------------------------------------------------------------------------
# stored results


def stored_summary(results: Path, sweep: str) -> pd.DataFrame:
    """The summary table of a stored sweep (one row per run).

    Raises:
        InputError: the sweep is not stored; the message gives the commands that run it.
    """
    path = results / sweep / "summary.parquet"
    if not path.is_file():
        raise InputError(
            f"{path}: no stored sweep; run `desim sweep experiments/{sweep}.toml` "
            "or `desim figures --all`"
        )
    return pd.read_parquet(path)


def ok_runs(results: Path, sweep: str) -> pd.DataFrame:
    """The summary rows of a stored sweep's successful runs.

    Raises:
        InputError: the sweep is not stored, or no run of it succeeded.
    """
    summary = stored_summary(results, sweep)
    ok = summary[summary["status"] == "ok"]
    if ok.empty:
        raise InputError(f"{results / sweep}: no successful run to draw from")
    return ok


def run_folder(results: Path, sweep: str, key: str) -> Path:
    """The folder of one stored run (``runs/<key>/``: its tables and ``run.json``)."""
    return results / sweep / "runs" / str(key)


def first_run(results: Path, sweep: str) -> Path:
    """The folder of a stored sweep's first successful run."""
    return run_folder(results, sweep, ok_runs(results, sweep)["run_key"].iloc[0])


def run_metadata(folder: Path) -> dict[str, Any]:
    """A stored run's ``run.json``: its scenario, versions and per-round diagnostics."""
    data: dict[str, Any] = json.loads((folder / "run.json").read_text())
    return data
