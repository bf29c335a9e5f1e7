"""Figures (f)–(i): what one stored run recorded, or data shipped with desim.

(f) reads JBBA's iteration trace from a stored run's ``run.json``, (g) a shipped measured
profile, (h) a run's ``device_rounds.parquet`` and ``rounds.parquet``, and (i) the
``rounds.parquet`` of every run of its sweep (replicate seeds pooled).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError
from desim.experiments.paper_figures.base import (
    TRACE_REPLAY,
    TRACE_REPLAY_SETTING,
    FigureData,
    figure,
    ok_runs,
    run_folder,
    run_metadata,
)

JBBA_SWEEP = "fig_f_jbba_convergence"
"""The sweep of figure (f): round 0 of one default-scenario instance under the two below."""
DUAL_ASCENT = "jbba-dual-ascent"
"""Allocator label of JBBA's dual ascent alone (no refinement) in :data:`JBBA_SWEEP`."""
EXACT = "jbba-exact"
"""Allocator label of the exact optimum in :data:`JBBA_SWEEP`."""


def convergence_figure(trace: pd.DataFrame, instance: str = "") -> FigureData:
    """JBBA's dual value, best dual and best primal against iteration, and their gaps (log).

    Args:
        trace: ``iteration``, ``dual_value``, ``best_primal_latency_s`` and ``optimum_s``.
        instance: words naming the instance, for the title.
    """
    t = trace.copy()
    t["best_dual_s"] = t["dual_value"].cummax()
    t["duality_gap_rel"] = (t["best_primal_latency_s"] - t["best_dual_s"]) / t[
        "best_primal_latency_s"
    ]
    t["primal_gap_rel"] = (t["best_primal_latency_s"] - t["optimum_s"]) / t["optimum_s"]

    def draw(axes: Any, tab: pd.DataFrame) -> None:
        left, right = axes
        it = tab["iteration"]
        left.plot(it, tab["dual_value"], color="tab:blue", lw=0.6, alpha=0.5,
                  label="dual value g(λ, μ)")
        left.plot(it, tab["best_dual_s"], color="tab:blue", label="best dual (lower bound)")
        left.plot(it, tab["best_primal_latency_s"], color="tab:red", ls="--",
                  label="best primal latency")
        left.axhline(float(tab["optimum_s"].iloc[0]), color="black", ls=":",
                     label="optimum (jbba-exact)")
        left.set_xlabel("dual-ascent iteration")
        left.set_ylabel("round latency (s)")
        left.set_title("bounds on the round-0 latency", fontsize=9)
        left.legend(fontsize=7)
        left.grid(alpha=0.3)
        right.semilogy(it, tab["duality_gap_rel"].clip(lower=1e-12), color="tab:purple",
                       label="duality gap (best primal − best dual) / best primal")
        sub = tab["primal_gap_rel"].where(tab["primal_gap_rel"] > 1e-12)
        right.semilogy(it, sub, color="tab:red", ls="--",
                       label="primal gap (best primal − optimum) / optimum")
        last = tab.iloc[-1]
        better = tab.loc[tab["best_primal_latency_s"].diff() < 0, "iteration"]
        note = (f"after {int(last['iteration']) + 1} iterations:\n"
                f"duality gap {last['duality_gap_rel']:.1e}\n"
                f"primal gap {last['primal_gap_rel']:.1e}"
                + (f"\n(last primal gain at iteration {int(better.iloc[-1])})"
                   if len(better) else "\n(first primal already best)"))
        right.text(0.97, 0.97, note, transform=right.transAxes, ha="right", va="top",
                   fontsize=7, bbox={"fc": "white", "ec": "0.7", "lw": 0.5})
        right.set_xlabel("dual-ascent iteration")
        right.set_ylabel("relative gap (log scale)")
        right.set_title("gaps", fontsize=9)
        right.legend(fontsize=7, loc="center right", bbox_to_anchor=(0.98, 0.25))
        right.grid(alpha=0.3)

    title = ("JBBA dual ascent (no refinement) converging" + (f": {instance}" if instance else "")
             + f" ({TRACE_REPLAY}, planned on the round-start snapshot)")
    return FigureData(t, draw, title, size=(10.0, 4.2), panels=2)


