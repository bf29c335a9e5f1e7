"""Device compute timelines: speed factor ``ρ_k(t)`` and availability ``a_k(t)`` over time.

A device with profile time ``w`` and speed factor ``σ_k`` finishes its work when
``∫ σ_k ρ_k(t) dt = w`` (DESIGN §2). Both ``ρ`` and availability are piecewise-constant
(:mod:`desim.world.piecewise`), so completion times are exact, and a period of zero speed stalls
work.

Timelines come from a replayed compute trace (``device, time_s, speed_factor, available``; the
trace's ``speed_factor`` is ``ρ_k(t)``, multiplying the device's static ``σ_k``) or from a seeded
generator: a background-load process (load levels ``~ Beta`` with a given mean, each held for an
exponential time, ``ρ = 1 - load``) and on/off availability as an alternating renewal process with
exponential up and down times (like FedScale's device behaviour traces), starting in its
stationary state. :func:`generate_compute` samples a whole horizon from a passed-in generator
(``desim traces generate compute`` writes it); a scenario's ``generated`` kind builds the same
processes window by window from counter-based draws (:mod:`desim.world.renewal`,
:func:`desim.world.generated.generated_timeline`).

Assumption: a device that goes unavailable mid-round pauses its work (its effective speed is
``ρ · available``) and resumes when it returns; allocators only give blocks to devices available
at the round start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from desim.errors import TraceError
from desim.world.piecewise import EndPolicy, PiecewiseSignals
from desim.world.replay import TraceMapping, map_devices, replay_signals
from desim.world.signals import Signals
from desim.world.traces import Trace


class ComputeTimeline(Protocol):
    """Compute speed and availability of ``K`` devices over time."""

    def speed(self, t_s: float) -> np.ndarray:
        """Speed factor ``ρ_k(t)`` of every device, shape ``(K,)``."""
        ...

    def available(self, t_s: float) -> np.ndarray:
        """Availability of every device at ``t_s``, boolean ``(K,)``."""
        ...

    def work_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, work_s: np.ndarray
    ) -> np.ndarray:
        """Exact times at which ``work_s`` (seconds at ``ρ = 1``) started at ``start_s`` ends."""
        ...


@dataclass(frozen=True, eq=False)
class SignalTimeline:
    """A compute timeline from piecewise-constant speed and availability signals.

    Attributes:
        speed_signals: the effective speed ``ρ_k(t) · available`` (work pauses offline).
        available_signals: availability, 1 or 0.
    """

    speed_signals: Signals
    available_signals: Signals

    @classmethod
    def constant(cls, num_devices: int) -> SignalTimeline:
        """Speed factor 1 and always available, for ``num_devices`` devices."""
        ones = np.ones(num_devices)
        return cls(PiecewiseSignals.constant(ones), PiecewiseSignals.constant(ones))

    def speed(self, t_s: float) -> np.ndarray:
        """Speed factors at ``t_s``, shape ``(K,)``."""
        return self.speed_signals.at(t_s)

    def available(self, t_s: float) -> np.ndarray:
        """Availability at ``t_s``, boolean ``(K,)``."""
        return self.available_signals.at(t_s) > 0

    def work_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, work_s: np.ndarray
    ) -> np.ndarray:
        """Integrate the speed factor from each start until the work is done."""
        return self.speed_signals.integrate_until(devices, start_s, work_s)


@dataclass(frozen=True)
class ComputeTimelineParams:
    """Parameters of the generated compute timeline (see :func:`generate_compute`).

    Attributes:
        duration_s: length of the realisation, which then loops (``None``: generated on
            demand, it never repeats; :func:`generate_compute` needs a length).
        load_mean: mean background load in ``[0, 1)``; ``0`` disables the load process.
        load_concentration: ``a + b`` of the Beta load distribution (larger: less spread).
        load_hold_s: mean time a load level is held (exponential).
        min_speed: floor of the speed factor ``ρ = max(1 - load, min_speed)``.
        mean_up_s: mean available period (exponential).
        mean_down_s: mean unavailable period (exponential); ``0``: always available.
    """

    duration_s: float | None = 3600.0
    load_mean: float = 0.3
    load_concentration: float = 4.0
    load_hold_s: float = 60.0
    min_speed: float = 0.05
    mean_up_s: float = 1800.0
    mean_down_s: float = 120.0


def _renewal_times(mean_s: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Event times of a Poisson-like renewal process on ``[0, duration)``, starting with 0."""
    times = [0.0]
    t = 0.0
    while True:
        t += float(rng.exponential(mean_s))
        if t >= duration_s:
            return np.array(times)
        times.append(t)


def generate_compute(
    params: ComputeTimelineParams, num_devices: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-device background load and on/off availability over ``[0, duration_s)``.

    Args:
        params: process parameters.
        num_devices: number of devices ``K``.
        rng: random generator (the run's ``compute`` stream or a CLI seed).

    Returns:
        For each device, ``(times_s, speed_factor, available)`` on its own breakpoints.
    """
    p = params
    if p.duration_s is None:
        raise ValueError("a whole-horizon compute timeline needs duration_s")
    duration = p.duration_s
    out = []
    for _ in range(num_devices):
        if p.load_mean > 0:
            lt = _renewal_times(p.load_hold_s, duration, rng)
            a = p.load_mean * p.load_concentration
            b = (1.0 - p.load_mean) * p.load_concentration
            speed = np.maximum(1.0 - rng.beta(a, b, lt.size), p.min_speed)
        else:
            lt, speed = np.zeros(1), np.ones(1)
        if p.mean_down_s > 0:
            up = rng.uniform() < p.mean_up_s / (p.mean_up_s + p.mean_down_s)
            at, state, t = [0.0], [up], 0.0
            while True:
                t += float(rng.exponential(p.mean_up_s if state[-1] else p.mean_down_s))
                if t >= duration:
                    break
                at.append(t)
                state.append(not state[-1])
            avail_t, avail = np.array(at), np.array(state, dtype=float)
        else:
            avail_t, avail = np.zeros(1), np.ones(1)
        grid = np.union1d(lt, avail_t)
        sp = speed[np.searchsorted(lt, grid, side="right") - 1]
        av = avail[np.searchsorted(avail_t, grid, side="right") - 1]
        out.append((grid, np.round(sp, 6), av))
    return out


def trace_timeline(
    trace: Trace,
    names: tuple[str, ...],
    rng: np.random.Generator | None,
    mapping: TraceMapping = "cyclic",
    end_policy: EndPolicy | None = None,
) -> SignalTimeline:
    """Replay a compute trace for the named scenario devices.

    Args:
        trace: a validated compute trace.
        names: scenario device names ``(K,)``.
        rng: the run's ``compute`` stream (used by the ``random-offset`` mapping only).
        mapping: trace device of each scenario device (:func:`desim.world.replay.map_devices`).
        end_policy: after the trace ends, ``loop`` or ``hold``; ``None``: the file's own.

    Returns:
        A timeline whose speed is ``speed_factor · available`` (work pauses while unavailable).
    """
    if trace.kind != "compute":
        raise TraceError(f"{trace.source}: a channel trace cannot be a compute timeline")
    rows, offsets = map_devices(trace, names, mapping, rng, "compute")
    avail = trace.columns["available"]
    speed = trace.columns["speed_factor"] * avail
    return SignalTimeline(
        replay_signals(trace, speed, rows, offsets, end_policy),
        replay_signals(trace, avail, rows, offsets, end_policy),
    )
