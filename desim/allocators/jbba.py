"""JBBA: joint bandwidth-and-block allocation (P2) by Lagrangian dual ascent.

P2 (DESIGN §2) chooses the block→device map ``x`` and bandwidths ``B_k ≥ 0``, ``Σ B_k ≤ B``, to
minimise ``T = max`` latency. Epigraph form, with the device-involvement indicators
``y_k = Σ_n x_{k,n} ∈ {0, 1}`` (an idle device gets no bandwidth and no latency constraint):

    min T  s.t.  Σ_k x_{k,n} (ĉ_{k,n} + D_n / r_k(B_k)) ≤ T  (multiplier λ_n),  Σ_k B_k ≤ B  (μ).

Each involved device trains exactly one block, so the latency constraint of involved device ``k``
is the constraint of its block; indexing the multipliers by block keeps every multiplier attached
to an involved device. Stationarity in ``T`` gives ``Σ λ_n = 1``, and the dual function splits:

- per pair, the bandwidth subproblem ``φ_{k,n} = min_B λ_n D_n / r_k(B) + μ B``, a convex 1-D
  problem with stationarity condition ``r_k'(B) / r_k(B)² = μ / (λ_n D_n)``, solved by the
  rate model (:meth:`~desim.world.rates.RateModel.dual_bandwidth_hz`): for the Shannon rate by
  Newton's method (in ``log x``) on ``x² (ln(1+x) − x/(1+x)) / ln²(1+x) = μ a_k² / (λ_n D_n
  ln 2)`` with ``x = a_k / B``, for other rates by a bracketed root;
- the assignment subproblem ``min_x Σ x_{k,n} (λ_n ĉ_{k,n} + φ_{k,n})``, solved by the Hungarian
  method (``linear_sum_assignment``) on CRUNCH-pruned pairs: pairs slower than the incumbent even
  with the whole band are cut.

``g(λ, μ) = min_x Σ x (λ ĉ + φ) − μ B`` is a lower bound on the optimum. ``λ`` is updated by a
subgradient step projected onto the simplex, and ``μ`` (as ``ν = μ B / T̄``, so both
subgradients are in seconds) projected onto ``ν ≥ 0``. Every iteration's assignment is made a
primal point by the optimal min-max split; the best is kept.

**Primal improvement (documented addition).** Plain dual ascent stalls short of the optimum on a
few per cent of instances (P2 is a mixed-integer problem, so the dual has a gap). With
``refine = true`` the best point is then improved by a fixed-point step: at the incumbent
latency ``T``, re-match blocks by the min-sum of least bandwidths ``β_{k,n}(T)``; if that needs
less than ``B``, split the new assignment optimally (a lower ``T``) and repeat. It stops at an
assignment that no re-matching can improve, which is the P2 optimum (the ``jbba-exact``
condition); ``refine_steps`` caps it. The trace and ``refine_gain`` report what each part did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from desim.allocators.bandwidth import minmax_latency_s
from desim.allocators.base import Allocation, Allocator, RoundContext
from desim.allocators.exact import (
    full_band_latency_s,
    least_total_bandwidth,
    optimal_split_allocation,
    p2_bounds,
)
from desim.allocators.registry import register
from desim.world.rates import RateModel


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` ``(N,)`` onto ``{λ ≥ 0, Σ λ = 1}``."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, v.size + 1)
    rho = int(np.nonzero(u - css / idx > 0)[0][-1])
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


def kkt_multipliers(
    bits: np.ndarray, rate: RateModel, devices: np.ndarray, bandwidth_hz: np.ndarray
) -> tuple[np.ndarray, float]:
    """Multipliers making a min-max split stationary: ``λ_n D_n r'_n / r_n² = μ``, ``Σλ = 1``.

    Args:
        bits: ``(N,)`` upload bits of each block.
        rate: the planner's rate model.
        devices: ``(N,)`` device of each block.
        bandwidth_hz: ``(N,)`` the split's bandwidths.
    """
    r = rate.rate_bps(bandwidth_hz, devices)
    dr = rate.slope(bandwidth_hz, devices)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(bits > 0, r * r / (bits * dr), 0.0)
    w = np.where(np.isfinite(w), w, 0.0)
    if w.sum() <= 0:
        return np.full(bits.size, 1.0 / bits.size), 1e-12
    return w / w.sum(), 1.0 / w.sum()


@register("jbba", "JBBA: joint block and bandwidth allocation (P2) by Lagrangian dual ascent")
class JbbaAllocator(Allocator):
    """P2 by dual ascent with primal recovery (module docstring has the derivation).

    Attributes:
        step: ``polyak`` (``γ (T̄ − g) / ‖s‖²`` with the incumbent ``T̄``) or ``diminishing``
            (``γ / √(t+1)`` along the normalised subgradient).
        step_size: the factor ``γ``.
        iterations: maximum dual iterations.
        tolerance: stop when the relative duality gap ``(T̄ − g*) / T̄`` is below this.
        refine: run the primal improvement step after the dual ascent.
        refine_steps: maximum improvement steps.
    """

    step: Literal["polyak", "diminishing"] = "polyak"
    step_size: float = Field(default=1.0, gt=0, le=2.0)
    iterations: int = Field(default=60, ge=1, le=100_000)
    tolerance: float = Field(default=1e-3, gt=0, lt=1)
    refine: bool = True
    refine_steps: int = Field(default=20, ge=1)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Dual ascent, then (optionally) the primal improvement step."""
        _, ub, best = p2_bounds(ctx)
        inst = PrunedInstance.build(ctx, ub)
        best_local = np.searchsorted(inst.devices, best)
        ub = inst.primal(best_local)
        bw0 = optimal_split_allocation(ctx, best, {}).bandwidth_hz[best]
        lam, mu = kkt_multipliers(ctx.upload_bits, ctx.rates, best, bw0)
        nu = mu * ctx.total_bandwidth_hz / ub  # the bandwidth price in seconds
        best_dual = -np.inf
        trace: list[tuple[int, float, float]] = []
        for it in range(self.iterations):
            assign, dual, lat, bw = inst.dual_subproblem(lam, nu * ub / ctx.total_bandwidth_hz)
            best_dual = max(best_dual, dual)
            t = inst.primal(assign)
            if t < ub:
                ub, best_local = t, assign
            trace.append((it, dual + ctx.aggregation_s, ub + ctx.aggregation_s))
            if ub - best_dual <= self.tolerance * ub:
                break
            s_lam = np.minimum(lat, 10.0 * ub)
            s_lam = s_lam - s_lam.mean()  # the simplex projection ignores a common shift
            s_nu = ub * (bw.sum() / ctx.total_bandwidth_hz - 1.0)
            norm2 = float(s_lam @ s_lam + s_nu * s_nu)
            if norm2 <= 0:
                break
            if self.step == "polyak":
                alpha = self.step_size * max(ub - dual, 1e-12 * ub) / norm2
            else:
                alpha = self.step_size / np.sqrt(it + 1.0) / np.sqrt(norm2)
            lam = project_simplex(lam + alpha * s_lam)
            nu = max(nu + alpha * s_nu, 1e-12)
        dual_only, steps = ub, 0
        if self.refine:
            best_local, ub, steps = self._refine(ctx, inst, best_local, ub)
        return optimal_split_allocation(
            ctx,
            inst.devices[best_local],
            {
                "iterations": len(trace),
                "dual_bound_s": best_dual + ctx.aggregation_s,
                "dual_ascent_latency_s": dual_only + ctx.aggregation_s,
                "refine_steps": steps,
                "refine_gain": (dual_only - ub) / dual_only if dual_only > 0 else 0.0,
                "trace": tuple(trace),
            },
        )

    def _refine(
        self, ctx: RoundContext, inst: PrunedInstance, assign: np.ndarray, ub: float
    ) -> tuple[np.ndarray, float, int]:
        """Re-match by least total bandwidth at the incumbent latency until no gain.

        Returns:
            The final (local) assignment, its latency and the number of improving steps.
        """
        steps = 0
        while steps < self.refine_steps:
            total, bd = least_total_bandwidth(ctx, inst.devices, ub)
            if not total < ctx.total_bandwidth_hz * (1 - 1e-12):
                break
            cand = np.searchsorted(inst.devices, bd)
            t = inst.primal(cand)
            if not t < ub * (1 - 1e-12):
                break
            assign, ub, steps = cand, t, steps + 1
        return assign, ub, steps


