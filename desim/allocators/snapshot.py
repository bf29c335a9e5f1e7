"""The round snapshot an allocator sees (:class:`RoundContext`) and the decision it returns.

Both are frozen data: numpy arrays of shapes ``(K, N)``, ``(K,)`` and ``(N,)`` with units in
their names, and derived quantities as methods. A device that trains a set ``S`` of blocks in
one backward pass (``grouped``) costs its deepest block's compute and memory plus, for every
other block of ``S``, that block's extra (:attr:`RoundContext.extra_compute_s`,
:attr:`RoundContext.extra_memory_bytes`; :mod:`desim.costs.multiblock`), and uploads the sum of
the set's bits.

Notation (DESIGN §2): ``K`` devices, ``N`` blocks; block ``n`` is stored at index ``n - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from desim.plan import RoundPlan
from desim.world.rates import RateModel, ShannonRate


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
        extra_compute_s: ``(K, N)`` planned seconds block ``n`` adds to device ``k``'s set
            when it is not the set's deepest block (scaled by speed like ``compute_s``); empty
            in a hand-made snapshot, which then reads as zeros (:meth:`set_extras`).
        extra_work_s: ``(K, N)`` the same at timeline speed 1 (the engine's, like ``work_s``);
            empty: ``extra_compute_s``.
        extra_memory_bytes: ``(N,)`` bytes block ``n`` then adds to the set's peak; empty:
            zeros.
        extra_flops: ``(N,)`` counted FLOPs block ``n`` then adds to the set's step (its
            weight gradients, :func:`desim.costs.multiblock.extra_flops`); empty: zeros.
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
    extra_compute_s: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    extra_work_s: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    extra_memory_bytes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    extra_flops: np.ndarray = field(default_factory=lambda: np.zeros(0))

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
        backward pass, so it computes as long as its deepest block plus the other blocks'
        :attr:`extra_compute_s`, and uploads the sum of their bits. ``offload``: no device
        compute, the device's mini-batches upload (one each unless it is listed several times).
        """
        k = allocation.block_device
        n = np.arange(self.num_blocks)
        if allocation.mode == "offload":
            return np.zeros(self.num_blocks), self.sample_bits * np.bincount(k)[k].astype(float)
        if allocation.mode == "grouped":
            deepest, added = self.set_deepest_and_extra(k, self.set_extras()[0][k, n])
            bits = np.bincount(k, weights=self.upload_bits, minlength=self.num_devices)
            return self.compute_s[k, deepest[k]] + added[k], bits[k]
        return self.compute_s[k, n], self.upload_bits

    def set_extras(self) -> tuple[np.ndarray, np.ndarray]:
        """``(K, N)`` :attr:`extra_compute_s` and ``(N,)`` :attr:`extra_memory_bytes` (empty: 0)."""
        c, m = self.extra_compute_s, self.extra_memory_bytes
        return (c if c.size else np.zeros(self.compute_s.shape),
                m if m.size else np.zeros(self.num_blocks))

    def set_deepest_and_extra(self, block_device: np.ndarray,
                              extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each device's deepest block and the summed ``(N,)`` ``extra`` of its other blocks.

        Args:
            block_device: ``(N,)`` device of each block (several blocks may share one).
            extra: ``(N,)`` what each block adds when it is not its device's deepest.

        Returns:
            ``(K,)`` 0-based deepest block of every device (0 for idle ones) and ``(K,)`` sums.
        """
        n = np.arange(block_device.size)
        deepest = np.zeros(self.num_devices, dtype=np.intp)
        np.maximum.at(deepest, block_device, n)
        others = np.where(n == deepest[block_device], 0.0, extra)
        return deepest, np.bincount(block_device, weights=others, minlength=self.num_devices)

    def set_memory_bytes(self, allocation: Allocation) -> np.ndarray:
        """``(N,)`` peak bytes of each block's device: its deepest block's plus the others' extra.

        ``deft`` (and ``offload``, which holds no model): each block's own ``m_n``.
        """
        if allocation.mode != "grouped":
            return self.memory_bytes
        k = allocation.block_device
        deepest, added = self.set_deepest_and_extra(k, self.set_extras()[1])
        return (self.memory_bytes[deepest] + added)[k]

    def all_blocks_cost(self) -> tuple[np.ndarray, float]:
        """``(K,)`` planned seconds and the bytes of one device training every block in one pass."""
        extra_s, extra_bytes = self.set_extras()
        return (self.compute_s[:, -1] + extra_s[:, :-1].sum(axis=1),
                float(self.memory_bytes[-1] + extra_bytes[:-1].sum()))


@dataclass(frozen=True, eq=False)
class Allocation:
    """An allocator's decision for one round.

    ``mode`` says how the blocks are executed:

    - ``deft`` (DESIGN §2): one block per device; the device computes it, then uploads its
      gradient. Every DEFT allocator returns this, and the engine checks it strictly.
    - ``grouped``: a device may train several blocks in one backward pass (``single-device``,
      ``crunch-multi``): it computes as long as its deepest block plus the others' extra
      compute, needs the deepest block's memory plus the others' extra bytes, and uploads
      the sum of its blocks' bits.
    - ``offload``: ``block_device`` lists the device that uploads each of the ``N``
      mini-batches (``sample_bits`` each; a device listed ``c`` times uploads ``c`` of them,
      as with fewer devices than blocks); after the last upload the edge server trains every
      block for ``server_compute_s`` (``offload``, traditional computation offloading).

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

