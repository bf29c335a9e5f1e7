"""A Gymnasium environment over the real engine: one DEFT round per step.

:class:`DeftEnv` builds the scenario's :class:`~desim.engine.simulation.Simulation` on every
``reset`` (``run.seed`` = the reset's seed) and plays one round per ``step`` through the
engine's own :class:`~desim.engine.driver.RoundDriver`, with the action as the round's plan:
faults, deadlines, re-planning of lost blocks, block fading and the shared uplink behave as in
``desim run``. Spaces: :mod:`desim.gym.spaces`; the mask and the repair rule:
:mod:`desim.gym.actions`.

Lost blocks are re-planned by the scenario's allocator (``allocator.name``) from the run's
``allocator`` stream (:attr:`DeftEnv.rng`), as ``desim run`` does: the agent acts once per round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from desim.allocators.base import Allocation, RoundContext, check_allocation, plan_of
from desim.engine.assembly import build_simulation
from desim.engine.driver import RoundDriver
from desim.engine.records import RoundRecord
from desim.engine.simulation import Simulation
from desim.errors import InfeasibleError, ScenarioError
from desim.gym.actions import Decision, action_mask, action_of, decide
from desim.gym.spaces import action_space, observation_of, observation_space
from desim.io.scenario import load_scenario
from desim.plan import RoundPlan
from desim.results import RunResult
from desim.scenario.model import Scenario

#: reward name -> the reward of a round's record (``latency`` is the default)
REWARDS: dict[str, Callable[[RoundRecord], float]] = {
    # minus the round's realised latency (a skipped round: minus the wait before the retry)
    "latency": lambda rec: -float(rec.latency_s),
    # minus the planned latency (a skipped round: minus the wait, as for "latency")
    "planned": lambda rec: -float(rec.latency_s if rec.status != "ok"
                                  else rec.planned_latency_s),
    # rounds per simulated second (0 for a skipped round)
    "throughput": lambda rec: 1.0 / float(rec.latency_s) if rec.status == "ok" else 0.0,
}

Action = dict[str, Any] | Allocation


class DeftEnv(gym.Env[dict[str, Any], Action]):
    """DEFT rounds of a desim scenario as a Gymnasium environment.

    An episode is the scenario's ``run.rounds`` rounds; it terminates after the last.

    Args:
        scenario: a :class:`~desim.scenario.model.Scenario`, a scenario TOML path, or ``None``
            for the built-in default scenario.
        overrides: ``section.key=value`` strings applied to a path or the default (as
            ``desim run --set``).
        reward: ``"latency"`` (minus the realised round latency, default), ``"planned"``
            (minus the planned latency) or ``"throughput"`` (rounds per simulated second), or
            a function of the round's :class:`~desim.engine.records.RoundRecord`.

    Raises:
        ScenarioError: the scenario's scheme is not ``deft`` (the action places blocks; other
            schemes plan their rounds themselves), fewer devices than blocks, or an unknown
            reward name.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, scenario: Scenario | str | Path | None = None,
                 overrides: Iterable[str] = (),
                 reward: str | Callable[[RoundRecord], float] = "latency") -> None:
        if isinstance(scenario, Scenario):
            if tuple(overrides):
                raise ValueError("overrides apply to a scenario path or the default; "
                                 "a Scenario object is already resolved")
            self.scenario = scenario
        else:
            self.scenario = load_scenario(scenario, list(overrides))
        if self.scenario.scheme.name != "deft":
            raise ScenarioError(
                f"scheme.name = {self.scenario.scheme.name!r}: DeftEnv's action places one "
                "block per device (scheme \"deft\"); scheme "
                f"{self.scenario.scheme.name!r} plans its rounds itself and has no action here"
            )
        if isinstance(reward, str) and reward not in REWARDS:
            raise ScenarioError(f"reward {reward!r}: unknown (known: {', '.join(REWARDS)})")
        self._reward = REWARDS[reward] if isinstance(reward, str) else reward
        sim = build_simulation(self.scenario)
        K, N = len(sim.devices), sim.workload.num_blocks
        if K < N:
            raise ScenarioError(f"devices: {K} devices for {N} blocks; DeftEnv's action places "
                                "every block on its own device")
        self.observation_space = observation_space(K, N, sim.rounds)
        self.action_space = action_space(K, N)
        self._sim: Simulation = sim
        self._driver: RoundDriver | None = None
        self._last: RoundContext | None = None

    # --- the Gymnasium API ----------------------------------------------------------------

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Build a fresh run and return the first round's observation.

        Args:
            seed: the run's ``run.seed`` (every stream: population, channel, compute, faults,
                allocator). ``None``: the scenario's own seed on the first reset, then seeds
                drawn from :attr:`np_random`.
            options: unused.
        """
        first = self._driver is None
        super().reset(seed=seed)
        if seed is None:
            seed = self.scenario.run.seed if first else int(self.np_random.integers(2**31))
        run = self.scenario.run.model_copy(update={"seed": int(seed)})
        self._sim = build_simulation(self.scenario.model_copy(update={"run": run}))
        self._driver = RoundDriver(self._sim)
        ctx = self._driver.snapshot()
        self._last = ctx
        return observation_of(ctx), {"round": 0, "seed": int(seed)}

    def step(self, action: Action) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Play one round with ``action`` (repaired if not valid) on the event clock.

        ``action`` is a dict of the action space, or an
        :class:`~desim.allocators.base.Allocation` (an allocator's own decision, run bit for
        bit when valid). ``info`` has ``planned_latency_s``, ``realised_latency_s``,
        ``dropouts``, ``reassigned_blocks``, ``status`` (``ok`` or ``skipped``), ``reason``,
        ``check`` (``""`` or why the action as given fails the engine's allocation check),
        ``repaired`` and ``repairs`` (one line per change).

        Raises:
            RuntimeError: before ``reset`` or after the episode ended.
            InfeasibleError: an infeasible round under ``run.on_infeasible = "error"``.
        """
        driver = self._running()
        ctx = driver.snapshot()
        if isinstance(action, Allocation):
            if action.mode != "deft" or action.plan is not None:
                raise ValueError(f"an Allocation action must be a plain DEFT allocation, not "
                                 f"mode {action.mode!r}")
            decision = decide(ctx, action.block_device, bandwidth_hz=action.bandwidth_hz,
                              source=action)
        else:
            decision = decide(ctx, action["assignment"], shares=action["bandwidth"])
        rec = driver.step(partial(_decided_plan, decision))
        terminated = driver.done
        if terminated:  # no next round: the last snapshot's arrays, the round count
            assert self._last is not None
            obs = observation_of(self._last, driver.round_index)
        else:
            obs = observation_of(self._snapshot_next())
        info = {
            "round": int(rec.round), "status": rec.status, "reason": rec.reason,
            "planned_latency_s": float(rec.planned_latency_s),
            "realised_latency_s": float(rec.latency_s),
            "dropouts": int(rec.dropouts), "reassigned_blocks": int(rec.reassigned_blocks),
            "check": decision.check, "repaired": decision.repaired,
            "repairs": decision.repairs,
        }
        return obs, float(self._reward(rec)), terminated, False, info

    # --- beyond the Gymnasium API -----------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """``(N, K)`` bool: the devices each block may go to this round (not distinctness).

        A device is valid for block ``n`` when it is available, can compute, holds the
        block's memory and has a positive planned rate if the block sends bits. The mask
        cannot say that the devices must be distinct: an action that repeats a device is
        repaired (:mod:`desim.gym.actions`).
        """
        return action_mask(self.snapshot())

    def snapshot(self) -> RoundContext:
        """The round snapshot the next action is for (what allocators plan with)."""
        return self._running().snapshot()

    def action_of(self, allocation: Allocation) -> dict[str, np.ndarray]:
        """The action-space form of an allocation for this round (shares over ``B``)."""
        return action_of(self.snapshot(), allocation)

    @property
    def rng(self) -> np.random.Generator:
        """The run's ``allocator`` stream: an allocator called with it draws as in ``desim run``."""
        return self._running(allow_done=True).rng

    @property
    def result(self) -> RunResult:
        """The episode's records so far (``rounds_frame()`` is ``desim run``'s rounds table)."""
        return self._running(allow_done=True).result

    @property
    def simulation(self) -> Simulation:
        """The episode's simulation (rebuilt by every ``reset``)."""
        return self._sim

    def _running(self, allow_done: bool = False) -> RoundDriver:
        if self._driver is None:
            raise RuntimeError("DeftEnv: call reset() first")
        if self._driver.done and not allow_done:
            raise RuntimeError(f"DeftEnv: the episode's {self._sim.rounds} rounds are over; "
                               "call reset()")
        return self._driver

    def _snapshot_next(self) -> RoundContext:
        ctx = self._running().snapshot()
        self._last = ctx
        return ctx


def _decided_plan(decision: Decision, ctx: RoundContext, state: Any,
                  rng: np.random.Generator) -> RoundPlan:
    """The round's plan: the decided allocation, checked by the engine's own check."""
    if decision.allocation is None:
        raise InfeasibleError(decision.infeasible)
    check_allocation(ctx, decision.allocation)
    return plan_of(ctx, decision.allocation)
