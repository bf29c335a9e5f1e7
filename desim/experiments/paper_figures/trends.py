"""Figures (a)–(e): a sweep's round latency or solve time against one axis, per allocator.

Each reads one sweep's ``summary.parquet`` (one row per run) and draws one line per allocator:
the mean over the replicate seeds with its 95% Student-t confidence interval
(:func:`~desim.experiments.paper_figures.base.seed_stats`). (a)–(d) run the trace-replay
setting, where the allocator plans on a round-start snapshot while the world keeps changing,
so they draw the planned and the realised latency side by side on one y axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.experiments.paper_figures.base import (
    LATENCY,
    PAPER_ALLOCATORS,
    PLANNED,
    TRACE_REPLAY,
    TRACE_REPLAY_SETTING,
    FigureData,
    figure,
    seed_stats,
    stored_summary,
)
from desim.experiments.paper_figures.lines import LINES_NOTE, errorbar_lines, log_y_axis, x_axis

ROUND = (
    "a round trains all 12 roberta-base LoRA blocks, each on its own device and mini-batch of "
    "8 sequences"
)


def _caption(x_words: str) -> str:
    return (
        f"Mean round latency (10 rounds) against {x_words} of jbba, jbba-exact and the paper's "
        f"baselines in the {TRACE_REPLAY_SETTING}: left planned on the round-start snapshot, "
        "right realised, on a log axis; means over 5 replicate seeds with 95% Student-t "
        "confidence intervals (dodged sideways a little). Coinciding lines (jbba under "
        f"jbba-exact) are drawn with distinct hollow markers and line styles; {ROUND}."
    )


def planned_realised_figure(
    summary: pd.DataFrame, x: str, xlabel: str, title: str, log_x: bool = False
) -> FigureData:
    """Two panels sharing y: planned and realised latency against ``x``, one line per allocator.

    Only the paper's allocators (:data:`PAPER_ALLOCATORS`) are drawn, in that order.
    """
    ok = summary[(summary["status"] == "ok") & summary["allocator"].isin(PAPER_ALLOCATORS)]
    table = seed_stats(ok, ["allocator", x], [PLANNED, LATENCY])

    def draw(axes: Any, t: pd.DataFrame) -> None:
        left, right = axes
        right.sharey(left)
        panels = ((left, PLANNED, "planned (round-start snapshot)"), (right, LATENCY, "realised"))
        left.set_yscale("log")
        for ax, value, name in panels:
            errorbar_lines(ax, t, x, value, log_x)
            x_axis(ax, t, x, xlabel, log_x)
            ax.set_title(name, fontsize=9)
        log_y_axis(left, t, [PLANNED, LATENCY])
        left.set_ylabel("mean round latency (s, log scale)")
        right.tick_params(labelleft=False)
        right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                     title=LINES_NOTE, title_fontsize=6)

    return FigureData(table, draw, f"{title} ({TRACE_REPLAY}; 95% t-CI over seeds)",
                      size=(10.0, 4.2), panels=2)


def _spread(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.copy()
    s["speed_spread"] = (
        s["devices.population.speed_factor.high"] / s["devices.population.speed_factor.low"]
    ).round(6)
    return s


def _in_mhz(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.copy()
    s["bandwidth_mhz"] = s["server.total_bandwidth_hz"] / 1e6
    return s


def _mean_budget(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.copy()
    s["memory_budget_gb"] = s["devices.population.memory_bytes.values"].map(
        lambda v: float(np.mean(v)) / 1e9
    )
    return s


@figure("a-devices", "trace replay: round latency against the number of devices K",
        "fig_a_devices", caption=_caption("the number of devices K (B = 20 MHz)"))
def devices_figure(results: Path) -> FigureData:
    """Figure (a): planned and realised round latency against the number of devices."""
    return planned_realised_figure(
        stored_summary(results, "fig_a_devices"), "devices.population.count",
        "number of devices K", "Round latency against the number of devices",
    )


@figure("b-bandwidth", "trace replay: round latency against total bandwidth B (log axis)",
        "fig_b_bandwidth", caption=_caption("the total uplink bandwidth B (K = 20, log axis)"))
def bandwidth_figure(results: Path) -> FigureData:
    """Figure (b): planned and realised round latency against the total uplink bandwidth."""
    return planned_realised_figure(
        _in_mhz(stored_summary(results, "fig_b_bandwidth")), "bandwidth_mhz",
        "total uplink bandwidth B (MHz, log scale)", "Round latency against bandwidth",
        log_x=True,
    )


@figure("c-memory", "trace replay: round latency against device memory budget", "fig_c_memory",
        caption=_caption("the mean device memory budget (four tiers scaled together, K = 20)"))
def memory_figure(results: Path) -> FigureData:
    """Figure (c): planned and realised round latency against the mean device memory budget."""
    return planned_realised_figure(
        _mean_budget(stored_summary(results, "fig_c_memory")), "memory_budget_gb",
        "mean device memory budget (GB)", "Round latency against memory budget",
    )


@figure("d-heterogeneity", "trace replay: round latency against compute heterogeneity",
        "fig_d_heterogeneity",
        caption=_caption("the speed-factor spread high/low (log-uniform, geometric mean 2, "
                         "K = 20, log axis)"))
def heterogeneity_figure(results: Path) -> FigureData:
    """Figure (d): planned and realised latency against the spread of the speed factors."""
    return planned_realised_figure(
        _spread(stored_summary(results, "fig_d_heterogeneity")), "speed_spread",
        "speed-factor spread high/low (log-uniform, log scale)",
        "Round latency against compute heterogeneity", log_x=True,
    )


SOLVE_CAPTION = (
    "Wall-clock solve time per round of each allocator against the number of devices K "
    f"(log-log), in the {TRACE_REPLAY_SETTING} with 4 GB devices (every device can hold every "
    "block); means over 3 seeds of each run's mean over its rounds, with 95% Student-t "
    "confidence intervals (the lower end is clipped at the axis on a log scale)."
)


@figure("e-solve-time", "allocator solve time against K (log-log)", "fig_e_solve_time",
        caption=SOLVE_CAPTION)
def solve_time_figure(results: Path) -> FigureData:
    """Figure (e): allocator solve time per round against the number of devices."""
    x, value = "devices.population.count", "solve_wall_s_mean"
    summary = stored_summary(results, "fig_e_solve_time")
    table = seed_stats(summary[summary["status"] == "ok"], ["allocator", x], [value])

    def draw(ax: Any, t: pd.DataFrame) -> None:
        ax.set_yscale("log")
        errorbar_lines(ax, t, x, value, log_x=True)
        x_axis(ax, t, x, "number of devices K (log scale)", log_x=True)
        ax.set_ylabel("solve time per round (s, log scale)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)

    return FigureData(table, draw, f"Allocator solve time against K ({TRACE_REPLAY})",
                      size=(7.6, 4.2))
