"""Exact reference optima: ``milp`` (P1), ``jbba-exact`` (P2) and ``brute-force`` (tiny P1/P2).

- ``milp``: P1 as a mixed-integer programme solved by HiGHS (``scipy.optimize.milp``): binary
  ``x_{k,n}`` on eligible pairs and a continuous bottleneck ``τ``; minimise ``τ`` subject to
  ``Σ_k x_{k,n} = 1``, ``Σ_n x_{k,n} ≤ 1`` and ``Σ_k t_{k,n} x_{k,n} ≤ τ``.
- ``jbba-exact``: DESIGN §2's exact P2 reference. For a target ``T`` the least bandwidth of every
  pair is ``β_{k,n}(T)`` (Lambert W for the Shannon rate, a bracketed root for another rate
  model); ``T`` is feasible iff the min-sum assignment of ``β`` is at most ``B``, which is
  monotone in ``T``, so bisection finds the optimum to a tolerance.

All of them plan under the snapshot's rate model (:attr:`RoundContext.rates`).
- ``brute-force``: every injective block→device map, each priced with a bandwidth split
  (``minmax`` makes it the P2 optimum); refuses instances with too many maps.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from pydantic import Field
from scipy.optimize import Bounds, LinearConstraint, linear_sum_assignment, milp
from scipy.sparse import coo_matrix

from desim.allocators.bandwidth import (
    SplitAllocator,
    minmax_latency_s,
    pair_bandwidth_hz,
    planned_latency_matrix_s,
)
from desim.allocators.base import Allocation, Allocator, RoundContext, infeasible
from desim.allocators.crunch import (
    bottleneck_match,
    crunch_threshold,
    is_monotone,
    pruned_columns,
    solve_p1,
    split_allocation,
)
from desim.allocators.registry import register
from desim.errors import InputError


@register("milp", "exact P1 as a mixed-integer programme (scipy.optimize.milp, HiGHS)")
class MilpAllocator(SplitAllocator):
    """P1 by MILP over all eligible pairs (no pruning: it is the reference).

    Attributes:
        bandwidth: split (as for ``crunch``).
        time_limit_s: HiGHS time limit; hitting it is an error, not a silent incumbent.
    """

    time_limit_s: float = Field(default=60.0, gt=0)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Solve the MILP, then split bandwidth."""
        t = planned_latency_matrix_s(ctx, self.bandwidth)
        tau, _, block = bottleneck_match(t)  # only to name the block when infeasible
        if not np.isfinite(tau):
            raise infeasible(ctx, block)
        block_device, value = solve_bottleneck_milp(t, self.time_limit_s)
        return split_allocation(ctx, block_device, self.bandwidth, {"milp_threshold_s": value})


def solve_bottleneck_milp(t: np.ndarray, time_limit_s: float) -> tuple[np.ndarray, float]:
    """Bottleneck assignment of ``t`` ``(K, N)`` (``inf`` = forbidden) by MILP.

    Returns:
        ``(N,)`` device per block and the optimal bottleneck.
    """
    K, N = t.shape
    ks, ns = np.nonzero(np.isfinite(t))
    m = ks.size
    tau = m  # index of the bottleneck variable
    cols = np.arange(m)
    rows = np.concatenate([ns, N + ks, N + K + ns, N + K + np.arange(N)])
    vals = np.concatenate([np.ones(m), np.ones(m), t[ks, ns], -np.ones(N)])
    cidx = np.concatenate([cols, cols, cols, np.full(N, tau)])
    a = coo_matrix((vals, (rows, cidx)), shape=(N + K + N, m + 1)).tocsr()
    lb = np.concatenate([np.ones(N), np.zeros(K), np.full(N, -np.inf)])
    ub = np.concatenate([np.ones(N), np.ones(K), np.zeros(N)])
    cost = np.zeros(m + 1)
    cost[tau] = 1.0
    res = milp(
        cost,
        constraints=LinearConstraint(a, lb, ub),
        integrality=np.concatenate([np.ones(m), [0]]),
        bounds=Bounds(np.zeros(m + 1), np.concatenate([np.ones(m), [np.inf]])),
        options={"time_limit": time_limit_s},
    )
    if res.status != 0 or res.x is None:
        raise InputError(f"milp: HiGHS did not prove optimality ({res.message})")
    chosen = res.x[:m] > 0.5
    out = np.empty(N, dtype=np.intp)
    out[ns[chosen]] = ks[chosen]
    return out, float(np.max(t[out, np.arange(N)]))


def full_band_latency_s(ctx: RoundContext) -> np.ndarray:
    """``(K, N)`` latency of each eligible pair given the whole band ``B`` (a lower bound)."""
    rate = ctx.rates.rate_bps(np.full(ctx.num_devices, ctx.total_bandwidth_hz),
                              np.arange(ctx.num_devices))
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(ctx.upload_bits[None, :] > 0, ctx.upload_bits[None, :] / rate[:, None], 0.0)
    return np.where(ctx.eligible(), ctx.compute_s + up, np.inf)


def p2_bounds(ctx: RoundContext) -> tuple[float, float, np.ndarray]:
    """Lower and upper bounds on the P2 optimum and a feasible assignment at the upper one.

    Lower: P1 with every device holding the whole band. Upper: CRUNCH at equal shares, then the
    optimal split for that assignment.

    Raises:
        InfeasibleError: naming the block that cannot be placed.
    """
    t_full = full_band_latency_s(ctx)
    if is_monotone(t_full):
        lo, block = crunch_threshold(t_full)
    else:
        lo, _, block = bottleneck_match(t_full)
    if not np.isfinite(lo):
        raise infeasible(ctx, block)
    block_device, _, _ = solve_p1(ctx, planned_latency_matrix_s(ctx, "equal"), "crunch", False)
    hi, _ = assignment_minmax(ctx, block_device)
    return lo, hi, block_device


