"""A work-conserving uplink: the devices uploading at any moment share the whole band ``B``.

Under ``server.uplink = "fixed"`` (the paper's FDMA) device ``k`` keeps its planned share
``B_k`` for the round, and the band a finished upload held stays idle. Under ``"reclaim"`` the
band in use is ``B`` whenever anyone is uploading: at every *event* of a stage (an upload
starts, an upload ends, a participant is lost) ``B`` is re-split among the participants then
uploading (the *active* set ``A``) by ``server.reclaim``:

- ``proportional``: ``B·s_i / Σ_{j∈A} s_j`` with ``s`` the plan's shares, so every upload runs
  at least at its planned share at every moment and none ends later than under ``fixed``;
- ``minmax``: the min-max split of ``B`` over ``A`` on their remaining bits at the SNR known at
  the event, ``a_k(t)`` (:func:`~desim.allocators.bandwidth.minmax_latency_s` with no compute
  left): the split that would equalise their finish times if the SNR held. A device whose SNR
  is 0 at the event gets no share until the next event.

Between events every share is constant and the SNR is piecewise-constant on the channel's own
breakpoints, so the loop stays exact: at each event it takes every active upload's tentative
end at its current share (:meth:`~desim.world.piecewise.PiecewiseSignals.integrate_until`),
moves to the earliest of those, the next phase end of a participant not uploading and the
next loss, and advances every upload's remaining bits to that time
(:meth:`~desim.world.piecewise.PiecewiseSignals.integrate_between`). Phases other than ``up``
(compute, download, server) keep their own exact ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from desim.allocators.bandwidth import minmax_latency_s
from desim.world.piecewise import PiecewiseSignals, RateFn
from desim.world.rates import ShannonRate

ReclaimRule = Literal["proportional", "minmax"]

#: ``(kind, which, start, amount) -> end``: exact ends ``(m,)`` of non-``up`` phases started
#: by participants ``which`` ``(m,)`` at ``start`` ``(m,)``
PhaseEnd = Callable[[str, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SharedUplink:
    """A reclaiming uplink: the band ``B`` the uploaders share and how it is re-split."""

    total_bandwidth_hz: float
    rule: ReclaimRule = "proportional"


@dataclass(frozen=True, eq=False)
class BandSteps:
    """Each participant's uplink bandwidth over time, one entry per change, ``(M,)`` arrays.

    From ``time_s[i]`` participant ``participant[i]`` uploads at ``bandwidth_hz[i]`` (0: it
    stopped) until its next entry. Entries are in time order.
    """

    participant: np.ndarray
    time_s: np.ndarray
    bandwidth_hz: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[BandSteps]) -> BandSteps:
        """The entries of ``parts`` in time order (a stable sort keeps same-time order)."""
        p = np.concatenate([s.participant for s in parts]) if parts else np.zeros(0, np.intp)
        t = np.concatenate([s.time_s for s in parts]) if parts else np.zeros(0)
        b = np.concatenate([s.bandwidth_hz for s in parts]) if parts else np.zeros(0)
        order = np.argsort(t, kind="stable")
        return cls(p[order], t[order], b[order])

    def take(self, lo: int, hi: int) -> BandSteps:
        """The entries of participants ``lo..hi-1``, renumbered from 0."""
        keep = (self.participant >= lo) & (self.participant < hi)
        return BandSteps(self.participant[keep] - lo, self.time_s[keep], self.bandwidth_hz[keep])

    def in_use_hz(self, t_s: float) -> float:
        """The band in use at ``t_s``: the sum of every participant's bandwidth then."""
        held: dict[int, float] = {}
        for p, t, b in zip(self.participant.tolist(), self.time_s.tolist(),
                           self.bandwidth_hz.tolist()):
            if t > t_s:
                break
            held[p] = b
        return float(sum(held.values()))


@dataclass(frozen=True, eq=False)
class StageTimes:
    """A stage realised on the shared band: ``(P,)`` start and end of every phase.

    A participant lost during a phase has that phase and every later one end at ``inf`` (and
    the later ones start at ``inf``): nothing of them is delivered. A phase that never ends
    (zero speed or rate for the rest of the trace) also ends at ``inf``.
    """

    starts: tuple[np.ndarray, ...]
    ends: tuple[np.ndarray, ...]
    steps: BandSteps


