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
from desim.costs.models import CostModel, Workload, analytic_flops
from desim.engine.faults import FaultModel, RoundDraws, offline_time
from desim.engine.records import DeviceRounds, FaultEventRecord, RoundRecord
from desim.engine.rng import rng_streams
from desim.errors import (
    DesimError,
    InfeasibleError,
    ScenarioError,
    SimulationError,
)
from desim.results import RunResult
from desim.scenario.model import DeviceSpec, HardwarePower, RunSpec, ServerSpec
from desim.schemes.core import RoundPlan, Scheme, SchemeInputs
from desim.world.channel import Channel
from desim.world.compute import ComputeTimeline
from desim.world.rates import shannon_rate_bps


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
        policy: straggler and infeasible-round policies (the scenario's ``run`` section).
        faults: injected and scripted faults (``None``: only availability timelines).
        scheme: the scheme planning ``fl-lora`` or ``dlora`` rounds (``None``: the allocator
            plans every round: ``deft``, and ``offload`` through the ``offload`` allocator).
        power: watts and peak FLOP/s per hardware class (``None``: no energy columns).
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

    def __post_init__(self) -> None:
        K, N = len(self.devices), self.workload.num_blocks
        if self.scheme is None and K < N:
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
        # per-row samples and tokens of a DEFT round (one mini-batch per block)
        self._samples = np.full(N, float(self.workload.batch_size))
        self._tokens = self._samples * tokens

    def _available(self, t_s: float) -> np.ndarray:
        avail = self.compute.available(t_s)
        if self.faults is not None and self.faults.spec.events:
            avail = avail & ~self.faults.offline_at(t_s, len(self.devices))
        return avail

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
            available=self._available(t0) & (speed > 0),
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
        result = RunResult(metadata={**self.metadata, "cost_model": self.cost_source,
                                     "flops_source": self.flops_source})
        if self.power is not None:
            from desim.costs.energy import device_power_table

            result.device_power = device_power_table(self.devices, self.power)
        streams = rng_streams(self.seed)
        rng = streams["allocator"]
        if self.scheme is not None:
            proc = self.scheme_rounds(env, result, streams["scheme"], on_round)
        else:
            proc = self.server_rounds(env, result, rng, on_round)
        env.run(env.process(proc))
        return result

    def server_rounds(self, env, result, rng, on_round):  # type: ignore[no-untyped-def]
        """The server process: plan, dispatch, wait at the barrier, aggregate, record."""
        N = self.workload.num_blocks
        K = len(self.devices)
        blocks = np.arange(N)
        for r in range(self.rounds):
            t0 = env.now
            draws = self.faults.draw(K) if self.faults is not None else None
            ctx = self.context(r, t0)
            tic = perf_counter()
            try:
                alloc = self.allocator.allocate(ctx, rng)
            except InfeasibleError as exc:
                rec = self._skip(ctx, str(exc), perf_counter() - tic, result)
                yield env.timeout(self.policy.retry_after_s)
                if on_round is not None:
                    on_round(rec)
                continue
            solve_wall_s = perf_counter() - tic
            check_allocation(ctx, alloc)
            devs = alloc.block_device
            if alloc.mode == "deft":
                work = self._work_s[devs, blocks]
                compute_end = self.compute.work_end_s(devs, np.full(N, t0), work)
                bw = alloc.bandwidth_hz[devs]
                upload_end = self.channel.transfer_end_s(devs, compute_end, self._bits, bw)
                fail, kind = self._failures(devs, np.full(N, t0), compute_end, upload_end, draws)
                if np.isfinite(fail).any() or upload_end.max() > self._deadline_at(t0):
                    round_ = FaultyRound(self, env, ctx, rng, draws)
                    yield from round_.run(alloc, compute_end, upload_end, fail, kind)
                    rec = round_.record(alloc, solve_wall_s, result)
                    if on_round is not None:
                        on_round(rec)
                    continue
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

    def scheme_inputs(self, round_index: int, t0: float) -> SchemeInputs:
        """The snapshot a scheme plans with at time ``t0``."""
        speed = self.compute.speed(t0)
        server = self._server_work_s
        return SchemeInputs(
            round_index=round_index,
            time_s=t0,
            work_s=self._work_s,
            speed=speed,
            available=self._available(t0) & (speed > 0),
            memory_bytes=self._memory,
            memory_budget_bytes=self._budget,
            block_bits=self._bits,
            snr_coef_hz=self.channel.snr_coef_hz(t0),
            total_bandwidth_hz=self.server.total_bandwidth_hz,
            aggregation_s=self.server.aggregation_s,
            server_step_s=None if server is None else float(server[-1]),
            block_flops=self._flops,
            workload=self.workload,
        )

    def scheme_rounds(self, env, result, rng, on_round):  # type: ignore[no-untyped-def]
        """The server process of a scheme (``fl-lora``, ``dlora``): plan, run stages, record.

        Each stage's phase ends are computed exactly when it starts (pure functions of time);
        every participant is one process, the stage ends at an ``all_of`` barrier followed by
        the plan's server time. Participants lost to faults are dropped (see
        :meth:`_realise_plan`).
        """
        assert self.scheme is not None
        state = self.scheme.new_state(len(self.devices), rng)
        K = len(self.devices)
        for r in range(self.rounds):
            t0 = env.now
            draws = self.faults.draw(K) if self.faults is not None else None
            inp = self.scheme_inputs(r, t0)
            tic = perf_counter()
            try:
                plan = self.scheme.plan(inp, state, rng)
            except InfeasibleError as exc:
                rec = self._skip(inp, str(exc), perf_counter() - tic, result)  # type: ignore[arg-type]
                yield env.timeout(self.policy.retry_after_s)
                if on_round is not None:
                    on_round(rec)
                continue
            solve_wall_s = perf_counter() - tic
            real = self._realise_plan(r, plan, t0, draws)
            for stage_end, tail in zip(real["stage_ends"], plan.barrier_s):
                now = env.now
                yield env.all_of(
                    [env.process(device_task(env, e - now)) for e in stage_end.tolist()]
                )
                yield env.timeout(tail)
            rec = self._record_plan(inp, plan, real, solve_wall_s, env.now, result)
            if on_round is not None:
                on_round(rec)

    def _realise_plan(self, r: int, plan: RoundPlan, t0: float,
                      draws: RoundDraws | None = None) -> dict[str, Any]:
        """Exact phase times of a plan: stage ends, busy seconds, first/last phase times, losses.

        A participant is lost at the earliest of the fault sources of :mod:`desim.engine.faults`
        (availability drop, scripted outage, injected dropout, upload timeout), taken over its
        fault-free span ``[t0, end of its last phase)``, and, with ``run.straggler_policy =
        "deadline"``, at ``t0 + deadline_s`` if its first stage is unfinished then. A lost
        participant stops at that time: its busy time is cut there, the stage's barrier waits
        for it only until then (the server sees the link drop), and it takes no part in later
        stages. Its work counts only if it was lost after its first stage (for ``fl-lora``: its
        update was aggregated, it misses the broadcast).
        """
        P = plan.devices.size
        free = self._stage_times(r, plan, t0, np.ones(P, dtype=bool), np.full(P, np.inf))
        end = np.max(np.stack(free["stage_ends"]), axis=0)
        up_start = np.where(np.isnan(free["first"]["up"]), end, free["first"]["up"])
        fail, kind = self._failures(plan.devices, np.full(P, t0), up_start, end, draws)
        deadline = self._deadline_at(t0)
        late = (free["stage_ends"][0] > deadline) & (deadline < fail)
        fail = np.where(late, deadline, fail)
        kind = np.where(late, "deadline", kind)
        if not np.isfinite(fail).any():
            return free
        return self._stage_times(r, plan, t0, np.ones(P, dtype=bool), fail, kind)

    def _stage_times(self, r: int, plan: RoundPlan, t0: float, alive: np.ndarray,
                     fail: np.ndarray, kind: np.ndarray | None = None) -> dict[str, Any]:
        """Realise ``plan``'s stages for the ``alive`` participants, each stopping at ``fail``."""
        devs, P = plan.devices, plan.devices.size
        busy = {k: np.zeros(P) for k in ("compute", "up", "down")}
        first = {k: np.full(P, np.nan) for k in busy}
        last = {k: np.full(P, np.nan) for k in busy}
        sent = {k: np.zeros(P) for k in ("up", "down")}
        lost_stage = np.full(P, -1)
        stage_ends = []
        start = t0
        for j, (stage, tail) in enumerate(zip(plan.stages, plan.barrier_s)):
            t = np.full(P, start)
            for ph in stage:
                amount = np.where(alive, ph.amount, 0.0)
                if not np.any(amount > 0):
                    continue
                if ph.kind == "compute":
                    new = self.compute.work_end_s(devs, t, amount)
                elif ph.kind == "up" or (ph.kind == "down" and plan.downlink_rate_bps is None):
                    # downlink: reciprocal channel (TDD), same SNR and bandwidth share
                    new = self.channel.transfer_end_s(devs, t, amount, plan.bandwidth_hz)
                elif ph.kind == "down":
                    new = t + amount / plan.downlink_rate_bps
                else:
                    new = t + amount
                bad = np.flatnonzero(~np.isfinite(new) & (fail == np.inf))
                if bad.size:
                    raise SimulationError(
                        f"round {r}: device {self._names[devs[bad[0]]]} never finishes a "
                        f"{ph.kind} phase: its {'speed' if ph.kind == 'compute' else 'rate'} "
                        "stays zero for the rest of the trace"
                    )
                if ph.kind in busy:  # the part of the phase before the device is lost
                    on = (amount > 0) & (t < fail)
                    cut_t, cut_new = np.minimum(t, fail), np.minimum(new, fail)
                    busy[ph.kind] += np.where(on, cut_new - cut_t, 0.0)
                    first[ph.kind] = np.where(on & np.isnan(first[ph.kind]), t, first[ph.kind])
                    last[ph.kind] = np.where(on, cut_new, last[ph.kind])
                if ph.kind in sent:  # a transfer cut short delivers nothing
                    sent[ph.kind] += np.where(new <= fail, amount, 0.0)
                t = new
            stopped = alive & (fail < t)
            lost_stage = np.where(stopped, j, lost_stage)
            # a participant lost before the stage began holds no one up
            t = np.where(alive, np.maximum(np.minimum(t, fail), start), start)
            stage_ends.append(t)
            alive = alive & ~stopped
            start = float(t.max()) + tail
        return {"stage_ends": stage_ends, "busy": busy, "first": first, "last": last,
                "sent": sent, "fail": fail, "kind": kind, "lost_stage": lost_stage}

    def _record_plan(self, inp: SchemeInputs, plan: RoundPlan, real: dict[str, Any],
                     solve_wall_s: float, end_s: float, result: RunResult) -> RoundRecord:
        devs, P, t0 = plan.devices, plan.devices.size, inp.time_s
        busy, first, last = real["busy"], real["first"], real["last"]
        block = self.workload.num_blocks if self.scheme and self.scheme.name == "fl-lora" else 0

        def span(kind: str, default: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return (np.where(np.isnan(first[kind]), default, first[kind]),
                    np.where(np.isnan(last[kind]), default, last[kind]))

        c_start, c_end = span("compute", np.full(P, t0))
        u_start, u_end = span("up", c_end)
        d_start, d_end = span("down", u_end)
        up_bits, down_bits = real["sent"]["up"], real["sent"]["down"]
        rate = shannon_rate_bps(plan.bandwidth_hz, inp.snr_coef_hz[devs])
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_rate = np.where((busy["up"] > 0) & (up_bits > 0), up_bits / busy["up"], np.nan)
            planned_compute = plan.totals("compute") / inp.speed[devs]
            planned_up_bits = plan.totals("up")
            planned_upload = np.where(planned_up_bits > 0, planned_up_bits / rate, 0.0)
        last_stage = real["stage_ends"][-1]
        bott = int(np.argmax(last_stage))
        # work counts unless the participant was lost in the first stage (module docstring)
        lost_stage = real["lost_stage"]
        counts = (lost_stage < 0) | (lost_stage > 0)
        lost = np.flatnonzero(lost_stage >= 0)
        outcome = np.full(P, "done", dtype=object)
        if lost.size:
            outcome[lost] = real["kind"][lost]
            for i in lost:
                result.fault_events.append(FaultEventRecord(
                    round=inp.round_index, device=self._names[devs[i]], block=block,
                    kind=str(real["kind"][i]), time_s=float(real["fail"][i]), task_start_s=t0,
                    lost_s=float(real["fail"][i]) - t0 if not counts[i] else 0.0,
                ))
        rec = RoundRecord(
            round=inp.round_index, start_s=t0, end_s=end_s, latency_s=end_s - t0,
            planned_latency_s=plan.planned_latency_s, allocator_estimate_s=float("nan"),
            solve_wall_s=solve_wall_s, active_devices=P,
            available_devices=int(inp.available.sum()),
            bottleneck_device=self._names[devs[bott]], bottleneck_block=block,
            min_memory_headroom_bytes=float((self._budget[devs] - plan.memory_bytes).min()),
            dropouts=int(lost.size),
        )
        result.rounds.append(rec)
        assert self.scheme is not None
        diagnostics = self.scheme.realised(plan, counts)
        if diagnostics:
            result.metadata.setdefault("scheme_diagnostics", []).append(
                {"round": inp.round_index, **diagnostics}
            )
        result.device_rounds.append(DeviceRounds(
            round=inp.round_index, device=self._names_arr[devs], block=np.full(P, block),
            bandwidth_hz=plan.bandwidth_hz, compute_start_s=c_start, compute_end_s=c_end,
            upload_start_s=u_start, upload_end_s=u_end, upload_bits=up_bits,
            mean_rate_bps=mean_rate, planned_compute_s=planned_compute,
            planned_upload_s=planned_upload, memory_bytes=plan.memory_bytes,
            memory_budget_bytes=self._budget[devs], outcome=outcome,
            download_start_s=d_start, download_end_s=d_end, download_bits=down_bits,
            compute_busy_s=busy["compute"], upload_busy_s=busy["up"],
            download_busy_s=busy["down"], flops=np.where(counts, plan.flops, 0.0),
            samples=np.where(counts, plan.samples, 0.0),
            tokens=np.where(counts, plan.samples, 0.0) * self.workload.tokens_per_sample,
        ))
        return rec

    def _deadline_at(self, t0: float) -> float:
        if self.policy.straggler_policy == "deadline" and self.policy.deadline_s is not None:
            return t0 + self.policy.deadline_s
        return np.inf

    def _failures(
        self,
        devs: np.ndarray,
        start: np.ndarray,
        upload_start: np.ndarray,
        end: np.ndarray,
        draws: RoundDraws | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """When (if at all) each task loses its work: faults plus availability drops."""
        if self.faults is not None and self.faults.active and draws is not None:
            return self.faults.failure(self.compute, devs, start, upload_start, end, draws)
        off = offline_time(self.compute, devs, start)
        off = np.where(off < end, off, np.inf)
        return off, np.where(np.isfinite(off), "offline", "")

    def _skip(self, ctx: RoundContext, reason: str, solve_wall_s: float, result: RunResult):  # type: ignore[no-untyped-def]
        """Record an infeasible round as skipped, or stop if the policy says ``error``."""
        if self.policy.on_infeasible == "error":
            raise InfeasibleError(reason)
        wait = self.policy.retry_after_s
        rec = RoundRecord(
            round=ctx.round_index, start_s=ctx.time_s, end_s=ctx.time_s + wait, latency_s=wait,
            planned_latency_s=float("nan"), allocator_estimate_s=float("nan"),
            solve_wall_s=solve_wall_s, active_devices=0,
            available_devices=int(ctx.available.sum()), bottleneck_device="",
            bottleneck_block=0, min_memory_headroom_bytes=float("nan"), status="skipped",
            reason=reason,
        )
        result.rounds.append(rec)
        return rec

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

    def _check_finite(self, r: int, devs: np.ndarray, ce: np.ndarray, ue: np.ndarray,
                      blocks: np.ndarray | None = None) -> None:
        """Refuse a phase that never ends; ``blocks`` (0-based) default to ``0..len(devs)-1``."""
        for phase, ends in (("compute", ce), ("upload", ue)):
            bad = np.flatnonzero(~np.isfinite(ends))
            if bad.size:
                n = int(bad[0])
                block = n if blocks is None else int(blocks[n])
                raise SimulationError(
                    f"round {r}: device {self._names[devs[n]]} never finishes the {phase} of "
                    f"block {block + 1}: its {'speed' if phase == 'compute' else 'rate'} stays "
                    "zero for the rest of the trace"
                )

    @property
    def block_memory_bytes(self) -> np.ndarray:
        """``(N,)`` peak bytes of training block ``n`` (the worst case over hardware classes)."""
        return self._memory

    @property
    def memory_budget_bytes(self) -> np.ndarray:
        """``(K,)`` memory budget of every device."""
        return self._budget

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
                outcome=np.full(N, "done", dtype=object),
                flops=self._row_flops(ctx, alloc),
                samples=self._samples,
                tokens=self._tokens,
            )
        )
        return rec

    def _row_flops(self, ctx: RoundContext, alloc: Allocation) -> np.ndarray:
        """``(N,)`` device FLOPs of each row: the block's, its device's deepest, or none.

        FLOPs are those of the row's device class (``desim.costs.models.BlockCosts.flops``).
        """
        k = alloc.block_device
        if alloc.mode == "deft":
            return self._flops[k, np.arange(ctx.num_blocks)]
        if alloc.mode == "offload":
            return np.zeros(ctx.num_blocks)
        deepest = np.zeros(ctx.num_devices, dtype=np.intp)
        np.maximum.at(deepest, k, np.arange(ctx.num_blocks))
        return self._flops[k, deepest[k]]


def device_task(env: simpy.Environment, duration_s: float):  # type: ignore[no-untyped-def]
    """A device works on one block until it finishes or loses the work (or is abandoned)."""
    try:
        yield env.timeout(duration_s)
    except simpy.Interrupt:  # abandoned at the straggler deadline
        pass


@dataclass
class _Task:
    device: int
    block: int
    start_s: float
    compute_end_s: float
    upload_end_s: float
    bandwidth_hz: float
    fail_s: float
    kind: str

    @property
    def stop_s(self) -> float:
        return min(self.upload_end_s, self.fail_s)


class FaultyRound:
    """One DEFT round in which work is lost: dropouts, outages, timeouts or a deadline.

    Lost blocks are re-planned by the same allocator over the devices that are idle and still
    online at that moment, with the bandwidth not held by running tasks; the round ends only
    when every block has arrived (or is recorded as skipped under ``on_infeasible = "skip"``).
    """

    def __init__(self, sim: Simulation, env: simpy.Environment, ctx: RoundContext, rng, draws):  # type: ignore[no-untyped-def]
        self.sim, self.env, self.ctx, self.rng, self.draws = sim, env, ctx, rng, draws
        K = ctx.num_devices
        self.out = np.zeros(K, dtype=bool)  # dropped or abandoned: offline for this round
        self.finished: list[_Task] = []
        self.lost: list[_Task] = []
        self.running: dict[Any, _Task] = {}
        self.reassigned = 0
        self.skipped_reason = ""

    def _dispatch(self, devs, blocks, bw, start):  # type: ignore[no-untyped-def]
        sim = self.sim
        n = devs.size
        t = np.full(n, start)
        ce = sim.compute.work_end_s(devs, t, sim._work_s[devs, blocks])
        ue = sim.channel.transfer_end_s(devs, ce, sim._bits[blocks], bw)
        fail, kind = sim._failures(devs, t, ce, ue, self.draws)
        self._start(devs, blocks, bw, start, ce, ue, fail, kind)

    def _start(self, devs, blocks, bw, start, ce, ue, fail, kind):  # type: ignore[no-untyped-def]
        for i in range(devs.size):
            task = _Task(int(devs[i]), int(blocks[i]), float(start), float(ce[i]), float(ue[i]),
                         float(bw[i]), float(fail[i]), str(kind[i]))
            if not np.isfinite(task.stop_s):
                self.sim._check_finite(self.ctx.round_index, devs[i : i + 1], ce[i : i + 1],
                                       ue[i : i + 1], blocks[i : i + 1])
            proc = self.env.process(device_task(self.env, task.stop_s - self.env.now))
            self.running[proc] = task

    def run(self, alloc, compute_end, upload_end, fail, kind):  # type: ignore[no-untyped-def]
        """Realise the round (a SimPy generator); afterwards call :meth:`record`."""
        env, sim, ctx = self.env, self.sim, self.ctx
        N = ctx.num_blocks
        devs = alloc.block_device
        self._start(devs, np.arange(N), alloc.bandwidth_hz[devs], ctx.time_s, compute_end,
                    upload_end, fail, kind)
        deadline = sim._deadline_at(ctx.time_s)
        deadline_ev = env.timeout(deadline - env.now) if np.isfinite(deadline) else None
        pending: list[int] = []
        while self.running or pending:
            if pending:
                pending = self._replan(pending)
                if self.skipped_reason:
                    return
            waits = list(self.running)
            if deadline_ev is not None and not deadline_ev.processed:
                waits.append(deadline_ev)  # (a Timeout is "triggered" from creation on)
            yield env.any_of(waits)
            for proc in [p for p in self.running if p.triggered]:
                task = self.running.pop(proc)
                if task.fail_s < task.upload_end_s:
                    self._lose(task, task.kind, task.fail_s)
                    pending.append(task.block)
                else:
                    self.finished.append(task)
            if deadline_ev is not None and deadline_ev.processed:
                deadline_ev = None
                for proc, task in list(self.running.items()):
                    proc.interrupt()
                    self._lose(task, "deadline", env.now)
                    pending.append(task.block)
                self.running.clear()
        yield env.timeout(sim.server.aggregation_s)

    def _lose(self, task: _Task, kind: str, at_s: float) -> None:
        task.kind, task.fail_s = kind, at_s
        self.lost.append(task)
        self.out[task.device] = True

    def _replan(self, pending: list[int]) -> list[int]:
        """Re-invoke the allocator for ``pending`` blocks; return those still unplaced."""
        sim, env = self.sim, self.env
        blocks = np.array(sorted(pending))
        now_ctx = sim.context(self.ctx.round_index, env.now)
        busy = np.zeros(now_ctx.num_devices, dtype=bool)
        held = 0.0
        for task in self.running.values():
            busy[task.device] = True
            held += task.bandwidth_hz
        sub = RoundContext(
            round_index=now_ctx.round_index,
            time_s=env.now,
            device_names=now_ctx.device_names,
            compute_s=now_ctx.compute_s[:, blocks],
            memory_bytes=now_ctx.memory_bytes[blocks],
            memory_budget_bytes=now_ctx.memory_budget_bytes,
            upload_bits=now_ctx.upload_bits[blocks],
            snr_coef_hz=now_ctx.snr_coef_hz,
            available=now_ctx.available & ~busy & ~self.out,
            total_bandwidth_hz=max(now_ctx.total_bandwidth_hz - held, 0.0),
            aggregation_s=now_ctx.aggregation_s,
            block_numbers=tuple(int(b) + 1 for b in blocks),
        )
        try:
            alloc = sim.allocator.allocate(sub, self.rng)
            if alloc.mode != "deft":
                raise InfeasibleError(
                    f"round {sub.round_index}: allocator {sim.allocator.registry_name!r} cannot "
                    "reassign lost blocks (it does not place one block per device)"
                )
            check_allocation(sub, alloc)
        except InfeasibleError as exc:
            if self.running:  # wait for a device to free up, then try again
                return list(blocks)
            detail = str(exc).removeprefix(f"round {sub.round_index}: ")
            lost = (f"block {blocks[0] + 1} lost its device" if blocks.size == 1 else
                    f"blocks {', '.join(str(b + 1) for b in blocks)} lost their devices")
            reason = f"round {sub.round_index}: {lost} and cannot be reassigned: {detail}"
            if sim.policy.on_infeasible == "error":
                raise InfeasibleError(reason) from None
            self.skipped_reason = reason
            return []
        devs = alloc.block_device
        self.reassigned += blocks.size
        self._dispatch(devs, blocks, alloc.bandwidth_hz[devs], env.now)
        return []

    def record(self, alloc: Allocation, solve_wall_s: float, result: RunResult) -> RoundRecord:
        """Append this round's records to ``result`` and return the round record."""
        sim, ctx, now = self.sim, self.ctx, self.env.now
        r = ctx.round_index
        for t in self.lost:
            result.fault_events.append(FaultEventRecord(
                round=r, device=sim._names[t.device], block=t.block + 1, kind=t.kind,
                time_s=t.fail_s, task_start_s=t.start_s, lost_s=t.fail_s - t.start_s,
            ))
        tasks = self.finished + self.lost
        devs = np.array([t.device for t in tasks], dtype=np.intp)
        blocks = np.array([t.block for t in tasks], dtype=np.intp)
        start = np.array([t.start_s for t in tasks])
        ce = np.array([t.compute_end_s for t in tasks])
        stop = np.array([t.stop_s for t in tasks])
        ce = np.minimum(ce, stop)
        bits = sim._bits[blocks]
        done = np.arange(len(tasks)) < len(self.finished)  # tasks = finished + lost
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(done & (stop > ce), bits / (stop - ce), np.nan)
        planned = ctx.pair_latency_s(alloc)
        bw = np.array([t.bandwidth_hz for t in tasks])
        with np.errstate(divide="ignore"):
            planned_upload = bits / shannon_rate_bps(bw, ctx.snr_coef_hz[devs])
        result.device_rounds.append(DeviceRounds(
            round=r, device=sim._names_arr[devs], block=blocks + 1,
            bandwidth_hz=bw, compute_start_s=start,
            compute_end_s=ce, upload_start_s=ce, upload_end_s=stop, upload_bits=bits,
            mean_rate_bps=rate, planned_compute_s=ctx.compute_s[devs, blocks],
            planned_upload_s=planned_upload,
            memory_bytes=sim._memory[blocks], memory_budget_bytes=sim._budget[devs],
            outcome=np.array(["done" if d else t.kind for d, t in zip(done, tasks)], dtype=object),
            flops=np.where(done, sim._flops[devs, blocks], 0.0),
            samples=np.where(done, sim._samples[blocks], 0.0),
            tokens=np.where(done, sim._tokens[blocks], 0.0),
        ))
        last = max(self.finished, key=lambda t: t.upload_end_s) if self.finished else None
        rec = RoundRecord(
            round=r, start_s=ctx.time_s, end_s=now, latency_s=now - ctx.time_s,
            planned_latency_s=float(planned.max()) + ctx.aggregation_s,
            allocator_estimate_s=(float("nan") if alloc.estimated_latency_s is None
                                  else float(alloc.estimated_latency_s)),
            solve_wall_s=solve_wall_s, active_devices=len({t.device for t in tasks}),
            available_devices=int(ctx.available.sum()),
            bottleneck_device=sim._names[last.device] if last else "",
            bottleneck_block=last.block + 1 if last else 0,
            min_memory_headroom_bytes=float((sim._budget[devs] - sim._memory[blocks]).min()),
            status="skipped" if self.skipped_reason else "ok", reason=self.skipped_reason,
            dropouts=len(self.lost), reassigned_blocks=self.reassigned,
        )
        result.rounds.append(rec)
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
