"""Fine-tuning schemes: what each participant computes, stores and sends in one round.

A scheme (README "Schemes, methods and energy") turns the round-start snapshot into a
:class:`RoundPlan`: the participating devices, their bandwidth shares, and a sequence of
*stages* separated by barriers. In a stage every participant runs its own list of phases in
order (compute seconds at timeline speed 1, uplink bits, downlink bits, waiting on the server);
after the barrier the server spends ``barrier_s`` (aggregation). The engine realises the phases
with the exact integrals of the compute timeline and the channel (it is the only simpy
importer); this module is pure (numpy only) and never sees the engine.

- ``deft`` (the default) and ``offload`` keep their allocator paths in the engine (``offload``
  runs the ``offload`` allocator, :class:`~desim.allocators.baselines.OffloadAllocator`); they
  are listed here so every scheme has one name.
- ``fl-lora`` (:class:`FedLoRAScheme`): federated LoRA. Each selected device trains every block
  (a full backward pass: the deepest block's cost) for ``E`` local steps, uploads all LoRA
  parameters, the server averages them (:func:`fedavg`) and broadcasts the average back.
- ``dlora`` (:class:`DLoRAScheme`): split PEFT. The server runs the frozen backbone, the device
  keeps its data and the LoRA modules; activations cross the link per layer and per step, and
  Kill-and-Revive (:class:`KillRevive`) keeps only modules whose score stays above a threshold.

Assumptions (documented in the README): participants share the band equally; the downlink is
either reciprocal (the uplink's channel and bandwidth share, TDD) or a fixed
``downlink_rate_bps``; a DLoRA server serves each device's pipeline in parallel; LoRA matrix
products on a device run at the same sustained FLOP/s as its profiled training step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from desim.costs.models import Workload, analytic_flops
from desim.costs.transformer import LoraModule, layer_forward_flops, lora_modules
from desim.errors import InfeasibleError, UnknownNameError
from desim.world.rates import shannon_rate_bps

SCHEME_NAMES: tuple[str, ...] = ("deft", "fl-lora", "dlora", "offload")

PhaseKind = Literal["compute", "up", "down", "server"]


def training_flops(workload: Workload) -> np.ndarray:
    """``(N,)`` counted FLOPs of one training step of block ``n`` by the analytic count.

    :func:`desim.costs.models.analytic_flops` (formulas in
    :func:`desim.costs.models.analytic_costs`). Runs
    use each hardware class's ``BlockCosts.flops`` instead, which are torch-counted when the
    profile has them.
    """
    return analytic_flops(workload)


def lora_module_flops(module: LoraModule, batch: int, rank: int) -> float:
    """FLOPs of one LoRA module's training step on the device: ``3 · 2b·tokens·r(d_in + d_out)``.

    Forward ``x·A`` then ``·B`` is ``2b·tokens·(d_in·r + r·d_out)``; the backward pass
    (gradients of ``A``, ``B`` and of the input) costs twice the forward. RoBERTa:
    ``3 · 4bshr``; a T5 module on ``t`` decoder tokens or ``s`` encoder tokens, ``d_out = i``.
    """
    return 3.0 * 2.0 * batch * module.tokens * rank * (module.d_in + module.d_out)


def fedavg(updates: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Federated averaging: ``Σ_k n_k Δ_k / Σ_k n_k``.

    Args:
        updates: ``(P, S)`` the parameters each client uploaded.
        samples: ``(P,)`` training samples behind each update (the weights).

    Returns:
        ``(S,)`` the averaged parameters the server broadcasts.
    """
    w = np.asarray(samples, dtype=float)
    return (w[:, None] * np.asarray(updates, dtype=float)).sum(axis=0) / w.sum()


