"""Fidelity of a profile: measure held-out grid points and score the fitted model by MAPE.

For every (hardware, model, method) table in a profile, held-out ``(batch, seq_len)`` points
(not in the table's grid) are measured exactly as the profile was (same device, thread count,
repeats) and compared with :class:`desim.costs.fit.ProfileFit` predictions. Latency is the
training
step ``compute_s``; memory is ``peak_memory_bytes``. MAPE is the mean over blocks and points of
``|predicted − measured| / measured``: the **absolute** latency MAPE. The **shape** MAPE is the
same after the single best scale of the table's predictions (:func:`~desim.profiling.report.
scale_fit`), so a host that is uniformly faster or slower than the profile's shows it as a
scale, not as an error of the fitted shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from desim.costs.fit import ProfileFit, fit_profile
from desim.errors import InputError
from desim.io.model_configs import model_config_data
from desim.io.shipped import shipped_models
from desim.profiling.models import layer_counts
from desim.profiling.report import GROUP, ValidationReport, best_scale, depth_violations, mape_pct
from desim.profiling.request import ProfileRequest
from desim.profiling.runner import profile_table

# candidates in the interior of the default grids, none of them a grid point
CANDIDATES = ((2, 96), (3, 160), (6, 192), (12, 64), (2, 224), (6, 80), (12, 112), (3, 48))


def held_out_points(grid: pd.DataFrame, count: int = 4) -> list[tuple[int, int]]:
    """Up to ``count`` held-out points inside the grid's batch, length and token ranges."""
    have = set(zip(grid["batch_size"], grid["seq_len"], strict=True))
    max_b, max_s = grid["batch_size"].max(), grid["seq_len"].max()
    max_t = (grid["batch_size"] * grid["seq_len"]).max()
    min_s = grid["seq_len"].min()
    pts = [
        (b, s)
        for b, s in CANDIDATES
        if (b, s) not in have and b <= max_b and min_s <= s <= max_s and b * s <= max_t
    ]
    return pts[:count]


def validate_profile(
    profile: pd.DataFrame,
    points: Sequence[tuple[int, int]] | None = None,
    repeats: int = 3,
    model_path: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    speed: float = 1.0,
    threads: int | None = None,
    blocks: Sequence[int] = (),
    allow_grid_points: bool = False,
) -> ValidationReport:
    """Measure held-out points for every table of ``profile`` and compare with the fit.

    Args:
        profile: a profile table (:func:`desim.io.calibration.read_profile`).
        points: ``(batch, seq_len)`` pairs; default :func:`held_out_points` of each table.
        repeats: timed repetitions per point.
        model_path: model config to build, for a profile of a model that is not shipped.
        on_progress: callback ``(done, total)``.
        speed: the predictions are the profile's divided by ``speed`` (a calibrated class).
        threads: torch threads to measure with (``None``: the table's own).
        blocks: the depths to measure (empty: every block).
        allow_grid_points: measure grid points too (calibration); else they are refused.

    Raises:
        InputError: a point lies in the grid already, or the model cannot be rebuilt.
    """
    rows, summary, fits, violations = [], [], [], [depth_violations(profile, "profile")]
    tables = list(profile.groupby(["hardware", "model", "method"], sort=True))
    for (hardware, model, method), table in tables:
        config = model_path or model
        if model_path is None and model not in shipped_models():
            raise InputError(f"{model} is not a shipped model; pass its config with --model")
        fit = fit_profile(table, layer_counts(model_config_data(config))[1])
        grid = table[["batch_size", "seq_len"]].drop_duplicates()
        pts = list(points) if points else held_out_points(grid)
        inside = set(pts) & set(zip(grid["batch_size"], grid["seq_len"], strict=True))
        if inside and not allow_grid_points:
            raise InputError(f"--points: {sorted(inside)} are grid points of the profile")
        if not pts:
            raise InputError(f"{model} {method}: no default held-out point fits the grid")
        first = table.iloc[0]
        request = _held_out_request(config, method, str(hardware), pts, first, repeats,
                                    threads, tuple(blocks))
        measured = profile_table(request, on_progress=on_progress)
        violations.append(depth_violations(measured, "held-out"))
        part = _compare(measured, fit, speed)
        rows.append(part)
        target = int(first["target_len"])
        scale = best_scale(part["predicted_compute_s"], part["measured_compute_s"])
        for (b, s), g in [*part.groupby(["batch_size", "seq_len"], sort=True), ((0, 0), part)]:
            pred, meas = g["predicted_compute_s"], g["measured_compute_s"]
            summary.append((hardware, model, method, b, s, target, mape_pct(pred, meas),
                            mape_pct(scale * pred, meas), scale, g["memory_ape_pct"].mean()))
        fits.append((hardware, model, method, len(table),
                     100 * np.abs(fit.time_residuals).max(),
                     100 * np.abs(fit.time_residuals).mean(),
                     100 * np.abs(fit.memory_residuals).max()))
    return ValidationReport(
        rows=pd.concat(rows, ignore_index=True),
        summary=pd.DataFrame(summary, columns=[*GROUP, "latency_mape_pct",
                                               "latency_shape_mape_pct", "scale",
                                               "memory_mape_pct"]),
        violations=pd.concat(violations, ignore_index=True),
        fit=pd.DataFrame(fits, columns=["hardware", "model", "method", "rows",
                                        "latency_max_pct", "latency_mean_pct", "memory_max_pct"]),
    )


def _held_out_request(
    config: str, method: str, hardware: str, pts: list[tuple[int, int]], first: pd.Series,
    repeats: int, threads: int | None = None, blocks: tuple[int, ...] = (),
) -> ProfileRequest:
    """The request that measures ``pts`` as the table whose first row is ``first`` was."""
    return ProfileRequest(
        model=config,
        method=method,
        batches=tuple(b for b, _ in pts),
        seq_lens=tuple(s for _, s in pts),
        points=tuple(pts),
        device=str(first["device"]),
        repeats=repeats,
        warmup=1,
        threads=threads or int(first["threads"]) or None,
        blocks=blocks,
        hardware=hardware,
        lora_rank=int(first["lora_rank"]) or 8,
        target_len=int(first["target_len"]) or None,
    )


def _compare(measured: pd.DataFrame, fit: ProfileFit, speed: float = 1.0) -> pd.DataFrame:
    """Measured and predicted latency and memory of every held-out row, with the errors."""
    pred_t = fit.compute_s(measured["block"], measured["batch_size"], measured["seq_len"])
    pred_t = pred_t / speed
    pred_m = fit.memory_bytes(measured["block"], measured["batch_size"], measured["seq_len"])
    part = measured[[*GROUP, "block"]].copy()
    part["measured_compute_s"] = measured["compute_s"]
    part["predicted_compute_s"] = pred_t
    part["compute_ape_pct"] = 100 * np.abs(pred_t / measured["compute_s"] - 1)
    part["measured_memory_bytes"] = measured["peak_memory_bytes"]
    part["predicted_memory_bytes"] = pred_m
    part["memory_ape_pct"] = 100 * np.abs(pred_m / measured["peak_memory_bytes"] - 1)
    part["compute_spread_s"] = measured["compute_spread_s"]
    part["rss_peak_bytes"] = measured["rss_peak_bytes"]
    return part
