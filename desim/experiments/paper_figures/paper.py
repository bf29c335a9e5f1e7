"""The paper's setting: block fading, where planned latency is realised (figures p-*).

The sweeps ``fig_p_devices`` and ``fig_p_bandwidth`` run ``experiments/scenarios/
paper-setting.toml``: round ``r`` plans and runs in one i.i.d. Rayleigh state, held for the
whole round (``run.block_fading_s``), and every allocator meets the same states, so a seed's
runs are paired. ``p-devices`` and ``p-bandwidth`` draw the latency against one axis with 95%
t-intervals over seeds; ``p-claims`` tests the paper's claims on the paired differences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.experiments.paper_figures.base import (
    LATENCY,
    FigureData,
    figure,
    mean_ci95,
    paired_runs,
    seed_stats,
    stored_summary,
)
from desim.experiments.paper_figures.lines import LINES_NOTE, errorbar_lines, log_y_axis, x_axis

SETTING = "paper setting (block fading: planned = realised)"
SWEEPS = ("fig_p_devices", "fig_p_bandwidth")

#: (allocator, against): the paper's claims, each a paired relative reduction that should be
#: positive (``= 0`` for CRUNCH against the exact P1 optimum at the same split)
CLAIMS = (
    ("crunch+equal", "bottleneck-exact"),
    ("jbba", "jbba-exact"),
    ("jbba", "crunch+equal"),
    *(("jbba", b) for b in ("greedy", "depth-unaware", "random", "offload")),
    *(("crunch+equal", b) for b in ("greedy", "depth-unaware", "random", "offload")),
)


def paired_claims(summaries: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Each claim's paired relative reduction ``(against − allocator) / against`` in percent.

    Runs pair on (sweep, grid point, seed): the same round states for both allocators. The
    mean and 95% t-interval are over those pairs; ``holds`` says the interval lies above zero
    (or, for the exact references, that the reduction is zero within 1e-9).
    """
    pairs: dict[tuple[str, str], list[float]] = {c: [] for c in CLAIMS}
    for summary in summaries.values():
        wide = paired_runs(summary)
        for a, b in CLAIMS:
            if a in wide and b in wide:
                both = wide[[a, b]].dropna()
                pairs[(a, b)] += (100.0 * (both[b] - both[a]) / both[b]).tolist()
    rows = []
    for (a, b), diffs in pairs.items():
        mean, half, n = mean_ci95(diffs)
        exact = b.startswith(("bottleneck-exact", "jbba-exact"))
        holds = abs(mean) <= 1e-7 and half <= 1e-7 if exact else mean - half > 0
        rows.append({"claim": f"{a} vs {b}", "allocator": a, "against": b,
                     "reduction_pct": mean, "reduction_pct_ci95": half, "pairs": n,
                     "holds": bool(holds)})
    return pd.DataFrame(rows)


def _table(summary: pd.DataFrame, x: str) -> pd.DataFrame:
    """Per (allocator, x): mean latency over seeds with its 95% t half-width."""
    return seed_stats(summary[summary["status"] == "ok"], ["allocator", x], [LATENCY])


def _lines(table: pd.DataFrame, x: str, xlabel: str, log_x: bool) -> Any:
    """One line per allocator on a log latency axis, as (a)–(d) draw their panels."""

    def draw(ax: Any, t: pd.DataFrame) -> None:
        ax.set_yscale("log")
        errorbar_lines(ax, t, x, LATENCY, log_x)
        x_axis(ax, t, x, xlabel, log_x)
        log_y_axis(ax, t, [LATENCY])
        ax.set_ylabel("round latency (s, log scale): planned = realised")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  title=LINES_NOTE, title_fontsize=6)

    return draw


CAPTION_LINES = (
    "{what} in the paper's setting: block fading, one i.i.d. Rayleigh state per round held "
    "for the whole round, so planned latency is realised; 5 seeds × 5 rounds per point, "
    "error bars 95% t-intervals over seeds (each seed draws its own device population, so the "
    "intervals are wide; p-claims gives the tight paired comparisons)."
)


@figure("p-devices", "paper setting: round latency against the number of devices K",
        "fig_p_devices",
        caption=CAPTION_LINES.format(what="Round latency against the number of devices K"))
def paper_devices_figure(results: Path) -> FigureData:
    """Round latency against K in the paper's setting, 95% t-intervals over 5 seeds."""
    x = "devices.population.count"
    table = _table(stored_summary(results, "fig_p_devices"), x)
    return FigureData(table, _lines(table, x, "number of devices K", False),
                      f"Round latency against the number of devices, {SETTING}", size=(8.0, 4.2))


@figure("p-bandwidth", "paper setting: round latency against total bandwidth B",
        "fig_p_bandwidth",
        caption=CAPTION_LINES.format(what="Round latency against the total uplink bandwidth"))
def paper_bandwidth_figure(results: Path) -> FigureData:
    """Round latency against bandwidth in the paper's setting, 95% t-intervals over 5 seeds."""
    summary = stored_summary(results, "fig_p_bandwidth").copy()
    summary["bandwidth_mhz"] = summary["server.total_bandwidth_hz"] / 1e6
    table = _table(summary, "bandwidth_mhz")
    return FigureData(table, _lines(table, "bandwidth_mhz", "total uplink bandwidth B (MHz)",
                                    True),
                      f"Round latency against bandwidth, {SETTING}", size=(8.0, 4.2))


@figure("p-claims", "paper setting: the paper's claims as paired latency reductions", *SWEEPS,
        caption="The paper's claims in its own setting (block fading, planned = realised): "
        "each bar is the latency reduction of the first allocator over the second, paired on "
        "the same round states (grid point and seed of p-devices and p-bandwidth, 30 pairs), "
        "mean and 95% t-interval; green where the claim holds (an interval above zero, or "
        "exactly zero against the exact optimum of the same problem).")
def paper_claims_figure(results: Path) -> FigureData:
    """The paper's claims, each as a paired reduction with its 95% t-interval."""
    table = paired_claims({s: stored_summary(results, s) for s in SWEEPS})

    def draw(ax: Any, t: pd.DataFrame) -> None:
        y = np.arange(len(t))[::-1]
        colors = ["tab:green" if h else "tab:red" for h in t["holds"]]
        ax.barh(y, t["reduction_pct"], xerr=t["reduction_pct_ci95"], color=colors,
                capsize=2, height=0.6)
        ax.set_yticks(y, t["claim"], fontsize=7)
        ax.axvline(0.0, color="k", lw=0.8)
        for yi, (v, h) in zip(y, zip(t["reduction_pct"], t["reduction_pct_ci95"])):
            ax.annotate(f"{v:.1f} ± {h:.1f}", (max(v + h, 0.0), yi), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=6)
        ax.set_xlabel("paired latency reduction of the first over the second (%)")
        ax.grid(alpha=0.3, axis="x")

    return FigureData(table, draw, "The paper's claims, paired runs in the paper setting "
                      "(green: holds at 95%)", size=(8.0, 4.6))
