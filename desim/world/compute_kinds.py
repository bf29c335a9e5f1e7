"""The compute kinds a scenario's ``[compute]`` section names, in :data:`COMPUTE_KINDS`.

Each kind registers a builder with its own parameter model: every key of ``[compute]`` except
``kind`` is one of them, validated where scenarios are loaded (:mod:`desim.world.kinds`). A
builder gets the validated parameters and a :class:`ComputeContext` and returns the timeline.
Adding a kind is one model and one decorated builder here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
from pydantic import Field

from desim.registry import NoParams, Params, Registry
from desim.world.compute import (
    ComputeTimeline,
    ComputeTimelineParams,
    SignalTimeline,
    trace_timeline,
)
from desim.world.generated import generated_timeline
from desim.world.replay import TraceReplayParams
from desim.world.traces import Trace

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


@dataclass(frozen=True)
class ComputeContext:
    """What a compute builder gets besides its parameters.

    Attributes:
        names: the scenario device names ``(K,)``.
        rng: the run's ``compute`` stream.
        read_trace: reads a scenario's trace reference (``shipped:NAME`` or a path).
    """

    names: tuple[str, ...]
    rng: np.random.Generator
    read_trace: Callable[[str], Trace]


ComputeBuilder = Callable[[Any, ComputeContext], ComputeTimeline]
"""``builder(params, context) -> ComputeTimeline``, ``params`` the kind's own model."""
COMPUTE_KINDS: Registry[ComputeBuilder] = Registry("compute kind")


class GeneratedComputeParams(Params):
    """Parameters of ``generated``: background load and on/off availability, on demand."""

    duration_s: PositiveFloat | None = Field(
        default=None,
        description=("Period after which the timeline repeats; unset: it never repeats "
                     "(generated on demand for any length)."),
    )
    load_mean: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        default=0.3,
        description="Mean background load (Beta levels); speed is max(1 − load, min_speed).",
    )
    load_concentration: PositiveFloat = Field(
        default=4.0, description="Concentration a + b of the Beta load levels."
    )
    load_hold_s: PositiveFloat = Field(
        default=60.0, description="Mean (exponential) time a load level is held."
    )
    min_speed: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = Field(
        default=0.05, description="Floor of the speed under load."
    )
    mean_up_s: PositiveFloat = Field(
        default=1800.0, description="Mean (exponential) time a device stays available."
    )
    mean_down_s: NonNegFloat = Field(
        default=120.0,
        description="Mean (exponential) time a device stays offline; 0: always available.",
    )
    chunk_segments: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=4,
        description=("Windows of the processes generated per chunk (speed and memory only: "
                     "results do not depend on it)."),
    )


class TraceComputeParams(TraceReplayParams):
    """Parameters of ``trace``: the compute trace to replay and how devices replay it."""

    what: ClassVar[str] = "compute trace"


@COMPUTE_KINDS.register("constant", "speed factor 1, always available", NoParams)
def constant(params: NoParams, ctx: ComputeContext) -> ComputeTimeline:
    """Speed factor 1 and always available."""
    return SignalTimeline.constant(len(ctx.names))


@COMPUTE_KINDS.register(
    "generated", "background load and on/off availability, drawn per run", GeneratedComputeParams
)
def generated(params: GeneratedComputeParams, ctx: ComputeContext) -> ComputeTimeline:
    """Beta load levels held for exponential times, exponential up and down periods."""
    values = params.model_dump()
    chunk = values.pop("chunk_segments")
    return generated_timeline(ComputeTimelineParams(**values), len(ctx.names), ctx.rng, chunk)


@COMPUTE_KINDS.register("trace", "replay a tidy compute trace file", TraceComputeParams)
def trace(params: TraceComputeParams, ctx: ComputeContext) -> ComputeTimeline:
    """Replay the compute trace ``path`` for the scenario devices."""
    return trace_timeline(
        ctx.read_trace(params.path), ctx.names, ctx.rng, params.mapping, params.end_policy
    )
