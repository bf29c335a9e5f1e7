"""DLoRA split fine-tuning (``dlora``): the server runs the frozen backbone, devices the LoRA.

The device keeps its data and the LoRA modules; activations cross the link per layer and per
step, and Kill-and-Revive (:class:`~desim.schemes.kill_revive.KillRevive`) keeps only modules
whose score stays above a threshold. A DLoRA server serves each device's pipeline in parallel;
LoRA matrix products on a device run at the same sustained FLOP/s as its profiled training step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, Strict, model_validator

from desim.allocators.base import RoundContext
from desim.costs.base import Workload
from desim.costs.flops import LoraModule, layer_forward_flops, lora_modules
from desim.errors import InfeasibleError, InputError, ScenarioError
from desim.plan import Phase, RoundPlan, phase_totals
from desim.schemes.base import (
    SCHEMES,
    Scheme,
    SelectionParams,
    participant_rows,
    planned_transfer_s,
)
from desim.schemes.fl_lora import FedLoRAScheme
from desim.schemes.kill_revive import KillRevive, KillReviveState

if TYPE_CHECKING:
    from desim.allocators.base import Allocator
    from desim.scenario.model import Scenario

ScoreRows = tuple[tuple[float, ...], ...]


class DLoRAParams(SelectionParams):
    """Parameters of ``dlora``; the ``kr_*`` keys set Kill-and-Revive."""

    server_speed_factor: float = Field(
        default=10.0, gt=0,
        description="Edge server speed relative to the `cpu-reference` profile.",
    )
    activation_bits: int = Field(default=32, ge=1, le=64,
                                 description="Bits per activation value sent.")
    kill_revive: bool = Field(
        default=True, description="DLoRA's Kill-and-Revive; `false` keeps every module active."
    )
    kr_threshold: float = Field(
        default=1.0, description="A module scoring below this for `kr_patience` rounds is killed."
    )
    kr_patience: int = Field(default=2, ge=1,
                             description="Rounds below the threshold before a module is killed.")
    kr_revive_period: int = Field(default=10, ge=1,
                                  description="Every this many rounds all modules are revived.")
    kr_min_active: int = Field(
        default=1, ge=1, description="Modules a device always keeps (the best-scoring ones)."
    )
    kr_score: Literal["synthetic", "trace"] = Field(
        default="synthetic", description="`synthetic`: log-normal scores; `trace`: `kr_scores`."
    )
    kr_score_sigma: float = Field(default=0.5, ge=0,
                                  description="σ of the synthetic log-normal scores exp(σz).")
    kr_scores: (
        Annotated[str, Field(min_length=1)]
        | Annotated[tuple[Annotated[tuple[float, ...], Strict(False)], ...], Strict(False)]
        | None
    ) = Field(default=None,
              description="Score file (`shipped:NAME` or a path) or inline rows of 2L scores.")

    @model_validator(mode="after")
    def _scores(self) -> DLoRAParams:
        if self.kr_score == "trace" and not self.kr_scores:
            raise ValueError(
                "kr_score = 'trace' needs scheme.kr_scores: rows of 2L scores or a score file "
                "(desim profile --kr-scores; shipped:kr-scores_roberta-base.csv)"
            )
        return self


def kr_scores_of(ref: str | ScoreRows | None, workload: Workload, model: str) -> ScoreRows | None:
    """Kill-and-Revive score rows: inline, or read from the named score file.

    Raises:
        InputError: an unreadable file, or rows whose length is not the model's ``2L`` modules.
    """
    if ref is None:
        return None
    where = "scheme.kr_scores"
    rows: Any = ref
    if isinstance(ref, str):
        from desim.io.calibration import read_kr_scores, resolve_kr_scores_path

        rows = read_kr_scores(resolve_kr_scores_path(ref))
        where = f"scheme.kr_scores ({ref})"
    modules = 2 * workload.config.num_layers
    bad = [len(r) for r in rows if len(r) != modules]
    if bad:
        raise InputError(
            f"{where}: {model} has {modules} LoRA modules (q and v of every layer), but a score "
            f"row has {bad[0]}"
        )
    return tuple(tuple(float(v) for v in r) for r in rows)


def lora_module_flops(module: LoraModule, batch: int, rank: int) -> float:
    """FLOPs of one LoRA module's training step on the device: ``3 · 2b·tokens·r(d_in + d_out)``.

    Forward ``x·A`` then ``·B`` is ``2b·tokens·(d_in·r + r·d_out)``; the backward pass
    (gradients of ``A``, ``B`` and of the input) costs twice the forward. RoBERTa:
    ``3 · 4bshr``; a T5 module on ``t`` decoder tokens or ``s`` encoder tokens, ``d_out = i``.
    """
    return 3.0 * 2.0 * batch * module.tokens * rank * (module.d_in + module.d_out)


@dataclass
class DLoRAState:
    """Per-run DLoRA state: the Kill-and-Revive masks."""

    kr: KillReviveState | None


@dataclass(frozen=True, eq=False)
class SplitLayout:
    """Where DLoRA's tensors come from: the LoRA modules, their input groups and layers.

    Modules and layers are counted from the input (T5: encoder layers first). Modules of one
    group share an input tensor (a self-attention's query and value read the same one).

    Attributes:
        module_flops: ``(M,)`` device FLOPs of one training step of each module.
        module_values: ``(M,)`` LoRA values of each module.
        out_bits: ``(M,)`` bits of each module's output (or output-gradient) tensor.
        group_bits: ``(G,)`` bits of each group's input (or input-gradient) tensor.
        module_group: ``(M, G)`` membership of modules in groups.
        module_layer: ``(M, L)`` membership of modules in layers.
        group_layer: ``(G, L)`` membership of groups in layers.
        layer_share: ``(L,)`` each layer's share of the frozen backbone's forward FLOPs.
    """

    module_flops: np.ndarray
    module_values: np.ndarray
    out_bits: np.ndarray
    group_bits: np.ndarray
    module_group: np.ndarray
    module_layer: np.ndarray
    group_layer: np.ndarray
    layer_share: np.ndarray

    @classmethod
    def of(cls, wl: Workload, activation_bits: int) -> SplitLayout:
        """The layout of ``wl``'s model at its batch and sequence lengths."""
        cfg, b, r = wl.config, wl.batch_size, wl.lora_rank
        mods = lora_modules(cfg, wl.seq_len, wl.decoder_len)
        groups = sorted({(m.layer, m.group) for m in mods})
        first = {g: next(m for m in mods if (m.layer, m.group) == g) for g in groups}
        L = cfg.num_layers
        kinds = cfg.layer_kinds()[::-1]  # from the input
        fwd = np.array([layer_forward_flops(cfg, k, b, wl.seq_len, wl.decoder_len)
                        for k in kinds])
        return cls(
            module_flops=np.array([lora_module_flops(m, b, r) for m in mods]),
            module_values=np.array([float(m.values(r)) for m in mods]),
            out_bits=np.array([float(b * m.tokens * m.d_out * activation_bits) for m in mods]),
            group_bits=np.array([float(b * first[g].tokens * first[g].d_in * activation_bits)
                                 for g in groups]),
            module_group=np.array([[(m.layer, m.group) == g for g in groups] for m in mods],
                                  dtype=float),
            module_layer=np.array([[m.layer == j for j in range(L)] for m in mods], dtype=float),
            group_layer=np.array([[g[0] == j for j in range(L)] for g in groups], dtype=float),
            layer_share=fwd / fwd.sum(),
        )


@SCHEMES.register("dlora", "split fine-tuning: server backbone, device LoRA modules",
                  DLoRAParams)
@dataclass(frozen=True)
class DLoRAScheme(Scheme):
    """DLoRA split fine-tuning (``dlora``): server backbone, device LoRA modules.

    Modules are the ``2L`` LoRA modules (self-attention query and value of every layer),
    modules ``2(l−1)`` and ``2(l−1)+1`` in layer ``l`` counted from the input (T5: encoder
    layers first, then decoder layers). One step of a device, layer by layer from the input:
    the server runs the frozen layer (its share of the backbone's forward FLOPs of
    ``server_step_s / 2``); if the layer has an active module the server sends its input down
    (``b·tokens·h·activation_bits`` bits, ``tokens`` = ``s`` in an encoder layer and ``t`` in a
    decoder layer), the device runs its active modules and sends one output tensor per active
    module up (``b·tokens·i·activation_bits``; ``i = h`` for RoBERTa). The backward pass
    mirrors it from the output: the server's layer backward, one output-gradient tensor down
    per active module, the device's module backward, one input-gradient tensor up per active
    layer. So per step and device on RoBERTa ``up = down = (active modules + active layers)·T``
    bits with ``T = b·s·h·activation_bits``, and the device computes
    :func:`lora_module_flops` per active module at its sustained training FLOP/s. ``local_steps``
    steps make a round; a barrier and ``aggregation_s`` end it (the server has nothing to
    average: each device's modules are its own).

    Attributes:
        local_steps: steps per round.
        server_speed_factor: the server's speed relative to its hardware class profile.
        activation_bits: bits per activation or gradient value.
        kill_revive: the Kill-and-Revive policy (``None``: every module always active).
        score: ``synthetic``: log-normal scores ``exp(σ·z)`` from the ``scheme`` stream (a
            stand-in, not a measurement); ``trace``: ``scores[r mod len]`` for round ``r``.
        score_sigma: σ of the synthetic scores.
        scores: the score trace, rows of ``2L`` values.
        selection, clients: participating devices as for ``fl-lora`` (``all`` by default).
        downlink_rate_bps: fixed downlink rate; ``None``: reciprocal channel.
    """

    local_steps: int = 1
    server_speed_factor: float = 10.0
    activation_bits: int = 32
    kill_revive: KillRevive | None = field(default_factory=KillRevive)
    score: Literal["synthetic", "trace"] = "synthetic"
    score_sigma: float = 0.5
    scores: tuple[tuple[float, ...], ...] | None = None
    selection: Literal["all", "random", "fastest"] = "all"
    clients: int | None = None
    downlink_rate_bps: float | None = None
    name: ClassVar[str] = "dlora"

    def num_modules(self, workload: Workload) -> int:
        """``2L`` LoRA modules (all layers, encoder and decoder)."""
        return len(lora_modules(workload.config, workload.seq_len, workload.decoder_len))

    def new_state(self, num_devices: int, rng: np.random.Generator) -> Any:
        """Every module active (the masks are created at the first plan, once ``2L`` is known)."""
        return DLoRAState(kr=None)

    def module_scores(self, round_index: int, devices: np.ndarray, num_modules: int,
                      rng: np.random.Generator) -> np.ndarray:
        """``(P, M)`` sensitivity scores observed after round ``round_index``."""
        if self.score == "trace":
            assert self.scores is not None
            row = np.asarray(self.scores[round_index % len(self.scores)], dtype=float)
            if row.size != num_modules:
                raise InfeasibleError(
                    f"scheme.kr_scores: rows need {num_modules} scores (2 per layer), got "
                    f"{row.size}"
                )
            return np.broadcast_to(row, (devices.size, num_modules))
        return np.exp(self.score_sigma * rng.standard_normal((devices.size, num_modules)))

    @classmethod
    def build(cls, params: Any, scenario: Scenario, workload: Workload,
              allocator: Allocator) -> Scheme:
        """DLoRA for a LoRA method trained by backpropagation, with its score rows read.

        Raises:
            ScenarioError: a method DLoRA cannot split.
            InputError: an unreadable score file, or rows of the wrong length.
        """
        from desim.costs.methods import method_rules

        rules = method_rules(scenario.model.method)
        if rules.trains != "lora" or not rules.backward:
            raise ScenarioError(
                f"model.method: dlora splits the LoRA modules off the frozen backbone and "
                f"trains them by backpropagation; use lora, lora-checkpoint or qlora, got "
                f"{scenario.model.method!r}"
            )
        kr = (KillRevive(params.kr_threshold, params.kr_patience, params.kr_revive_period,
                         params.kr_min_active) if params.kill_revive else None)
        return cls(
            local_steps=params.local_steps, server_speed_factor=params.server_speed_factor,
            activation_bits=params.activation_bits, kill_revive=kr, score=params.kr_score,
            score_sigma=params.kr_score_sigma,
            scores=kr_scores_of(params.kr_scores, workload, scenario.model.name),
            selection=params.selection, clients=params.clients,
            downlink_rate_bps=params.downlink_rate_bps,
        )

    def plan(self, ctx: RoundContext, state: Any, rng: np.random.Generator) -> RoundPlan:
        """Phases of ``local_steps`` split steps over the active modules of each device."""
        lay = SplitLayout.of(ctx.workload, self.activation_bits)
        M = lay.module_layer.shape[0]
        server_step_s = ctx.server_step_s
        if server_step_s is None:
            raise InfeasibleError(
                f"round {ctx.round_index}: dlora needs the server's training-step cost, but "
                "the cost model does not price the server's hardware class"
            )
        selector = FedLoRAScheme(selection=self.selection, clients=self.clients)
        if not (ctx.available & (ctx.speed > 0)).any():
            raise InfeasibleError(f"round {ctx.round_index}: dlora: no device is available")
        # every device can hold its LoRA modules: selection ignores the model's memory
        devs = selector.select(replace(ctx, memory_bytes=np.zeros_like(ctx.memory_bytes)), rng)
        P = devs.size
        if state.kr is None:
            state.kr = (self.kill_revive or KillRevive(threshold=-np.inf)).new_state(
                ctx.work_s.shape[0], M
            )
        policy = self.kill_revive
        active = (
            policy.active_for(state.kr, ctx.round_index)[devs].copy()
            if policy is not None
            else np.ones((P, M), dtype=bool)
        )
        on = active.astype(float)
        group_on = ((on @ lay.module_group) > 0).astype(float)  # (P, G) inputs in use
        stages = (self._phases(ctx, lay, devs, on, group_on, server_step_s),)
        bw = np.full(P, ctx.total_bandwidth_hz / P)
        # device memory: its LoRA values with gradient and Adam moments (16 B each) and the
        # inputs of its active modules kept for backward
        memory = 16.0 * on @ lay.module_values + group_on @ lay.group_bits / 8
        rows = participant_rows(ctx, devs, bw, 0, stages, memory,
                                self.local_steps * on @ lay.module_flops,
                                np.full(P, float(self.local_steps * ctx.workload.batch_size)))
        down_bits = phase_totals(stages, "down", P)
        planned = (
            rows.planned_compute_s + rows.planned_upload_s
            + (planned_transfer_s(ctx, devs, down_bits, bw) if self.downlink_rate_bps is None
               else down_bits / self.downlink_rate_bps)
            + self.local_steps * server_step_s / self.server_speed_factor
        )
        if policy is not None:
            policy.observe(state.kr, devs, self.module_scores(ctx.round_index, devs, M, rng))
        return RoundPlan(
            devices=devs, bandwidth_hz=bw, stages=stages, barrier_s=(ctx.aggregation_s,),
            rows=rows, planned_latency_s=float(planned.max() + ctx.aggregation_s),
            downlink_rate_bps=self.downlink_rate_bps,
            diagnostics={"active_modules": active.sum(axis=1).astype(float).tolist(),
                         "modules": M},
        )

    def _phases(self, ctx: RoundContext, lay: SplitLayout, devs: np.ndarray, on: np.ndarray,
                group_on: np.ndarray, server_step_s: float) -> tuple[Phase, ...]:
        """The phases of ``local_steps`` split steps, layer by layer (class docstring)."""
        P, L = devs.size, lay.module_layer.shape[1]
        flops = (on * lay.module_flops) @ lay.module_layer  # (P, L) module FLOPs per layer
        outs = (on * lay.out_bits) @ lay.module_layer  # (P, L) output tensors per layer
        ins = (group_on * lay.group_bits) @ lay.group_layer  # (P, L) input tensors per layer
        # device FLOP/s: its profiled full training step against that step's counted FLOPs
        deepest = ctx.work_s.shape[1] - 1
        flops_per_work_s = ctx.block_flops[devs, deepest] / ctx.work_s[devs, deepest]
        layer_server_s = server_step_s / self.server_speed_factor / 2 * lay.layer_share
        phases: list[Phase] = []
        for _ in range(self.local_steps):
            for layer in range(L):  # forward, from the input
                phases += [Phase("server", np.full(P, layer_server_s[layer])),
                           Phase("down", ins[:, layer]),
                           Phase("compute", flops[:, layer] / 3 / flops_per_work_s),
                           Phase("up", outs[:, layer])]
            for layer in reversed(range(L)):  # backward, from the output
                phases += [Phase("server", np.full(P, layer_server_s[layer])),
                           Phase("down", outs[:, layer]),
                           Phase("compute", flops[:, layer] * 2 / 3 / flops_per_work_s),
                           Phase("up", ins[:, layer])]
        return tuple(phases)
