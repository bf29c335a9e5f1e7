"""Sections that name a registered component: every key but its name is a parameter.

``[channel]`` and ``[compute]`` (``kind``), ``[cost]`` (``model``), ``[allocator]`` and
``[scheme]`` (``name``): the scenario keeps the keys as given; each component's own pydantic
model validates them where the scenario is loaded (:mod:`desim.engine.checks`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
)


class _Component(BaseModel):
    """A section naming a registered component: every key but the name is a parameter."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False, strict=True)

    @property
    def params(self) -> dict[str, Any]:
        """The component's parameters (every key except the one naming it)."""
        return dict(self.model_extra or {})

    @property
    def path(self) -> str | None:
        """The file the section names (its ``path`` parameter), if any."""
        value = self.params.get("path")
        return value if isinstance(value, str) else None


class ChannelSpec(_Component):
    """The uplink channel by registered ``kind``; every other key is one of its parameters.

    - ``rayleigh``: path loss times Rayleigh block fading per ``coherence_s``; ``static``: path
      loss only. Generated on demand, in chunks (:mod:`desim.world.generated`); it repeats
      only if ``duration_s`` is set.
    - ``generated``: TR 38.901 ``environment`` path loss with LOS probability, shadowing and
      Jakes fading for devices moving at ``speed_kmh``, sampled every ``step_s``, generated on
      demand (repeating only with ``duration_s``); starts at each device's ``distance_m``.
    - ``trace``: replay ``path`` (``shipped:NAME`` for a trace shipped with desim), trace
      devices assigned by ``mapping`` (``cyclic``, ``random-offset`` or a table
      ``{scenario device = trace device}``), ``end_policy`` overriding the file's.

    Each kind's parameters are its own model's (:data:`desim.world.channel_kinds.CHANNEL_KINDS`),
    checked where scenarios are loaded (:func:`desim.engine.checks.check_components`): a
    description imports no implementation.
    """

    kind: str = Field(
        default="rayleigh",
        description=(
            "`trace`: replay a file; `generated`: TR 38.901 generator; `rayleigh`: path loss × "
            "Rayleigh block fading; `static`: path loss only. Every other key is one of the "
            "kind's parameters."
        ),
    )


class ComputeSpec(_Component):
    """Device compute behaviour over time by registered ``kind``; every other key a parameter.

    - ``constant``: speed factor 1, always available.
    - ``generated``: background load (Beta levels with mean ``load_mean`` held for exponential
      times of mean ``load_hold_s``) and on/off availability (exponential up and down times of
      means ``mean_up_s``, ``mean_down_s``), generated on demand; it repeats only if
      ``duration_s`` is set.
    - ``trace``: replay ``path`` (``device, time_s, speed_factor, available``) with ``mapping``
      and ``end_policy`` as for the channel.

    Each kind's parameters are its own model's (:data:`desim.world.compute_kinds.COMPUTE_KINDS`),
    checked where scenarios are loaded.
    """

    kind: str = Field(
        default="constant",
        description=(
            "`trace`: replay a file; `generated`: load and on/off process; `constant`: speed 1, "
            "always available. Every other key is one of the kind's parameters."
        ),
    )


class CostSpec(_Component):
    """Which cost model prices a block (README "Calibration"); every other key is a parameter.

    - ``profiled`` (default): measured profiles. ``profiles`` maps each hardware class to a
      profile: a shipped hardware-class name (``cpu-reference``) or a path to a profile CSV or
      a folder of them, or ``{ profile = ..., speed = ... }`` to price an unmeasured class by
      another class's profile at a relative speed. A class or workload without profile rows
      is priced by the ``analytic`` model when ``fallback = "analytic"`` and is an error when
      ``fallback = "none"``; results record which model priced each class (``cost_model`` in
      run.json).
    - ``analytic``: FLOP and byte counts at ``analytic_flops_per_s``.

    The name and parameters are checked where scenarios are loaded, by the named model's own
    parameter model (:func:`desim.costs.registry.check_cost`): a description imports no
    implementation.
    """

    model: str = Field(
        default="profiled",
        description=(
            "Registered cost model: `profiled` (measured profiles) or `analytic` (FLOP and byte "
            "counts); every other key is one of the model's parameters."
        ),
    )


class AllocatorSpec(_Component):
    """The allocator by registered ``name``; every other key is one of its parameters.

    The name and parameters are checked where scenarios are loaded and the simulation is built
    (:func:`desim.allocators.check_allocator`): a description imports no implementation.
    """

    name: str = Field(
        default="greedy",
        description=(
            "Registered allocator (`desim allocators`); every other key is one of its parameters."
        ),
    )
    csi: Literal["snapshot", "large-scale", "ergodic", "predicted", "oracle"] = Field(
        default="snapshot",
        description=(
            "What the planner (allocator or scheme) knows of the channel: `snapshot` (the "
            "round-start SNR, the paper's), `large-scale` (path loss and shadowing), `ergodic` "
            "(the mean rate over the fading), `predicted` (an EWMA of the past log-SNR) or "
            "`oracle` (the true future; for bounds such as `oracle-exact`)."
        ),
    )
    csi_window_s: PositiveFloat = Field(
        default=2.0,
        description=(
            "Window of the CSI estimates: the past window of `large-scale`, `ergodic` and "
            "`predicted` on a replayed channel, the future window of `oracle` (about one "
            "round of the default scenario; 20 fades at 3 km/h and 3.5 GHz)."
        ),
    )


class SchemeSpec(_Component):
    """The fine-tuning scheme by registered ``name``; every other key is one of its parameters.

    ``deft`` (default) runs the allocator; ``offload``, ``fl-lora`` and ``dlora`` take the
    parameters their own models define (:mod:`desim.schemes`, the scenario-keys page lists
    them). The name and parameters are checked where scenarios are loaded
    (:func:`desim.engine.checks.check_components`): a description imports no implementation.
    """

    name: str = Field(
        default="deft",
        description=(
            "How devices and server share the fine-tuning (`deft`, `offload`, `fl-lora`, "
            "`dlora`); every other key is one of the scheme's parameters."
        ),
    )

