"""Line figures' shared drawing: one dodged, hollow-marked line per allocator, log axes.

Used by the trace-replay figures (a)–(d) (:mod:`.trends`) and the paper-setting figures
(:mod:`.paper`), so both look alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from desim.experiments.paper_figures.base import allocator_style, in_order

LINES_NOTE = "hollow markers, own line styles:\ncoinciding lines stay visible"
"""Legend title of every line figure: jbba lies exactly under jbba-exact on most points."""


def errorbar_lines(ax: Any, t: pd.DataFrame, x: str, value: str, log_x: bool) -> None:
    """One line per allocator; points dodged sideways a little so error bars do not overlap."""
    labels = in_order(t["allocator"])
    xs = np.sort(t[x].unique().astype(float))
    step = float(np.min(np.diff(np.log(xs) if log_x else xs))) if xs.size > 1 else 1.0
    for i, label in enumerate(labels):
        grp = t[t["allocator"] == label].sort_values(x)
        shift = (i - (len(labels) - 1) / 2) * 0.03 * step
        pos = grp[x] * np.exp(shift) if log_x else grp[x] + shift
        mean, half = grp[value].to_numpy(float), grp[f"{value}_ci95"].to_numpy(float)
        # a log axis cannot show an interval reaching zero: the lower arm stops short of it
        lower = np.minimum(half, mean * 0.95) if ax.get_yscale() == "log" else half
        ax.errorbar(pos, mean, yerr=np.vstack([lower, half]), capsize=2, lw=1.2,
                    **allocator_style(label))


def log_y_axis(ax: Any, t: pd.DataFrame, values: list[str]) -> None:
    """A log y axis bounded by the data and its intervals, ticks as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    low = min(float((t[v] - t[f"{v}_ci95"]).where(lambda s: s > 0).min()) for v in values)
    high = max(float((t[v] + t[f"{v}_ci95"]).max()) for v in values)
    ax.set_ylim(low / 1.15, high * 1.15)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def x_axis(ax: Any, t: pd.DataFrame, x: str, xlabel: str, log_x: bool) -> None:
    """The x axis of a line figure: a tick at every grid value, no minor ticks, a grid."""
    ax.set_xlabel(xlabel)
    ticks = sorted(t[x].unique())
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
