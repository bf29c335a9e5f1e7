"""The round loop's body, one round at a time: snapshot, plan, realise on the event clock, record.

A :class:`RoundDriver` holds what a run carries from round to round (the event clock, the
scheme's random stream and state, the shared uplink, the records) and plays one round per
:meth:`RoundDriver.step`. :meth:`Simulation.run <desim.engine.simulation.Simulation.run>` steps
it through every round with the scheme's own planner; the Gymnasium environment
(:mod:`desim.gym`) steps it with a plan made from the agent's action. Either way a round is one
SimPy process run to its end event (``env.run(until=...)``): the clock advances by exactly the
same timeouts, so a stepped run and a whole run are the same run, to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from time import perf_counter
from typing import Any, Protocol

import numpy as np
import simpy

from desim.allocators.base import RoundContext
from desim.engine.faults import FaultModel, RoundDraws
from desim.engine.losses import ReplanLost, ReplanSetup
from desim.engine.realise import FailureTimes, Realisation, World, realise_with_losses
from desim.engine.recording import Devices, RoundFacts, record_round, record_skip
from desim.engine.records import RoundRecord
from desim.engine.rng import rng_streams
from desim.engine.uplink import SharedUplink
from desim.errors import InfeasibleError, ScenarioError
from desim.plan import RoundPlan
from desim.results import RunResult
from desim.scenario.devices import DeviceSpec
from desim.scenario.model import HardwarePower, RunSpec, ServerSpec
from desim.schemes.base import Scheme
from desim.schemes.deft import DeftScheme
from desim.world.compute import ComputeTimeline

Process = Generator[simpy.Event, Any, Any]

#: ``(snapshot, scheme state, rng) -> plan``: a scheme's ``plan``, or the agent's action
PlanSource = Callable[[RoundContext, Any, np.random.Generator], RoundPlan]


class Run(Protocol):
    """What the driver reads of a :class:`~desim.engine.simulation.Simulation`."""

    devices: tuple[DeviceSpec, ...]
    server: ServerSpec
    rounds: int
    seed: int
    metadata: dict[str, Any]
    policy: RunSpec
    faults: FaultModel | None
    power: dict[str, HardwarePower] | None
    planner: Scheme
    world: World
    cost_source: list[str]
    flops_source: dict[str, str]
    _devices: Devices

    def state_time(self, round_index: int, t0: float) -> float: ...  # noqa: D102

    def context(self, round_index: int, t0: float,  # noqa: D102
                state_s: float | None = None) -> RoundContext: ...

    def deadline_at(self, t0: float) -> float: ...  # noqa: D102

    def _failures(self, devs: np.ndarray, start: np.ndarray, upload_start: np.ndarray,
                  end: np.ndarray, draws: RoundDraws | None,
                  compute: ComputeTimeline) -> tuple[np.ndarray, np.ndarray]: ...

    def _replan_setup(self, world: World, state_s: float) -> ReplanSetup: ...


class RoundDriver:
    """One run of a :class:`~desim.engine.simulation.Simulation`, played round by round.

    Attributes:
        sim: the simulation (:class:`Run`: its components, policies and snapshot).
        env: the run's event clock.
        result: the records so far.
        rng: the scheme's random stream (``sim.planner.rng_stream``): DEFT's allocator draws
            from it, for the round's plan and for re-planning lost blocks.
        state: the scheme's per-run state (``None`` when stateless).
        round_index: the next round to play (``sim.rounds`` once the run is over).
    """

    def __init__(self, sim: Run) -> None:
        self.sim = sim
        self.env = simpy.Environment()
        self.result = RunResult(metadata={**sim.metadata, "cost_model": sim.cost_source,
                                          "flops_source": sim.flops_source})
        if sim.power is not None:
            from desim.costs.energy import device_power_table

            self.result.device_power = device_power_table(sim.devices, sim.power)
        if sim.policy.oracle_bound:
            if not isinstance(sim.planner, DeftScheme):
                raise ScenarioError("run.oracle_bound: the oracle-exact bound is of a DEFT "
                                    "round (scheme.name = \"deft\")")
            self.result.oracle_bound_s = []
        self.rng = rng_streams(sim.seed)[sim.planner.rng_stream]
        self.state = sim.planner.new_state(len(sim.devices), self.rng)
        self.uplink = self._uplink()
        self.round_index = 0
        self._next: tuple[RoundContext, RoundDraws | None, float] | None = None

    @property
    def done(self) -> bool:
        """Whether every round of the run was played."""
        return self.round_index >= self.sim.rounds

    def snapshot(self) -> RoundContext:
        """The next round's snapshot (its fault draws are made once, with the first call)."""
        if self._next is None:
            sim, r, t0 = self.sim, self.round_index, self.env.now
            draws = sim.faults.draw(len(sim.devices)) if sim.faults is not None else None
            state_s = sim.state_time(r, t0)
            self._next = (sim.context(r, t0, state_s), draws, state_s)
        return self._next[0]

    def step(self, plan: PlanSource | None = None) -> RoundRecord:
        """Play the next round on the event clock and return its record.

        Args:
            plan: makes the round's plan from the snapshot (``None``: the scheme's own
                ``plan``). An :class:`~desim.errors.InfeasibleError` it raises skips the round
                (or stops the run, under ``run.on_infeasible = "error"``), as for a scheme.
        """
        if self.done:
            raise RuntimeError(f"the run's {self.sim.rounds} rounds were all played")
        source = self.sim.planner.plan if plan is None else plan
        proc = self.env.process(self._round(source))
        self.env.run(until=proc)
        self._next = None
        self.round_index += 1
        rec = proc.value
        assert isinstance(rec, RoundRecord)
        return rec

    def _round(self, plan_source: PlanSource) -> Process:
        """The server process of one round: plan, realise on the event clock, record."""
        ctx = self.snapshot()
        assert self._next is not None
        _, draws, state_s = self._next
        sim, env, result, r, t0 = self.sim, self.env, self.result, ctx.round_index, ctx.time_s
        tic = perf_counter()
        try:
            plan = plan_source(ctx, self.state, self.rng)
        except InfeasibleError as exc:
            if result.oracle_bound_s is not None:
                result.oracle_bound_s.append(float("nan"))
            rec = self._skip(ctx, str(exc), perf_counter() - tic)
            yield env.timeout(sim.policy.retry_after_s)
            return rec
        solve_wall_s = perf_counter() - tic
        held = sim.policy.block_fading_s is not None
        world = sim.world.held_at(state_s) if held else sim.world
        if result.oracle_bound_s is not None:
            result.oracle_bound_s.append(oracle_bound_s(ctx, world))
        if self.uplink is not None:
            world = World(world.compute, world.channel, world.device_names, self.uplink)
        failures: FailureTimes = partial(sim._failures, draws=draws, compute=world.compute)
        real = realise_with_losses(plan, t0, world, r, failures, sim.deadline_at(t0))
        facts = RoundFacts(r, t0, solve_wall_s, int(ctx.available.sum()))
        if sim.planner.on_loss == "replan" and real.lost.any():
            losses = ReplanLost(sim._replan_setup(world, state_s), env, ctx, self.rng, failures,
                                sim.deadline_at(t0))
            done = yield from losses.run(plan, real)
            real = done.parts[0][1]  # a shared uplink re-times it when blocks are re-planned
            rec = record_round(result, done.parts, sim._devices, facts, env.now,
                               order=done.order, reassigned=done.reassigned,
                               reason=done.skipped_reason)
        else:
            yield from play(env, plan, real)
            rec = record_round(result, [(plan, real)], sim._devices, facts, env.now)
        self._diagnose(r, plan, real)
        return rec

    def _uplink(self) -> SharedUplink | None:
        """The run's reclaiming uplink (``None``: ``fixed``), recorded in run.json."""
        server = self.sim.server
        mode = server.uplink
        self.result.metadata["uplink"] = {"mode": mode, **({"reclaim": server.reclaim}
                                                             if mode == "reclaim" else {})}
        if mode != "reclaim":
            return None
        self.result.bandwidth_steps = []
        return SharedUplink(server.total_bandwidth_hz, server.reclaim)

    def _diagnose(self, r: int, plan: RoundPlan, real: Realisation) -> None:
        planner = self.sim.planner
        diagnostics = planner.realised(plan, real.counts)
        if diagnostics:  # JBBA's iteration trace, CRUNCH's fallbacks, FedAvg weights (run.json)
            self.result.metadata.setdefault(planner.diagnostics_key, []).append(
                {"round": r, **diagnostics}
            )

    def _skip(self, ctx: RoundContext, reason: str, solve_wall_s: float) -> RoundRecord:
        """Record an infeasible round as skipped, or stop if the policy says ``error``."""
        policy = self.sim.policy
        if policy.on_infeasible == "error":
            raise InfeasibleError(reason)
        return record_skip(self.result, round_index=ctx.round_index, start_s=ctx.time_s,
                           wait_s=policy.retry_after_s, solve_wall_s=solve_wall_s,
                           available=int(ctx.available.sum()), reason=reason)


