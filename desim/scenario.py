"""Scenario: the validated, frozen description of one simulation (no I/O).

A scenario names the model and fine-tuning workload, the edge server, the devices, the channel,
the device compute behaviour, the cost model, the allocator and the run length. Every key carries
its unit (``total_bandwidth_hz``, ``memory_bytes``, ``tx_power_dbm``). Validation errors name the
dotted field, the offending value and what was expected; :mod:`desim.io` reads files into it.
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

    name: str = "roberta-base"
    method: Literal["lora", "full", "lora-checkpoint", "qlora", "mezo", "adapter", "ia3"] = "lora"
    lora_rank: Annotated[int, Field(ge=1, le=4096)] = 8
    adapter_size: Annotated[int, Field(ge=1, le=1_000_000)] = 64
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 8
    seq_len: Annotated[int, Field(ge=1, le=1_000_000)] = 128
    num_blocks: Annotated[int, Field(ge=1, le=10_000)] = 12
    gradient_bits: Annotated[int, Field(ge=1, le=64)] = 32
    target_len: Annotated[int, Field(ge=1, le=1_000_000)] = 32


class ServerSpec(_Frozen):
    """The edge server: uplink bandwidth, receiver noise and aggregation time."""

    total_bandwidth_hz: PositiveFloat = 20e6
    # thermal noise is -174 dBm/Hz at 290 K; outside [-300, 0] the SNR over- or underflows
    noise_psd_dbm_per_hz: Annotated[float, Field(ge=-300, le=0, allow_inf_nan=False)] = -174.0
    aggregation_s: NonNegFloat = 0.01


class Uniform(_Frozen):
    """Uniform distribution on ``[low, high]``."""

    dist: Literal["uniform"]
    low: FiniteFloat
    high: FiniteFloat

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

    dist: Literal["loguniform"]
    low: PositiveFloat
    high: PositiveFloat

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

    dist: Literal["choice"]
    values: Annotated[list[FiniteFloat], Field(min_length=1)]
    weights: list[NonNegFloat] | None = None

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

    name: Annotated[str, Field(min_length=1)]
    hardware: str = "cpu-reference"
    speed_factor: PositiveFloat = 1.0
    memory_bytes: PositiveFloat = 2e9
    tx_power_dbm: FiniteFloat = 23.0
    distance_m: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 100.0


class PopulationSpec(_Frozen):
    """A seeded population of devices; each attribute is a number or a distribution."""

    count: Annotated[int, Field(ge=1, le=1_000_000)] = 20
    seed: Annotated[int, Field(ge=0)] = 0
    hardware: str = "cpu-reference"
    name_prefix: str = "dev"
    speed_factor: DistOrValue = 1.0
    memory_bytes: DistOrValue = 2e9
    tx_power_dbm: DistOrValue = 23.0
    distance_m: DistOrValue = 100.0


class DevicesSpec(_Frozen):
    """Devices as an explicit ``list`` or a generated ``population`` (exactly one)."""

    # TOML and JSON have arrays, not tuples: the sequence is lax, its items stay strict
    list: Annotated[tuple[DeviceSpec, ...], Strict(False)] | None = None
    population: PopulationSpec | None = None

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
      (:func:`desim.channel.generate_gain_db`); starts at each device's ``distance_m``.
    - ``trace``: replay ``path`` (``shipped:NAME`` for a trace shipped with desim), trace
      devices assigned by ``mapping`` (``cyclic``, ``random-offset`` or a table
      ``{scenario device = trace device}``), ``end_policy`` overriding the file's.
    """

    kind: Literal["rayleigh", "static", "generated", "trace"] = "rayleigh"
    path_loss: Literal["umi-nlos", "umi-los", "uma-nlos", "uma-los", "free-space"] = "umi-nlos"
    carrier_ghz: Annotated[float, Field(gt=0.1, le=100, allow_inf_nan=False)] = 3.5
    coherence_s: PositiveFloat = 0.1
    duration_s: PositiveFloat = 3600.0
    environment: Literal["umi", "uma"] = "umi"
    speed_kmh: NonNegFloat = 3.0
    step_s: PositiveFloat = 0.1
    fading: Literal["auto", "rayleigh", "rician", "none"] = "auto"
    rician_k_db: FiniteFloat = 9.0
    shadowing: bool = True
    min_distance_m: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 10.0
    max_distance_m: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1000.0
    path: str | None = None
    mapping: TraceMapping = "cyclic"
    end_policy: Literal["loop", "hold"] | None = None
    throughput_scale: PositiveFloat = 1.0

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

    kind: Literal["constant", "generated", "trace"] = "constant"
    path: str | None = None
    mapping: TraceMapping = "cyclic"
    end_policy: Literal["loop", "hold"] | None = None
    duration_s: PositiveFloat = 3600.0
    load_mean: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.3
    load_concentration: PositiveFloat = 4.0
    load_hold_s: PositiveFloat = 60.0
    min_speed: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.05
    mean_up_s: PositiveFloat = 1800.0
    mean_down_s: NonNegFloat = 120.0

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

    profile: Annotated[str, Field(min_length=1)]
    speed: PositiveFloat = 1.0


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

    model: Literal["profiled", "analytic"] = "profiled"
    profiles: dict[Annotated[str, Field(min_length=1)], BorrowedProfile] = Field(
        default_factory=lambda: {"cpu-reference": BorrowedProfile(profile="cpu-reference")}
    )

    @field_validator("profiles", mode="before")
    @classmethod
    def _plain_names(cls, value: Any) -> Any:
        # a plain string names the class's own profile (speed 1)
        if isinstance(value, dict):
            return {k: {"profile": v} if isinstance(v, str) else v for k, v in value.items()}
        return value
    fallback: Literal["analytic", "none"] = "analytic"
    analytic_flops_per_s: PositiveFloat = 5e10


