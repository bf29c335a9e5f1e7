"""Figure (l): the regime map, where DEFT wins against a single device and offloading.

Two sweeps feed it. ``fig_regime`` runs the DEFT allocators (``jbba``, ``crunch+equal``) and
``single-device`` with pooled data (``N`` mini-batches a round, as DEFT consumes) over the
fine-tuning method, the total bandwidth and device memory regimes; ``fig_regime_offload`` runs
``offload`` at three edge-server speeds over the method and bandwidth (offloading uses no
device memory). Each cell of the map is one (method, memory, bandwidth, server speed):

- DEFT's latency is the least, over its allocators, of the mean over seeds of each run's mean
  realised round latency;
- the baseline is the least of single-device (pooled) and offload at the cell's speed;
- the ratio is DEFT over the baseline: below 1, DEFT wins.

A run is infeasible when it skipped a round (``run.on_infeasible = "skip"``: no allocation
fits the memory); an allocator whose runs in a cell are not all complete and feasible does not
count there. A cell with no feasible DEFT allocator is "DEFT infeasible"; one where
single-device is infeasible compares DEFT with offloading alone and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError
from desim.experiments.paper_figures.base import (
    LATENCY,
    FigureData,
    figure,
    run_folder,
    stored_summary,
)

SWEEPS = ("fig_regime", "fig_regime_offload")
DEFT = ("jbba", "crunch+equal")
POOLED = "single-device (pooled)"
METHOD, BANDWIDTH = "model.method", "server.total_bandwidth_hz"
MEMORY = "devices.population.memory_bytes.values"
OFFLOAD_PREFIX = "offload x"


def memory_label(values: Any) -> str:
    """A memory regime in words: the budgets in GB, with their shares when they repeat."""
    v = np.round(np.asarray(values, dtype=float) / 1e9, 3)
    uniq, counts = np.unique(v, return_counts=True)
    if counts.max() == 1:
        return ", ".join(f"{u:g}" for u in uniq) + " GB"
    return ", ".join(f"{u:g} GB ({c}/{v.size})" for u, c in zip(uniq, counts))


def _cell_means(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per (keys, allocator): mean latency over seeds, ``nan`` unless every run is feasible.

    ``feasible`` runs completed (``status == ok``) with no skipped round; ``runs`` and
    ``feasible_runs`` count them.
    """
    s = summary.copy()
    s["_ok"] = (s["status"] == "ok") & (s["skipped_rounds"] == 0) & np.isfinite(s[LATENCY])
    s["_done"] = s["status"] == "ok"
    g = s.groupby([*keys, "allocator"], sort=False)
    out = g.agg(runs=("_ok", "size"), feasible_runs=("_ok", "sum"), done_runs=("_done", "sum"),
                latency_s=(LATENCY, "mean")).reset_index()
    out.loc[out["feasible_runs"] < out["runs"], "latency_s"] = np.nan
    return out


def _least(cells: pd.DataFrame, keys: list[str], allocators: list[str]) -> pd.DataFrame:
    """Per ``keys``: the least latency over ``allocators`` and which one (``""``: none)."""
    mine = cells[cells["allocator"].isin(allocators)]
    rows = []
    for key, grp in mine.groupby(keys, sort=False):
        finite = grp[np.isfinite(grp["latency_s"])]
        best = finite.loc[finite["latency_s"].idxmin()] if len(finite) else None
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                     "latency_s": np.nan if best is None else float(best["latency_s"]),
                     "allocator": "" if best is None else str(best["allocator"]),
                     "complete": bool((grp["done_runs"] == grp["runs"]).all())})
    return pd.DataFrame(rows)


