"""Allocator interface: the round snapshot an allocator sees and the decision it returns.

An allocator is a small strategy (STYLE §3): ``allocate(ctx, rng) -> Allocation``. It sees only
an immutable :class:`RoundContext` of numpy arrays and never the engine. :func:`check_allocation`
is the engine's feasibility check, exposed so tests can apply it to any allocator's output.

Notation (DESIGN §2): ``K`` devices, ``N`` blocks; block ``n`` is stored at index ``n - 1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from desim.errors import AllocationError, InfeasibleError
from desim.plan import Phase, PlanRows, RoundPlan
from desim.world.rates import RateModel, ShannonRate

BANDWIDTH_TOLERANCE = 1e-9


@dataclass(frozen=True, eq=False)
class RoundContext:
    """Snapshot of one round at its start time, as the allocator plans with it.

    Attributes:
        round_index: 0-based round number.
        time_s: round start time.
        device_names: ``(K,)`` names.
        compute_s: ``(K, N)`` planned compute seconds ``ĉ = w_n(h_k) / (σ_k ρ_k(t0))``; ``inf``
            where a device cannot compute (unavailable or zero speed).
        memory_bytes: ``(N,)`` peak memory of training each block (m_n).
        memory_budget_bytes: ``(K,)`` device memory budgets (M_k).
        upload_bits: ``(N,)`` gradient bits of each block (D_n).
        snr_coef_hz: ``(K,)`` ``p_k g_k(t0) / N0`` in Hz.
        available: ``(K,)`` whether each device may take a block this round.
        total_bandwidth_hz: total uplink bandwidth B.
        aggregation_s: server aggregation time added to every round.
        sample_bits: bits of one device's mini-batch (token ids), uploaded when offloading.
        server_compute_s: ``(N,)`` seconds for the edge server to train down to block ``n`` on
            one mini-batch at speed factor 1 on its hardware class; ``None`` if not priced.
        block_numbers: the round's own 1-based numbers of these blocks; ``None``: ``1..N``. A
            re-plan of lost blocks asks about a subset, and its messages name the real blocks.
        work_s: ``(K, N)`` seconds at timeline speed 1 to train down to block ``n`` (the
            engine's; schemes plan with it); empty in a hand-made snapshot.
        speed: ``(K,)`` timeline speed at ``time_s``.
        block_flops: ``(K, N)`` counted FLOPs of training down to block ``n`` on device ``k``'s
            hardware class.
        workload: the run's :class:`~desim.costs.base.Workload` (schemes need its shapes).
        csi: what the planner knows of the channel (``allocator.csi``): ``snapshot`` (the
            round-start SNR), ``large-scale``, ``ergodic``, ``predicted`` or ``oracle``.
        rate: the planner's rate model under ``csi`` (``None``: the Shannon rate of
            ``snr_coef_hz``, the snapshot); see :mod:`desim.world.rates`.
        future: under ``csi = "oracle"``, the true world from ``time_s`` on (compute timelines
            and channel), for genie bounds such as ``oracle-exact``; ``None`` otherwise.
    """

    round_index: int
    time_s: float
    device_names: tuple[str, ...]
    compute_s: np.ndarray
    memory_bytes: np.ndarray
    memory_budget_bytes: np.ndarray
    upload_bits: np.ndarray
    snr_coef_hz: np.ndarray
    available: np.ndarray
    total_bandwidth_hz: float
    aggregation_s: float = 0.0
    sample_bits: float = 0.0
    server_compute_s: np.ndarray | None = None
    block_numbers: tuple[int, ...] | None = None
    work_s: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    speed: np.ndarray = field(default_factory=lambda: np.zeros(0))
    block_flops: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    workload: Any = None
    csi: str = "snapshot"
    rate: Any = None
    future: Any = None

    @cached_property
    def rates(self) -> RateModel:
        """The rate model planners use: :attr:`rate`, else the Shannon rate of ``snr_coef_hz``."""
        return self.rate if self.rate is not None else ShannonRate(self.snr_coef_hz)

    @property
    def server_step_s(self) -> float | None:
        """Seconds for the server to run one full training step (``None``: not priced)."""
        return None if self.server_compute_s is None else float(self.server_compute_s[-1])

    @property
    def num_devices(self) -> int:
        """``K``."""
        return int(self.compute_s.shape[0])

    @property
    def num_blocks(self) -> int:
        """``N``."""
        return int(self.compute_s.shape[1])

    def block_name(self, n: int) -> str:
        """The round's own number of this snapshot's block ``n`` (1-based), for messages."""
        return str(n if self.block_numbers is None else self.block_numbers[n - 1])

    def blocks_from(self, n: int) -> str:
        """Blocks ``n..N`` of this snapshot in the round's own numbers (``9...12``, or a list)."""
        if self.block_numbers is None:
            return f"{n}...{self.num_blocks}"
        return ", ".join(str(b) for b in self.block_numbers[n - 1 :])

    def eligible(self) -> np.ndarray:
        """``(K, N)`` mask: the device is available, can compute, and the block fits in memory."""
        fits = self.memory_bytes[None, :] <= self.memory_budget_bytes[:, None]
        return fits & self.available[:, None] & np.isfinite(self.compute_s)

    def upload_s(self, bandwidth_hz: np.ndarray) -> np.ndarray:
        """``(K, N)`` planned upload seconds ``D_n / r_k(B_k)`` under :attr:`rates`."""
        rate = self.rates.rate_bps(bandwidth_hz, np.arange(self.num_devices))
        with np.errstate(divide="ignore"):
            return self.upload_bits[None, :] / rate[:, None]

    def latency_matrix_s(self, bandwidth_hz: np.ndarray) -> np.ndarray:
        """``(K, N)`` planned ``t_{k,n} = ĉ_{k,n} + D_n / r_k(B_k)``; ``inf`` where ineligible."""
        t = self.compute_s + self.upload_s(bandwidth_hz)
        return np.where(self.eligible(), t, np.inf)

    def round_latency_s(self, allocation: Allocation) -> float:
        """Planned round latency of an allocation.

        ``deft`` and ``grouped``: the slowest block plus aggregation. ``offload``: the last
        mini-batch upload plus the server's training time (the server holds the model, so
        there is no aggregation).
        """
        if allocation.plan is not None:  # an allocation that plans itself
            return allocation.plan.planned_latency_s
        return self.round_latency_from(self.pair_latency_s(allocation), allocation)

    def round_latency_from(self, pair_latency_s: np.ndarray, allocation: Allocation) -> float:
        """:meth:`round_latency_s` from the ``(N,)`` pair latencies already computed."""
        offload = allocation.mode == "offload"
        return float(pair_latency_s.max()) + (
            allocation.server_compute_s if offload else self.aggregation_s)

    def pair_latency_s(self, allocation: Allocation) -> np.ndarray:
        """``(N,)`` planned latency of each block's device (compute, then upload)."""
        k = allocation.block_device
        rate = self.rates.rate_bps(allocation.bandwidth_hz[k], k)
        compute, bits = self.device_work(allocation)
        with np.errstate(divide="ignore", invalid="ignore"):
            return compute + np.where(bits > 0, bits / rate, 0.0)

    def device_work(self, allocation: Allocation) -> tuple[np.ndarray, np.ndarray]:
        """``(N,)`` planned compute seconds and upload bits of each block's device.

        ``deft``: the block's own cost. ``grouped``: a device trains all its blocks in one
        backward pass, so it computes as long as its deepest block and uploads the sum of their
        bits. ``offload``: no device compute, one mini-batch upload.
        """
        k = allocation.block_device
        n = np.arange(self.num_blocks)
        if allocation.mode == "offload":
            return np.zeros(self.num_blocks), np.full(self.num_blocks, self.sample_bits)
        if allocation.mode == "grouped":
            deepest = np.zeros(self.num_devices, dtype=np.intp)
            np.maximum.at(deepest, k, n)
            bits = np.bincount(k, weights=self.upload_bits, minlength=self.num_devices)
            return self.compute_s[k, deepest[k]], bits[k]
        return self.compute_s[k, n], self.upload_bits


