"""Beyond the snapshot: what the planner knows of the channel, and a work-conserving uplink.

``csi`` draws the realised latency of the paper's allocators under each CSI mode
(``allocator.csi``) against the ``oracle-exact`` bound, ``uplink`` the fixed against the
reclaiming uplink (``server.uplink``), and ``doppler`` the planned-to-realised ratio against the
devices' speed for the snapshot and the ergodic planner. Each reads stored sweeps only.

The ratio to the bound is exact round by round: every run of the ``csi`` sweep also solves
``oracle-exact`` on each round's own snapshot with the true future (``run.oracle_bound``), and a
run's ratio is the mean over its rounds of realised latency over that round's bound. Intervals
are 95% Student-t intervals over the replicate seeds. Paired ratios (``uplink``) pair the runs
of one seed: the seed fixes the population, the trace offsets and the fading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError
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

CSI_SWEEP = "fig_csi"
BOUND_SWEEP = "fig_csi_bound"
UPLINK_SWEEP = "fig_uplink"
DOPPLER_SWEEP = "fig_doppler"
CSI_ORDER = ("snapshot", "large-scale", "ergodic", "predicted", "oracle")
ALLOCATORS = ("jbba", "jbba-exact", "crunch+equal", "greedy")
CSI_AXIS = "allocator.csi"
COLOURS = {"jbba": "C0", "jbba-exact": "C1", "crunch+equal": "C2", "greedy": "C3"}


def _ok(summary: pd.DataFrame, sweep: str) -> pd.DataFrame:
    ok = summary[summary["status"] == "ok"]
    if ok.empty:
        raise InputError(f"sweep {sweep}: no successful run to draw")
    return ok


def per_round_bound_ratio(results: Path, sweep: str, summary: pd.DataFrame) -> pd.Series:
    """Each run's mean over its rounds of realised latency / that round's oracle-exact bound.

    The bound (``run.oracle_bound``) is solved on the round's own snapshot with the true future,
    so the ratio is exact round by round (``>= 1`` for any fixed-share allocation).
    """
    out = {}
    for key in summary["run_key"]:
        rounds = pd.read_parquet(run_folder(results, sweep, key) / "rounds.parquet")
        if "oracle_bound_s" not in rounds.columns:
            raise InputError(f"sweep {sweep}: run {key} has no oracle_bound_s column; rerun "
                             "it with run.oracle_bound = true (experiments/fig_csi.toml)")
        ok = rounds[rounds["status"] == "ok"]
        out[key] = float((ok["latency_s"] / ok["oracle_bound_s"]).mean())
    return pd.Series(out)


REFERENCE = ("crunch+equal", "snapshot")
"""The paired reference of the csi figure: CRUNCH with the equal split on the snapshot."""


def csi_table(results: Path) -> pd.DataFrame:
    """Per allocator and CSI mode: realised latency and its changes against two references.

    ``change_pct``: the paired change over ``crunch+equal`` on the snapshot (same seed);
    ``ratio_to_bound``: the per-round ratio to the ``oracle-exact`` bound.
    """
    ok = _ok(stored_summary(results, CSI_SWEEP), CSI_SWEEP).copy()
    ok["ratio_to_bound"] = per_round_bound_ratio(results, CSI_SWEEP, ok).reindex(
        ok["run_key"]).to_numpy()
    bound = _ok(stored_summary(results, BOUND_SWEEP), BOUND_SWEEP).copy()
    bound["allocator"], bound[CSI_AXIS], bound["ratio_to_bound"] = "oracle-exact", "oracle", 1.0
    both = pd.concat([ok, bound], ignore_index=True)
    ref = ok[(ok["allocator"] == REFERENCE[0]) & (ok[CSI_AXIS] == REFERENCE[1])]
    base = ref.set_index("seed")[LATENCY]
    both["change_pct"] = (both[LATENCY].to_numpy() / base.reindex(both["seed"]).to_numpy()
                          - 1.0) * 100.0
    table = seed_stats(both, ["allocator", CSI_AXIS],
                       [LATENCY, PLANNED, "change_pct", "ratio_to_bound"])
    return table.rename(columns={CSI_AXIS: "csi"})


def _grouped_bars(ax: Any, t: pd.DataFrame, groups: list[str], key: str, value: str,
                  allocators: list[str]) -> None:
    """Bars of ``value`` per group (x) and allocator (colour), with their 95% intervals."""
    width = 0.8 / len(allocators)
    x = np.arange(len(groups))
    for i, alloc in enumerate(allocators):
        part = t[t["allocator"] == alloc].set_index(key).reindex(groups)
        ax.bar(x + (i - (len(allocators) - 1) / 2) * width, part[value], width * 0.95,
               yerr=part[f"{value}_ci95"], capsize=2, color=COLOURS.get(alloc, "C9"),
               label=alloc)
    ax.set_xticks(x, groups, fontsize=8)
    ax.grid(alpha=0.3, axis="y")


@figure(
    "csi",
    "realised latency of jbba, jbba-exact, crunch and greedy under each CSI mode, against the "
    "oracle-exact bound (trace replay)",
    CSI_SWEEP, BOUND_SWEEP,
    caption=(
        "Left: mean realised round latency (10 rounds) of jbba, jbba-exact (it coincides with "
        "jbba), crunch with the equal split and greedy, as a paired change over crunch+equal on "
        "the snapshot (same seed), when the planner knows the channel as the round-start "
        "snapshot, its large-scale part (a 2 s moving average), its ergodic rate (the empirical "
        "mean rate over the past 2 s), an EWMA prediction of the log-SNR, or the true next 2 s "
        "(oracle); the dashed line is a run of oracle-exact, the exact least realisable latency "
        "with fixed FDMA shares and the true channel. Right: realised latency over the "
        "oracle-exact bound of the same round (solved on that round's snapshot with the true "
        "future), averaged over a run's rounds. "
        f"{TRACE_REPLAY_SETTING}; 5 seeds, 95% Student-t intervals."
    ),
)
def csi_figure(results: Path) -> FigureData:
    """Realised latency per CSI mode and allocator, and its ratio to ``oracle-exact``."""
    table = csi_table(results)

    def draw(axes: Any, t: pd.DataFrame) -> None:
        left, right = axes
        modes = [m for m in CSI_ORDER if m in set(t["csi"])]
        allocs = [a for a in ALLOCATORS if a in set(t["allocator"])]
        body = t[t["allocator"] != "oracle-exact"]
        bound = t[t["allocator"] == "oracle-exact"].iloc[0]
        _grouped_bars(left, body, modes, "csi", "change_pct", allocs)
        left.axhline(0.0, color="black", lw=0.8)
        left.axhline(bound["change_pct"], color="black", ls="--", lw=1.0,
                     label=f"oracle-exact bound ({bound['change_pct']:+.1f}%)")
        left.set_ylabel("realised latency vs crunch+equal, snapshot (%)")
        left.set_xlabel("what the planner knows of the channel (allocator.csi)")
        low = min(float((body["change_pct"] - body["change_pct_ci95"]).min()),
                  float(bound["change_pct"] - bound["change_pct_ci95"]))
        high = float((body["change_pct"] + body["change_pct_ci95"]).max())
        left.set_ylim(low - 2.0, high + 0.35 * (high - low) + 2.0)
        left.legend(fontsize=7, ncol=3, loc="upper center")
        _grouped_bars(right, body, modes, "csi", "ratio_to_bound", allocs)
        right.axhline(1.0, color="black", ls="--", lw=1.0)
        top = float((body["ratio_to_bound"] + body["ratio_to_bound_ci95"]).max())
        right.set_ylim(0.95, top + 0.02)
        right.set_ylabel("realised latency / the round's oracle-exact bound")
        right.set_xlabel("allocator.csi")

    return FigureData(table, draw, f"What the planner knows of the channel ({TRACE_REPLAY}; "
                      "95% t-CI over 5 seeds)", size=(12.0, 4.4), panels=2)


def uplink_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per allocator and uplink rule: realised latency and its paired changes (same seed).

    ``change_pct``: over the allocator's own fixed-uplink run; ``vs_crunch_pct``: over
    ``crunch+equal`` on the fixed uplink.
    """
    ok = _ok(summary, UPLINK_SWEEP).copy()
    ok["uplink"] = np.where(ok["server.uplink"] == "fixed", "fixed",
                            "reclaim " + ok["server.reclaim"].astype(str))
    if CSI_AXIS in ok.columns:  # a point planned with other CSI than the snapshot says so
        other = ok[CSI_AXIS] != "snapshot"
        ok.loc[other, "uplink"] = ok.loc[other, "uplink"] + ",\n" + ok.loc[other, CSI_AXIS] + " CSI"
    fixed = ok[ok["uplink"] == "fixed"]
    own = fixed.set_index(["allocator", "seed"])[LATENCY]
    ok["change_pct"] = (ok[LATENCY].to_numpy() / own.reindex(
        pd.MultiIndex.from_frame(ok[["allocator", "seed"]])).to_numpy() - 1.0) * 100.0
    ref = fixed[fixed["allocator"] == REFERENCE[0]].set_index("seed")[LATENCY]
    ok["vs_crunch_pct"] = (ok[LATENCY].to_numpy() / ref.reindex(ok["seed"]).to_numpy()
                           - 1.0) * 100.0
    return seed_stats(ok, ["allocator", "uplink"], [LATENCY, PLANNED, "change_pct",
                                                    "vs_crunch_pct"])


