"""From an agent's action to a feasible DEFT allocation: the mask, the repair rule, the shares.

An action is a block→device assignment ``(N,)`` and bandwidth shares ``(K,)`` (DESIGN §2: one
block per device, ``Σ B_k ≤ B``). Nothing here imports gymnasium or the engine: the
environment (:mod:`desim.gym.env`) calls :func:`decide` on the round's snapshot and hands the
allocation to the engine as the round's plan.

**Valid pairs** (:func:`action_mask`): device ``k`` may train block ``n`` when it is available,
can compute (finite planned compute), holds the block's memory and, if the block has bits to
send, has a positive planned rate (the planned latency at an equal share ``B/N`` is finite).

**Valid actions**: every block on a valid device, the devices distinct, and a positive share on
every device whose block has bits, at least :data:`MIN_RELATIVE_SHARE` of the largest (or all
shares zero). A valid action is used as it is.

**The repair rule** (an action that is not valid is repaired, never refused):

1. *Assignment*: the blocks are re-matched to move the fewest blocks off the agent's choice,
   and among those matchings to least total planned latency at the equal share ``B/N`` (one
   min-cost assignment, cost ``[k ≠ a_n] + t_{k,n} / (2 N max t)``, invalid pairs excluded).
   A valid distinct assignment is its own unique optimum, so it is never changed. If no
   distinct valid matching exists the round is infeasible for every action; it is skipped (or
   stops the run) as under ``desim run``.
2. *Bandwidth*: shares are weights; negative or non-finite ones, and any below
   :data:`MIN_RELATIVE_SHARE` of the largest, read as 0. Devices without a block get no
   bandwidth. All-zero shares on the blocks' devices mean the equal split ``B/N`` each.
   Otherwise the blocks' devices' shares are normalised to the whole band,
   ``B_k = B · s_k / Σ s``, and a device whose block has bits but whose share is zero gets
   the smallest bandwidth given to another (the band renormalised to ``B``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from desim.allocators.base import Allocation, RoundContext, check_allocation, infeasible
from desim.errors import AllocationError

#: a bandwidth share below this fraction of the largest one reads as zero (the upload would
#: never end on the engine's clock)
MIN_RELATIVE_SHARE = 1e-12


@dataclass(frozen=True, eq=False)
class Decision:
    """What an action became in one round.

    Attributes:
        allocation: the allocation the round runs (``None``: no distinct valid matching
            exists, the round is infeasible).
        check: ``""`` when the action as given passes
            :func:`~desim.allocators.base.check_allocation`, else its message.
        repairs: one line per change the repair rule made (empty: none).
        infeasible: why the round cannot be planned (``""`` unless ``allocation`` is ``None``).
    """

    allocation: Allocation | None
    check: str
    repairs: tuple[str, ...]
    infeasible: str = ""

    @property
    def repaired(self) -> bool:
        """Whether the action was changed before it ran."""
        return bool(self.repairs)


def planned_latency_at_equal_share_s(ctx: RoundContext) -> np.ndarray:
    """``(K, N)`` planned latency ``t_{k,n}`` at the equal share ``B/N``; ``inf``: invalid."""
    share = np.full(ctx.num_devices, ctx.total_bandwidth_hz / ctx.num_blocks)
    with np.errstate(invalid="ignore"):
        t = ctx.latency_matrix_s(share)
    return np.where(np.isnan(t), np.inf, t)


def action_mask(ctx: RoundContext) -> np.ndarray:
    """``(N, K)`` bool: which devices block ``n`` (row ``n - 1``) may be placed on."""
    mask: np.ndarray = np.isfinite(planned_latency_at_equal_share_s(ctx)).T
    return mask


def decide(ctx: RoundContext, assignment: np.ndarray, *, shares: np.ndarray | None = None,
           bandwidth_hz: np.ndarray | None = None, source: Allocation | None = None) -> Decision:
    """The allocation an action asks for in round ``ctx``, repaired if it is not valid.

    Args:
        ctx: the round's snapshot.
        assignment: ``(N,)`` device index of every block (out-of-range indices are invalid).
        shares: ``(K,)`` bandwidth weights (normalised to ``B``, the module docstring's rule).
        bandwidth_hz: ``(K,)`` bandwidths in Hz instead of shares, used as they are when the
            action is valid (an allocator's own allocation, bit for bit).
        source: the allocator's allocation behind ``assignment`` and ``bandwidth_hz``; a
            valid one runs unchanged (its estimate and diagnostics with it).

    Raises:
        ValueError: ``assignment`` is not ``(N,)`` or the bandwidth is not ``(K,)``.
    """
    K, N = ctx.num_devices, ctx.num_blocks
    a = np.asarray(assignment)
    if a.shape != (N,):
        raise ValueError(f"assignment has shape {a.shape}, expected ({N},) (one device a block)")
    a = a.astype(np.intp)
    bw_in = np.asarray(bandwidth_hz if bandwidth_hz is not None else shares, dtype=float)
    if bw_in.shape != (K,):
        raise ValueError(f"bandwidth has shape {bw_in.shape}, expected ({K},) (one per device)")
    weights = np.where(np.isfinite(bw_in) & (bw_in > 0), bw_in, 0.0)
    exact = bandwidth_hz is not None
    if source is not None:
        check = _check(ctx, source)
    else:
        source = Allocation(a, _bandwidth(ctx, np.clip(a, 0, K - 1), weights, exact=exact,
                                          fix_zero=False)[0])
        check = _check(ctx, source)
    if not check:
        return Decision(source, "", ())
    devices, moves = _rematch(ctx, a, planned_latency_at_equal_share_s(ctx))
    if devices is None:
        return Decision(None, check, (), moves[0])
    bw, zero = _bandwidth(ctx, devices, weights, exact=exact, fix_zero=True)
    names = ctx.device_names
    moves += tuple(f"device {names[k]}: zero bandwidth share with bits to send; given the "
                   "smallest positive share" for k in zero)
    if not moves:  # only the bandwidths were wrong (Hz overfilling B, or on idle devices)
        detail = check.removeprefix(f"round {ctx.round_index}: ")
        moves = (f"bandwidth: {detail}; idle devices get none and the band is scaled to B",)
    return Decision(Allocation(devices, bw), check, moves)


def _check(ctx: RoundContext, alloc: Allocation) -> str:
    """``""`` when ``alloc`` is feasible for ``ctx``, else the check's message."""
    try:
        check_allocation(ctx, alloc)
    except AllocationError as exc:
        return str(exc)
    return ""


def _rematch(ctx: RoundContext, a: np.ndarray,
             t: np.ndarray) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """Fewest blocks moved, then least planned latency; ``None`` and why when impossible."""
    K, N = t.shape
    finite = np.isfinite(t)
    scale = 2.0 * N * max(float(t[finite].max(initial=0.0)), 1e-300)
    cost = (np.arange(K)[None, :] != a[:, None]) + t.T / scale
    cost = np.where(finite.T, cost, np.inf)
    try:
        rows, cols = linear_sum_assignment(cost)
    except ValueError:
        return None, (_why_infeasible(ctx, finite),)
    devices = np.empty(N, dtype=np.intp)
    devices[rows] = cols
    names, moves = ctx.device_names, []
    for n in np.flatnonzero(devices != a).tolist():
        k = int(a[n])
        if not 0 <= k < K:
            old, why = f"index {k}", "not a device"
        elif not finite[k, n]:
            old, why = names[k], "cannot train it (memory, availability, compute or uplink)"
        else:
            others = [m + 1 for m in np.flatnonzero(a == k).tolist() if m != n]
            old, why = names[k], "also chosen for block(s) " + ", ".join(map(str, others))
        moves.append(f"block {ctx.block_name(n + 1)}: device {old} -> "
                     f"{names[int(devices[n])]} ({why})")
    return devices, tuple(moves)


def _why_infeasible(ctx: RoundContext, valid: np.ndarray) -> str:
    """Why no distinct valid matching exists, in the allocators' words where it can say."""
    K, N = valid.shape
    for n in range(N, 0, -1):  # Hall's condition on the blocks n..N (nested when by depth)
        if int(valid[:, n - 1:].any(axis=1).sum()) < N - n + 1:
            return str(infeasible(ctx, n))
    usable = int(valid.any(axis=1).sum())
    return (f"round {ctx.round_index}: no valid distinct assignment exists ({usable} of {K} "
            f"devices can train a block, {N} blocks; each block needs its own device)")


def _bandwidth(ctx: RoundContext, devices: np.ndarray, weights: np.ndarray, *, exact: bool,
               fix_zero: bool) -> tuple[np.ndarray, list[int]]:
    """``(K,)`` Hz for the blocks on ``devices``, and the devices given the smallest share.

    ``exact``: ``weights`` are Hz, kept as they are unless they overfill the band.
    """
    K, B = ctx.num_devices, ctx.total_bandwidth_hz
    used = np.zeros(K, dtype=bool)
    used[devices] = True
    w = np.where(used, weights, 0.0)
    if not w.any():
        bw = np.zeros(K)
        bw[devices] = B / devices.size  # the equal split, as the `equal` split computes it
        return bw, []
    w = np.where(w >= MIN_RELATIVE_SHARE * w.max(), w, 0.0)
    bw = _to_band(w, B, exact=exact)
    zero: list[int] = []
    if fix_zero:
        needs = np.zeros(K, dtype=bool)
        needs[devices[ctx.upload_bits > 0]] = True
        zero = np.flatnonzero(needs & (bw == 0)).tolist()
        if zero:
            bw[zero] = bw[bw > 0].min()
            bw = _to_band(bw, B, exact=True)
    return bw, zero


def _to_band(w: np.ndarray, total_hz: float, *, exact: bool) -> np.ndarray:
    """Weights as Hz: ``B · w / Σ w`` (``exact``: Hz kept when they sum to at most ``B``)."""
    if exact and float(w.sum()) <= total_hz:
        return w
    w = w / w.max()  # no sum overflows, no share underflows
    out: np.ndarray = total_hz * w / w.sum()
    return out


def action_of(ctx: RoundContext, allocation: Allocation) -> dict[str, np.ndarray]:
    """The action that asks for ``allocation`` (shares are its bandwidths over ``B``).

    Through the shares the bandwidths come back to within rounding (``B · s / Σ s``); pass the
    :class:`~desim.allocators.base.Allocation` itself to :meth:`DeftEnv.step
    <desim.gym.env.DeftEnv.step>` for the allocator's own Hz, bit for bit.
    """
    return {"assignment": np.asarray(allocation.block_device, dtype=np.int64).copy(),
            "bandwidth": np.asarray(allocation.bandwidth_hz, dtype=float)
            / ctx.total_bandwidth_hz}
