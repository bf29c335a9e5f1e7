"""Baseline allocators: random, greedy, depth-unaware, minsum, single-device and offload.

``random`` and ``greedy`` place blocks deepest-first (block ``N`` down to 1) on an unused
eligible device; these four DEFT baselines split bandwidth with a named split (default
``equal``). ``single-device`` and ``offload`` leave DEFT's one block per device: they return
``grouped`` and ``offload`` allocations (see :class:`~desim.allocators.base.Allocation`).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from desim.allocators.bandwidth import SplitAllocator, bandwidth_split
from desim.allocators.base import (
    Allocation,
    Allocator,
    RoundContext,
    infeasible,
)
from desim.allocators.registry import register
from desim.errors import InfeasibleError
from desim.world.rates import shannon_rate_bps


def assign_deepest_first(ctx: RoundContext, preference: np.ndarray) -> np.ndarray:
    """Give blocks ``N..1`` in turn to the most-preferred unused eligible device.

    Args:
        ctx: the round snapshot.
        preference: ``(K,)`` device indices, most preferred first.

    Returns:
        ``(N,)`` device index per block.

    Raises:
        InfeasibleError: naming the first block that no unused device can hold.
    """
    eligible = ctx.eligible()
    used = np.zeros(ctx.num_devices, dtype=bool)
    block_device = np.full(ctx.num_blocks, -1, dtype=np.intp)
    for j in range(ctx.num_blocks - 1, -1, -1):
        for k in preference:
            if not used[k] and eligible[k, j]:
                block_device[j] = k
                used[k] = True
                break
        else:
            raise infeasible(ctx, j + 1)
    return block_device



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


@register(
    "depth-unaware",
    "bottleneck matching that plans as if every block cost the average block (memory still kept)",
)
class DepthUnawareAllocator(SplitAllocator):
    """Plans with each device's mean compute and upload over the blocks, blind to depth.

    Memory and availability stay hard constraints (otherwise the plan is infeasible). All
    blocks look alike to the planner, so it picks the devices with the best average latency,
    and CRUNCH's deepest-first rule hands the deeper blocks to the devices with more memory.
    """

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Match on depth-averaged latencies, then split bandwidth."""
        from desim.allocators.bandwidth import planned_latency_matrix_s
        from desim.allocators.crunch import solve_p1, split_allocation

        ok = ctx.eligible()
        t = planned_latency_matrix_s(ctx, self.bandwidth)
        with np.errstate(invalid="ignore"):
            upload = np.where(ok, t - ctx.compute_s, 0.0)
        count = np.maximum(ok.sum(axis=1), 1)
        mean = ctx.compute_s.mean(axis=1) + upload.sum(axis=1) / count
        flat = np.where(ok, mean[:, None], np.inf)
        block_device, _, diag = solve_p1(ctx, flat, "crunch", False)
        return split_allocation(ctx, block_device, self.bandwidth, diag)


@register("minsum", "Hungarian assignment minimising the sum (not the max) of planned latencies")
class MinSumAllocator(SplitAllocator):
    """Linear sum assignment of ``t_{k,n}`` at the split's planned shares."""

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Min-sum matching, then split bandwidth."""
        from desim.allocators.bandwidth import planned_latency_matrix_s
        from desim.allocators.crunch import bottleneck_match, min_sum_below, split_allocation

        t = planned_latency_matrix_s(ctx, self.bandwidth)
        tau, _, block = bottleneck_match(t)  # feasibility, and the block to name if not
        if not np.isfinite(tau):
            raise infeasible(ctx, block)
        block_device = min_sum_below(t, np.inf)
        return split_allocation(ctx, block_device, self.bandwidth, {})


@register(
    "single-device",
    "the best single device trains all blocks in one backward pass with the whole band",
)
class SingleDeviceAllocator(Allocator):
    """One device trains every block in one backward pass (a ``grouped`` allocation).

    Backpropagating to the deepest block passes through every block, so the device computes
    as long as its deepest block (``ĉ_{k,N}``; the weight gradients of the shallower blocks are
    ignored, which is tiny for LoRA), needs the deepest block's memory, and uploads all blocks'
    bits with the whole band ``B``. The device with the least such latency is chosen.
    """

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Pick the fastest device able to hold the deepest block."""
        ok = ctx.eligible()[:, -1]
        if not ok.any():
            raise infeasible(ctx, ctx.num_blocks, distinct=False)
        rate = shannon_rate_bps(np.full(ctx.num_devices, ctx.total_bandwidth_hz), ctx.snr_coef_hz)
        bits = float(ctx.upload_bits.sum())
        with np.errstate(divide="ignore"):
            t = np.where(ok, ctx.compute_s[:, -1] + (bits / rate if bits > 0 else 0.0), np.inf)
        k = int(np.argmin(t))
        if not np.isfinite(t[k]):
            raise InfeasibleError(
                f"round {ctx.round_index}: single-device: the {int(ok.sum())} device(s) that can "
                f"hold block {ctx.block_name(ctx.num_blocks)} (the deepest) all have zero channel "
                f"gain, so none can upload the {bits:.4g} gradient bits"
            )
        bw = np.zeros(ctx.num_devices)
        bw[k] = ctx.total_bandwidth_hz
        alloc = Allocation(np.full(ctx.num_blocks, k), bw, mode="grouped")
        return Allocation(alloc.block_device, bw, ctx.round_latency_s(alloc), mode="grouped")


@register(
    "offload",
    "computation offloading: devices upload mini-batches, the edge server trains all blocks",
)
class OffloadAllocator(Allocator):
    """Traditional computation offloading, the reference DEFT is compared against.

    The ``N`` available devices with the best channels each upload one mini-batch (equal
    shares of ``B``); the server then trains all blocks in one backward pass over the pooled
    mini-batches, taking ``uploads × (its deepest-block time) / server_speed_factor`` (time is
    linear in the batch). There is no aggregation: the server holds the model.

    Attributes:
        server_speed_factor: server speed relative to its hardware class profile.
    """

    server_speed_factor: float = Field(default=10.0, gt=0)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Choose the uploaders and price the server's training."""
        avail = np.flatnonzero(ctx.available)
        if avail.size < ctx.num_blocks:
            raise InfeasibleError(
                f"round {ctx.round_index}: block 1 cannot be placed: {avail.size} of "
                f"{ctx.num_devices} devices available for {ctx.num_blocks} blocks; offload "
                f"needs {ctx.num_blocks} distinct devices, each uploading one mini-batch"
            )
        if ctx.server_compute_s is None:
            raise InfeasibleError(
                f"round {ctx.round_index}: offload needs the server's block costs, but the cost "
                "model does not price the server's hardware class"
            )
        order = avail[np.argsort(-ctx.snr_coef_hz[avail], kind="stable")][: ctx.num_blocks]
        heard = int((ctx.snr_coef_hz[avail] > 0).sum())
        if ctx.sample_bits > 0 and heard < ctx.num_blocks:
            raise InfeasibleError(
                f"round {ctx.round_index}: block 1 cannot be placed: offload needs "
                f"{ctx.num_blocks} distinct devices, each uploading one mini-batch, but only "
                f"{heard} of the {avail.size} available devices have nonzero channel gain"
            )
        bw = np.zeros(ctx.num_devices)
        bw[order] = ctx.total_bandwidth_hz / order.size
        server_s = order.size * float(ctx.server_compute_s[-1]) / self.server_speed_factor
        alloc = Allocation(order, bw, mode="offload", server_compute_s=server_s)
        return Allocation(
            order, bw, ctx.round_latency_s(alloc), mode="offload", server_compute_s=server_s
        )
