"""``crunch-multi``: exact P1 when a device may train several blocks (any ``K``, also ``K < N``).

A device ``k`` training the set ``S`` (deepest block ``d = max S``, ``m = |S|``) runs one
backward pass (:mod:`desim.costs.multiblock`): compute ``ĉ_{k,d} + Σ_{n∈S, n≠d} e_{k,n}``,
memory ``m_d + Σ_{n∈S, n≠d} x_n ≤ M_k``, upload ``Σ_{n∈S} D_n`` at its planned share. Every
block goes to one device; the bottleneck over devices is minimised (DESIGN §2's P1 with sets).

**Uniform blocks** (``D_n``, ``e_{k,n}`` and ``x_n`` the same for every ``n < N``) whose
compute and memory are non-decreasing in depth: a device's latency ``f_k(d, m)`` depends only
on ``d`` and ``m`` and grows with both, so at a threshold ``τ`` device ``k`` may take at most
``cap_k(p)`` blocks when its deepest is ``p``, non-increasing in ``p``. Then some optimum gives
every device a contiguous range, deepest ranges first: ``p_0 = N``,
``p_{i+1} = p_i − cap_{k_i}(p_i)`` over distinct devices until ``p ≤ 0`` (docs/allocators.md,
"crunch-multi", proves it). No order of the devices is canonical (the docs give a
counter-example), so :func:`~desim.allocators.ranges.covering_ranges` decides a threshold
exactly by a memoised search over (position, devices used); past a node budget HiGHS decides
the interval cover. ``τ*`` is the least feasible of the ``K·N(N+1)/2`` values ``f_k(d, m)``,
found by bisection (``method = "ranges"``).

**Extras that differ by block** (uniform bits; measured profiles): the problem contains bin
packing (NP-hard). The uniform problems at each device's least and largest extra bracket the
optimum; when the bracket does not close, the general MILP runs inside it
(``method = "ranges+milp"``, exact to HiGHS's tolerances). **Bits that differ by block, or
costs not monotone in depth**: the general MILP alone
(:func:`~desim.allocators.multi_exact.solve_sets_milp`, ``method = "milp"``).

Bandwidth: ``equal`` splits ``B`` equally among the devices a placement uses, and plans
exactly that: for every ``u = 1..min(N, usable devices)`` it solves the problem with at most
``u`` devices, each at ``B/u``, and keeps the best (:func:`solve_sets`), so one device with the
whole band (``single-device``) and ``N`` devices at ``B/N`` (``crunch``) are both candidates;
``proportional`` gives a device ``B·D(S)/ΣD`` (``m·B/N`` with uniform blocks; planned at
equal shares otherwise); ``minmax`` plans as ``equal``, then re-splits optimally for the
placement (:func:`~desim.allocators.bandwidth.minmax_latency_s` with each device's summed bits).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from desim.allocators.bandwidth import SplitAllocator, sets_allocation
from desim.allocators.base import Allocation, RoundContext
from desim.allocators.multi_exact import solve_sets_milp
from desim.allocators.ranges import Ranges, covering_ranges
from desim.allocators.registry import register
from desim.errors import InfeasibleError, InputError


def structured(ctx: RoundContext) -> bool:
    """Uniform bits, non-negative extras, compute and memory non-decreasing in depth.

    Then a set's upload depends on its size only, and a device's latency and memory grow
    with the set's deepest block and size.
    """
    extra_s, extra_b = ctx.set_extras()
    usable = ctx.available & np.isfinite(ctx.compute_s).all(axis=1)
    c, e = ctx.compute_s[usable], extra_s[usable]
    bits = ctx.upload_bits
    return bool(np.all(bits == bits[0]) and np.all(e >= 0) and np.all(extra_b >= 0)
                and np.all(c[:, 1:] >= c[:, :-1])
                and np.all(ctx.memory_bytes[1:] >= ctx.memory_bytes[:-1]))


def uniform_extras(ctx: RoundContext) -> bool:
    """Whether every block but the deepest adds the same seconds (per device) and bytes."""
    extra_s, extra_b = ctx.set_extras()
    usable = ctx.available & np.isfinite(ctx.compute_s).all(axis=1)
    e = extra_s[usable][:, :-1]
    return bool(np.all(e == e[:, :1]) and np.all(extra_b[:-1] == extra_b[0]))


def most_devices(ctx: RoundContext) -> int:
    """The most devices a placement can use: ``min(N, usable devices)`` (at least 1)."""
    return max(1, min(ctx.num_blocks, int(ctx.eligible().any(axis=1).sum())))


def planned_share_hz(ctx: RoundContext, devices: int | None = None) -> float:
    """A device's planned bandwidth under ``equal`` when ``devices`` devices share ``B``.

    ``devices`` defaults to :func:`most_devices` (``B/N`` as ``crunch`` when ``K ≥ N``).
    """
    return ctx.total_bandwidth_hz / (most_devices(ctx) if devices is None else devices)


def count_upload_s(ctx: RoundContext, split: str, devices: int | None = None) -> np.ndarray:
    """``(K, N)`` seconds for device ``k`` to upload ``m = 1..N`` uniform blocks (``[k, m-1]``).

    ``proportional``: at ``m·B/N``; otherwise at ``planned_share_hz(ctx, devices)``.
    """
    K, N = ctx.num_devices, ctx.num_blocks
    m = np.arange(1, N + 1)
    share = (ctx.total_bandwidth_hz * m / N if split == "proportional"
             else np.full(N, planned_share_hz(ctx, devices)))
    rate = ctx.rates.rate_bps(np.broadcast_to(share, (K, N)),
                              np.broadcast_to(np.arange(K)[:, None], (K, N)))
    bits = float(ctx.upload_bits[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bits > 0, m * bits / rate, 0.0)


def set_latency_s(ctx: RoundContext, split: str, devices: int | None = None) -> np.ndarray:
    """``(K, N, N)`` planned ``f_k(d, m)`` at ``[k, d-1, m-1]`` for uniform blocks.

    ``ĉ_{k,d} + (m−1)·e_k + g_k(m)`` with ``g`` the upload of ``m`` blocks
    (:func:`count_upload_s`); ``inf`` where ``m > d``, the set does not fit in ``M_k``
    (``m_d + (m−1)·x``) or ``k`` cannot train block ``d``.
    """
    N = ctx.num_blocks
    extra_s, extra_b = ctx.set_extras()
    e = extra_s[:, 0] if N > 1 else np.zeros(ctx.num_devices)
    x = float(extra_b[0]) if N > 1 else 0.0
    more = np.arange(N)  # m - 1
    with np.errstate(invalid="ignore"):
        f = (ctx.compute_s[:, :, None] + more * e[:, None, None]
             + count_upload_s(ctx, split, devices)[:, None, :])
    fits = ctx.memory_bytes[None, :, None] + more * x <= ctx.memory_budget_bytes[:, None, None]
    ok = fits & (more[None, None, :] <= more[None, :, None]) & ctx.eligible()[:, :, None]
    return np.where(ok, f, np.inf)


def caps_at(f: np.ndarray, tau: float) -> np.ndarray:
    """``(K, N)`` ``cap_k(p)``: the most blocks ``k`` takes within ``tau`` with deepest ``p``."""
    return np.logical_and.accumulate(f <= tau, axis=2).sum(axis=2)


def solve_sets(ctx: RoundContext, split: str, node_budget: int,
               time_limit_s: float) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Exact P1 with block sets at the planned shares of ``split``.

    ``equal`` (and ``minmax``, which plans as ``equal``): the used devices share ``B``
    equally, so a placement's shares depend on how many devices it uses. For each
    ``u = 1..min(N, usable)`` the problem with at most ``u`` devices at ``B/u`` each is solved;
    the least is the optimum, since a placement using ``v`` devices is priced at ``B/v`` when
    ``u = v`` and no better at any ``u > v``. Branch and bound over ``u``: first every ``u``'s
    cheap bounds (:func:`_bound_at`, exact for uniform blocks), skipping a ``u`` whose lower
    bound is not below the best placement so far; then, in order of lower bound, HiGHS closes
    only the brackets that open below the best placement of all.

    Returns:
        ``(N,)`` device per block, the optimal planned bottleneck (no aggregation) and
        diagnostics (``method``: ``ranges``, ``ranges+milp`` or ``milp``; ``planned_devices``).

    Raises:
        InfeasibleError: no placement exists (memory, availability).
    """
    counts: list[int | None] = ([None] if split == "proportional"
                                else list(range(1, most_devices(ctx) + 1)))
    bounds: list[_Bound] = []
    for u in counts:
        top = min((b.latency for b in bounds), default=np.inf)
        try:
            bounds.append(_bound_at(ctx, split, node_budget, time_limit_s, u, top))
        except InfeasibleError:  # none with u devices, or none below the best so far
            continue
    if not bounds:
        raise _no_placement(ctx)
    best = min(bounds, key=lambda b: b.latency)
    found = (best.block_device, best.latency, best.diag)
    for b in sorted(bounds, key=lambda b: b.low):
        if b.table is None or not b.low < found[1]:
            continue  # closed (its incumbent is its optimum), or it cannot beat the best
        solved = solve_sets_milp(ctx, b.table, time_limit_s, (b.low, found[1]), b.devices)
        diag = {**b.diag, "method": "ranges+milp"}
        if solved is not None:
            latency = placement_latency_s(ctx, solved[0], b.table)
            if latency < found[1]:
                found = (solved[0], latency, {**diag, "threshold_s": latency})
                continue
        if found[2] is b.diag:
            found = (found[0], found[1], diag)  # HiGHS proved the incumbent optimal
    if not np.isfinite(found[1]):
        raise _no_placement(ctx)  # no bracket's placement fits, nor does any
    return found




