"""A cost model of given arrays: the same per-block costs on every hardware class.

For tests and custom costs; FLOPs not given are counted by
:func:`desim.costs.analytic.analytic_flops`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desim.costs.analytic import analytic_flops
from desim.costs.base import BlockCosts, Workload
from desim.errors import ScenarioError


@dataclass(frozen=True, eq=False)
class TableCostModel:
    """Costs given directly as arrays (the same on every hardware class).

    Attributes:
        compute_s: ``(N,)`` seconds at speed factor 1.
        memory_bytes: ``(N,)`` peak bytes.
        upload_bits: ``(N,)`` upload bits.
        flops: ``(N,)`` counted FLOPs (``None``: :func:`analytic_flops` of the workload).
        extra_compute_s: ``(N,)`` seconds block ``n`` adds to a set of blocks above its
            deepest (``None``: zeros; :mod:`desim.costs.multiblock`).
        extra_memory_bytes: ``(N,)`` bytes it then adds (``None``: zeros).
    """

    compute_s: np.ndarray
    memory_bytes: np.ndarray
    upload_bits: np.ndarray
    name: str = "table"
    flops: np.ndarray | None = None
    extra_compute_s: np.ndarray | None = None
    extra_memory_bytes: np.ndarray | None = None

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return the stored arrays (their length must equal ``workload.num_blocks``)."""
        n = workload.num_blocks
        extras = [np.zeros(n) if x is None else x
                  for x in (self.extra_compute_s, self.extra_memory_bytes)]
        given = (self.compute_s, self.memory_bytes, self.upload_bits, *extras,
                 *(() if self.flops is None else (self.flops,)))
        arrays = [np.asarray(x, dtype=float) for x in given]
        bad = [x.shape for x in arrays if x.shape != (n,)]
        if bad:
            raise ScenarioError(f"cost table has {bad[0]} entries, expected {n} blocks")
        compute_s, memory_bytes, upload_bits, extra_s, extra_bytes = arrays[:5]
        flops, source = ((analytic_flops(workload), "analytic") if self.flops is None
                         else (arrays[5], self.name))
        return BlockCosts(compute_s, memory_bytes, upload_bits, source=self.name,
                          flops=flops, flops_source=source, extra_compute_s=extra_s,
                          extra_memory_bytes=extra_bytes)
