"""Allocator interface: the strategy, the engine's feasibility check and the plan of a decision.

An allocator is a small strategy (STYLE §3): ``allocate(ctx, rng) -> Allocation``. It sees only
an immutable :class:`RoundContext` of numpy arrays and never the engine. :func:`check_allocation`
is the engine's feasibility check, exposed so tests can apply it to any allocator's output;
:func:`plan_of` turns a checked allocation into the round's plan. The snapshot and decision
types live in :mod:`desim.allocators.snapshot` and are re-exported here.

Notation (DESIGN §2): ``K`` devices, ``N`` blocks; block ``n`` is stored at index ``n - 1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from desim.allocators.snapshot import Allocation, RoundContext
from desim.errors import AllocationError, InfeasibleError
from desim.plan import Phase, PlanRows, RoundPlan

__all__ = ["Allocation", "Allocator", "RoundContext", "check_allocation", "infeasible", "plan_of"]

BANDWIDTH_TOLERANCE = 1e-9


class Allocator(BaseModel, ABC):
    """Base of all allocators: frozen, validated parameters and one ``allocate`` method."""

    # strict like the scenario: ``max_iterations = true`` or ``tolerance = "0.01"`` is refused
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)
    registry_name: ClassVar[str] = ""
    #: plans rounds with fewer devices than blocks (devices then train several blocks)
    places_block_sets: ClassVar[bool] = False

    @abstractmethod
    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Decide block placement and bandwidth for one round.

        Raises:
            InfeasibleError: when no allocation satisfies the constraints.
        """


def check_allocation(ctx: RoundContext, alloc: Allocation) -> None:
    """Raise :class:`AllocationError` unless ``alloc`` is feasible for ``ctx``.

    Checks: every block is placed on a valid device, at most one block per device, memory fits,
    the device is available and can compute, bandwidths are non-negative, sum to at most B, and
    are positive for every device with bits to send. ``grouped`` allocations may put several
    blocks on one device, whose set must fit in its memory (the deepest block's bytes plus the
    others' extra, :meth:`RoundContext.set_memory_bytes`); ``offload`` allocations need
    distinct available uploaders with bandwidth, and no memory.
    """
    K, N, r = ctx.num_devices, ctx.num_blocks, ctx.round_index
    bd, bw = alloc.block_device, alloc.bandwidth_hz
    if bd.shape != (N,):
        raise AllocationError(f"round {r}: block_device has shape {bd.shape}, expected ({N},)")
    if bw.shape != (K,):
        raise AllocationError(f"round {r}: bandwidth_hz has shape {bw.shape}, expected ({K},)")
    placed = (bd >= 0) & (bd < K)
    if not placed.all():
        n = int(np.flatnonzero(~placed)[0])
        raise AllocationError(
            f"round {r}: block {ctx.block_name(n + 1)} is not placed (device index {bd[n]})"
        )
    blocks = np.arange(N)
    if alloc.mode == "offload":
        ok = ctx.available[bd] & ((ctx.sample_bits <= 0) | (bw[bd] > 0))
    else:
        ok = (ctx.available[bd] & np.isfinite(ctx.compute_s[bd, blocks])
              & (ctx.set_memory_bytes(alloc) <= ctx.memory_budget_bytes[bd])
              & ((ctx.upload_bits <= 0) | (bw[bd] > 0)))
    shared = alloc.mode == "deft" and np.bincount(bd, minlength=K).max() > 1
    if shared or not ok.all():
        _explain_bad_pairs(ctx, alloc)
    server_s = alloc.server_compute_s
    if alloc.mode == "offload" and not (np.isfinite(server_s) and server_s >= 0):
        raise AllocationError(f"round {r}: server compute time {alloc.server_compute_s} s")
    if (bad_bw := ~np.isfinite(bw) | (bw < 0)).any():
        k = int(np.flatnonzero(bad_bw)[0])
        raise AllocationError(f"round {r}: device {ctx.device_names[k]} has bandwidth {bw[k]} Hz")
    if (total := float(bw.sum())) > ctx.total_bandwidth_hz * (1 + BANDWIDTH_TOLERANCE):
        raise AllocationError(
            f"round {r}: bandwidths sum to {total:.6g} Hz, "
            f"more than B = {ctx.total_bandwidth_hz:.6g} Hz"
        )