@dataclass(frozen=True)
class _Bound:
    """One device count's bracket on its optimum, and its best placement so far.

    Attributes:
        devices: at most this many devices, each at ``B/devices`` (``None``: ``split``'s own
            shares, any number).
        low: a lower bound on the optimum (the optimum itself when closed).
        latency: the placement's true planned latency (``inf`` if it does not fit).
        block_device: ``(N,)`` device per block.
        diag: diagnostics of the placement.
        table: the upload table HiGHS prices the bracket with (:func:`count_upload_s`);
            ``None`` when closed.
    """

    devices: int | None
    low: float
    latency: float
    block_device: np.ndarray
    diag: dict[str, Any]
    table: np.ndarray | None = None


def _bound_at(ctx: RoundContext, split: str, node_budget: int, time_limit_s: float,
              devices: int | None, below: float) -> _Bound:
    """The bracket with at most ``devices`` devices at ``B/devices``, if it opens below ``below``.

    Raises:
        InfeasibleError: no such placement below ``below``.
    """
    usable = ctx.eligible().any(axis=1)
    table = count_upload_s(ctx, split, devices)
    if not structured(ctx) or np.any(table[usable, 1:] < table[usable, :-1]):
        bd, tau, diag = _general(ctx, split, time_limit_s, devices, below)
        bound = _Bound(devices, tau, tau, bd, diag)
    elif uniform_extras(ctx):
        bd, tau, diag = _ranges(ctx, split, node_budget, time_limit_s, devices, below)
        bound = _Bound(devices, tau, tau, bd, diag)
    else:
        bound = _bracketed(ctx, split, table, node_budget, time_limit_s, devices, below)
    if devices is not None:
        bound.diag["planned_devices"] = devices
    return bound


