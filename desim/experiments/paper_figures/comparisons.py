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
    PAPER_ALLOCATORS,
    PLANNED,
    TRACE_REPLAY,
    TRACE_REPLAY_SETTING,
    FigureData,
    ci95_half_width,
    figure,
    ok_runs,
    paired_reductions,
    run_folder,
    stored_summary,
)


def reduction_figure(
    summary: pd.DataFrame, reference: str = "jbba",
    baselines: tuple[str, ...] | None = PAPER_ALLOCATORS,
) -> FigureData:
    """Horizontal bars: paired reduction of ``reference`` over each baseline, planned and realised.

    Only the paper's baselines (:data:`PAPER_ALLOCATORS`) by default; see
    :func:`paired_reductions` for the statistics.
    """
    parts = []
    for quantity, value in (("planned", PLANNED), ("realised", LATENCY)):
        part = paired_reductions(summary, reference, value, baselines)
        part.insert(1, "quantity", quantity)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)

    def draw(ax: Any, t: pd.DataFrame) -> None:
        names = list(dict.fromkeys(t["baseline"]))
        y = np.arange(len(names))
        for i, (quantity, colour) in enumerate((("planned", "tab:gray"),
                                                ("realised", "tab:blue"))):
            part = t[t["quantity"] == quantity].set_index("baseline").reindex(names)
            pos = y + (i - 0.5) * 0.38
            ax.barh(pos, part["reduction_pct"], 0.36, xerr=part["reduction_pct_ci95"],
                    capsize=2, color=colour, label=f"{quantity} latency")
            ends = part["reduction_pct"] + part["reduction_pct_ci95"].fillna(0.0)
            for p, v, end in zip(pos, part["reduction_pct"], ends, strict=True):
                ax.annotate(f"{0.0 if abs(v) < 0.05 else v:.1f}%", (max(end, 0.0), p),
                            xytext=(4, 0), textcoords="offset points", va="center",
                            fontsize=6)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"latency reduction of {reference} over the baseline (%)")
        ax.set_xlim(min(0.0, float((t["reduction_pct"] - t["reduction_pct_ci95"]).min()) * 1.1),
                    float((t["reduction_pct"] + t["reduction_pct_ci95"]).max()) * 1.15 + 1)
        ax.axvline(0, color="black", lw=0.8)
        ax.grid(alpha=0.3, axis="x")
        ax.legend(fontsize=7, loc="upper right")

    return FigureData(
        table, draw,
        f"Round-latency reduction of {reference} over each baseline ({TRACE_REPLAY}, paired "
        "seeds, 95% t-CI)", size=(7.6, 4.4),
    )


@figure("j-reduction", "latency reduction of jbba over each baseline (paired seeds)",
        "fig_a_devices", caption=(
            "Mean paired reduction 100 (1 - jbba / baseline) of the planned (grey) and realised "
            "(blue) mean round latency, over the 20 pairs (K in {12, 20, 30, 50} x 5 seeds) of "
            f"figure (a)'s sweep in the {TRACE_REPLAY_SETTING}; a pair shares its seed, so both "
            "runs meet the same population and traces (common random numbers). Error bars are "
            "95% Student-t confidence intervals over the pairs; minsum and single-device are "
            "not paper baselines and are not shown."))
def jbba_reduction_figure(results: Path) -> FigureData:
    """Figure (j): :func:`reduction_figure` of figure (a)'s sweep."""
    return reduction_figure(stored_summary(results, "fig_a_devices"))


# an epoch of SST-2's training split (GLUE), the task behind the default batch and length
EPOCH_SAMPLES = 67_349
SCHEME_METRICS = (
    ("latency_s", "round\nlatency"),
    ("epoch_s", "time per\nepoch"),
    ("peak_device_memory_bytes", "peak device\nmemory"),
    ("device_energy_j", "device energy\nper round"),
    ("bits_sent", "bits sent per\nround (up+down)"),
)
"""The metrics of the schemes figure and their tick labels (ratios to deft: no units)."""


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
    Each metric of :data:`SCHEME_METRICS` also has ``<metric>_ratio``, the geometric mean
    over seeds of the run's value divided by deft's run of the same seed (paired: the same
    population and traces), and ``<metric>_log_ratio_ci95``, the 95% Student-t half-width of
    the mean natural-log ratio (0 for one seed; NaN where a ratio is 0), so the interval is
    ``ratio * exp(±half-width)``.
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
    reference = "deft" if "deft" in order else order[0]
    ref = per_run[per_run["scheme"] == reference].set_index("seed")
    logs = {}
    for metric, _ in SCHEME_METRICS:
        base = per_run["seed"].map(ref[metric])
        with np.errstate(divide="ignore", invalid="ignore"):
            logs[metric] = np.log(np.where(base > 0, per_run[metric] / base, np.nan))
    groups = per_run.drop(columns="seed").groupby("scheme", sort=False)
    table = groups.mean().reindex(order)
    for metric, _ in SCHEME_METRICS:
        log_ratio = pd.Series(logs[metric], index=per_run.index).groupby(per_run["scheme"])
        pos = table.columns.get_loc(metric) + 1
        table.insert(pos, f"{metric}_ratio", np.exp(log_ratio.mean()).reindex(order))
        half = log_ratio.agg(lambda v: np.nan if np.isneginf(v).any() else ci95_half_width(v))
        table.insert(pos + 1, f"{metric}_log_ratio_ci95", half.reindex(order))
    table.insert(0, "seeds", groups.size().reindex(order))
    return table.reset_index()


