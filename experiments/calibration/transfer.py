"""The 1-thread to 2-thread transfer on this host: roofline against measurement.

    python experiments/calibration/transfer.py ONE_THREAD_ROWS.csv TWO_THREAD_ROWS.csv

Both files are measurement rows of the same table at the same points and blocks, one taken with
one torch thread and one with two (``desim profile --calibrate ... [--threads 2]`` writes them
beside the class file as ``*-rows.csv``). For every row it prints the measured speed-up
``t₁ / t₂`` and the roofline's (:func:`desim.costs.roofline.transfer_speed` from
``cpu-reference`` to ``cpu-reference-2t``, the source's compute efficiency fitted to the
one-thread times and the target's taken equal), and the MAPE of the roofline's prediction of
the two-thread times. Needs no torch.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from desim.costs.analytic import analytic_flops
from desim.costs.base import Workload
from desim.costs.roofline import MACHINES, fit_compute_efficiency, step_bytes_moved, transfer_speed
from desim.io.model_configs import load_model_config


def compare(one: pd.DataFrame, two: pd.DataFrame) -> pd.DataFrame:
    """Measured and roofline speed-ups of every row both files hold."""
    keys = ["model", "method", "batch_size", "seq_len", "block"]
    rows = one.merge(two, on=keys, suffixes=("_1t", "_2t"))
    flops, moved = [], []
    for r in rows.itertuples():
        cfg = load_model_config(r.model)
        w = Workload(cfg, r.method, int(r.batch_size), int(r.seq_len), cfg.num_hidden_layers)
        flops.append(analytic_flops(w)[r.block - 1])
        moved.append(step_bytes_moved(w)[r.block - 1])
    f, b = np.array(flops), np.array(moved)
    t1, t2 = rows["measured_compute_s_1t"].to_numpy(), rows["measured_compute_s_2t"].to_numpy()
    src = MACHINES["cpu-reference"]
    eta = fit_compute_efficiency(f, t1, src)
    source = replace(src, compute_efficiency=eta)
    target = replace(MACHINES["cpu-reference-2t"], compute_efficiency=eta)
    speed = transfer_speed(f, b, source, target)
    return rows[keys].assign(
        one_thread_s=t1, two_thread_s=t2, measured_speedup=t1 / t2, roofline_speedup=speed,
        roofline_ape_pct=100 * np.abs((t1 / speed) / t2 - 1), intensity_flop_per_byte=f / b,
    )


if __name__ == "__main__":
    table = compare(pd.read_csv(Path(sys.argv[1])), pd.read_csv(Path(sys.argv[2])))
    pd.set_option("display.width", 160)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"measured speed-up {table['measured_speedup'].mean():.3f} "
          f"(min {table['measured_speedup'].min():.3f}, max {table['measured_speedup'].max():.3f});"
          f" roofline {table['roofline_speedup'].mean():.3f}; roofline MAPE of the two-thread "
          f"times {table['roofline_ape_pct'].mean():.2f}%")
