"""Figures that compare against a reference: JBBA, DEFT, or DLoRA without Kill-and-Revive.

(j) is JBBA's latency reduction over each baseline, ``schemes`` every scheme relative to DEFT,
``dlora-kr`` DLoRA with Kill-and-Revive against without it (and against fl-lora). Each reads
stored sweeps only: ``summary.parquet`` and the runs' ``rounds.parquet`` and
``device_rounds.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError
from desim.experiments.paper_figures.base import (
    LATENCY,
    FigureData,
    figure,
    ok_runs,
    run_folder,
    stored_summary,
)

_SUMMARY_VALUE_COLUMNS = {
    "run_key",
    "status",
    "rounds",
    "error",
    "total_time_s",
    "min_memory_headroom_bytes",
    *(
        f"{c}_{s}"
        for c in ("latency_s", "planned_latency_s")
        for s in ("mean", "p50", "p95", "max")
    ),
    "solve_wall_s_mean",
    "skipped_rounds",
    "dropouts",
}


def reduction_figure(summary: pd.DataFrame, reference: str = "jbba") -> FigureData:
    """Bar chart: latency reduction of ``reference`` over every other allocator (paired seeds)."""
    ok = summary[summary["status"] == "ok"]
    keys = [c for c in ok.columns if c not in _SUMMARY_VALUE_COLUMNS and c != "allocator"]
    pivot = ok.pivot_table(index=keys, columns="allocator", values=LATENCY)
    if reference not in pivot:
        raise InputError(f"reduction figure: allocator {reference!r} is not in the results")
    rows = []
    for other in pivot.columns:
        if other == reference:
            continue
        red = 100.0 * (1.0 - pivot[reference] / pivot[other])
        rows.append(
            {
                "baseline": other,
                "reduction_pct": float(red.mean()),
                "reduction_pct_std": float(red.std(ddof=1)) if len(red) > 1 else 0.0,
                "pairs": int(red.count()),
            }
        )
    table = pd.DataFrame(rows)

    def draw(ax: Any, t: pd.DataFrame) -> None:
        ax.bar(t["baseline"], t["reduction_pct"], yerr=t["reduction_pct_std"], capsize=3)
        ax.set_ylabel(f"latency reduction of {reference} (%)")
        ax.set_xlabel("baseline")
        ax.tick_params(axis="x", rotation=30, labelsize=7)
        ax.axhline(0, color="black", lw=0.8)
        ax.grid(alpha=0.3, axis="y")

    return FigureData(table, draw, f"Round-latency reduction of {reference} over each baseline")


@figure("j-reduction", "latency reduction of jbba over each baseline", "fig_a_devices")
def jbba_reduction_figure(results: Path) -> FigureData:
    """Figure (j): :func:`reduction_figure` of figure (a)'s sweep."""
    return reduction_figure(stored_summary(results, "fig_a_devices"))


# an epoch of SST-2's training split (GLUE), the task behind the default batch and length
EPOCH_SAMPLES = 67_349
SCHEME_METRICS = (
    ("latency_s", "round latency (s)"),
    ("epoch_s", "time per epoch (s)"),
    ("peak_device_memory_bytes", "peak device memory (B)"),
    ("device_energy_j", "device energy per round (J)"),
    ("bits_sent", "bits sent per round (up + down)"),
)


@dataclass(frozen=True)
class SchemeWorkload:
    """One panel of the schemes figure: a stored sweep and the data set an epoch covers.

    Attributes:
        sweep: sweep name (``experiments/<sweep>.toml``; results under ``<results>/<sweep>``).
        label: panel title.
        epoch_samples: training samples in one epoch of the data set.
    """

    sweep: str
    label: str
    epoch_samples: int


SCHEME_WORKLOADS = (
    # SST-2 training split: 67,349 sentences (GLUE)
    SchemeWorkload("fig_schemes", "RoBERTa-base, default edge population", EPOCH_SAMPLES),
    # SAMSum training split: 14,732 dialogues (the summarisation task of the FL-on-the-edge study)
    SchemeWorkload("fig_schemes_t5", "FLAN-T5-small, Jetson AGX Orin population", 14_732),
)


