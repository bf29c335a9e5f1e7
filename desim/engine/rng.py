"""Named random streams derived from one seed.

Every run derives independent :class:`numpy.random.Generator` objects for ``channel``,
``compute``, ``allocator``, ``faults``, ``scheme`` and ``population`` from a single
:class:`numpy.random.SeedSequence`. The names are fixed and spawned in a fixed order, so changing
the allocator (or how much randomness it draws) never changes the population, the channel or
the fault realisation: comparisons are paired. A new stream is appended, never inserted: the
child ``i`` of a seed is the same whatever follows it, so older streams keep their draws.
"""

from __future__ import annotations

import numpy as np

STREAM_NAMES: tuple[str, ...] = (
    "channel", "compute", "allocator", "faults", "scheme", "population"
)


def rng_streams(seed: int) -> dict[str, np.random.Generator]:
    """Return one independent generator per name in :data:`STREAM_NAMES`.

    Args:
        seed: the run seed (a non-negative integer).

    Returns:
        A mapping from stream name to generator.
    """
    children = np.random.SeedSequence(seed).spawn(len(STREAM_NAMES))
    return {name: np.random.default_rng(child) for name, child in zip(STREAM_NAMES, children)}


def rng_stream(seed: int, name: str) -> np.random.Generator:
    """Return the generator of one named stream, as :func:`rng_streams` would.

    Args:
        seed: the run seed (a non-negative integer).
        name: one of :data:`STREAM_NAMES`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in STREAM_NAMES:
        raise ValueError(f"unknown random stream {name!r}; known: {', '.join(STREAM_NAMES)}")
    return rng_streams(seed)[name]
