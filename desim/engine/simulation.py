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
no files. One round of the loop is :meth:`RoundDriver.step <desim.engine.driver.RoundDriver.step>`:
:meth:`Simulation.run` steps it to the end, the Gymnasium environment (:mod:`desim.gym`) one
round per action.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from desim.allocators.base import Allocator, RoundContext
from desim.costs.analytic import analytic_flops
from desim.costs.base import CostModel, Workload
from desim.costs.multiblock import extra_flops
from desim.engine.csi import Csi, planner_view
from desim.engine.driver import RoundDriver
from desim.engine.driver import oracle_bound_s as oracle_bound_s  # re-exported (its old home)
from desim.engine.faults import FaultModel, RoundDraws, offline_time
from desim.engine.losses import ReplanSetup
from desim.engine.realise import World, constants
from desim.engine.recording import Devices
from desim.engine.records import RoundRecord
from desim.errors import DesimError, ScenarioError
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
        sets = getattr(getattr(self.planner, "allocator", None), "places_block_sets", False)
        if self.planner.one_device_per_block and K < N and not sets:
            raise ScenarioError(
                f"devices: {K} devices for {N} blocks; every block needs its own device "
                "(crunch-multi, crunch and single-device let a device train several blocks; "
                "offload lets a device upload several mini-batches)"
            )
        by_class = {}
        for hw in sorted({d.hardware for d in self.devices}):
            by_class[hw] = self.cost_model.block_costs(self.workload, hw)
        sigma = np.array([d.speed_factor for d in self.devices])
        # work_s[k, n]: seconds at timeline speed 1 (profile time ÷ speed factor)
        self._work_s = (
            np.stack([by_class[d.hardware].compute_s for d in self.devices]) / sigma[:, None]
        )
        # what a block adds to a device's set when not its deepest (desim.costs.multiblock)
        self._extra_work_s = np.stack(
            [by_class[d.hardware].extra_compute_s for d in self.devices]) / sigma[:, None]
        # memory and bits are a property of the block; with several classes take the worst case
        self._memory = np.max([c.memory_bytes for c in by_class.values()], axis=0)
        self._extra_memory = np.max([c.extra_memory_bytes for c in by_class.values()], axis=0)
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
        # what a block adds to a set's counted step when not its deepest (its weight gradients)
        self._extra_flops = extra_flops(self.workload)
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
        with np.errstate(divide="ignore", invalid="ignore"):
            compute_s = self._work_s / speed[:, None]
            extra_s = self._extra_work_s / speed[:, None]
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
            extra_compute_s=extra_s,
            extra_work_s=self._extra_work_s,
            extra_memory_bytes=self._extra_memory,
            extra_flops=self._extra_flops,
        )
        if self.csi.mode == "snapshot":
            return ctx
        future = None
        if self.csi.mode == "oracle":  # only the genie is handed the true world
            held = self.policy.block_fading_s is not None
            future = self.world.held_at(ts) if held else self.world
        return planner_view(ctx, self.channel, ts, self.csi, future)

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> RunResult:
        """Simulate all rounds (a :class:`~desim.engine.driver.RoundDriver` stepped to the end).

        Args:
            on_round: called with each finished round's record (progress bars).

        Returns:
            The records and metadata of the run.
        """
        driver = RoundDriver(self)
        while not driver.done:
            rec = driver.step()
            if on_round is not None:
                on_round(rec)
        return driver.result

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

    @property
    def block_memory_bytes(self) -> np.ndarray:
        """``(N,)`` peak bytes of training block ``n`` (the worst case over hardware classes)."""
        return self._memory

    @property
    def memory_budget_bytes(self) -> np.ndarray:
        """``(K,)`` memory budget of every device."""
        return self._budget


def bare_event_loop(compute_s: np.ndarray, upload_s: np.ndarray, aggregation_s: float) -> float:
    """Run the engine's event structure with no modelling work; return the end time.

    The event structure of a DEFT round played naively (per round: one two-phase process per
    device, an ``all_of`` barrier, an aggregation timeout), with durations given as ``(R, N)``
    arrays. ``desim bench engine`` compares the engine's wall time against this loop. The
    engine itself needs fewer events: with every phase end computed exactly, a round without
    losses is one timeout to each barrier (:func:`desim.engine.driver.play`).
    """
    env = simpy.Environment()

    def server(env: simpy.Environment) -> Process:
        for c_row, u_row in zip(compute_s.tolist(), upload_s.tolist()):
            yield env.all_of([env.process(device_round(env, c, u)) for c, u in zip(c_row, u_row)])
            yield env.timeout(aggregation_s)

    env.run(env.process(server(env)))
    return float(env.now)