def regime_table(deft: pd.DataFrame, offload: pd.DataFrame) -> pd.DataFrame:
    """The regime map's cells from the two sweep summaries.

    Args:
        deft: ``fig_regime`` summary (DEFT allocators and ``single-device (pooled)`` over
            method, bandwidth and memory).
        offload: ``fig_regime_offload`` summary (``offload x<speed>`` labels over method and
            bandwidth).

    Returns:
        One row per (method, memory, bandwidth, server speed), in sweep order: ``deft_s`` and
        ``deft_allocator``, ``pooled_s``, ``offload_s``, ``baseline_s`` and ``baseline``,
        ``ratio`` (DEFT / baseline), ``deft_wins`` and ``status`` (``DEFT wins``, ``DEFT
        loses``, ``DEFT infeasible`` or ``missing runs``), and ``single_device_feasible``.
    """
    _require(deft, (METHOD, BANDWIDTH, MEMORY), SWEEPS[0])
    _require(offload, (METHOD, BANDWIDTH), SWEEPS[1])
    d = deft.copy()
    d["memory"] = d[MEMORY].map(memory_label)
    keys = [METHOD, "memory", BANDWIDTH]
    cells = _cell_means(d, keys)
    best = _least(cells, keys, list(DEFT)).rename(
        columns={"latency_s": "deft_s", "allocator": "deft_allocator"})
    pooled = _least(cells, keys, [POOLED]).rename(columns={"latency_s": "pooled_s"})
    off = offload[offload["allocator"].str.startswith(OFFLOAD_PREFIX)].copy()
    off["server_speed"] = off["allocator"].str.removeprefix(OFFLOAD_PREFIX).astype(float)
    off_cells = _cell_means(off, [METHOD, BANDWIDTH, "server_speed"]).rename(
        columns={"latency_s": "offload_s", "done_runs": "offload_done"})
    t = best.merge(pooled[[*keys, "pooled_s", "complete"]], on=keys, suffixes=("", "_pooled"))
    t = t.merge(off_cells[[METHOD, BANDWIDTH, "server_speed", "offload_s", "runs",
                           "offload_done"]], on=[METHOD, BANDWIDTH])
    t["complete"] = t["complete"] & t["complete_pooled"] & (t["offload_done"] == t["runs"])
    both = t[["pooled_s", "offload_s"]].to_numpy(float)
    with np.errstate(invalid="ignore"):
        t["baseline_s"] = np.fmin(both[:, 0], both[:, 1])
    t["baseline"] = np.where(np.isnan(both[:, 0]) | (both[:, 1] < both[:, 0]), "offload",
                             "single-device (pooled)")
    t.loc[np.isnan(t["baseline_s"]), "baseline"] = ""
    t["ratio"] = t["deft_s"] / t["baseline_s"]
    t["deft_wins"] = t["ratio"] < 1.0
    t["single_device_feasible"] = np.isfinite(t["pooled_s"])
    t["status"] = np.select(
        [~t["complete"], np.isnan(t["deft_s"]), t["deft_wins"]],
        ["missing runs", "DEFT infeasible", "DEFT wins"], "DEFT loses")
    t["bandwidth_mhz"] = t[BANDWIDTH] / 1e6
    order = {k: {v: i for i, v in enumerate(dict.fromkeys(t[k]))} for k in (METHOD, "memory")}
    t = t.sort_values([METHOD, "memory", BANDWIDTH, "server_speed"], kind="stable",
                      key=lambda c: c.map(order[str(c.name)]) if c.name in order else c)
    cols = [METHOD, "memory", "bandwidth_mhz", "server_speed", "deft_s", "deft_allocator",
            "pooled_s", "offload_s", "baseline_s", "baseline", "ratio", "deft_wins",
            "single_device_feasible", "status"]
    return t[cols].reset_index(drop=True)


def _require(summary: pd.DataFrame, axes: tuple[str, ...], sweep: str) -> None:
    missing = [a for a in axes if a not in summary.columns]
    if missing:
        raise InputError(f"{sweep}: the summary has no axis {', '.join(missing)}; the sweep "
                         "spec must list it under [grid] or [zip] (one value is enough)")


SHORT = {"offload": "offload", "single-device (pooled)": "1-device"}


def _cell_text(row: Any) -> str:
    """A cell's annotation: the ratio and the baseline, or why there is none."""
    best = SHORT.get(row["baseline"], row["baseline"])
    if row["status"] == "missing runs":
        return "missing\nruns"
    if row["status"] == "DEFT infeasible":
        head = "DEFT infeasible" if row["single_device_feasible"] else "DEFT, 1-device\ninfeasible"
        return f"{head}\nbest: {best}\n{row['baseline_s']:.3g} s" if best else head
    text = f"{row['ratio']:.2f}\nvs {best}"
    return text if row["single_device_feasible"] else text + "\n(1-device infeasible)"


