"""The figure registry and what every figure shares: drawing, saving, reading stored results.

A figure registers a build function under its name with :func:`figure`, naming the sweeps it
reads (specs under ``experiments/``). The build function reads stored results only: a sweep's
``summary.parquet``, a stored run's tables and ``run.json``, or data shipped with desim. It
never runs a simulation (``desim figures --all`` runs a figure's missing sweeps first) and
returns a :class:`FigureData`: the tidy table it plots and how to draw it. Every figure is
written as PNG and PDF together with the CSV of exactly the data it plots and its caption
(``<name>.caption.txt``). matplotlib and scipy are imported lazily.

Statistics over replicate seeds (:func:`ci95_half_width`, :func:`seed_stats`) are means with
95% Student-t confidence intervals: the seeds are independent replicates (population, trace
offsets and fading all differ), so the interval is ``t(0.975, n-1) s / sqrt(n)``. Comparisons
of two allocators (:func:`paired_reductions`) pair runs of the same seed and grid point, which
meet the same realisation (common random numbers), and take the interval of the paired
differences.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError
from desim.registry import Entry, Registry

LATENCY = "latency_s_mean"
"""The summary column most figures plot: a run's mean round latency."""
PLANNED = "planned_latency_s_mean"
"""A run's mean planned round latency: the chosen allocation under the round-start snapshot."""

TRACE_REPLAY = "trace replay"
"""The setting of the default scenario, named in the titles of the figures that run it."""
TRACE_REPLAY_SETTING = (
    "trace-replay setting (the default scenario: shipped UMi 3 km/h channel-gain trace and "
    "background-load compute trace, each device at its own seed-drawn offset)"
)
"""The trace-replay setting in words, for captions."""


