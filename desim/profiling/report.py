"""Checks and printing of profiles and validation reports (no torch needed).

:func:`depth_violations` lists every place where a measured cost *decreases* with depth, which
the allocators' monotone structure (DESIGN §2, CRUNCH) forbids; nothing is smoothed or hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    for col in ("model", "method", "batch", "seq_len", "latency MAPE %", "memory MAPE %"):
        table.add_column(col, justify="right")
    for r in report.summary.itertuples():
        point = (str(r.batch_size), str(r.seq_len)) if r.batch_size else ("all", "all")
        table.add_row(
            r.model, r.method, *point, f"{r.latency_mape_pct:.2f}", f"{r.memory_mape_pct:.3f}"
        )
    console.print(table)
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
