"""Scenario: the validated, frozen description of one simulation (no I/O).

A scenario names the model and fine-tuning workload, the edge server, the devices, the channel,
the device compute behaviour, the cost model, the allocator and the run length. Every key carries
its unit (``total_bandwidth_hz``, ``memory_bytes``, ``tx_power_dbm``). Validation errors name the
dotted field, the offending value and what was expected; :mod:`desim.io.files` reads files into it.
Devices are given either as an explicit list or as a seeded population (:func:`resolve_devices`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from desim.errors import ScenarioError

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Frozen(BaseModel):
    # strict: a bool is not an int and a string is not a number (``rounds = true`` and
    # ``speed_factor = "2"`` are refused, not coerced); an int is still a valid float
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, strict=True)



class ModelSpec(_Frozen):
    """The transformer and fine-tuning workload.

    ``num_blocks`` must divide the model's layer count (``Ld + Le`` for an encoder-decoder
    model); block 1 is next to the output. ``seq_len`` is the (encoder) input length;
    ``target_len`` is the decoder's target length and is used by encoder-decoder models (T5)
    only. ``adapter_size`` is the bottleneck width of the ``adapter`` method (used by it only).
    """

    name: str = Field(
        default="roberta-base",
        description=(
            "Model: a shipped config (`roberta-base`, `roberta-large`, `flan-t5-small`, "
            "`flan-t5-base`) or a path to a config `.json`."
        ),
    )
    method: Literal["lora", "full", "lora-checkpoint", "qlora", "mezo", "adapter", "ia3"] = Field(
        default="lora", description="Fine-tuning method: what a block trains and uploads."
    )
    lora_rank: Annotated[int, Field(ge=1, le=4096)] = Field(
        default=8, description="LoRA rank r (methods `lora`, `lora-checkpoint`, `qlora`, `mezo`)."
    )
    adapter_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=64, description="Bottleneck width of the `adapter` method (used by it only)."
    )
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=8, description="Mini-batch size b of one training step."
    )
    seq_len: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=128, description="Sequence length s (the encoder input for encoder-decoder models)."
    )
    num_blocks: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=12,
        description=(
            "Number of blocks N; must divide the layer count (T5: decoder plus encoder layers)."
        ),
    )
    gradient_bits: Annotated[int, Field(ge=1, le=64)] = Field(
        default=32, description="Bits q per uploaded value: block n uploads D_n = q·S_n bits."
    )
    target_len: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=32, description="Decoder target tokens t (encoder-decoder models only)."
    )


class ServerSpec(_Frozen):
    """The edge server: uplink bandwidth, receiver noise and aggregation time."""

    total_bandwidth_hz: PositiveFloat = Field(
        default=20e6, description="Total uplink bandwidth B shared by the devices."
    )
    # thermal noise is -174 dBm/Hz at 290 K; outside [-300, 0] the SNR over- or underflows
    noise_psd_dbm_per_hz: Annotated[float, Field(ge=-300, le=0, allow_inf_nan=False)] = Field(
        default=-174.0, description="Receiver noise power spectral density N0."
    )
    aggregation_s: NonNegFloat = Field(
        default=0.01, description="Aggregation time added at the end of every round."
    )


class Uniform(_Frozen):
    """Uniform distribution on ``[low, high]``."""

    dist: Literal["uniform"] = Field(description="Distribution kind.")
    low: FiniteFloat = Field(description="Lower bound.")
    high: FiniteFloat = Field(description="Upper bound (at least `low`).")

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values."""
        return rng.uniform(self.low, self.high, n)