@dataclass(frozen=True, eq=False)
class Allocation:
    """An allocator's decision for one round.

    ``mode`` says how the blocks are executed:

    - ``deft`` (DESIGN §2): one block per device; the device computes it, then uploads its
      gradient. Every DEFT allocator returns this, and the engine checks it strictly.
    - ``grouped``: a device may train several blocks in one backward pass (``single-device``):
      it computes as long as its deepest block, needs that block's memory, and uploads the sum
      of its blocks' bits.
    - ``offload``: ``block_device`` lists the (distinct) devices that upload one mini-batch
      (``sample_bits``) each; after the last upload the edge server trains every block for
      ``server_compute_s`` (``offload``, traditional computation offloading).

    Attributes:
        block_device: ``(N,)`` device index of block ``n`` (at index ``n - 1``).
        bandwidth_hz: ``(K,)`` uplink bandwidth of every device (0 for idle devices).
        estimated_latency_s: the allocator's own latency estimate, if it makes one.
        diagnostics: allocator-specific read-only details (iteration traces, fallbacks).
        mode: ``deft``, ``grouped`` or ``offload`` (above).
        server_compute_s: the edge server's training time in ``offload`` mode.
        plan: the allocation's own plan when it is not one ``[compute, up]`` stage (pooled
            ``single-device``, several stages); :func:`plan_of` then returns it as it is.
    """

    block_device: np.ndarray
    bandwidth_hz: np.ndarray
    estimated_latency_s: float | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    mode: Literal["deft", "grouped", "offload"] = "deft"
    server_compute_s: float = 0.0
    plan: RoundPlan | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_device", np.asarray(self.block_device, dtype=np.intp))
        object.__setattr__(self, "bandwidth_hz", np.asarray(self.bandwidth_hz, dtype=float))
        object.__setattr__(self, "diagnostics", MappingProxyType(dict(self.diagnostics)))