@figure(
    "uplink",
    "fixed against work-conserving (reclaim) uplink for jbba, jbba-exact, crunch and greedy "
    "(trace replay)",
    UPLINK_SWEEP,
    caption=(
        "Mean realised round latency (10 rounds) with the paper's fixed FDMA shares and with a "
        "work-conserving uplink that hands a finished (or lost) upload's share to the devices "
        "still uploading, in proportion to their shares or by re-solving the min-max split on "
        "their remaining bits; planned on the round-start snapshot (the last group: on the "
        "ergodic rate). Left: the latency, labelled with the paired change over the same "
        "allocator on the fixed uplink; right: the paired change over crunch+equal on the "
        f"fixed uplink (same seed). {TRACE_REPLAY_SETTING}; 5 seeds, 95% Student-t intervals."
    ),
)
def uplink_figure(results: Path) -> FigureData:
    """Realised latency per uplink rule and allocator, and its change over crunch+equal."""
    table = uplink_table(stored_summary(results, UPLINK_SWEEP))

    def draw(axes: Any, t: pd.DataFrame) -> None:
        left, right = axes
        rules = list(dict.fromkeys(t["uplink"]))
        allocs = [a for a in ALLOCATORS if a in set(t["allocator"])]
        _grouped_bars(left, t, rules, "uplink", LATENCY, allocs)
        width = 0.8 / len(allocs)
        for i, alloc in enumerate(allocs):  # the paired change over fixed above each bar
            part = t[t["allocator"] == alloc].set_index("uplink").reindex(rules)
            for j, rule in enumerate(rules[1:], start=1):
                r = part.loc[rule]
                left.annotate(f"{r['change_pct']:+.0f}%",
                              (j + (i - (len(allocs) - 1) / 2) * width,
                               r[LATENCY] + r[f"{LATENCY}_ci95"]),
                              xytext=(0, 2), textcoords="offset points", ha="center",
                              fontsize=6)
        left.set_ylim(0.0, float((t[LATENCY] + t[f"{LATENCY}_ci95"]).max()) * 1.25)
        left.set_ylabel("mean realised round latency (s)")
        left.set_xlabel("server.uplink (labels: paired change over fixed)")
        left.legend(fontsize=7, ncol=4, loc="upper center")
        _grouped_bars(right, t, rules, "uplink", "vs_crunch_pct", allocs)
        right.axhline(0.0, color="black", lw=0.8)
        right.set_ylabel("realised latency vs crunch+equal, fixed uplink (%)")
        right.set_xlabel("server.uplink")

    return FigureData(table, draw, f"Fixed against reclaiming uplink ({TRACE_REPLAY}; 95% t-CI "
                      "over 5 seeds)", size=(12.0, 4.6), panels=2)


