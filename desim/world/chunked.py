"""Piecewise-constant signals generated on demand, chunk by chunk, for any number of rows.

A generated channel or compute timeline (:mod:`desim.world.generated`) is a function of time
that a run only ever asks about near its current time, and only for some devices: every
device at a round's start, the participants over their phases. :class:`ChunkedSignals` holds
no horizon. Time is cut into the generator's segments (``j·step_s``: a fading block, a
mobility sample, a window of the compute process) and segments into fixed chunks; a chunk is
generated for the rows a query needs when first asked, and a bounded number of recent chunks is
kept (least recently used first out).

Exactness: a source's values are pure functions of (seed, stream, row, segment), and a chunk
boundary is always a segment boundary, so the pieces of a row never depend on the chunk size,
nor on where a query starts or which rows were generated with it. Integration adds the pieces
one by one from the query's start in a running sum (a pass of several chunks continues the
previous pass's sum; it never subtracts), and pieces before the start, or padding, add an exact
zero. So every answer is the same to the bit at any chunk size; the tests check it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from desim.world.piecewise import ROUNDING, RateFn, integral_of_pieces

STALL_S = 1e6
"""A query that has accumulated nothing this long (seconds) after its start never finishes."""
PROBE = np.array([0.0, 1.0, 1e300])
"""Values a rate function is tried at before integrating (see ``integrate_until``)."""
MAX_PASS_CHUNKS = 16
"""Chunks one integration pass examines at most (the count doubles from 1 per pass)."""


class PieceSource(Protocol):
    """A generator :class:`ChunkedSignals` asks for pieces, segment range by segment range.

    Hooks: :attr:`step_s`, :attr:`num_rows`, :attr:`row_min` and :meth:`pieces`.
    """

    @property
    def step_s(self) -> float:
        """Length of one segment in seconds; segment ``j`` starts at ``float(j) * step_s``."""
        ...

    @property
    def num_rows(self) -> int:
        """Number of rows ``K``."""
        ...

    @property
    def row_min(self) -> np.ndarray:
        """``(K,)`` a lower bound of every value a row can take."""
        ...

    def pieces(self, rows: np.ndarray, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of ``rows`` ``(r,)`` over segments ``[j0, j1)``.

        Returns:
            ``bounds`` ``(P + 1,)`` shared by every row, or ``(r, P + 1)``: non-decreasing,
            from ``float(j0) * step_s`` to ``float(j1) * step_s``, holding every segment
            boundary between (pieces of zero width are allowed); and ``values`` ``(r, P)``,
            finite and non-negative, each a pure function of its row and segment.
        """
        ...


