"""The round engine: one server loop, and the only package that imports simpy.

Every round of every scheme is the same four steps (DESIGN §2, "One round"):

1. **snapshot**: the :class:`~desim.allocators.base.RoundContext` at the round start, the one
   snapshot type allocators and schemes plan with;
2. **plan**: the scheme (:mod:`desim.schemes`) turns it into a :class:`~desim.plan.RoundPlan`,
   timing the solve;
3. **realise**: :mod:`desim.engine.realise` computes every phase end exactly (pure functions
   of time), with the fault draws and the straggler deadline; the stages are then played on
   the event clock, one timeout to each stage's barrier (re-planning runs a process per
   task, since its losses start new work at event times);
4. **record**: one builder turns the plan and its realisation into rows
   (:mod:`desim.engine.recording`).

Lost work follows the scheme's loss policy: DEFT re-plans lost blocks
(:class:`~desim.engine.losses.ReplanLost`), a scheme drops lost participants. The engine writes
no files.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import Any

import numpy as np
import simpy

from desim.allocators.base import Allocator, RoundContext
from desim.costs.analytic import analytic_flops
from desim.costs.base import CostModel, Workload
from desim.engine.csi import Csi, planner_view
from desim.engine.faults import FaultModel, RoundDraws, offline_time
from desim.engine.losses import ReplanLost, ReplanSetup
from desim.engine.realise import Realisation, World, constants, realise_with_losses
from desim.engine.recording import Devices, RoundFacts, record_round, record_skip
from desim.engine.records import RoundRecord
from desim.engine.rng import rng_streams
from desim.engine.uplink import SharedUplink
from desim.errors import DesimError, InfeasibleError, ScenarioError
from desim.plan import RoundPlan
from desim.results import RunResult
from desim.scenario.devices import DeviceSpec
from desim.scenario.model import HardwarePower, RunSpec, ServerSpec
from desim.schemes.base import Scheme
from desim.schemes.deft import DeftScheme
from desim.world.channel import Channel
from desim.world.compute import ComputeTimeline

Process = Generator[simpy.Event, Any, None]


def device_round(env: simpy.Environment, compute_s: float, upload_s: float) -> Process:
    """A device computes its block, then uploads the gradient (the bare loop's process)."""
    yield env.timeout(compute_s)
    yield env.timeout(upload_s)


@dataclass
class Simulation:
    """Runs rounds of DEFT fine-tuning over given components and returns records.

    Attributes:
        devices: the resolved devices ``(K,)``.
        workload: model, method, batch, sequence length and block split.
        server: bandwidth, noise and aggregation time.
        cost_model: prices blocks per hardware class.
        channel: uplink SNR over time.
        compute: device speed and availability over time.
        allocator: decides placement and bandwidth each round.
        rounds: number of rounds to simulate.
        seed: seed of the run's named random streams.
        metadata: extra entries for the result metadata (e.g. the resolved scenario).
        server_hardware: hardware class pricing the edge server's own training (``offload``).
        policy: straggler and infeasible-round policies (the scenario's ``run`` section).
        faults: injected and scripted faults (``None``: only availability timelines).
        scheme: the scheme planning every round (``None``: DEFT with ``allocator``).
        power: watts and peak FLOP/s per hardware class (``None``: no energy columns).
        csi: what planners know of the channel (``allocator.csi``, :mod:`desim.engine.csi`).
    """

    devices: tuple[DeviceSpec, ...]
    workload: Workload
    server: ServerSpec
    cost_model: CostModel
    channel: Channel
    compute: ComputeTimeline
    allocator: Allocator
    rounds: int = 1
    seed: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    server_hardware: str = "cpu-reference"
    policy: RunSpec = field(default_factory=RunSpec)
    faults: FaultModel | None = None
    scheme: Scheme | None = None
    power: dict[str, HardwarePower] | None = None
    csi: Csi = field(default_factory=Csi)

    def __post_init__(self) -> None:
        K, N = len(self.devices), self.workload.num_blocks
        self.planner: Scheme = DeftScheme(self.allocator) if self.scheme is None else self.scheme
        if self.planner.one_device_per_block and K < N:
            raise ScenarioError(
                f"devices: {K} devices for {N} blocks; every block needs its own device"
            )
        by_class = {}
        for hw in sorted({d.hardware for d in self.devices}):
            by_class[hw] = self.cost_model.block_costs(self.workload, hw)
        sigma = np.array([d.speed_factor for d in self.devices])
        # work_s[k, n]: seconds at timeline speed 1 (profile time ÷ speed factor)
        self._work_s = (
            np.stack([by_class[d.hardware].compute_s for d in self.devices]) / sigma[:, None]
        )
        # memory and bits are a property of the block; with several classes take the worst case
        self._memory = np.max([c.memory_bytes for c in by_class.values()], axis=0)
        self._bits = np.max([c.upload_bits for c in by_class.values()], axis=0)
        self._budget = np.array([d.memory_bytes for d in self.devices])
        self._names = tuple(d.name for d in self.devices)
        self._names_arr = np.asarray(self._names, dtype=object)
        self.cost_source = sorted({c.source for c in by_class.values()})
        # hardware class -> what priced it (run.json "pricing", with the host match)
        self.pricing = {hw: {"source": c.source, **(c.provenance or {})}
                        for hw, c in by_class.items()}
        # flops[k, n]: counted FLOPs of block n on device k's class (profiled or analytic)
        flops = {hw: (c.flops, c.flops_source) if c.flops is not None
                 else (analytic_flops(self.workload), "analytic") for hw, c in by_class.items()}
        self._flops = np.stack([flops[d.hardware][0] for d in self.devices])
        self.flops_source = {hw: src for hw, (_, src) in flops.items()}
        try:
            self._server_work_s: np.ndarray | None = self.cost_model.block_costs(
                self.workload, self.server_hardware
            ).compute_s
        except DesimError:  # a profile without the server's class: offloading is not priced
            self._server_work_s = None
        # a mini-batch is uploaded as 32-bit token ids (sources and, for T5, targets)
        tokens = self.workload.tokens_per_sample
        self._sample_bits = float(self.workload.batch_size * tokens * 32)
        self.world = World(self.compute, self.channel, self._names)
        self._devices = Devices(self._names_arr, self._budget, tokens)

    def _available(self, state_s: float, t_s: float) -> np.ndarray:
        """Available at ``t_s``: the timeline read at ``state_s``, scripted outages at ``t_s``."""
        avail = self.compute.available(state_s)
        if self.faults is not None and self.faults.spec.events:
            avail = avail & ~self.faults.offline_at(t_s, len(self.devices))
        return avail

    def state_time(self, round_index: int, t0: float) -> float:
        """When the world is read for a round started at ``t0``.

        ``t0`` itself, or under block fading (``run.block_fading_s``) the round's own state
        time ``r · block_fading_s``.
        """
        step = self.policy.block_fading_s
        return t0 if step is None else round_index * step

    def context(self, round_index: int, t0: float, state_s: float | None = None) -> RoundContext:
        """The snapshot every planner (allocator or scheme) sees at time ``t0``.

        ``state_s``: when the channel, speeds and availability are read (default ``t0``; the
        round's state time under block fading). Scripted outages are read at ``t0``.
        """
        ts = t0 if state_s is None else state_s
        speed = self.compute.speed(ts)
        with np.errstate(divide="ignore"):
            compute_s = self._work_s / speed[:, None]
        available = self._available(ts, t0)
        ctx = RoundContext(
            round_index=round_index,
            time_s=t0,
            device_names=self._names,
            compute_s=compute_s,
            memory_bytes=self._memory,
            memory_budget_bytes=self._budget,
            upload_bits=self._bits,
            snr_coef_hz=self.channel.snr_coef_hz(ts),
            available=available & (speed > 0),
            total_bandwidth_hz=self.server.total_bandwidth_hz,
            aggregation_s=self.server.aggregation_s,
            sample_bits=self._sample_bits,
            server_compute_s=self._server_work_s,
            work_s=self._work_s,
            speed=speed,
            block_flops=self._flops,
            workload=self.workload,
        )
        if self.csi.mode == "snapshot":
            return ctx
        held = self.policy.block_fading_s is not None
        return planner_view(ctx, self.channel, ts, self.csi,
                            self.world.held_at(ts) if held else self.world)

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> RunResult:
        """Simulate all rounds.

        Args:
            on_round: called with each finished round's record (progress bars).

        Returns:
            The records and metadata of the run.
        """
        env = simpy.Environment()
        result = RunResult(metadata={**self.metadata, "cost_model": self.cost_source,
                                     "flops_source": self.flops_source})
        if self.power is not None:
            from desim.costs.energy import device_power_table

            result.device_power = device_power_table(self.devices, self.power)
        if self.policy.oracle_bound:
            if not isinstance(self.planner, DeftScheme):
                raise ScenarioError("run.oracle_bound: the oracle-exact bound is of a DEFT "
                                    "round (scheme.name = \"deft\")")
            result.oracle_bound_s = []
        rng = rng_streams(self.seed)[self.planner.rng_stream]
        env.run(env.process(self._rounds(env, result, rng, on_round)))
        return result

    def _rounds(self, env: simpy.Environment, result: RunResult, rng: np.random.Generator,
                on_round: Callable[[RoundRecord], None] | None) -> Process:
        """The server process: snapshot, plan, realise on the event clock, record."""
        scheme, K = self.planner, len(self.devices)
        state = scheme.new_state(K, rng)
        uplink = self._uplink(result)
        for r in range(self.rounds):
            t0 = env.now
            draws = self.faults.draw(K) if self.faults is not None else None
            state_s = self.state_time(r, t0)
            ctx = self.context(r, t0, state_s)
            tic = perf_counter()
            try:
                plan = scheme.plan(ctx, state, rng)
            except InfeasibleError as exc:
                if result.oracle_bound_s is not None:
                    result.oracle_bound_s.append(float("nan"))
                rec = self._skip(ctx, str(exc), perf_counter() - tic, result)
                yield env.timeout(self.policy.retry_after_s)
                if on_round is not None:
                    on_round(rec)
                continue
            solve_wall_s = perf_counter() - tic
            held = self.policy.block_fading_s is not None
            world = self.world.held_at(state_s) if held else self.world
            if result.oracle_bound_s is not None:
                result.oracle_bound_s.append(oracle_bound_s(ctx, world))
            if uplink is not None:
                world = World(world.compute, world.channel, world.device_names, uplink)
            failures = partial(self._failures, draws=draws, compute=world.compute)
            real = realise_with_losses(plan, t0, world, r, failures, self.deadline_at(t0))
            facts = RoundFacts(r, t0, solve_wall_s, int(ctx.available.sum()))
            if scheme.on_loss == "replan" and real.lost.any():
                losses = ReplanLost(self._replan_setup(world, state_s), env, ctx, rng, failures,
                                    self.deadline_at(t0))
                done = yield from losses.run(plan, real)
                real = done.parts[0][1]  # a shared uplink re-times it when blocks are re-planned
                rec = record_round(result, done.parts, self._devices, facts, env.now,
                                   order=done.order, reassigned=done.reassigned,
                                   reason=done.skipped_reason)
            else:
                yield from self._play(env, plan, real)
                rec = record_round(result, [(plan, real)], self._devices, facts, env.now)
            self._diagnose(result, r, plan, real)
            if on_round is not None:
                on_round(rec)

    def _play(self, env: simpy.Environment, plan: RoundPlan, real: Realisation) -> Process:
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

    def _uplink(self, result: RunResult) -> SharedUplink | None:
        """The run's reclaiming uplink (``None``: ``fixed``), recorded in run.json."""
        mode = self.server.uplink
        result.metadata["uplink"] = {"mode": mode, **({"reclaim": self.server.reclaim}
                                                        if mode == "reclaim" else {})}
        if mode != "reclaim":
            return None
        result.bandwidth_steps = []
        return SharedUplink(self.server.total_bandwidth_hz, self.server.reclaim)

    def _diagnose(self, result: RunResult, r: int, plan: RoundPlan, real: Realisation) -> None:
        diagnostics = self.planner.realised(plan, real.counts)
        if diagnostics:  # JBBA's iteration trace, CRUNCH's fallbacks, FedAvg weights (run.json)
            result.metadata.setdefault(self.planner.diagnostics_key, []).append(
                {"round": r, **diagnostics}
            )

    def _replan_setup(self, world: World, state_s: float) -> ReplanSetup:
        """What DEFT's re-planning of lost blocks needs of the run (the round's world)."""
        planner = self.planner
        assert isinstance(planner, DeftScheme)  # the only scheme whose on_loss is "replan"

        def held(r: int, t: float) -> RoundContext:  # block fading: the round's state holds
            return self.context(r, t, state_s)

        snapshot = self.context if self.policy.block_fading_s is None else held
        return ReplanSetup(snapshot, planner.allocator, world,
                           self.server.aggregation_s, self.policy.on_infeasible)

    def deadline_at(self, t0: float) -> float:
        """When unfinished work of a round started at ``t0`` is abandoned (``inf``: never)."""
        if self.policy.straggler_policy == "deadline" and self.policy.deadline_s is not None:
            return t0 + self.policy.deadline_s
        return np.inf

    def _failures(self, devs: np.ndarray, start: np.ndarray, upload_start: np.ndarray,
                  end: np.ndarray, draws: RoundDraws | None,
                  compute: ComputeTimeline) -> tuple[np.ndarray, np.ndarray]:
        """When (if at all) each task loses its work: faults plus availability drops."""
        if self.faults is not None and self.faults.active and draws is not None:
            return self.faults.failure(compute, devs, start, upload_start, end, draws)
        off = offline_time(compute, devs, start)
        off = np.where(off < end, off, np.inf)
        offline = np.isfinite(off)
        if not offline.any():
            return constants(off.size).inf, constants(off.size).no_kind
        return off, np.where(offline, "offline", "")

    def _skip(self, ctx: RoundContext, reason: str, solve_wall_s: float,
              result: RunResult) -> RoundRecord:
        """Record an infeasible round as skipped, or stop if the policy says ``error``."""
        if self.policy.on_infeasible == "error":
            raise InfeasibleError(reason)
        return record_skip(result, round_index=ctx.round_index, start_s=ctx.time_s,
                           wait_s=self.policy.retry_after_s, solve_wall_s=solve_wall_s,
                           available=int(ctx.available.sum()), reason=reason)

    @property
    def block_memory_bytes(self) -> np.ndarray:
        """``(N,)`` peak bytes of training block ``n`` (the worst case over hardware classes)."""
        return self._memory

    @property
    def memory_budget_bytes(self) -> np.ndarray:
        """``(K,)`` memory budget of every device."""
        return self._budget


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


def bare_event_loop(compute_s: np.ndarray, upload_s: np.ndarray, aggregation_s: float) -> float:
    """Run the engine's event structure with no modelling work; return the end time.

    The event structure of a DEFT round played naively (per round: one two-phase process per
    device, an ``all_of`` barrier, an aggregation timeout), with durations given as ``(R, N)``
    arrays. ``desim bench engine`` compares the engine's wall time against this loop. The
    engine itself needs fewer events: with every phase end computed exactly, a round without
    losses is one timeout to each barrier (:meth:`Simulation._play`).
    """
    env = simpy.Environment()

    def server(env: simpy.Environment) -> Process:
        for c_row, u_row in zip(compute_s.tolist(), upload_s.tolist()):
            yield env.all_of([env.process(device_round(env, c, u)) for c, u in zip(c_row, u_row)])
            yield env.timeout(aggregation_s)

    env.run(env.process(server(env)))
    return float(env.now)
