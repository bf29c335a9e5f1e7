"""Absolute and shape latency MAPE of re-measured shipped profiles, as a Markdown table.

    python experiments/calibration/summarise.py experiments/calibration/measured/2026-12-02
    python experiments/calibration/summarise.py --by-file experiments/calibration/measured/drift

Reads every ``*-rows.csv`` that ``remeasure.sh`` (``desim profile --validate``) wrote: one row
per held-out point and block, measured and predicted. For each table and point it prints the
absolute MAPE, the shape MAPE after the table's best single scale
(:func:`desim.profiling.report.best_scale`, one scale per table over all its points) and the
speed of this host relative to the profile (``1 / scale``); ``--by-file`` names each file (the
drift folder holds one table measured on several occasions, one file each). Needs no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from desim.profiling.report import best_scale, mape_pct


def summarise(folder: Path) -> pd.DataFrame:
    """One row per (table, point) and one per table (``point = all``)."""
    out = []
    for path in sorted(folder.glob("*-rows.csv")):
        rows = pd.read_csv(path)
        pred, meas = rows["predicted_compute_s"], rows["measured_compute_s"]
        scale = best_scale(pred, meas)
        first = rows.iloc[0]
        for point, g in [*rows.groupby(["batch_size", "seq_len"], sort=True), (None, rows)]:
            out.append({
                "file": path.name.removesuffix("-rows.csv"), "model": first["model"],
                "method": first["method"],
                "point": "all" if point is None else f"{point[0]}x{point[1]}",
                "absolute_mape_pct": mape_pct(g["predicted_compute_s"], g["measured_compute_s"]),
                "shape_mape_pct": mape_pct(scale * g["predicted_compute_s"],
                                           g["measured_compute_s"]),
                "speed": 1 / scale, "memory_mape_pct": g["memory_ape_pct"].mean(),
                "rows": len(g),
            })
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame, by_file: bool = False) -> str:
    """The table as Markdown, errors in % with two decimals."""
    first = "| file " if by_file else ""
    lines = [f"{first}| model | method | held-out `b×s` | absolute MAPE | shape MAPE | speed here "
             "| memory MAPE |", "|---" * (8 if by_file else 7) + "|"]
    for r in table.itertuples():
        point = "**all**" if r.point == "all" else r.point
        cell = f"| {r.file} " if by_file else ""
        lines.append(f"{cell}| {r.model} | {r.method} | {point} | {r.absolute_mape_pct:.2f}% | "
                     f"{r.shape_mape_pct:.2f}% | {r.speed:.3f} | {r.memory_mape_pct:.3f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    by_file = "--by-file" in sys.argv
    folder = Path([a for a in sys.argv[1:] if a != "--by-file"][0])
    print(markdown(summarise(folder), by_file))
