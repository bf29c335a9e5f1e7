"""The generated TR 38.901 channel of moving devices: path loss, LOS, shadowing and fading.

Each device starts at a given distance from the base station on a random bearing and walks a
straight line at a fixed speed on a random heading; its 2-D distance is reflected into
``[min_distance_m, max_distance_m]``. A moving device keeps a fixed uniform draw ``u_k`` and is in
LOS while ``u_k < Pr_LOS(d_2D(t))``, so its LOS state changes consistently with distance
(:mod:`desim.world.pathloss`). Shadowing decorrelates with the distance walked, fast fading with
the Doppler shift ``v f_c / c`` (:mod:`desim.world.fading`).

Two generators share the model. :func:`generate_gain_db` samples a whole horizon from a
passed-in :class:`numpy.random.Generator` (``desim traces generate channel`` writes it, so the
shipped traces regenerate to the same numbers). :class:`MobilityModel` draws every device's
bearing, heading, LOS draw and fading angles once from counter-based draws
(:mod:`desim.world.draws`) and is then a pure function of (device, segment): the walk is closed
form in time, the fading a sum of sinusoids, the shadowing chunkable
(:mod:`desim.world.shadowing`), so a scenario's ``generated`` channel is produced on demand, in
chunks, for any number of devices and any horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from desim.world.draws import CounterDraws
from desim.world.fading import SumOfSinusoids, doppler_hz, rician_fading
from desim.world.pathloss import (
    SHADOW_CORR_M,
    SHADOW_STD_DB,
    gudmundson_shadowing_db,
    los_probability,
    path_loss_los_db,
    path_loss_nlos_db,
)
from desim.world.shadowing import ChunkedShadowing

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
        duration_s: length of the realisation in seconds; for :class:`MobilityModel` the
            period after which it repeats (``None``: it never does).
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
    duration_s: float | None = 300.0
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
    if p.duration_s is None:
        raise ValueError("a whole-horizon realisation needs duration_s")
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


# components of the channel stream's counter-based draws (desim.world.draws)
WALK, JAKES, SHADOW_LOS, SHADOW_NLOS = 2, 3, 4, 6  # a shadowing process also uses its + 1


@dataclass(frozen=True, eq=False)
class MobilityModel:
    """The generated TR 38.901 channel of ``K`` devices as a pure function of each segment.

    Segment ``j`` holds the sample at ``t = i·step_s``, ``i = j`` (or ``j mod period``).

    Attributes:
        params: the model's parameters (``duration_s``: the period, ``None``: none).
        start_m: starting 2-D distance per device ``(K,)``, reflected into the range.
        bearing: bearing of the start from the base station ``(K,)`` in rad.
        heading: walking direction ``(K,)`` in rad.
        los_draw: the uniform draw ``u_k`` compared with ``Pr_LOS(d(t))`` ``(K,)``.
        fading: the sums of sinusoids (``None``: no fast fading).
        shadow: the LOS and NLOS shadowing processes (``None``: no shadowing).
    """

    params: MobilityChannelParams
    start_m: np.ndarray
    bearing: np.ndarray
    heading: np.ndarray
    los_draw: np.ndarray
    fading: SumOfSinusoids | None
    shadow: dict[bool, ChunkedShadowing] | None

    @classmethod
    def draw(cls, params: MobilityChannelParams, initial_distance_m: np.ndarray,
             draws: CounterDraws) -> MobilityModel:
        """Every device's fixed draws, from ``initial_distance_m`` ``(K,)``."""
        p = params
        initial = np.asarray(initial_distance_m, dtype=float)
        rows = np.arange(initial.size)
        walk = draws.uniform(rows, [0], 0, WALK)[:, 0], draws.uniform(rows, [0], 1, WALK)[:, 0]
        fading = None
        if p.fading != "none":
            fd = doppler_hz(p.speed_kmh, p.carrier_ghz)
            fading = SumOfSinusoids.draw(draws, initial.size, fd, p.sinusoids, JAKES)
        shadow = None
        if p.shadowing:
            step_m = p.speed_kmh / 3.6 * p.step_s
            shadow = {
                state: ChunkedShadowing.build(
                    draws, SHADOW_STD_DB[(p.environment, state)],
                    SHADOW_CORR_M[(p.environment, state)], step_m, component)
                for state, component in ((True, SHADOW_LOS), (False, SHADOW_NLOS))
            }
        return cls(p, reflect(initial, p.min_distance_m, p.max_distance_m),
                   2.0 * np.pi * walk[0], 2.0 * np.pi * walk[1],
                   draws.uniform(rows, [0], 2, WALK)[:, 0], fading, shadow)

    @property
    def period(self) -> int | None:
        """Segments after which the realisation repeats (``None``: never)."""
        d = self.params.duration_s
        return None if d is None else max(1, int(np.ceil(d / self.params.step_s - 1e-9)))

    def parts_db(self, rows: np.ndarray, j0: int, j1: int, with_fading: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(gain_db, los, large_scale_db)``, each ``(r, j1 - j0)``, of segments ``[j0, j1)``.

        ``gain_db`` is the large-scale gain alone without ``with_fading`` or fading.
        """
        p = self.params
        local = np.arange(j0, j1)
        if self.period is not None:
            local = local % self.period
        t = local.astype(float) * p.step_s
        v = p.speed_kmh / 3.6
        d0, b, h = self.start_m[rows, None], self.bearing[rows, None], self.heading[rows, None]
        x = d0 * np.cos(b) + v * t[None, :] * np.cos(h)
        y = d0 * np.sin(b) + v * t[None, :] * np.sin(h)
        dist = reflect(np.hypot(x, y), p.min_distance_m, p.max_distance_m)
        los = self.los_draw[rows, None] < los_probability(p.environment, dist)
        large = -np.where(
            los,
            path_loss_los_db(p.environment, dist, p.carrier_ghz),
            path_loss_nlos_db(p.environment, dist, p.carrier_ghz),
        )
        if self.shadow is not None:
            lo, hi = int(local.min()), int(local.max()) + 1
            s_los = self.shadow[True].values(rows, lo, hi)[:, local - lo]
            s_nlos = self.shadow[False].values(rows, lo, hi)[:, local - lo]
            large = large - np.where(los, s_los, s_nlos)
        if not with_fading or self.fading is None:
            return large, los, large
        power = self.fading.power(rows, t, rician_k_factor(p, los))
        return large + 10.0 * np.log10(np.maximum(power, 1e-30)), los, large