class AllocatorSpec(BaseModel):
    """The allocator by registered ``name``; every other key is one of its parameters."""

    model_config = ConfigDict(frozen=True, extra="allow", allow_inf_nan=False, strict=True)

    name: str = "greedy"

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

    rounds: Annotated[int, Field(ge=1, le=10_000_000)] = 100
    seed: Annotated[int, Field(ge=0)] = 0
    straggler_policy: Literal["wait-all", "deadline"] = "wait-all"
    deadline_s: PositiveFloat | None = None
    on_infeasible: Literal["error", "skip"] = "error"
    retry_after_s: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _deadline(self) -> RunSpec:
        if self.straggler_policy == "deadline" and self.deadline_s is None:
            raise ValueError("straggler_policy = 'deadline' needs run.deadline_s")
        return self


class FaultEvent(_Frozen):
    """A scripted outage: ``device`` goes offline at ``time_s`` for ``duration_s`` seconds."""

    device: Annotated[str, Field(min_length=1)]
    time_s: NonNegFloat
    duration_s: Annotated[float, Field(gt=0)] = float("inf")


class FaultsSpec(_Frozen):
    """Injected faults (own random stream ``faults``, so paired across allocators).

    - ``dropout_rate``: probability that a device working in a round drops out during it, at a
      uniformly random point of its work; its in-flight block is lost and reassigned.
    - ``events``: scripted outages (``{device, time_s, duration_s}``).
    - ``upload_timeout_s``: an upload still running this long after it started counts as a
      dropout at that moment (a stalled link is otherwise waited for).
    """

    dropout_rate: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] = 0.0
    events: Annotated[tuple[FaultEvent, ...], Strict(False)] = ()
    upload_timeout_s: PositiveFloat | None = None


class SchemeSpec(_Frozen):
    """The fine-tuning scheme (README "Schemes, methods and energy").

    ``deft`` (default) uses the allocator; ``offload`` runs the ``offload`` allocator at
    ``server_speed_factor``; ``fl-lora`` and ``dlora`` are planned by :mod:`desim.schemes`.
    ``selection`` (``all``, ``random``, ``fastest``) with ``clients`` picks the participants of
    ``fl-lora`` and ``dlora``; ``local_steps`` is ``E``; ``downlink_rate_bps`` fixes the
    downlink rate (unset: the reciprocal channel). The ``kr_*`` keys set DLoRA's
    Kill-and-Revive (``kill_revive = false`` keeps every module active); ``kr_scores`` is a
    score file (``shipped:NAME`` or a path, :func:`desim.io.read_kr_scores`) or inline rows.
    """

    name: Literal["deft", "fl-lora", "dlora", "offload"] = "deft"
    local_steps: Annotated[int, Field(ge=1, le=100_000)] = 1
    selection: Literal["all", "random", "fastest"] = "all"
    clients: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    downlink_rate_bps: PositiveFloat | None = None
    server_speed_factor: PositiveFloat = 10.0
    activation_bits: Annotated[int, Field(ge=1, le=64)] = 32
    kill_revive: bool = True
    kr_threshold: FiniteFloat = 1.0
    kr_patience: Annotated[int, Field(ge=1)] = 2
    kr_revive_period: Annotated[int, Field(ge=1)] = 10
    kr_min_active: Annotated[int, Field(ge=1)] = 1
    kr_score: Literal["synthetic", "trace"] = "synthetic"
    kr_score_sigma: NonNegFloat = 0.5
    kr_scores: (
        Annotated[str, Field(min_length=1)]
        | Annotated[tuple[Annotated[tuple[FiniteFloat, ...], Strict(False)], ...], Strict(False)]
        | None
    ) = None

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

    compute_w: NonNegFloat
    transmit_w: NonNegFloat
    receive_w: NonNegFloat
    idle_w: NonNegFloat
    peak_flops_per_s: PositiveFloat


class Scenario(_Frozen):
    """A complete, validated simulation description."""

    model: ModelSpec = ModelSpec()
    server: ServerSpec = ServerSpec()
    devices: DevicesSpec
    channel: ChannelSpec = ChannelSpec()
    compute: ComputeSpec = ComputeSpec()
    cost: CostSpec = CostSpec()
    allocator: AllocatorSpec = AllocatorSpec()
    run: RunSpec = RunSpec()
    faults: FaultsSpec = FaultsSpec()
    scheme: SchemeSpec = SchemeSpec()
    power: dict[Annotated[str, Field(min_length=1)], HardwarePower] = Field(default_factory=dict)

    @field_validator("allocator")
    @classmethod
    def _known_allocator(cls, spec: AllocatorSpec) -> AllocatorSpec:
        from desim.allocators import make_allocator  # registry lookup only; no I/O
        from desim.errors import DesimError

        try:
            make_allocator(spec.name, spec.params)
        except DesimError as exc:
            raise ValueError(str(exc)) from None
        return spec


def resolve_devices(spec: DevicesSpec) -> tuple[DeviceSpec, ...]:
    """Expand a devices section into concrete devices (deterministic in the population seed)."""
    if spec.list is not None:
        return spec.list
    pop = spec.population
    assert pop is not None
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
