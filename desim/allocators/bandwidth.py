"""Bandwidth splits: plain functions from an assignment to per-device bandwidths.

Each split takes the round snapshot and the ``(N,)`` block→device assignment and returns ``(K,)``
bandwidths in Hz summing to at most ``B``; idle devices get 0. Splits:

- ``equal``: ``B/N`` to every active device.
- ``proportional``: ``B·D_n/ΣD`` to the device training block ``n`` (proportional to its bits).
- ``minmax``: the split that minimises the largest planned latency for the fixed assignment
  (:func:`minmax_latency_s`: the root of Σβ(T) = B with least bandwidths β).

:func:`sets_split` and :func:`sets_allocation` split ``B`` for a placement of block *sets*
(``crunch-multi``, where a device may train several blocks).

Rates come from the snapshot's rate model (:attr:`RoundContext.rates`: the Shannon rate of the
round-start SNR unless ``allocator.csi`` says otherwise). ``least_bandwidth_hz`` is the Shannon
kernel, DESIGN §2's exact P2 reference formula
(:func:`desim.world.rates.shannon_least_bandwidth_hz`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from desim.allocators.base import Allocation, Allocator, RoundContext
from desim.errors import UnknownNameError, did_you_mean
from desim.world.rates import RateModel
from desim.world.rates import (  # noqa: F401  (the Shannon kernel, under its old name)
    shannon_least_bandwidth_hz as least_bandwidth_hz,
)

BandwidthSplit = Callable[[RoundContext, np.ndarray], np.ndarray]

ROOT_STEPS = 64


def pair_bandwidth_hz(
    compute_s: np.ndarray,
    bits: np.ndarray,
    rate: RateModel,
    devices: np.ndarray,
    latency_s: np.ndarray | float,
) -> np.ndarray:
    """Least bandwidth for a pair to finish within ``latency_s`` (broadcast arrays).

    Args:
        compute_s: planned compute seconds of each pair.
        bits: upload bits of each pair.
        rate: the planner's rate model.
        devices: device index of each pair.
        latency_s: the target.

    Returns:
        Bandwidths in Hz; ``inf`` where the compute alone reaches the target or the needed
        rate is unreachable.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        slack = latency_s - compute_s
        need = np.where(slack > 0, bits / slack, np.inf)
    need = np.where((bits == 0) & (slack >= 0), 0.0, need)
    return rate.least_bandwidth_hz(need, devices)


