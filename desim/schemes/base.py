"""What every scheme is: a planner of rounds, registered by name with its own parameters.

A scheme turns the round-start snapshot (:class:`~desim.allocators.base.RoundContext`, the
same one allocators see) into a :class:`~desim.plan.RoundPlan`. Schemes register in
:data:`SCHEMES` with the pydantic model of their parameters (the scenario's ``[scheme]``
section: ``name`` plus every other key), so adding a scheme touches one module plus its tests.
Each scheme says how the round's losses are handled (:attr:`Scheme.on_loss`): DEFT re-plans
lost blocks, a scheme drops lost participants.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from desim.allocators.base import RoundContext
from desim.plan import PlanRows, RoundPlan, phase_totals
from desim.registry import Params, Registry

if TYPE_CHECKING:
    from desim.allocators.base import Allocator
    from desim.costs.base import Workload
    from desim.scenario.model import Scenario

#: scheme name -> entry (the scheme class, its description and parameters)
SCHEMES: Registry[type[Scheme]] = Registry("scheme")

LossPolicy = Literal["replan", "drop"]


class SchemeParams(Params):
    """Base of scheme parameter models: strict, frozen, unknown keys refused by name."""


class SelectionParams(SchemeParams):
    """Participants of a round and its local steps (``fl-lora``, ``dlora``)."""

    local_steps: int = Field(default=1, ge=1, le=100_000,
                             description="Local training steps E per round.")
    selection: Literal["all", "random", "fastest"] = Field(
        default="all", description="Participants: `all`, `random` or the `fastest` m."
    )
    clients: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="Number m of participants for `random` and `fastest` selection.",
    )
    downlink_rate_bps: float | None = Field(
        default=None, gt=0, description="Fixed downlink rate; unset: the reciprocal uplink."
    )

    @model_validator(mode="after")
    def _clients(self) -> SelectionParams:
        if self.selection != "all" and self.clients is None:
            raise ValueError(f"selection = {self.selection!r} needs scheme.clients (m)")
        return self


class Scheme(ABC):
    """A fine-tuning scheme: plans each round of a run."""

    name: ClassVar[str] = ""
    #: how lost work is handled: ``replan`` the lost blocks, or ``drop`` the participants
    on_loss: ClassVar[LossPolicy] = "drop"
    #: the run's random stream the scheme draws from (:mod:`desim.engine.rng`)
    rng_stream: ClassVar[str] = "scheme"
    #: every block needs its own device (DEFT's allocators place blocks, not devices)
    one_device_per_block: ClassVar[bool] = False
    #: where the diagnostics of each round go in run.json
    diagnostics_key: ClassVar[str] = "scheme_diagnostics"

    @classmethod
    @abstractmethod
    def build(cls, params: Any, scenario: Scenario, workload: Workload,
              allocator: Allocator) -> Scheme:
        """The scheme of a scenario, from its validated parameters."""

    def new_state(self, num_devices: int, rng: np.random.Generator) -> Any:
        """Fresh per-run state (Kill-and-Revive masks); ``None`` when stateless."""
        return None

    @abstractmethod
    def plan(self, ctx: RoundContext, state: Any, rng: np.random.Generator) -> RoundPlan:
        """Plan one round.

        Raises:
            InfeasibleError: the round cannot be planned.
        """

    def realised(self, plan: RoundPlan, contributed: np.ndarray) -> dict[str, Any]:
        """The diagnostics to record once the round ran.

        ``contributed`` is ``(P,)``: whose work counted (participants lost to a fault in the
        first stage did not).
        """
        if contributed.all():
            return plan.diagnostics
        lost = plan.devices[~contributed].tolist()
        return {**plan.diagnostics, "lost": lost}


def participant_rows(ctx: RoundContext, devices: np.ndarray, bandwidth_hz: np.ndarray,
                     block: int, stages: Any, memory: np.ndarray, flops: np.ndarray,
                     samples: np.ndarray) -> PlanRows:
    """One record row per participant, with the snapshot's estimate of its phase times."""
    up = phase_totals(stages, "up", devices.size)
    return PlanRows(
        participant=np.arange(devices.size), block=np.full(devices.size, block),
        upload_bits=up, memory_bytes=memory, flops=flops, samples=samples,
        planned_compute_s=planned_compute_s(ctx, devices,
                                            phase_totals(stages, "compute", devices.size)),
        planned_upload_s=planned_transfer_s(ctx, devices, up, bandwidth_hz),
        one_per_participant=True,
    )


def planned_transfer_s(ctx: RoundContext, devs: np.ndarray, bits: np.ndarray,
                       bw: np.ndarray) -> Any:
    """Planned seconds to move ``bits`` at bandwidth ``bw`` under ``ctx.rates`` (0: no bits)."""
    rate = ctx.rates.rate_bps(bw, devs)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bits > 0, bits / rate, 0.0)


def planned_compute_s(ctx: RoundContext, devs: np.ndarray, work: np.ndarray) -> Any:
    """Snapshot estimate of ``work`` seconds at speed 1 on ``devs``."""
    with np.errstate(divide="ignore"):
        return work / ctx.speed[devs]
