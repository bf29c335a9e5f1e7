"""The round engine: the only module that imports simpy.

Each round (DESIGN §2, "One round") the server process builds a :class:`RoundContext` snapshot,
asks the allocator (timing the solve), checks the allocation, and starts one ``device_round``
process per active device: compute, then upload, then a barrier (``all_of``) and aggregation.

Besides DEFT's one block per device, an allocation may be ``grouped`` (a device trains several
blocks in one backward pass: its deepest block's compute, the sum of the bits) or ``offload``
(devices upload mini-batches, then the server trains for the allocation's server time, with no
aggregation); see :class:`~desim.allocators.base.Allocation`. DEFT rounds take the fast path.

Channels and compute timelines are pure functions of time (STYLE §8), so each device's phase
ends are computed exactly when the round starts: compute from the round start by integrating the
speed timeline, upload from the actual compute end by integrating the time-varying rate. The
device processes then realise those durations on the event clock. The engine writes no files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

import numpy as np
import simpy

from desim.allocators.base import Allocation, Allocator, RoundContext, check_allocation
from desim.channel import Channel
from desim.compute import ComputeTimeline
from desim.cost import CostModel, Workload
from desim.errors import DesimError, ScenarioError, SimulationError
from desim.records import DeviceRounds, RoundRecord, RunResult
from desim.scenario import DeviceSpec, ServerSpec
from desim.streams import rng_streams


def device_round(env: simpy.Environment, compute_s: float, upload_s: float):  # type: ignore[no-untyped-def]
    """A device computes its block, then uploads the gradient (durations precomputed exactly)."""
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

    def __post_init__(self) -> None:
        K, N = len(self.devices), self.workload.num_blocks
        if K < N:
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
        try:
            self._server_work_s: np.ndarray | None = self.cost_model.block_costs(
                self.workload, self.server_hardware
            ).compute_s
        except DesimError:  # a profile without the server's class: offloading is not priced
            self._server_work_s = None
        # a mini-batch is uploaded as 32-bit token ids
        self._sample_bits = float(self.workload.batch_size * self.workload.seq_len * 32)

    def context(self, round_index: int, t0: float) -> RoundContext:
        """The snapshot the allocator plans with at time ``t0``."""
        speed = self.compute.speed(t0)
        with np.errstate(divide="ignore"):
            compute_s = self._work_s / speed[:, None]
        return RoundContext(
            round_index=round_index,
            time_s=t0,
            device_names=self._names,
            compute_s=compute_s,
            memory_bytes=self._memory,
            memory_budget_bytes=self._budget,
            upload_bits=self._bits,
            snr_coef_hz=self.channel.snr_coef_hz(t0),
            available=self.compute.available(t0) & (speed > 0),
            total_bandwidth_hz=self.server.total_bandwidth_hz,
            aggregation_s=self.server.aggregation_s,
            sample_bits=self._sample_bits,
            server_compute_s=self._server_work_s,
        )

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> RunResult:
        """Simulate all rounds.

        Args:
            on_round: called with each finished round's record (progress bars).

        Returns:
            The records and metadata of the run.
        """
        env = simpy.Environment()
        result = RunResult(metadata={**self.metadata, "cost_model": self.cost_source})
        rng = rng_streams(self.seed)["allocator"]
        env.run(env.process(self.server_rounds(env, result, rng, on_round)))
        return result

    def server_rounds(self, env, result, rng, on_round):  # type: ignore[no-untyped-def]
        """The server process: plan, dispatch, wait at the barrier, aggregate, record."""
        N = self.workload.num_blocks
        blocks = np.arange(N)
        for r in range(self.rounds):
            t0 = env.now
            ctx = self.context(r, t0)
            tic = perf_counter()
            alloc = self.allocator.allocate(ctx, rng)
            solve_wall_s = perf_counter() - tic
            check_allocation(ctx, alloc)
            devs = alloc.block_device
            if alloc.mode == "deft":
                work = self._work_s[devs, blocks]
                compute_end = self.compute.work_end_s(devs, np.full(N, t0), work)
                bw = alloc.bandwidth_hz[devs]
                upload_end = self.channel.transfer_end_s(devs, compute_end, self._bits, bw)
                self._check_finite(r, devs, compute_end, upload_end)
                # plain floats keep SimPy's heap arithmetic fast
                compute_dur = (compute_end - t0).tolist()
                upload_dur = (upload_end - compute_end).tolist()
                tail_s = self.server.aggregation_s
            else:
                compute_end, upload_end, compute_dur, upload_dur, tail_s = self._realise_other(
                    ctx, alloc
                )
            yield env.all_of(
                [env.process(device_round(env, c, u)) for c, u in zip(compute_dur, upload_dur)]
            )
            yield env.timeout(tail_s)
            rec = self._record(ctx, alloc, solve_wall_s, env.now, compute_end, upload_end, result)
            if on_round is not None:
                on_round(rec)

    def _realise_other(self, ctx: RoundContext, alloc: Allocation) -> tuple[Any, ...]:
        """Phase ends of a ``grouped`` or ``offload`` round (one process per active device).

        Returns:
            ``(N,)`` compute and upload ends per block, per-device compute and upload
            durations, and what the server does after the barrier (aggregation, or training).
        """
        t0, N = ctx.time_s, ctx.num_blocks
        devs = alloc.block_device
        uniq, inv = np.unique(devs, return_inverse=True)
        if alloc.mode == "offload":
            work = np.zeros(uniq.size)
            bits = np.full(uniq.size, self._sample_bits)
            tail_s = alloc.server_compute_s
        else:
            deepest = np.zeros(uniq.size, dtype=np.intp)
            np.maximum.at(deepest, inv, np.arange(N))
            work = self._work_s[uniq, deepest]
            bits = np.bincount(inv, weights=self._bits, minlength=uniq.size)
            tail_s = self.server.aggregation_s
        c_end = self.compute.work_end_s(uniq, np.full(uniq.size, t0), work)
        u_end = self.channel.transfer_end_s(uniq, c_end, bits, alloc.bandwidth_hz[uniq])
        self._check_finite(ctx.round_index, devs, c_end[inv], u_end[inv])
        return c_end[inv], u_end[inv], (c_end - t0).tolist(), (u_end - c_end).tolist(), tail_s

    def _check_finite(self, r: int, devs: np.ndarray, ce: np.ndarray, ue: np.ndarray) -> None:
        for phase, ends in (("compute", ce), ("upload", ue)):
            bad = np.flatnonzero(~np.isfinite(ends))
            if bad.size:
                n = int(bad[0])
                raise SimulationError(
                    f"round {r}: device {self._names[devs[n]]} never finishes the {phase} of "
                    f"block {n + 1}: its {'speed' if phase == 'compute' else 'rate'} stays zero "
                    "for the rest of the trace"
                )

    def _record(
        self,
        ctx: RoundContext,
        alloc: Allocation,
        solve_wall_s: float,
        end_s: float,
        compute_end: np.ndarray,
        upload_end: np.ndarray,
        result: RunResult,
    ) -> RoundRecord:
        devs = alloc.block_device
        N = len(devs)
        blocks = np.arange(N)
        bits, memory = self._bits, self._memory
        if alloc.mode == "deft":
            planned_compute = ctx.compute_s[devs, blocks]
        else:
            planned_compute, bits = ctx.device_work(alloc)
            if alloc.mode == "offload":
                memory = np.zeros(N)
        planned = ctx.pair_latency_s(alloc)
        planned_upload = planned - planned_compute
        bott = int(np.argmax(upload_end))
        bott_name = "server" if alloc.mode == "offload" else self._names[devs[bott]]
        headroom = self._budget[devs] - memory
        est = alloc.estimated_latency_s
        rec = RoundRecord(
            round=ctx.round_index,
            start_s=ctx.time_s,
            end_s=end_s,
            latency_s=end_s - ctx.time_s,
            planned_latency_s=(
                float(planned.max()) + ctx.aggregation_s
                if alloc.mode == "deft"
                else ctx.round_latency_s(alloc)
            ),
            allocator_estimate_s=float("nan") if est is None else float(est),
            solve_wall_s=solve_wall_s,
            active_devices=N,
            available_devices=int(ctx.available.sum()),
            bottleneck_device=bott_name,
            bottleneck_block=N if alloc.mode == "offload" else bott + 1,
            min_memory_headroom_bytes=float(headroom.min()),
        )
        result.rounds.append(rec)
        if alloc.diagnostics:  # e.g. JBBA's iteration trace, CRUNCH's fallbacks (run.json)
            result.metadata.setdefault("allocator_diagnostics", []).append(
                {"round": ctx.round_index, **alloc.diagnostics}
            )
        upload_dur = upload_end - compute_end
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_rate = np.where(upload_dur > 0, bits / upload_dur, np.inf)
        result.device_rounds.append(
            DeviceRounds(
                round=ctx.round_index,
                device=self._names_arr[devs],
                block=blocks + 1,
                bandwidth_hz=alloc.bandwidth_hz[devs],
                compute_start_s=np.full(N, ctx.time_s),
                compute_end_s=compute_end,
                upload_start_s=compute_end,
                upload_end_s=upload_end,
                upload_bits=bits,
                mean_rate_bps=mean_rate,
                planned_compute_s=planned_compute,
                planned_upload_s=planned_upload,
                memory_bytes=memory,
                memory_budget_bytes=self._budget[devs],
            )
        )
        return rec


def bare_event_loop(compute_s: np.ndarray, upload_s: np.ndarray, aggregation_s: float) -> float:
    """Run the engine's event structure with no modelling work; return the end time.

    The same processes and events as :meth:`Simulation.run` (per round: one two-phase process per
    device, an ``all_of`` barrier, an aggregation timeout), with durations given as ``(R, N)``
    arrays. ``desim bench engine`` compares the engine's wall time against this loop.
    """
    env = simpy.Environment()

    def server(env: simpy.Environment):  # type: ignore[no-untyped-def]
        for c_row, u_row in zip(compute_s.tolist(), upload_s.tolist()):
            yield env.all_of([env.process(device_round(env, c, u)) for c, u in zip(c_row, u_row)])
            yield env.timeout(aggregation_s)

    env.run(env.process(server(env)))
    return float(env.now)
