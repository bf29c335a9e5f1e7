"""Piecewise-constant signals over time and their exact integration.

Channel gains and device speed factors are both modelled as piecewise-constant functions of
time, one row per device, on a shared grid of breakpoints. This module is the single mechanism
that answers "when has a device accumulated this much?" for compute work (integrating speed)
and for uploads (integrating the Shannon rate). Refining a piecewise-constant grid never changes
the function, so rows with different native grids can always share the union of breakpoints.

Assumptions: the grid starts at ``t = 0``; segment ``i`` holds ``values[:, i]`` on
``[times_s[i], times_s[i + 1])`` and the last one on ``[times_s[-1], end_s)``. After ``end_s`` the
signal either repeats with period ``end_s`` (``loop``) or keeps its last value forever (``hold``).
A rate of zero stalls accumulation; it does not fail. Integration is exact up to float rounding.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

EndPolicy = Literal["loop", "hold"]
ROUNDING = 1e-9
"""Relative slack for amounts that sums of segment integrals meet only up to float rounding."""
RateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``rate_fn(values, which)`` maps signal values ``(m, W)`` to accumulation rates ``(m, W)``;
``which`` ``(m,)`` indexes the caller's query arrays so per-query parameters can be applied."""


@dataclass(frozen=True, eq=False)
class PiecewiseSignals:
    """A bundle of ``K`` piecewise-constant signals on a shared time grid.

    Attributes:
        times_s: segment start times ``(T,)``, strictly increasing, starting at 0.
        values: signal values ``(K, T)``, finite and non-negative.
        end_s: end of the last segment in seconds (``> times_s[-1]``).
        end_policy: ``"loop"`` to repeat with period ``end_s``, ``"hold"`` to keep the last value.
    """

    times_s: np.ndarray
    values: np.ndarray
    end_s: float
    end_policy: EndPolicy = "hold"
    # derived in __post_init__: segment bounds ``(T + 1,)`` (``times_s`` then ``end_s``) and
    # the smallest value of each row ``(K,)``
    _bounds: np.ndarray = field(init=False, repr=False, compare=False)
    row_min: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        times = np.ascontiguousarray(self.times_s, dtype=float)
        values = np.ascontiguousarray(self.values, dtype=float)
        if values.ndim == 1:
            values = values[None, :]
        if times.ndim != 1 or times.size == 0 or times[0] != 0.0:
            raise ValueError("times_s must be a non-empty 1-D array starting at 0")
        if np.any(np.diff(times) <= 0):
            raise ValueError("times_s must be strictly increasing")
        if values.shape[1] != times.size:
            raise ValueError(f"values has {values.shape[1]} columns, expected {times.size}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("values must be finite and non-negative")
        if not self.end_s > times[-1]:
            raise ValueError("end_s must exceed the last segment start")
        if self.end_policy not in ("loop", "hold"):
            raise ValueError(f"end_policy must be 'loop' or 'hold', got {self.end_policy!r}")
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_bounds", np.append(times, float(self.end_s)))
        object.__setattr__(self, "row_min", values.min(axis=1))  # (K,) smallest value per row

    @classmethod
    def constant(cls, values: np.ndarray) -> PiecewiseSignals:
        """Signals that hold ``values`` ``(K,)`` for all time."""
        return cls(np.zeros(1), np.asarray(values, dtype=float)[:, None], 1.0, "hold")

    @property
    def num_rows(self) -> int:
        """Number of signals ``K``."""
        return int(self.values.shape[0])

    def _local(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map absolute times to ``(cycle, segment index)``; cycle is 0 under ``hold``."""
        t = np.asarray(t_s, dtype=float)
        if self.end_policy == "loop":
            cycle = np.floor(t / self.end_s)
            local = t - cycle * self.end_s
            wrapped = local >= self.end_s  # float rounding at a period boundary
            cycle = np.where(wrapped, cycle + 1, cycle)
            local = np.where(wrapped, 0.0, local)
        else:
            cycle = np.zeros_like(t)
            local = t
        # times_s[0] == 0 and local >= 0, so the index is always in [0, T - 1]
        return cycle, np.searchsorted(self.times_s, local, side="right") - 1

    def at(self, t_s: float) -> np.ndarray:
        """Values of every signal at time ``t_s`` (seconds ≥ 0), shape ``(K,)``."""
        # scalar lookups run once per round per signal: plain floats and bisect beat numpy here
        times = self.__dict__.get("_times_list")
        if times is None:
            times = self.times_s.tolist()
            object.__setattr__(self, "_times_list", times)
        t = float(t_s)
        if self.end_policy == "loop":
            t = math.fmod(t, self.end_s)
        return self.values[:, max(bisect.bisect_right(times, t) - 1, 0)]

    def _window(
        self, t_s: np.ndarray, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Segments ``[lo, hi)`` ``(m, width)`` from each query time on, with grid indices.

        The first column starts at the query time itself. Under ``hold`` the last segment has
        ``hi = inf`` and later columns are empty; ``forever`` ``(m,)`` flags queries whose
        window reached that held segment.
        """
        n_seg = self.times_s.size
        steps = np.arange(width)
        if self.end_policy == "loop":
            cycle, local = np.divmod(t_s, self.end_s)
            j = (np.searchsorted(self.times_s, local, side="right") - 1)[:, None] + steps
            if j[:, -1].max() < n_seg:  # no wrap inside the window (the common case)
                seg, base = j, (cycle * self.end_s)[:, None]
            else:
                wraps, seg = np.divmod(j, n_seg)
                base = (cycle[:, None] + wraps) * self.end_s
            lo = base + self.times_s[seg]
            hi = base + self._bounds[seg + 1]
            forever = np.zeros(t_s.size, dtype=bool)
        else:
            j = (np.searchsorted(self.times_s, t_s, side="right") - 1)[:, None] + steps
            seg = np.minimum(j, n_seg - 1)
            lo = np.where(j > n_seg - 1, np.inf, self.times_s[seg])
            hi = np.where(j >= n_seg - 1, np.inf, self._bounds[np.minimum(j + 1, n_seg)])
            forever = j[:, -1] >= n_seg - 1
        lo[:, 0] = t_s
        return lo, hi, seg, forever

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``C`` ``(K, T+1)`` integral from 0 to each breakpoint, and a flat sorted key array.

        Row ``k`` of ``C`` is shifted by ``k·(max C + 1)`` so every row's search is one
        ``searchsorted`` over the flattened array. Computed once, on first use.
        """
        cached = self.__dict__.get("_cum")
        if cached is None:
            widths = np.diff(self._bounds)
            cum = np.zeros((self.num_rows, widths.size + 1))
            np.cumsum(self.values * widths, axis=1, out=cum[:, 1:])
            offset = np.arange(self.num_rows) * (float(cum[:, -1].max()) + 1.0)
            flat = (cum[:, 1:] + offset[:, None]).ravel()
            cached = (cum, offset, flat)
            object.__setattr__(self, "_cum", cached)
        return cached

    def _invert_cumulative(
        self, rows: np.ndarray, start: np.ndarray, amount: np.ndarray
    ) -> np.ndarray:
        """Exact end times for the identity rate in O(1) vector operations (any horizon)."""
        cum, offset, flat = self._cumulative()
        n_seg = self.times_s.size
        per_period = cum[rows, -1]
        loop = self.end_policy == "loop"
        if loop:
            cycle, local = np.divmod(start, self.end_s)
        else:
            cycle, local = np.zeros_like(start), start
        seg = np.searchsorted(self.times_s, local, side="right") - 1
        at_start = (
            cycle * per_period
            + cum[rows, seg]
            + self.values[rows, seg] * (local - self.times_s[seg])
        )
        target = at_start + amount
        with np.errstate(divide="ignore", invalid="ignore"):
            if loop:
                cyc2 = np.floor(target / per_period)
                rem = target - cyc2 * per_period
                # a target on a period boundary (up to rounding) ends in the previous period's
                # last positive segment, not after the next period's leading zeros
                back = (rem <= ROUNDING * np.abs(target)) & (cyc2 > 0)
                cyc2 = np.where(back, cyc2 - 1, cyc2)
                rem = np.minimum(np.where(back, rem + per_period, rem), per_period)
            else:
                cyc2 = np.zeros_like(target)
                rem = np.minimum(target, per_period)
            # search with the rounding slack so a need met by a segment's end is not carried
            # past the zero-rate stretch that follows it
            idx = np.searchsorted(flat, rem * (1.0 - ROUNDING) + offset[rows], side="left")
            j = np.minimum(np.maximum(idx - rows * n_seg, 0), n_seg - 1)
            end = self.times_s[j] + (rem - cum[rows, j]) / self.values[rows, j]
            end = cyc2 * self.end_s + np.minimum(end, self._bounds[j + 1])
            if not loop:  # past the end the last value holds
                last = self.values[rows, -1]
                beyond = self.end_s + (target - per_period) / last
                end = np.where(target > per_period, beyond, end)
        end = np.where(np.isfinite(end), end, np.inf)
        if loop:
            end = np.where(per_period > 0, end, np.inf)
        end = np.where(amount <= 0, start, end)
        lost = np.flatnonzero((amount > 0) & (end <= start))
        if lost.size:  # the amount vanished in float rounding: let the scan find the next gain
            end[lost] = self.integrate_until(rows[lost], start[lost], amount[lost], lambda v, _w: v)
        return end

    def _skip_periods(
        self,
        rows: np.ndarray,
        active: np.ndarray,
        t: np.ndarray,
        remaining: np.ndarray,
        rate_fn: RateFn | None,
    ) -> np.ndarray:
        """Advance looping queries by whole periods while two or more periods remain.

        ``t`` and ``remaining`` are updated in place; returns the queries still active (rows
        with zero rate over a whole period never finish and are dropped).
        """
        values = self.values[rows[active]]
        rate = values if rate_fn is None else rate_fn(values, active)
        per_period = rate @ np.diff(self._bounds)
        with np.errstate(divide="ignore", invalid="ignore"):
            cycles = np.floor(remaining[active] / per_period) - 1.0
        skip = (per_period > 0) & (cycles >= 1.0)
        idx = active[skip]
        t[idx] += cycles[skip] * self.end_s
        remaining[idx] -= cycles[skip] * per_period[skip]
        return active[per_period > 0]

    def integrate_until(
        self,
        rows: np.ndarray,
        start_s: np.ndarray,
        amount: np.ndarray,
        rate_fn: RateFn | None = None,
        window: int = 16,
    ) -> np.ndarray:
        """Earliest times at which each query has accumulated its amount.

        Solves ``∫_{start}^{end} rate(v_row(t)) dt = amount`` for ``end``, exactly over the
        piecewise-constant segments, for many queries at once.

        Args:
            rows: signal row of each query ``(m,)``.
            start_s: start time of each query in seconds ``(m,)``.
            amount: amount to accumulate ``(m,)`` (work seconds, bits, ...), ≥ 0.
            rate_fn: maps values to rates (identity when ``None``).
            window: segments examined per query per pass (grows geometrically).

        Returns:
            End times ``(m,)`` in seconds; ``inf`` where the rate stays zero forever.
        """
        rows = np.asarray(rows, dtype=np.intp)
        start = np.asarray(start_s, dtype=float)
        remaining = np.array(amount, dtype=float)
        if self.times_s.size == 1:  # constant signal: one closed-form division
            values = self.values[rows, :1]
            rate = (values if rate_fn is None else rate_fn(values, np.arange(rows.size)))[:, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                dur = np.where(remaining > 0, remaining / rate, 0.0)
            return start + np.where(np.isnan(dur), np.inf, dur)
        if rate_fn is None:  # identity rate: invert the precomputed cumulative integral
            return self._invert_cumulative(rows, start, remaining)
        return self._scan_until(rows, start, remaining, rate_fn, max(1, int(window)))

    def _scan_until(
        self,
        rows: np.ndarray,
        start: np.ndarray,
        remaining: np.ndarray,
        rate_fn: RateFn,
        width: int,
    ) -> np.ndarray:
        """End times by scanning windows of segments (``remaining`` is updated in place).

        Each pass integrates ``width`` segments from every unfinished query's current time, and
        the window doubles per pass; after three passes a looping signal skips whole periods.
        """
        end = np.where(remaining <= 0, start, np.inf)
        total = remaining.copy()
        t = start.copy()
        active = np.flatnonzero(remaining > 0)
        passes = 0
        while active.size:
            lo, hi, seg, forever = self._window(t[active], width)
            rate = rate_fn(self.values[rows[active][:, None], seg], active)
            if self.end_policy == "loop":  # all segments finite: no inf * 0 to guard against
                inc = rate * (hi - lo)
            else:
                dur = np.subtract(hi, lo, out=np.zeros_like(lo), where=hi > lo)
                inc = np.multiply(rate, dur, out=np.zeros_like(lo), where=rate > 0)
            cum = np.cumsum(inc, axis=1)
            need = remaining[active]
            # a segment integral can come out an ulp short of a need it meets exactly
            reach = need - ROUNDING * total[active]  # errors grow with the amount processed
            done = cum[:, -1] >= reach
            if done.all():  # the common case: every query finishes here, no sub-indexing
                i = np.arange(active.size)
                k = np.sum(cum < reach[:, None], axis=1)  # first segment reaching the need
                before = np.where(k > 0, cum[i, k - 1], 0.0)
                end[active] = np.minimum(lo[i, k] + (need - before) / rate[i, k], hi[i, k])
                return end
            d = np.flatnonzero(done)
            if d.size:
                k = np.sum(cum[d] < reach[d, None], axis=1)  # first segment reaching the need
                before = np.where(k > 0, cum[d, k - 1], 0.0)
                finish = lo[d, k] + (need[d] - before) / rate[d, k]
                end[active[d]] = np.minimum(finish, hi[d, k])
            # a query stalls forever when its window reached the held last segment
            go_on = ~done & ~forever
            nxt = active[go_on]
            remaining[nxt] -= cum[go_on, -1]
            t[nxt] = hi[go_on, -1]
            active = nxt
            passes += 1
            if self.end_policy == "loop" and passes == 3 and active.size:
                # long accumulation on a looping signal: jump over whole periods arithmetically
                # (so huge amounts at tiny rates cost O(1) passes) and stop zero-rate rows
                active = self._skip_periods(rows, active, t, remaining, rate_fn)
            width = min(width * 2, 4096)
        return end

    def segments_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, width: int = 16
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of each row over ``[start, end)``: durations and values, ``(m, W)``.

        Column ``i`` of a query is the ``i``-th constant piece from its start, its duration cut
        at ``end`` (zero past it, and zero where ``end <= start``), so ``Σ f(values) ·
        durations`` is the exact integral of any ``f`` of the signal over the interval, the
        same pieces :meth:`integrate_until` integrates.
        """
        rows = np.asarray(rows, dtype=np.intp)
        start = np.asarray(start_s, dtype=float)
        end = np.maximum(np.asarray(end_s, dtype=float), start)
        width = max(1, int(width))
        while True:
            lo, hi, seg, forever = self._window(start, width)
            if bool(np.all((hi[:, -1] >= end) | forever)) or width >= 1 << 20:
                break
            width *= 2
        dur = np.clip(np.minimum(hi, end[:, None]) - np.minimum(lo, end[:, None]), 0.0, None)
        dur = np.where(np.isfinite(dur), dur, 0.0)
        return dur, self.values[rows[:, None], seg]

    def integrate_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
        rate_fn: RateFn | None = None,
    ) -> np.ndarray:
        """``∫_{start}^{end} rate(v_row(t)) dt`` for each query ``(m,)``, exact per piece."""
        return integral_of_pieces(*self.segments_between(rows, start_s, end_s), rate_fn)


def integral_of_pieces(durations: np.ndarray, values: np.ndarray,
                       rate_fn: RateFn | None = None) -> np.ndarray:
    """``Σ rate(value) · duration`` per row of ``segments_between``'s pieces ``(m, W)``.

    The one integral every signal type (:class:`PiecewiseSignals`, the ragged and the chunked
    signals) answers ``integrate_between`` with; empty pieces add nothing.
    """
    rate = values if rate_fn is None else rate_fn(values, np.arange(durations.shape[0]))
    return np.sum(np.where(durations > 0, rate * durations, 0.0), axis=1)
