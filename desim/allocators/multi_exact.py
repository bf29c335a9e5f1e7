"""Exact references for P1 with block sets: the general MILP and the brute force.

P1 with block sets (``crunch-multi``, :mod:`desim.allocators.crunch_multi`): every block goes to
exactly one device, a device trains any set ``S`` of blocks in one backward pass, and the
bottleneck ``max_k [c_k(S_k) + D(S_k)/r_k]`` is minimised at given bandwidth, where (with
``d = max S``) ``c_k(S) = ĉ_{k,d} + Σ_{n∈S, n≠d} e_{k,n}``, the set needs
``m_d + Σ_{n∈S, n≠d} x_n ≤ M_k`` bytes and uploads ``D(S) = Σ_{n∈S} D_n`` bits.

- :func:`solve_sets_milp`: the problem as a MILP with no structure assumed (non-uniform blocks,
  non-monotone costs): binaries ``z_{k,n}`` (block ``n`` on ``k``) and ``δ_{k,n}`` (``n`` is
  ``k``'s deepest block) with ``δ ≤ z``, ``Σ_n δ_{k,n} ≤ 1`` and
  ``z_{k,n} ≤ Σ_{n' ≥ n} δ_{k,n'}`` (one deepest block, at or below every block of the set),
  so compute ``Σ_n δ (ĉ − e) + Σ_n z e``, memory ``Σ_n δ (m − x) + Σ_n z x`` and upload
  ``Σ_n z D_n / r_k`` are linear at a fixed rate per device; with uniform bits an upload that
  depends on the count (``proportional`` shares) is priced by one-hot counts ``y_{k,m}``.
- :func:`brute_force_sets`: every map of blocks to devices (``K^N``), priced by the set costs
  directly; tiny instances only (a test oracle).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from desim.allocators.base import RoundContext
from desim.allocators.ranges import undominated
from desim.errors import InputError


def solve_sets_milp(
    ctx: RoundContext, upload: np.ndarray, time_limit_s: float,
    bounds_s: tuple[float, float] = (0.0, np.inf), max_devices: int | None = None,
) -> tuple[np.ndarray, float] | None:
    """The exact P1-with-sets optimum by MILP.

    Args:
        ctx: the snapshot.
        upload: ``(K,)`` planned upload rate of every device in bit/s (upload ``D(S)/r_k``),
            or ``(K, N)`` seconds for device ``k`` to upload ``m`` blocks at ``[k, m - 1]``
            (uniform bits; count binaries ``y_{k,m}`` then price it).
        time_limit_s: HiGHS time limit.
        bounds_s: known bounds on the optimum (with non-negative extras): blocks that cannot
            be a set's deepest within the upper one are left out as such, and both bound the
            bottleneck variable.
        max_devices: use at most this many devices (``None``: any number).

    Returns:
        ``(N,)`` device per block and the optimal bottleneck (no aggregation), or ``None``
        when no placement exists (within the upper bound).

    Raises:
        InputError: HiGHS stopped before proving optimality (``time_limit_s``).
    """
    K, N = ctx.num_devices, ctx.num_blocks
    extra_s, extra_b = ctx.set_extras()
    usable = ctx.available & np.isfinite(ctx.compute_s).all(axis=1)
    by_count = upload.ndim == 2
    with np.errstate(divide="ignore", invalid="ignore"):
        up = (np.broadcast_to(upload[:, :1], (K, N)) if by_count else
              np.where(ctx.upload_bits > 0, ctx.upload_bits / upload[:, None], 0.0))
        alone = ctx.compute_s + up  # a set deepest at n costs at least this (extras ≥ 0)
    usable = _undominated_devices(ctx, usable, extra_s, upload if by_count else up,
                                  N if max_devices is None else min(N, max_devices))
    z_ok = usable[:, None] & np.isfinite(up)
    d_ok = z_ok & (ctx.memory_bytes[None, :] <= ctx.memory_budget_bytes[:, None])
    d_ok &= alone <= bounds_s[1]
    # block n joins a set deepest at some d ≥ n
    z_ok &= np.flip(np.logical_or.accumulate(np.flip(d_ok, axis=1), axis=1), axis=1)
    if not d_ok[:, -1].any() or not z_ok.any(axis=0).all():
        return None
    kz, nz = np.nonzero(z_ok)
    kd, nd = np.nonzero(d_ok)
    ky, my = np.nonzero(_counts_within(ctx, upload, extra_s, extra_b, bounds_s[1]) if by_count
                        else np.zeros((K, N), dtype=bool))
    nzv, ndv, nyv = kz.size, kd.size, ky.size
    zc, dc, yc, tau = np.arange(nzv), nzv + np.arange(ndv), nzv + ndv + np.arange(nyv), \
        nzv + ndv + nyv
    iz = -np.ones((K, N), dtype=np.intp)
    iz[kz, nz] = zc
    m = _Rows()
    m.add(nz, zc, 1.0, N, 1.0, 1.0)  # every block exactly once
    m.add(np.r_[np.arange(ndv), np.arange(ndv)], np.r_[dc, iz[kd, nd]],  # δ ≤ z
          np.r_[np.ones(ndv), -np.ones(ndv)], ndv, -np.inf, 0.0)
    m.add(kd, dc, 1.0, K, -np.inf, 1.0)  # one deepest block per device
    if max_devices is not None:  # a used device has exactly one deepest block
        m.add(np.zeros(ndv, dtype=np.intp), dc, 1.0, 1, -np.inf, float(max_devices))
    # z_{k,n} − Σ_{n' ≥ n} δ_{k,n'} ≤ 0: pairs (z at n, δ at n' ≥ n) of the same device
    zi, di = np.nonzero((kz[:, None] == kd[None, :]) & (nd[None, :] >= nz[:, None]))
    m.add(np.r_[np.arange(nzv), zi], np.r_[zc, dc[di]],
          np.r_[np.ones(nzv), -np.ones(zi.size)], nzv, -np.inf, 0.0)
    cz = extra_s[kz, nz] + (0.0 if by_count else up[kz, nz])
    cy = upload[ky, my] if by_count else np.zeros(0)
    m.add(np.r_[kz, kd, ky, np.arange(K)], np.r_[zc, dc, yc, np.full(K, tau)],  # latency ≤ τ
          np.r_[cz, ctx.compute_s[kd, nd] - extra_s[kd, nd], cy, -np.ones(K)], K, -np.inf, 0.0)
    budget = np.maximum(ctx.memory_budget_bytes, 1.0)  # rows in budgets: a tie stays a fit
    m.add(np.r_[kz, kd], np.r_[zc, dc],  # memory ≤ M_k
          np.r_[extra_b[nz] / budget[kz], (ctx.memory_bytes[nd] - extra_b[nd]) / budget[kd]],
          K, -np.inf, ctx.memory_budget_bytes / budget)
    if by_count:  # Σ_m y = Σ_n δ (one count if used) and Σ_m m·y = Σ_n z
        m.add(np.r_[ky, kd], np.r_[yc, dc], np.r_[np.ones(nyv), -np.ones(ndv)], K, 0.0, 0.0)
        m.add(np.r_[ky, kz], np.r_[yc, zc], np.r_[my + 1.0, -np.ones(nzv)], K, 0.0, 0.0)
    cost = np.zeros(tau + 1)
    cost[tau] = 1.0
    res = milp(cost, constraints=m.constraint(tau + 1),
               integrality=np.r_[np.ones(tau), 0.0],
               bounds=Bounds(np.r_[np.zeros(tau), bounds_s[0]], np.r_[np.ones(tau), bounds_s[1]]),
               options={"time_limit": time_limit_s, "mip_rel_gap": 0.0})
    if res.status == 2:  # infeasible
        return None
    if res.status != 0 or res.x is None:
        raise InputError(f"crunch-multi: HiGHS did not prove optimality ({res.message})")
    chosen = res.x[:nzv] > 0.5
    out = np.empty(N, dtype=np.intp)
    out[nz[chosen]] = kz[chosen]
    return out, float(res.x[tau])


def _counts_within(ctx: RoundContext, upload: np.ndarray, extra_s: np.ndarray,
                   extra_b: np.ndarray, top: float) -> np.ndarray:
    """``(K, N)`` counts a device may take within ``top`` seconds (``m`` blocks at ``[k, m-1]``).

    A set of ``m`` blocks is deepest at some ``d ≥ m`` and carries ``m − 1`` passengers' extras
    (blocks below ``N``) of at least the device's least, so its latency is at least
    ``min_{d ≥ m} ĉ_{k,d} + (m − 1)·min e_k + upload(m)`` and its memory at least
    ``min_{d ≥ m} m_d + (m − 1)·min x``: a count past either can be left out (extras ≥ 0).
    """
    N = ctx.num_blocks
    more = np.arange(N)  # m - 1
    with np.errstate(invalid="ignore"):
        compute = np.flip(np.fmin.accumulate(np.flip(ctx.compute_s, axis=1), axis=1), axis=1)
        memory = np.flip(np.minimum.accumulate(np.flip(ctx.memory_bytes)))
        e = np.fmin.reduce(extra_s[:, :-1], axis=1) if N > 1 else np.zeros(ctx.num_devices)
        least = compute + more * e[:, None] + upload
    x = float(np.min(extra_b[:-1])) if N > 1 else 0.0
    fits = memory + more * x <= ctx.memory_budget_bytes[:, None]
    return np.isfinite(upload) & fits & ~(least > top)


def _undominated_devices(ctx: RoundContext, usable: np.ndarray, extra_s: np.ndarray,
                         upload: np.ndarray, limit: int) -> np.ndarray:
    """``usable`` less the devices some optimum with at most ``limit`` devices never needs.

    ``a`` dominates ``b`` when it is no slower on every block's compute and extra, no slower
    to upload (``upload``: seconds by block or by set size) and has no less memory: ``a`` can
    then take any set of ``b``'s at no more cost (:func:`~desim.allocators.ranges.undominated`).
    """
    with np.errstate(invalid="ignore"):
        merit = np.nan_to_num(-np.hstack([ctx.compute_s, extra_s, upload,
                                          -ctx.memory_budget_bytes[:, None]]),
                              nan=-np.inf, posinf=np.inf, neginf=-np.inf)
    keep = np.zeros_like(usable)
    keep[undominated(merit, np.flatnonzero(usable), limit)] = True
    return keep


class _Rows:
    """Sparse constraint rows ``lo ≤ A x ≤ hi``, added in blocks."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.count = 0

    def add(self, row: np.ndarray, col: np.ndarray, val: float | np.ndarray, count: int,
            low: float | np.ndarray, high: float | np.ndarray) -> None:
        """Add ``count`` rows; entry ``i`` is ``val[i]`` at (``row[i]``, ``col[i]``)."""
        self.rows.append(np.asarray(row) + self.count)
        self.cols.append(np.asarray(col))
        self.vals.append(np.broadcast_to(np.asarray(val, dtype=float), np.shape(row)))
        self.lo.append(np.broadcast_to(np.asarray(low, dtype=float), (count,)))
        self.hi.append(np.broadcast_to(np.asarray(high, dtype=float), (count,)))
        self.count += count

    def constraint(self, columns: int) -> LinearConstraint:
        """The rows as one constraint on ``columns`` variables."""
        a = coo_matrix((np.concatenate(self.vals),
                        (np.concatenate(self.rows), np.concatenate(self.cols))),
                       shape=(self.count, columns)).tocsr()
        return LinearConstraint(a, np.concatenate(self.lo), np.concatenate(self.hi))


