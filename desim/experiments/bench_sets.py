"""``desim bench allocators`` rows for ``crunch-multi``: devices that train several blocks.

Measured figures, never asserted (STYLE §9); :func:`desim.experiments.bench.bench_allocator_times`
adds these rows to its table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from desim.allocators import make_allocator
from desim.allocators.instances import random_context
from desim.errors import InfeasibleError


def crunch_multi_times(
    seed: int, best_solve_s: Callable[[Any, Any], float]
) -> list[tuple[str, int, int, float, str]]:
    """``crunch-multi`` at ``K = 8`` and ``100``, ``N = 24``: uniform extras, then by block.

    The second instance gives every block but the deepest an extra of 0.03% of the device's
    block-1 compute (twice that for block 1, ±5% apart), and 3.5 MB; measured profiles differ
    by block like this, which takes the bracketed ``ranges+milp`` path.
    """
    rows = []
    for k in (8, 100):
        ctx = random_context(np.random.default_rng([seed, k, 24]), k, 24)
        jitter = np.random.default_rng([seed, k, 24, 2]).uniform(0.95, 1.05, 24)
        by_block = 3e-4 * jitter * np.where(np.arange(24) == 0, 2.0, 1.0)
        with np.errstate(invalid="ignore"):
            extra = ctx.compute_s[:, :1] * by_block
        varied = replace(ctx, extra_compute_s=extra, extra_memory_bytes=np.full(24, 3.5e6))
        for case, note in ((ctx, "no extras (ranges)"), (varied, "extras by block")):
            try:
                secs = best_solve_s(make_allocator("crunch-multi"), case)
            except InfeasibleError:
                rows.append(("crunch-multi", k, 24, float("nan"), f"{note}: infeasible"))
                continue
            method = make_allocator("crunch-multi").allocate(
                case, np.random.default_rng(0)).diagnostics["method"]
            rows.append(("crunch-multi", k, 24, secs * 1e3, f"{note}: {method}"))
    return rows
