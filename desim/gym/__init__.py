"""Gymnasium environment over the real engine: an agent places DEFT blocks round by round.

``DeftEnv(scenario)`` (:mod:`desim.gym.env`) plays one round of a desim scenario per step, on
the same event clock and with the same faults as ``desim run``; the action is a block→device
assignment plus bandwidth shares (:mod:`desim.gym.spaces`), masked and repaired by the rules of
:mod:`desim.gym.actions`. Needs the ``gym`` extra (``pip install "desim[gym]"``); importing
:mod:`desim` alone never imports gymnasium.
"""

from __future__ import annotations

try:
    import gymnasium  # noqa: F401
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        'desim.gym needs gymnasium: pip install "desim[gym]" (or pip install ".[gym]")'
    ) from exc

from desim.gym.actions import Decision, action_mask, action_of, decide
from desim.gym.env import REWARDS, DeftEnv
from desim.gym.spaces import COMPUTE_CAP_S, LOG10_SNR_CEIL, LOG10_SNR_FLOOR

__all__ = ["COMPUTE_CAP_S", "LOG10_SNR_CEIL", "LOG10_SNR_FLOOR", "REWARDS", "Decision",
           "DeftEnv", "action_mask", "action_of", "decide"]
