"""Counter-based random draws: every number a pure function of (key, component, device, index).

A generated channel or compute timeline is produced in chunks, on demand, so a device's draw
for segment ``j`` must not depend on which other segments were drawn before it, nor on how
many. numpy's :class:`~numpy.random.Philox` is a counter-based generator: its output is a
keyed hash of a 256-bit counter, so any draw can be produced directly from its counter. Here
the counter is ``(device // 4, index, slot, component)`` and the draw is word ``device % 4``
of that counter's output; the key (two 64-bit words) is taken from the run's named stream
(``channel`` or ``compute``), so draws stay a pure function of (seed, stream, component,
device, index, slot). One call of the generator gives ``index`` for every device up to the
largest one asked for, which suits the engine's access pattern: all devices at one time (a
round's snapshot), or a few devices over a short window (the participants' phases).

Uniforms are ``(⌊raw / 2¹¹⌋ + ½) · 2⁻⁵³``, strictly inside ``(0, 1)``, so that ``-log u`` and
the normal quantile of ``u`` are always finite. Every transformation here maps one uniform to
one value (inverse CDFs), never a variable number of them, so that the counter layout is the
whole story.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri

_TO_UNIT = 2.0**-53


@dataclass(frozen=True)
class CounterDraws:
    """Keyed uniform draws indexed by (component, device, index, slot).

    Attributes:
        key: the two 64-bit Philox key words (from the run's stream).
    """

    key: tuple[int, int]
    # one generator whose counter is set per call (cheaper than a new one each time)
    _bits: np.random.Philox = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bits", np.random.Philox(key=list(self.key)))

    @classmethod
    def from_rng(cls, rng: np.random.Generator) -> CounterDraws:
        """The key from two draws of ``rng`` (the run's ``channel`` or ``compute`` stream)."""
        words = rng.integers(0, 2**64, size=2, dtype=np.uint64, endpoint=False)
        return cls((int(words[0]), int(words[1])))

    def raw(self, rows: np.ndarray, index: int, slot: int, component: int) -> np.ndarray:
        """Raw 64-bit words ``(r,)`` of devices ``rows`` at one ``index`` and ``slot``."""
        rows = np.asarray(rows, dtype=np.intp)
        if rows.size == 0:
            return np.zeros(0, dtype=np.uint64)
        n = int(rows.max()) + 1
        counter = np.array([0, index, slot, component], dtype=np.uint64)
        self._bits.state = {
            "bit_generator": "Philox",
            "state": {"counter": counter, "key": np.array(self.key, dtype=np.uint64)},
            "buffer": np.zeros(4, dtype=np.uint64), "buffer_pos": 4,
            "has_uint32": 0, "uinteger": 0,
        }
        words: np.ndarray = self._bits.random_raw(n)
        return words[rows]

    def uniform(
        self, rows: np.ndarray, indices: Iterable[int], slot: int, component: int
    ) -> np.ndarray:
        """Uniforms in ``(0, 1)`` of shape ``(r, n)``: devices ``rows`` by ``indices``."""
        rows = np.asarray(rows, dtype=np.intp)
        cols = [self.raw(rows, int(i), slot, component) for i in indices]
        if not cols:
            return np.zeros((rows.size, 0))
        words = np.stack(cols, axis=1)
        return ((words >> np.uint64(11)).astype(float) + 0.5) * _TO_UNIT

    def normal(
        self, rows: np.ndarray, indices: Iterable[int], slot: int, component: int
    ) -> np.ndarray:
        """Standard normals ``(r, n)`` (the normal quantile of :meth:`uniform`)."""
        out: np.ndarray = ndtri(self.uniform(rows, indices, slot, component))
        return out

    def exponential(
        self, rows: np.ndarray, indices: Iterable[int], slot: int, component: int
    ) -> np.ndarray:
        """Unit-mean exponentials ``(r, n)``, ``-log u``: finite and strictly positive."""
        return -np.log(self.uniform(rows, indices, slot, component))
