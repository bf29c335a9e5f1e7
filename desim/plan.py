"""The one plan type: what the participants of a round do, as data (numpy only).

Every round of every scheme is a :class:`RoundPlan`: participating devices with their bandwidth
shares, and *stages* separated by barriers. In a stage every participant runs its own phases in
order: ``compute`` (work seconds at timeline speed 1), ``up`` and ``down`` (bits over the link)
and ``server`` (seconds waiting for the server). After each stage's barrier the server spends
``barrier_s``. DEFT's plan is one stage of ``[compute, up]`` per block's device; ``grouped``
and ``offload`` allocations, federated LoRA and DLoRA are plans too
(:func:`desim.allocators.base.plan_of`, :mod:`desim.schemes`).

A plan also says how its rows are recorded (:class:`PlanRows`): DEFT writes one row per block,
a scheme one per participant. The engine realises a plan (:mod:`desim.engine.realise`) and one
record builder turns the plan and its realisation into rows (:mod:`desim.engine.recording`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

PhaseKind = Literal["compute", "up", "down", "server"]


@dataclass(frozen=True, eq=False)
class Phase:
    """One phase of every participant: ``amount`` is ``(P,)`` seconds or bits by ``kind``.

    ``compute``: work seconds at timeline speed 1; ``up``/``down``: bits over the link;
    ``server``: seconds waiting for the server.
    """

    kind: PhaseKind
    amount: np.ndarray


@dataclass(frozen=True, eq=False)
class PlanRows:
    """How a plan is recorded: one ``device_rounds`` row per entry, ``(R,)`` arrays.

    Attributes:
        participant: index into the plan's participants of the row's device.
        block: the row's 1-based block (DEFT), the model's last block (a whole-model
            participant) or 0 (no single block: DLoRA).
        upload_bits: bits the row uploads when its participant's upload completes.
        memory_bytes: peak device memory of the row.
        flops: counted training FLOPs of the row (``nan``: not counted).
        samples: training samples of the row.
        planned_compute_s: snapshot estimate of the row's compute time.
        planned_upload_s: snapshot estimate of the row's upload time.
        one_per_participant: row ``i`` is participant ``i`` (DEFT, the schemes), so recording
            gathers nothing.
    """

    participant: np.ndarray
    block: np.ndarray
    upload_bits: np.ndarray
    memory_bytes: np.ndarray
    flops: np.ndarray
    samples: np.ndarray
    planned_compute_s: np.ndarray
    planned_upload_s: np.ndarray
    one_per_participant: bool = False


@dataclass(frozen=True, eq=False)
class RoundPlan:
    """What the participants of one round do (an allocator's or a scheme's decision).

    Attributes:
        devices: ``(P,)`` participating device indices.
        bandwidth_hz: ``(P,)`` their uplink (and reciprocal downlink) bandwidth.
        stages: phases per stage; a barrier follows every stage.
        barrier_s: server seconds after each stage's barrier (aggregation, server training).
        rows: how the plan is recorded.
        planned_latency_s: the plan's latency at the round-start snapshot.
        estimate_s: the planner's own latency claim (``nan``: none).
        downlink_rate_bps: fixed downlink rate, or ``None`` for the reciprocal channel.
        server_bound: the round ends with the server's own training (``offload``): the
            bottleneck is the server.
        diagnostics: planner details recorded in run.json (iteration traces, FedAvg weights).
    """

    devices: np.ndarray
    bandwidth_hz: np.ndarray
    stages: tuple[tuple[Phase, ...], ...]
    barrier_s: tuple[float, ...]
    rows: PlanRows
    planned_latency_s: float
    estimate_s: float = float("nan")
    downlink_rate_bps: float | None = None
    server_bound: bool = False
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """``P``, the number of participants."""
        return int(self.devices.size)

    def totals(self, kind: PhaseKind) -> np.ndarray:
        """``(P,)`` sum of the amounts of every phase of ``kind``."""
        return phase_totals(self.stages, kind, self.size)


def phase_totals(stages: tuple[tuple[Phase, ...], ...], kind: PhaseKind, size: int) -> np.ndarray:
    """``(P,)`` sum of the amounts of every phase of ``kind`` over ``stages``."""
    out = np.zeros(size)
    for stage in stages:
        for ph in stage:
            if ph.kind == kind:
                out = out + ph.amount
    return out
