"""Device compute timelines: speed factor ``ρ_k(t)`` and availability ``a_k(t)`` over time.

A device with profile time ``w`` and speed factor ``σ_k`` finishes its work when
``∫ σ_k ρ_k(t) dt = w`` (DESIGN §2). Both ``ρ`` and availability are piecewise-constant
(:mod:`desim.signal`), so completion times are exact, and a period of zero speed stalls work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from desim.signal import PiecewiseSignals


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
    """A compute timeline from piecewise-constant speed and availability signals."""

    speed_signals: PiecewiseSignals
    available_signals: PiecewiseSignals

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
