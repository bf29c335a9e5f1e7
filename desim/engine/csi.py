"""What the planner knows of the channel: the round snapshot under ``allocator.csi``.

The paper plans each round from one snapshot of the channel (block fading). desim realises
the round under a channel that changes within it, so what the planner is told is a modelling
choice. Every mode hands the planner a rate model (:mod:`desim.world.rates`) and an SNR
coefficient ``snr_coef_hz`` for code that only ranks devices; allocators and schemes plan with
``ctx.rates`` whatever the mode:

- ``snapshot``: the SNR at the round's state time, the paper's assumption (the default).
- ``large-scale``: path loss and shadowing without the fast fading. A generated channel knows
  that component (:attr:`~desim.world.channel.SignalChannel.large_scale`); for a replayed
  trace it is estimated as the time-weighted mean of the linear SNR coefficient over the past
  ``csi_window_s`` (the mean of ``a|h|²`` is ``a`` for unit-power fading).
- ``ergodic``: the expected rate over the fast fading, ``r(B) = B·E[log2(1 + a|h|²/B)]``. A
  generated channel with a known fading law gives it in closed form (Rayleigh) or by
  quadrature (Rician); a replayed trace gives the empirical mean rate over the past window
  (:class:`~desim.world.rates.MixtureRate` of the past pieces, weighted by their durations).
- ``predicted``: a causal predictor, the exponentially weighted mean of ``ln a`` over the
  past window with time constant ``csi_window_s / 4`` (weights beyond the window would be
  under 2%), planned with as a Shannon rate.
- ``oracle``: the true future, a genie for bounds only: the mean rate over
  ``[t, t + csi_window_s]`` for rate-based planners, and the true world itself in
  ``ctx.future`` for ``oracle-exact``.

Windows are cut at ``t = 0``: with no past yet (the first round), the past modes see the
snapshot. Under block fading (``run.block_fading_s``) the channel holds within a round, and the
statistics are still taken over the unheld signal around the state time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from desim.allocators.base import RoundContext
from desim.errors import ScenarioError
from desim.world.piecewise import PiecewiseSignals

CSI_MODES = ("snapshot", "large-scale", "ergodic", "predicted", "oracle")
#: an SNR coefficient of 1 Hz is a rate of ~1.4 bit/s: the floor of ``ln a`` in ``predicted``
LOG_FLOOR_HZ = 1.0
#: the EWMA time constant of ``predicted`` as a fraction of ``csi_window_s``
EWMA_FRACTION = 0.25


@dataclass(frozen=True)
class Csi:
    """The planner's channel knowledge: the mode and its window (``allocator.csi*``)."""

    mode: str = "snapshot"
    window_s: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in CSI_MODES:
            raise ScenarioError(f"allocator.csi: {self.mode!r} is not one of {CSI_MODES}")

    @property
    def record(self) -> dict[str, Any]:
        """What ``run.json`` records (``csi``)."""
        return {"mode": self.mode, "window_s": self.window_s}


def planner_view(ctx: RoundContext, channel: Any, t_s: float, csi: Csi,
                 future: Any = None) -> RoundContext:
    """The snapshot ``ctx`` as the planner sees it under ``csi`` at state time ``t_s``.

    Args:
        ctx: the round snapshot (its ``snr_coef_hz`` is the channel at ``t_s``).
        channel: the run's true channel (a :class:`~desim.world.channel.SignalChannel`).
        t_s: the round's state time.
        csi: the mode and window.
        future: the true world from ``t_s`` on (``oracle``: handed to ``ctx.future``).
    """
    if csi.mode == "snapshot":
        return ctx
    from desim.world import rates

    signals: PiecewiseSignals = channel.signals
    if csi.mode == "oracle":
        model = _mixture(signals, t_s, t_s + csi.window_s, ctx.snr_coef_hz)
        return replace(ctx, csi=csi.mode, rate=model, snr_coef_hz=model.mean_coef_hz,
                       future=future)
    known = getattr(channel, "large_scale", None)
    if csi.mode == "large-scale":
        coef = known.at(t_s) if known is not None else _past_mean(signals, t_s, csi.window_s,
                                                                    ctx.snr_coef_hz)
        return replace(ctx, csi=csi.mode, snr_coef_hz=coef)
    if csi.mode == "predicted":
        coef = _past_ewma_log(signals, t_s, csi.window_s, ctx.snr_coef_hz)
        return replace(ctx, csi=csi.mode, snr_coef_hz=coef)
    # ergodic
    law = getattr(channel, "fading_k", None)
    if known is not None and law is not None:
        model = rates.ergodic_rate(known.at(t_s), law.at(t_s))
    else:
        model = _mixture(signals, max(t_s - csi.window_s, 0.0), t_s, ctx.snr_coef_hz)
    return replace(ctx, csi=csi.mode, rate=model, snr_coef_hz=model.mean_coef_hz)


def _pieces(signals: PiecewiseSignals, start: float, end: float
            ) -> tuple[np.ndarray, np.ndarray]:
    K = signals.num_rows
    return signals.segments_between(np.arange(K), np.full(K, start), np.full(K, end))


def _mixture(signals: PiecewiseSignals, start: float, end: float, now: np.ndarray) -> Any:
    """The mean Shannon rate over the pieces of ``[start, end)`` (``now`` if empty)."""
    from desim.world.rates import MixtureRate

    if end <= start:
        return MixtureRate(now[:, None], np.ones((now.size, 1)))
    dur, values = _pieces(signals, start, end)
    return MixtureRate(values, dur / dur.sum(axis=1, keepdims=True))


def _past_mean(signals: PiecewiseSignals, t_s: float, window_s: float,
               now: np.ndarray) -> np.ndarray:
    """Time-weighted mean of the coefficient over ``[t - window, t)`` (``now`` if empty)."""
    start = max(t_s - window_s, 0.0)
    if t_s <= start:
        return now
    dur, values = _pieces(signals, start, t_s)
    return np.sum(dur * values, axis=1) / dur.sum(axis=1)


def _past_ewma_log(signals: PiecewiseSignals, t_s: float, window_s: float,
                   now: np.ndarray) -> np.ndarray:
    """``exp`` of the exponentially weighted mean of ``ln a`` over the past window.

    A piece ``[lo, hi)`` weighs ``∫ e^{-(t-s)/τ} ds = τ (e^{-(t-hi)/τ} - e^{-(t-lo)/τ})``.
    """
    start = max(t_s - window_s, 0.0)
    if t_s <= start:
        return now
    dur, values = _pieces(signals, start, t_s)
    tau = EWMA_FRACTION * window_s
    lo = start + np.cumsum(dur, axis=1) - dur
    hi = lo + dur
    w = np.where(dur > 0, np.exp(-(t_s - hi) / tau) - np.exp(-(t_s - lo) / tau), 0.0)
    logs = np.log(np.maximum(values, LOG_FLOOR_HZ))
    return np.exp(np.sum(w * logs, axis=1) / w.sum(axis=1))
