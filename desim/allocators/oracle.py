"""``oracle-exact``: the least realised round latency of any fixed-share allocation (a genie bound).

The paper plans a round from one snapshot and fixes the FDMA bandwidth shares for the round;
the engine then realises it under the true, time-varying channel and compute speed. Knowing
that future (``allocator.csi = "oracle"`` hands it over in ``ctx.future``), the best any
allocation with fixed shares can realise is computable exactly:

- a pair ``(k, n)`` computes until its true compute end ``e_{k,n}`` (the speed timeline
  integrated from the round start ``t0``; shares do not change it), then uploads ``D_n`` bits;
- with a share ``B`` it is done by the deadline ``T`` iff ``F(B) = Σ_i Δ_i B log2(1 + a_i/B)
  ≥ D_n`` over the channel pieces ``(Δ_i, a_i)`` of ``[e, T]`` (the engine's own integral);
  ``F`` increases and is concave in ``B`` with supremum ``Σ Δ_i a_i / ln 2``, so the least
  share ``β_{k,n}(T)`` is one root, solved by Newton's method to a relative ``1e-12``;
- ``T`` is feasible iff the min-sum assignment of ``β(T)`` (one block per device, eligible
  pairs only) fits in ``B``; ``β`` only falls as ``T`` grows, so feasibility is monotone and
  bisection on ``T`` brackets the optimum ``T*`` to a relative ``tolerance``.

The estimate is the bracket's infeasible end ``lo ≤ T*`` plus aggregation: a true lower bound on
every fixed-share allocation's realised latency (up to the engine's float rounding). The
allocation is the feasible end's assignment with its ``β`` scaled up to the whole band (more
bandwidth only finishes uploads sooner), so it realises within ``[lo, hi]``. Assumption: the
round has no faults and no straggler deadline (they cut the round, no allocation can beat it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from desim.allocators.base import Allocation, Allocator, RoundContext, infeasible
from desim.allocators.crunch import bottleneck_match, pruned_columns
from desim.allocators.registry import register
from desim.errors import InfeasibleError, InputError, ScenarioError
from desim.world.rates import LN2, shannon_gap, shannon_least_bandwidth_hz
from desim.world.signals import Signals

NEEDS_ORACLE = 'oracle-exact needs allocator.csi = "oracle" (the true future channel)'
ROOT_TOLERANCE = 1e-12
"""Relative Newton step at which a least share ``β`` counts as solved (quadratic convergence)."""
MAX_STEPS = 200
MAX_DOUBLINGS = 64


class FutureCompute(Protocol):
    """What ``oracle-exact`` reads of the true compute timelines."""

    def work_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, work_s: np.ndarray
    ) -> np.ndarray:
        """Exact end times of ``work_s`` (seconds at speed 1) started at ``start_s``."""
        ...


class FutureChannel(Protocol):
    """What ``oracle-exact`` reads of the true channel: its piecewise-constant ``a_k(t)``."""

    @property
    def signals(self) -> Signals:
        """``a_k(t) = p_k g_k(t) / N0`` in Hz, one row per device."""
        ...

    def transfer_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, bits: np.ndarray, bandwidth_hz: np.ndarray
    ) -> np.ndarray:
        """Exact end times of uploads of ``bits`` at fixed shares ``bandwidth_hz``."""
        ...


class FutureWorld(Protocol):
    """The true world a round is realised against (the engine's ``World``)."""

    @property
    def compute(self) -> FutureCompute:
        """Compute timelines."""
        ...

    @property
    def channel(self) -> FutureChannel:
        """Uplink channel."""
        ...


def upload_bits_over_pieces(
    dur_s: np.ndarray, values_hz: np.ndarray, bandwidth_hz: np.ndarray
) -> np.ndarray:
    """``F(B) = Σ_i Δ_i B log2(1 + a_i/B)``: bits sent over the pieces at fixed shares ``(m,)``.

    Args:
        dur_s: ``(m, W)`` piece durations ``Δ_i``.
        values_hz: ``(m, W)`` SNR coefficients ``a_i`` of the pieces.
        bandwidth_hz: ``(m,)`` shares ``B > 0``.
    """
    b = bandwidth_hz[:, None]
    return bandwidth_hz * np.einsum("ij,ij->i", dur_s, np.log1p(values_hz / b)) / LN2


def least_share_over_pieces_hz(
    dur_s: np.ndarray, values_hz: np.ndarray, bits: np.ndarray
) -> np.ndarray:
    """Least ``B`` with ``F(B) ≥ D`` (:func:`upload_bits_over_pieces`), per row ``(m,)``.

    ``0`` where ``D = 0``; ``inf`` where ``D`` reaches the supremum ``Σ Δ_i a_i / ln 2``. Newton
    starts from the constant-channel share at the time-averaged ``ā`` (Jensen: ``F`` at ``ā``
    is an upper bound, so that share is a lower bound on the root); on a concave increasing
    ``F`` Newton steps from below rise monotonically to the root, quadratically near it. A start
    above the root (Lambert-W rounding near saturation) steps below it in one step.
    """
    span = dur_s.sum(axis=1)
    energy = np.einsum("ij,ij->i", dur_s, values_hz)  # Σ Δ a, in Hz·s
    beta = np.where(bits > 0, np.inf, 0.0)
    todo = np.flatnonzero((bits > 0) & (bits * LN2 < energy))
    if not todo.size:
        return beta
    dur, val, need = dur_s[todo], values_hz[todo], bits[todo]
    b = shannon_least_bandwidth_hz(energy[todo] / span[todo], need / span[todo])
    # near saturation the Lambert-W start can fail: F(B) ≥ sup − Q/B gives a share above it
    quad = np.einsum("ij,ij->i", dur, val * val) / (2.0 * LN2)
    b = np.where(np.isfinite(b) & (b > 0), b, quad / (energy[todo] / LN2 - need))
    active = np.arange(todo.size)
    for _ in range(MAX_STEPS):
        bb = b[active]
        x = val[active] / bb[:, None]
        f = bb * np.einsum("ij,ij->i", dur[active], np.log1p(x)) / LN2
        slope = np.einsum("ij,ij->i", dur[active], shannon_gap(x)) / LN2
        new = bb + (need[active] - f) / slope
        new = np.where(new > 0, new, 0.5 * bb)
        b[active] = new
        active = active[np.abs(new - bb) > ROOT_TOLERANCE * new]
        if not active.size:
            break
    beta[todo] = b
    return beta


@dataclass(frozen=True, eq=False)
class PairPieces:
    """Every usable pair's channel pieces from its true compute end up to a horizon.

    Attributes:
        device, block: ``(m,)`` the pair's device and 0-based block.
        compute_end_s: ``(m,)`` true compute end ``e`` (absolute seconds).
        bits: ``(m,)`` upload bits ``D_n``.
        full_band_end_s: ``(m,)`` upload end with the whole band (a pair cannot beat it).
        dur_s, values_hz: ``(m, W)`` pieces of ``[e, horizon]``.
        before_s: ``(m, W)`` seconds from ``e`` to each piece's start.
    """

    device: np.ndarray
    block: np.ndarray
    compute_end_s: np.ndarray
    bits: np.ndarray
    full_band_end_s: np.ndarray
    dur_s: np.ndarray
    values_hz: np.ndarray
    before_s: np.ndarray

    @classmethod
    def up_to(cls, signals: Signals, device: np.ndarray, block: np.ndarray,
              compute_end_s: np.ndarray, bits: np.ndarray, full_band_end_s: np.ndarray,
              horizon_s: float) -> PairPieces:
        """The pieces of the pairs that can finish by ``horizon_s`` with the whole band."""
        keep = full_band_end_s <= horizon_s
        e = compute_end_s[keep]
        dur, values = signals.segments_between(device[keep], e, np.full(e.size, horizon_s))
        return cls(device[keep], block[keep], e, bits[keep], full_band_end_s[keep], dur,
                   values, np.cumsum(dur, axis=1) - dur)

    def least_shares_hz(self, deadline_s: float, shape: tuple[int, int]) -> np.ndarray:
        """``(K, N)`` least shares ``β(T)`` to finish by ``deadline_s`` (``inf``: cannot)."""
        on = self.full_band_end_s <= deadline_s  # the others need more than the whole band
        slack = deadline_s - self.compute_end_s[on, None] - self.before_s[on]
        dur = np.clip(slack, 0.0, self.dur_s[on])
        beta = np.full(shape, np.inf)
        beta[self.device[on], self.block[on]] = least_share_over_pieces_hz(
            dur, self.values_hz[on], self.bits[on]
        )
        return beta


def min_sum_shares(beta: np.ndarray, total_bandwidth_hz: float) -> tuple[float, np.ndarray]:
    """Min-sum assignment of ``β`` ``(K, N)`` (``inf`` forbidden): total and ``(N,)`` devices.

    Each block needs only its ``N`` cheapest devices (any other choice frees one of them to
    swap in), so the matching runs on those columns. The total is ``inf`` with no matching.
    """
    n = beta.shape[1]
    rows = pruned_columns(beta, n)
    sub = beta[rows].T  # (N, M)
    finite = np.isfinite(sub)
    if rows.size < n or not finite.any(axis=1).all():
        return float("inf"), np.full(n, -1, dtype=np.intp)
    big = total_bandwidth_hz * (n + 1) * 1e3  # every finite entry used is at most ~B
    r, c = linear_sum_assignment(np.where(finite, sub, big))
    out = np.empty(n, dtype=np.intp)
    out[r] = rows[c]
    return float(sub[r, c].sum()), out


@register(
    "oracle-exact",
    "genie bound: least realised latency of any fixed-share allocation under the true future "
    "channel (needs allocator.csi = \"oracle\")",
)
class OracleExactAllocator(Allocator):
    """The exact realised-latency bound under ``ctx.future`` (see the module docstring).

    Attributes:
        tolerance: relative width of the final bisection bracket on the round latency.
    """

    tolerance: float = Field(default=1e-10, gt=0, lt=0.1)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Bisect on the upload deadline with exact least shares over the true channel.

        Raises:
            ScenarioError: without ``ctx.future`` (``allocator.csi`` is not ``"oracle"``).
            InfeasibleError: when no assignment can finish the round.
        """
        future = ctx.future
        if future is None:
            raise ScenarioError(NEEDS_ORACLE)
        signals: Signals | None = getattr(future.channel, "signals", None)
        if signals is None or not callable(getattr(signals, "segments_between", None)):
            raise InputError("oracle-exact needs a piecewise-constant channel (its .signals)")
        tau, _, block = bottleneck_match(np.where(ctx.eligible(), 0.0, np.inf))
        if not np.isfinite(tau):
            raise infeasible(ctx, block)
        pairs, lo, hi, incumbent = _bracket(ctx, future, signals)
        t0, steps = ctx.time_s, 0
        bracket = [lo - t0, hi - t0]
        while hi - lo > self.tolerance * (hi - t0) and steps < MAX_STEPS:
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:  # float resolution of the absolute clock
                break
            beta = pairs.least_shares_hz(mid, (ctx.num_devices, ctx.num_blocks))
            total, block_device = min_sum_shares(beta, ctx.total_bandwidth_hz)
            steps += 1
            if total <= ctx.total_bandwidth_hz:
                hi, incumbent = mid, (block_device, beta[block_device, np.arange(ctx.num_blocks)])
            else:
                lo = mid
        agg = ctx.aggregation_s
        diagnostics = {
            "bisection_steps": steps, "bracket_s": [b + agg for b in bracket],
            "lower_bound_s": lo - t0 + agg, "upper_bound_s": hi - t0 + agg,
            "pairs": int(pairs.device.size), "estimate": "lower_bound_s",
        }
        return Allocation(incumbent[0], _whole_band(ctx, *incumbent), lo - t0 + agg, diagnostics)


def _bracket(
    ctx: RoundContext, future: FutureWorld, signals: Signals
) -> tuple[PairPieces, float, float, tuple[np.ndarray, np.ndarray]]:
    """The pairs' pieces, absolute deadlines ``lo ≤ T* ≤ hi`` and a feasible point at ``hi``.

    ``lo``: every block waits at least for its best device with the whole band. ``hi``: the
    bottleneck assignment at equal shares ``B/N`` (realised, so feasible); if some upload never
    finishes at those shares (a held channel that runs dry), the deadline doubles instead.
    """
    K, N, B, t0 = ctx.num_devices, ctx.num_blocks, ctx.total_bandwidth_hz, ctx.time_s
    ks, ns = np.nonzero(ctx.eligible())
    work_s = ctx.work_s if ctx.work_s.size else ctx.compute_s
    e = future.compute.work_end_s(ks, np.full(ks.size, t0), work_s[ks, ns])
    bits = ctx.upload_bits[ns]

    def ends(share_hz: float) -> np.ndarray:
        out = np.full((K, N), np.inf)
        done = np.isfinite(e)
        out[ks[done], ns[done]] = future.channel.transfer_end_s(
            ks[done], e[done], bits[done], np.full(int(done.sum()), share_hz))
        return out

    full = ends(B)
    whole, _, stuck = bottleneck_match(full)
    if not np.isfinite(whole):  # not even with the whole band for every pair
        raise InfeasibleError(
            f"round {ctx.round_index}: too few devices ever finish blocks "
            f"{ctx.blocks_from(max(stuck, 1))}: their compute or, with the whole band, their "
            "upload never ends")
    lo = float(full.min(axis=0).max())
    hi, block_device, _ = bottleneck_match(ends(B / N))
    full_end = full[ks, ns]
    if np.isfinite(hi):
        pieces = PairPieces.up_to(signals, ks, ns, e, bits, full_end, hi)
        return pieces, lo, hi, (block_device, np.full(N, B / N))
    hi = whole
    for _ in range(MAX_DOUBLINGS):
        pieces = PairPieces.up_to(signals, ks, ns, e, bits, full_end, hi)
        beta = pieces.least_shares_hz(hi, (K, N))
        total, block_device = min_sum_shares(beta, B)
        if total <= B:
            return pieces, lo, hi, (block_device, beta[block_device, np.arange(N)])
        hi = t0 + 2.0 * (hi - t0)
    raise InfeasibleError(
        f"round {ctx.round_index}: no assignment finishes its uploads within B = {B:.6g} Hz: "
        "the channel's future holds too few bits")


def _whole_band(ctx: RoundContext, block_device: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``(K,)`` bandwidths: the least shares ``β`` ``(N,)`` scaled up to sum to ``B``."""
    total = float(beta.sum())
    share = beta / total if total > 0 else np.full(beta.size, 1.0 / beta.size)
    bw = np.zeros(ctx.num_devices)
    bw[block_device] = share * ctx.total_bandwidth_hz
    return bw
