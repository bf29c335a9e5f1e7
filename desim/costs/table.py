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
    """

    compute_s: np.ndarray
    memory_bytes: np.ndarray
    upload_bits: np.ndarray
    name: str = "table"
    flops: np.ndarray | None = None

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return the stored arrays (their length must equal ``workload.num_blocks``)."""
        given = (self.compute_s, self.memory_bytes, self.upload_bits,
                 *(() if self.flops is None else (self.flops,)))
        arrays = [np.asarray(x, dtype=float) for x in given]
        if any(x.shape != (workload.num_blocks,) for x in arrays):
            raise ScenarioError(
                f"cost table has {arrays[0].shape} entries, expected {workload.num_blocks} blocks"
            )
        compute_s, memory_bytes, upload_bits = arrays[:3]
        if self.flops is None:
            return BlockCosts(compute_s, memory_bytes, upload_bits, source=self.name,
                              flops=analytic_flops(workload))
        return BlockCosts(compute_s, memory_bytes, upload_bits, source=self.name,
                          flops=arrays[3], flops_source=self.name)