@dataclass(frozen=True, eq=False)
class SchemeInputs:
    """The round-start snapshot a scheme plans with.

    Attributes:
        round_index: 0-based round.
        time_s: round start.
        work_s: ``(K, N)`` seconds at timeline speed 1 to train down to block ``n``.
        speed: ``(K,)`` timeline speed at the round start.
        available: ``(K,)`` devices that may take part.
        memory_bytes: ``(N,)`` peak bytes of training down to block ``n``.
        memory_budget_bytes: ``(K,)`` budgets.
        block_bits: ``(N,)`` bits of block ``n``'s trainable values.
        snr_coef_hz: ``(K,)`` ``p g / N0`` at the round start.
        total_bandwidth_hz: B.
        aggregation_s: server time after each barrier.
        server_step_s: seconds for the server to run one full training step (``None``: not
            priced).
        block_flops: ``(K, N)`` counted FLOPs of training down to block ``n`` on device
            ``k``'s hardware class.
        workload: the workload.
    """

    round_index: int
    time_s: float
    work_s: np.ndarray
    speed: np.ndarray
    available: np.ndarray
    memory_bytes: np.ndarray
    memory_budget_bytes: np.ndarray
    block_bits: np.ndarray
    snr_coef_hz: np.ndarray
    total_bandwidth_hz: float
    aggregation_s: float
    server_step_s: float | None
    block_flops: np.ndarray
    workload: Workload


@dataclass(frozen=True, eq=False)
class Phase:
    """One phase of every participant: ``amount`` is ``(P,)`` seconds or bits by ``kind``.

    ``compute``: work seconds at timeline speed 1; ``up``/``down``: bits over the link;
    ``server``: seconds waiting for the server.
    """

    kind: PhaseKind
    amount: np.ndarray


@dataclass(frozen=True, eq=False)
class RoundPlan:
    """What the participants of one round do (a scheme's decision, as data).

    Attributes:
        devices: ``(P,)`` participating device indices.
        bandwidth_hz: ``(P,)`` their uplink (and reciprocal downlink) bandwidth.
        stages: phases per stage; a barrier follows every stage.
        barrier_s: server seconds after each stage's barrier (aggregation).
        memory_bytes: ``(P,)`` peak device memory.
        flops: ``(P,)`` counted training FLOPs on each device.
        samples: ``(P,)`` training samples each device contributes.
        planned_latency_s: the plan's latency at the round-start snapshot.
        downlink_rate_bps: fixed downlink rate, or ``None`` for the reciprocal channel.
        diagnostics: scheme details recorded in run.json (FedAvg weights, active modules).
    """

    devices: np.ndarray
    bandwidth_hz: np.ndarray
    stages: tuple[tuple[Phase, ...], ...]
    barrier_s: tuple[float, ...]
    memory_bytes: np.ndarray
    flops: np.ndarray
    samples: np.ndarray
    planned_latency_s: float
    downlink_rate_bps: float | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def totals(self, kind: PhaseKind) -> np.ndarray:
        """``(P,)`` sum of the amounts of every phase of ``kind``."""
        out = np.zeros(self.devices.size)
        for stage in self.stages:
            for ph in stage:
                if ph.kind == kind:
                    out = out + ph.amount
        return out


class Scheme(ABC):
    """A fine-tuning scheme the engine can run (``fl-lora``, ``dlora``)."""

    name: ClassVar[str] = ""

    def new_state(self, num_devices: int, rng: np.random.Generator) -> Any:
        """Fresh per-run state (Kill-and-Revive masks); ``None`` when stateless."""
        return None

    def realised(self, plan: RoundPlan, contributed: np.ndarray) -> dict[str, Any]:
        """The diagnostics to record once the round ran.

        ``contributed`` is ``(P,)``: whose work counted (participants lost to a fault in the
        first stage did not).
        """
        if contributed.all():
            return plan.diagnostics
        lost = plan.devices[~contributed].tolist()
        return {**plan.diagnostics, "lost": lost}

    @abstractmethod
    def plan(self, inp: SchemeInputs, state: Any, rng: np.random.Generator) -> RoundPlan:
        """Plan one round.

        Raises:
            InfeasibleError: no device can take part.
        """


