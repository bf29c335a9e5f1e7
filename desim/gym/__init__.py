"""Gymnasium environment over the real engine: an agent places DEFT blocks round by round.

``DeftEnv(scenario)`` (:mod:`desim.gym.env`) plays one round of a desim scenario per step, on
the same event clock and with the same faults as ``desim run``; the action is a block→device
assignment plus bandwidth shares (:mod:`desim.gym.spaces`), masked and repaired by the rules of
:mod:`desim.gym.actions`. Importing :mod:`desim.gym` registers it as ``"desim/Deft-v0"``
(:data:`ENV_ID`). Needs the ``gym`` extra (``pip install "desim[gym]"``); importing :mod:`desim`
alone never imports gymnasium.
"""

from __future__ import annotations

try:
    import gymnasium
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        'desim.gym needs gymnasium: pip install "desim[gym]" (or pip install ".[gym]")'
    ) from exc

from desim.gym.actions import Decision, action_mask, action_of, decide
from desim.gym.env import REWARDS, DeftEnv
from desim.gym.spaces import COMPUTE_CAP_S, LOG10_SNR_CEIL, LOG10_SNR_FLOOR

ENV_ID = "desim/Deft-v0"
"""The id of :class:`DeftEnv` for ``gymnasium.make(ENV_ID, scenario=..., overrides=...)``."""

if ENV_ID not in gymnasium.registry:  # importing twice (a reload) must not warn
    # no max_episode_steps: an episode is the scenario's run.rounds and terminates by itself
    gymnasium.register(id=ENV_ID, entry_point="desim.gym.env:DeftEnv")

__all__ = ["COMPUTE_CAP_S", "ENV_ID", "LOG10_SNR_CEIL", "LOG10_SNR_FLOOR", "REWARDS", "Decision",
           "DeftEnv", "action_mask", "action_of", "decide"]