def _draw_panel(ax: Any, t: pd.DataFrame, cmap: Any, norm: Any) -> Any:
    """One method's map: rows memory x bandwidth, columns server speed."""
    from matplotlib.patches import Rectangle

    memories = list(dict.fromkeys(t["memory"]))
    rows = sorted(dict.fromkeys(zip(t["memory"], t["bandwidth_mhz"])),
                  key=lambda r: (memories.index(r[0]), r[1]))
    speeds = sorted(t["server_speed"].unique())
    grid = np.full((len(rows), len(speeds)), np.nan)
    for _, r in t.iterrows():
        i, j = rows.index((r["memory"], r["bandwidth_mhz"])), speeds.index(r["server_speed"])
        grid[i, j] = np.log2(r["ratio"]) if np.isfinite(r["ratio"]) else np.nan
        if r["deft_wins"]:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                  edgecolor="0.35", lw=0))
        ax.text(j, i, _cell_text(r), ha="center", va="center", fontsize=6.5,
                linespacing=1.1, bbox={"boxstyle": "round,pad=0.25", "fc": "white",
                                       "ec": "none", "alpha": 0.85})
    im = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    ax.set_xticks(range(len(speeds)), [f"x{s:g}" for s in speeds], fontsize=8)
    ax.set_xlabel("edge-server speed (offload), relative to cpu-reference", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{bw:g} MHz" for _, bw in rows], fontsize=7)
    for m in memories:
        idx = [i for i, (mm, _) in enumerate(rows) if mm == m]
        ax.annotate(m.replace(", ", ",\n", 1) if len(m) > 22 else m,
                    (-0.5, float(np.mean(idx))), xytext=(-38, 0),
                    textcoords="offset points", xycoords=("data", "data"), ha="right",
                    va="center", fontsize=6.5, annotation_clip=False)
        if idx[0] > 0:
            ax.axhline(idx[0] - 0.5, color="black", lw=1.5)
    ax.set_xlim(-0.5, len(speeds) - 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    return im


def _draw(axes: Any, t: pd.DataFrame) -> None:
    import matplotlib as mpl

    axes = np.atleast_1d(axes)
    cmap = mpl.colormaps["RdBu_r"].with_extremes(bad="0.85")
    norm = mpl.colors.Normalize(vmin=-4.0, vmax=4.0)
    im = None
    for ax, (method, grp) in zip(axes, t.groupby(METHOD, sort=False)):
        im = _draw_panel(ax, grp, cmap, norm)
        mbit = grp["block_upload_mbit"].iloc[0]
        size = f": {mbit:.3g} Mbit gradient a block" if np.isfinite(mbit) else ""
        ax.set_title(f"{method}{size}", fontsize=9)
    axes[0].set_ylabel("device memory budgets  /  total bandwidth B", fontsize=8, labelpad=70)
    if im is not None:
        bar = axes[0].figure.colorbar(im, ax=list(axes), shrink=0.8, pad=0.02)
        ticks = np.arange(-4, 5, 2)
        bar.set_ticks(ticks, labels=[f"{2.0 ** k:g}" for k in ticks])
        bar.set_label("DEFT / best baseline (log scale; < 1: DEFT faster, hatched)", fontsize=8)


CAPTION = (
    "trace replay on the default scenario (20 devices, RoBERTa-base, 12 blocks, b = 8, 3 "
    "seeds x 5 rounds). Each cell: the best DEFT allocator's realised round latency (least of "
    "jbba and crunch+equal, means over seeds) over the least of single-device with pooled "
    "data and offload at the column's server speed; every scheme updates all 12 blocks a "
    "round from 12 devices' mini-batches. Hatched: DEFT faster. Grey: DEFT infeasible (fewer "
    "than 12 devices can hold the blocks it must place), with single-device infeasible too "
    "where no device holds the deepest block. '1-device' is single-device (pooled)."
)


@figure("l-regime-map",
        "regime map: best DEFT vs single-device (pooled) and offload, over method, server "
        "speed, bandwidth and memory", *SWEEPS, caption=CAPTION)
def regime_figure(results: Path) -> FigureData:
    """Figure (l): where DEFT wins, as the ratio of its latency to the best baseline's."""
    deft = stored_summary(results, SWEEPS[0])
    table = regime_table(deft, stored_summary(results, SWEEPS[1]))
    table["block_upload_mbit"] = table[METHOD].map(_block_upload_mbit(results, deft))
    title = ("Where DEFT wins: best DEFT (jbba, crunch+equal) / best of single-device (pooled) "
             f"and offload, realised round latency;\ntrace replay, {deft['seed'].nunique()} "
             f"seeds x {int(deft['rounds'].max())} rounds; a round of every scheme updates "
             "all N blocks and consumes N devices' mini-batches\n(1-device: single-device "
             "with pooled data; grey: DEFT infeasible, the best baseline's latency given)")
    return FigureData(table, _draw, title, size=(11.0, 7.6), panels=table[METHOD].nunique())


def _block_upload_mbit(results: Path, deft: pd.DataFrame) -> dict[str, float]:
    """Per method: the mean gradient upload of one block (Mbit), from a stored DEFT run."""
    out: dict[str, float] = {}
    ok = deft[(deft["status"] == "ok") & (deft["skipped_rounds"] == 0)
              & deft["allocator"].isin(DEFT)]
    for method, grp in ok.groupby(METHOD, sort=False):
        rows = pd.read_parquet(run_folder(results, SWEEPS[0], grp["run_key"].iloc[0])
                               / "device_rounds.parquet", columns=["upload_bits"])
        out[str(method)] = float(rows["upload_bits"].mean()) / 1e6
    return out
