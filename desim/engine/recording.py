"""The one record builder: a round's plan and its realisation become rows.

Every round of every scheme is recorded here, from :class:`~desim.plan.RoundPlan` and
:class:`~desim.engine.realise.Realisation` pairs (a round whose lost blocks were re-planned has
one pair per dispatch). Rows follow the plan's :class:`~desim.plan.PlanRows`: DEFT writes one
``device_rounds`` row per block, a scheme one per participant. The records are data only
(:mod:`desim.engine.records`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from desim.engine.realise import Realisation, constants
from desim.engine.records import BandwidthSteps, DeviceRounds, FaultEventRecord, RoundRecord
from desim.engine.uplink import BandSteps
from desim.plan import RoundPlan
from desim.results import RunResult


@dataclass(frozen=True, eq=False)
class Devices:
    """What the records need of the run's devices: names and memory budgets, ``(K,)``."""

    names: np.ndarray  # object array of names
    budget: np.ndarray
    tokens_per_sample: int


def _or(first: np.ndarray, last: np.ndarray,
        default: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A kind's first starts and last ends, ``default`` where the kind never ran.

    A participant's first start and last end are set together (both ``nan`` until it runs a
    phase of the kind, :func:`~desim.engine.realise.realise`), so ``first`` says for both.
    """
    never = np.isnan(first)
    if never.any():
        return np.where(never, default, first), np.where(never, default, last)
    return first, last


def _columns(plan: RoundPlan, real: Realisation,
             dev: Devices) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(R,)`` columns of one plan's rows, and the per-row loss details beside them."""
    rows = plan.rows
    R = rows.block.size
    p = rows.participant
    same = rows.one_per_participant  # no gather needed

    def at(values: np.ndarray) -> np.ndarray:
        return values if same else values[p]

    start = real.start_s
    # a phase kind never run spans no time: at the end of the kind before it
    c_start, c_end = _or(real.compute_first, real.compute_last, start)
    u_start, u_end = _or(real.up_first, real.up_last, c_end)
    d_start, d_end = _or(real.down_first, real.down_last, u_end)
    rate = np.divide(real.up_bits, real.up_busy_s, out=np.full(real.up_bits.size, np.nan),
                     where=(real.up_busy_s > 0) & (real.up_bits > 0))
    lost = at(real.lost)
    if lost.any():
        # a row's bits when its participant's uploads all arrived, else what did arrive
        arrived = at(real.up_bits)
        bits = np.where(arrived >= at(plan.totals("up")), rows.upload_bits, arrived)
        counts = at(real.counts)
        flops, samples = np.where(counts, rows.flops, 0.0), np.where(counts, rows.samples, 0.0)
        outcome = np.where(lost, at(real.kind), "done").astype(object)
    else:
        const = constants(R)
        bits, counts, flops, samples = rows.upload_bits, const.true, rows.flops, rows.samples
        outcome = const.done
    devices = at(plan.devices)
    columns = {
        "device": dev.names[devices], "block": rows.block, "bandwidth_hz": at(plan.bandwidth_hz),
        "compute_start_s": at(c_start), "compute_end_s": at(c_end),
        "upload_start_s": at(u_start), "upload_end_s": at(u_end), "upload_bits": bits,
        "mean_rate_bps": at(rate), "planned_compute_s": rows.planned_compute_s,
        "planned_upload_s": rows.planned_upload_s, "memory_bytes": rows.memory_bytes,
        "memory_budget_bytes": dev.budget[devices], "outcome": outcome,
        "download_start_s": at(d_start), "download_end_s": at(d_end),
        "download_bits": at(real.down_bits), "compute_busy_s": at(real.compute_busy_s),
        "upload_busy_s": at(real.up_busy_s), "download_busy_s": at(real.down_busy_s),
        "flops": flops, "samples": samples, "tokens": samples * dev.tokens_per_sample,
    }
    details = {"device_index": devices, "end": at(real.end_s), "lost": lost,
               "fail": at(real.fail_s), "start": at(start), "counts": counts}
    return columns, details


@dataclass(frozen=True)
class RoundFacts:
    """What the loop knows of a round besides its plan: index, start, solve time, devices up."""

    round_index: int
    start_s: float
    solve_wall_s: float
    available: int


