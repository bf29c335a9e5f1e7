"""Named random streams derived from one seed.

Every run derives independent :class:`numpy.random.Generator` objects for ``channel``,
``compute``, ``allocator`` and ``faults`` from a single :class:`numpy.random.SeedSequence`.
The names are fixed and spawned in a fixed order, so changing the allocator (or how much
randomness it draws) never changes the channel or fault realisation: comparisons are paired.
"""

from __future__ import annotations

import numpy as np

STREAM_NAMES: tuple[str, ...] = ("channel", "compute", "allocator", "faults", "scheme")


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    """Return one independent generator per name in :data:`STREAM_NAMES`.

    Args:
        seed: the run seed (a non-negative integer).

    Returns:
        A mapping from stream name to generator.
    """
    children = np.random.SeedSequence(seed).spawn(len(STREAM_NAMES))
    return {name: np.random.default_rng(child) for name, child in zip(STREAM_NAMES, children)}