class LogUniform(_Frozen):
    """Log-uniform distribution on ``[low, high]`` (both > 0)."""

    dist: Literal["loguniform"] = Field(description="Distribution kind.")
    low: PositiveFloat = Field(description="Lower bound (positive).")
    high: PositiveFloat = Field(description="Upper bound (at least `low`).")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniform:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values."""
        return np.exp(rng.uniform(np.log(self.low), np.log(self.high), n))


class Choice(_Frozen):
    """Discrete choice among ``values`` with optional ``weights``."""

    dist: Literal["choice"] = Field(description="Distribution kind.")
    values: Annotated[list[FiniteFloat], Field(min_length=1)] = Field(
        description="The values to choose among."
    )
    weights: list[NonNegFloat] | None = Field(
        default=None, description="Relative weight of each value; unset: equally likely."
    )

    @model_validator(mode="after")
    def _weights(self) -> Choice:
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("weights must have as many entries as values")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values."""
        p = None if self.weights is None else np.asarray(self.weights) / sum(self.weights)
        return rng.choice(np.asarray(self.values, dtype=float), size=n, p=p)


Distribution = Annotated[Uniform | LogUniform | Choice, Field(discriminator="dist")]
DistOrValue = FiniteFloat | Distribution


def _sample(spec: DistOrValue, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(spec, int | float):
        return np.full(n, float(spec))
    return spec.sample(rng, n)


class DeviceSpec(_Frozen):
    """One edge device.

    Attributes:
        name: unique device name.
        hardware: hardware class naming a cost profile.
        speed_factor: speed relative to the hardware class profile (σ_k).
        memory_bytes: memory budget available to fine-tuning (M_k).
        tx_power_dbm: uplink transmit power (p_k).
        distance_m: distance to the edge server (drives path loss).
    """

    name: Annotated[str, Field(min_length=1)] = Field(description="Unique device name.")
    hardware: str = Field(
        default="cpu-reference",
        description=(
            "Hardware class, naming a cost profile (`cost.profiles`)."
        ),
    )
    speed_factor: PositiveFloat = Field(
        default=1.0, description="Speed σ_k relative to the hardware class's profile."
    )
    memory_bytes: PositiveFloat = Field(
        default=2e9, description="Memory budget M_k available to fine-tuning."
    )
    tx_power_dbm: FiniteFloat = Field(default=23.0, description="Uplink transmit power p_k.")
    distance_m: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(
        default=100.0,
        description=(
            "Distance to the edge server (path loss; unused with a gain trace)."
        ),
    )


class PopulationSpec(_Frozen):
    """A seeded population of devices; each attribute is a number or a distribution.

    Unless ``seed`` pins it, the population is a draw of the run (:func:`resolve_devices`).
    """

    count: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=20, description="Number of devices K."
    )
    seed: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description=(
            "Seed of the population draw; unset: drawn from the run's `population` stream, so "
            "every `run.seed` gives its own population. Pin it to keep one population across "
            "seeds (the channel, compute and faults still vary with `run.seed`)."
        ),
    )
    hardware: str = Field(default="cpu-reference", description="Hardware class of every device.")
    name_prefix: str = Field(
        default="dev", description="Device names are this prefix and a zero-padded index."
    )
    speed_factor: DistOrValue = Field(
        default=1.0, description="Speed factor σ_k: a number or a distribution."
    )
    memory_bytes: DistOrValue = Field(
        default=2e9, description="Memory budget M_k: a number or a distribution."
    )
    tx_power_dbm: DistOrValue = Field(
        default=23.0, description="Transmit power p_k: a number or a distribution."
    )
    distance_m: DistOrValue = Field(
        default=100.0, description="Distance to the server: a number or a distribution."
    )


class DevicesSpec(_Frozen):
    """Devices as an explicit ``list`` or a generated ``population`` (exactly one)."""

    # TOML and JSON have arrays, not tuples: the sequence is lax, its items stay strict
    list: Annotated[tuple[DeviceSpec, ...], Strict(False)] | None = Field(
        default=None, description="Explicit devices (`[[devices.list]]` entries)."
    )
    population: PopulationSpec | None = Field(
        default=None, description="A seeded population of devices."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DevicesSpec:
        if (self.list is None) == (self.population is None):
            raise ValueError("give exactly one of devices.list or devices.population")
        if self.list is not None:
            names = [d.name for d in self.list]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"duplicate device names: {sorted(dup)}")
            if not names:
                raise ValueError("devices.list must not be empty")
        return self


TraceMapping = Literal["cyclic", "random-offset"] | dict[str, str]


