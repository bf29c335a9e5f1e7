"""The Shannon rate of a bandwidth share: the one formula every planner and the engine share.

``r = B log2(1 + a/B)`` in bit/s for a bandwidth ``B`` in Hz and an SNR coefficient
``a = p g / N0`` in Hz (DESIGN §2). It lives in its own module, importing nothing of desim, so
that allocators, schemes and the channel use it without depending on one another.
"""

from __future__ import annotations

import numpy as np


def shannon_rate_bps(bandwidth_hz: np.ndarray, snr_coef_hz: np.ndarray) -> np.ndarray:
    """Rate ``B log2(1 + a/B)`` in bit/s; zero where the bandwidth is zero."""
    b = np.asarray(bandwidth_hz, dtype=float)
    a = np.asarray(snr_coef_hz, dtype=float)
    on = b > 0
    # a / b only where b > 0 (no warnings to silence); the other entries are zeroed below
    r = b * np.log2(1.0 + np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=on))
    return np.where(on, r, 0.0)
