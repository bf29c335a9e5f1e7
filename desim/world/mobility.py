"""The generated TR 38.901 channel of moving devices: path loss, LOS, shadowing and fading.

Each device starts at a given distance from the base station on a random bearing and walks a
straight line at a fixed speed on a random heading; its 2-D distance is reflected into
``[min_distance_m, max_distance_m]``. A moving device keeps a fixed uniform draw ``u_k`` and is in
LOS while ``u_k < Pr_LOS(d_2D(t))``, so its LOS state changes consistently with distance
(:mod:`desim.world.pathloss`). Shadowing decorrelates with the distance walked, fast fading with
the Doppler shift ``v f_c / c`` (:mod:`desim.world.fading`). All draws come from a passed-in
:class:`numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from desim.world.fading import doppler_hz, rician_fading
from desim.world.pathloss import (
    SHADOW_CORR_M,
    SHADOW_STD_DB,
    gudmundson_shadowing_db,
    los_probability,
    path_loss_los_db,
    path_loss_nlos_db,
)

Environment = Literal["umi", "uma"]
Fading = Literal["auto", "rayleigh", "rician", "none"]


@dataclass(frozen=True)
class MobilityChannelParams:
    """Parameters of the generated TR 38.901 channel (see :func:`generate_gain_db`).

    Attributes:
        environment: ``umi`` (street canyon) or ``uma``.
        carrier_ghz: carrier frequency in GHz.
        speed_kmh: device speed in km/h (drives Doppler, shadowing and distance).
        step_s: sampling interval in seconds (values hold between samples).
        duration_s: length of the realisation in seconds.
        fading: ``auto`` (Rician in LOS, Rayleigh in NLOS), ``rayleigh``, ``rician`` or ``none``.
        rician_k_db: K factor used for Rician fading, in dB.
        shadowing: whether to add log-normal shadowing.
        min_distance_m: lower bound of the 2-D distance to the base station.
        max_distance_m: upper bound of the 2-D distance.
        sinusoids: sinusoids per link in the Jakes model.
    """

    environment: Environment = "umi"
    carrier_ghz: float = 3.5
    speed_kmh: float = 3.0
    step_s: float = 0.1
    duration_s: float = 300.0
    fading: Fading = "auto"
    rician_k_db: float = 9.0
    shadowing: bool = True
    min_distance_m: float = 50.0
    max_distance_m: float = 300.0
    sinusoids: int = 64


def reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold values into ``[lo, hi]`` by reflection at both ends (a bouncing walk)."""
    if hi <= lo:
        return np.full_like(np.asarray(x, dtype=float), lo)
    span = hi - lo
    y = np.mod(np.asarray(x, dtype=float) - lo, 2.0 * span)
    return lo + np.where(y > span, 2.0 * span - y, y)


def generate_gain_db(
    params: MobilityChannelParams,
    initial_distance_m: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel power gain over time for moving devices: path loss, shadowing and fading.

    Each device starts at ``initial_distance_m`` from the base station on a random bearing and
    walks a straight line at ``speed_kmh`` on a random heading; its 2-D distance is reflected
    into ``[min_distance_m, max_distance_m]``. Shadowing decorrelates with the distance
    walked, fast fading with the Doppler shift ``v f_c / c``.

    Args:
        params: model parameters.
        initial_distance_m: starting 2-D distance per device ``(K,)``.
        rng: random generator (the run's ``channel`` stream or a CLI seed).

    Returns:
        ``(times_s (T,), gain_db (K, T), los (K, T) bool)``; gains hold from each sample time.
    """
    t, gain, los, _ = generate_gain_parts_db(params, initial_distance_m, rng)
    return t, gain, los


def generate_gain_parts_db(
    params: MobilityChannelParams,
    initial_distance_m: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`generate_gain_db` with the large-scale gain (path loss and shadowing) too.

    Returns:
        ``(times_s, gain_db, los, large_scale_db)``, the last ``(K, T)`` without the fading.
    """
    p = params
    steps = max(1, int(np.ceil(p.duration_s / p.step_s - 1e-9)))
    t = np.arange(steps) * p.step_s
    initial = np.asarray(initial_distance_m, dtype=float)
    dist = _walk_distance_m(p, initial, t, rng)
    u = rng.uniform(0.0, 1.0, initial.size)
    los = u[:, None] < los_probability(p.environment, dist)
    pl = np.where(
        los,
        path_loss_los_db(p.environment, dist, p.carrier_ghz),
        path_loss_nlos_db(p.environment, dist, p.carrier_ghz),
    )
    large = -pl
    if p.shadowing:
        large = large - _shadowing_db(p, los, t, rng)
    gain = large + _fast_fading_db(p, los, t, rng) if p.fading != "none" else large
    return t, gain, los, large


def rician_k_factor(p: MobilityChannelParams, los: np.ndarray) -> np.ndarray:
    """The linear Rician K factor of every sample ``(K, T)`` (0: Rayleigh), by ``p.fading``."""
    k_lin = 10.0 ** (p.rician_k_db / 10.0)
    return {
        "rayleigh": np.zeros(los.shape),
        "rician": np.full(los.shape, k_lin),
        "auto": np.where(los, k_lin, 0.0),
        "none": np.zeros(los.shape),
    }[p.fading]


def _walk_distance_m(
    p: MobilityChannelParams, initial_m: np.ndarray, t: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """2-D distance ``(K, T)`` of devices walking straight lines, reflected into the range."""
    k = initial_m.size
    v = p.speed_kmh / 3.6
    d0 = reflect(initial_m, p.min_distance_m, p.max_distance_m)
    bearing = rng.uniform(0.0, 2.0 * np.pi, k)
    heading = rng.uniform(0.0, 2.0 * np.pi, k)
    x = d0[:, None] * np.cos(bearing)[:, None] + v * t[None, :] * np.cos(heading)[:, None]
    y = d0[:, None] * np.sin(bearing)[:, None] + v * t[None, :] * np.sin(heading)[:, None]
    return reflect(np.hypot(x, y), p.min_distance_m, p.max_distance_m)


def _shadowing_db(
    p: MobilityChannelParams, los: np.ndarray, t: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Log-normal shadowing ``(K, T)`` in dB: the LOS or NLOS process, by each sample's state."""
    walked = p.speed_kmh / 3.6 * np.broadcast_to(t, los.shape)
    out = np.zeros(los.shape)
    for state in (True, False):
        sf = gudmundson_shadowing_db(
            walked,
            SHADOW_STD_DB[(p.environment, state)],
            SHADOW_CORR_M[(p.environment, state)],
            rng,
        )
        out += np.where(los == state, sf, 0.0)
    return out


def _fast_fading_db(
    p: MobilityChannelParams, los: np.ndarray, t: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Fast-fading power ``(K, T)`` in dB: Rayleigh, Rician, or Rician in LOS only (``auto``)."""
    kf = rician_k_factor(p, los)
    h = rician_fading(t, doppler_hz(p.speed_kmh, p.carrier_ghz), kf, rng, p.sinusoids)
    return 10.0 * np.log10(np.maximum(np.abs(h) ** 2, 1e-30))
