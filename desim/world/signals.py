"""What the engine asks of a bundle of piecewise-constant signals, whatever holds them.

Three classes answer it: :class:`~desim.world.piecewise.PiecewiseSignals` (rows on one shared
grid, held in memory), :class:`~desim.world.ragged.RaggedSignals` (groups of rows on their own
grids, a replayed large trace) and :class:`~desim.world.chunked.ChunkedSignals` (rows generated
on demand, chunk by chunk, for as long as they are asked about). Channels and compute
timelines hold one and integrate through it; nothing outside them needs to know which.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from desim.world.piecewise import RateFn


class Signals(Protocol):
    """``K`` piecewise-constant, non-negative signals of time, one row per device."""

    @property
    def row_min(self) -> np.ndarray:
        """``(K,)`` a lower bound of every value of each row.

        The smallest value for signals held in memory; for generated ones, the least the
        generator can give.
        """
        ...

    @property
    def num_rows(self) -> int:
        """Number of signals ``K``."""
        ...

    def at(self, t_s: float) -> np.ndarray:
        """Values of every signal at time ``t_s`` (seconds ≥ 0), shape ``(K,)``."""
        ...

    def integrate_until(
        self,
        rows: np.ndarray,
        start_s: np.ndarray,
        amount: np.ndarray,
        rate_fn: RateFn | None = None,
        window: int = 16,
    ) -> np.ndarray:
        """Earliest times ``(m,)`` at which ``∫ rate(v_row(t)) dt`` reaches ``amount``."""
        ...

    def segments_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, width: int = 16
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pieces of each row over ``[start, end)``: durations and values ``(m, W)``."""
        ...

    def integrate_between(
        self, rows: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
        rate_fn: RateFn | None = None,
    ) -> np.ndarray:
        """``∫_{start}^{end} rate(v_row(t)) dt`` for each query ``(m,)``."""
        ...
