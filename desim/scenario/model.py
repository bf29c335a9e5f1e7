"""Scenario: the validated, frozen description of one simulation (no I/O).

A scenario names the model and fine-tuning workload, the edge server, the devices, the channel,
the device compute behaviour, the cost model, the allocator and the run length. Every key carries
its unit (``total_bandwidth_hz``, ``memory_bytes``, ``tx_power_dbm``). Validation errors name the
dotted field, the offending value and what was expected; :mod:`desim.io.scenario` reads files
into it. Devices are given either as an explicit list or as a seeded population
(:func:`resolve_devices`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    Strict,
    ValidationError,
    model_validator,
)

from desim.errors import ScenarioError
from desim.scenario.base import NonNegFloat, PositiveFloat, _Frozen, format_validation_error
from desim.scenario.components import (
    AllocatorSpec,
    ChannelSpec,
    ComputeSpec,
    CostSpec,
    SchemeSpec,
)
from desim.scenario.devices import DevicesSpec


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
    """The edge server: uplink bandwidth and how it is shared, receiver noise, aggregation.

    ``uplink = "reclaim"`` makes the uplink work-conserving (:mod:`desim.engine.uplink`).
    """

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
    uplink: Literal["fixed", "reclaim"] = Field(
        default="fixed",
        description=(
            "`fixed`: each device keeps its planned share `B_k` for the whole round (the "
            "paper's FDMA). `reclaim`: work-conserving, the devices uploading at any moment "
            "share the whole band `B` (an upload that ends or a device that is lost hands "
            "its share to the others)."
        ),
    )
    reclaim: Literal["proportional", "minmax"] = Field(
        default="proportional",
        description=(
            "How `reclaim` re-splits `B` at every upload start, upload end and loss: "
            "`proportional` to the planned shares of the active uploaders (no upload ends "
            "later than under `fixed`), or `minmax`, the split equalising their finish "
            "times on their remaining bits at the SNR of that moment. Used by `reclaim` only."
        ),
    )


class RunSpec(_Frozen):
    """Run length, the seed of all random streams, and the round policies.

    - ``straggler_policy``: ``wait-all`` waits for every block; ``deadline`` abandons the blocks
      still unfinished ``deadline_s`` after the round start and reassigns them to idle devices.
    - ``on_infeasible``: ``error`` stops with a message naming the round, blocks and reason;
      ``skip`` records the round as skipped and retries ``retry_after_s`` later.
    - ``block_fading_s``: the paper's setting, block fading. Round ``r`` plans and runs in one
      state of the world, the state at time ``r · block_fading_s``, held for the whole round,
      so the planned latency is the realised one and every allocator meets the same states.
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
    block_fading_s: PositiveFloat | None = Field(
        default=None,
        description=(
            "The paper's block-fading setting: round r sees every device's channel, speed "
            "and availability as they are at time r × `block_fading_s`, held for the whole "
            "round, so planned latency equals realised and every allocator meets the same "
            "round states (paired comparisons). With `rayleigh` and `coherence_s` ≤ this "
            "step the round states are i.i.d. Faults still apply. Unset: the world changes "
            "within a round (trace replay)."
        ),
    )
    oracle_bound: bool = Field(
        default=False,
        description=(
            "Also solve `oracle-exact` on every round's own snapshot with the true future "
            "(the least latency any fixed-share allocation could realise in that round) and "
            "record it as the rounds column `oracle_bound_s`; DEFT only. Costs one bisection "
            "per round (about 20 ms at 20 devices)."
        ),
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
        raise ScenarioError(f"{source}: {format_validation_error(exc, model=Scenario)}") from None
