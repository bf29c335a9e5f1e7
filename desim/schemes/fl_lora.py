"""Federated LoRA (``fl-lora``): every selected device trains the whole model's adapters.

Each selected device trains every block (a full backward pass: the deepest block's cost) for
``E`` local steps, uploads all LoRA parameters; the server averages them (:func:`fedavg`) and
broadcasts the average back. Participants share the band equally; the downlink is reciprocal
(the uplink's channel and share, TDD) or a fixed ``downlink_rate_bps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from desim.allocators.base import RoundContext
from desim.errors import InfeasibleError
from desim.plan import Phase, RoundPlan
from desim.schemes.base import (
    SCHEMES,
    Scheme,
    SelectionParams,
    participant_rows,
    planned_compute_s,
    planned_transfer_s,
)

if TYPE_CHECKING:
    from desim.allocators.base import Allocator
    from desim.costs.base import Workload
    from desim.scenario.model import Scenario


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


@SCHEMES.register("fl-lora", "federated LoRA: devices train every block's adapters, FedAvg",
                  SelectionParams)
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

    @classmethod
    def build(cls, params: Any, scenario: Scenario, workload: Workload,
              allocator: Allocator) -> Scheme:
        """Federated LoRA with the scenario's selection and local steps."""
        return cls(params.local_steps, params.selection, params.clients,
                   params.downlink_rate_bps)

    def select(self, ctx: RoundContext, rng: np.random.Generator) -> np.ndarray:
        """The participating devices (sorted indices)."""
        deepest = ctx.work_s.shape[1] - 1
        ok = (
            ctx.available
            & (ctx.speed > 0)
            & (ctx.memory_bytes[deepest] <= ctx.memory_budget_bytes)
        )
        eligible = np.flatnonzero(ok)
        if eligible.size == 0:
            raise InfeasibleError(
                f"round {ctx.round_index}: fl-lora: no available device can hold the whole "
                f"model's training step ({ctx.memory_bytes[deepest]:.4g} bytes)"
            )
        if self.selection == "all":
            return eligible
        m = min(int(self.clients or 1), eligible.size)
        if self.selection == "random":
            return np.sort(rng.choice(eligible, size=m, replace=False))
        bits = np.full(eligible.size, float(ctx.upload_bits.sum()))
        bw = np.full(eligible.size, ctx.total_bandwidth_hz / m)
        t = planned_compute_s(
            ctx, eligible, self.local_steps * ctx.work_s[eligible, deepest]
        ) + planned_transfer_s(ctx, eligible, bits, bw)
        return np.sort(eligible[np.argsort(t, kind="stable")[:m]])

    def realised(self, plan: RoundPlan, contributed: np.ndarray) -> dict[str, Any]:
        """FedAvg weights over the clients whose update arrived (a lost client drops out)."""
        out = super().realised(plan, contributed)
        if not contributed.all():
            w = np.where(contributed, plan.rows.samples, 0.0)
            out["fedavg_weights"] = (w / w.sum()).tolist() if w.sum() > 0 else []
        return out

    def plan(self, ctx: RoundContext, state: Any, rng: np.random.Generator) -> RoundPlan:
        """Select clients, then: E local steps, upload, FedAvg, broadcast."""
        devs = self.select(ctx, rng)
        P = devs.size
        deepest = ctx.work_s.shape[1] - 1
        bw = np.full(P, ctx.total_bandwidth_hz / P)
        work = self.local_steps * ctx.work_s[devs, deepest]
        bits = np.full(P, float(ctx.upload_bits.sum()))
        samples = np.full(P, float(self.local_steps * ctx.workload.batch_size))
        up_end = planned_compute_s(ctx, devs, work) + planned_transfer_s(ctx, devs, bits, bw)
        if self.downlink_rate_bps is None:
            down = planned_transfer_s(ctx, devs, bits, bw)
        else:
            down = bits / self.downlink_rate_bps
        weights = samples / samples.sum()
        stages = ((Phase("compute", work), Phase("up", bits)), (Phase("down", bits),))
        memory = np.full(P, float(ctx.memory_bytes[deepest]))
        flops = self.local_steps * ctx.block_flops[devs, deepest]
        return RoundPlan(
            devices=devs,
            bandwidth_hz=bw,
            stages=stages,
            barrier_s=(ctx.aggregation_s, 0.0),
            rows=participant_rows(ctx, devs, bw, ctx.num_blocks, stages, memory, flops, samples),
            planned_latency_s=float(up_end.max() + ctx.aggregation_s + down.max()),
            downlink_rate_bps=self.downlink_rate_bps,
            diagnostics={"clients": devs.tolist(), "fedavg_weights": weights.tolist(),
                         "aggregated_values": float(ctx.upload_bits.sum())
                         / ctx.workload.gradient_bits},
        )
