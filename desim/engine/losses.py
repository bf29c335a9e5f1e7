"""Re-planning lost blocks (DEFT's loss policy), on the event clock.

A scheme that drops lost participants needs nothing here: its realisation already stops them
(:mod:`desim.engine.realise`). DEFT instead re-plans: when a task is lost (dropout, outage,
upload timeout, or the straggler deadline), its blocks are re-planned by the same allocator
over the devices that are idle and still online at that moment, with the bandwidth not held by
running tasks. The round ends only when every block has arrived, or is recorded as skipped
under ``on_infeasible = "skip"``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import simpy

from desim.allocators.base import Allocator, RoundContext, check_allocation, plan_of
from desim.engine.realise import FailureTimes, Realisation, World, realise_with_losses
from desim.errors import InfeasibleError
from desim.plan import RoundPlan


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
        self.result.parts.append((plan, real))
        rows = plan.rows
        for i in range(plan.size):
            ids = np.flatnonzero(rows.participant == i)
            task = _Task(int(plan.devices[i]), (ids + self._rows).tolist(),
                         (rows.block[ids] - 1).tolist(), float(plan.bandwidth_hz[i]),
                         bool(real.lost[i]))
            if task.lost and real.kind[i] == "deadline":
                self.at_deadline.append(task)
                continue
            proc = self.env.process(stage_process(self.env, float(real.end_s[i]) - self.env.now))
            self.running[proc] = task
        self._rows += rows.block.size

    def _replan(self, pending: list[int]) -> list[int]:
        """Re-invoke the allocator for ``pending`` blocks; return those still unplaced."""
        setup, env = self.setup, self.env
        blocks = np.array(sorted(pending))
        sub = self._sub_context(blocks)
        try:
            alloc = setup.allocator.allocate(sub, self.rng)
            if alloc.mode != "deft":
                raise InfeasibleError(
                    f"round {sub.round_index}: allocator {setup.allocator.registry_name!r} "
                    "cannot reassign lost blocks (it does not place one block per device)"
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
            block_flops=now_ctx.block_flops[:, blocks],
            memory_bytes=now_ctx.memory_bytes[blocks],
            upload_bits=now_ctx.upload_bits[blocks],
            available=now_ctx.available & ~busy & ~self.out,
            total_bandwidth_hz=max(now_ctx.total_bandwidth_hz - held, 0.0),
            server_compute_s=None,
            block_numbers=tuple(int(b) + 1 for b in blocks),
        )