def _run_of(ok: pd.DataFrame, label: str, results: Path, sweep: str) -> Path:
    """The folder of the first successful run of allocator ``label`` in a stored sweep."""
    rows = ok[ok["allocator"] == label]
    if rows.empty:
        raise InputError(
            f"{results / sweep}: no successful run of allocator {label!r} "
            f"(experiments/{sweep}.toml names it)"
        )
    return run_folder(results, sweep, rows["run_key"].iloc[0])


@figure("f-jbba-convergence", "JBBA dual ascent: bounds and duality gap against iteration",
        JBBA_SWEEP, caption=(
            "JBBA's dual ascent alone (no primal refinement; Polyak steps, 200 iterations) on "
            "round 0 of the default scenario with K = 50 devices, seed 1 (trace replay, planned "
            "on the round-start snapshot): left the dual value, the best dual (a lower bound) "
            "and the best primal latency against the jbba-exact optimum; right the relative "
            "duality gap and the primal gap on a log axis."))
def jbba_convergence_figure(results: Path) -> FigureData:
    """JBBA's dual ascent (no refinement) on round 0 of the instance of :data:`JBBA_SWEEP`.

    The iteration trace is the one the run recorded in ``run.json`` (``allocator_diagnostics``
    of round 0); the optimum is the ``jbba-exact`` run's planned latency of the same round.
    """
    ok = ok_runs(results, JBBA_SWEEP)
    ascent = _run_of(ok, DUAL_ASCENT, results, JBBA_SWEEP)
    meta = run_metadata(ascent)
    first = [d for d in meta.get("allocator_diagnostics", []) if d.get("round") == 0
             and "trace" in d]
    if not first:
        raise InputError(f"{ascent / 'run.json'}: no JBBA iteration trace of round 0")
    trace = pd.DataFrame(
        first[0]["trace"], columns=["iteration", "dual_value", "best_primal_latency_s"]
    )
    rounds = pd.read_parquet(_run_of(ok, EXACT, results, JBBA_SWEEP) / "rounds.parquet")
    trace["optimum_s"] = float(rounds.loc[rounds["round"] == 0, "planned_latency_s"].iloc[0])
    count = meta.get("scenario", {}).get("devices", {}).get("population", {}).get("count")
    instance = f"round 0, K = {count}, seed {meta.get('seed')}"
    return convergence_figure(trace, instance)


def depth_figure(profile: pd.DataFrame) -> FigureData:
    """Training-step latency and peak memory against block depth, one panel each from zero."""
    t = profile.sort_values("block").reset_index(drop=True)

    def draw(axes: Any, tab: pd.DataFrame) -> None:
        panels = (
            (axes[0], tab["compute_s"], "training-step latency (s)", "tab:blue", "o-"),
            (axes[1], tab["peak_memory_bytes"] / 1e9, "peak memory (GB)", "tab:red", "s--"),
        )
        for ax, y, label, colour, fmt in panels:
            ax.plot(tab["block"], y, fmt, color=colour, ms=4, label=label)
            ax.set_ylim(0, float(y.max()) * 1.15)
            ax.set_xlabel("block depth n (1 = next to the output)")
            ax.set_ylabel(label)
            ax.set_xticks(tab["block"])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
            growth = float(y.iloc[-1] / y.iloc[0])
            ax.set_title(f"{label.split(' (')[0]}: x{growth:.2f} from block 1 to "
                         f"{int(tab['block'].iloc[-1])}", fontsize=9)

    return FigureData(t, draw, "Measured cost of training block n", (10.0, 4.0), panels=2)


