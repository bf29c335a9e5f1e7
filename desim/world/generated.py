"""The generated channels and compute timeline of a scenario, produced on demand in chunks.

Each is a :class:`~desim.world.chunked.PieceSource` read through
:class:`~desim.world.chunked.ChunkedSignals`: nothing is generated for a device or a time
until the run asks about it, and any window is the same wherever it is generated from. All
randomness comes from counter-based draws keyed by the run's stream
(:class:`~desim.world.draws.CounterDraws`), so a device's value at segment ``j`` is a pure
function of (seed, stream, device, ``j``):

- :func:`rayleigh_channel`: path loss times ``|h|² = -log u`` (Exp(1)) i.i.d. per coherence
  block, ``u`` the device's draw for block ``j``;
- :func:`mobility_channel`: the TR 38.901 channel of :class:`~desim.world.mobility.MobilityModel`;
- :func:`generated_timeline`: background load and on/off availability
  (:class:`~desim.world.renewal.MarkedPoisson`), one segment per window of the processes.

Storage: a channel's SNR coefficients are float64 (they span hundreds of dB: float32 would
overflow for a very low noise floor). The Rician K factor and the compute speed factor are
stored as float32 (0 or ``10^(K/10)``; ``max(1 - load, min_speed)`` in ``(0, 1]``): the signal
*is* the float32 value, the same wherever it is read, within a relative ``2⁻²⁴ ≈ 6·10⁻⁸`` of
the float64 model value (work-time error below 10⁻⁷ relative, far under the model's own
precision). Availability (0/1) is exact in float32. Times are always float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.special import betaincinv

from desim.scenario.devices import DeviceSpec
from desim.world.channel import (
    SignalChannel,
    check_generated_gain,
    mean_snr_coef_hz,
    snr_coef_from_gain_db,
)
from desim.world.chunked import ChunkedSignals
from desim.world.compute import ComputeTimelineParams, SignalTimeline
from desim.world.draws import CounterDraws
from desim.world.mobility import MobilityChannelParams, MobilityModel, rician_k_factor
from desim.world.pathloss import path_loss_los_db
from desim.world.piecewise import PiecewiseSignals
from desim.world.renewal import MarkedPoisson, levels_at

RAYLEIGH = 1  # the channel stream's component of Rayleigh block draws
LOAD, AVAILABILITY = 1, 3  # the compute stream's components (each also uses its + 1)
WINDOW_EVENTS = 2.0
"""A compute window lasts this many mean gaps of the faster process."""


def _grid(j0: int, j1: int, step_s: float) -> np.ndarray:
    """Segment bounds ``float(j)·step_s`` for ``j`` in ``[j0, j1]``."""
    return np.arange(j0, j1 + 1, dtype=float) * step_s


@dataclass(frozen=True, eq=False)
class RayleighSource:
    """Path loss times i.i.d. Exp(1) fading per block (see :func:`rayleigh_channel`)."""

    mean_hz: np.ndarray
    step_s: float
    draws: CounterDraws
    period: int | None = None
    row_min: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_min", np.zeros(self.mean_hz.size))

    @property
    def num_rows(self) -> int:
        """Number of devices ``K``."""
        return int(self.mean_hz.size)

    def pieces(self, rows: np.ndarray, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(bounds (P + 1,), coefficients (r, P))`` of blocks ``[j0, j1)``."""
        blocks = np.arange(j0, j1)
        if self.period is not None:
            blocks = blocks % self.period
        fading = self.draws.exponential(rows, blocks.tolist(), 0, RAYLEIGH)
        return _grid(j0, j1, self.step_s), self.mean_hz[rows, None] * fading