def _ranges(ctx: RoundContext, split: str, node_budget: int, time_limit_s: float,
            devices: int | None = None,
            below: float = np.inf) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Uniform blocks: bisection on the values ``f_k(d, m)``, each tested by the range walk."""
    f = set_latency_s(ctx, split, devices)
    values = np.unique(f[np.isfinite(f)])
    values = values[values < below]
    deepest = f[:, -1, 0]
    if values.size == 0 or not np.isfinite(deepest).any():
        raise _no_placement(ctx)
    lo = int(np.searchsorted(values, deepest.min()))  # block N is some device's deepest
    hi = values.size - 1
    probes = nodes = milp_probes = 0

    def probe(i: int) -> Ranges | None:
        nonlocal probes, nodes, milp_probes
        ranges, info = covering_ranges(caps_at(f, values[i]), node_budget, time_limit_s,
                                       devices)
        probes, nodes = probes + 1, nodes + info["search_nodes"]
        milp_probes += info["decided_by"] == "milp"
        return ranges

    best = probe(hi) if lo <= hi else None
    if best is None:
        raise _no_placement(ctx)
    while lo < hi:
        mid = (lo + hi) // 2
        ranges = probe(mid)
        if ranges is None:
            lo = mid + 1
        else:
            hi, best = mid, ranges
    block_device = np.empty(ctx.num_blocks, dtype=np.intp)
    for k, p, count in best:
        block_device[p - count:p] = k
    return block_device, float(values[hi]), {
        "method": "ranges", "threshold_s": float(values[hi]), "probes": probes,
        "search_nodes": nodes, "milp_probes": milp_probes,
    }


def _bracketed(ctx: RoundContext, split: str, table: np.ndarray, node_budget: int,
               time_limit_s: float, devices: int | None, below: float) -> _Bound:
    """Extras that differ by block: uniform bounds bracket the optimum (HiGHS may close it).

    Every block priced at its device's least extra (seconds and bytes) is a relaxation, so its
    range optimum ``τ_lo`` is a lower bound; at the largest extra every set costs at least its
    true cost, so that optimum's true latency is an upper bound. If a bound's placement costs
    ``τ_lo`` truly it is optimal (closed); otherwise :func:`solve_sets` runs the general MILP
    between the bounds if the bracket can still beat its best placement.

    Raises:
        InfeasibleError: the relaxation has no placement below ``below`` (so none has).
    """
    extra_s, extra_b = ctx.set_extras()

    def uniform_at(pick: Any) -> RoundContext:
        with np.errstate(invalid="ignore"):  # rows of stalled devices are nan; never eligible
            e = pick(extra_s[:, :-1], axis=1)
        x = np.full(ctx.num_blocks, float(pick(extra_b[:-1])))
        return replace(ctx, extra_compute_s=np.repeat(e[:, None], ctx.num_blocks, axis=1),
                       extra_memory_bytes=x)

    first, low, _ = _ranges(uniform_at(np.min), split, node_budget, time_limit_s, devices,
                            below)
    placements = [first]
    try:
        placements.append(_ranges(uniform_at(np.max), split, node_budget, time_limit_s,
                                  devices)[0])
    except InfeasibleError:
        pass
    true = [placement_latency_s(ctx, bd, table) for bd in placements]
    best = int(np.argmin(true))
    diag = {"method": "ranges", "threshold_s": true[best], "lower_bound_s": low}
    closed = true[best] <= low
    return _Bound(devices, low, true[best], placements[best], diag, None if closed else table)


def placement_latency_s(ctx: RoundContext, block_device: np.ndarray,
                        upload: np.ndarray) -> float:
    """Largest planned device latency of a placement (``inf`` if a set does not fit).

    Args:
        ctx: the snapshot.
        block_device: ``(N,)`` device of every block.
        upload: ``(K, N)`` upload seconds by set size (:func:`count_upload_s`), or ``(K,)``
            planned rates in bit/s.
    """
    k, n = block_device, np.arange(block_device.size)
    extra_s, extra_b = ctx.set_extras()
    deepest, added = ctx.set_deepest_and_extra(k, extra_s[k, n])
    _, held = ctx.set_deepest_and_extra(k, extra_b[n])
    dev = np.unique(k)
    d = deepest[dev]
    if upload.ndim == 2:
        up = upload[dev, np.bincount(k, minlength=ctx.num_devices)[dev] - 1]
    else:
        bits = np.bincount(k, weights=ctx.upload_bits, minlength=ctx.num_devices)[dev]
        with np.errstate(divide="ignore", invalid="ignore"):
            up = np.where(bits > 0, bits / upload[dev], 0.0)
    fits = (ctx.memory_bytes[d] + held[dev] <= ctx.memory_budget_bytes[dev]) & \
        ctx.eligible()[dev, d]
    return float(np.max(np.where(fits, ctx.compute_s[dev, d] + added[dev] + up, np.inf)))


def _general(ctx: RoundContext, split: str, time_limit_s: float, devices: int | None = None,
             below: float = np.inf) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Non-uniform bits or non-monotone costs: the general MILP at equal planned shares."""
    K = ctx.num_devices
    rate = ctx.rates.rate_bps(np.full(K, planned_share_hz(ctx, devices)), np.arange(K))
    solved = solve_sets_milp(ctx, rate, time_limit_s, (0.0, below), devices)
    if solved is None:
        raise _no_placement(ctx)
    block_device = solved[0]
    tau = placement_latency_s(ctx, block_device, rate)
    if not np.isfinite(tau):
        raise InputError("crunch-multi: HiGHS returned a placement that exceeds a memory "
                         "budget within its tolerance")
    if not tau < below:
        raise _no_placement(ctx)
    diag: dict[str, Any] = {"method": "milp", "threshold_s": tau, "fallback": (
        "general MILP: bits differ by block or costs are not monotone in depth, so a "
        "device's best set need not be a range (the problem contains bin packing)")}
    if split == "proportional":
        diag["planned_shares"] = "equal (proportional shares depend on the set's bits)"
    return block_device, tau, diag


