"""Fault model: when a device's in-flight work is lost (pure functions of time and draws).

A task (one device training one block from ``start`` to its upload end) fails at the earliest of:

- the device's availability timeline dropping to 0 (``ComputeTimeline.available``);
- a scripted outage (``faults.events``) beginning;
- an injected dropout: each round every device draws ``u ~ U(0,1)`` and ``v ~ U(0,1)`` from the
  ``faults`` stream; if ``u < dropout_rate`` it drops at ``start + v·(end − start)`` of its task;
- an upload timeout: ``upload_start + upload_timeout_s`` if the upload is still running.

The draws are ``2K`` numbers per round whatever the allocator does, so the fault realisation is
paired across allocators. A device that dropped out is offline for the rest of its round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desim.errors import ScenarioError
from desim.scenario.model import FaultsSpec
from desim.world.compute import ComputeTimeline

DROP_KINDS = ("offline", "outage", "dropout", "upload-timeout")


@dataclass(frozen=True)
class RoundDraws:
    """One round's fault draws for every device: who drops and where in its task."""

    drops: np.ndarray  # (K,) bool
    fraction: np.ndarray  # (K,) in [0, 1)


@dataclass(frozen=True, eq=False)
class FaultModel:
    """Injected and scripted faults of a run.

    Attributes:
        spec: the scenario's ``faults`` section.
        device_index: scenario device name → index.
        rng: the run's ``faults`` stream.
    """

    spec: FaultsSpec
    device_index: dict[str, int]
    rng: np.random.Generator

    def __post_init__(self) -> None:
        for i, ev in enumerate(self.spec.events):
            if ev.device not in self.device_index:
                known = ", ".join(list(self.device_index)[:8])
                raise ScenarioError(
                    f"faults.events.{i}.device: unknown device {ev.device!r}; known: {known}, ..."
                )

    @property
    def active(self) -> bool:
        """Whether any fault source is configured."""
        s = self.spec
        return s.dropout_rate > 0 or bool(s.events) or s.upload_timeout_s is not None

    def draw(self, num_devices: int) -> RoundDraws:
        """Draw this round's faults (always ``2K`` numbers, so the stream stays paired)."""
        u = self.rng.random(num_devices)
        v = self.rng.random(num_devices)
        return RoundDraws(u < self.spec.dropout_rate, v)

    def offline_at(self, t_s: float, num_devices: int) -> np.ndarray:
        """``(K,)`` devices inside a scripted outage at ``t_s``."""
        off = np.zeros(num_devices, dtype=bool)
        for ev in self.spec.events:
            if ev.time_s <= t_s < ev.time_s + ev.duration_s:
                off[self.device_index[ev.device]] = True
        return off

    def failure(
        self,
        compute: ComputeTimeline,
        devices: np.ndarray,
        start_s: np.ndarray,
        upload_start_s: np.ndarray,
        end_s: np.ndarray,
        draws: RoundDraws,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Earliest failure time of each task within ``[start, end)`` and its kind.

        Args:
            compute: the availability timeline.
            devices: ``(m,)`` device of each task.
            start_s: ``(m,)`` task starts.
            upload_start_s: ``(m,)`` upload starts (compute ends).
            end_s: ``(m,)`` upload ends the task would reach without faults.
            draws: this round's draws.

        Returns:
            ``(m,)`` failure times (``inf`` where the task completes) and ``(m,)`` kinds.
        """
        m = devices.size
        times = np.full((4, m), np.inf)
        times[0] = offline_time(compute, devices, start_s)
        for ev in self.spec.events:
            k = self.device_index[ev.device]
            hit = (devices == k) & (ev.time_s >= start_s) & (ev.time_s < times[1])
            times[1] = np.where(hit, ev.time_s, times[1])
        drop = draws.drops[devices]
        times[2] = np.where(drop, start_s + draws.fraction[devices] * (end_s - start_s), np.inf)
        if self.spec.upload_timeout_s is not None:
            times[3] = upload_start_s + self.spec.upload_timeout_s
        times = np.where(times < end_s[None, :], times, np.inf)
        which = np.argmin(times, axis=0)
        fail = times[which, np.arange(m)]
        kinds = np.array(DROP_KINDS, dtype=object)[which]
        return fail, np.where(np.isfinite(fail), kinds, "")


def offline_time(compute: ComputeTimeline, devices: np.ndarray, start_s: np.ndarray) -> np.ndarray:
    """First time ``≥ start`` at which each device's availability is 0 (``inf`` if never).

    Uses the one exact integration mechanism: integrating the indicator of unavailability from
    the start, the first ``ε`` of it accumulates exactly ``ε`` seconds after the drop.
    """
    out = np.full(devices.size, np.inf)
    signals = getattr(compute, "available_signals", None)
    if signals is None:
        return out
    can_drop = np.flatnonzero(signals.row_min[devices] <= 0)  # rows never at 0 never drop
    if can_drop.size:
        eps = 1e-9
        end = signals.integrate_until(
            devices[can_drop],
            start_s[can_drop],
            np.full(can_drop.size, eps),
            lambda v, _w: (v <= 0).astype(float),
        )
        out[can_drop] = np.where(np.isfinite(end), end - eps, np.inf)
    return out
