"""DEFT (the seed paper's scheme) and traditional offloading: rounds planned by an allocator.

``deft``: the scenario's allocator places one block per device (or, for ``single-device``,
several blocks on one device) and splits the bandwidth; lost blocks are re-planned by the same
allocator. ``offload``: the ``offload`` allocator
(:class:`~desim.allocators.baselines.OffloadAllocator`) has devices upload mini-batches and the
edge server train. Either way the allocation becomes a plan through
:func:`desim.allocators.base.plan_of`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from desim.allocators.base import Allocator, RoundContext, check_allocation, plan_of
from desim.plan import RoundPlan
from desim.schemes.base import SCHEMES, LossPolicy, Scheme, SchemeParams

if TYPE_CHECKING:
    from desim.costs.base import Workload
    from desim.scenario.model import Scenario


@SCHEMES.register("deft", "device-edge cooperative fine-tuning: the allocator places blocks")
@dataclass(frozen=True)
class DeftScheme(Scheme):
    """Each round is the allocator's allocation, checked, as a plan."""

    allocator: Allocator
    name: ClassVar[str] = "deft"
    on_loss: ClassVar[LossPolicy] = "replan"
    one_device_per_block: ClassVar[bool] = True
    rng_stream: ClassVar[str] = "allocator"
    diagnostics_key: ClassVar[str] = "allocator_diagnostics"

    @classmethod
    def build(cls, params: Any, scenario: Scenario, workload: Workload,
              allocator: Allocator) -> Scheme:
        """DEFT with the scenario's allocator."""
        return cls(allocator)

    def plan(self, ctx: RoundContext, state: Any, rng: np.random.Generator) -> RoundPlan:
        """The allocator's decision (raises ``InfeasibleError`` or ``AllocationError``)."""
        alloc = self.allocator.allocate(ctx, rng)
        check_allocation(ctx, alloc)
        return plan_of(ctx, alloc)

    def realised(self, plan: RoundPlan, contributed: np.ndarray) -> dict[str, Any]:
        """The allocator's own diagnostics (lost blocks are re-planned, not dropped)."""
        return plan.diagnostics


class OffloadParams(SchemeParams):
    """Parameters of ``offload``."""

    server_speed_factor: float = Field(
        default=10.0, gt=0,
        description="Edge server speed relative to the `cpu-reference` profile.",
    )


@SCHEMES.register("offload", "devices upload mini-batches, the edge server trains",
                  OffloadParams)
@dataclass(frozen=True)
class OffloadScheme(DeftScheme):
    """DEFT's machinery with the ``offload`` allocator in place of the scenario's."""

    name: ClassVar[str] = "offload"

    @classmethod
    def build(cls, params: Any, scenario: Scenario, workload: Workload,
              allocator: Allocator) -> Scheme:
        """Offloading at the server speed of ``params``."""
        from desim.allocators import make_allocator

        return cls(make_allocator("offload", {"server_speed_factor": params.server_speed_factor}))
