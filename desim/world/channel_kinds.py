"""The channel kinds a scenario's ``[channel]`` section names, in :data:`CHANNEL_KINDS`.

Each kind registers a builder with its own parameter model: every key of ``[channel]`` except
``kind`` is one of them, validated where scenarios are loaded (:mod:`desim.world.kinds`). A
builder gets the validated parameters and a :class:`ChannelContext` and returns the channel.
Adding a kind is one model and one decorated builder here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from desim.registry import Params, Registry
from desim.scenario.devices import DeviceSpec
from desim.world.channel import Channel, static_channel
from desim.world.channel_trace import trace_channel
from desim.world.generated import mobility_channel, rayleigh_channel
from desim.world.mobility import MobilityChannelParams
from desim.world.replay import TraceReplayParams
from desim.world.traces import Trace

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Distance = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
Chunk = Annotated[int, Field(ge=1, le=4096)]
PERIOD = ("Period after which the realisation repeats; unset: it never repeats (generated "
          "on demand for any length).")
CHUNK = "Segments generated per chunk (speed and memory only: results do not depend on it)."


@dataclass(frozen=True)
class ChannelContext:
    """What a channel builder gets besides its parameters.

    Attributes:
        devices: the resolved scenario devices.
        noise_psd_dbm_per_hz: receiver noise power spectral density N0.
        rng: the run's ``channel`` stream.
        read_trace: reads a scenario's trace reference (``shipped:NAME`` or a path).
    """

    devices: tuple[DeviceSpec, ...]
    noise_psd_dbm_per_hz: float
    rng: np.random.Generator
    read_trace: Callable[[str], Trace]


ChannelBuilder = Callable[[Any, ChannelContext], Channel]
"""``builder(params, context) -> Channel``, ``params`` an instance of the kind's own model."""
CHANNEL_KINDS: Registry[ChannelBuilder] = Registry("channel kind")


class StaticParams(Params):
    """Parameters of ``static``: path loss at each device's ``distance_m``, no fading."""

    path_loss: Literal["umi-nlos", "umi-los", "uma-nlos", "uma-los", "free-space"] = Field(
        default="umi-nlos", description="Path-loss model (TR 38.901, or free space)."
    )
    carrier_ghz: Annotated[float, Field(gt=0.1, le=100, allow_inf_nan=False)] = Field(
        default=3.5, description="Carrier frequency f_c."
    )


class RayleighParams(StaticParams):
    """Parameters of ``rayleigh``: path loss times Rayleigh block fading."""

    coherence_s: PositiveFloat = Field(
        default=0.1, description="Coherence time of the Rayleigh block fading."
    )
    duration_s: PositiveFloat | None = Field(default=None, description=PERIOD)
    chunk_segments: Chunk = Field(default=64, description=CHUNK)


class GeneratedParams(Params):
    """Parameters of ``generated``: the TR 38.901 generator for moving devices."""

    environment: Literal["umi", "uma"] = Field(
        default="umi", description="TR 38.901 environment: urban micro or macro."
    )
    carrier_ghz: Annotated[float, Field(gt=0.1, le=100, allow_inf_nan=False)] = Field(
        default=3.5, description="Carrier frequency f_c."
    )
    speed_kmh: NonNegFloat = Field(
        default=3.0, description="Walking or driving speed of the devices."
    )
    duration_s: PositiveFloat | None = Field(default=None, description=PERIOD)
    step_s: PositiveFloat = Field(default=0.1, description="Sampling step of the generator.")
    fading: Literal["auto", "rayleigh", "rician", "none"] = Field(
        default="auto", description="Fast fading (`auto`: Rician in LOS, Rayleigh in NLOS)."
    )
    rician_k_db: Annotated[float, Field(allow_inf_nan=False)] = Field(
        default=9.0, description="Rician K factor (9 dB is the TR 38.901 LOS mean)."
    )
    shadowing: bool = Field(
        default=True, description="Log-normal shadowing with distance-correlated updates."
    )
    min_distance_m: Distance = Field(
        default=10.0, description="Nearest distance to the base station; walks reflect there."
    )
    max_distance_m: Distance = Field(
        default=1000.0, description="Farthest distance to the base station; walks reflect there."
    )
    chunk_segments: Chunk = Field(default=64, description=CHUNK)


class TraceChannelParams(TraceReplayParams):
    """Parameters of ``trace``: the file to replay and how scenario devices replay it."""

    throughput_scale: PositiveFloat = Field(
        default=1.0, description="Factor applied to a throughput trace's rates."
    )


@CHANNEL_KINDS.register(
    "rayleigh", "path loss × Rayleigh block fading i.i.d. per coherence_s", RayleighParams
)
def rayleigh(params: RayleighParams, ctx: ChannelContext) -> Channel:
    """Path loss times Rayleigh block fading, generated on demand (periodic with duration_s)."""
    return rayleigh_channel(
        ctx.devices, params.path_loss, params.carrier_ghz, params.coherence_s,
        params.duration_s, ctx.noise_psd_dbm_per_hz, ctx.rng, params.chunk_segments,
    )


@CHANNEL_KINDS.register("static", "path loss only", StaticParams)
def static(params: StaticParams, ctx: ChannelContext) -> Channel:
    """Path loss only: a constant SNR per device."""
    return static_channel(
        ctx.devices, params.path_loss, params.carrier_ghz, ctx.noise_psd_dbm_per_hz
    )


@CHANNEL_KINDS.register(
    "generated",
    "TR 38.901 generator: LOS probability, shadowing and Jakes fading of moving devices",
    GeneratedParams,
)
def generated(params: GeneratedParams, ctx: ChannelContext) -> Channel:
    """The TR 38.901 generator started at each device's ``distance_m``, generated on demand."""
    values = params.model_dump()
    chunk = values.pop("chunk_segments")
    mobility = MobilityChannelParams(**values)
    return mobility_channel(ctx.devices, mobility, ctx.noise_psd_dbm_per_hz, ctx.rng, chunk)


@CHANNEL_KINDS.register("trace", "replay a tidy channel trace file", TraceChannelParams)
def trace(params: TraceChannelParams, ctx: ChannelContext) -> Channel:
    """Replay the trace file ``path`` for the scenario devices."""
    return trace_channel(
        ctx.read_trace(params.path), ctx.devices, ctx.noise_psd_dbm_per_hz, ctx.rng,
        params.mapping, params.end_policy, params.throughput_scale,
    )