@dataclass(eq=False)
class PrunedInstance:
    """P2 restricted to CRUNCH-pruned pairs, with the dual subproblem and primal recovery.

    Attributes:
        ctx: the round snapshot.
        devices: ``(M,)`` devices with at least one kept pair (sorted).
        allowed: ``(M, N)`` kept pairs: eligible and no slower than the incumbent with the
            whole band.
    """

    ctx: RoundContext
    devices: np.ndarray
    allowed: np.ndarray
    _primal: dict[bytes, float] = field(default_factory=dict)

    @classmethod
    def build(cls, ctx: RoundContext, incumbent_s: float) -> PrunedInstance:
        """Cut every pair slower than ``incumbent_s`` even with the whole band."""
        keep = full_band_latency_s(ctx) <= incumbent_s * (1 + 1e-9)
        devices = np.flatnonzero(keep.any(axis=1))
        return cls(ctx, devices, keep[devices])

    def primal(self, assign: np.ndarray) -> float:
        """Latency of the (local) assignment under its optimal split (memoised)."""
        key = assign.tobytes()
        if key not in self._primal:
            ctx, k = self.ctx, self.devices[assign]
            n = np.arange(ctx.num_blocks)
            lat, _ = minmax_latency_s(
                ctx.compute_s[k, n][None], ctx.upload_bits, ctx.rates, k[None],
                ctx.total_bandwidth_hz,
            )
            self._primal[key] = float(lat[0])
        return self._primal[key]

    def dual_subproblem(
        self, lam: np.ndarray, mu: float
    ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """Solve the Lagrangian's bandwidth and assignment subproblems at ``(λ, μ)``.

        Returns:
            The (local) assignment ``(N,)``, the dual value ``g(λ, μ)`` in seconds, and the
            latency ``(N,)`` and bandwidth ``(N,)`` of each assigned pair.
        """
        ctx = self.ctx
        n = np.arange(ctx.num_blocks)
        c = ctx.compute_s[self.devices]
        k = self.devices[:, None]
        d = ctx.upload_bits[None, :]
        bw = ctx.rates.dual_bandwidth_hz(lam[None, :], mu, d, k)
        with np.errstate(divide="ignore", invalid="ignore"):
            lat = c + np.where(d > 0, d / ctx.rates.rate_bps(bw, k), 0.0)
            lat = np.where(self.allowed, lat, np.inf)
            cost = lam[None, :] * lat + mu * bw
        finite = np.isfinite(cost)
        big = np.where(finite, np.abs(cost), 0.0).sum() + 1.0
        r, k = linear_sum_assignment(np.where(finite, cost, big).T)
        assign = np.empty(ctx.num_blocks, dtype=np.intp)
        assign[r] = k
        dual = float(cost[assign, n].sum()) - mu * ctx.total_bandwidth_hz
        return assign, dual, lat[assign, n], bw[assign, n]