def _pad(bounds: np.ndarray, values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``(n, P + 1)`` bounds and ``(n, P)`` values to ``width`` pieces of zero width."""
    extra = width - values.shape[1]
    if extra <= 0:
        return bounds, values
    return (np.concatenate([bounds, np.repeat(bounds[:, -1:], extra, axis=1)], axis=1),
            np.concatenate([values, np.repeat(values[:, -1:], extra, axis=1)], axis=1))


@dataclass(eq=False)
class _Chunk:
    """One chunk's pieces for the rows generated so far.

    Attributes:
        slot: ``(K,)`` where each row's pieces are (``-1``: not generated yet).
        bounds: ``(P + 1,)`` shared by every row, or ``(n, P + 1)``.
        values: ``(n, P)`` in the source's dtype.
    """

    slot: np.ndarray
    bounds: np.ndarray | None = None
    values: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        held = [a.nbytes for a in (self.bounds, self.values) if a is not None]
        return int(self.slot.nbytes + sum(held))

    def add(self, rows: np.ndarray, bounds: np.ndarray, values: np.ndarray) -> None:
        """Append the pieces of ``rows`` (none of them held yet)."""
        if self.values is None or self.bounds is None:
            self.bounds, self.values = bounds, values
        else:
            if bounds.ndim == 2 or self.bounds.ndim == 2:  # rows on their own bounds
                width = max(values.shape[1], self.values.shape[1])
                old = np.broadcast_to(self.bounds, (self.values.shape[0], self.bounds.shape[-1]))
                new = np.broadcast_to(bounds, (values.shape[0], bounds.shape[-1]))
                old_b, old_v = _pad(old, self.values, width)
                new_b, new_v = _pad(new, values, width)
                self.bounds = np.concatenate([old_b, new_b])
                self.values = np.concatenate([old_v, new_v])
            else:
                self.values = np.concatenate([self.values, values])
        self.slot[rows] = np.arange(self.values.shape[0] - rows.size, self.values.shape[0])

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``bounds`` ``(m, P + 1)`` and float64 ``values`` ``(m, P)`` of held ``rows``."""
        assert self.bounds is not None and self.values is not None
        s = self.slot[rows]
        values = self.values[s].astype(float)
        if self.bounds.ndim == 1:
            return np.broadcast_to(self.bounds, (rows.size, self.bounds.size)), values
        return self.bounds[s], values


class ChunkedSignals:
    """``K`` piecewise-constant signals generated chunk by chunk from a :class:`PieceSource`.

    The same questions as :class:`~desim.world.piecewise.PiecewiseSignals` (the
    :class:`~desim.world.signals.Signals` protocol), on a signal with no end: it never
    loops or holds unless its source does.

    Args:
        source: the generator.
        chunk_segments: segments per chunk.
        cache_bytes: bytes of chunks kept (at least the chunk in use is kept).
    """

    def __init__(self, source: PieceSource, chunk_segments: int = 64,
                 cache_bytes: int = 64 << 20) -> None:
        if chunk_segments < 1:
            raise ValueError(f"chunk_segments must be at least 1, got {chunk_segments}")
        self.source = source
        self.chunk_segments = int(chunk_segments)
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[int, _Chunk] = OrderedDict()
        self._bytes = 0
        self._last_at: tuple[float, np.ndarray] | None = None

    @property
    def num_rows(self) -> int:
        """Number of signals ``K``."""
        return self.source.num_rows

    @property
    def row_min(self) -> np.ndarray:
        """``(K,)`` a lower bound of every value of each row (the generator's)."""
        return self.source.row_min

    @property
    def cached_bytes(self) -> int:
        """Bytes of generated chunks held now (at most about ``cache_bytes``)."""
        return self._bytes

    def _segment_of(self, t_s: np.ndarray) -> np.ndarray:
        """Segment ``j`` with ``j·step ≤ t < (j + 1)·step`` of each time ``(m,)``."""
        step = self.source.step_s
        t = np.asarray(t_s, dtype=float)
        j = np.floor(t / step)
        j = np.where(j * step > t, j - 1.0, j)
        j = np.where((j + 1.0) * step <= t, j + 1.0, j)
        return np.maximum(j, 0.0).astype(np.int64)

    def _chunk_start_s(self, chunk: np.ndarray) -> np.ndarray:
        """Start times of chunks ``(m,)``: the start of their first segment."""
        return (chunk * self.chunk_segments).astype(float) * self.source.step_s

    def _chunk(self, c: int, rows: np.ndarray) -> _Chunk:
        """Chunk ``c`` with ``rows`` generated, fetched from the cache or made now."""
        held = self._cache.get(c)
        if held is None:
            held = _Chunk(np.full(self.num_rows, -1, dtype=np.int64))
            self._cache[c] = held
        else:
            self._cache.move_to_end(c)
        missing = np.unique(rows[held.slot[rows] < 0])
        if missing.size:
            S = self.chunk_segments
            bounds, values = self.source.pieces(missing, c * S, (c + 1) * S)
            before = held.nbytes if held.values is not None else 0
            held.add(missing, bounds, values)
            self._bytes += held.nbytes - before
            while self._bytes > self.cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= old.nbytes
        return held

    def _pieces(self, rows: np.ndarray, chunks: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``lo``, ``hi`` and float64 values ``(m, P)`` of each query's chunk."""
        uniq = np.unique(chunks)
        if uniq.size == 1:
            bounds, values = self._chunk(int(uniq[0]), rows).take(rows)
            return bounds[:, :-1], bounds[:, 1:], values
        parts = []
        for c in uniq:
            q = np.flatnonzero(chunks == c)
            parts.append((q, *self._chunk(int(c), rows[q]).take(rows[q])))
        width = max(v.shape[1] for _, _, v in parts)
        bounds = np.empty((rows.size, width + 1))
        values = np.empty((rows.size, width))
        for q, b, v in parts:
            bounds[q], values[q] = _pad(np.asarray(b), v, width)
        return bounds[:, :-1], bounds[:, 1:], values

    def _span(self, rows: np.ndarray, first: np.ndarray, count: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pieces of ``count`` consecutive chunks from ``first`` ``(m,)``, side by side."""
        parts = [self._pieces(rows, first + o) for o in range(count)]
        if count == 1:
            return parts[0]
        lo, hi, values = zip(*parts)
        return (np.concatenate(lo, axis=1), np.concatenate(hi, axis=1),
                np.concatenate(values, axis=1))

    def at(self, t_s: float) -> np.ndarray:
        """Values of every signal at time ``t_s`` (seconds ≥ 0), shape ``(K,)``.

        Read from the cache when the chunk is held for every row; otherwise only the one
        segment is generated (the same values, being pure functions of the segment).
        """
        t = float(t_s)
        if self._last_at is not None and self._last_at[0] == t:
            return self._last_at[1].copy()
        rows = np.arange(self.num_rows)
        j = int(self._segment_of(np.array([t]))[0])
        held = self._cache.get(j // self.chunk_segments)
        if held is not None and held.values is not None and bool(np.all(held.slot >= 0)):
            bounds, values = held.take(rows)
        else:
            b, v = self.source.pieces(rows, j, j + 1)
            bounds = np.broadcast_to(b, (rows.size, b.shape[-1]))
            values = np.asarray(v, dtype=float)
        idx = np.maximum(np.sum(bounds[:, :-1] <= t, axis=1) - 1, 0)
        out = values[rows, idx]
        self._last_at = (t, out)
        return out.copy()

    def integrate_until(
        self,
        rows: np.ndarray,
        start_s: np.ndarray,
        amount: np.ndarray,
        rate_fn: RateFn | None = None,
        window: int = 16,
    ) -> np.ndarray:
        """Earliest times at which each query has accumulated its amount.

        Solves ``∫_{start}^{end} rate(v_row(t)) dt = amount`` exactly over the pieces, one
        chunk, then two, four ... per pass (``window`` is accepted for the protocol and
        unused).

        Args:
            rows: signal row of each query ``(m,)``.
            start_s: start time of each query in seconds ``(m,)``.
            amount: amount to accumulate ``(m,)``, ≥ 0.
            rate_fn: maps values to rates (identity when ``None``).
            window: unused.

        Returns:
            End times ``(m,)``; ``inf`` where the rate is zero at every value of
            :data:`PROBE` or nothing accumulates within :data:`STALL_S`.
        """
        rows = np.asarray(rows, dtype=np.intp)
        start = np.broadcast_to(np.asarray(start_s, dtype=float), rows.shape)
        need = np.broadcast_to(np.asarray(amount, dtype=float), rows.shape)
        end = np.where(need > 0, np.inf, start)
        reach = need - ROUNDING * need  # a piece's integral can come out an ulp short
        act = np.flatnonzero(need > 0)
        if rate_fn is not None and act.size:
            # a rate that is zero at 0, 1 and 1e300 (a zero bandwidth) is zero everywhere:
            # such a query never finishes, and scanning would only find that at STALL_S
            probe = np.broadcast_to(PROBE, (act.size, PROBE.size)).copy()
            with np.errstate(all="ignore"):
                alive = np.any(rate_fn(probe, act) > 0, axis=1)
            act = act[alive]
        t = start[act]
        carried = np.zeros(act.size)
        chunk = self._segment_of(t) // self.chunk_segments
        count = 1
        while act.size:
            lo, hi, values = self._span(rows[act], chunk, count)
            lo = np.maximum(lo, t[:, None])  # pieces before the start: zero width
            hi = np.maximum(hi, t[:, None])
            rate = values if rate_fn is None else rate_fn(values, act)
            width = hi - lo
            with np.errstate(invalid="ignore"):
                inc = np.where((width > 0) & (rate > 0), rate * width, 0.0)
            cum = np.cumsum(np.concatenate([carried[:, None], inc], axis=1), axis=1)
            got = reach[act]
            done = cum[:, -1] >= got
            if done.any():
                d = np.flatnonzero(done)
                k = np.sum(cum[d, 1:] < got[d, None], axis=1)  # first piece reaching it
                finish = lo[d, k] + (need[act[d]] - cum[d, k]) / rate[d, k]
                end[act[d]] = np.minimum(finish, hi[d, k])
            chunk = chunk + count
            t = self._chunk_start_s(chunk)
            go = ~done & ~((cum[:, -1] <= 0) & (t - start[act] >= STALL_S))
            act, carried, t, chunk = act[go], cum[go, -1], t[go], chunk[go]
            count = min(2 * count, MAX_PASS_CHUNKS)
        return end

    def segments_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, width: int = 16
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of each row over ``[start, end)``: durations and values, ``(m, W)``.

        Column ``i`` of a query is its ``i``-th piece from the start, cut at ``end``; columns
        past the last piece have zero duration and hold its value. ``W`` is ``width`` doubled
        until every query's pieces fit, so it depends on the pieces alone.
        """
        rows = np.asarray(rows, dtype=np.intp)
        m = rows.size
        start = np.broadcast_to(np.asarray(start_s, dtype=float), rows.shape)
        end = np.maximum(np.broadcast_to(np.asarray(end_s, dtype=float), rows.shape), start)
        S = self.chunk_segments
        first = self._segment_of(start) // S
        # the chunk of the last instant before the end (an end on a boundary opens no chunk)
        last_seg = self._segment_of(end)
        last_seg = np.where(last_seg.astype(float) * self.source.step_s >= end, last_seg - 1,
                            last_seg)
        n = np.maximum(last_seg // S, first) - first + 1
        durations, values = [], []
        at_start = np.zeros(m)
        for o in range(int(n.max(initial=1))):
            on = np.flatnonzero(o < n)
            lo, hi, val = self._pieces(rows[on], first[on] + o)
            if o == 0:
                idx = np.maximum(np.sum(lo <= start[:, None], axis=1) - 1, 0)
                at_start = val[np.arange(m), idx]
            dur = np.zeros((m, val.shape[1]))
            full = np.zeros((m, val.shape[1]))
            s, e = start[on, None], end[on, None]
            dur[on] = np.clip(hi, s, e) - np.clip(lo, s, e)
            full[on] = val
            durations.append(dur)
            values.append(full)
        dur, val = np.concatenate(durations, axis=1), np.concatenate(values, axis=1)
        valid = dur > 0
        count = valid.sum(axis=1)
        w = max(1, int(width))
        while w < int(count.max(initial=0)):
            w *= 2
        if dur.shape[1] < w:
            pad = w - dur.shape[1]
            dur = np.concatenate([dur, np.zeros((m, pad))], axis=1)
            val = np.concatenate([val, np.zeros((m, pad))], axis=1)
            valid = np.concatenate([valid, np.zeros((m, pad), dtype=bool)], axis=1)
        order = np.argsort(~valid, axis=1, kind="stable")[:, :w]
        dur = np.take_along_axis(dur, order, axis=1)
        val = np.take_along_axis(val, order, axis=1)
        last = np.where(count > 0, val[np.arange(m), np.maximum(count - 1, 0)], at_start)
        inside = np.arange(w)[None, :] < count[:, None]
        return np.where(inside, dur, 0.0), np.where(inside, val, last[:, None])

    def integrate_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
        rate_fn: RateFn | None = None,
    ) -> np.ndarray:
        """``∫_{start}^{end} rate(v_row(t)) dt`` for each query ``(m,)``, exact per piece."""
        return integral_of_pieces(*self.segments_between(rows, start_s, end_s), rate_fn)