def play(env: simpy.Environment, plan: RoundPlan, real: Realisation) -> Process:
    """Play a realised plan's stages: one timeout to each barrier, then the server's time.

    Every phase end is already exact (:func:`~desim.engine.realise.realise`) and no other
    event can touch a round without losses, so a process per participant would only
    re-sort known times: the barrier is the last participant's end. ``max(e) - now`` is
    the largest of the ``e - now`` such processes would wait (float subtraction is
    monotone), so the clock reads the same to the last bit.

    On a reclaiming uplink each event of the shared band (an upload starting or ending, a
    participant lost) changes the others' rates, so each is a timeout of its own on the
    way to the barrier (the times are still exact; only the clock's sums may round).
    """
    steps = real.bandwidth_steps
    events = [] if steps is None else np.unique(steps.time_s).tolist()
    i = 0
    for stage_end, tail in zip(real.stage_ends, plan.barrier_s):
        if stage_end.size:
            barrier = float(stage_end.max())
            while i < len(events) and events[i] < barrier:
                if events[i] > env.now:
                    yield env.timeout(events[i] - env.now)
                i += 1
            yield env.timeout(barrier - env.now)
        yield env.timeout(tail)


def oracle_bound_s(ctx: RoundContext, world: World) -> float:
    """The ``oracle-exact`` bound of a round: its least realisable latency (``nan``: none)."""
    from dataclasses import replace

    from desim.allocators.oracle import OracleExactAllocator

    try:
        alloc = OracleExactAllocator().allocate(replace(ctx, future=world),
                                                np.random.default_rng(0))
    except InfeasibleError:
        return float("nan")
    assert alloc.estimated_latency_s is not None
    return float(alloc.estimated_latency_s)
