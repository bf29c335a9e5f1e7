"""Marked Poisson processes generated window by window from counter-based draws.

Both processes of the generated compute timeline (:mod:`desim.world.compute`) are, in law,
*events at a constant rate, each setting a fresh i.i.d. level*:

- the background load: levels ``~ Beta`` held for exponential times of mean ``load_hold_s``;
- on/off availability, an alternating renewal process with exponential up and down times
  (means ``u`` and ``d``), i.e. a two-state Markov chain. Uniformised at the total rate
  ``1/u + 1/d``, every event sets the state to up with probability ``u / (u + d)`` whatever it
  was (from up it then goes down with probability ``d/(u + d) = (1/u)/(1/u + 1/d)``, the jump
  probability of the chain; from down symmetrically), and the chain starts in that same
  stationary law. Events that keep the state are breakpoints that change nothing.

Time is cut into windows of fixed length ``W`` (a model constant, never a chunk size). By the
memoryless property the events of window ``w`` are drawn on their own: exponential gaps
``-mean·log u`` from the window's start until one passes its end, gap ``s`` and mark ``s`` from
counter ``(w, s)``. The level at a window's start is the mark of the last event of the latest
earlier window that has one, or the initial level at time 0; it is found by looking back
(windows without events are about ``exp(-W / mean)`` likely), so every window is a pure
function of (key, device, window) and none needs a carried state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from desim.world.draws import CounterDraws


@dataclass(frozen=True, eq=False)
class MarkedPoisson:
    """Events at rate ``1/mean_s``, each setting a level ``mark(u)`` of a fresh uniform ``u``.

    Attributes:
        draws: the counter-based draws.
        mean_s: mean time between events.
        window_s: the window length ``W``.
        mark: uniforms to levels (an inverse CDF), elementwise.
        component: the draws' component of the gaps (``component + 1``: the marks).
        period: windows after which the realisation repeats (``None``: never).
    """

    draws: CounterDraws
    mean_s: float
    window_s: float
    mark: Callable[[np.ndarray], np.ndarray]
    component: int
    period: int | None = None
    # the last windows made: a timeline's speed and availability ask for the same ones
    _last: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def local(self, w: int) -> int:
        """The window of the realisation that global window ``w`` repeats."""
        return w if self.period is None else w % self.period

    def initial(self, rows: np.ndarray) -> np.ndarray:
        """The level at time 0 ``(r,)`` (the stationary law)."""
        return self.mark(self.draws.uniform(rows, [0], 0, self.component + 1)[:, 0])

    def events(self, rows: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Events of (local) window ``w``: offsets from its start and levels ``(r, E)``.

        Returns:
            ``(offsets_s, levels, count)``; entries past a row's ``count`` are ``inf`` and 0.
        """
        total = np.zeros(rows.size)
        offsets = []
        s = 0
        while True:
            gap = self.mean_s * self.draws.exponential(rows, [w], s, self.component)[:, 0]
            total = total + gap
            inside = total < self.window_s
            if not inside.any():
                break
            offsets.append(np.where(inside, total, np.inf))
            s += 1
        if not offsets:
            return np.zeros((rows.size, 0)), np.zeros((rows.size, 0)), np.zeros(rows.size, int)
        off = np.stack(offsets, axis=1)
        u = np.stack([self.draws.uniform(rows, [w], k + 1, self.component + 1)[:, 0]
                      for k in range(off.shape[1])], axis=1)
        inside = np.isfinite(off)
        levels = np.zeros(off.shape)
        levels[inside] = self.mark(u[inside])  # an inverse CDF only where an event is
        return off, levels, np.sum(inside, axis=1)

    def start_level(self, rows: np.ndarray, w: int) -> np.ndarray:
        """The level ``(r,)`` at the start of (local) window ``w``, by looking back."""
        level = np.zeros(rows.size)
        todo = np.arange(rows.size)
        back = w - 1
        while todo.size and back >= 0:
            _, marks, count = self.events(rows[todo], back)
            has = count > 0
            level[todo[has]] = marks[has, count[has] - 1]
            todo = todo[~has]
            back -= 1
        if todo.size:
            level[todo] = self.initial(rows[todo])
        return level

    def windows(self, rows: np.ndarray, j0: int, j1: int
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per global window ``j`` in ``[j0, j1)``: ``(start_level, offsets, levels, count)``."""
        key = (rows.tobytes(), j0, j1)
        if self._last.get("key") != key:
            self._last.update(key=key, windows=self._windows(rows, j0, j1))
        made: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = self._last["windows"]
        return made

    def _windows(self, rows: np.ndarray, j0: int, j1: int
                 ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        level = np.zeros(rows.size)
        for j in range(j0, j1):
            w = self.local(j)
            if j == j0 or w == 0:
                level = self.start_level(rows, w)
            off, marks, count = self.events(rows, w)
            out.append((level, off, marks, count))
            if marks.shape[1]:
                last = marks[np.arange(rows.size), np.maximum(count - 1, 0)]
                level = np.where(count > 0, last, level)
        return out


def levels_at(start: np.ndarray, offsets: np.ndarray, levels: np.ndarray,
              times: np.ndarray) -> np.ndarray:
    """The level ``(r, P)`` at window offsets ``times`` ``(r, P)`` of one window's process."""
    if offsets.shape[1] == 0:
        return np.repeat(start[:, None], times.shape[1], axis=1)
    seen = np.sum(offsets[:, None, :] <= times[:, :, None], axis=2)  # events up to each time
    last = np.take_along_axis(levels, np.maximum(seen - 1, 0), axis=1)
    return np.where(seen > 0, last, start[:, None])