@dataclass(frozen=True, eq=False)
class MobilitySource:
    """One part of the TR 38.901 channel, by ``part``.

    ``coef``: the SNR coefficient; ``large``: without the fast fading; ``k``: the Rician K
    factor (float32).
    """

    model: MobilityModel
    part: Literal["coef", "large", "k"]
    tx_power_dbm: np.ndarray
    noise_psd_dbm_per_hz: float
    row_min: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "row_min", np.zeros(self.tx_power_dbm.size))

    @property
    def step_s(self) -> float:
        """The sampling step."""
        return self.model.params.step_s

    @property
    def num_rows(self) -> int:
        """Number of devices ``K``."""
        return int(self.tx_power_dbm.size)

    def pieces(self, rows: np.ndarray, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(bounds (P + 1,), values (r, P))`` of samples ``[j0, j1)``."""
        gain, los, _ = self.model.parts_db(rows, j0, j1, with_fading=self.part == "coef")
        bounds = _grid(j0, j1, self.step_s)
        if self.part == "k":
            return bounds, rician_k_factor(self.model.params, los).astype(np.float32)
        return bounds, snr_coef_from_gain_db(gain, self.tx_power_dbm[rows],
                                             self.noise_psd_dbm_per_hz)


@dataclass(frozen=True, eq=False)
class ComputeSource:
    """The compute timeline's ``speed`` (``ρ · available``) or ``available``, per window."""

    params: ComputeTimelineParams
    load: MarkedPoisson | None
    availability: MarkedPoisson | None
    step_s: float
    num_rows: int
    part: Literal["speed", "available"]
    row_min: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        floor = 0.0 if self.availability is not None else (
            self.params.min_speed if self.load is not None and self.part == "speed" else 1.0)
        object.__setattr__(self, "row_min", np.full(self.num_rows, floor))

    def pieces(self, rows: np.ndarray, j0: int, j1: int) -> tuple[np.ndarray, np.ndarray]:
        """``(bounds (r, P + 1), values (r, P) float32)`` of windows ``[j0, j1)``.

        A window's pieces start at its start and at each event of either process; rows with
        fewer events end with pieces of zero width.
        """
        r = rows.size
        load = None if self.load is None else self.load.windows(rows, j0, j1)
        avail = None if self.availability is None else self.availability.windows(rows, j0, j1)
        bounds, values = [], []
        for n, j in enumerate(range(j0, j1)):
            start, stop = float(j) * self.step_s, float(j + 1) * self.step_s
            parts = [np.zeros((r, 1))] + [w[n][1] for w in (load, avail) if w is not None]
            offsets = np.sort(np.concatenate(parts, axis=1), axis=1)  # no event (inf) last
            value = np.ones(offsets.shape)
            if load is not None and self.part == "speed":
                value = np.maximum(1.0 - levels_at(*load[n][:3], offsets), self.params.min_speed)
            if avail is not None:
                value = value * levels_at(*avail[n][:3], offsets)
            pad = np.isinf(offsets)
            if pad.any():
                last = np.maximum(np.sum(~pad, axis=1) - 1, 0)
                value = np.where(pad, value[np.arange(r), last][:, None], value)
            bounds.append(np.clip(start + offsets, start, stop))
            values.append(value.astype(np.float32))
        end = np.full((r, 1), float(j1) * self.step_s)
        return np.concatenate([*bounds, end], axis=1), np.concatenate(values, axis=1)


def rayleigh_channel(
    devices: tuple[DeviceSpec, ...], path_loss: str, carrier_ghz: float, coherence_s: float,
    duration_s: float | None, noise_psd_dbm_per_hz: float, rng: np.random.Generator,
    chunk_segments: int = 64,
) -> SignalChannel:
    """Path loss times Rayleigh block fading, ``|h|² ~ Exp(1)`` i.i.d. per ``coherence_s``.

    Args:
        devices: the resolved devices (distance and transmit power are used).
        path_loss: a model of :func:`desim.world.pathloss.path_loss_db`.
        carrier_ghz: carrier frequency f_c.
        coherence_s: length of one fading block.
        duration_s: the realisation repeats after this many seconds (whole blocks); ``None``:
            it never repeats.
        noise_psd_dbm_per_hz: receiver noise power spectral density N0.
        rng: the run's ``channel`` stream (it keys the counter-based draws).
        chunk_segments: blocks generated per chunk (speed and memory only).
    """
    mean = mean_snr_coef_hz(devices, path_loss, carrier_ghz, noise_psd_dbm_per_hz, "rayleigh")
    period = None if duration_s is None else max(1, math.ceil(duration_s / coherence_s - 1e-9))
    source = RayleighSource(mean, coherence_s, CounterDraws.from_rng(rng), period)
    return SignalChannel(
        ChunkedSignals(source, chunk_segments),
        large_scale=PiecewiseSignals.constant(mean),
        fading_k=PiecewiseSignals.constant(np.zeros(len(devices))),
    )


def mobility_channel(
    devices: tuple[DeviceSpec, ...], params: MobilityChannelParams,
    noise_psd_dbm_per_hz: float, rng: np.random.Generator, chunk_segments: int = 64,
) -> SignalChannel:
    """The TR 38.901 channel of :class:`~desim.world.mobility.MobilityModel`.

    The distance range is widened to hold every device's starting distance ``distance_m``.

    Args:
        devices: the resolved devices (distance and transmit power are used).
        params: the generator's parameters (``duration_s``: the period, ``None``: none).
        noise_psd_dbm_per_hz: receiver noise power spectral density N0.
        rng: the run's ``channel`` stream (it keys the counter-based draws).
        chunk_segments: samples generated per chunk (speed and memory only).

    Returns:
        A :class:`~desim.world.channel.SignalChannel` with its large-scale part and K factor.
    """
    dist = np.array([d.distance_m for d in devices])
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    params = replace(
        params,
        min_distance_m=min(params.min_distance_m, float(dist.min())),
        max_distance_m=max(params.max_distance_m, float(dist.max())),
    )
    # the path gain of each device at its start, LOS: warns of an unphysical set-up up front
    check_generated_gain(-path_loss_los_db(params.environment, dist, params.carrier_ghz)[:, None],
                         devices, "generated", noise_psd_dbm_per_hz)
    model = MobilityModel.draw(params, dist, CounterDraws.from_rng(rng))

    def part(name: Literal["coef", "large", "k"]) -> ChunkedSignals:
        return ChunkedSignals(MobilitySource(model, name, p_dbm, noise_psd_dbm_per_hz),
                              chunk_segments)

    return SignalChannel(part("coef"), large_scale=part("large"),
                         fading_k=None if params.fading == "none" else part("k"))


def generated_timeline(
    params: ComputeTimelineParams, num_devices: int, rng: np.random.Generator,
    chunk_segments: int = 4,
) -> SignalTimeline:
    """Background load and on/off availability of ``num_devices``, generated on demand.

    Windows last :data:`WINDOW_EVENTS` mean gaps of the faster process; with ``duration_s``
    the realisation repeats after it (a whole number of windows tiling it exactly).

    Args:
        params: the processes' parameters.
        num_devices: number of devices ``K``.
        rng: the run's ``compute`` stream (it keys the counter-based draws).
        chunk_segments: windows generated per chunk (speed and memory only).
    """
    p = params
    draws = CounterDraws.from_rng(rng)
    up_gap = (p.mean_up_s * p.mean_down_s / (p.mean_up_s + p.mean_down_s)
              if p.mean_down_s > 0 else None)
    means = [m for m in (p.load_hold_s if p.load_mean > 0 else None, up_gap) if m is not None]
    window = WINDOW_EVENTS * min(means) if means else 3600.0
    period = None
    if p.duration_s is not None:
        period = max(1, math.ceil(p.duration_s / window - 1e-9))
        window = p.duration_s / period
    load = avail = None
    if p.load_mean > 0:
        a, b = p.load_mean * p.load_concentration, (1.0 - p.load_mean) * p.load_concentration

        def beta(u: np.ndarray) -> np.ndarray:
            return np.asarray(betaincinv(a, b, u), dtype=float)

        load = MarkedPoisson(draws, p.load_hold_s, window, beta, LOAD, period)
    if up_gap is not None:
        share = p.mean_up_s / (p.mean_up_s + p.mean_down_s)

        def state(u: np.ndarray) -> np.ndarray:
            return (u < share).astype(float)

        avail = MarkedPoisson(draws, up_gap, window, state, AVAILABILITY, period)

    def part(name: Literal["speed", "available"]) -> ChunkedSignals:
        return ChunkedSignals(ComputeSource(p, load, avail, window, num_devices, name),
                              chunk_segments)

    return SignalTimeline(part("speed"), part("available"))
