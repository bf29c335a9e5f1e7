"""The environment's observation and action spaces, and a round snapshot as an observation.

Observation (a :class:`gymnasium.spaces.Dict`; every ``Box`` is float64, units in the keys):

- ``compute_s`` ``(K, N)``: planned compute seconds ``ĉ_{k,n}`` at the round start; a device
  that cannot compute (unavailable, zero speed) reads :data:`COMPUTE_CAP_S`, and so does any
  time above it; ``compute_finite`` ``(K, N)`` (MultiBinary) says which entries are real.
- ``memory_bytes`` ``(N,)``: peak memory ``m_n`` of training block ``n`` (row ``n - 1``).
- ``memory_budget_bytes`` ``(K,)``: memory budgets ``M_k``.
- ``upload_bits`` ``(N,)``: gradient bits ``D_n``.
- ``log10_snr_coef_hz`` ``(K,)``: ``log10(p_k g_k(t0) / N0)`` (Hz), clipped to
  ``[LOG10_SNR_FLOOR, LOG10_SNR_CEIL]``; a device with zero gain reads the floor.
- ``available`` ``(K,)`` (MultiBinary): whether the device may take a block this round.
- ``action_mask`` ``(N, K)`` (MultiBinary): :meth:`DeftEnv.action_masks
  <desim.gym.env.DeftEnv.action_masks>`.
- ``round`` (Discrete ``rounds + 1``): the round about to be played (``rounds`` once over).
- ``time_s`` ``()``: the round's start on the event clock.

Action (a ``Dict``): ``assignment`` (MultiDiscrete, ``N`` entries in ``[0, K)``: the device of
block ``n`` at index ``n - 1``) and ``bandwidth`` (``Box(0, 1, (K,))``: shares of ``B``,
normalised over the blocks' devices; all zero: the equal split). :mod:`desim.gym.actions` has
the mask and the repair rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from desim.allocators.base import RoundContext
from desim.gym.actions import action_mask

#: what ``compute_s`` reads for a device that cannot compute (and the cap on any other time)
COMPUTE_CAP_S = 1e9
#: bounds of ``log10_snr_coef_hz`` (zero gain reads the floor)
LOG10_SNR_FLOOR = -30.0
LOG10_SNR_CEIL = 30.0


def observation_space(num_devices: int, num_blocks: int, rounds: int) -> spaces.Dict:
    """The observation space of a run with ``K`` devices, ``N`` blocks and ``rounds`` rounds."""
    K, N, f64 = num_devices, num_blocks, np.float64
    return spaces.Dict({
        "compute_s": spaces.Box(0.0, COMPUTE_CAP_S, (K, N), f64),
        "compute_finite": spaces.MultiBinary((K, N)),
        "memory_bytes": spaces.Box(0.0, np.inf, (N,), f64),
        "memory_budget_bytes": spaces.Box(0.0, np.inf, (K,), f64),
        "upload_bits": spaces.Box(0.0, np.inf, (N,), f64),
        "log10_snr_coef_hz": spaces.Box(LOG10_SNR_FLOOR, LOG10_SNR_CEIL, (K,), f64),
        "available": spaces.MultiBinary(K),
        "action_mask": spaces.MultiBinary((N, K)),
        "round": spaces.Discrete(rounds + 1),
        "time_s": spaces.Box(0.0, np.inf, (), f64),
    })


def action_space(num_devices: int, num_blocks: int) -> spaces.Dict:
    """The action space: a device per block and a bandwidth share per device."""
    return spaces.Dict({
        "assignment": spaces.MultiDiscrete(np.full(num_blocks, num_devices, dtype=np.int64)),
        "bandwidth": spaces.Box(0.0, 1.0, (num_devices,), np.float64),
    })


def observation_of(ctx: RoundContext, round_index: int | None = None) -> dict[str, Any]:
    """The observation of a snapshot (fresh arrays; ``round_index`` overrides its round)."""
    finite = np.isfinite(ctx.compute_s)
    with np.errstate(divide="ignore"):
        log_snr = np.log10(np.maximum(ctx.snr_coef_hz, 0.0))
    return {
        "compute_s": np.where(finite, np.minimum(ctx.compute_s, COMPUTE_CAP_S), COMPUTE_CAP_S),
        "compute_finite": finite.astype(np.int8),
        "memory_bytes": np.array(ctx.memory_bytes, dtype=np.float64),
        "memory_budget_bytes": np.array(ctx.memory_budget_bytes, dtype=np.float64),
        "upload_bits": np.array(ctx.upload_bits, dtype=np.float64),
        "log10_snr_coef_hz": np.clip(log_snr, LOG10_SNR_FLOOR, LOG10_SNR_CEIL),
        "available": np.asarray(ctx.available, dtype=np.int8).copy(),
        "action_mask": action_mask(ctx).astype(np.int8),
        "round": int(ctx.round_index if round_index is None else round_index),
        "time_s": np.array(ctx.time_s, dtype=np.float64),
    }