def scheme_table(
    results: Path, sweep: str = "fig_schemes", epoch_samples: int = EPOCH_SAMPLES
) -> pd.DataFrame:
    """Per scheme, means over seeds of each run's per-round metrics (README's table).

    ``epoch_s`` is the time to process ``epoch_samples`` samples at the run's mean samples
    per round; ``device_energy_j`` sums every participating device's energy in a round.
    """
    rows = []
    for _, run in ok_runs(results, sweep).iterrows():
        stored = run_folder(results, sweep, run["run_key"])
        r = pd.read_parquet(stored / "rounds.parquet")
        r = r[r["status"] == "ok"]
        d = pd.read_parquet(stored / "device_rounds.parquet")
        rows.append(
            {
                "scheme": run["scheme.name"],
                "seed": run["seed"],
                "latency_s": r["latency_s"].mean(),
                "epoch_s": epoch_samples / r["samples"].mean() * r["latency_s"].mean(),
                "peak_device_memory_bytes": d["memory_bytes"].max(),
                "device_energy_j": r["energy_j"].mean(),
                "bits_sent": (r["upload_bits"] + r["download_bits"]).mean(),
                "tokens_per_s_per_w": r["tokens_per_s_per_w"].mean(),
                "mfu": r["mfu"].mean(),
                "granularity": r["granularity"].mean(),
                "participants": r["active_devices"].mean(),
            }
        )
    per_run = pd.DataFrame(rows)
    order = list(dict.fromkeys(per_run["scheme"]))
    table = per_run.drop(columns="seed").groupby("scheme", sort=False).mean().reindex(order)
    table.insert(0, "seeds", per_run.groupby("scheme", sort=False).size().reindex(order))
    return table.reset_index()


def _scheme_bars(ax: Any, t: pd.DataFrame, title: str) -> None:
    ref = t.set_index("scheme").loc["deft"] if "deft" in set(t["scheme"]) else t.iloc[0]
    width = 0.8 / len(t)
    zeros = []
    for i, (_, row) in enumerate(t.iterrows()):
        vals = np.asarray([row[m] / ref[m] if ref[m] else np.nan for m, _ in SCHEME_METRICS])
        x = np.arange(len(SCHEME_METRICS)) + (i - (len(t) - 1) / 2) * width
        ax.bar(x, np.where(vals > 0, vals, np.nan), width, label=row["scheme"])
        zeros += [xi for xi, v in zip(x, vals, strict=True) if v == 0]
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 30)  # room for the legend above the bars
    for xi in zeros:  # a zero has no bar on a log axis: mark it
        ax.text(xi, low * 1.3, "0", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(
        range(len(SCHEME_METRICS)), [lab for _, lab in SCHEME_METRICS], fontsize=7, rotation=15
    )
    ax.set_ylabel("relative to deft (log)")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=len(t), loc="upper center")


@figure(
    "schemes",
    "deft, fl-lora, dlora and offload: latency, epoch time, memory, energy, bits "
    "(RoBERTa-base on the edge population, FLAN-T5-small on Jetson boards)",
    *(w.sweep for w in SCHEME_WORKLOADS),
)
def schemes_figure(results: Path) -> FigureData:
    """One panel per workload: each metric of every scheme relative to ``deft`` (log scale)."""
    tables = []
    for w in SCHEME_WORKLOADS:
        t = scheme_table(results, w.sweep, w.epoch_samples)
        t.insert(0, "workload", w.label)
        tables.append(t)
    table = pd.concat(tables, ignore_index=True)

    def draw(axes: Any, t: pd.DataFrame) -> None:
        for ax, w in zip(axes, SCHEME_WORKLOADS, strict=True):
            part = t[t["workload"] == w.label].drop(columns="workload")
            _scheme_bars(ax, part.reset_index(drop=True), w.label)

    return FigureData(table, draw, "Fine-tuning schemes on the same traces", (13.0, 4.6), panels=2)


DLORA_SWEEP = "fig_dlora_kr"
"""DLoRA on the default scenario, Kill-and-Revive on (measured and synthetic scores) and off."""
FL_LORA_SWEEP = "fig_dlora_kr_fl_lora"
"""fl-lora on the same scenario, which the measured-score DLoRA runs are compared with."""
PAPER_REDUCTION_PCT = {"device computation": 82.0, "communication": 87.5}
"""What the DLoRA paper reports Kill-and-Revive saves on the device."""