class ChannelSpec(_Frozen):
    """Uplink channel (``kind``): generated, or replayed from a tidy trace file.

    - ``rayleigh``: path loss times Rayleigh block fading per ``coherence_s``; ``static``: path
      loss only. The realisation covers ``duration_s`` and then loops.
    - ``generated``: TR 38.901 ``environment`` path loss with LOS probability, shadowing and
      Jakes fading for devices moving at ``speed_kmh``, sampled every ``step_s``
      (:func:`desim.world.channel.generate_gain_db`); starts at each device's ``distance_m``.
    - ``trace``: replay ``path`` (``shipped:NAME`` for a trace shipped with desim), trace
      devices assigned by ``mapping`` (``cyclic``, ``random-offset`` or a table
      ``{scenario device = trace device}``), ``end_policy`` overriding the file's.
    """

    kind: Literal["rayleigh", "static", "generated", "trace"] = Field(
        default="rayleigh",
        description=(
            "`trace`: replay a file; `generated`: TR 38.901 generator; `rayleigh`: path loss × "
            "Rayleigh block fading; `static`: path loss only."
        ),
    )
    path_loss: Literal["umi-nlos", "umi-los", "uma-nlos", "uma-los", "free-space"] = Field(
        default="umi-nlos", description="Path-loss model of `rayleigh` and `static`."
    )
    carrier_ghz: Annotated[float, Field(gt=0.1, le=100, allow_inf_nan=False)] = Field(
        default=3.5, description="Carrier frequency f_c (`rayleigh`, `static`, `generated`)."
    )
    coherence_s: PositiveFloat = Field(
        default=0.1, description="Coherence time of the Rayleigh block fading (`rayleigh`)."
    )
    duration_s: PositiveFloat = Field(
        default=3600.0, description="Length of a generated realisation, which then loops."
    )
    environment: Literal["umi", "uma"] = Field(
        default="umi", description="TR 38.901 environment of `generated`: urban micro or macro."
    )
    speed_kmh: NonNegFloat = Field(
        default=3.0, description="Walking or driving speed of the devices (`generated`)."
    )
    step_s: PositiveFloat = Field(default=0.1, description="Sampling step of `generated`.")
    fading: Literal["auto", "rayleigh", "rician", "none"] = Field(
        default="auto",
        description=(
            "Fast fading of `generated` (`auto`: Rician in LOS, Rayleigh in NLOS)."
        ),
    )
    rician_k_db: FiniteFloat = Field(
        default=9.0, description="Rician K factor (`generated`; 9 dB is the TR 38.901 LOS mean)."
    )
    shadowing: bool = Field(
        default=True,
        description=(
            "Log-normal shadowing with distance-correlated updates (`generated`)."
        ),
    )
    min_distance_m: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(
        default=10.0,
        description=(
            "Nearest distance to the base station; walks reflect there (`generated`)."
        ),
    )
    max_distance_m: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = Field(
        default=1000.0,
        description=(
            "Farthest distance to the base station; walks reflect there (`generated`)."
        ),
    )
    path: str | None = Field(
        default=None,
        description=(
            "Trace file of `trace`: `shipped:NAME` or a path (relative to the scenario file)."
        ),
    )
    mapping: TraceMapping = Field(
        default="cyclic",
        description=(
            "Trace device of each scenario device: `cyclic` (device i replays trace device "
            "i mod M from t = 0), `random-offset` (the same, from a time drawn from the run's "
            "`channel` stream: the built-in scenario's choice, so seeds are real replicates) "
            "or a table."
        ),
    )
    end_policy: Literal["loop", "hold"] | None = Field(
        default=None, description="After the trace ends: `loop` or `hold`; unset: the file's own."
    )
    throughput_scale: PositiveFloat = Field(
        default=1.0, description="Factor applied to a throughput trace's rates."
    )

    @model_validator(mode="after")
    def _trace_needs_path(self) -> ChannelSpec:
        if self.kind == "trace" and not self.path:
            raise ValueError("kind = 'trace' needs channel.path (a tidy trace file)")
        if self.kind == "generated" and self.duration_s / self.step_s > 1e7:
            raise ValueError("duration_s / step_s exceeds 10 million samples")
        return self


