"""Re-planning lost blocks (DEFT's loss policy), on the event clock.

A scheme that drops lost participants needs nothing here: its realisation already stops them
(:mod:`desim.engine.realise`). DEFT instead re-plans: when a task is lost (dropout, outage,
upload timeout, or the straggler deadline), its blocks are re-planned by the same allocator
over the devices that are idle and still online at that moment, with the bandwidth not held by
running tasks. The re-plan may put several lost blocks on one device (``grouped``, as
``crunch-multi`` and ``single-device`` do), priced as a set on the lost blocks' own columns.
The round ends only when every block has arrived, or is recorded as skipped under
``on_infeasible = "skip"``.

On a reclaiming uplink (:mod:`desim.engine.uplink`) every upload of the round shares the band,
the re-planned ones too: a lost task's share goes to the uploads still running at its loss,
and a re-planned task joins the shared band when its computation ends. Each dispatch is
therefore realised together with the ones before it (all of the round's plans merged, each
participant from its own start), which changes nothing before the dispatch and re-times the
running tasks after it. The re-planned blocks are planned with the planned shares the running
tasks do not hold, as on a fixed uplink; a fault drawn over a task's span is kept when a later
dispatch re-times it (it is lost only if the fault still falls before its new end).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import simpy

from desim.allocators.base import Allocator, RoundContext, check_allocation, plan_of
from desim.engine.realise import FailureTimes, Realisation, World, realise, realise_with_losses
from desim.errors import InfeasibleError, SimulationError
from desim.plan import Phase, PlanRows, RoundPlan


def stage_process(env: simpy.Environment, duration_s: float) -> Generator[simpy.Event, Any, None]:
    """A participant works through its phases of one stage (their end precomputed exactly)."""
    yield env.timeout(duration_s)


@dataclass
class Replanned:
    """What a re-planned round dispatched and how it ended, for the record builder."""

    parts: list[tuple[RoundPlan, Realisation]] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # global row ids, in completion order
    lost: list[int] = field(default_factory=list)  # global row ids, in loss order
    reassigned: int = 0
    skipped_reason: str = ""

    @property
    def order(self) -> np.ndarray:
        """Rows as recorded: the finished ones, then the lost ones."""
        return np.array(self.finished + self.lost, dtype=np.intp)


@dataclass(eq=False)
class _Task:
    device: int
    rows: list[int]  # global row ids
    blocks: list[int]  # 0-based blocks
    bandwidth_hz: float
    lost: bool
    part: int = 0  # which dispatch
    index: int = 0  # participant of that dispatch's plan


@dataclass(frozen=True, eq=False)
class ReplanSetup:
    """What re-planning needs of the run: the snapshot, the allocator, the world, the rules.

    Attributes:
        snapshot: ``(round, time) -> RoundContext``, the engine's snapshot at any time.
        allocator: the allocator that re-plans (DEFT's).
        world: compute timelines and channel.
        aggregation_s: the server's time after the last block arrived.
        on_infeasible: ``error`` or ``skip`` (the scenario's ``run`` section).
    """

    snapshot: Callable[[int, float], RoundContext]
    allocator: Allocator
    world: World
    aggregation_s: float
    on_infeasible: str


class ReplanLost:
    """DEFT's loss policy for one round: re-plan lost blocks as they are lost."""

    def __init__(self, setup: ReplanSetup, env: simpy.Environment, ctx: RoundContext,
                 rng: np.random.Generator, failures: FailureTimes, deadline_s: float) -> None:
        self.setup, self.env, self.ctx, self.rng, self.failures = setup, env, ctx, rng, failures
        self.out = np.zeros(ctx.num_devices, dtype=bool)  # lost this round: offline for it
        self.running: dict[simpy.Process, _Task] = {}
        self.at_deadline: list[_Task] = []  # lost at the deadline: resolved by its event
        self.deadline_s = deadline_s
        self.result = Replanned()
        self._rows = 0
        self._losses: list[tuple[float, np.ndarray, np.ndarray]] = []  # (start, fail, kind)

    def run(self, plan: RoundPlan, real: Realisation) -> Generator[simpy.Event, Any, Replanned]:
        """Play the round (a SimPy generator) and return what happened."""
        env = self.env
        self._dispatch(plan, real)
        deadline_ev = (env.timeout(self.deadline_s - env.now)
                       if np.isfinite(self.deadline_s) else None)
        pending: list[int] = []
        while self.running or pending or self.at_deadline:
            if pending:
                pending = self._replan(pending)
                if self.result.skipped_reason:
                    return self.result
            waits: list[simpy.Event] = list(self.running)
            if deadline_ev is not None and not deadline_ev.processed:
                waits.append(deadline_ev)  # (a Timeout is "triggered" from creation on)
            yield env.any_of(waits)
            for proc in [p for p in self.running if p.triggered]:
                pending += self._settle(self.running.pop(proc))
            if deadline_ev is not None and deadline_ev.processed:
                deadline_ev = None
                self.deadline_s = np.inf  # blocks re-planned from now on run to the end
                for task in self.at_deadline:
                    pending += self._settle(task)
                self.at_deadline.clear()
        yield env.timeout(self.setup.aggregation_s)
        return self.result

    def _settle(self, task: _Task) -> list[int]:
        """Book a task that ended; return its blocks if they were lost."""
        if not task.lost:
            self.result.finished += task.rows
            return []
        self.result.lost += task.rows
        self.out[task.device] = True
        return task.blocks

    def _dispatch(self, plan: RoundPlan, real: Realisation) -> None:
        part = len(self.result.parts)
        self.result.parts.append((plan, real))
        self._losses.append((float(real.start_s[0]) if plan.size else self.env.now,
                             real.fail_s, real.kind))
        rows = plan.rows
        for i in range(plan.size):
            ids = np.flatnonzero(rows.participant == i)
            self._start(_Task(int(plan.devices[i]), (ids + self._rows).tolist(),
                              (rows.block[ids] - 1).tolist(), float(plan.bandwidth_hz[i]),
                              False, part, i), real)
        self._rows += rows.block.size

    def _start(self, task: _Task, real: Realisation) -> None:
        """Play a task to its realised end (or hold it for the deadline's event)."""
        i = task.index
        task.lost = bool(real.lost[i])
        if task.lost and real.kind[i] == "deadline":
            self.at_deadline.append(task)
            return
        wait = max(float(real.end_s[i]) - self.env.now, 0.0)
        self.running[self.env.process(stage_process(self.env, wait))] = task

    def _dispatch_shared(self, plan: RoundPlan, round_index: int) -> None:
        """Dispatch ``plan`` on the shared band: realise the round's plans together, re-time."""
        plans = [p for p, _ in self.result.parts] + [plan]
        merged = merged_plan(plans)
        now, world = self.env.now, self.setup.world
        starts = np.concatenate([np.full(p.size, s) for p, (s, _, _) in
                                 zip(plans, self._losses)] + [np.full(plan.size, now)])
        fail = np.concatenate([f for _, f, _ in self._losses] + [np.full(plan.size, np.inf)])
        kind = np.concatenate([k for _, _, k in self._losses]
                              + [np.full(plan.size, "", dtype=object)]).astype(object)
        new = slice(merged.size - plan.size, merged.size)
        free = realise(merged, starts, world, round_index, fail, kind, check=False)
        up_start = np.where(np.isnan(free.up_first[new]), free.end_s[new], free.up_first[new])
        fail[new], kind[new] = self.failures(plan.devices, starts[new], up_start,
                                             free.end_s[new])
        if np.isfinite(self.deadline_s):
            first = realise(merged, starts, world, round_index, fail, kind,
                            check=False).stage_ends[0]
            late = (first > self.deadline_s) & (self.deadline_s < fail)
            fail, kind = np.where(late, self.deadline_s, fail), np.where(late, "deadline", kind)
        real = realise(merged, starts, world, round_index, fail, kind)
        waiting = [*self.running.values(), *self.at_deadline]
        self.running.clear()  # their old processes end unheeded
        self.at_deadline.clear()
        lo = 0
        for j, p in enumerate(plans[:-1]):
            part = real.take(lo, lo + p.size)
            self.result.parts[j] = (p, part)
            self._losses[j] = (self._losses[j][0], part.fail_s, part.kind)
            lo += p.size
        for task in waiting:
            self._start(task, self.result.parts[task.part][1])
        self._dispatch(plan, real.take(lo, lo + plan.size))

    def _replan(self, pending: list[int]) -> list[int]:
        """Re-invoke the allocator for ``pending`` blocks; return those still unplaced."""
        setup, env = self.setup, self.env
        blocks = np.array(sorted(pending))
        sub = self._sub_context(blocks)
        try:
            alloc = setup.allocator.allocate(sub, self.rng)
            if alloc.mode == "offload" or alloc.plan is not None:
                raise InfeasibleError(
                    f"round {sub.round_index}: allocator {setup.allocator.registry_name!r} "
                    "cannot reassign lost blocks (it places mini-batches or a plan of its "
                    "own, not blocks on devices)"
                )
            check_allocation(sub, alloc)
        except InfeasibleError as exc:
            if self.running or self.at_deadline:  # wait for a device to free up, then retry
                return list(blocks)
            detail = str(exc).removeprefix(f"round {sub.round_index}: ")
            lost = (f"block {blocks[0] + 1} lost its device" if blocks.size == 1 else
                    f"blocks {', '.join(str(b + 1) for b in blocks)} lost their devices")
            reason = f"round {sub.round_index}: {lost} and cannot be reassigned: {detail}"
            if setup.on_infeasible == "error":
                raise InfeasibleError(reason) from None
            self.result.skipped_reason = reason
            return []
        self.result.reassigned += blocks.size
        plan = plan_of(sub, alloc)
        if setup.world.uplink is not None:
            self._dispatch_shared(plan, sub.round_index)
            return []
        real = realise_with_losses(plan, env.now, setup.world, sub.round_index, self.failures,
                                   self.deadline_s)
        self._dispatch(plan, real)
        return []

    def _sub_context(self, blocks: np.ndarray) -> RoundContext:
        """The snapshot now, of the lost blocks, over the idle online devices."""
        now_ctx = self.setup.snapshot(self.ctx.round_index, self.env.now)
        busy = np.zeros(now_ctx.num_devices, dtype=bool)
        held = 0.0
        for task in [*self.running.values(), *self.at_deadline]:  # both hold their devices
            busy[task.device] = True
            held += task.bandwidth_hz
        return replace(
            now_ctx,
            compute_s=now_ctx.compute_s[:, blocks],
            work_s=now_ctx.work_s[:, blocks],
            extra_compute_s=now_ctx.extra_compute_s[:, blocks],
            extra_work_s=now_ctx.extra_work_s[:, blocks],
            extra_memory_bytes=now_ctx.extra_memory_bytes[blocks],
            extra_flops=now_ctx.extra_flops[blocks],
            block_flops=now_ctx.block_flops[:, blocks],
            memory_bytes=now_ctx.memory_bytes[blocks],
            upload_bits=now_ctx.upload_bits[blocks],
            available=now_ctx.available & ~busy & ~self.out,
            total_bandwidth_hz=max(now_ctx.total_bandwidth_hz - held, 0.0),
            server_compute_s=None,
            block_numbers=tuple(int(b) + 1 for b in blocks),
        )


def merged_plan(plans: list[RoundPlan]) -> RoundPlan:
    """The participants of ``plans`` (same stages and phase kinds) as one plan, in order.

    Raises:
        SimulationError: the plans' stages differ.
    """
    first = plans[0]
    if len(plans) == 1:
        return first
    shape = [[ph.kind for ph in st] for st in first.stages]
    if any([[ph.kind for ph in st] for st in p.stages] != shape for p in plans):
        raise SimulationError("re-planned blocks on a shared uplink need plans of one shape")
    stages = tuple(
        tuple(Phase(ph.kind, np.concatenate([p.stages[j][i].amount for p in plans]))
              for i, ph in enumerate(stage))
        for j, stage in enumerate(first.stages)
    )
    offsets = np.cumsum([0] + [p.size for p in plans[:-1]])

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p.rows, name) for p in plans])

    rows = PlanRows(
        participant=np.concatenate([p.rows.participant + o for p, o in zip(plans, offsets)]),
        block=cat("block"), upload_bits=cat("upload_bits"), memory_bytes=cat("memory_bytes"),
        flops=cat("flops"), samples=cat("samples"), planned_compute_s=cat("planned_compute_s"),
        planned_upload_s=cat("planned_upload_s"),
        one_per_participant=all(p.rows.one_per_participant for p in plans),
    )
    return RoundPlan(
        devices=np.concatenate([p.devices for p in plans]),
        bandwidth_hz=np.concatenate([p.bandwidth_hz for p in plans]),
        stages=stages, barrier_s=first.barrier_s, rows=rows,
        planned_latency_s=first.planned_latency_s, downlink_rate_bps=first.downlink_rate_bps,
    )
