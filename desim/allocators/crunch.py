"""P1, block allocation at given bandwidth: CRUNCH and the generic bottleneck matching.

P1 (DESIGN §2) minimises ``max t_{k,n}`` over assigned pairs, one block per device, every block
placed, ``m_n ≤ M_k``, device available. ``t`` is the ``(K, N)`` latency matrix with ``inf`` on
ineligible pairs.

- :func:`crunch_threshold` / :func:`crunch_assign`: CRUNCH (Cutting, RecoUNting, CHecking). When
  every row of ``t`` is non-decreasing in ``n`` (with ``inf`` after a memory cut), device ``k``
  can serve exactly blocks ``1..D_k(τ)``, and Hall's condition for nested neighbourhoods gives
  ``τ* = max_j`` (the ``(N−j+1)``-th smallest ``t_{·,j}``) in ``O(KN)``; blocks are then given
  deepest first to the unused device with the smallest ``D_k(τ*) ≥ j``.
- :func:`bottleneck_match`: no monotonicity assumed; binary search on the candidate thresholds
  with a maximum bipartite matching per probe.

With fewer devices than blocks (``K < N``) no one-block-per-device placement exists; both
allocators then place block sets with ``crunch-multi`` (:mod:`desim.allocators.crunch_multi`)
and say so in the diagnostics (``fallback``).

Both prune each block to its ``N`` smallest-latency devices first: a bottleneck- or sum-optimal
matching can always be rearranged to use only those (an unused one of them is never worse).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from desim.allocators.bandwidth import SplitAllocator, bandwidth_split, planned_latency_matrix_s
from desim.allocators.base import Allocation, RoundContext, infeasible
from desim.allocators.crunch_multi import CrunchMultiAllocator
from desim.allocators.registry import register


def is_monotone(t: np.ndarray) -> bool:
    """Whether every row of ``t`` ``(K, N)`` is non-decreasing in the block index."""
    return bool(np.all(t[:, 1:] >= t[:, :-1]))


def crunch_threshold(t: np.ndarray) -> tuple[float, int]:
    """CRUNCH's closed-form optimal threshold ``τ*`` for a monotone ``t`` ``(K, N)``.

    Returns:
        ``τ*`` and the 1-based block that sets it; ``τ* = inf`` means that block (the deepest
        one violating Hall's condition) cannot be placed. ``K < N`` is allowed (infeasible).
    """
    K, N = t.shape
    if K < N:  # pad with devices that serve nothing, so every column has an (N-j)-th entry
        t = np.vstack([t, np.full((N - K, N), np.inf)])
    # column j (0-based) needs its (N-j)-th smallest: keep the N smallest, then sort those
    part = np.sort(np.partition(t, N - 1, axis=0)[:N] if K > N else t, axis=0)
    need = part[N - 1 - np.arange(N), np.arange(N)]
    bad = np.flatnonzero(~np.isfinite(need))
    if bad.size:
        return float("inf"), int(bad[-1]) + 1
    j = int(np.argmax(need))
    return float(need[j]), j + 1


def crunch_assign(t: np.ndarray, tau: float) -> np.ndarray:
    """Deepest-first assignment at threshold ``tau`` for a monotone ``t`` ``(K, N)``.

    Returns:
        ``(N,)`` device per block, or ``-1`` entries if ``tau`` is infeasible.
    """
    K, N = t.shape
    depth = np.count_nonzero(t <= tau, axis=1)  # D_k(τ): the prefix of blocks k can serve
    cand = np.flatnonzero(depth > 0)
    cand = cand[np.argsort(depth[cand], kind="stable")]
    dc = depth[cand]
    used = np.zeros(cand.size, dtype=bool)
    out = np.full(N, -1, dtype=np.intp)
    for j in range(N, 0, -1):
        start = int(np.searchsorted(dc, j))  # first candidate with D_k ≥ j
        free = np.flatnonzero(~used[start:])
        if free.size == 0:
            return out
        i = start + int(free[0])
        used[i] = True
        out[j - 1] = cand[i]
    return out


def pruned_columns(t: np.ndarray, keep: int) -> np.ndarray:
    """Device indices among the ``keep`` smallest finite ``t`` of any block (sorted, unique)."""
    K = t.shape[0]
    if K <= keep:
        rows = np.arange(K)
    else:
        idx = np.argpartition(t, keep - 1, axis=0)[:keep]
        rows = np.unique(idx)
    return rows[np.isfinite(t[rows]).any(axis=1)]


def bottleneck_match(t: np.ndarray) -> tuple[float, np.ndarray, int]:
    """Exact bottleneck assignment of ``t`` ``(K, N)`` with no structure assumed.

    Returns:
        ``τ*``, ``(N,)`` device per block, and the 1-based block reported when infeasible
        (``τ* = inf``; the device array is then all ``-1``).
    """
    K, N = t.shape
    rows = pruned_columns(t, N)
    sub = t[rows].T  # (N, M): blocks × candidate devices
    finite = np.isfinite(sub)
    # Hall's condition per block, deepest first, names the block in the error
    for j in range(N - 1, -1, -1):
        if finite[j:].any(axis=0).sum() < N - j:
            return float("inf"), np.full(N, -1, dtype=np.intp), j + 1
    values = np.unique(sub[finite])
    lo = int(np.searchsorted(values, np.max(np.min(sub, axis=1))))
    hi = values.size - 1
    best = _match(sub, values[hi])
    if best is None:  # Hall per suffix is not sufficient in general
        return float("inf"), np.full(N, -1, dtype=np.intp), N
    while lo < hi:
        mid = (lo + hi) // 2
        m = _match(sub, values[mid])
        if m is None:
            lo = mid + 1
        else:
            hi, best = mid, m
    return float(values[hi]), rows[best], 0


def _match(sub: np.ndarray, tau: float) -> np.ndarray | None:
    """Perfect matching of blocks (rows) using pairs with ``t ≤ tau``, or ``None``."""
    graph = csr_matrix((sub <= tau).astype(np.int8))
    m = maximum_bipartite_matching(graph, perm_type="column")
    return None if np.any(m < 0) else m


def min_sum_below(t: np.ndarray, tau: float) -> np.ndarray:
    """Among matchings with every pair ``≤ tau``, one minimising the sum of ``t`` ``(K, N)``."""
    N = t.shape[1]
    tt = np.where(t <= tau * (1 + 1e-12), t, np.inf)
    rows = pruned_columns(tt, N)
    sub = tt[rows].T
    big = np.where(np.isfinite(sub), sub, 0.0).sum() + 1.0
    r, c = linear_sum_assignment(np.where(np.isfinite(sub), sub, big))
    out = np.empty(N, dtype=np.intp)
    out[r] = rows[c]
    return out


def solve_p1(
    ctx: RoundContext, t: np.ndarray, method: Literal["crunch", "matching"], min_sum: bool
) -> tuple[np.ndarray, float, dict[str, object]]:
    """Solve P1 on ``t``; CRUNCH falls back to matching when ``t`` is not monotone.

    Raises:
        InfeasibleError: naming the deepest block that cannot be placed.
    """
    diag: dict[str, object] = {}
    if method == "crunch" and not is_monotone(t):
        method = "matching"
        diag["fallback"] = "bottleneck-exact: latencies not non-decreasing in the block index"
    if method == "crunch":
        tau, block = crunch_threshold(t)
        if not np.isfinite(tau):
            raise infeasible(ctx, block)
        block_device = crunch_assign(t, tau)
    else:
        tau, block_device, block = bottleneck_match(t)
        if not np.isfinite(tau):
            raise infeasible(ctx, block)
    diag["method"] = method
    diag["threshold_s"] = tau
    if min_sum:
        block_device = min_sum_below(t, tau)
    return block_device, tau, diag


def split_allocation(
    ctx: RoundContext, block_device: np.ndarray, split: str, diagnostics: dict[str, object]
) -> Allocation:
    """The allocation of ``block_device`` under ``split``, with its planned latency as estimate."""
    bw = bandwidth_split(split)(ctx, block_device)
    alloc = Allocation(block_device, bw)
    est = ctx.round_latency_s(alloc)
    return Allocation(block_device, bw, est, diagnostics)


class P1Allocator(SplitAllocator):
    """P1 at the split's planned shares, solved by :func:`solve_p1` with ``method``."""

    method: ClassVar[Literal["crunch", "matching"]]
    min_sum: bool = False

    #: with fewer devices than blocks it places block sets (``crunch-multi``) instead
    places_block_sets: ClassVar[bool] = True

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Match blocks to devices, then split bandwidth (``K < N``: ``crunch-multi``)."""
        if ctx.num_devices < ctx.num_blocks:
            alloc = CrunchMultiAllocator(bandwidth=self.bandwidth).allocate(ctx, rng)
            note = (f"crunch-multi: {ctx.num_devices} devices for {ctx.num_blocks} blocks, so "
                    f"devices train several blocks ({self.registry_name} needs K >= N)")
            return replace(alloc, diagnostics={"fallback": note, **alloc.diagnostics})
        t = planned_latency_matrix_s(ctx, self.bandwidth)
        block_device, _, diag = solve_p1(ctx, t, self.method, self.min_sum)
        return split_allocation(ctx, block_device, self.bandwidth, diag)


@register(
    "crunch",
    "CRUNCH: exact P1 bottleneck matching in O(KN) at the bandwidth split's planned shares",
)
class CrunchAllocator(P1Allocator):
    """CRUNCH for P1 (DESIGN §2), with ``bottleneck-exact`` as the fallback.

    Attributes:
        bandwidth: split; ``equal`` and ``proportional`` shares are known before matching, and
            ``minmax`` matches at equal shares and then re-splits optimally.
        min_sum: among bottleneck-optimal matchings pick one with the least sum of latencies.
    """

    method: ClassVar[Literal["crunch", "matching"]] = "crunch"


@register(
    "bottleneck-exact",
    "exact P1 by threshold search plus bipartite matching (no monotonicity assumed)",
)
class BottleneckExactAllocator(P1Allocator):
    """Generic exact P1: binary search on thresholds, maximum bipartite matching per probe.

    Attributes:
        bandwidth: split (as for ``crunch``).
        min_sum: among bottleneck-optimal matchings pick one with the least sum of latencies.
    """

    method: ClassVar[Literal["crunch", "matching"]] = "matching"