class ComputeSpec(_Frozen):
    """Device compute behaviour over time (``kind``).

    - ``constant``: speed factor 1, always available.
    - ``generated``: background load (Beta levels with mean ``load_mean`` held for exponential
      times of mean ``load_hold_s``) and on/off availability (exponential up and down times of
      means ``mean_up_s``, ``mean_down_s``) over ``duration_s``, then looping.
    - ``trace``: replay ``path`` (``device, time_s, speed_factor, available``) with ``mapping``
      and ``end_policy`` as for the channel.
    """

    kind: Literal["constant", "generated", "trace"] = Field(
        default="constant",
        description=(
            "`trace`: replay a file; `generated`: load and on/off process; `constant`: speed 1, "
            "always available."
        ),
    )
    path: str | None = Field(
        default=None, description="Compute trace of `trace`: `shipped:NAME` or a path."
    )
    mapping: TraceMapping = Field(
        default="cyclic",
        description=(
            "Trace device of each scenario device, as for the channel (`random-offset` draws "
            "from the run's `compute` stream)."
        ),
    )
    end_policy: Literal["loop", "hold"] | None = Field(
        default=None, description="After the trace ends: `loop` or `hold`; unset: the file's own."
    )
    duration_s: PositiveFloat = Field(
        default=3600.0, description="Length of a generated timeline, which then loops."
    )
    load_mean: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        default=0.3,
        description=(
            "Mean background load (Beta levels); speed is max(1 − load, min_speed)."
        ),
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
        description=(
            "Mean (exponential) time a device stays offline; 0: always available."
        ),
    )

    @model_validator(mode="after")
    def _trace_needs_path(self) -> ComputeSpec:
        if self.kind == "trace" and not self.path:
            raise ValueError("kind = 'trace' needs compute.path (a tidy compute trace file)")
        return self


class BorrowedProfile(_Frozen):
    """A hardware class priced by another class's profile, ``speed`` times faster.

    For classes nobody has measured (README "Calibration"): the class's compute seconds are the
    profile's divided by ``speed``; memory, bits and FLOPs are the profile's. Device speed
    factors of the class stay relative to the class itself.
    """

    profile: Annotated[str, Field(min_length=1)] = Field(
        description="A shipped hardware-class name, or a path to a profile CSV or a folder of them."
    )
    speed: PositiveFloat = Field(
        default=1.0, description="The class runs this many times faster than the profile."
    )


class CostSpec(_Frozen):
    """Which cost model prices a block (README "Calibration").

    - ``profiled`` (default): measured profiles. ``profiles`` maps each hardware class to a
      profile: a shipped hardware-class name (``cpu-reference``) or a path to a profile CSV or
      a folder of them, or ``{ profile = ..., speed = ... }`` to price an unmeasured class by
      another class's profile at a relative speed. A class or workload without profile rows
      is priced by the ``analytic`` model when ``fallback = "analytic"`` and is an error when
      ``fallback = "none"``; results record which model priced each class (``cost_model`` in
      run.json).
    - ``analytic``: FLOP and byte counts at ``analytic_flops_per_s``.
    """

    model: Literal["profiled", "analytic"] = Field(
        default="profiled",
        description=(
            "`profiled`: measured profiles; `analytic`: FLOP and byte counts."
        ),
    )
    profiles: dict[Annotated[str, Field(min_length=1)], BorrowedProfile] = Field(
        default_factory=lambda: {"cpu-reference": BorrowedProfile(profile="cpu-reference")},
        description="Hardware class → profile: a name or path, or `{ profile, speed }`.",
    )

    @field_validator("profiles", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        # a plain string names the class's own profile (speed 1)
        if isinstance(value, dict):
            return {k: {"profile": v} if isinstance(v, str) else v for k, v in value.items()}
        return value
    fallback: Literal["analytic", "none"] = Field(
        default="analytic",
        description=(
            "Classes or workloads without a profile: `analytic` prices them, `none` is an error."
        ),
    )
    analytic_flops_per_s: PositiveFloat = Field(
        default=5e10, description="Sustained training throughput of the analytic model."
    )


class AllocatorSpec(BaseModel):
    """The allocator by registered ``name``; every other key is one of its parameters.

    The name and parameters are checked where scenarios are loaded and the simulation is built
    (:func:`desim.allocators.check_allocator`): a description imports no implementation.
    """

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False, strict=True)

    name: str = Field(
        default="greedy",
        description=(
            "Registered allocator (`desim allocators`); every other key is one of its parameters."
        ),
    )

    @property
    def params(self) -> dict[str, Any]:
        """The allocator parameters (every key except ``name``)."""
        return dict(self.model_extra or {})