def least_total_bandwidth(
    ctx: RoundContext, devices: np.ndarray, latency_s: float
) -> tuple[float, np.ndarray]:
    """Min-sum assignment of least bandwidths ``β_{k,n}(T)`` over candidate ``devices``.

    Returns:
        The least total bandwidth (``inf`` if some block cannot meet ``T``) and ``(N,)`` device
        per block.
    """
    beta = pair_bandwidth_hz(
        ctx.compute_s[devices],
        ctx.upload_bits[None, :],
        ctx.rates,
        devices[:, None],
        latency_s,
    )
    beta = np.where(ctx.eligible()[devices], beta, np.inf)
    sub = beta.T  # (N, M)
    finite = np.isfinite(sub)
    n = sub.shape[0]
    if not finite.any(axis=1).all() or finite.any(axis=0).sum() < n:
        return float("inf"), np.full(n, -1, dtype=np.intp)
    big = ctx.total_bandwidth_hz * (n + 1) * 1e3
    r, c = linear_sum_assignment(np.where(finite, sub, big))
    total = float(sub[r, c].sum())
    out = np.empty(n, dtype=np.intp)
    out[r] = devices[c]
    return total, out


@register("jbba-exact", "exact P2 optimum: bisection on T, Lambert-W bandwidths, min-sum matching")
class JbbaExactAllocator(Allocator):
    """DESIGN §2's exact P2 reference, to a relative tolerance.

    Attributes:
        tolerance: relative width of the final bisection bracket on ``T``.
    """

    tolerance: float = Field(default=1e-6, gt=0, lt=0.1)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Bisect on the round latency; split the final assignment optimally."""
        lo, hi, block_device = p2_bounds(ctx)
        # pairs slower than the incumbent even with the whole band can never be used
        t_full = full_band_latency_s(ctx)
        devices = pruned_columns(np.where(t_full <= hi, t_full, np.inf), ctx.num_devices)
        steps = 0
        while hi - lo > self.tolerance * hi:
            mid = 0.5 * (lo + hi)
            total, bd = least_total_bandwidth(ctx, devices, mid)
            steps += 1
            if total <= ctx.total_bandwidth_hz:
                hi, block_device = mid, bd
            else:
                lo = mid
        return optimal_split_allocation(
            ctx, block_device, {"bisection_steps": steps, "lower_bound_s": lo}
        )


def optimal_split_allocation(
    ctx: RoundContext, block_device: np.ndarray, diagnostics: dict[str, object]
) -> Allocation:
    """``block_device`` with the min-max split; the estimate is its planned round latency."""
    latency, beta = assignment_minmax(ctx, block_device)
    bw = np.zeros(ctx.num_devices)
    bw[block_device] = beta
    return Allocation(block_device, bw, latency + ctx.aggregation_s, diagnostics)


def assignment_minmax(ctx: RoundContext, block_device: np.ndarray) -> tuple[float, np.ndarray]:
    """Min-max latency (no aggregation) of a fixed assignment and its ``(N,)`` bandwidths."""
    latency, beta = minmax_latency_s(
        ctx.compute_s[block_device, np.arange(ctx.num_blocks)][None],
        ctx.upload_bits,
        ctx.rates,
        block_device[None],
        ctx.total_bandwidth_hz,
    )
    return float(latency[0]), beta[0]


@register(
    "brute-force",
    "every block→device map priced with the split (minmax: the P2 optimum); tiny instances only",
)
class BruteForceAllocator(SplitAllocator):
    """Exhaustive search over injective block→device maps (a test oracle).

    Attributes:
        bandwidth: split pricing each map; ``minmax`` (the default) gives the P2 optimum,
            ``equal``/``proportional`` the P1 optimum at those shares.
        max_assignments: refuse instances with more maps than this.
    """

    bandwidth: str = "minmax"
    max_assignments: int = Field(default=200_000, ge=1)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Price every map and keep the best."""
        N = ctx.num_blocks
        ok = ctx.eligible()
        devices = np.flatnonzero(ok.any(axis=1))
        count = math.perm(devices.size, N)
        if count > self.max_assignments:
            raise InputError(
                f"brute-force: {devices.size} usable devices and {N} blocks give {count:,} "
                f"assignments, more than allocator.max_assignments = {self.max_assignments:,}"
            )
        perms = np.array(list(itertools.permutations(devices.tolist(), N)), dtype=np.intp)
        perms = perms.reshape(-1, N)
        blocks = np.arange(N)
        perms = perms[ok[perms, blocks].all(axis=1)]
        t = planned_latency_matrix_s(ctx, self.bandwidth)
        if self.bandwidth == "minmax":
            latency, _ = minmax_latency_s(
                ctx.compute_s[perms, blocks], ctx.upload_bits, ctx.rates, perms,
                ctx.total_bandwidth_hz,
            )
        else:
            latency = t[perms, blocks].max(axis=1)
        if not np.isfinite(latency).any():  # no map, or every map needs a device with no uplink
            _, _, block = bottleneck_match(np.where(np.isfinite(t), 0.0, np.inf))
            raise infeasible(ctx, block)
        best = perms[int(np.argmin(latency))]
        return split_allocation(ctx, best, self.bandwidth, {"assignments": int(perms.shape[0])})