def minmax_latency_s(
    compute_s: np.ndarray,
    bits: np.ndarray,
    rate: RateModel,
    devices: np.ndarray,
    total_bandwidth_hz: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal min-max split for ``P`` fixed assignments at once (root of Σβ(T) = B).

    For each row, finds the least ``T`` with ``Σ_n β_n(T) ≤ B`` (Newton steps safeguarded by
    bisection) where ``β_n`` is the least bandwidth for pair ``n`` to finish by ``T``; the
    leftover bandwidth is shared in proportion to ``β`` so no latency rises. ``Σβ(T)`` is
    convex and decreasing for any concave rate (``β`` is the convex inverse of the rate at the
    convex ``D/(T − ĉ)``), so Newton from the infeasible side does not cross the root.

    Args:
        compute_s: ``(P, N)`` planned compute seconds of each assigned pair.
        bits: ``(N,)`` upload bits of each block.
        rate: the planner's rate model.
        devices: ``(P, N)`` device index of each pair.
        total_bandwidth_hz: ``B``.

    Returns:
        ``(P,)`` latencies (``inf`` where infeasible) and ``(P, N)`` bandwidths in Hz.
    """
    c = np.atleast_2d(np.asarray(compute_s, dtype=float))
    k = np.atleast_2d(np.asarray(devices, dtype=np.intp))
    d = np.asarray(bits, dtype=float)[None, :]
    n = c.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.max(c + rate.transfer_floor_s(d, k), axis=1)
        eq_rate = rate.rate_bps(np.full(k.shape, total_bandwidth_hz / n), k)
        hi = np.max(c + np.where(d > 0, d / eq_rate, 0.0), axis=1)
    feasible = np.isfinite(hi)
    lo = np.where(feasible, lo, 0.0)
    hi = np.where(feasible, hi, 1.0)
    t = hi.copy()
    for _ in range(ROOT_STEPS):
        beta = pair_bandwidth_hz(c, d, rate, k, t[:, None])
        excess = beta.sum(axis=1) - total_bandwidth_hz
        fits = excess <= 0
        hi = np.where(fits, np.minimum(hi, t), hi)
        lo = np.where(fits, lo, np.maximum(lo, t))
        if np.all(hi - lo <= 1e-11 * hi):
            break
        # Newton on the convex, decreasing Σβ(T): dβ/dT = −D / ((T − ĉ)² r'(β)); from the
        # infeasible side it approaches the root without crossing, so overshoot a hair
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            dr = rate.slope(beta, k)
            slope = np.where(d > 0, -d / ((t[:, None] - c) ** 2 * dr), 0.0).sum(axis=1)
            step = t - excess / slope + np.where(fits, 0.0, 1e-12 * t)
        ok = np.isfinite(step) & (step > lo) & (step < hi)
        t = np.where(ok, step, 0.5 * (lo + hi))
    beta = pair_bandwidth_hz(c, d, rate, k, hi[:, None])
    total = beta.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, beta / total, 1.0 / n)
    beta = beta + share * np.maximum(total_bandwidth_hz - total, 0.0)
    # Lambert-W rounding can leave Σβ a few ulps above B at the equal-split bracket end
    beta = beta * np.minimum(1.0, total_bandwidth_hz / np.maximum(total, total_bandwidth_hz))
    return np.where(feasible, hi, np.inf), np.where(feasible[:, None], beta, 0.0)


def equal_split(ctx: RoundContext, block_device: np.ndarray) -> np.ndarray:
    """Split ``B`` equally among the devices that train a block."""
    bw = np.zeros(ctx.num_devices)
    bw[block_device] = ctx.total_bandwidth_hz / len(block_device)
    return bw


def proportional_split(ctx: RoundContext, block_device: np.ndarray) -> np.ndarray:
    """Give each active device bandwidth in proportion to the bits of its block."""
    bw = np.zeros(ctx.num_devices)
    bw[block_device] = block_share_hz(ctx, "proportional")
    return bw


def minmax_split(ctx: RoundContext, block_device: np.ndarray) -> np.ndarray:
    """The split minimising the largest planned latency for this assignment."""
    blocks = np.arange(ctx.num_blocks)
    _, beta = minmax_latency_s(
        ctx.compute_s[block_device, blocks][None, :],
        ctx.upload_bits,
        ctx.rates,
        block_device[None, :],
        ctx.total_bandwidth_hz,
    )
    bw = np.zeros(ctx.num_devices)
    bw[block_device] = beta[0]
    return bw


def block_share_hz(ctx: RoundContext, split: str) -> np.ndarray:
    """``(N,)`` bandwidth the device of block ``n`` gets, for splits known before matching.

    ``equal`` gives ``B/N``; ``proportional`` gives ``B·D_n/ΣD``. ``minmax`` depends on the
    assignment, so matching plans with ``equal`` and the split is applied afterwards.
    """
    n = ctx.num_blocks
    if split == "proportional":
        bits = ctx.upload_bits
        total = float(bits.sum())
        if total > 0:
            return ctx.total_bandwidth_hz * bits / total
    return np.full(n, ctx.total_bandwidth_hz / n)


def planned_latency_matrix_s(ctx: RoundContext, split: str) -> np.ndarray:
    """``(K, N)`` P1 latencies at the planned shares of ``split`` (``inf``: ineligible)."""
    share = block_share_hz(ctx, split)
    devices = np.arange(ctx.num_devices)
    if split == "proportional":
        rate = ctx.rates.rate_bps(share[None, :], devices[:, None])
    else:
        rate = ctx.rates.rate_bps(share[:1], devices)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        upload = np.where(ctx.upload_bits[None, :] > 0, ctx.upload_bits[None, :] / rate, 0.0)
    return np.where(ctx.eligible(), ctx.compute_s + upload, np.inf)


SPLITS: dict[str, BandwidthSplit] = {
    "equal": equal_split,
    "minmax": minmax_split,
    "proportional": proportional_split,
}


def bandwidth_split(name: str) -> BandwidthSplit:
    """Look up a bandwidth split by name (error lists the known ones)."""
    try:
        return SPLITS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown bandwidth split {name!r}; known: {', '.join(sorted(SPLITS))}"
                f"{did_you_mean(name, SPLITS)}"
        ) from None


class SplitAllocator(Allocator):
    """An allocator that places blocks itself and delegates bandwidth to a named split."""

    bandwidth: str = "equal"

    @field_validator("bandwidth")
    @classmethod
    def _known_split(cls, name: str) -> str:
        if name not in SPLITS:
            raise ValueError(
                f"unknown bandwidth split {name!r}; known: {', '.join(sorted(SPLITS))}"
                f"{did_you_mean(name, SPLITS)}"
            )
        return name


def sets_split(ctx: RoundContext, block_device: np.ndarray, split: str) -> np.ndarray:
    """``(K,)`` bandwidths of a block-set placement under ``split``.

    ``equal`` among the devices used, ``proportional`` to each device's bits, or the optimal
    ``minmax`` split of the placement (each device's composed compute and summed bits).
    """
    devices = np.unique(block_device)
    bw = np.zeros(ctx.num_devices)
    B = ctx.total_bandwidth_hz
    bits = np.bincount(block_device, weights=ctx.upload_bits, minlength=ctx.num_devices)
    if split == "minmax":
        n = np.arange(block_device.size)
        deepest, added = ctx.set_deepest_and_extra(block_device,
                                                   ctx.set_extras()[0][block_device, n])
        compute = ctx.compute_s[devices, deepest[devices]] + added[devices]
        _, beta = minmax_latency_s(compute[None], bits[devices], ctx.rates, devices[None], B)
        bw[devices] = beta[0]
    elif split == "proportional" and bits.sum() > 0:
        bw[devices] = B * bits[devices] / bits.sum()
    else:
        bw[devices] = B / devices.size
    return bw


def sets_allocation(ctx: RoundContext, block_device: np.ndarray, split: str,
                    diagnostics: dict[str, Any]) -> Allocation:
    """The allocation of a placement: ``deft`` if one block per device, else ``grouped``."""
    mode: Literal["deft", "grouped"] = (
        "deft" if np.bincount(block_device).max() <= 1 else "grouped")
    bw = sets_split(ctx, block_device, split)
    est = ctx.round_latency_s(Allocation(block_device, bw, mode=mode))
    counts = np.bincount(block_device)
    diag = {**diagnostics, "devices_used": int((counts > 0).sum()),
            "most_blocks_on_a_device": int(counts.max())}
    return Allocation(block_device, bw, est, diag, mode=mode)
