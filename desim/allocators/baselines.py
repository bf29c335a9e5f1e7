"""Baseline allocators: random, greedy, depth-unaware, minsum, single-device and offload.

``random`` and ``greedy`` place blocks deepest-first (block ``N`` down to 1) on an unused
eligible device; these four DEFT baselines split bandwidth with a named split (default
``equal``). ``single-device`` and ``offload`` leave DEFT's one block per device: they return
``grouped`` and ``offload`` allocations (see :class:`~desim.allocators.base.Allocation`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

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
from desim.plan import Phase, PlanRows, RoundPlan


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
    "the best single device trains all blocks in one backward pass with the whole band; "
    "data = own (its one mini-batch) or pooled (N mini-batches, N-1 of them uploaded)",
)
class SingleDeviceAllocator(Allocator):
    """One device trains every block in one backward pass (a ``grouped`` allocation).

    Backpropagating to the deepest block passes through every block, so the device computes
    as long as its deepest block plus the shallower blocks' extra weight-gradient work
    (``ĉ_{k,N} + Σ_{n<N} e_{k,n}``, :meth:`RoundContext.all_blocks_cost`), needs the deepest
    block's memory plus the others' extra bytes, and uploads all blocks' bits with the whole
    band ``B``. The device with the least such latency is chosen.

    ``data = "own"`` trains on the device's own mini-batch only: a round consumes one
    mini-batch where DEFT consumes ``N``, one on each block's device. ``data = "pooled"``
    keeps DEFT's data locality and sample count: the ``N - 1`` available devices with the best
    channels upload their mini-batches, which the server relays to the trainer, and the
    trainer accumulates the gradient over the ``N`` mini-batches (:func:`pooled_allocation`).

    Attributes:
        data: ``own`` (one mini-batch a round) or ``pooled`` (``N`` mini-batches a round).
    """

    places_block_sets: ClassVar[bool] = True
    data: Literal["own", "pooled"] = "own"

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Pick the fastest device able to hold the deepest block."""
        compute, memory = ctx.all_blocks_cost()
        ok = ctx.eligible()[:, -1] & (memory <= ctx.memory_budget_bytes)
        if not ok.any():
            raise infeasible(ctx, ctx.num_blocks, distinct=False)
        if self.data == "pooled":
            return pooled_allocation(ctx, ok)
        rate = ctx.rates.rate_bps(np.full(ctx.num_devices, ctx.total_bandwidth_hz),
                                  np.arange(ctx.num_devices))
        bits = float(ctx.upload_bits.sum())
        with np.errstate(divide="ignore"):
            t = np.where(ok, compute + (bits / rate if bits > 0 else 0.0), np.inf)
        k = int(np.argmin(t))
        if not np.isfinite(t[k]):
            raise _muted(ctx, ok, bits)
        bw = np.zeros(ctx.num_devices)
        bw[k] = ctx.total_bandwidth_hz
        alloc = Allocation(np.full(ctx.num_blocks, k), bw, mode="grouped")
        return Allocation(alloc.block_device, bw, ctx.round_latency_s(alloc), mode="grouped")


def _muted(ctx: RoundContext, holders: np.ndarray, bits: float) -> InfeasibleError:
    return InfeasibleError(
        f"round {ctx.round_index}: single-device: the {int(holders.sum())} device(s) that can "
        f"hold block {ctx.block_name(ctx.num_blocks)} (the deepest) all have zero channel "
        f"gain, so none can upload the {bits:.4g} gradient bits"
    )


def _transfer_s(bits: float, rate_bps: float) -> float:
    """Seconds to move ``bits`` at ``rate_bps`` (0 for no bits, ``inf`` at rate 0)."""
    if bits <= 0:
        return 0.0
    return bits / rate_bps if rate_bps > 0 else float("inf")