def _explain_bad_pairs(ctx: RoundContext, alloc: Allocation) -> None:
    """Raise an :class:`AllocationError` for the first bad (block, device) pair."""
    r, bw = ctx.round_index, alloc.bandwidth_hz
    seen: dict[int, int] = {}
    offload = alloc.mode == "offload"
    memory = ctx.set_memory_bytes(alloc)
    for n, k in enumerate(alloc.block_device.tolist(), start=1):
        name = ctx.device_names[k]
        if k in seen and alloc.mode == "deft":
            raise AllocationError(
                f"round {r}: device {name} got blocks {seen[k]} and {n}; at most one per device"
            )
        seen[k] = n
        if offload:
            if not ctx.available[k]:
                raise AllocationError(f"round {r}: device {name} is unavailable to upload data")
            if ctx.sample_bits > 0 and not bw[k] > 0:
                raise AllocationError(
                    f"round {r}: device {name} uploads a mini-batch with bandwidth {bw[k]} Hz"
                )
            continue
        if not ctx.available[k] or not np.isfinite(ctx.compute_s[k, n - 1]):
            raise AllocationError(
                f"round {r}: device {name} got block {ctx.block_name(n)} but is unavailable"
            )
        if memory[n - 1] > ctx.memory_budget_bytes[k] and alloc.mode == "grouped":
            held = np.flatnonzero(alloc.block_device == k) + 1
            raise AllocationError(
                f"round {r}: device {name} trains blocks "
                f"{', '.join(ctx.block_name(int(b)) for b in held)}, which need "
                f"{memory[n - 1]:.4g} bytes, but has a budget of "
                f"{ctx.memory_budget_bytes[k]:.4g} bytes"
            )
        if memory[n - 1] > ctx.memory_budget_bytes[k]:
            raise AllocationError(
                f"round {r}: block {ctx.block_name(n)} needs {ctx.memory_bytes[n - 1]:.4g} bytes "
                f"but device {name} has a budget of {ctx.memory_budget_bytes[k]:.4g} bytes"
            )
        if ctx.upload_bits[n - 1] > 0 and not bw[k] > 0:
            raise AllocationError(
                f"round {r}: device {name} trains block {ctx.block_name(n)} with bandwidth "
                f"{bw[k]} Hz"
            )


def infeasible(ctx: RoundContext, block: int, *, distinct: bool = True) -> InfeasibleError:
    """An :class:`InfeasibleError` explaining why ``block`` (1-based) cannot be placed.

    Args:
        ctx: the round snapshot.
        block: the 1-based block the allocator failed on.
        distinct: each block needs its own device (DEFT; ``False`` for ``grouped`` plans).
            If fewer devices can train any block than there are blocks, the message then
            gives those counts, the root cause, whichever block the allocator stopped at.
    """
    K, N = ctx.num_devices, ctx.num_blocks
    eligible = ctx.eligible()
    avail = int(ctx.available.sum())
    usable = int(eligible.any(axis=1).sum())
    head = f"round {ctx.round_index}: block {ctx.block_name(block)}"
    if distinct and usable < N:
        why = f"{avail} of {K} devices available for {N} blocks"
        if usable < avail:
            why += f", but only {usable} of them can train a block (memory or compute)"
        return InfeasibleError(f"{head} cannot be placed: {why}; each block needs its own device")
    holders = eligible[:, block - 1]
    muted = int((holders & (ctx.snr_coef_hz <= 0)).sum()) if ctx.upload_bits[block - 1] > 0 else 0
    note = f" ({muted} of them with zero channel gain, so no uplink)" if muted else ""
    return InfeasibleError(
        f"{head} (needs {ctx.memory_bytes[block - 1]:.4g} bytes) cannot be placed: "
        f"{int(holders.sum())} available device(s) can hold it{note}, but blocks "
        f"{ctx.blocks_from(block)} "
        f"need {N - block + 1} distinct devices ({avail} of {K} devices available)"
    )