def _planned_up_s(inp: SchemeInputs, devs: np.ndarray, bits: np.ndarray, bw: np.ndarray) -> Any:
    rate = shannon_rate_bps(bw, inp.snr_coef_hz[devs])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bits > 0, bits / rate, 0.0)


def _planned_compute_s(inp: SchemeInputs, devs: np.ndarray, work: np.ndarray) -> Any:
    with np.errstate(divide="ignore"):
        return work / inp.speed[devs]


@dataclass(frozen=True)
class FedLoRAScheme(Scheme):
    """Federated LoRA (``fl-lora``): local training of every block, FedAvg, broadcast.

    A round: the selected devices each run ``local_steps`` full training steps (forward and a
    backward pass to the lowest block: ``E · w_N``; memory ``m_N``), upload every block's LoRA
    values (``Σ_n D_n`` bits) at an equal share ``B/P``; after the barrier the server averages
    them (:func:`fedavg`, weights = samples, ``aggregation_s``) and broadcasts the average
    (``Σ_n D_n`` bits down to every participant); the round ends when the last one has it.

    Attributes:
        local_steps: ``E`` mini-batches per device per round.
        selection: ``all`` eligible devices, ``random`` m of them, or the ``fastest`` m by
            planned time (local steps plus upload at the share ``B/m``).
        clients: ``m`` (needed for ``random`` and ``fastest``).
        downlink_rate_bps: fixed broadcast rate per device; ``None``: reciprocal channel.
    """

    local_steps: int = 1
    selection: Literal["all", "random", "fastest"] = "all"
    clients: int | None = None
    downlink_rate_bps: float | None = None
    name: ClassVar[str] = "fl-lora"

    def select(self, inp: SchemeInputs, rng: np.random.Generator) -> np.ndarray:
        """The participating devices (sorted indices)."""
        deepest = inp.work_s.shape[1] - 1
        ok = (
            inp.available
            & (inp.speed > 0)
            & (inp.memory_bytes[deepest] <= inp.memory_budget_bytes)
        )
        eligible = np.flatnonzero(ok)
        if eligible.size == 0:
            raise InfeasibleError(
                f"round {inp.round_index}: fl-lora: no available device can hold the whole "
                f"model's training step ({inp.memory_bytes[deepest]:.4g} bytes)"
            )
        if self.selection == "all":
            return eligible
        m = min(int(self.clients or 1), eligible.size)
        if self.selection == "random":
            return np.sort(rng.choice(eligible, size=m, replace=False))
        bits = np.full(eligible.size, float(inp.block_bits.sum()))
        bw = np.full(eligible.size, inp.total_bandwidth_hz / m)
        t = _planned_compute_s(
            inp, eligible, self.local_steps * inp.work_s[eligible, deepest]
        ) + _planned_up_s(inp, eligible, bits, bw)
        return np.sort(eligible[np.argsort(t, kind="stable")[:m]])

    def realised(self, plan: RoundPlan, contributed: np.ndarray) -> dict[str, Any]:
        """FedAvg weights over the clients whose update arrived (a lost client drops out)."""
        out = super().realised(plan, contributed)
        if not contributed.all():
            w = np.where(contributed, plan.samples, 0.0)
            out["fedavg_weights"] = (w / w.sum()).tolist() if w.sum() > 0 else []
        return out

    def plan(self, inp: SchemeInputs, state: Any, rng: np.random.Generator) -> RoundPlan:
        """Select clients, then: E local steps, upload, FedAvg, broadcast."""
        devs = self.select(inp, rng)
        P = devs.size
        deepest = inp.work_s.shape[1] - 1
        bw = np.full(P, inp.total_bandwidth_hz / P)
        work = self.local_steps * inp.work_s[devs, deepest]
        bits = np.full(P, float(inp.block_bits.sum()))
        samples = np.full(P, float(self.local_steps * inp.workload.batch_size))
        up_end = _planned_compute_s(inp, devs, work) + _planned_up_s(inp, devs, bits, bw)
        if self.downlink_rate_bps is None:
            down = _planned_up_s(inp, devs, bits, bw)
        else:
            down = bits / self.downlink_rate_bps
        weights = samples / samples.sum()
        return RoundPlan(
            devices=devs,
            bandwidth_hz=bw,
            stages=((Phase("compute", work), Phase("up", bits)), (Phase("down", bits),)),
            barrier_s=(inp.aggregation_s, 0.0),
            memory_bytes=np.full(P, float(inp.memory_bytes[deepest])),
            flops=self.local_steps * inp.block_flops[devs, deepest],
            samples=samples,
            planned_latency_s=float(up_end.max() + inp.aggregation_s + down.max()),
            downlink_rate_bps=self.downlink_rate_bps,
            diagnostics={"clients": devs.tolist(), "fedavg_weights": weights.tolist(),
                         "aggregated_values": float(inp.block_bits.sum())
                         / inp.workload.gradient_bits},
        )