def _per_sample(results: Path, sweep: str, runs: pd.DataFrame) -> tuple[float, float]:
    """Device FLOPs and bits on the link per training sample, over every round of ``runs``."""
    r = pd.concat(
        [pd.read_parquet(run_folder(results, sweep, k) / "rounds.parquet") for k in runs.run_key]
    )
    samples = float(r["samples"].sum())  # per sample: schemes differ in participants
    bits = float((r["upload_bits"] + r["download_bits"]).sum())
    return float(r["flops"].sum()) / samples, bits / samples


def _kr_variants(results: Path) -> dict[str, pd.DataFrame]:
    """The stored DLoRA runs by variant: ``measured``, ``synthetic`` (KR on) and ``off``."""
    ok = ok_runs(results, DLORA_SWEEP)
    axes = ["scheme.kill_revive", "scheme.kr_score"]
    if not set(axes) <= set(ok.columns):
        raise InputError(f"{results / DLORA_SWEEP}: the sweep does not vary {' and '.join(axes)}")
    on = ok["scheme.kill_revive"].astype(bool)
    variants = {
        "measured": ok[on & (ok["scheme.kr_score"] == "trace")],
        "synthetic": ok[on & (ok["scheme.kr_score"] == "synthetic")],
        "off": ok[~on],
    }
    for name, runs in variants.items():
        if runs.empty:
            raise InputError(f"{results / DLORA_SWEEP}: no successful run with KR {name}")
    return variants


def dlora_reduction_table(results: Path) -> pd.DataFrame:
    """DLoRA's device computation and communication with Kill-and-Revive against without it.

    Reads the stored ``dlora`` runs of :data:`DLORA_SWEEP` (same scenario, seeds and streams)
    with Kill-and-Revive off, on the profiler's measured gradient-norm scores of roberta-base,
    and on synthetic log-normal scores; reports the reduction of device FLOPs and of bits on
    the link per training sample next to the paper's 82% and 87.5%; and measured-score DLoRA
    against local ``fl-lora`` training (:data:`FL_LORA_SWEEP`; a negative reduction is an
    increase).
    """
    totals = {k: _per_sample(results, DLORA_SWEEP, v) for k, v in _kr_variants(results).items()}
    fl = _per_sample(results, FL_LORA_SWEEP, ok_runs(results, FL_LORA_SWEEP))
    measured, off = totals["measured"], totals["off"]
    quantities = ("device computation", "communication")
    rows = [
        (
            f"DLoRA, KR on {label} vs KR off",
            q,
            100 * (1 - totals[k][i] / off[i]),
            PAPER_REDUCTION_PCT[q],
        )
        for k, label in (("measured", "measured scores"), ("synthetic", "synthetic scores"))
        for i, q in enumerate(quantities)
    ]
    rows += [
        ("DLoRA, KR on measured scores vs fl-lora", q, 100 * (1 - measured[i] / fl[i]), np.nan)
        for i, q in enumerate(quantities)
    ]
    return pd.DataFrame(
        rows, columns=["comparison", "quantity", "desim_reduction_pct", "paper_reduction_pct"]
    )


@figure(
    "dlora-kr",
    "DLoRA device computation and communication saved by Kill-and-Revive",
    DLORA_SWEEP,
    FL_LORA_SWEEP,
)
def dlora_reduction_figure(results: Path) -> FigureData:
    """Bars of :func:`dlora_reduction_table` with the paper's numbers as markers."""
    table = dlora_reduction_table(results)

    def draw(ax: Any, t: pd.DataFrame) -> None:
        labels = [f"{c}\n{q}" for c, q in zip(t["comparison"], t["quantity"], strict=True)]
        ax.bar(labels, t["desim_reduction_pct"], label="desim")
        ax.scatter(labels, t["paper_reduction_pct"], color="black", zorder=3, label="DLoRA paper")
        ax.set_ylabel("reduction on the device (%)")
        ax.tick_params(axis="x", labelsize=6)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)

    return FigureData(table, draw, "DLoRA Kill-and-Revive: desim against the paper", (7.6, 4.2))
