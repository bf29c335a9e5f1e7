"""Figures (f)–(i): what one stored run recorded, or data shipped with desim.

(f) reads JBBA's iteration trace from a stored run's ``run.json``, (g) a shipped measured
profile, (h) a run's ``device_rounds.parquet`` and (i) a run's ``rounds.parquet``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError
from desim.experiments.paper_figures.base import (
    FigureData,
    figure,
    first_run,
    ok_runs,
    run_folder,
    run_metadata,
)

JBBA_SWEEP = "fig_f_jbba_convergence"
"""The sweep of figure (f): round 0 of the default scenario under the two allocators below."""
DUAL_ASCENT = "jbba-dual-ascent"
"""Allocator label of JBBA's dual ascent alone (no refinement) in :data:`JBBA_SWEEP`."""
EXACT = "jbba-exact"
"""Allocator label of the exact optimum in :data:`JBBA_SWEEP`."""


def convergence_figure(trace: pd.DataFrame) -> FigureData:
    """JBBA dual value and best primal latency against iteration."""

    def draw(ax: Any, t: pd.DataFrame) -> None:
        ax.plot(t["iteration"], t["dual_value"], label="dual value (lower bound)")
        ax.plot(t["iteration"], t["best_primal_latency_s"], label="best primal latency")
        if "optimum_s" in t:
            ax.axhline(float(t["optimum_s"].iloc[0]), color="black", ls=":", label="jbba-exact")
        ax.set_xlabel("iteration")
        ax.set_ylabel("latency (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return FigureData(trace, draw, "JBBA dual ascent convergence")


def _run_of(ok: pd.DataFrame, label: str, results: Path, sweep: str) -> Path:
    """The folder of the first successful run of allocator ``label`` in a stored sweep."""
    rows = ok[ok["allocator"] == label]
    if rows.empty:
        raise InputError(
            f"{results / sweep}: no successful run of allocator {label!r} "
            f"(experiments/{sweep}.toml names it)"
        )
    return run_folder(results, sweep, rows["run_key"].iloc[0])


@figure("f-jbba-convergence", "JBBA dual value and primal latency against iteration", JBBA_SWEEP)
def jbba_convergence_figure(results: Path) -> FigureData:
    """JBBA's dual ascent (no refinement) on round 0 of the default scenario.

    The iteration trace is the one the run recorded in ``run.json`` (``allocator_diagnostics``
    of round 0); the optimum is the ``jbba-exact`` run's planned latency of the same round.
    """
    ok = ok_runs(results, JBBA_SWEEP)
    ascent = _run_of(ok, DUAL_ASCENT, results, JBBA_SWEEP)
    diagnostics = run_metadata(ascent).get("allocator_diagnostics", [])
    first = [d for d in diagnostics if d.get("round") == 0 and "trace" in d]
    if not first:
        raise InputError(f"{ascent / 'run.json'}: no JBBA iteration trace of round 0")
    trace = pd.DataFrame(
        first[0]["trace"], columns=["iteration", "dual_value", "best_primal_latency_s"]
    )
    rounds = pd.read_parquet(_run_of(ok, EXACT, results, JBBA_SWEEP) / "rounds.parquet")
    trace["optimum_s"] = float(rounds.loc[rounds["round"] == 0, "planned_latency_s"].iloc[0])
    return convergence_figure(trace)


def depth_figure(profile: pd.DataFrame) -> FigureData:
    """Training-step latency and peak memory against block depth (twin axes)."""
    t = profile.sort_values("block").reset_index(drop=True)

    def draw(ax: Any, tab: pd.DataFrame) -> None:
        ax.plot(tab["block"], tab["compute_s"], "o-", color="tab:blue", ms=3, label="latency")
        ax.set_xlabel("block depth n (1 = next to the output)")
        ax.set_ylabel("training-step latency (s)", color="tab:blue")
        ax2 = ax.twinx()
        ax2.plot(
            tab["block"],
            tab["peak_memory_bytes"] / 1e9,
            "s--",
            color="tab:red",
            ms=3,
            label="memory",
        )
        ax2.set_ylabel("peak memory (GB)", color="tab:red")
        ax.grid(alpha=0.3)

    return FigureData(t, draw, "Measured cost of training block n")


@figure("g-depth-profile", "latency and memory against block depth from the measured profile")
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
    title = f"Measured cost of training block n ({model}, LoRA, batch {b}, seq {s}, {hardware})"
    return FigureData(data.table, data.draw, title)


def gantt_figure(device_rounds: pd.DataFrame, rounds: int = 3) -> FigureData:
    """Per-device timeline of the first ``rounds`` rounds: compute and upload bars."""
    t = device_rounds[device_rounds["round"] < rounds].copy()
    t = t[
        [
            "round",
            "device",
            "block",
            "compute_start_s",
            "compute_end_s",
            "upload_start_s",
            "upload_end_s",
        ]
    ].reset_index(drop=True)

    def draw(ax: Any, tab: pd.DataFrame) -> None:
        devices = sorted(tab["device"].unique())
        ypos = {d: i for i, d in enumerate(devices)}
        y = tab["device"].map(ypos)
        for phase, color in (("compute", "tab:blue"), ("upload", "tab:orange")):
            start = tab[f"{phase}_start_s"]
            ax.barh(
                y, tab[f"{phase}_end_s"] - start, left=start, color=color, height=0.6, label=phase
            )
        ax.set_yticks(range(len(devices)), devices, fontsize=6)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("device")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(alpha=0.3, axis="x")

    return FigureData(t, draw, f"Per-device timeline of the first {rounds} rounds", (7.0, 4.8))


@figure("h-gantt", "per-device Gantt timeline of a few rounds", "fig_h_timeline")
def timeline_figure(results: Path) -> FigureData:
    """Figure (h): the Gantt timeline of the first stored run of ``fig_h_timeline``."""
    return gantt_figure(
        pd.read_parquet(first_run(results, "fig_h_timeline") / "device_rounds.parquet")
    )


def cdf_figure(rounds_table: pd.DataFrame) -> FigureData:
    """Empirical CDFs of planned and realised round latency."""
    rows = []
    for col, label in (("planned_latency_s", "planned"), ("latency_s", "realised")):
        x = np.sort(rounds_table[col].to_numpy(dtype=float))
        rows.append(
            pd.DataFrame(
                {"series": label, "latency_s": x, "cdf": np.arange(1, x.size + 1) / x.size}
            )
        )
    table = pd.concat(rows, ignore_index=True)

    def draw(ax: Any, t: pd.DataFrame) -> None:
        for label, grp in t.groupby("series", sort=False):
            ax.step(grp["latency_s"], grp["cdf"], where="post", label=str(label))
        ax.set_xlabel("round latency (s)")
        ax.set_ylabel("CDF")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    return FigureData(table, draw, "Round latency under real-trace replay: planned vs realised")


@figure(
    "i-trace-cdf",
    "CDF of round latency under real-trace replay, planned against realised",
    "fig_i_trace_replay",
)
def trace_cdf_figure(results: Path) -> FigureData:
    """Figure (i): latency CDFs of the first stored run of ``fig_i_trace_replay``."""
    return cdf_figure(pd.read_parquet(first_run(results, "fig_i_trace_replay") / "rounds.parquet"))
