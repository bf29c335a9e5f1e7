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
    generate_compute,
    trace_timeline,
)
from desim.world.replay import TraceReplayParams
from desim.world.tidy import tidy_frame, trace_from_frame
from desim.world.traces import Trace, TraceMeta

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
    """Parameters of ``generated``: background load and on/off availability, looping."""

    duration_s: PositiveFloat = Field(
        default=3600.0, description="Length of a generated timeline, which then loops."
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
    """Beta load levels held for exponential times and exponential up and down periods."""
    timeline = ComputeTimelineParams(**params.model_dump())
    series = generate_compute(timeline, len(ctx.names), ctx.rng)
    frame = tidy_frame(
        ctx.names,
        [s[0] for s in series],
        {"speed_factor": [s[1] for s in series], "available": [s[2] for s in series]},
    )
    meta = TraceMeta(end_policy="loop", duration_s=params.duration_s)
    trace = trace_from_frame(frame, "generated compute timeline", meta)
    return trace_timeline(trace, ctx.names, ctx.rng)


@COMPUTE_KINDS.register("trace", "replay a tidy compute trace file", TraceComputeParams)
def trace(params: TraceComputeParams, ctx: ComputeContext) -> ComputeTimeline:
    """Replay the compute trace ``path`` for the scenario devices."""
    return trace_timeline(
        ctx.read_trace(params.path), ctx.names, ctx.rng, params.mapping, params.end_policy
    )
