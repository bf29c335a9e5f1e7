"""Realise a plan: exact phase times, losses and delivered bits (pure: no SimPy, no state).

Channels and compute timelines are pure functions of time (STYLE §8), so every phase end of a
plan is computed exactly when its stage starts: compute by integrating the speed timeline, a
transfer by integrating the time-varying rate. The engine then plays the stage ends on the
event clock (:mod:`desim.engine.simulation`).

Under a reclaiming uplink (``server.uplink = "reclaim"``, :mod:`desim.engine.uplink`) a stage
with uploads is realised by the shared band's event loop instead: every upload's end then
depends on the others', and a participant's loss hands its share on.

A participant is lost at its failure time ``fail_s`` (:mod:`desim.engine.faults`, or the
straggler deadline). A lost participant stops there: its busy time is cut, the stage's barrier
waits for it only until then (the server sees the link drop), a transfer cut short delivers
nothing, and it takes no part in later stages. Its work counts only if it was lost after its
first stage (for ``fl-lora``: its update was aggregated, it misses the broadcast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from desim.engine.uplink import BandSteps, SharedUplink, StageTimes, shared_stage
from desim.errors import SimulationError
from desim.plan import Phase, RoundPlan
from desim.world.channel import Channel, SignalChannel
from desim.world.compute import ComputeTimeline, SignalTimeline
from desim.world.piecewise import PiecewiseSignals

#: ``(devices, start, upload_start, end) -> (fail_s, kind)``: when each participant loses its
#: work over its fault-free span, ``inf`` and ``""`` when it does not
FailureTimes = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]


@dataclass(frozen=True, eq=False)
class World:
    """What a plan is realised against: compute timelines, channel and the uplink's sharing.

    ``uplink``: the reclaiming uplink (``None``: ``fixed``, every share held for the round).
    """

    compute: ComputeTimeline
    channel: Channel
    device_names: tuple[str, ...]
    uplink: SharedUplink | None = None

    def held_at(self, t_s: float) -> World:
        """The world frozen at ``t_s``: every speed, availability and SNR holds from then on.

        The block-fading setting (``run.block_fading``): phases then end in closed form, at
        the very durations a plan computes from the snapshot at ``t_s``.
        """
        speed = self.compute.speed(t_s)
        avail = self.compute.available(t_s).astype(float)
        compute = SignalTimeline(PiecewiseSignals.constant(speed), PiecewiseSignals.constant(avail))
        channel = SignalChannel(PiecewiseSignals.constant(self.channel.snr_coef_hz(t_s)))
        return World(compute, channel, self.device_names, self.uplink)


@dataclass(frozen=True, eq=False)
class Realisation:
    """A plan's realised phases, ``(P,)`` arrays per participant.

    ``*_first``/``*_last`` are the start of the first and the (cut) end of the last phase of a
    kind, ``nan`` when the participant never ran one; ``*_busy_s`` sum the (cut) phase times.

    Attributes:
        start_s: when the participants started.
        stage_ends: when each participant left each stage's barrier.
        compute_first, compute_last, up_first, up_last, down_first, down_last: phase spans.
        compute_busy_s, up_busy_s, down_busy_s: busy seconds per phase kind.
        up_bits, down_bits: bits delivered (a transfer cut short delivers nothing).
        fail_s: when each participant was lost (``inf``: never).
        kind: why (``""``: not lost); see :data:`desim.engine.faults.DROP_KINDS`.
        lost_stage: the stage it was lost in (``-1``: not lost).
        bandwidth_steps: each participant's bandwidth over time under a reclaiming uplink
            (``None``: ``fixed``, the plan's shares held).
    """

    start_s: np.ndarray
    stage_ends: tuple[np.ndarray, ...]
    compute_first: np.ndarray
    compute_last: np.ndarray
    up_first: np.ndarray
    up_last: np.ndarray
    down_first: np.ndarray
    down_last: np.ndarray
    compute_busy_s: np.ndarray
    up_busy_s: np.ndarray
    down_busy_s: np.ndarray
    up_bits: np.ndarray
    down_bits: np.ndarray
    fail_s: np.ndarray
    kind: np.ndarray
    lost_stage: np.ndarray
    bandwidth_steps: BandSteps | None = None

    @property
    def end_s(self) -> np.ndarray:
        """``(P,)`` when each participant left its last stage."""
        return self.stage_ends[-1]

    @cached_property
    def lost(self) -> np.ndarray:
        """``(P,)`` participants lost in the round."""
        return self.lost_stage >= 0

    @cached_property
    def counts(self) -> np.ndarray:
        """``(P,)`` whose work counted: not lost, or lost after the first stage."""
        return (self.lost_stage < 0) | (self.lost_stage > 0)

    def take(self, lo: int, hi: int) -> Realisation:
        """The realisation of participants ``lo..hi-1`` (one plan of a merged dispatch)."""
        cut: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                cut[f.name] = value[lo:hi]
            elif isinstance(value, tuple):
                cut[f.name] = tuple(v[lo:hi] for v in value)
            elif isinstance(value, BandSteps):
                cut[f.name] = value.take(lo, hi)
            else:
                cut[f.name] = value
        return Realisation(**cut)


def realise(plan: RoundPlan, start_s: float | np.ndarray, world: World, round_index: int,
            fail_s: np.ndarray | None = None, kind: np.ndarray | None = None, *,
            check: bool = True) -> Realisation:
    """Realise ``plan``'s stages from ``start_s``, each participant stopping at ``fail_s``.

    ``start_s``: the round's start, or ``(P,)`` each participant's start of the first stage
    (plans dispatched at different times, realised together on a shared band).

    Raises:
        SimulationError: with ``check``, a participant that is not lost never finishes a
            phase (its speed or rate stays zero for the rest of the trace).
    """
    P = plan.size
    free = fail_s is None
    const = constants(P)
    fail = const.inf if fail_s is None else fail_s
    # busy, first, last per kind; None until a phase of the kind runs (fewer array operations)
    span: dict[str, list[np.ndarray | None]] = {k: [None, None, None]
                                                for k in ("compute", "up", "down")}
    sent: dict[str, np.ndarray | None] = {"up": None, "down": None}
    alive = const.true
    lost_stage = const.not_lost
    stage_ends = []
    start = start_s
    steps: list[BandSteps] = []
    for j, (stage, tail) in enumerate(zip(plan.stages, plan.barrier_s)):
        t = np.full(P, start)
        shared = _shared(plan, world, stage, t, fail, alive) if world.uplink is not None else None
        if shared is not None:
            steps.append(shared.steps)
        for i, ph in enumerate(stage):
            # with no failure every participant runs every phase whole (the same numbers as
            # the general case, with fewer array operations)
            amount = ph.amount if free else np.where(alive, ph.amount, 0.0)
            on = amount > 0
            if not on.any():
                continue
            if shared is not None:
                t = shared.starts[i]
                new = shared.ends[i]
            else:
                new = _phase_end(plan, world, ph.kind, t, amount)
            if check:
                _check_ends(plan, world, round_index, ph.kind, new, fail)
            _book(span, sent, ph.kind, t, new, amount, on, None if free else fail)
            t = new
        if not free:
            stopped = alive & (fail < t)
            lost_stage = np.where(stopped, j, lost_stage)
            # a participant lost before the stage began holds no one up
            t = np.where(alive, np.maximum(np.minimum(t, fail), start), start)
            alive = alive & ~stopped
        else:
            t = np.maximum(t, start)
        stage_ends.append(t)
        start = float(t.max()) + tail
    nan, zero = const.nan, const.zero  # for a phase kind nobody ran

    def got(value: np.ndarray | None, default: np.ndarray) -> np.ndarray:
        return default if value is None else value

    (cb, cf, cl), (ub, uf, ul), (db, df, dl) = span["compute"], span["up"], span["down"]
    return Realisation(
        start_s=np.full(P, start_s) if np.ndim(start_s) == 0 else np.asarray(start_s, float),
        stage_ends=tuple(stage_ends),
        compute_first=got(cf, nan), compute_last=got(cl, nan), up_first=got(uf, nan),
        up_last=got(ul, nan), down_first=got(df, nan), down_last=got(dl, nan),
        compute_busy_s=got(cb, zero), up_busy_s=got(ub, zero), down_busy_s=got(db, zero),
        up_bits=got(sent["up"], zero), down_bits=got(sent["down"], zero),
        fail_s=fail, kind=const.no_kind if kind is None else kind,
        lost_stage=lost_stage,
        bandwidth_steps=None if world.uplink is None else BandSteps.concat(steps),
    )


def _shared(plan: RoundPlan, world: World, stage: tuple[Phase, ...], t: np.ndarray,
            fail: np.ndarray, alive: np.ndarray) -> StageTimes | None:
    """A stage with uploads, realised on the shared band (``None``: it uploads nothing)."""
    assert world.uplink is not None
    if not any(ph.kind == "up" and bool((alive & (ph.amount > 0)).any()) for ph in stage):
        return None
    signals = getattr(world.channel, "signals", None)
    if signals is None:
        raise SimulationError(
            'server.uplink = "reclaim" needs a channel of piecewise-constant signals '
            f"(a SignalChannel), got {type(world.channel).__name__}"
        )
    amounts = [np.where(alive, ph.amount, 0.0) for ph in stage]

    def phase_end(kind: str, which: np.ndarray, start: np.ndarray,
                  amount: np.ndarray) -> np.ndarray:
        return _phase_end(plan, world, kind, start, amount, which)

    return shared_stage(world.uplink, signals, plan.devices, plan.bandwidth_hz,
                        [ph.kind for ph in stage], amounts, t, fail, phase_end)


@dataclass(frozen=True, eq=False)
class Constants:
    """Read-only ``(P,)`` arrays every realisation of ``P`` participants shares."""

    inf: np.ndarray
    nan: np.ndarray
    zero: np.ndarray
    true: np.ndarray
    not_lost: np.ndarray
    no_kind: np.ndarray
    done: np.ndarray


@lru_cache(maxsize=256)
def constants(P: int) -> Constants:
    """The shared constant arrays of size ``P`` (read-only: writing to one raises)."""
    arrays = [np.full(P, np.inf), np.full(P, np.nan), np.zeros(P), np.ones(P, dtype=bool),
              np.full(P, -1), np.full(P, "", dtype=object), np.full(P, "done", dtype=object)]
    for a in arrays:
        a.flags.writeable = False
    return Constants(*arrays)


def _book(span: dict[str, list[np.ndarray | None]], sent: dict[str, np.ndarray | None],
          kind: str, t: np.ndarray, new: np.ndarray, amount: np.ndarray, on: np.ndarray,
          fail: np.ndarray | None) -> None:
    """Add one phase's busy time, span and delivered bits, cut where participants are lost."""
    if kind in span:  # the part of the phase before the participant is lost
        busy, first, last = span[kind]
        if fail is None and on.all():  # everyone runs the whole phase
            span[kind] = [new - t if busy is None else busy + (new - t),
                          t if first is None else first, new]
        else:
            P = t.size
            busy = np.zeros(P) if busy is None else busy
            first = np.full(P, np.nan) if first is None else first
            last = np.full(P, np.nan) if last is None else last
            cut_new, cut_t = new, t
            if fail is not None:
                on = on & (t < fail)
                cut_new, cut_t = np.minimum(new, fail), np.minimum(t, fail)
            span[kind] = [busy + np.where(on, cut_new - cut_t, 0.0),
                          np.where(on & np.isnan(first), t, first), np.where(on, cut_new, last)]
    if kind in sent:  # a transfer cut short delivers nothing
        got = amount if fail is None else np.where(new <= fail, amount, 0.0)
        prev = sent[kind]
        sent[kind] = got if prev is None else prev + got


def realise_with_losses(plan: RoundPlan, start_s: float, world: World, round_index: int,
                        failures: FailureTimes, deadline_s: float = np.inf) -> Realisation:
    """Realise ``plan`` with its losses: fault sources, then the straggler deadline.

    Failure times are taken over each participant's fault-free span ``[start, end of its last
    phase)``; with a finite ``deadline_s`` a participant whose first stage is unfinished then
    is lost at the deadline (kind ``"deadline"``) unless a fault came first. On a reclaiming
    uplink the others speed up when a participant is lost, so "unfinished" is read off the
    realisation with the faults, and a fault drawn after a participant's (earlier) end there
    does not happen.
    """
    # a phase that never ends may still be cut by a fault (an upload timeout): check later
    free = realise(plan, start_s, world, round_index, check=False)
    up_start = free.up_first
    if np.isnan(up_start).any():  # no upload: the span ends at the participant's end
        up_start = np.where(np.isnan(up_start), free.end_s, up_start)
    fail, kind = failures(plan.devices, free.start_s, up_start, free.end_s)
    if np.isfinite(deadline_s):
        first = free.stage_ends[0]
        if world.uplink is not None and np.isfinite(fail).any():
            # a loss hands its share on, so the others' ends move earlier: judge them there
            first = realise(plan, start_s, world, round_index, fail, kind,
                            check=False).stage_ends[0]
        late = (first > deadline_s) & (deadline_s < fail)
        if late.any():
            fail = np.where(late, deadline_s, fail)
            kind = np.where(late, "deadline", kind)
    if not np.isfinite(fail).any():
        if not np.isfinite(free.end_s).all():
            realise(plan, start_s, world, round_index)  # raises, naming the phase
        return free
    return realise(plan, start_s, world, round_index, fail, kind)


def _phase_end(plan: RoundPlan, world: World, kind: str, t: np.ndarray,
               amount: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
    """Exact phase ends ``(m,)`` of the participants ``which`` (``None``: all of them)."""
    devs = plan.devices if which is None else plan.devices[which]
    if kind == "compute":
        return world.compute.work_end_s(devs, t, amount)
    if kind == "up" or (kind == "down" and plan.downlink_rate_bps is None):
        # downlink: reciprocal channel (TDD), same SNR and bandwidth share
        bw = plan.bandwidth_hz if which is None else plan.bandwidth_hz[which]
        return world.channel.transfer_end_s(devs, t, amount, bw)
    if kind == "down":
        assert plan.downlink_rate_bps is not None
        return t + amount / plan.downlink_rate_bps
    return t + amount


def _check_ends(plan: RoundPlan, world: World, round_index: int, kind: str, new: np.ndarray,
                fail: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(new) & (fail == np.inf))
    if not bad.size:
        return
    i = int(bad[0])
    blocks = plan.rows.block[plan.rows.participant == i]
    phase = {"compute": "compute", "up": "upload", "down": "download"}.get(kind, kind)
    what = (f"the {phase} of block {int(blocks[0])}" if blocks.size == 1 and blocks[0] > 0
            else f"a {kind} phase")
    raise SimulationError(
        f"round {round_index}: device {world.device_names[plan.devices[i]]} never finishes "
        f"{what}: its {'speed' if kind == 'compute' else 'rate'} stays zero for the rest of "
        "the trace"
    )
