"""Check the cost of several blocks per device: composed single-block costs against measured sets.

:func:`validate_sets` measures, in one interleaved run (:func:`desim.profiling.sets.set_table`),
every single block ``{n}`` and every requested set at each point, then predicts each set's
step time and peak memory by :func:`desim.costs.multiblock.set_cost` from the single blocks:

- **same run**: the extras derived from the single-block rows of this very run, as the
  profiled cost model derives them from a profile (:func:`~desim.costs.multiblock.
  derived_extra_compute_s`, measured gradient and AdamW bytes plus
  :func:`~desim.costs.multiblock.extra_activation_bytes`). This error is the composition's
  alone: host speed cancels;
- **profile** (when one is given): :class:`desim.costs.profiled.ProfiledCostModel` of the
  profile's table, absolute and after the one best scale (shape), as ``--validate`` reports;
- **deepest only**: ``w_d`` alone, what one would get by ignoring the other blocks (a
  reference, not a model).

MAPE is over the sets of two or more blocks (a single block's prediction is its own
measurement). Times are medians over repeats; ``*_min`` columns compare minima.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from desim.costs.base import BlockCosts, Workload
from desim.costs.multiblock import (
    derived_extra_compute_s,
    extra_activation_bytes,
    extra_flops,
    set_cost,
)
from desim.io.model_configs import load_model_config
from desim.profiling.report import best_scale, mape_pct
from desim.profiling.request import ProfileRequest
from desim.profiling.sets import set_table

KEY = ["hardware", "model", "method", "batch_size", "seq_len"]


@dataclass(frozen=True)
class SetValidation:
    """Measured sets against their composed predictions.

    Attributes:
        rows: one row per (point, set): measured and predicted seconds and bytes, errors (%).
        summary: MAPE (%) per point and overall (``batch_size`` = ``seq_len`` = 0) over the
            sets of two or more blocks.
        measured: the raw set table (:data:`desim.profiling.sets.SET_COLUMNS`), singles
            included.
    """

    rows: pd.DataFrame
    summary: pd.DataFrame
    measured: pd.DataFrame

    @classmethod
    def concat(cls, reports: Sequence[SetValidation]) -> SetValidation:
        """One report of several (one per table of a profile)."""
        return cls(*(pd.concat([getattr(r, f) for r in reports], ignore_index=True)
                     for f in ("rows", "summary", "measured")))


def singles_and_sets(sets: tuple[tuple[int, ...], ...],
                     num_blocks: int) -> tuple[tuple[int, ...], ...]:
    """Every single block ``(1,) .. (N,)``, then the other sets of ``sets`` in order."""
    singles = tuple((n,) for n in range(1, num_blocks + 1))
    return singles + tuple(g for g in dict.fromkeys(sets) if len(g) > 1)


def composed_costs(singles: pd.DataFrame, workload: Workload) -> BlockCosts:
    """Per-block costs with set extras from the single-block rows of one point of a set table.

    ``singles`` holds rows ``{1} .. {N}`` (``compute_s``, ``flops``, ``step_s``,
    ``grad_bytes``, ``optimizer_bytes``, ``peak_memory_bytes``, ``trainable_params``).
    """
    s = singles.sort_values("deepest")
    extra_s = derived_extra_compute_s(s["compute_s"].to_numpy(float), s["flops"].to_numpy(float),
                                      s["step_s"].to_numpy(float), extra_flops(workload))
    extra_bytes = (s["grad_bytes"].to_numpy(float) + s["optimizer_bytes"].to_numpy(float)
                   + extra_activation_bytes(workload))
    return BlockCosts(s["compute_s"].to_numpy(float), s["peak_memory_bytes"].to_numpy(float),
                      32.0 * s["trainable_params"].to_numpy(float), source="same-run",
                      extra_compute_s=extra_s, extra_memory_bytes=extra_bytes)


def validate_sets(
    request: ProfileRequest,
    profile: pd.DataFrame | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    speed: float = 1.0,
) -> SetValidation:
    """Measure ``request.sets`` with every single block and compare with the composition.

    Args:
        request: model, method, points, repeats and the sets (:func:`set_table`).
        profile: a profile table of the same model and method to predict from as well
            (``None``: the same-run composition only).
        on_progress: callback ``(done, total)``.
        speed: the profile's predictions are divided by ``speed`` (a calibrated class).
    """
    cfg = load_model_config(request.model)
    n_blocks = cfg.num_layers
    measured = set_table(replace(request, sets=singles_and_sets(request.sets, n_blocks)),
                         on_progress=on_progress)
    model = None
    if profile is not None:
        from desim.costs.profiled import ProfiledCostModel

        hw = str(measured["hardware"].iloc[0])
        model = ProfiledCostModel({hw: profile.assign(hardware=hw)}, class_speed={hw: speed})
    parts = []
    for (b, s), point in measured.groupby(["batch_size", "seq_len"], sort=False):
        workload = Workload(cfg, request.method, int(b), int(s), n_blocks,
                            lora_rank=request.lora_rank, adapter_size=request.adapter_size,
                            target_len=int(point["target_len"].iloc[0]) or 32)
        singles = point[point["set_size"] == 1]
        costs = {"same_run": composed_costs(singles, workload)}
        mins = singles.assign(compute_s=singles["compute_min_s"])
        costs["same_run_min"] = composed_costs(mins, workload)
        if model is not None:
            costs["profile"] = model.block_costs(workload, str(point["hardware"].iloc[0]))
        parts.append(_compare(point, costs))
    rows = pd.concat(parts, ignore_index=True)
    return SetValidation(rows=rows, summary=_summary(rows), measured=measured)


def _compare(point: pd.DataFrame, costs: dict[str, BlockCosts]) -> pd.DataFrame:
    """Measured against predicted seconds and bytes of every set at one point."""
    out = point[[*KEY, "blocks", "deepest", "set_size"]].copy()
    out["measured_compute_s"] = point["compute_s"].to_numpy()
    out["measured_min_s"] = point["compute_min_s"].to_numpy()
    out["compute_spread_s"] = point["compute_spread_s"].to_numpy()
    out["measured_memory_bytes"] = point["peak_memory_bytes"].to_numpy()
    groups = [[int(n) for n in str(g).split(",")] for g in point["blocks"]]
    single = costs["same_run"]
    out["deepest_only_s"] = [single.compute_s[g[-1] - 1] for g in groups]
    for name, c in costs.items():
        pred = [set_cost(c, g) for g in groups]
        out[f"{name}_compute_s"] = [p.compute_s for p in pred]
        if name == "same_run":
            out["same_run_memory_bytes"] = [p.memory_bytes for p in pred]
        if name == "profile":
            out["profile_memory_bytes"] = [p.memory_bytes for p in pred]
    for name in costs:
        target = "measured_min_s" if name.endswith("_min") else "measured_compute_s"
        out[f"{name}_ape_pct"] = 100 * np.abs(out[f"{name}_compute_s"] / out[target] - 1)
    out["deepest_only_ape_pct"] = 100 * np.abs(out["deepest_only_s"] / out[
        "measured_compute_s"] - 1)
    for name in ("same_run", "profile"):
        if f"{name}_memory_bytes" in out:
            out[f"{name}_memory_ape_pct"] = 100 * np.abs(
                out[f"{name}_memory_bytes"] / out["measured_memory_bytes"] - 1)
    return out


def _summary(rows: pd.DataFrame) -> pd.DataFrame:
    """MAPE (%) per (table, point) and per table over the sets of two or more blocks."""
    sets = rows[rows["set_size"] > 1]
    out = []
    for key, g in sets.groupby(KEY[:3], sort=True):
        for (b, s), part in [*g.groupby(["batch_size", "seq_len"], sort=True), ((0, 0), g)]:
            entry = dict(zip(KEY[:3], key, strict=True), batch_size=b, seq_len=s,
                         sets=len(part),
                         same_run_mape_pct=part["same_run_ape_pct"].mean(),
                         same_run_min_mape_pct=part["same_run_min_ape_pct"].mean(),
                         same_run_memory_mape_pct=part["same_run_memory_ape_pct"].mean(),
                         deepest_only_mape_pct=part["deepest_only_ape_pct"].mean())
            if "profile_compute_s" in part:
                pred, meas = part["profile_compute_s"], part["measured_compute_s"]
                scale = best_scale(pred.to_numpy(), meas.to_numpy())
                entry.update(profile_mape_pct=mape_pct(pred, meas),
                             profile_shape_mape_pct=mape_pct(scale * pred, meas),
                             profile_scale=scale,
                             profile_memory_mape_pct=part["profile_memory_ape_pct"].mean())
            out.append(entry)
    return pd.DataFrame(out)


def print_set_validation(report: SetValidation, console: Console) -> None:
    """Print the per-set comparison and the MAPE summary (rich tables) to ``console``."""
    has_profile = "profile_compute_s" in report.rows
    sets = report.rows[report.rows["set_size"] > 1]
    for (model, method), part in sets.groupby(["model", "method"], sort=True):
        table = Table(title=f"{model} {method}: a set of blocks in one pass, composed from "
                      "single blocks vs measured")
        cols = ["b×s", "blocks", "measured s", "composed s", "APE %", "deepest only s",
                "memory APE %"]
        if has_profile:
            cols[5:5] = ["profile s", "APE %"]
        for c in cols:
            table.add_column(c, justify="left" if c == "blocks" else "right")
        for _, r in part.iterrows():
            cells = [f"{r['batch_size']}x{r['seq_len']}", r["blocks"],
                     f"{r['measured_compute_s']:.3f}", f"{r['same_run_compute_s']:.3f}",
                     f"{r['same_run_ape_pct']:.2f}", f"{r['deepest_only_s']:.3f}",
                     f"{r['same_run_memory_ape_pct']:.4f}"]
            if has_profile:
                cells[5:5] = [f"{r['profile_compute_s']:.3f}", f"{r['profile_ape_pct']:.2f}"]
            table.add_row(*cells)
        console.print(table)
    for _, r in report.summary[report.summary["batch_size"] == 0].iterrows():
        line = (f"{r['model']} {r['method']}: {int(r['sets'])} sets, latency MAPE "
                f"{r['same_run_mape_pct']:.2f}% (minima {r['same_run_min_mape_pct']:.2f}%), "
                f"memory {r['same_run_memory_mape_pct']:.4f}%; deepest block only "
                f"{r['deepest_only_mape_pct']:.1f}%")
        if has_profile:
            line += (f"; from the profile {r['profile_mape_pct']:.2f}% absolute, "
                     f"{r['profile_shape_mape_pct']:.2f}% shape")
        console.print(line, markup=False)
