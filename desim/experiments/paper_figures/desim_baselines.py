"""Figure (k): desim's own comparison of DEFT with the baselines that leave DEFT's round.

The sweep ``fig_k_desim_baselines`` runs the default scenario (trace replay: the shipped UMi
channel gain trace and background-load compute trace) with ``jbba`` (DEFT), ``minsum``,
``single-device`` on its own data and with pooled data, and ``offload``. Every round of each
updates all ``N`` blocks once, but they differ in the data behind the update, so the figure
states it beside each bar (:func:`delivery`): samples consumed a round, samples behind one
block's update, and whose data. Bars are the mean over seeds of each run's mean realised round
latency, with 95% Student-t intervals (:func:`~desim.experiments.paper_figures.base.mean_ci95`).
"""

from __future__ import annotations

from pathlib import Path
from textwrap import wrap
from typing import Any

import numpy as np
import pandas as pd

from desim.experiments.paper_figures.base import (
    LATENCY,
    FigureData,
    figure,
    mean_ci95,
    ok_runs,
    run_folder,
    run_metadata,
)

SWEEP = "fig_k_desim_baselines"


def delivery(allocator: dict[str, Any], num_blocks: int, batch_size: int) -> dict[str, Any]:
    """What one round of an allocator delivers: the data behind its ``N`` block updates.

    Args:
        allocator: the run's resolved ``[allocator]`` section (``name`` and parameters).
        num_blocks: ``N``.
        batch_size: ``b``, samples in one device's mini-batch.

    Returns:
        ``samples_per_round`` (consumed), ``samples_per_update`` (behind one block's
        gradient) and ``data`` (whose).
    """
    N, b = num_blocks, batch_size
    name = allocator.get("name", "")
    if name == "single-device" and allocator.get("data", "own") == "own":
        return {"samples_per_round": b, "samples_per_update": b,
                "data": "the trainer's own batch"}
    if name == "single-device":
        return {"samples_per_round": N * b, "samples_per_update": N * b,
                "data": f"{N} devices' batches, {N - 1} uploaded to it"}
    if name == "offload":
        return {"samples_per_round": N * b, "samples_per_update": N * b,
                "data": f"{N} devices' batches, uploaded to the server"}
    return {"samples_per_round": N * b, "samples_per_update": b,
            "data": "one batch on each block's own device"}


def baselines_table(summary: pd.DataFrame, allocators: dict[str, dict[str, Any]],
                    num_blocks: int, batch_size: int) -> pd.DataFrame:
    """Per allocator label (in sweep order): mean latency over seeds, its 95% CI, what it delivers.

    Args:
        summary: the sweep's successful runs (``allocator``, ``seed``, ``latency_s_mean``).
        allocators: label -> the runs' resolved ``[allocator]`` section.
        num_blocks: ``N`` of the runs.
        batch_size: ``b`` of the runs.
    """
    rows = []
    for label, grp in summary.groupby("allocator", sort=False):
        mean, half, n = mean_ci95(grp[LATENCY].to_numpy())
        rows.append({"allocator": label, LATENCY: mean, f"{LATENCY}_ci95": half, "seeds": n,
                     "block_updates": num_blocks,
                     **delivery(allocators.get(str(label), {}), num_blocks, batch_size)})
    return pd.DataFrame(rows)


def _draw(ax: Any, t: pd.DataFrame) -> None:
    x = np.arange(len(t))
    full = t["samples_per_round"] == t["samples_per_round"].max()
    ax.bar(x, t[LATENCY], yerr=t[f"{LATENCY}_ci95"], color=np.where(full, "tab:blue", "0.8"),
           hatch=[None if f else "//" for f in full], edgecolor="0.3", capsize=3, width=0.6)
    labels = [f"{a}\n{r} samples/round\n{u} per block update\n" + "\n".join(wrap(d, 22))
              for a, r, u, d in zip(t["allocator"], t["samples_per_round"],
                                    t["samples_per_update"], t["data"])]
    ax.set_xticks(x, labels, fontsize=7)
    for xi, v, h in zip(x, t[LATENCY], t[f"{LATENCY}_ci95"]):
        ax.annotate(f"{v:.2f} ± {h:.2f} s", (xi, v + h), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=7)
    ax.set_ylabel("realised round latency (s), mean over rounds")
    ax.set_ylim(0, float((t[LATENCY] + t[f"{LATENCY}_ci95"]).max()) * 1.15)
    ax.grid(alpha=0.3, axis="y")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(fc="tab:blue", ec="0.3", label="consumes N mini-batches a round"),
                       Patch(fc="0.8", ec="0.3", hatch="//",
                             label="consumes fewer (not the same progress)")],
              fontsize=7, loc="upper left")


CAPTION = (
    "default scenario, trace replay (20 devices, RoBERTa-base LoRA r=8, 12 blocks, b = 8); "
    "bars are the mean over 5 seeds of each run's mean realised round latency with 95% "
    "t-intervals. Every round updates all 12 blocks once. jbba (DEFT) and minsum consume 12 "
    "mini-batches (96 samples), each block's gradient from its own device's batch; "
    "single-device (own) consumes one mini-batch (8 samples), the trainer's, for every block; "
    "single-device (pooled) consumes 12 (96 samples, 11 uploaded to the trainer and "
    "accumulated); offload consumes 12 uploaded to the edge server (10x the cpu-reference)."
)


@figure("k-desim-baselines",
        "trace replay: jbba, minsum, single-device (own, pooled data) and offload, 95% CIs",
        SWEEP, caption=CAPTION)
def desim_baselines_figure(results: Path) -> FigureData:
    """Figure (k): realised round latency of DEFT and the baselines that leave DEFT's round."""
    ok = ok_runs(results, SWEEP)
    allocators: dict[str, dict[str, Any]] = {}
    scenario: dict[str, Any] = {}
    for label, grp in ok.groupby("allocator", sort=False):
        scenario = run_metadata(run_folder(results, SWEEP, grp["run_key"].iloc[0]))["scenario"]
        allocators[str(label)] = scenario["allocator"]
    model = scenario["model"]
    N, b = int(model["num_blocks"]), int(model["batch_size"])
    table = baselines_table(ok, allocators, N, b)
    devices = (scenario.get("devices") or {}).get("population") or {}
    many = f"{devices['count']} devices, " if "count" in devices else ""
    title = (f"Round latency on the default scenario, trace replay ({many}{model['name']} "
             f"{model['method']}, N = {N} blocks, b = {b});\nevery round updates all {N} "
             f"blocks, from the data given below each bar; mean of {int(table['seeds'].min())} "
             "seeds, 95% t-intervals")
    return FigureData(table, _draw, title, size=(9.0, 5.2))