class RunSpec(_Frozen):
    """Run length, the seed of all random streams, and the round policies.

    - ``straggler_policy``: ``wait-all`` waits for every block; ``deadline`` abandons the blocks
      still unfinished ``deadline_s`` after the round start and reassigns them to idle devices.
    - ``on_infeasible``: ``error`` stops with a message naming the round, blocks and reason;
      ``skip`` records the round as skipped and retries ``retry_after_s`` later.
    """

    rounds: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=100, description="Number of rounds."
    )
    seed: Annotated[int, Field(ge=0)] = Field(
        default=0,
        description=(
            "Seed of every random draw the scenario does not pin: the population, trace "
            "offsets, fading, faults, allocator and scheme, each from its own named stream."
        ),
    )
    straggler_policy: Literal["wait-all", "deadline"] = Field(
        default="wait-all",
        description=(
            "`wait-all` waits for every block; `deadline` reassigns blocks unfinished at "
            "`deadline_s`."
        ),
    )
    deadline_s: PositiveFloat | None = Field(
        default=None,
        description=(
            "Time after the round start at which unfinished work is abandoned (`deadline`)."
        ),
    )
    on_infeasible: Literal["error", "skip"] = Field(
        default="error",
        description=(
            "An infeasible round: `error` stops (exit code 3), `skip` records it and retries."
        ),
    )
    retry_after_s: PositiveFloat = Field(
        default=1.0, description="Wait after a skipped round before the next attempt."
    )

    @model_validator(mode="after")
    def _deadline(self) -> RunSpec:
        if self.straggler_policy == "deadline" and self.deadline_s is None:
            raise ValueError("straggler_policy = 'deadline' needs run.deadline_s")
        return self


class FaultEvent(_Frozen):
    """A scripted outage: ``device`` goes offline at ``time_s`` for ``duration_s`` seconds."""

    device: Annotated[str, Field(min_length=1)] = Field(
        description="Name of the device that goes offline."
    )
    time_s: NonNegFloat = Field(description="Start of the outage.")
    duration_s: Annotated[float, Field(gt=0)] = Field(
        default=float("inf"), description="Length of the outage; unset: permanent."
    )


class FaultsSpec(_Frozen):
    """Injected faults (own random stream ``faults``, so paired across allocators).

    - ``dropout_rate``: probability that a device working in a round drops out during it, at a
      uniformly random point of its work; its in-flight block is lost and reassigned.
    - ``events``: scripted outages (``{device, time_s, duration_s}``).
    - ``upload_timeout_s``: an upload still running this long after it started counts as a
      dropout at that moment (a stalled link is otherwise waited for).
    """

    dropout_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = Field(
        default=0.0, description="Probability that a working device drops out during a round."
    )
    events: Annotated[tuple[FaultEvent, ...], Strict(False)] = Field(
        default=(), description="Scripted outages (`{device, time_s, duration_s}`)."
    )
    upload_timeout_s: PositiveFloat | None = Field(
        default=None,
        description=(
            "An upload running this long counts as a dropout; unset: stalls are waited for."
        ),
    )


