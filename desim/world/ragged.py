"""Piecewise-constant signals whose rows keep their own time grids (a replayed large trace).

:class:`~desim.world.piecewise.PiecewiseSignals` holds ``K`` rows on one shared grid. When the
rows come from trace devices sampled at different times, that grid is the union of every
device's times, and the bundle costs ``K ×`` (all the trace's timestamps): 20 rows of a trace of
10⁷ rows with a time offset per device are 2·10⁸ cells. :class:`RaggedSignals` keeps instead a
group of rows per grid (the rows replaying one trace device from one offset), each group its
own :class:`~desim.world.piecewise.PiecewiseSignals`, and answers the same questions by asking
each group about its own rows. Each group integrates exactly on its own segments, so a query
gives the union-grid answer up to float rounding (a segment split by other rows' breakpoints is
summed in pieces there), and a row loops on its own length forever, with no shared period.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from desim.world.piecewise import EndPolicy, PiecewiseSignals, RateFn, integral_of_pieces


@dataclass(frozen=True, eq=False)
class RaggedSignals:
    """``K`` piecewise-constant signals in groups, each group on its own grid.

    Attributes:
        groups: one bundle per grid; every group has the same ``end_policy``.
        group_of: group of each row ``(K,)``.
        row_in_group: row of each signal within its group ``(K,)``.
    """

    groups: tuple[PiecewiseSignals, ...]
    group_of: np.ndarray
    row_in_group: np.ndarray
    row_min: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        policies = {g.end_policy for g in self.groups}
        if len(policies) != 1:
            raise ValueError("every group of ragged signals needs one end policy")
        mins = np.array([self.groups[g].row_min[r]
                         for g, r in zip(self.group_of, self.row_in_group)])
        object.__setattr__(self, "row_min", mins)  # (K,) smallest value per row

    @property
    def num_rows(self) -> int:
        """Number of signals ``K``."""
        return int(self.group_of.size)

    @property
    def end_policy(self) -> EndPolicy:
        """``loop`` or ``hold``, the same for every group."""
        return self.groups[0].end_policy

    def _split(self, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """``(group, query indices)`` for the groups of ``rows`` ``(m,)``."""
        of = self.group_of[rows]
        order = np.argsort(of, kind="stable")
        bounds = np.flatnonzero(np.diff(of[order])) + 1
        for part in np.split(order, bounds):
            if part.size:
                yield int(of[part[0]]), part

    def at(self, t_s: float) -> np.ndarray:
        """Values of every signal at time ``t_s`` (seconds ≥ 0), shape ``(K,)``."""
        out = np.empty(self.num_rows)
        for g, rows in self._split(np.arange(self.num_rows)):
            out[rows] = self.groups[g].at(t_s)[self.row_in_group[rows]]
        return out

    def integrate_until(
        self,
        rows: np.ndarray,
        start_s: np.ndarray,
        amount: np.ndarray,
        rate_fn: RateFn | None = None,
        window: int = 16,
    ) -> np.ndarray:
        """Earliest times at which each query has accumulated its amount.

        As :meth:`PiecewiseSignals.integrate_until`, group by group; ``rate_fn``'s second
        argument still indexes this call's queries.

        Args:
            rows: signal row of each query ``(m,)``.
            start_s: start time of each query in seconds ``(m,)``.
            amount: amount to accumulate ``(m,)``, ≥ 0.
            rate_fn: maps values to rates (identity when ``None``).
            window: segments examined per query per pass.

        Returns:
            End times ``(m,)`` in seconds; ``inf`` where the rate stays zero forever.
        """
        rows = np.asarray(rows, dtype=np.intp)
        start = np.broadcast_to(np.asarray(start_s, dtype=float), rows.shape)
        need = np.broadcast_to(np.asarray(amount, dtype=float), rows.shape)
        out = np.empty(rows.size)
        for g, q in self._split(rows):
            fn = None if rate_fn is None else _within(rate_fn, q)
            out[q] = self.groups[g].integrate_until(
                self.row_in_group[rows[q]], start[q], need[q], fn, window
            )
        return out

    def segments_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, width: int = 16
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of each row over ``[start, end)``: durations and values, ``(m, W)``.

        As :meth:`PiecewiseSignals.segments_between`; a group with fewer pieces is padded with
        pieces of zero duration (holding its last value).
        """
        rows = np.asarray(rows, dtype=np.intp)
        start = np.broadcast_to(np.asarray(start_s, dtype=float), rows.shape)
        end = np.broadcast_to(np.asarray(end_s, dtype=float), rows.shape)
        parts = []
        for g, q in self._split(rows):
            dur, val = self.groups[g].segments_between(
                self.row_in_group[rows[q]], start[q], end[q], width
            )
            parts.append((q, dur, val))
        w = max((d.shape[1] for _, d, _ in parts), default=1)
        durations = np.zeros((rows.size, w))
        values = np.zeros((rows.size, w))
        for q, dur, val in parts:
            durations[q, : dur.shape[1]] = dur
            values[q] = val[:, -1:]
            values[q, : val.shape[1]] = val
        return durations, values

    def integrate_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
        rate_fn: RateFn | None = None,
    ) -> np.ndarray:
        """``∫_{start}^{end} rate(v_row(t)) dt`` for each query ``(m,)``, exact per piece."""
        return integral_of_pieces(*self.segments_between(rows, start_s, end_s), rate_fn)


def _within(rate_fn: RateFn, queries: np.ndarray) -> RateFn:
    """``rate_fn`` for a group's sub-call, whose query ``i`` is the caller's ``queries[i]``."""

    def rate(values: np.ndarray, which: np.ndarray) -> np.ndarray:
        return rate_fn(values, queries[which])

    return rate