def pooled_timing_s(ctx: RoundContext, k: int, senders: np.ndarray) -> tuple[float, ...]:
    """Planned phases of a pooled single-device round: trainer ``k``, uploaders ``senders``.

    With ``M = senders.size`` (``N - 1``), ``ĉ`` the trainer's all-block compute
    (:meth:`RoundContext.all_blocks_cost`), ``s`` the mini-batch bits and
    ``D = Σ_n D_n``: stage 1 lasts ``max(ĉ, max_j s / r_j(B/M))`` (the trainer starts on its
    own mini-batch while the others upload on equal shares); stage 2 is the relay
    ``M s / r_k(B)`` (the server forwards the batches over the reciprocal downlink), ``M ĉ``
    of gradient accumulation and the upload ``D / r_k(B)``; then the aggregation.

    Returns:
        ``(data_s, relay_s, compute_s, upload_s, latency_s)``: the slowest mini-batch upload,
        the relay, the trainer's total compute (``N ĉ``), its gradient upload and the round.
    """
    B, M, s = ctx.total_bandwidth_hz, senders.size, ctx.sample_bits
    c = float(ctx.all_blocks_cost()[0][k])
    rate = float(ctx.rates.rate_bps(np.array([B]), np.array([k]))[0])
    data = 0.0
    if M:
        share = ctx.rates.rate_bps(np.full(M, B / M), senders)
        data = max(_transfer_s(s, float(r)) for r in share)
    relay = _transfer_s(M * s, rate)
    upload = _transfer_s(float(ctx.upload_bits.sum()), rate)
    latency = max(c, data) + relay + M * c + upload + ctx.aggregation_s
    return data, relay, (M + 1) * c, upload, latency


def pooled_allocation(ctx: RoundContext, holders: np.ndarray) -> Allocation:
    """``single-device`` with pooled data: ``N`` mini-batches a round, as DEFT consumes.

    For each device ``k`` that can hold the deepest block, the uploaders are the ``N - 1``
    other available devices with the best channels (with nonzero gain when mini-batches have
    bits); the ``k`` with the least :func:`pooled_timing_s` latency trains. The plan has two
    stages (uploads while the trainer computes its own batch; relay, ``N - 1`` more batches
    and the gradient upload), so the allocation carries it (:attr:`Allocation.plan`). Memory
    is one mini-batch's (gradient accumulation). Rows are per block, on the trainer, each with
    the ``N`` mini-batches' samples; the uploaders are named in the diagnostics.

    Raises:
        InfeasibleError: fewer than ``N - 1`` other devices can upload, or no holder can.
    """
    N, M = ctx.num_blocks, ctx.num_blocks - 1
    avail = np.flatnonzero(ctx.available)
    coef = ctx.rates.mean_coef_hz  # ranks the uploaders by channel
    heard = avail[coef[avail] > 0] if ctx.sample_bits > 0 else avail
    order = heard[np.argsort(-coef[heard], kind="stable")]
    best: tuple[float, int, np.ndarray] | None = None
    for k in np.flatnonzero(holders).tolist():
        senders = order[order != k][:M]
        if senders.size < M:
            continue
        latency = pooled_timing_s(ctx, k, senders)[-1]
        if np.isfinite(latency) and (best is None or latency < best[0]):
            best = (latency, k, senders)
    if best is None:
        if heard.size < N:
            gain = " with nonzero channel gain" if ctx.sample_bits > 0 else ""
            raise InfeasibleError(
                f"round {ctx.round_index}: block {ctx.block_name(N)} cannot be placed: "
                f"single-device (pooled data) needs {N} devices (the trainer and {M} "
                f"uploading a mini-batch each), but only {heard.size} of {ctx.num_devices} "
                f"devices are available{gain}"
            )
        raise _muted(ctx, holders, float(ctx.upload_bits.sum()))
    latency, k, senders = best
    plan = _pooled_plan(ctx, k, senders, latency)
    return Allocation(np.full(N, k), plan.bandwidth_hz[0] * (np.arange(ctx.num_devices) == k),
                      latency, plan.diagnostics, mode="grouped", plan=plan)