@figure("g-depth-profile", "latency and memory against block depth from the measured profile",
        caption=(
            "The shipped measured profile cpu-reference (one AMD EPYC core, fp32): training-"
            "step latency (left) and peak memory (right) of a step that trains block n of "
            "roberta-base with LoRA r = 8 at batch 8, sequence length 128; no simulation, no "
            "setting. Block n backpropagates from the output down to block n, so both grow "
            "with depth."))
def profile_depth_figure(
    _results: Path, hardware: str = "cpu-reference", model: str = "roberta-base"
) -> FigureData:
    """Latency and memory by depth from the shipped profile at the default batch and length."""
    from desim.io.calibration import load_profile

    prof = load_profile(hardware)
    prof = prof[(prof["model"] == model) & (prof["method"] == "lora")]
    if prof.empty:
        raise InputError(f"profile {hardware!r} has no {model} LoRA rows")
    points = prof[["batch_size", "seq_len"]].drop_duplicates()
    want = points[(points.batch_size == 8) & (points.seq_len == 128)]
    b, s = (8, 128) if len(want) else tuple(points.sort_values(["batch_size", "seq_len"]).iloc[-1])
    rows = prof[(prof.batch_size == b) & (prof.seq_len == s)]
    data = depth_figure(rows[["block", "compute_s", "peak_memory_bytes"]])
    title = (f"Measured cost of training block n: {model}, LoRA, batch {b}, seq {s}, "
             f"profile {hardware} (shipped, not simulated)")
    return FigureData(data.table, data.draw, title, data.size, data.panels)


GANTT_COLUMNS = ["round", "device", "block", "compute_start_s", "compute_end_s",
                 "upload_start_s", "upload_end_s"]


def gantt_figure(
    device_rounds: pd.DataFrame, rounds_table: pd.DataFrame | None = None, rounds: int = 3,
    allocator: str = "",
) -> FigureData:
    """Per-device timeline of the first ``rounds`` rounds: compute and upload bars.

    Args:
        device_rounds: a run's ``device_rounds`` table.
        rounds_table: its ``rounds`` table (round start and end times: the boundary markers).
        rounds: how many rounds to draw.
        allocator: the run's allocator label, for the title.
    """
    t = device_rounds.loc[device_rounds["round"] < rounds, GANTT_COLUMNS].reset_index(drop=True)
    if rounds_table is not None:
        bounds = rounds_table[["round", "start_s", "end_s"]].rename(
            columns={"start_s": "round_start_s", "end_s": "round_end_s"})
        t = t.merge(bounds, on="round", how="left")

    def draw(ax: Any, tab: pd.DataFrame) -> None:
        devices = sorted(tab["device"].unique(), key=lambda d: (len(str(d)), str(d)))
        ypos = {d: i for i, d in enumerate(devices)}
        y = tab["device"].map(ypos)
        for phase, color in (("compute", "tab:blue"), ("upload", "tab:orange")):
            start = tab[f"{phase}_start_s"]
            ax.barh(y, tab[f"{phase}_end_s"] - start, left=start, color=color, height=0.6,
                    label=phase)
        for yi, (_, row) in zip(y, tab.iterrows(), strict=True):
            mid = (row["compute_start_s"] + row["compute_end_s"]) / 2
            ax.text(mid, yi, f"b{int(row['block'])}", ha="center", va="center", fontsize=6,
                    color="white")
        if "round_start_s" in tab:
            edges = sorted(set(tab["round_start_s"]) | set(tab["round_end_s"]))
            for e in edges:
                ax.axvline(e, color="black", lw=0.8, ls="--")
            for r, grp in tab.groupby("round"):
                ax.text((grp["round_start_s"].iloc[0] + grp["round_end_s"].iloc[0]) / 2,
                        len(devices) - 0.3, f"round {int(r)}", ha="center", va="bottom",
                        fontsize=7)
            ax.set_ylim(-0.7, len(devices) + 0.6)
        ax.set_yticks(range(len(devices)), devices, fontsize=6)
        ax.set_xlabel("simulated time (s); dashed lines: round boundaries")
        ax.set_ylabel("device")
        ax.set_xlim(left=0)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  title="bN on a bar:\nit trains block N", title_fontsize=6)
        ax.grid(alpha=0.3, axis="x")

    who = f"{allocator}, " if allocator else ""
    title = (f"Per-device timeline of the first {rounds} rounds "
             f"({who}default scenario, {TRACE_REPLAY})")
    return FigureData(t, draw, title, (8.0, 5.0))


