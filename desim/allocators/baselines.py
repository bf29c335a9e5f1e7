"""Baseline allocators: ``random`` and ``greedy``.

Both place blocks deepest-first (block ``N`` down to 1) on an unused eligible device and then
split bandwidth with a named split (default ``equal``).
"""

from __future__ import annotations

import numpy as np
from pydantic import field_validator

from desim.allocators.bandwidth import SPLITS, bandwidth_split
from desim.allocators.base import Allocation, Allocator, RoundContext, assign_deepest_first
from desim.allocators.registry import register


class SplitAllocator(Allocator):
    """An allocator that places blocks itself and delegates bandwidth to a named split."""

    bandwidth: str = "equal"

    @field_validator("bandwidth")
    @classmethod
    def _known_split(cls, name: str) -> str:
        if name not in SPLITS:
            raise ValueError(
                f"unknown bandwidth split {name!r}; known: {', '.join(sorted(SPLITS))}"
            )
        return name


@register("random", "uniformly random feasible placement (deepest block first), equal bandwidth")
class RandomAllocator(SplitAllocator):
    """Each block, deepest first, goes to a uniformly random unused device that can hold it."""

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Random placement, then the bandwidth split."""
        block_device = assign_deepest_first(ctx, rng.permutation(ctx.num_devices))
        return Allocation(block_device, bandwidth_split(self.bandwidth)(ctx, block_device))


@register("greedy", "the fastest device gets the deepest block, equal bandwidth")
class GreedyAllocator(SplitAllocator):
    """Rank devices by planned compute time of the deepest block; fastest takes deepest."""

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Greedy placement by compute speed, then the bandwidth split."""
        order = np.argsort(ctx.compute_s[:, -1], kind="stable")
        block_device = assign_deepest_first(ctx, order)
        return Allocation(block_device, bandwidth_split(self.bandwidth)(ctx, block_device))