@dataclass(frozen=True)
class FigureData:
    """What a figure plots: a tidy table and how to draw it.

    Attributes:
        table: exactly the data the figure plots (written as ``<name>.csv``).
        draw: draws ``table`` on one axes, or on a row of ``panels`` axes.
        title: the figure's title (the suptitle of a multi-panel figure).
        size: figure size in inches.
        panels: >1: ``draw`` gets a row of that many axes instead of one.
        caption: what is plotted, in which setting; empty: the registered caption.
    """

    table: pd.DataFrame
    draw: Callable[[Any, pd.DataFrame], None]
    title: str
    size: tuple[float, float] = (6.4, 4.2)
    panels: int = 1
    caption: str = ""


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
        caption: one or two sentences: what is plotted, in which setting (docs gallery and
            ``<name>.caption.txt``).
    """

    sweeps: tuple[str, ...]
    build: Build
    caption: str = ""


FIGURES: Registry[FigureSpec] = Registry("figure")
"""Every figure of ``desim figures``, in drawing order; an unknown name lists the known ones."""


def figure(
    name: str, description: str, *sweeps: str, caption: str = ""
) -> Callable[[Build], Build]:
    """Decorator registering a build function in :data:`FIGURES`.

    Args:
        name: the figure's name (``desim figures NAME`` writes ``NAME.png``, ``.pdf``, ``.csv``
            and ``NAME.caption.txt``).
        description: one line for listings and the docs gallery.
        sweeps: the sweeps the build function reads, in the order they are run.
        caption: what the figure plots and in which setting (one or two sentences).
    """

    def deco(build: Build) -> Build:
        FIGURES.register(name, description)(FigureSpec(tuple(sweeps), build, caption))
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


def save_figure(data: FigureData, out_dir: Path, name: str, caption: str = "") -> list[Path]:
    """Draw ``data``; write ``<name>.png``, ``.pdf``, ``.csv`` and ``.caption.txt`` to ``out_dir``.

    The caption is ``data.caption``, else ``caption`` (the registered one); with neither, no
    caption file is written.
    """
    from desim.io.atomic import atomic_write, write_csv

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
    text = data.caption or caption
    if text:
        path = out_dir / f"{name}.caption.txt"
        atomic_write(path, lambda p: Path(p).write_text(text.strip() + "\n"))
        paths.append(path)
    return paths


def draw_figures(names: list[str], results: Path, out: Path) -> dict[str, list[Path]]:
    """Build and save each named figure from the stored results under ``results``.

    Raises:
        UnknownNameError: for an unknown name, before anything is drawn, listing the known ones.
        InputError: a sweep a figure reads is not stored (the message gives the command).
    """
    specs = {n: FIGURES.get_obj(n) for n in names}
    return {n: save_figure(spec.build(results), out, n, spec.caption) for n, spec in specs.items()}


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


# ---------------------------------------------------------------------------------------------
# statistics over replicate seeds


def ci95_half_width(values: Iterable[float]) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean of ``values``.

    ``t(0.975, n-1) * s / sqrt(n)`` with the sample standard deviation ``s`` (``ddof = 1``);
    non-finite values are dropped. 0 for a single value, NaN for none.
    """
    from scipy.stats import t

    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    if x.size == 1:
        return 0.0
    return float(t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def mean_ci95(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, 95% t half-width (:func:`ci95_half_width`) and count of the finite ``values``."""
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    return (float(x.mean()) if x.size else float("nan")), ci95_half_width(x), int(x.size)


def seed_stats(frame: pd.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Per group of ``keys``: mean and 95% t half-width over the rows (replicate seeds).

    Returns:
        One row per group (in first-seen order): the keys, each value's mean under its own
        name, ``<value>_ci95`` beside it, and ``seeds`` (rows in the group).
    """
    rows = []
    for key, grp in frame.groupby(list(keys), sort=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for v in values:
            row[v] = float(grp[v].mean())
            row[f"{v}_ci95"] = ci95_half_width(grp[v])
        row["seeds"] = len(grp)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *(c for v in values for c in (v, f"{v}_ci95")),
                                       "seeds"])


def pair_keys(summary: pd.DataFrame) -> list[str]:
    """The columns that name a run's realisation: the sweep's axes (dotted keys) and ``seed``."""
    return [c for c in summary.columns if "." in c] + ["seed"]


def paired_runs(summary: pd.DataFrame, value: str = LATENCY) -> pd.DataFrame:
    """``value`` of the successful runs: a row per pair (grid point, seed), a column per allocator.

    The runs of a row met the same realisation (common random numbers).
    """
    ok = summary[summary["status"] == "ok"].copy()
    keys = pair_keys(ok)
    for k in keys:  # list-valued axes (memory tiers) become hashable
        ok[k] = ok[k].map(lambda v: tuple(v) if isinstance(v, list | np.ndarray) else v)
    return ok.pivot_table(index=keys, columns="allocator", values=value)


def paired_reductions(
    summary: pd.DataFrame, reference: str, value: str = LATENCY,
    baselines: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """Paired reduction of ``reference`` over each baseline, mean and 95% t-CI over the pairs.

    A pair is one (grid point, seed): the same seed is the same realisation (population, trace
    offsets, fading), so the two runs differ only in the allocator (common random numbers).
    Each pair gives ``100 (1 - reference / baseline)`` in percent; the mean and the Student-t
    half-width are over those paired differences.

    Args:
        summary: a sweep's summary (one row per run).
        reference: the allocator whose reduction is reported.
        value: the summary column compared.
        baselines: the allocators compared with (default: every other allocator).

    Returns:
        ``baseline``, ``reduction_pct``, ``reduction_pct_ci95`` and ``pairs``, one row each.

    Raises:
        InputError: ``reference`` has no successful run.
    """
    pivot = paired_runs(summary, value)
    if reference not in pivot:
        raise InputError(f"reduction figure: allocator {reference!r} is not in the results")
    chosen = [b for b in in_order(pivot.columns) if b != reference
              and (baselines is None or b in baselines)]
    rows = []
    for other in chosen:
        red = (100.0 * (1.0 - pivot[reference] / pivot[other])).dropna()
        rows.append({"baseline": other, "reduction_pct": float(red.mean()),
                     "reduction_pct_ci95": ci95_half_width(red), "pairs": int(red.count())})
    return pd.DataFrame(rows, columns=["baseline", "reduction_pct", "reduction_pct_ci95",
                                       "pairs"])


# ---------------------------------------------------------------------------------------------
# allocator styles: distinct marker and line style each, so coinciding lines stay visible

PAPER_ALLOCATORS = (
    "jbba", "jbba-exact", "crunch+equal", "greedy", "random", "depth-unaware", "offload"
)
"""The paper's allocator and baselines (figures (a)-(d) and (j)), in legend order."""

_STYLES: dict[str, tuple[str, Any, float]] = {
    "jbba": ("o", "-", 7.0),
    "jbba-exact": ("x", "--", 6.0),
    "crunch+equal": ("s", ":", 5.0),
    "crunch": ("s", ":", 5.0),
    "greedy": ("^", "-.", 6.0),
    "random": ("v", (0, (5, 2)), 6.0),
    "depth-unaware": ("D", (0, (3, 1, 1, 1, 1, 1)), 5.0),
    "offload": ("P", (0, (1, 2)), 6.0),
    "bottleneck-exact": ("*", "--", 7.0),
    "milp": ("+", "-.", 7.0),
    "crunch-multi": ("o", "-", 7.0),
    "single-device": ("D", "--", 5.0),
}
_COLOURS = {name: f"C{i}" for i, name in enumerate(_STYLES)}


def allocator_style(label: str) -> dict[str, Any]:
    """Matplotlib keywords for one allocator's line: colour, hollow marker, line style."""
    marker, ls, ms = _STYLES.get(label, ("h", "-", 6.0))
    return {"color": _COLOURS.get(label, "C9"), "marker": marker, "ls": ls, "ms": ms,
            "mfc": "none", "mew": 1.2, "label": label}


def in_order(labels: Iterable[str]) -> list[str]:
    """``labels`` with the paper's allocators first, in :data:`PAPER_ALLOCATORS` order."""
    seen = list(dict.fromkeys(labels))
    return [a for a in PAPER_ALLOCATORS if a in seen] + [a for a in seen
                                                         if a not in PAPER_ALLOCATORS]
