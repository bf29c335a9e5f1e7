"""Allocators: decide which device trains which block and how bandwidth is split.

Importing this package registers every built-in allocator; see :data:`ALLOCATORS`.
"""

from desim.allocators import baselines as _baselines  # noqa: F401  (registers)
from desim.allocators import crunch as _crunch  # noqa: F401  (registers)
from desim.allocators import crunch_multi as _crunch_multi  # noqa: F401  (registers)
from desim.allocators import exact as _exact  # noqa: F401  (registers)
from desim.allocators import jbba as _jbba  # noqa: F401  (registers)
from desim.allocators import oracle as _oracle  # noqa: F401  (registers)
from desim.allocators.base import Allocation, Allocator, RoundContext, check_allocation
from desim.allocators.registry import (
    ALLOCATORS,
    allocator_info,
    check_allocator,
    make_allocator,
    register,
)

__all__ = [
    "ALLOCATORS",
    "Allocation",
    "Allocator",
    "RoundContext",
    "allocator_info",
    "check_allocator",
    "check_allocation",
    "make_allocator",
    "register",
]
