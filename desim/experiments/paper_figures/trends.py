"""Figures (a)–(e): a sweep's round latency or solve time against one axis, per allocator.

Each reads one sweep's ``summary.parquet`` and draws one line per allocator with error bars of
the standard deviation over the replicate seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.experiments.paper_figures.base import LATENCY, FigureData, figure, stored_summary


def seed_stats(summary: pd.DataFrame, x: str, value: str = LATENCY) -> pd.DataFrame:
    """Mean and standard deviation over seeds of ``value`` per (allocator, x)."""
    ok = summary[summary["status"] == "ok"]
    g = ok.groupby(["allocator", x], sort=False)[value]
    table = g.agg(["mean", "std", "count"]).reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table.rename(columns={"mean": f"{value}", "std": f"{value}_std", "count": "seeds"})


def line_figure(
    summary: pd.DataFrame,
    x: str,
    xlabel: str,
    title: str,
    value: str = LATENCY,
    ylabel: str = "round latency (s), mean over rounds",
    log: bool = False,
) -> FigureData:
    """One line per allocator of ``value`` against axis ``x``, error bars over seeds."""
    table = seed_stats(summary, x, value)

    def draw(ax: Any, t: pd.DataFrame) -> None:
        for label, grp in t.groupby("allocator", sort=False):
            grp = grp.sort_values(x)
            ax.errorbar(
                grp[x],
                grp[value],
                yerr=grp[f"{value}_std"],
                marker="o",
                ms=3,
                capsize=2,
                label=str(label),
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    return FigureData(table, draw, title, size=(8.0, 4.2))


def _spread(summary: pd.DataFrame) -> pd.DataFrame:
    s = summary.copy()
    s["speed_spread"] = (
        s["devices.population.speed_factor.high"] / s["devices.population.speed_factor.low"]
    )
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


@figure("a-devices", "round latency against the number of devices K", "fig_a_devices")
def devices_figure(results: Path) -> FigureData:
    """Figure (a): round latency against the number of devices."""
    return line_figure(
        stored_summary(results, "fig_a_devices"),
        "devices.population.count",
        "number of devices K",
        "Round latency against the number of devices",
    )


@figure("b-bandwidth", "round latency against total bandwidth B", "fig_b_bandwidth")
def bandwidth_figure(results: Path) -> FigureData:
    """Figure (b): round latency against the total uplink bandwidth."""
    return line_figure(
        _in_mhz(stored_summary(results, "fig_b_bandwidth")),
        "bandwidth_mhz",
        "total uplink bandwidth B (MHz)",
        "Round latency against bandwidth",
    )


@figure("c-memory", "round latency against device memory budget", "fig_c_memory")
def memory_figure(results: Path) -> FigureData:
    """Figure (c): round latency against the mean device memory budget."""
    return line_figure(
        _mean_budget(stored_summary(results, "fig_c_memory")),
        "memory_budget_gb",
        "mean device memory budget (GB)",
        "Round latency against memory budget",
    )


@figure("d-heterogeneity", "round latency against compute heterogeneity", "fig_d_heterogeneity")
def heterogeneity_figure(results: Path) -> FigureData:
    """Figure (d): round latency against the spread of the devices' speed factors."""
    return line_figure(
        _spread(stored_summary(results, "fig_d_heterogeneity")),
        "speed_spread",
        "speed-factor spread high/low (log-uniform)",
        "Round latency against compute heterogeneity",
    )


@figure("e-solve-time", "allocator solve time against K (log-log)", "fig_e_solve_time")
def solve_time_figure(results: Path) -> FigureData:
    """Figure (e): allocator solve time per round against the number of devices."""
    return line_figure(
        stored_summary(results, "fig_e_solve_time"),
        "devices.population.count",
        "number of devices K",
        "Allocator solve time against K",
        value="solve_wall_s_mean",
        ylabel="solve time per round (s)",
        log=True,
    )