def plan_of(ctx: RoundContext, alloc: Allocation) -> RoundPlan:
    """The plan of an allocation: one stage of ``[compute, up]``, then the server.

    ``deft``: a participant per block. ``grouped``: a participant per device, computing as long
    as its deepest block plus the other blocks' extra work, holding its set's peak memory
    (:meth:`RoundContext.set_memory_bytes`, the rows' ``memory_bytes``) and uploading the sum
    of its blocks' bits. ``offload``: each device
    uploads a mini-batch, then the server trains for ``server_compute_s``. Rows are per block.
    An allocation carrying its own ``plan`` gets that plan.
    """
    if alloc.plan is not None:
        return alloc.plan
    k, N = alloc.block_device, ctx.num_blocks
    blocks = np.arange(N)
    deft = alloc.mode == "deft"
    compute, bits = (ctx.compute_s[k, blocks], ctx.upload_bits) if deft else ctx.device_work(alloc)
    rate = ctx.rates.rate_bps(alloc.bandwidth_hz[k], k)
    with np.errstate(divide="ignore", invalid="ignore"):
        planned_up = np.where(bits > 0, bits / rate, 0.0)
    work_s = ctx.work_s if ctx.work_s.size else ctx.compute_s
    flops = ctx.block_flops if ctx.block_flops.size else np.full((ctx.num_devices, N), np.nan)
    memory = ctx.set_memory_bytes(alloc)
    if deft:
        devices, row_of, up = k, blocks, ctx.upload_bits
        work, row_flops = work_s[k, blocks], flops[k, blocks]
    else:
        devices, row_of = np.unique(k, return_inverse=True)
        extra_work = ctx.extra_work_s if ctx.extra_work_s.size else ctx.set_extras()[0]
        deepest, added = ctx.set_deepest_and_extra(k, extra_work[k, blocks])
        work = work_s[devices, deepest[devices]] + added[devices]
        up = np.bincount(row_of, weights=ctx.upload_bits, minlength=devices.size)
        # a set's step: its deepest block's, plus the others' weight gradients
        set_flops = flops[devices, deepest[devices]]
        if ctx.extra_flops.size:
            set_flops = set_flops + ctx.set_deepest_and_extra(k, ctx.extra_flops)[1][devices]
        row_flops = set_flops[row_of]
        if alloc.mode == "offload":
            work, up = np.zeros(devices.size), ctx.sample_bits * np.bincount(row_of).astype(float)
            memory, row_flops = np.zeros(N), np.zeros(N)
    est = alloc.estimated_latency_s
    offload = alloc.mode == "offload"
    return RoundPlan(
        devices=devices, bandwidth_hz=alloc.bandwidth_hz[devices],
        stages=((Phase("compute", work), Phase("up", up)),),
        barrier_s=(alloc.server_compute_s if offload else ctx.aggregation_s,),
        rows=PlanRows(
            participant=row_of, block=_block_numbers(ctx), upload_bits=bits, memory_bytes=memory,
            flops=row_flops, samples=np.full(N, _batch_size(ctx)),
            planned_compute_s=compute, planned_upload_s=planned_up, one_per_participant=deft,
        ),
        planned_latency_s=ctx.round_latency_from(compute + planned_up, alloc),
        estimate_s=float("nan") if est is None else float(est),
        server_bound=offload, diagnostics=dict(alloc.diagnostics),
    )


def _block_numbers(ctx: RoundContext) -> np.ndarray:
    numbers = ctx.block_numbers
    return np.arange(1, ctx.num_blocks + 1) if numbers is None else np.array(numbers, np.intp)


def _batch_size(ctx: RoundContext) -> float:
    return float("nan") if ctx.workload is None else float(ctx.workload.batch_size)