def doppler_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per allocator, CSI mode and speed: the mean planned-to-realised ratio of a run."""
    ok = _ok(summary, DOPPLER_SWEEP).copy()
    ok["ratio"] = ok[LATENCY] / ok[PLANNED]
    return seed_stats(ok, ["allocator", CSI_AXIS, "channel.speed_kmh"], ["ratio"])


@figure(
    "doppler",
    "planned-to-realised latency ratio against device speed (Doppler), snapshot against "
    "ergodic CSI (generated TR 38.901 channel)",
    DOPPLER_SWEEP,
    caption=(
        "Mean realised over mean planned round latency (10 rounds) of jbba and crunch with the "
        "equal split against the devices' speed (Doppler shift 0 to 389 Hz at 3.5 GHz), when the "
        "planner uses the round-start snapshot or the ergodic rate over the fading; the generated "
        "TR 38.901 UMi channel (LOS probability, shadowing, Jakes fading, sampled every 0.1 s) "
        "of the default "
        "population. 5 seeds, 95% Student-t intervals."
    ),
)
def doppler_figure(results: Path) -> FigureData:
    """Planned-to-realised ratio against speed, one line per allocator and CSI mode."""
    table = doppler_table(stored_summary(results, DOPPLER_SWEEP))

    def draw(ax: Any, t: pd.DataFrame) -> None:
        speeds = sorted(set(t["channel.speed_kmh"]))
        pos = {s: i for i, s in enumerate(speeds)}
        for (alloc, mode), part in t.groupby(["allocator", CSI_AXIS], sort=False):
            part = part.sort_values("channel.speed_kmh")
            ax.errorbar([pos[s] for s in part["channel.speed_kmh"]], part["ratio"],
                        yerr=part["ratio_ci95"], capsize=2, color=COLOURS.get(alloc, "C9"),
                        ls="-" if mode == "snapshot" else "--",
                        marker="o" if mode == "snapshot" else "s", mfc="none",
                        label=f"{alloc}, {mode}")
        ax.set_xticks(range(len(speeds)), [f"{s:g}" for s in speeds])
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_xlabel("device speed (km/h)")
        ax.set_ylabel("realised / planned round latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    return FigureData(table, draw, "Planned against realised latency as the channel speeds up "
                      "(95% t-CI over 5 seeds)", size=(7.0, 4.4))
