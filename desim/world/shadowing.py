"""Gudmundson shadowing of walking devices, any segment on demand from counter-based draws.

The model is that of :func:`desim.world.pathloss.gudmundson_shadowing_db`: a stationary
first-order autoregression over the distance walked, ``S_{i+1} = ρ S_i + sqrt(1 - ρ²) ε_i`` per
segment, ``ρ = exp(-Δd/d_corr)`` for the ``Δd`` metres walked per segment, times the standard
deviation. A recursion over every earlier segment would make segment ``j`` cost ``O(j)`` and
tie it to a carried state. Instead the process is built in two exact steps:

- every ``B`` segments a coarse state, itself an AR(1) with coefficient ``ρ_c = ρ^B``:
  ``S_b = Σ_{o<n} ρ_c^o sqrt(1 - ρ_c²) z_{b-o}`` (the stationary start ``ρ_c^b z_0`` when the
  sum reaches block 0). ``n`` is chosen so that
  ``ρ_c^n < e^{-37} ≈ 8.5·10⁻¹⁷``: the terms left out weigh less than half an ulp of a unit
  state (the only approximation, and below float64 resolution);
- inside a block, the AR(1) bridge between two coarse states, drawn exactly: a forward chain
  ``X_q = ρ^q (S_b + sqrt(1 - ρ²) Σ_{l≤q} ρ^{-l} ε_l)`` from ``S_b`` and Matheron's update
  ``Y_q = X_q + ρ^{B-q} (1 - ρ^{2q}) / (1 - ρ^{2B}) · (S_{b+1} - X_B)``.

So segment ``j`` costs ``O(B + n)`` draws, whatever ``j``, and is a pure function of (key,
device, ``j``); ``B ≈ n ≈ sqrt(37 d_corr / Δd)`` balances the two (76 at 3 km/h and 0.1 s steps
in UMi NLOS). Below about 0.01 km/h ``B`` stops at :data:`MAX_BLOCK` and the coarse sum, exact
from block 0, grows with ``j`` instead (one term per ``B`` segments). A device that does not
move (``Δd = 0``) keeps one state for ever.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from desim.world.draws import CounterDraws

MAX_BLOCK = 1024
"""Most segments between coarse states (very slow walks: the coarse sum grows instead)."""
TAIL_LOG = 37.0
"""``ρ_c^n < e^{-TAIL_LOG}`` for the ``n`` coarse terms kept."""
MEMO = 2
"""Block ranges kept for the next question about the same rows."""


@dataclass(frozen=True, eq=False)
class ChunkedShadowing:
    """Unit-variance Gudmundson shadowing of every device at any segment.

    Attributes:
        draws: the counter-based draws (``component`` for the coarse states, ``component + 1``
            for the innovations inside blocks).
        std_db: standard deviation in dB.
        x: ``Δd / d_corr`` per segment (0: a device that does not move).
        block: segments ``B`` per coarse step.
        terms: coarse terms ``n`` kept.
        component: the draws' component of the coarse states.
    """

    draws: CounterDraws
    std_db: float
    x: float
    block: int
    terms: int
    component: int
    # the last blocks made (a round's snapshot of every device, then its participants)
    _last: OrderedDict[Any, np.ndarray] = field(default_factory=OrderedDict, repr=False,
                                                compare=False)

    @classmethod
    def build(cls, draws: CounterDraws, std_db: float, corr_m: float, step_m: float,
              component: int) -> ChunkedShadowing:
        """Shadowing of ``std_db`` decorrelating over ``corr_m`` for ``step_m`` per segment."""
        x = max(step_m, 0.0) / corr_m
        if x == 0.0:
            return cls(draws, std_db, 0.0, 1, 1, component)
        block = int(min(MAX_BLOCK, max(1, math.ceil(math.sqrt(TAIL_LOG / x)))))
        terms = int(math.ceil(TAIL_LOG / (block * x))) + 1
        return cls(draws, std_db, x, block, terms, component)

    def coarse(self, rows: np.ndarray, b0: int, b1: int) -> np.ndarray:
        """Coarse states ``(r, b1 - b0)`` of blocks ``[b0, b1)`` (unit variance)."""
        if self.x == 0.0:
            z = self.draws.normal(rows, [0], 0, self.component)
            return np.repeat(z, b1 - b0, axis=1)
        rho_c = math.exp(-self.block * self.x)
        c_c = math.sqrt(-math.expm1(-2.0 * self.block * self.x))
        first = max(0, b0 - self.terms + 1)
        z = self.draws.normal(rows, range(first, b1), 0, self.component)
        blocks = np.arange(b0, b1)
        acc = np.zeros((rows.size, blocks.size))
        for o in range(min(b1 - 1, self.terms - 1) + 1):  # newest term first, for every block
            src = blocks - o
            ok = src >= 0
            weight = rho_c**o if o else 1.0
            w = np.where(src == 0, weight, c_c * weight)
            term = w * z[:, np.clip(src - first, 0, z.shape[1] - 1)]
            acc = np.where(ok, acc + term, acc)
        return acc

    def values(self, rows: np.ndarray, i0: int, i1: int) -> np.ndarray:
        """Shadowing in dB ``(r, i1 - i0)`` of segments ``[i0, i1)``."""
        B = self.block
        if self.x == 0.0 or B == 1:
            return self.std_db * self.coarse(rows, i0, i1)
        b0, b1 = i0 // B, (i1 - 1) // B + 1
        key = (rows.tobytes(), b0, b1)
        flat = self._last.get(key)
        if flat is None:
            flat = self._last[key] = self._blocks(rows, b0, b1)
            while len(self._last) > MEMO:
                self._last.popitem(last=False)
        return self.std_db * flat[:, i0 - b0 * B: i1 - b0 * B]

    def _blocks(self, rows: np.ndarray, b0: int, b1: int) -> np.ndarray:
        """Unit-variance values ``(r, (b1 - b0)·B)`` of every segment of blocks ``[b0, b1)``."""
        B = self.block
        ends = self.coarse(rows, b0, b1 + 1)  # (r, nb + 1): each block's two coarse states
        nb = b1 - b0
        c = math.sqrt(-math.expm1(-2.0 * self.x))
        q = np.arange(1, B + 1, dtype=float)
        eps = self.draws.normal(rows, range(b0 * B + 1, b1 * B + 1), 0, self.component + 1)
        eps = eps.reshape(rows.size, nb, B)
        walk = np.cumsum(np.exp(self.x * q) * eps, axis=2)  # Σ ρ^{-l} ε_l, per block
        start = ends[:, :-1, None]
        forward = np.exp(-self.x * q) * (start + c * walk)  # X_q, q = 1..B
        x_q = np.concatenate([start, forward[:, :, :-1]], axis=2)  # X_q, q = 0..B-1
        q0 = q - 1.0
        gain = (np.exp(-self.x * (B - q0)) * -np.expm1(-2.0 * self.x * q0)
                / -math.expm1(-2.0 * self.x * B))
        bridge = x_q + gain * (ends[:, 1:, None] - forward[:, :, -1:])
        return bridge.reshape(rows.size, nb * B)