def _no_placement(ctx: RoundContext) -> InfeasibleError:
    """Why no placement exists: a block no available device holds, or too little room."""
    eligible = ctx.eligible()
    head = f"round {ctx.round_index}: block "
    avail = int(ctx.available.sum())
    alone = np.flatnonzero(~eligible.any(axis=0))
    if alone.size:
        n = int(alone[-1]) + 1
        return InfeasibleError(
            f"{head}{ctx.block_name(n)} (needs {ctx.memory_bytes[n - 1]:.4g} bytes) cannot be "
            f"placed: 0 available device(s) can hold it, even alone ({avail} of "
            f"{ctx.num_devices} devices available)")
    usable = int(eligible.any(axis=1).sum())
    return InfeasibleError(
        f"{head}{ctx.block_name(1)} cannot be placed: the {usable} usable devices (of "
        f"{ctx.num_devices}) cannot cover all {ctx.num_blocks} blocks even with several blocks "
        "each (memory budgets, or no uplink)")


@register(
    "crunch-multi",
    "exact P1 when a device may train several blocks in one backward pass (any K, also K < N)",
)
class CrunchMultiAllocator(SplitAllocator):
    """Exact bottleneck placement of blocks on devices that may train several (module doc).

    Attributes:
        bandwidth: split; ``equal`` and ``proportional`` shares are known before placing,
            ``minmax`` places at equal shares and then re-splits optimally.
        node_budget: search nodes per threshold before HiGHS decides it instead.
        time_limit_s: HiGHS time limit (interval cover, or the general MILP); hitting it is an
            error, not a silent incumbent.
    """

    places_block_sets: ClassVar[bool] = True
    node_budget: int = Field(default=20_000, ge=1)
    time_limit_s: float = Field(default=60.0, gt=0)

    def allocate(self, ctx: RoundContext, rng: np.random.Generator) -> Allocation:
        """Place blocks (several per device where that is faster), then split bandwidth."""
        block_device, _, diag = solve_sets(ctx, self.bandwidth, self.node_budget,
                                           self.time_limit_s)
        return sets_allocation(ctx, block_device, self.bandwidth, diag)