def _pooled_plan(ctx: RoundContext, k: int, senders: np.ndarray, latency: float) -> RoundPlan:
    """The two-stage plan of :func:`pooled_allocation` (participant 0 is the trainer)."""
    N, M, s = ctx.num_blocks, senders.size, ctx.sample_bits
    _, _, compute, upload, _ = pooled_timing_s(ctx, k, senders)
    extra = ctx.extra_work_s if ctx.extra_work_s.size else ctx.set_extras()[0]
    work = float((ctx.work_s if ctx.work_s.size else ctx.compute_s)[k, -1] + extra[k, :-1].sum())
    flops = float(ctx.block_flops[k, -1]) if ctx.block_flops.size else float("nan")
    if ctx.extra_flops.size:  # the others' weight gradients in the same step
        flops += float(ctx.extra_flops[:-1].sum())
    batch = float("nan") if ctx.workload is None else float(ctx.workload.batch_size)

    def trainer(amount: float) -> np.ndarray:  # the trainer does it, the uploaders do not
        return np.concatenate(([amount], np.zeros(M)))

    blocks = (np.arange(1, N + 1) if ctx.block_numbers is None
              else np.array(ctx.block_numbers, dtype=np.intp))
    return RoundPlan(
        devices=np.concatenate(([k], senders)).astype(np.intp),
        bandwidth_hz=np.concatenate(([ctx.total_bandwidth_hz],
                                     np.full(M, ctx.total_bandwidth_hz / max(M, 1)))),
        stages=(
            (Phase("compute", trainer(work)), Phase("up", np.concatenate(([0.0], np.full(M, s))))),
            (Phase("down", trainer(M * s)), Phase("compute", trainer(M * work)),
             Phase("up", trainer(float(ctx.upload_bits.sum())))),
        ),
        barrier_s=(0.0, ctx.aggregation_s),
        rows=PlanRows(
            participant=np.zeros(N, dtype=np.intp), block=blocks,
            upload_bits=ctx.upload_bits, memory_bytes=np.full(N, ctx.all_blocks_cost()[1]),
            flops=np.full(N, N * flops), samples=np.full(N, N * batch),
            planned_compute_s=np.full(N, compute), planned_upload_s=np.full(N, upload),
        ),
        planned_latency_s=latency,
        estimate_s=latency,
        diagnostics={"data": "pooled", "trainer": ctx.device_names[k],
                     "data_from": [ctx.device_names[j] for j in senders.tolist()]},
    )


@register(
    "offload",
    "computation offloading: devices upload mini-batches, the edge server trains all blocks",
)
class OffloadAllocator(Allocator):
    """Traditional computation offloading, the reference DEFT is compared against.

    ``N`` mini-batches a round, as DEFT consumes: the ``min(N, available)`` available devices
    with the best channels upload them (equal shares of ``B``), one each when ``K ≥ N``;
    with fewer devices than blocks the mini-batches are spread as evenly as possible, the
    better channels taking the extra ones. The server then trains all blocks in one backward
    pass over the pooled mini-batches, taking ``N × (its deepest-block time) /
    server_speed_factor`` (time is linear in the batch). There is no aggregation: the server
    holds the model.

    Attributes:
        server_speed_factor: server speed relative to its hardware class profile.
    """

    places_block_sets: ClassVar[bool] = True  # plans K < N: a device uploads several batches
    server_speed_factor: float = Field(default=10.0, gt=0)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Choose the uploaders and price the server's training."""
        avail = np.flatnonzero(ctx.available)
        N = ctx.num_blocks
        if avail.size == 0:
            raise InfeasibleError(
                f"round {ctx.round_index}: block 1 cannot be placed: 0 of {ctx.num_devices} "
                f"devices available to upload the {N} mini-batches offload needs")
        if ctx.server_compute_s is None:
            raise InfeasibleError(
                f"round {ctx.round_index}: offload needs the server's block costs, but the cost "
                "model does not price the server's hardware class"
            )
        coef = ctx.rates.mean_coef_hz  # ranks the uploaders by channel
        order = avail[np.argsort(-coef[avail], kind="stable")][:N]
        heard = int((coef[order] > 0).sum())
        if ctx.sample_bits > 0 and heard < order.size:
            raise InfeasibleError(
                f"round {ctx.round_index}: block 1 cannot be placed: offload spreads {N} "
                f"mini-batches over the {order.size} best-channel available devices, but only "
                f"{heard} of them have nonzero channel gain")
        # N mini-batches over the uploaders, the better channels taking the extra ones
        uploads = np.repeat(order, N // order.size + (np.arange(order.size) < N % order.size))
        bw = np.zeros(ctx.num_devices)
        bw[order] = ctx.total_bandwidth_hz / order.size
        server_s = N * float(ctx.server_compute_s[-1]) / self.server_speed_factor
        alloc = Allocation(uploads, bw, mode="offload", server_compute_s=server_s)
        return Allocation(
            uploads, bw, ctx.round_latency_s(alloc), mode="offload", server_compute_s=server_s
        )
