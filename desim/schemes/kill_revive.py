"""Kill-and-Revive (DLoRA): keep only the LoRA modules whose sensitivity score stays high."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class KillReviveState:
    """Per-device Kill-and-Revive state: ``(K, M)`` active masks and below-threshold streaks."""

    active: np.ndarray
    below: np.ndarray
    scores_seen: int = 0


@dataclass(frozen=True)
class KillRevive:
    """Kill-and-Revive (DLoRA): keep only the modules whose score stays high.

    After each round every active module's sensitivity score is compared with ``threshold``;
    a module whose score stayed below it for ``patience`` consecutive rounds is deactivated
    (killed). Every ``revive_period`` rounds (rounds ``p, 2p, ...``) all modules are revived
    and their streaks reset. A device never keeps fewer than ``min_active`` modules: when
    killing would go below it, the highest-scoring modules among those due are kept.

    Attributes:
        threshold: score below which a module counts as insensitive.
        patience: consecutive low rounds before a kill.
        revive_period: rounds between revivals.
        min_active: modules every device keeps active (at least 1).
    """

    threshold: float = 1.0
    patience: int = 2
    revive_period: int = 10
    min_active: int = 1

    def new_state(self, num_devices: int, num_modules: int) -> KillReviveState:
        """All modules active, no streaks."""
        return KillReviveState(
            np.ones((num_devices, num_modules), dtype=bool),
            np.zeros((num_devices, num_modules), dtype=np.intp),
        )

    def active_for(self, state: KillReviveState, round_index: int) -> np.ndarray:
        """``(K, M)`` active modules of round ``round_index`` (reviving on schedule)."""
        if round_index > 0 and round_index % self.revive_period == 0:
            state.active[:] = True
            state.below[:] = 0
        return state.active

    def observe(self, state: KillReviveState, devices: np.ndarray, scores: np.ndarray) -> None:
        """Update streaks from ``(P, M)`` scores of ``devices`` and kill the modules due."""
        active = state.active[devices]
        low = scores < self.threshold
        below = np.where(active, np.where(low, state.below[devices] + 1, 0), state.below[devices])
        kill = active & (below >= self.patience)
        keep_n = min(self.min_active, active.shape[1])
        for i in range(devices.size):
            left = int((active[i] & ~kill[i]).sum())
            if left < keep_n:  # spare the best-scoring modules among those due
                due = np.flatnonzero(kill[i])
                spare = due[np.argsort(-scores[i, due], kind="stable")[: keep_n - left]]
                kill[i, spare] = False
        state.active[devices] = active & ~kill
        state.below[devices] = below