def brute_force_sets(
    ctx: RoundContext, upload_s: Callable[[int, float, int], float], max_maps: int = 300_000
) -> tuple[float, np.ndarray | None]:
    """Every block→device map (``K^N``), priced with the set costs directly (a test oracle).

    Args:
        ctx: the snapshot.
        upload_s: seconds for device ``k`` to upload ``D(S)`` bits when the placement uses
            ``used`` devices, as ``upload_s(k, bits, used)``.
        max_maps: refuse larger instances.

    Returns:
        The optimal bottleneck (no aggregation; ``inf``: no placement) and one optimal map.

    Raises:
        InputError: more than ``max_maps`` maps.
    """
    K, N = ctx.num_devices, ctx.num_blocks
    if K**N > max_maps:
        raise InputError(f"brute force: {K}^{N} maps, more than {max_maps:,}")
    extra_s, extra_b = ctx.set_extras()
    best, arg = np.inf, None
    for bd in itertools.product(range(K), repeat=N):
        worst, used = 0.0, len(set(bd))
        for k in set(bd):
            s = [n for n in range(N) if bd[n] == k]
            d, others = s[-1], s[:-1]
            mem = ctx.memory_bytes[d] + extra_b[others].sum()
            if not (ctx.available[k] and np.isfinite(ctx.compute_s[k, d])
                    and mem <= ctx.memory_budget_bytes[k]):
                worst = np.inf
                break
            compute = ctx.compute_s[k, d] + extra_s[k, others].sum()
            worst = max(worst, compute + upload_s(k, float(ctx.upload_bits[s].sum()), used))
        if worst < best:
            best, arg = worst, np.array(bd, dtype=np.intp)
    return best, arg