def _scheme_bars(ax: Any, t: pd.DataFrame, title: str) -> None:
    """Every metric of every scheme as its paired ratio to deft (log), with its 95% t-CI."""
    width = 0.8 / len(t)
    zeros = []
    for i, (_, row) in enumerate(t.iterrows()):
        vals = np.asarray([row[f"{m}_ratio"] for m, _ in SCHEME_METRICS], dtype=float)
        half = np.asarray([row[f"{m}_log_ratio_ci95"] for m, _ in SCHEME_METRICS], dtype=float)
        x = np.arange(len(SCHEME_METRICS)) + (i - (len(t) - 1) / 2) * width
        bars = np.where(vals > 0, vals, np.nan)
        if row["seeds"] > 1:  # the interval of the mean log ratio: asymmetric, positive
            yerr = np.vstack([bars * (1 - np.exp(-half)), bars * (np.exp(half) - 1)])
            ax.bar(x, bars, width, label=row["scheme"], capsize=1.5, error_kw={"lw": 0.8},
                   yerr=yerr)
        else:
            ax.bar(x, bars, width, label=row["scheme"])
        zeros += [xi for xi, v in zip(x, vals, strict=True) if v == 0]
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 8)  # room for the legend above the bars
    for xi in zeros:  # a zero has no bar on a log axis: mark it
        ax.text(xi, low * 1.3, "0", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(SCHEME_METRICS)), [lab for _, lab in SCHEME_METRICS], fontsize=7)
    ax.set_ylabel("ratio to deft (log scale)")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.grid(alpha=0.3, axis="y")
    seeds = int(t["seeds"].min())
    ax.set_title(f"{title} ({seeds} seed{'s' if seeds > 1 else ''})", fontsize=9)
    ax.legend(fontsize=7, ncol=len(t), loc="upper center")


@figure(
    "schemes",
    "deft, fl-lora, dlora and offload: latency, epoch time, memory, energy, bits "
    "(RoBERTa-base on the edge population, FLAN-T5-small on Jetson boards)",
    *(w.sweep for w in SCHEME_WORKLOADS),
    caption=(
        "Round latency, time per epoch, peak device memory, device energy per round and bits "
        "sent per round of fl-lora, dlora (Kill-and-Revive on measured scores) and offload as "
        "ratios to deft (jbba's allocation), in the trace-replay setting: left RoBERTa-base "
        "on the default population (SST-2 epoch, 3 seeds, 10 rounds), right FLAN-T5-small on "
        "16 Jetson AGX Orin boards (SAMSum epoch, one run: the scenario fixes its population "
        "and replays its traces cyclically). A bar is the geometric mean over seeds of each "
        "run's ratio to deft's run of the same seed (paired); error bars are the 95% "
        "Student-t interval of the mean log ratio."
    ),
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

    return FigureData(table, draw, f"Fine-tuning schemes relative to deft ({TRACE_REPLAY})",
                      (13.0, 4.6), panels=2)


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


DLORA_CLIP_PCT = -60.0
"""Left end of the dlora-kr axis: a bar beyond it is clipped and its value written on it."""


@figure(
    "dlora-kr",
    "DLoRA device computation and communication saved by Kill-and-Revive",
    DLORA_SWEEP,
    FL_LORA_SWEEP,
    caption=(
        "Reduction of device FLOPs and of bits on the link per training sample from DLoRA's "
        "Kill-and-Revive (measured gradient-norm scores of roberta-base, or synthetic "
        "log-normal scores) against KR off, next to the DLoRA paper's 82% and 87.5% (black "
        "diamonds), and measured-score DLoRA against local fl-lora training; one seed, 20 "
        "rounds of the default scenario (trace replay). A negative reduction is an increase; "
        "a bar beyond the axis is clipped and its value written on it."
    ),
)
def dlora_reduction_figure(results: Path) -> FigureData:
    """Horizontal bars of :func:`dlora_reduction_table`, the paper's numbers as markers."""
    table = dlora_reduction_table(results)

    def draw(ax: Any, t: pd.DataFrame) -> None:
        labels = [f"{c.removeprefix('DLoRA, ')}:\n{q}"
                  for c, q in zip(t["comparison"], t["quantity"], strict=True)]
        y = np.arange(len(t))
        value = t["desim_reduction_pct"].to_numpy(dtype=float)
        shown = np.maximum(value, DLORA_CLIP_PCT)
        colours = ["tab:blue" if q == "device computation" else "tab:orange"
                   for q in t["quantity"]]
        ax.barh(y, shown, 0.6, color=colours)
        for yi, v, s in zip(y, value, shown, strict=True):
            if v < DLORA_CLIP_PCT:  # clipped: the value on the bar, a break at its end
                ax.text(s + 2, yi, f"{v:,.0f}%\n(clipped)", va="center", fontsize=7,
                        color="white", fontweight="bold")
                ax.plot([s + 1.5, s - 1.5], [yi - 0.34, yi + 0.34], color="white", lw=3,
                        clip_on=False)
            else:
                ax.text(max(s, 0.0) + 2, yi, f"{v:.1f}%", va="center", fontsize=7)
        paper = t["paper_reduction_pct"].to_numpy(dtype=float)
        ax.scatter(paper, y, marker="D", color="black", zorder=3, label="DLoRA paper")
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(DLORA_CLIP_PCT, 125)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlabel("reduction per training sample (%); < 0: an increase")
        ax.grid(alpha=0.3, axis="x")
        from matplotlib.patches import Patch

        handles = [Patch(color="tab:blue", label="device computation (FLOPs)"),
                   Patch(color="tab:orange", label="communication (bits)"),
                   *ax.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, fontsize=7, loc="upper left")

    return FigureData(table, draw, "DLoRA Kill-and-Revive: desim against the paper "
                      f"({TRACE_REPLAY}, seed 0)", (8.4, 4.4))