@dataclass
class KillReviveState:
    """Per-device Kill-and-Revive state: ``(K, M)`` active masks and below-threshold streaks."""

    active: np.ndarray
    below: np.ndarray
    scores_seen: int = 0


@dataclass(frozen=True)
class KillRevive:
    """Kill-and-Revive (DLoRA): keep only the modules whose score stays high.

    After each round every active module's sensitivity score is compared with ``threshold``;
    a module whose score stayed below it for ``patience`` consecutive rounds is deactivated
    (killed). Every ``revive_period`` rounds (rounds ``p, 2p, ...``) all modules are revived
    and their streaks reset. A device never keeps fewer than ``min_active`` modules: when
    killing would go below it, the highest-scoring modules among those due are kept.

    Attributes:
        threshold: score below which a module counts as insensitive.
        patience: consecutive low rounds before a kill.
        revive_period: rounds between revivals.
        min_active: modules every device keeps active (at least 1).
    """

    threshold: float = 1.0
    patience: int = 2
    revive_period: int = 10
    min_active: int = 1

    def new_state(self, num_devices: int, num_modules: int) -> KillReviveState:
        """All modules active, no streaks."""
        return KillReviveState(
            np.ones((num_devices, num_modules), dtype=bool),
            np.zeros((num_devices, num_modules), dtype=np.intp),
        )

    def active_for(self, state: KillReviveState, round_index: int) -> np.ndarray:
        """``(K, M)`` active modules of round ``round_index`` (reviving on schedule)."""
        if round_index > 0 and round_index % self.revive_period == 0:
            state.active[:] = True
            state.below[:] = 0
        return state.active

    def observe(self, state: KillReviveState, devices: np.ndarray, scores: np.ndarray) -> None:
        """Update streaks from ``(P, M)`` scores of ``devices`` and kill the modules due."""
        active = state.active[devices]
        low = scores < self.threshold
        below = np.where(active, np.where(low, state.below[devices] + 1, 0), state.below[devices])
        kill = active & (below >= self.patience)
        keep_n = min(self.min_active, active.shape[1])
        for i in range(devices.size):
            left = int((active[i] & ~kill[i]).sum())
            if left < keep_n:  # spare the best-scoring modules among those due
                due = np.flatnonzero(kill[i])
                spare = due[np.argsort(-scores[i, due], kind="stable")[: keep_n - left]]
                kill[i, spare] = False
        state.active[devices] = active & ~kill
        state.below[devices] = below


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

    def plan(self, inp: SchemeInputs, state: Any, rng: np.random.Generator) -> RoundPlan:
        """Phases of ``local_steps`` split steps over the active modules of each device."""
        wl = inp.workload
        lay = SplitLayout.of(wl, self.activation_bits)
        M, L = lay.module_layer.shape
        if inp.server_step_s is None:
            raise InfeasibleError(
                f"round {inp.round_index}: dlora needs the server's training-step cost, but "
                "the cost model does not price the server's hardware class"
            )
        selector = FedLoRAScheme(selection=self.selection, clients=self.clients)
        ok = inp.available & (inp.speed > 0)
        if not ok.any():
            raise InfeasibleError(f"round {inp.round_index}: dlora: no device is available")
        sel_inp = SchemeInputs(**{**inp.__dict__, "memory_bytes": np.zeros_like(inp.memory_bytes)})
        devs = selector.select(sel_inp, rng)
        P = devs.size
        if state.kr is None:
            state.kr = (self.kill_revive or KillRevive(threshold=-np.inf)).new_state(
                inp.work_s.shape[0], M
            )
        policy = self.kill_revive
        active = (
            policy.active_for(state.kr, inp.round_index)[devs].copy()
            if policy is not None
            else np.ones((P, M), dtype=bool)
        )
        on = active.astype(float)
        group_on = ((on @ lay.module_group) > 0).astype(float)  # (P, G) inputs in use
        flops = (on * lay.module_flops) @ lay.module_layer  # (P, L) module FLOPs per layer
        outs = (on * lay.out_bits) @ lay.module_layer  # (P, L) output tensors per layer
        ins = (group_on * lay.group_bits) @ lay.group_layer  # (P, L) input tensors per layer
        # device FLOP/s: its profiled full training step against that step's counted FLOPs
        deepest = inp.work_s.shape[1] - 1
        flops_per_work_s = inp.block_flops[devs, deepest] / inp.work_s[devs, deepest]
        layer_server_s = inp.server_step_s / self.server_speed_factor / 2 * lay.layer_share
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
        bw = np.full(P, inp.total_bandwidth_hz / P)
        plan_stub = RoundPlan(devs, bw, (tuple(phases),), (inp.aggregation_s,), np.zeros(P),
                              np.zeros(P), np.zeros(P), 0.0)
        n_active = active.sum(axis=1).astype(float)
        up_bits, down_bits = plan_stub.totals("up"), plan_stub.totals("down")
        work = plan_stub.totals("compute")
        planned = (
            _planned_compute_s(inp, devs, work)
            + _planned_up_s(inp, devs, up_bits, bw)
            + (_planned_up_s(inp, devs, down_bits, bw) if self.downlink_rate_bps is None
               else down_bits / self.downlink_rate_bps)
            + self.local_steps * inp.server_step_s / self.server_speed_factor
        )
        # device memory: its LoRA values with gradient and Adam moments (16 B each) and the
        # inputs of its active modules kept for backward
        memory = 16.0 * on @ lay.module_values + group_on @ lay.group_bits / 8
        if policy is not None:
            policy.observe(state.kr, devs, self.module_scores(inp.round_index, devs, M, rng))
        return RoundPlan(
            devices=devs,
            bandwidth_hz=bw,
            stages=(tuple(phases),),
            barrier_s=(inp.aggregation_s,),
            memory_bytes=memory,
            flops=self.local_steps * on @ lay.module_flops,
            samples=np.full(P, float(self.local_steps * wl.batch_size)),
            planned_latency_s=float(planned.max() + inp.aggregation_s),
            downlink_rate_bps=self.downlink_rate_bps,
            diagnostics={"active_modules": n_active.tolist(), "modules": M},
        )


def make_scheme(name: str, params: dict[str, Any] | None = None) -> Scheme | None:
    """The scheme ``name`` (``None`` for ``deft`` and ``offload``, which use allocators).

    Raises:
        UnknownNameError: an unknown name, listing the known ones.
    """
    p = dict(params or {})
    if name in ("deft", "offload"):
        return None
    if name == "fl-lora":
        return FedLoRAScheme(**p)
    if name == "dlora":
        return DLoRAScheme(**p)
    raise UnknownNameError(
        f"scheme.name: unknown scheme {name!r}; known: {', '.join(SCHEME_NAMES)}"
    )


__all__: Sequence[str] = (
    "SCHEME_NAMES", "DLoRAScheme", "DLoRAState", "FedLoRAScheme", "KillRevive",
    "KillReviveState", "Phase", "RoundPlan", "Scheme", "SchemeInputs", "SplitLayout", "fedavg",
    "lora_module_flops", "make_scheme", "training_flops",
)
