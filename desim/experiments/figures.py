"""Paper figures drawn from stored results (matplotlib, imported lazily).

Every figure is written as PNG and PDF together with the CSV of exactly the data it plots.
Sweep-based figures read a sweep's ``summary.parquet``; the others read a stored run, a profile
or a JBBA iteration trace. ``experiments/README.md`` maps each figure to its spec and command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError

LATENCY = "latency_s_mean"


@dataclass(frozen=True)
class FigureData:
    """What a figure plots: a tidy table and how to draw it."""

    table: pd.DataFrame
    draw: Callable[[Any, pd.DataFrame], None]
    title: str
    size: tuple[float, float] = (6.4, 4.2)
    panels: int = 1  # >1: ``draw`` gets a row of that many axes instead of one


def require_matplotlib() -> None:
    """Stop at once, before any sweep runs, when the ``plot`` extra is missing.

    Raises:
        InputError: with the install hint.
    """
    _matplotlib()


def _matplotlib() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError('figures need matplotlib: pip install ".[plot]"') from None
    return plt


def save_figure(data: FigureData, out_dir: Path, name: str) -> list[Path]:
    """Draw ``data``; write ``<name>.png``, ``<name>.pdf`` and ``<name>.csv`` into ``out_dir``."""
    from desim.io.files import write_csv

    plt = _matplotlib()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, data.panels, figsize=data.size, constrained_layout=True)
    data.draw(ax, data.table)
    if data.panels == 1:
        ax.set_title(data.title, fontsize=10)
    else:
        fig.suptitle(data.title, fontsize=10)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=150)
        paths.append(path)
    plt.close(fig)
    paths.append(write_csv(data.table, out_dir / f"{name}.csv"))
    return paths


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


def sweeps_of(spec: FigureSpec) -> tuple[str, ...]:
    """The sweep names a figure reads (none, one or several)."""
    if spec.sweep is None:
        return ()
    return (spec.sweep,) if isinstance(spec.sweep, str) else spec.sweep


@dataclass(frozen=True)
class FigureSpec:
    """A named figure: the sweeps it needs (specs under ``experiments/``) and how to build it.

    Every input a sweep needs ships in the package (figure (i)'s real trace included), so a
    fresh clone draws every figure.
    """

    name: str
    description: str
    sweep: str | tuple[str, ...] | None
    build: Callable[[Path], FigureData]


def _summary(results: Path, sweep: str) -> pd.DataFrame:
    path = results / sweep / "summary.parquet"
    if not path.is_file():
        raise InputError(
            f"{path}: no stored sweep; run `desim sweep experiments/{sweep}.toml` "
            "or `desim figures --all`"
        )
    return pd.read_parquet(path)


def _first_run(results: Path, sweep: str) -> Path:
    summary = _summary(results, sweep)
    ok = summary[summary["status"] == "ok"]
    if ok.empty:
        raise InputError(f"{results / sweep}: no successful run to draw from")
    return results / sweep / "runs" / str(ok["run_key"].iloc[0])


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


FIGURES: dict[str, FigureSpec] = {}


def _register(spec: FigureSpec) -> None:
    FIGURES[spec.name] = spec


_register(
    FigureSpec(
        "a-devices",
        "round latency against the number of devices K",
        "fig_a_devices",
        lambda r: line_figure(
            _summary(r, "fig_a_devices"),
            "devices.population.count",
            "number of devices K",
            "Round latency against the number of devices",
        ),
    )
)
_register(
    FigureSpec(
        "b-bandwidth",
        "round latency against total bandwidth B",
        "fig_b_bandwidth",
        lambda r: line_figure(
            _in_mhz(_summary(r, "fig_b_bandwidth")),
            "bandwidth_mhz",
            "total uplink bandwidth B (MHz)",
            "Round latency against bandwidth",
        ),
    )
)
_register(
    FigureSpec(
        "c-memory",
        "round latency against device memory budget",
        "fig_c_memory",
        lambda r: line_figure(
            _mean_budget(_summary(r, "fig_c_memory")),
            "memory_budget_gb",
            "mean device memory budget (GB)",
            "Round latency against memory budget",
        ),
    )
)
_register(
    FigureSpec(
        "d-heterogeneity",
        "round latency against compute heterogeneity",
        "fig_d_heterogeneity",
        lambda r: line_figure(
            _spread(_summary(r, "fig_d_heterogeneity")),
            "speed_spread",
            "speed-factor spread high/low (log-uniform)",
            "Round latency against compute heterogeneity",
        ),
    )
)
_register(
    FigureSpec(
        "e-solve-time",
        "allocator solve time against K (log-log)",
        "fig_e_solve_time",
        lambda r: line_figure(
            _summary(r, "fig_e_solve_time"),
            "devices.population.count",
            "number of devices K",
            "Allocator solve time against K",
            value="solve_wall_s_mean",
            ylabel="solve time per round (s)",
            log=True,
        ),
    )
)


def jbba_trace_figure(_results: Path, iterations: int = 200) -> FigureData:
    """Run JBBA's dual ascent (no refinement) on round 0 of the default scenario."""
    from desim.allocators import make_allocator
    from desim.engine.assembly import build_simulation
    from desim.engine.rng import rng_streams
    from desim.io.files import load_scenario

    sim = build_simulation(load_scenario(None, ['allocator.name="jbba"']))
    ctx = sim.context(0, 0.0)
    rng = rng_streams(0)["allocator"]
    jbba = make_allocator("jbba", {"refine": False, "iterations": iterations, "tolerance": 1e-6})
    trace = pd.DataFrame(
        list(jbba.allocate(ctx, rng).diagnostics["trace"]),
        columns=["iteration", "dual_value", "best_primal_latency_s"],
    )
    trace["optimum_s"] = ctx.round_latency_s(make_allocator("jbba-exact").allocate(ctx, rng))
    return convergence_figure(trace)


_register(
    FigureSpec(
        "f-jbba-convergence",
        "JBBA dual value and primal latency against iteration",
        None,
        jbba_trace_figure,
    )
)


def profile_depth_figure(
    _results: Path, hardware: str = "cpu-reference", model: str = "roberta-base"
) -> FigureData:
    """Latency and memory by depth from the shipped profile at the default batch and length."""
    from desim.io.files import load_profile

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


_register(
    FigureSpec(
        "g-depth-profile",
        "latency and memory against block depth from the measured profile",
        None,
        profile_depth_figure,
    )
)
_register(
    FigureSpec(
        "h-gantt",
        "per-device Gantt timeline of a few rounds",
        "fig_h_timeline",
        lambda r: gantt_figure(
            pd.read_parquet(_first_run(r, "fig_h_timeline") / "device_rounds.parquet")
        ),
    )
)
_register(
    FigureSpec(
        "i-trace-cdf",
        "CDF of round latency under real-trace replay, planned against realised",
        "fig_i_trace_replay",
        lambda r: cdf_figure(
            pd.read_parquet(_first_run(r, "fig_i_trace_replay") / "rounds.parquet")
        ),
    )
)
_register(
    FigureSpec(
        "j-reduction",
        "latency reduction of jbba over each baseline",
        "fig_a_devices",
        lambda r: reduction_figure(_summary(r, "fig_a_devices")),
    )
)


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
    summary = _summary(results, sweep)
    ok = summary[summary["status"] == "ok"]
    if ok.empty:
        raise InputError(f"{results / sweep}: no successful run to draw from")
    rows = []
    for _, run in ok.iterrows():
        stored = results / sweep / "runs" / str(run["run_key"])
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

    return FigureData(
        table, draw, "Fine-tuning schemes on the same traces", (13.0, 4.6), panels=2
    )


KR_MEASURED = "shipped:kr-scores_roberta-base.csv"


def dlora_reduction_table(rounds: int = 20, seed: int = 0) -> pd.DataFrame:
    """DLoRA's device computation and communication with Kill-and-Revive against without it.

    Runs ``dlora`` on the default scenario (same seed and streams) with Kill-and-Revive off,
    with KR on the profiler's measured gradient-norm scores of roberta-base
    (:data:`KR_MEASURED`), and with KR on synthetic log-normal scores; reports the reduction
    of device FLOPs and of bits on the link per training sample next to the paper's 82% and
    87.5%; and measured-score DLoRA against local ``fl-lora`` training (a negative reduction
    is an increase).
    """
    from desim.engine.assembly import build_simulation
    from desim.io.files import load_scenario

    def totals(*sets: str) -> tuple[float, float]:
        sc = load_scenario(None, [f"run.rounds={rounds}", f"run.seed={seed}", *sets])
        r = build_simulation(sc).run().rounds_frame()
        samples = float(r["samples"].sum())  # per sample: schemes differ in participants
        bits = float((r["upload_bits"] + r["download_bits"]).sum())
        return float(r["flops"].sum()) / samples, bits / samples

    dlora = 'scheme.name="dlora"'
    measured = totals(dlora, 'scheme.kr_score="trace"', f'scheme.kr_scores="{KR_MEASURED}"')
    synthetic = totals(dlora)
    off = totals(dlora, "scheme.kill_revive=false")
    fl = totals('scheme.name="fl-lora"')
    rows = []
    for label, (f, b) in (("measured scores", measured), ("synthetic scores", synthetic)):
        rows += [
            (f"DLoRA, KR on {label} vs KR off", "device computation", 100 * (1 - f / off[0]),
             82.0),
            (f"DLoRA, KR on {label} vs KR off", "communication", 100 * (1 - b / off[1]), 87.5),
        ]
    rows += [
        ("DLoRA, KR on measured scores vs fl-lora", "device computation",
         100 * (1 - measured[0] / fl[0]), np.nan),
        ("DLoRA, KR on measured scores vs fl-lora", "communication",
         100 * (1 - measured[1] / fl[1]), np.nan),
    ]
    return pd.DataFrame(
        rows, columns=["comparison", "quantity", "desim_reduction_pct", "paper_reduction_pct"]
    )


def dlora_reduction_figure(_results: Path) -> FigureData:
    """Bars of :func:`dlora_reduction_table` with the paper's numbers as markers."""
    table = dlora_reduction_table()

    def draw(ax: Any, t: pd.DataFrame) -> None:
        labels = [f"{c}\n{q}" for c, q in zip(t["comparison"], t["quantity"])]
        ax.bar(labels, t["desim_reduction_pct"], label="desim")
        ax.scatter(labels, t["paper_reduction_pct"], color="black", zorder=3, label="DLoRA paper")
        ax.set_ylabel("reduction on the device (%)")
        ax.tick_params(axis="x", labelsize=6)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)

    return FigureData(table, draw, "DLoRA Kill-and-Revive: desim against the paper", (7.6, 4.2))


_register(
    FigureSpec(
        "schemes",
        "deft, fl-lora, dlora and offload: latency, epoch time, memory, energy, bits "
        "(RoBERTa-base on the edge population, FLAN-T5-small on Jetson boards)",
        tuple(w.sweep for w in SCHEME_WORKLOADS),
        schemes_figure,
    )
)
_register(
    FigureSpec(
        "dlora-kr",
        "DLoRA device computation and communication saved by Kill-and-Revive",
        None,
        dlora_reduction_figure,
    )
)


def figure_names() -> list[str]:
    """Registered figure names, in order."""
    return list(FIGURES)


def draw_figures(names: list[str], results: Path, out: Path) -> dict[str, list[Path]]:
    """Build and save each named figure; unknown names get an error listing the known ones."""
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise InputError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    return {n: save_figure(FIGURES[n].build(results), out, n) for n in names}