def record_round(
    result: RunResult,
    parts: Sequence[tuple[RoundPlan, Realisation]],
    dev: Devices,
    facts: RoundFacts,
    end_s: float,
    *,
    order: np.ndarray | None = None,
    reassigned: int = 0,
    reason: str = "",
) -> RoundRecord:
    """Append a round's records (round, device rows, fault events) to ``result``.

    Args:
        result: the run's records.
        parts: the round's plan and its realisation; a re-planned round adds one pair per
            dispatch of lost blocks. The first plan is the round's own (its planned latency).
        dev: the run's device names and budgets.
        facts: the round's index, start, solve time and available devices.
        end_s: when the round ended (after the last barrier and the server's time).
        order: the order of the concatenated rows (default: as planned).
        reassigned: blocks the loss policy re-planned.
        reason: why the round was given up (``""``: it was not); such a round is ``skipped``.

    Returns:
        The round's record.
    """
    round_index, start_s = facts.round_index, facts.start_s
    each, tasks = [], 0
    for plan, real in parts:  # tasks numbered across the round's dispatches
        cols, det = _columns(plan, real, dev)
        each.append(({"task": plan.rows.participant + tasks, **cols}, det))
        tasks += plan.size
    cols, det = _merged(each, order)
    _fault_events(result, round_index, cols, det)
    plan = parts[0][0]
    bott_device, bott_block = _bottleneck(plan, cols, det)
    rec = RoundRecord(
        round=round_index, start_s=start_s, end_s=end_s, latency_s=end_s - start_s,
        planned_latency_s=plan.planned_latency_s, allocator_estimate_s=plan.estimate_s,
        solve_wall_s=facts.solve_wall_s,
        active_devices=len(set(det["device_index"].tolist())),
        available_devices=facts.available, bottleneck_device=bott_device,
        bottleneck_block=bott_block,
        min_memory_headroom_bytes=float((cols["memory_budget_bytes"]
                                         - cols["memory_bytes"]).min()),
        status="skipped" if reason else "ok", reason=reason,
        dropouts=int(sum(int(real.lost.sum()) for _, real in parts)),
        reassigned_blocks=reassigned,
    )
    result.rounds.append(rec)
    result.device_rounds.append(DeviceRounds(round=round_index, **cols))
    if result.bandwidth_steps is not None:
        result.bandwidth_steps.append(_bandwidth_steps(round_index, parts, dev))
    return rec


def _bandwidth_steps(round_index: int, parts: Sequence[tuple[RoundPlan, Realisation]],
                     dev: Devices) -> BandwidthSteps:
    """The round's bandwidth steps by device name, every dispatch's in one time order."""
    each, offset, devices = [], 0, []
    for plan, real in parts:
        if real.bandwidth_steps is not None:
            s = real.bandwidth_steps
            each.append(BandSteps(s.participant + offset, s.time_s, s.bandwidth_hz))
        devices.append(plan.devices)
        offset += plan.size
    steps = BandSteps.concat(each)
    names = dev.names[np.concatenate(devices)[steps.participant]] if devices else dev.names[:0]
    return BandwidthSteps(round=round_index, device=names, time_s=steps.time_s,
                          bandwidth_hz=steps.bandwidth_hz)


Columns = dict[str, np.ndarray]


def _merged(each: list[tuple[Columns, Columns]],
            order: np.ndarray | None) -> tuple[Columns, Columns]:
    """The parts' columns and details end to end, in ``order``."""
    if len(each) == 1 and order is None:
        return each[0]
    cols, det = ({k: np.concatenate([c[i][k] for c in each]) for k in each[0][i]}
                 for i in (0, 1))
    if order is not None:
        cols = {k: v[order] for k, v in cols.items()}
        det = {k: v[order] for k, v in det.items()}
    return cols, det


def _fault_events(result: RunResult, round_index: int, cols: Columns, det: Columns) -> None:
    """One fault event per lost row: when, why, and the work lost."""
    if not det["lost"].any():
        return
    for i in np.flatnonzero(det["lost"]):
        fail, start = float(det["fail"][i]), float(det["start"][i])
        result.fault_events.append(FaultEventRecord(
            round=round_index, device=str(cols["device"][i]), block=int(cols["block"][i]),
            kind=str(cols["outcome"][i]), time_s=fail, task_start_s=start,
            lost_s=0.0 if det["counts"][i] else fail - start,
        ))


def _bottleneck(plan: RoundPlan, cols: Columns, det: Columns) -> tuple[str, int]:
    """The device (and block) that finished last, of those not lost; the server if it trains."""
    if plan.server_bound:
        return "server", int(cols["block"].max())
    lost = det["lost"]
    if not lost.any():
        bott = int(det["end"].argmax())
    else:
        done = np.flatnonzero(~lost)
        if not done.size:
            return "", 0
        bott = int(done[np.argmax(det["end"][done])])
    return str(cols["device"][bott]), int(cols["block"][bott])


def record_skip(result: RunResult, *, round_index: int, start_s: float, wait_s: float,
                solve_wall_s: float, available: int, reason: str) -> RoundRecord:
    """Record a round that could not be planned as skipped (``on_infeasible = "skip"``)."""
    rec = RoundRecord(
        round=round_index, start_s=start_s, end_s=start_s + wait_s, latency_s=wait_s,
        planned_latency_s=float("nan"), allocator_estimate_s=float("nan"),
        solve_wall_s=solve_wall_s, active_devices=0, available_devices=available,
        bottleneck_device="", bottleneck_block=0, min_memory_headroom_bytes=float("nan"),
        status="skipped", reason=reason,
    )
    result.rounds.append(rec)
    return rec