def shannon(bandwidth_hz: np.ndarray) -> RateFn:
    """``B log2(1 + a/B)`` per query at the queries' bandwidths ``(m,)`` (0 Hz: rate 0)."""
    bw = np.asarray(bandwidth_hz, dtype=float)

    def rate(values: np.ndarray, which: np.ndarray) -> np.ndarray:
        b = bw[which][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = b * np.log2(1.0 + values / b)
        return np.where(b > 0, r, 0.0)

    return rate


def split_hz(uplink: SharedUplink, shares_hz: np.ndarray, remaining_bits: np.ndarray,
             snr_coef_hz: np.ndarray) -> np.ndarray:
    """Re-split ``B`` among the active uploaders ``(m,)`` by the uplink's rule.

    Args:
        uplink: the band and the rule.
        shares_hz: the uploaders' planned shares.
        remaining_bits: the bits each has left (``minmax``).
        snr_coef_hz: each one's ``a_k`` at the event (``minmax``).

    Returns:
        ``(m,)`` bandwidths in Hz summing to ``B`` (up to rounding).
    """
    B = uplink.total_bandwidth_hz
    m = shares_hz.size
    if uplink.rule == "minmax":
        heard = np.flatnonzero(snr_coef_hz > 0)
        if heard.size:
            latency, beta = minmax_latency_s(np.zeros((1, heard.size)), remaining_bits[heard],
                                             ShannonRate(snr_coef_hz[heard]),
                                             np.arange(heard.size)[None, :], B)
            if np.isfinite(latency[0]) and beta[0].sum() > 0:
                out = np.zeros(m)
                out[heard] = B * (beta[0] / beta[0].sum())
                return out
    total = float(shares_hz.sum())
    if total > 0:
        return B * (shares_hz / total)
    return np.full(m, B / m)


def shared_stage(uplink: SharedUplink, signals: PiecewiseSignals, devices: np.ndarray,
                 shares_hz: np.ndarray, kinds: Sequence[str], amounts: Sequence[np.ndarray],
                 start_s: np.ndarray, fail_s: np.ndarray, phase_end: PhaseEnd) -> StageTimes:
    """Realise one stage whose ``up`` phases share the band (the event loop of the module doc).

    Args:
        uplink: the band and the re-split rule.
        signals: the channel's SNR coefficients ``a_k(t)`` (one row per device).
        devices: ``(P,)`` device of every participant.
        shares_hz: ``(P,)`` the plan's bandwidth shares.
        kinds: the stage's phase kinds, in order.
        amounts: ``(P,)`` amount of each phase (bits for ``up``).
        start_s: ``(P,)`` when each participant starts the stage.
        fail_s: ``(P,)`` when each is lost (``inf``: never); a loss hands its share on.
        phase_end: the exact end of a non-``up`` phase.

    Returns:
        Every phase's start and end, and the bandwidth steps.
    """
    return _Loop(uplink, signals, devices, shares_hz, kinds, amounts, fail_s,
                 phase_end).run(np.asarray(start_s, dtype=float))


class _Loop:
    """The state of one shared stage while its events are played (see :func:`shared_stage`)."""

    def __init__(self, uplink: SharedUplink, signals: PiecewiseSignals, devices: np.ndarray,
                 shares_hz: np.ndarray, kinds: Sequence[str], amounts: Sequence[np.ndarray],
                 fail_s: np.ndarray, phase_end: PhaseEnd) -> None:
        self.uplink, self.signals, self.devices = uplink, signals, devices
        self.shares, self.kinds, self.fail, self.phase_end = shares_hz, kinds, fail_s, phase_end
        self.kind_of = np.array(list(kinds), dtype=object)
        self.amounts = np.array([np.asarray(a, dtype=float) for a in amounts]).reshape(
            len(kinds), devices.size)
        P, n = devices.size, len(kinds)
        self.starts = np.full((n, P), np.inf)
        self.ends = np.full((n, P), np.inf)
        self.pos = np.zeros(P, dtype=np.intp)  # the phase each participant is in (n: done)
        self.wake = np.full(P, np.inf)  # when a participant's non-up phase ends
        self.up = np.zeros(P, dtype=bool)  # uploading now
        self.left = np.zeros(P)  # bits left of the current upload
        self.bw = np.zeros(P)  # current bandwidth
        self.lost = np.zeros(P, dtype=bool)
        self.steps: list[tuple[np.ndarray, float, np.ndarray]] = []

    def run(self, start: np.ndarray) -> StageTimes:
        P, n = self.devices.size, len(self.kinds)
        now = float(start.min()) if P else 0.0
        waiting = np.ones(P, dtype=bool)  # not started yet: begins its first phase at start
        while True:
            going = (self.pos < n) & ~self.lost
            if not going.any():
                break
            upl = np.flatnonzero(self.up & going)
            tent = np.full(P, np.inf)
            rate = shannon(self.bw[upl])
            if upl.size:
                tent[upl] = self.signals.integrate_until(self.devices[upl], np.full(upl.size, now),
                                                         self.left[upl], rate)
            wake = np.where(going & ~self.up, np.where(waiting, start, self.wake), np.inf)
            fail = np.where(going, self.fail, np.inf)
            t_next = min(float(tent.min()), float(wake.min()), float(fail.min()))
            if not np.isfinite(t_next):
                break  # the rest never ends: those phases keep their inf ends
            if upl.size and t_next > now:
                self.left[upl] -= self.signals.integrate_between(
                    self.devices[upl], np.full(upl.size, now), np.full(upl.size, t_next), rate)
            now = t_next
            done_up = upl[tent[upl] <= now]
            self.ends[self.pos[done_up], done_up] = now
            self.up[done_up] = False
            self.pos[done_up] += 1
            due = wake <= now  # (inf for uploaders and the participants done)
            began = np.flatnonzero(waiting & due)
            ended = np.flatnonzero(~waiting & due)
            waiting[began] = False
            self.ends[self.pos[ended], ended] = now
            self.pos[ended] += 1
            self._enter(np.concatenate([done_up, began, ended]), now)
            cut = np.flatnonzero((self.pos < n) & ~self.lost & (self.fail <= now))
            if cut.size:  # lost mid-phase: nothing more of it, its share handed on
                self.lost[cut] = True
                self.up[cut] = False
                self.ends[self.pos[cut], cut] = np.inf
            self._resplit(now)
        steps = BandSteps.concat([BandSteps(p, np.full(p.size, t), b)
                                  for p, t, b in self.steps])
        return StageTimes(tuple(self.starts), tuple(self.ends), steps)

    def _enter(self, who: np.ndarray, now: float) -> None:
        """Participants ``who`` begin their current phase at ``now`` (empty phases pass)."""
        n = len(self.kinds)
        who = who[self.pos[who] < n]
        while who.size:
            pos = self.pos[who]
            self.starts[pos, who] = now
            amount = self.amounts[pos, who]
            empty = amount <= 0
            self.ends[pos[empty], who[empty]] = now
            self.pos[who[empty]] += 1
            busy = who[~empty]
            kinds = self.kind_of[self.pos[busy]]
            upload = busy[kinds == "up"]
            self.up[upload] = True
            self.left[upload] = self.amounts[self.pos[upload], upload]
            for kind in sorted(set(kinds.tolist()) - {"up"}):
                go = busy[kinds == kind]
                self.wake[go] = self.phase_end(kind, go, np.full(go.size, now),
                                               self.amounts[self.pos[go], go])
            nxt = who[empty]
            who = nxt[self.pos[nxt] < n]

    def _resplit(self, now: float) -> None:
        """Re-split the band among the uploaders and record whose bandwidth changed."""
        new = np.zeros_like(self.bw)
        upl = np.flatnonzero(self.up)
        if upl.size:
            a = self.signals.at(now)[self.devices[upl]] if self.uplink.rule == "minmax" else None
            new[upl] = split_hz(self.uplink, self.shares[upl], self.left[upl],
                                np.zeros(upl.size) if a is None else a)
        changed = np.flatnonzero(new != self.bw)
        if changed.size:
            self.steps.append((changed, now, new[changed]))
        self.bw = new
