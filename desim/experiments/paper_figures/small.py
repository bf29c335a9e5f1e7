"""Figure ``k-sweep``: small populations, where devices train several blocks each.

One sweep (``fig_k_sweep``) runs the default trace-replay scenario with K = 2 to 2N devices
(N = 12 roberta-base LoRA blocks). ``crunch-multi`` (exact bottleneck allocation of block sets,
the band split equally among the devices it uses), ``single-device`` (all N blocks on the best
device, the ``|S| = N`` case), ``offload`` (the devices upload raw mini-batches to the edge
server) and, for K >= N only, ``crunch`` (one block per device; below N it falls back to
``crunch-multi``, so those runs are not drawn). Left and middle panels: planned and realised
mean round latency; right: how many devices ``crunch-multi`` gives blocks to, read from each
run's ``rounds.parquet`` (``active_devices``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from desim.experiments.paper_figures.base import (
    LATENCY,
    PLANNED,
    TRACE_REPLAY,
    TRACE_REPLAY_SETTING,
    FigureData,
    figure,
    run_folder,
    seed_stats,
    stored_summary,
)
from desim.experiments.paper_figures.lines import LINES_NOTE, errorbar_lines, log_y_axis, x_axis

SWEEP = "fig_k_sweep"
K = "devices.population.count"
ALLOCATORS = ("crunch-multi", "single-device", "offload", "crunch+equal")
ONE_BLOCK = "crunch+equal"
"""One block per device: drawn only where K >= N (below, the run is crunch-multi's fallback)."""
BLOCKS = 12
"""N of the default scenario (roberta-base): the fig_k_sweep spec does not change the model."""
USED = "devices_used_mean"
REFERENCE = "single-device"
"""The paired reference: each run's latency is divided by single-device's at the same K and seed."""
RATIO, PLANNED_RATIO = "latency_vs_single", "planned_vs_single"

CAPTION = (
    f"Round latency (mean of 5 rounds) against the number of devices K = 2 to 2N (N = {BLOCKS} "
    f"roberta-base LoRA blocks) in the {TRACE_REPLAY_SETTING}: crunch-multi (exact bottleneck "
    "allocation where a device trains a set of blocks in one backward pass, the band split "
    "equally among the devices it uses), single-device (all blocks on the best device, the whole "
    "band), offload (the devices upload the round's N raw mini-batches; the edge server trains) "
    "and, for K >= N, crunch with the equal split (one block per device). Left: realised "
    "latency (log axis). Middle: latency over single-device's in the same seed (paired; "
    "crunch-multi's planned ratio dashed, never above 1 since single-device's placement is one "
    "of its candidates). Right: the devices crunch-multi gives blocks to. Means over 5 "
    "replicate seeds (each draws its own population) with 95% Student-t intervals; at K = 2, "
    "2 of the 5 seeds draw no device that can hold block 12 (1.14 GB), so crunch-multi and "
    "single-device have 3 seeds there (offload, training on the server, has all 5)."
)


def k_sweep_table(results: Path) -> pd.DataFrame:
    """Per allocator and K: latency, its ratio to single-device (same seed), devices used."""
    summary = stored_summary(results, SWEEP)
    ok = summary[(summary["status"] == "ok") & summary["allocator"].isin(ALLOCATORS)]
    ok = ok[(ok["allocator"] != ONE_BLOCK) | (ok[K] >= BLOCKS)].copy()
    used = []
    for key in ok["run_key"]:
        rounds = pd.read_parquet(run_folder(results, SWEEP, key) / "rounds.parquet",
                                 columns=["active_devices", "status"])
        used.append(float(rounds.loc[rounds["status"] == "ok", "active_devices"].mean()))
    ok[USED] = used
    ref = ok[ok["allocator"] == REFERENCE].set_index([K, "seed"])
    pair = pd.MultiIndex.from_frame(ok[[K, "seed"]])
    for value, ratio in ((LATENCY, RATIO), (PLANNED, PLANNED_RATIO)):
        ok[ratio] = ok[value].to_numpy() / ref[value].reindex(pair).to_numpy()
    return seed_stats(ok, ["allocator", K], [PLANNED, LATENCY, USED, RATIO, PLANNED_RATIO])


@figure("k-sweep", "trace replay: round latency against K = 2..2N, several blocks per device",
        SWEEP, caption=CAPTION)
def k_sweep_figure(results: Path) -> FigureData:
    """Realised latency against K, its paired ratio to single-device, and the devices used."""
    table = k_sweep_table(results)

    def draw(axes: Any, t: pd.DataFrame) -> None:
        left, middle, right = axes
        left.set_yscale("log")
        errorbar_lines(left, t, K, LATENCY, log_x=True)
        log_y_axis(left, t, [LATENCY])
        left.set_ylabel("mean realised round latency (s, log scale)")
        left.set_title("realised latency", fontsize=9)
        middle.set_yscale("log")
        paired = t[t["allocator"] != REFERENCE].dropna(subset=[RATIO])
        errorbar_lines(middle, paired, K, RATIO, log_x=True)
        multi = t[t["allocator"] == "crunch-multi"]
        middle.plot(multi[K], multi[PLANNED_RATIO], color="C10", ls="--", lw=0.9,
                    label="crunch-multi, planned")
        middle.axhline(1.0, color="0.4", lw=0.8)
        log_y_axis(middle, paired, [RATIO])
        middle.set_ylabel("latency / single-device's, same seed (log scale)")
        middle.set_title("paired against single-device", fontsize=9)
        errorbar_lines(right, multi, K, USED, log_x=True)
        right.plot(multi[K], multi[K].clip(upper=BLOCKS), color="0.6", lw=0.8, ls="--",
                   label=f"min(K, N = {BLOCKS})")
        right.set_ylabel("devices crunch-multi gives blocks to")
        right.set_ylim(0, BLOCKS + 1)
        right.set_title("devices used", fontsize=9)
        for ax in axes:
            x_axis(ax, t, K, "number of devices K (log scale)", log_x=True)
            ax.axvline(BLOCKS, color="0.75", lw=0.8, ls=":")
        left.legend(fontsize=7, loc="lower right", title=LINES_NOTE, title_fontsize=6)
        middle.legend(fontsize=7, loc="upper left")
        right.legend(fontsize=7, loc="upper left")

    return FigureData(table, draw, f"Round latency against K, several blocks per device "
                      f"({TRACE_REPLAY}; 95% t-CI over seeds)", size=(14.0, 4.4), panels=3)