@figure("h-gantt", "per-device Gantt timeline of a few rounds", "fig_h_timeline", caption=(
    "Compute (blue) and upload (orange) of every device that trains a block in the first three "
    f"rounds of one jbba run (seed 0) in the {TRACE_REPLAY_SETTING}; each bar is labelled "
    "with the block it trains and dashed lines mark the round boundaries. A round ends when "
    "the last gradient arrives plus 10 ms of aggregation; devices not chosen are not drawn."))
def timeline_figure(results: Path) -> FigureData:
    """Figure (h): the Gantt timeline of the first stored run of ``fig_h_timeline``."""
    ok = ok_runs(results, "fig_h_timeline")
    folder = run_folder(results, "fig_h_timeline", ok["run_key"].iloc[0])
    return gantt_figure(
        pd.read_parquet(folder / "device_rounds.parquet"),
        pd.read_parquet(folder / "rounds.parquet"),
        allocator=str(ok["allocator"].iloc[0]),
    )


TRACE_NAME = "Norway HSDPA 3G, six bus/car commute traces"
"""The real trace figure (i) replays (``desim/data/traces/norway-hsdpa-6dev.csv``)."""


def cdf_figure(rounds_table: pd.DataFrame, allocator: str = "jbba") -> FigureData:
    """Empirical CDFs of planned and realised round latency (all rounds of ``rounds_table``)."""
    rows = []
    for col, label in (("planned_latency_s", "planned (round-start snapshot)"),
                       ("latency_s", "realised")):
        x = np.sort(rounds_table[col].to_numpy(dtype=float))
        rows.append(
            pd.DataFrame(
                {"series": label, "latency_s": x, "cdf": np.arange(1, x.size + 1) / x.size}
            )
        )
    table = pd.concat(rows, ignore_index=True)

    def draw(ax: Any, t: pd.DataFrame) -> None:
        for (label, grp), ls in zip(t.groupby("series", sort=False), ("--", "-"), strict=True):
            ax.step(grp["latency_s"], grp["cdf"], where="post", ls=ls, label=str(label))
        ax.set_xlabel("round latency (s)")
        ax.set_ylabel(f"CDF over {len(rounds_table)} rounds")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")

    title = f"Round latency under real-trace replay ({TRACE_NAME}), {allocator}"
    return FigureData(table, draw, title, size=(7.6, 4.2))


@figure(
    "i-trace-cdf",
    "CDF of round latency under real-trace replay, planned against realised",
    "fig_i_trace_replay",
    caption=(
        "Empirical CDF of the planned and the realised round latency of jbba while every "
        f"device replays a real uplink trace ({TRACE_NAME}; Riiser et al., MMSys 2013), each "
        "from its own seed-drawn offset: 100 rounds of one run (seed 0). jbba plans "
        "on the throughput at the round start and the world keeps changing during the round."
    ),
)
def trace_cdf_figure(results: Path) -> FigureData:
    """Figure (i): latency CDFs of every stored run of ``fig_i_trace_replay``, pooled."""
    ok = ok_runs(results, "fig_i_trace_replay")
    rounds = pd.concat(
        [pd.read_parquet(run_folder(results, "fig_i_trace_replay", k) / "rounds.parquet")
         for k in ok["run_key"]],
        ignore_index=True,
    )
    rounds = rounds[rounds["status"] == "ok"] if "status" in rounds else rounds
    labels = ", ".join(dict.fromkeys(ok["allocator"].astype(str)))
    return cdf_figure(rounds, labels)
