"""Bandwidth splits: plain functions from an assignment to per-device bandwidths.

Each takes the round snapshot and the ``(N,)`` block→device assignment and returns ``(K,)``
bandwidths in Hz summing to at most ``B``; idle devices get 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from desim.allocators.base import RoundContext
from desim.errors import UnknownNameError

BandwidthSplit = Callable[[RoundContext, np.ndarray], np.ndarray]


def equal_split(ctx: RoundContext, block_device: np.ndarray) -> np.ndarray:
    """Split ``B`` equally among the devices that train a block."""
    bw = np.zeros(ctx.num_devices)
    bw[block_device] = ctx.total_bandwidth_hz / len(block_device)
    return bw


SPLITS: dict[str, BandwidthSplit] = {"equal": equal_split}


def bandwidth_split(name: str) -> BandwidthSplit:
    """Look up a bandwidth split by name (error lists the known ones)."""
    try:
        return SPLITS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown bandwidth split {name!r}; known: {', '.join(sorted(SPLITS))}"
        ) from None
