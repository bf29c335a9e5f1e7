"""Checks and printing of profiles and validation reports (no torch needed).

:func:`depth_violations` lists every place where a measured cost *decreases* with depth, which
the allocators' monotone structure (DESIGN §2, CRUNCH) forbids; nothing is smoothed or hidden.

Two latency errors are reported apart (:func:`scale_fit`): the **absolute** MAPE of the
predictions as they are, and the **shape** MAPE after the one scale that fits the measurements
best in log time (:func:`best_scale`). The first is what a run on this host would get; the
second is what the profile's fitted shape in depth, batch and length is worth once its speed
is re-calibrated for the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

GROUP = ["hardware", "model", "method", "batch_size", "seq_len", "target_len"]


@dataclass(frozen=True)
class ValidationReport:
    """Held-out measurements against the fitted profile model.

    Attributes:
        rows: one row per (table, held-out point, block): measured and predicted
            ``compute_s`` and ``peak_memory_bytes`` and their absolute percentage errors.
        summary: MAPE (%) of latency and memory per (table, held-out point) and per table
            (``batch_size``/``seq_len`` = 0 marks the table's overall row).
        violations: :func:`depth_violations` of the profile and of the held-out measurements.
        fit: per table, the fit's in-sample max and mean absolute relative residual (%).
    """

    rows: pd.DataFrame
    summary: pd.DataFrame
    violations: pd.DataFrame
    fit: pd.DataFrame


@dataclass(frozen=True)
class ScaleFit:
    """The best single scale between predicted and measured latencies, and both errors.

    Attributes:
        scale: ``c`` of :func:`best_scale` (a host whose steps take ``c`` times the profile's
            runs ``speed = 1 / c`` times faster).
        speed: ``1 / scale``: the ``speed`` of a class that borrows the profile.
        speed_ci95: a 95% bootstrap interval of ``speed`` over the measured rows.
        absolute_mape_pct: MAPE (%) of ``predicted`` as it is.
        shape_mape_pct: MAPE (%) of ``scale · predicted``.
        rows: the number of (point, block) rows fitted.
    """

    scale: float
    speed: float
    speed_ci95: tuple[float, float]
    absolute_mape_pct: float
    shape_mape_pct: float
    rows: int


def best_scale(predicted: np.ndarray, measured: np.ndarray) -> float:
    """The ``c`` minimising ``Σ log²(c·pᵢ/mᵢ)``: the geometric mean of ``mᵢ/pᵢ``, exactly.

    Least squares in log time weighs a point 10% slow and one 10% fast alike, and an estimate
    from a few calibration points lands between them (a MAPE-minimising scale is a weighted
    median, which with two points sits on one of them).
    """
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    return float(np.exp(np.mean(np.log(m / p))))


def mape_pct(predicted: np.ndarray, measured: np.ndarray) -> float:
    """``100 · mean |predicted / measured − 1|``."""
    return float(100 * np.mean(np.abs(np.asarray(predicted) / np.asarray(measured) - 1)))


def scale_fit(
    predicted: np.ndarray, measured: np.ndarray, resamples: int = 2000, seed: int = 0
) -> ScaleFit:
    """:func:`best_scale` with its bootstrap interval and the absolute and shape MAPE.

    The interval resamples the (point, block) rows with replacement (``resamples`` times,
    seeded): it covers measurement noise and shape error among the rows measured, not the
    drift of a host's speed between occasions (docs: Calibration, "Drift").

    Raises:
        ValueError: no rows, or a non-positive or non-finite value.
    """
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    if p.size == 0 or p.shape != m.shape or not (
        np.isfinite(p).all() and np.isfinite(m).all() and (p > 0).all() and (m > 0).all()
    ):
        raise ValueError("scale_fit: needs equal-length positive finite latencies")
    c = best_scale(p, m)
    log_ratio = np.log(m / p)
    picks = np.random.default_rng(seed).integers(0, p.size, size=(resamples, p.size))
    boot = np.exp(log_ratio[picks].mean(axis=1))  # best_scale of each resample
    lo, hi = np.quantile(1 / boot, [0.025, 0.975])
    return ScaleFit(scale=c, speed=1 / c, speed_ci95=(float(lo), float(hi)),
                    absolute_mape_pct=mape_pct(p, m), shape_mape_pct=mape_pct(c * p, m),
                    rows=int(p.size))


def depth_violations(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rows where ``compute_s`` or ``peak_memory_bytes`` is lower at depth ``n`` than ``n − 1``.

    Returns:
        Columns ``source, hardware, model, method, batch_size, seq_len, block, quantity,
        previous, value, drop_pct``; empty when both are non-decreasing everywhere.
    """
    out = []
    for key, rows in table.sort_values("block").groupby(GROUP, sort=True):
        for quantity in ("compute_s", "peak_memory_bytes"):
            values = rows[quantity].to_numpy(float)
            blocks = rows["block"].to_numpy()
            for i in range(1, len(values)):
                if values[i] < values[i - 1]:
                    out.append(
                        dict(
                            zip(GROUP, key, strict=True),
                            source=source,
                            block=int(blocks[i]),
                            quantity=quantity,
                            previous=values[i - 1],
                            value=values[i],
                            drop_pct=100.0 * (1.0 - values[i] / values[i - 1]),
                        )
                    )
    columns = ["source", *GROUP, "block", "quantity", "previous", "value", "drop_pct"]
    return pd.DataFrame(out, columns=columns)


def print_validation(report: ValidationReport, console: Console) -> None:
    """Print the MAPE table, the fit residuals and the monotonicity verdict."""
    table = Table(title="desim profile --validate: held-out MAPE", show_header=True)
    for col in ("model", "method", "batch", "seq_len", "latency MAPE % (absolute)",
                "latency MAPE % (shape)", "memory MAPE %"):
        table.add_column(col, justify="right")
    for r in report.summary.itertuples():
        point = (str(r.batch_size), str(r.seq_len)) if r.batch_size else ("all", "all")
        table.add_row(
            r.model, r.method, *point, f"{r.latency_mape_pct:.2f}",
            f"{r.latency_shape_mape_pct:.2f}", f"{r.memory_mape_pct:.3f}"
        )
    console.print(table)
    scales = report.summary[report.summary["batch_size"] == 0]
    for r in scales.itertuples():
        console.print(
            f"{r.model} {r.method}: measured = {r.scale:.4f} x predicted at the best single "
            f"scale (this host runs {1 / r.scale:.4f}x the profile's speed); absolute "
            f"{r.latency_mape_pct:.2f}%, shape {r.latency_shape_mape_pct:.2f}%"
        )
    fit = Table(title="fit residuals on the profile's own rows", show_header=True)
    for col in ("model", "method", "rows", "latency max|r| %", "latency mean|r| %",
                "memory max|r| %"):
        fit.add_column(col, justify="right")
    for r in report.fit.itertuples():
        fit.add_row(r.model, r.method, str(r.rows), f"{r.latency_max_pct:.2f}",
                    f"{r.latency_mean_pct:.2f}", f"{r.memory_max_pct:.3f}")
    console.print(fit)
    rows = report.rows
    if "rss_peak_bytes" in rows and (rows["rss_peak_bytes"] > 0).all():
        # CPU accounting cross-check: the process high-water mark must cover every accounted peak
        ok = (rows["rss_peak_bytes"] >= rows["measured_memory_bytes"]).all()
        console.print(
            f"memory cross-check: largest accounted peak "
            f"{rows['measured_memory_bytes'].max() / 1e9:.3f} GB, process peak RSS "
            f"{rows['rss_peak_bytes'].max() / 1e9:.3f} GB: "
            + ("RSS covers every accounted peak" if ok else "ACCOUNTED PEAK EXCEEDS RSS")
        )
    v = report.violations
    if v.empty:
        console.print("depth monotonicity: latency and memory are non-decreasing in depth "
                      "in the profile and in every held-out measurement")
        return
    console.print(f"depth monotonicity: {len(v)} violation(s) (value lower than at depth n-1):")
    for r in v.itertuples():
        console.print(
            f"  {r.source}: {r.model} {r.method} b={r.batch_size} s={r.seq_len} block {r.block} "
            f"{r.quantity} {r.value:.6g} < {r.previous:.6g} ({r.drop_pct:.2f}% lower)"
        )
