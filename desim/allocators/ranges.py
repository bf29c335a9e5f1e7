"""Covering blocks ``1..N`` by ranges of distinct devices: the threshold test of ``crunch-multi``.

At a threshold ``τ`` device ``k`` may take at most ``cap_k(p)`` consecutive blocks whose deepest
is ``p`` (non-increasing in ``p``, at most ``p``; :func:`desim.allocators.crunch_multi.caps_at`).
The threshold is feasible iff a walk ``p_0 = N``, ``p_{i+1} = p_i − cap_{k_i}(p_i)`` over
distinct devices reaches 0 (docs/allocators.md, "crunch-multi", proves that maximal steps and
contiguous ranges lose nothing). No order of the devices is canonical, so
:func:`covering_ranges` searches the walks exhaustively, memoising failed (position, devices
used) states, with identical devices merged, dominated devices dropped and two necessary
bounds; past a node budget HiGHS decides the interval cover (:func:`cover_milp`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from desim.errors import InputError

Ranges = list[tuple[int, int, int]]  # (device, deepest block p, count): blocks p-count+1..p


class _OverBudget(Exception):
    """The search ran past its node budget (HiGHS decides instead)."""


def covering_ranges(cap: np.ndarray, node_budget: int, time_limit_s: float,
                    max_devices: int | None = None) -> tuple[Ranges | None, dict[str, Any]]:
    """Exactly decide whether distinct devices' ranges cover blocks ``1..N`` at these caps.

    Args:
        cap: ``(K, N)`` ``cap_k(p)`` at ``[k, p-1]`` (non-increasing in ``p``, at most ``p``).
        node_budget: search nodes before HiGHS decides instead.
        time_limit_s: HiGHS time limit.
        max_devices: use at most this many devices (``None``: any number).

    Returns:
        ``(device, deepest block, count)`` from block ``N`` down (``None``: infeasible), and
        what decided it (``search_nodes``, ``decided_by``).
    """
    K, N = cap.shape
    limit = N if max_devices is None else min(N, max_devices)
    keep = _undominated(cap, limit)
    groups, group_of = np.unique(cap[keep], axis=0, return_inverse=True)
    members = [keep[group_of.ravel() == g].tolist() for g in range(groups.shape[0])]
    size = np.array([len(m) for m in members])
    if not _hall_bound(groups, size, N):
        return None, {"search_nodes": 0, "decided_by": "bound"}
    # the best single jump a group can make at or above each position (for the bound)
    reach = np.maximum.accumulate(groups, axis=1)
    failed: set[tuple[int, bytes]] = set()
    nodes = 0

    def search(p: int, used: np.ndarray, depth: int) -> list[tuple[int, int]] | None:
        nonlocal nodes
        if p <= 0:
            return []
        if depth >= limit:
            return None
        key = (p, used.tobytes())
        if key in failed:
            return None
        nodes += 1
        if nodes > node_budget:
            raise _OverBudget
        left = size - used
        if int((left * reach[:, p - 1]).sum()) >= p:
            jump = groups[:, p - 1]
            for g in np.flatnonzero((left > 0) & (jump > 0))[np.argsort(
                    -jump[(left > 0) & (jump > 0)], kind="stable")].tolist():
                used[g] += 1
                rest = search(p - int(jump[g]), used, depth + 1)
                used[g] -= 1
                if rest is not None:
                    return [(g, p), *rest]
        failed.add(key)
        return None

    try:
        found = search(N, np.zeros(len(members), dtype=np.intp), 0)
    except _OverBudget:
        return (cover_milp(cap, time_limit_s, limit),
                {"search_nodes": nodes, "decided_by": "milp"})
    info = {"search_nodes": nodes, "decided_by": "search"}
    if found is None:
        return None, info
    taken = [0] * len(members)
    ranges = []
    for g, p in found:
        ranges.append((members[g][taken[g]], p, min(int(groups[g, p - 1]), p)))
        taken[g] += 1
    return ranges, info


def _undominated(cap: np.ndarray, limit: int) -> np.ndarray:
    """Devices that can take a block, less those with ``limit`` or more dominators.

    ``a`` dominates ``b`` if ``cap_a ≥ cap_b`` everywhere (:func:`undominated`).
    """
    return undominated(cap, np.flatnonzero(cap.any(axis=1)), limit)


def undominated(merit: np.ndarray, live: np.ndarray, limit: int) -> np.ndarray:
    """The ``live`` devices (indices) less those with ``limit`` or more dominators.

    ``a`` dominates ``b`` if ``merit[a] ≥ merit[b]`` in every column (ties broken by index).
    When a placement uses at most ``limit`` devices and a dominator can always take its
    dominated device's set at no more cost, a used device with ``limit`` dominators can be
    swapped for an unused one of them; repeating ends, since domination is a strict order, so
    some optimum uses none of the dropped devices. Above 2,000 devices nothing is dropped (the
    pairwise test's memory).
    """
    if live.size <= limit or live.size > 2000:
        return live
    c = merit[live]
    geq = (c[:, None, :] >= c[None, :, :]).all(axis=2)  # [a, b]: a ≥ b everywhere
    same = geq & geq.T
    order = np.arange(live.size)
    dominates = geq & (~same | (order[:, None] < order[None, :]))
    return live[dominates.sum(axis=0) < limit]


def _hall_bound(groups: np.ndarray, size: np.ndarray, N: int) -> bool:
    """Necessary: for every ``q``, the devices can cover the ``N − q`` blocks above ``q``.

    A device covers at most ``max_{p > q} min(cap(p), p − q)`` of blocks ``q+1..N``.
    """
    p = np.arange(1, N + 1)
    qs = np.arange(N)
    part = np.minimum(groups[:, None, :], np.maximum(p[None, None, :] - qs[None, :, None], 0))
    most = part.max(axis=2)  # (G, len(qs))
    return bool(np.all((size[:, None] * most).sum(axis=0) >= N - qs))


def cover_milp(cap: np.ndarray, time_limit_s: float,
               max_devices: int | None = None) -> list[tuple[int, int, int]] | None:
    """Whether distinct devices' ranges can cover blocks ``1..N`` (HiGHS), and how.

    Args:
        cap: ``(K, N)`` most blocks device ``k`` may take with deepest block ``p``
            (``cap[k, p - 1]``, non-increasing in ``p``, at most ``p``).
        time_limit_s: HiGHS time limit.
        max_devices: use at most this many devices (``None``: any number).

    Returns:
        ``(device, deepest block, count)`` from the deepest range down, or ``None``.

    Raises:
        InputError: HiGHS stopped before deciding.
    """
    K, N = cap.shape
    ks, ps = np.nonzero(cap > 0)
    if ks.size == 0:
        return None
    top = ps + 1
    low = top - cap[ks, ps] + 1
    m = ks.size
    blocks = np.arange(1, N + 1)
    covers = (blocks[:, None] >= low[None, :]) & (blocks[:, None] <= top[None, :])
    rn, cn = np.nonzero(covers)
    limit = N if max_devices is None else max_devices  # the last row: Σ x ≤ limit
    a = coo_matrix((np.ones(rn.size + 2 * m), (np.concatenate([rn, N + ks, np.full(m, N + K)]),
                                               np.concatenate([cn, np.arange(m), np.arange(m)]))),
                   shape=(N + K + 1, m)).tocsr()
    lb = np.concatenate([np.ones(N), np.zeros(K + 1)])
    ub = np.concatenate([np.full(N, np.inf), np.ones(K), [limit]])
    res = milp(np.zeros(m), constraints=LinearConstraint(a, lb, ub), integrality=np.ones(m),
               bounds=Bounds(0, 1), options={"time_limit": time_limit_s})
    if res.status == 2:
        return None
    if res.status != 0 or res.x is None:
        raise InputError(f"crunch-multi: HiGHS did not decide a threshold ({res.message})")
    chosen = np.flatnonzero(res.x > 0.5)
    order = chosen[np.argsort(-top[chosen], kind="stable")]
    seq, p = [], N
    for j in order.tolist():  # trim each range below the ones above it
        if p <= 0:
            break
        if top[j] >= p >= low[j]:
            seq.append((int(ks[j]), p, p - int(low[j]) + 1))
            p = int(low[j]) - 1
    return seq if p <= 0 else None