class Allocator(BaseModel, ABC):
    """Base of all allocators: frozen, validated parameters and one ``allocate`` method."""

    # strict like the scenario: ``max_iterations = true`` or ``tolerance = "0.01"`` is refused
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)
    registry_name: ClassVar[str] = ""

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
    blocks on one device; ``offload`` allocations need distinct available uploaders with
    bandwidth, and no memory.
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
              & (ctx.memory_bytes <= ctx.memory_budget_bytes[bd])
              & ((ctx.upload_bits <= 0) | (bw[bd] > 0)))
    shared = alloc.mode != "grouped" and np.bincount(bd, minlength=K).max() > 1
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
    for n, k in enumerate(alloc.block_device.tolist(), start=1):
        name = ctx.device_names[k]
        if k in seen and alloc.mode != "grouped":
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
        if ctx.memory_bytes[n - 1] > ctx.memory_budget_bytes[k]:
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
    as its deepest block and uploading the sum of its blocks' bits. ``offload``: each device
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
    memory = ctx.memory_bytes
    if deft:
        devices, row_of, up = k, blocks, ctx.upload_bits
        work, row_flops = work_s[k, blocks], flops[k, blocks]
    else:
        devices, row_of = np.unique(k, return_inverse=True)
        deepest = np.zeros(devices.size, dtype=np.intp)
        np.maximum.at(deepest, row_of, blocks)
        work = work_s[devices, deepest]
        up = np.bincount(row_of, weights=ctx.upload_bits, minlength=devices.size)
        row_flops = flops[devices, deepest][row_of]
        if alloc.mode == "offload":
            work, up = np.zeros(devices.size), np.full(devices.size, ctx.sample_bits)
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