class SchemeSpec(_Frozen):
    """The fine-tuning scheme (README "Schemes, methods and energy").

    ``deft`` (default) uses the allocator; ``offload`` runs the ``offload`` allocator at
    ``server_speed_factor``; ``fl-lora`` and ``dlora`` are planned by :mod:`desim.schemes.core`.
    ``selection`` (``all``, ``random``, ``fastest``) with ``clients`` picks the participants of
    ``fl-lora`` and ``dlora``; ``local_steps`` is ``E``; ``downlink_rate_bps`` fixes the
    downlink rate (unset: the reciprocal channel). The ``kr_*`` keys set DLoRA's
    Kill-and-Revive (``kill_revive = false`` keeps every module active); ``kr_scores`` is a
    score file (``shipped:NAME`` or a path, :func:`desim.io.files.read_kr_scores`) or inline rows.
    """

    name: Literal["deft", "fl-lora", "dlora", "offload"] = Field(
        default="deft", description="How devices and server share the fine-tuning."
    )
    local_steps: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1, description="Local training steps E per round (`fl-lora`)."
    )
    selection: Literal["all", "random", "fastest"] = Field(
        default="all",
        description=(
            "Participants of `fl-lora` and `dlora`: `all`, `random` or `fastest` m."
        ),
    )
    clients: Annotated[int, Field(ge=1, le=1_000_000)] | None = Field(
        default=None, description="Number m of participants for `random` and `fastest` selection."
    )
    downlink_rate_bps: PositiveFloat | None = Field(
        default=None, description="Fixed downlink rate; unset: the reciprocal uplink channel."
    )
    server_speed_factor: PositiveFloat = Field(
        default=10.0,
        description=(
            "Edge server speed relative to the `cpu-reference` profile (`offload`, `dlora`)."
        ),
    )
    activation_bits: Annotated[int, Field(ge=1, le=64)] = Field(
        default=32, description="Bits per activation value `dlora` sends."
    )
    kill_revive: bool = Field(
        default=True, description="DLoRA's Kill-and-Revive; `false` keeps every module active."
    )
    kr_threshold: FiniteFloat = Field(
        default=1.0,
        description=(
            "A module scoring below this for `kr_patience` rounds is deactivated."
        ),
    )
    kr_patience: Annotated[int, Field(ge=1)] = Field(
        default=2, description="Rounds below the threshold before a module is deactivated."
    )
    kr_revive_period: Annotated[int, Field(ge=1)] = Field(
        default=10, description="Every this many rounds all modules are revived."
    )
    kr_min_active: Annotated[int, Field(ge=1)] = Field(
        default=1, description="Modules a device always keeps (the best-scoring ones)."
    )
    kr_score: Literal["synthetic", "trace"] = Field(
        default="synthetic",
        description=(
            "`synthetic`: log-normal scores; `trace`: replay `kr_scores`."
        ),
    )
    kr_score_sigma: NonNegFloat = Field(
        default=0.5, description="σ of the synthetic log-normal scores exp(σz)."
    )
    kr_scores: (
        Annotated[str, Field(min_length=1)]
        | Annotated[tuple[Annotated[tuple[FiniteFloat, ...], Strict(False)], ...], Strict(False)]
        | None
    ) = Field(
        default=None,
        description="Score file (`shipped:NAME` or a path) or inline rows of 2L scores.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SchemeSpec:
        if self.selection != "all" and self.clients is None:
            raise ValueError(f"selection = {self.selection!r} needs scheme.clients (m)")
        if self.kr_score == "trace" and not self.kr_scores:
            raise ValueError(
                "kr_score = 'trace' needs scheme.kr_scores: rows of 2L scores or a score file "
                "(desim profile --kr-scores; shipped:kr-scores_roberta-base.csv)"
            )
        return self


class HardwarePower(_Frozen):
    """Power draw and nominal peak of one hardware class (README "Energy and efficiency")."""

    compute_w: NonNegFloat = Field(description="Power drawn while computing.")
    transmit_w: NonNegFloat = Field(description="Power drawn while uploading.")
    receive_w: NonNegFloat = Field(description="Power drawn while downloading.")
    idle_w: NonNegFloat = Field(
        description="Power drawn for the rest of a round the device takes part in."
    )
    peak_flops_per_s: PositiveFloat = Field(
        description="Nominal peak of the class (a device's: this × its speed factor), for MFU."
    )


class Scenario(_Frozen):
    """A complete, validated simulation description."""

    model: ModelSpec = Field(
        default=ModelSpec(), description="The transformer and fine-tuning workload."
    )
    server: ServerSpec = Field(default=ServerSpec(), description="The edge server.")
    devices: DevicesSpec = Field(description="The edge devices: a list or a population.")
    channel: ChannelSpec = Field(default=ChannelSpec(), description="The uplink channel.")
    compute: ComputeSpec = Field(
        default=ComputeSpec(), description="Device compute behaviour over time."
    )
    cost: CostSpec = Field(default=CostSpec(), description="Which cost model prices a block.")
    allocator: AllocatorSpec = Field(
        default=AllocatorSpec(), description="The allocator and its parameters."
    )
    run: RunSpec = Field(default=RunSpec(), description="Run length, seed and round policies.")
    faults: FaultsSpec = Field(default=FaultsSpec(), description="Injected faults.")
    scheme: SchemeSpec = Field(default=SchemeSpec(), description="The fine-tuning scheme.")
    power: dict[Annotated[str, Field(min_length=1)], HardwarePower] = Field(
        default_factory=dict,
        description="Hardware class → power model, over the built-in classes.",
    )


def resolve_devices(spec: DevicesSpec, rng: np.random.Generator) -> tuple[DeviceSpec, ...]:
    """Expand a devices section into concrete devices.

    Args:
        spec: the devices section.
        rng: the run's ``population`` stream, drawn from only when ``population.seed`` is
            unset; a pinned seed draws from its own generator, the same for every run seed.

    Returns:
        The devices, in order; the same for the same seed (pinned, or the run's).
    """
    if spec.list is not None:
        return spec.list
    pop = spec.population
    assert pop is not None
    if pop.seed is not None:
        rng = np.random.default_rng(pop.seed)
    n = pop.count
    columns = {
        key: _sample(getattr(pop, key), rng, n)
        for key in ("speed_factor", "memory_bytes", "tx_power_dbm", "distance_m")
    }
    width = len(str(n - 1))
    try:
        return tuple(
            DeviceSpec(
                name=f"{pop.name_prefix}{i:0{width}d}",
                hardware=pop.hardware,
                **{key: float(col[i]) for key, col in columns.items()},
            )
            for i in range(n)
        )
    except ValidationError as exc:
        raise ScenarioError(format_validation_error(exc, "devices.population")) from None


# labels pydantic adds to an error's path for the members of a union; never a scenario key
_UNION_MEMBERS = frozenset({"float", "int", "str", "bool", "none", "uniform", "loguniform",
                            "choice", "constrained-str", "constrained-float", "constrained-int"})
_TABLE_MSG = "Input should be a valid dictionary or object to extract fields from"


def _user_loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc]
    return ".".join(p for p in parts if "[" not in p and p not in _UNION_MEMBERS
                    and not p.startswith("function-"))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One readable part per problem key: ``dotted.field: message (got value)``.

    A value that fails every member of a union (a number or a distribution table) is one part
    listing what each member expected.
    """
    by_key: dict[str, list[Any]] = {}
    for err in exc.errors():
        loc = _user_loc(err["loc"])
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        by_key.setdefault(loc or "<scenario>", []).append(err)
    lines = []
    for loc, errs in by_key.items():
        msgs = []
        for err in errs:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            msg = "Input should be a table" if msg == _TABLE_MSG else msg
            if msg not in msgs:
                msgs.append(msg)
        msg = msgs[0] + "".join(" or " + m.removeprefix("Input should be ") for m in msgs[1:])
        got = errs[0].get("input")
        shown = "" if errs[0]["type"] in ("missing", "extra_forbidden") else f" (got {_short(got)})"
        if isinstance(got, dict):
            shown = ""
        lines.append(f"{loc}: {msg}{shown}")
    return "; ".join(lines)


def validate_scenario(data: dict[str, Any], source: str = "scenario") -> Scenario:
    """Validate a plain mapping (parsed TOML) into a :class:`Scenario`.

    Args:
        data: the parsed scenario.
        source: where it came from, for error messages (a file path).

    Raises:
        ScenarioError: naming the source, each bad field, its value and what was expected.
    """
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{source}: {format_validation_error(exc)}") from None
