"""Uplink channels: received SNR over time, TR 38.901 generators and exact transfer times.

A channel is summarised per device by the SNR coefficient ``a_k(t) = p_k g_k(t) / N0`` in Hz, so
that with a bandwidth share ``B_k`` the Shannon rate is ``r_k(t) = B_k log2(1 + a_k(t)/B_k)``
(DESIGN §2). ``a_k(t)`` is piecewise-constant in time (:mod:`desim.world.piecewise`), which makes
the
upload time of any number of bits exact, from any start time, including stalls at zero rate.

Models here (all seeded through a passed-in :class:`numpy.random.Generator`):

- 3GPP TR 38.901 path loss for UMi street canyon and UMa, LOS and NLOS (Table 7.4.1-1, with the
  breakpoint distance ``d'_BP = 4 h'_BS h'_UT f_c / c``, ``h_E = 1`` m) and the LOS probability
  of Table 7.4.2-1; free space for reference.
- Log-normal shadowing with distance-correlated (Gudmundson) updates,
  ``S_{n+1} = ρ S_n + sqrt(1 - ρ²) σ ε`` with ``ρ = exp(-Δd / d_corr)``; ``σ`` and ``d_corr``
  from TR 38.901 Table 7.5-6 (UMi 4 / 7.82 dB, 10 / 13 m; UMa 4 / 6 dB, 37 / 50 m).
- Rayleigh and Rician fast fading with Jakes' Doppler spectrum, as a sum of ``M`` sinusoids with
  random arrival angles and phases: ``h(t) = M^{-1/2} Σ exp(j(2π f_D cos α_m t + φ_m))``, whose
  mean power is exactly 1 and autocorrelation ``E[h(t) h*(t+τ)] = J0(2π f_D τ)``. A Rician
  channel adds a specular component of power ``K/(K+1)``.
- Rayleigh block fading (``|h|² ~ Exp(1)`` i.i.d. per coherence interval), the simplest model.

Assumptions: BS heights 10 m (UMi) and 25 m (UMa), UT height 1.5 m (so UMa's ``C(d_2D, h_UT)``
is 0 and ``h_E = 1`` m). A moving device keeps a fixed uniform draw ``u_k`` and is in LOS while
``u_k < Pr_LOS(d_2D(t))``, so its LOS state changes consistently with distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from desim.errors import InputError, TraceError, warn
from desim.scenario.model import ChannelSpec, DeviceSpec
from desim.world.piecewise import PiecewiseSignals
from desim.world.rates import shannon_rate_bps
from desim.world.traces import MAX_SNR_DB, Trace, map_devices, replay_signals

SPEED_OF_LIGHT_M_PER_S = 3.0e8  # the value TR 38.901 uses
UT_HEIGHT_M = 1.5
BS_HEIGHT_M = {"umi": 10.0, "uma": 25.0, "free-space": 10.0}
# TR 38.901 Table 7.5-6: shadow fading std (dB) and its correlation distance (m)
SHADOW_STD_DB = {("umi", True): 4.0, ("umi", False): 7.82, ("uma", True): 4.0, ("uma", False): 6.0}
SHADOW_CORR_M = {
    ("umi", True): 10.0,
    ("umi", False): 13.0,
    ("uma", True): 37.0,
    ("uma", False): 50.0,
}
# the most a scenario device may transmit: 100 dBm is 10 MW, far above any radio (a 3GPP UE
# transmits 23 dBm, a macro base station 46 dBm); beyond it, watts soon overflow a float
MAX_TX_POWER_DBM = 100.0
# TR 38.901 Table 7.5-6: Ricean K factor mean in LOS (dB)
RICIAN_K_DB = {"umi": 9.0, "uma": 9.0}
Environment = Literal["umi", "uma"]
Fading = Literal["auto", "rayleigh", "rician", "none"]


def dbm_to_w(dbm: np.ndarray | float) -> np.ndarray:
    """Convert dBm to watts."""
    return 10.0 ** ((np.asarray(dbm, dtype=float) - 30.0) / 10.0)


def breakpoint_distance_m(env: str, carrier_ghz: float) -> float:
    """TR 38.901 breakpoint distance ``d'_BP = 4 h'_BS h'_UT f_c / c`` (``h_E = 1`` m)."""
    h_e = 1.0
    return (
        4.0 * (BS_HEIGHT_M[env] - h_e) * (UT_HEIGHT_M - h_e) * carrier_ghz * 1e9
    ) / SPEED_OF_LIGHT_M_PER_S


def path_loss_los_db(env: str, distance_m: np.ndarray, carrier_ghz: float) -> np.ndarray:
    """TR 38.901 Table 7.4.1-1 LOS path loss in dB at 2-D distances ``distance_m``.

    ``PL1 = A + B1 log10 d3D + 20 log10 fc`` below ``d'_BP``,
    ``PL2 = A + 40 log10 d3D + 20 log10 fc - C log10(d'_BP² + (h_BS - h_UT)²)`` above, with
    ``(A, B1, C) = (32.4, 21, 9.5)`` for UMi and ``(28, 22, 9)`` for UMa; ``fc`` in GHz.
    """
    d2 = np.asarray(distance_m, dtype=float)
    dh = BS_HEIGHT_M[env] - UT_HEIGHT_M
    d3 = np.sqrt(d2**2 + dh**2)
    lf = 20.0 * np.log10(carrier_ghz)
    a, b1, c = {"umi": (32.4, 21.0, 9.5), "uma": (28.0, 22.0, 9.0)}[env]
    d_bp = breakpoint_distance_m(env, carrier_ghz)
    pl1 = a + b1 * np.log10(d3) + lf
    pl2 = a + 40.0 * np.log10(d3) + lf - c * np.log10(d_bp**2 + dh**2)
    return np.where(d2 <= d_bp, pl1, pl2)


def path_loss_nlos_db(env: str, distance_m: np.ndarray, carrier_ghz: float) -> np.ndarray:
    """TR 38.901 Table 7.4.1-1 NLOS path loss ``max(PL_LOS, PL'_NLOS)`` in dB.

    UMi: ``PL'_NLOS = 35.3 log10 d3D + 22.4 + 21.3 log10 fc - 0.3 (h_UT - 1.5)``;
    UMa: ``PL'_NLOS = 13.54 + 39.08 log10 d3D + 20 log10 fc - 0.6 (h_UT - 1.5)``.
    """
    d2 = np.asarray(distance_m, dtype=float)
    d3 = np.sqrt(d2**2 + (BS_HEIGHT_M[env] - UT_HEIGHT_M) ** 2)
    lf = np.log10(carrier_ghz)
    if env == "umi":
        nlos = 35.3 * np.log10(d3) + 22.4 + 21.3 * lf - 0.3 * (UT_HEIGHT_M - 1.5)
    else:
        nlos = 13.54 + 39.08 * np.log10(d3) + 20.0 * lf - 0.6 * (UT_HEIGHT_M - 1.5)
    return np.maximum(path_loss_los_db(env, d2, carrier_ghz), nlos)


def los_probability(env: str, distance_m: np.ndarray) -> np.ndarray:
    """TR 38.901 Table 7.4.2-1 LOS probability at 2-D distances (UT height 1.5 m).

    UMi: ``18/d + exp(-d/36)(1 - 18/d)``; UMa: ``18/d + exp(-d/63)(1 - 18/d)`` (its height term
    ``C'(h_UT)`` is 0 for ``h_UT ≤ 13`` m); both 1 for ``d ≤ 18`` m.
    """
    d = np.asarray(distance_m, dtype=float)
    scale = {"umi": 36.0, "uma": 63.0}[env]
    with np.errstate(divide="ignore"):
        p = 18.0 / d + np.exp(-d / scale) * (1.0 - 18.0 / d)
    return np.where(d <= 18.0, 1.0, p)


def path_loss_db(model: str, distance_m: np.ndarray, carrier_ghz: float) -> np.ndarray:
    """Path loss in dB of a named model at 2-D distances ``distance_m``.

    ``umi-nlos``, ``umi-los``, ``uma-nlos``, ``uma-los`` follow TR 38.901 Table 7.4.1-1;
    ``free-space`` is ``32.45 + 20 log10 fc + 20 log10 d3D``.
    """
    if model == "free-space":
        d2 = np.asarray(distance_m, dtype=float)
        d3 = np.sqrt(d2**2 + (BS_HEIGHT_M[model] - UT_HEIGHT_M) ** 2)
        return 32.45 + 20.0 * np.log10(carrier_ghz) + 20.0 * np.log10(d3)
    env, _, state = model.partition("-")
    if env not in ("umi", "uma") or state not in ("los", "nlos"):
        raise ValueError(f"unknown path-loss model {model!r}")
    if state == "los":
        return path_loss_los_db(env, distance_m, carrier_ghz)
    return path_loss_nlos_db(env, distance_m, carrier_ghz)


def gudmundson_shadowing_db(
    travelled_m: np.ndarray, std_db: float, corr_m: float, rng: np.random.Generator
) -> np.ndarray:
    """Log-normal shadowing (dB) along a path, correlated over the distance travelled.

    Args:
        travelled_m: cumulative distance travelled at each sample ``(K, T)``, non-decreasing.
        std_db: shadowing standard deviation in dB.
        corr_m: decorrelation distance ``d_corr`` in metres.
        rng: random generator.

    Returns:
        Shadowing ``(K, T)`` in dB, zero-mean with ``std_db`` and correlation
        ``exp(-|Δd| / d_corr)`` (first-order autoregression, Gudmundson 1991).
    """
    steps = np.diff(np.asarray(travelled_m, dtype=float), axis=1)
    rho = np.exp(-steps / corr_m)
    eps = rng.standard_normal(np.shape(travelled_m))
    out = np.empty_like(eps)
    out[:, 0] = eps[:, 0]
    innov = np.sqrt(1.0 - rho**2) * eps[:, 1:]
    for i in range(steps.shape[1]):  # a short recursion over time, vectorised over devices
        out[:, i + 1] = rho[:, i] * out[:, i] + innov[:, i]
    return std_db * out


def doppler_hz(speed_kmh: float, carrier_ghz: float) -> float:
    """Maximum Doppler shift ``f_D = v f_c / c`` in Hz."""
    return speed_kmh / 3.6 * carrier_ghz * 1e9 / SPEED_OF_LIGHT_M_PER_S


def jakes_fading(
    times_s: np.ndarray,
    doppler: float,
    num_links: int,
    rng: np.random.Generator,
    sinusoids: int = 64,
) -> np.ndarray:
    """Complex Rayleigh fading with Jakes' Doppler spectrum (sum of sinusoids).

    ``h(t) = M^{-1/2} Σ_m exp(j(2π f_D cos α_m t + φ_m))`` with ``α_m, φ_m ~ U[0, 2π)`` per link:
    ``E|h|² = 1`` and ``E[h(t) h*(t+τ)] = J0(2π f_D τ)``.

    Args:
        times_s: sample times ``(T,)``.
        doppler: maximum Doppler shift ``f_D`` in Hz.
        num_links: number of independent links ``K``.
        rng: random generator.
        sinusoids: number of sinusoids ``M`` per link.

    Returns:
        Complex gains ``(K, T)``.
    """
    t = np.asarray(times_s, dtype=float)
    alpha = rng.uniform(0.0, 2.0 * np.pi, (num_links, sinusoids))
    phi = rng.uniform(0.0, 2.0 * np.pi, (num_links, sinusoids))
    h = np.empty((num_links, t.size), dtype=complex)
    for k in range(num_links):  # (M, T) per link keeps memory bounded
        phase = 2.0 * np.pi * doppler * np.cos(alpha[k])[:, None] * t[None, :] + phi[k][:, None]
        h[k] = np.exp(1j * phase).sum(axis=0)
    return h / np.sqrt(sinusoids)


def rician_fading(
    times_s: np.ndarray,
    doppler: float,
    k_factor: np.ndarray,
    rng: np.random.Generator,
    sinusoids: int = 64,
) -> np.ndarray:
    """Complex Rician fading with unit mean power: specular part plus Jakes scattering.

    ``h = sqrt(K/(K+1)) exp(j(2π f_D cos θ t + φ)) + sqrt(1/(K+1)) h_Rayleigh(t)``; ``K = 0``
    gives Rayleigh fading.

    Args:
        times_s: sample times ``(T,)``.
        doppler: maximum Doppler shift in Hz.
        k_factor: linear K factor per link ``(K,)`` or per link and sample ``(K, T)``.
        rng: random generator.
        sinusoids: sinusoids of the scattered part.

    Returns:
        Complex gains ``(K, T)``.
    """
    t = np.asarray(times_s, dtype=float)
    kf = np.asarray(k_factor, dtype=float)
    links = int(kf.shape[0])
    if kf.ndim == 1:
        kf = kf[:, None]
    scattered = jakes_fading(t, doppler, links, rng, sinusoids)
    theta = rng.uniform(0.0, 2.0 * np.pi, links)[:, None]
    phi = rng.uniform(0.0, 2.0 * np.pi, links)[:, None]
    specular = np.exp(1j * (2.0 * np.pi * doppler * np.cos(theta) * t[None, :] + phi))
    return np.sqrt(kf / (kf + 1.0)) * specular + np.sqrt(1.0 / (kf + 1.0)) * scattered


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
    p = params
    k = np.asarray(initial_distance_m, dtype=float).size
    steps = max(1, int(np.ceil(p.duration_s / p.step_s - 1e-9)))
    t = np.arange(steps) * p.step_s
    v = p.speed_kmh / 3.6
    d0 = reflect(np.asarray(initial_distance_m, dtype=float), p.min_distance_m, p.max_distance_m)
    bearing = rng.uniform(0.0, 2.0 * np.pi, k)
    heading = rng.uniform(0.0, 2.0 * np.pi, k)
    x = d0[:, None] * np.cos(bearing)[:, None] + v * t[None, :] * np.cos(heading)[:, None]
    y = d0[:, None] * np.sin(bearing)[:, None] + v * t[None, :] * np.sin(heading)[:, None]
    dist = reflect(np.hypot(x, y), p.min_distance_m, p.max_distance_m)
    u = rng.uniform(0.0, 1.0, k)
    los = u[:, None] < los_probability(p.environment, dist)
    pl = np.where(
        los,
        path_loss_los_db(p.environment, dist, p.carrier_ghz),
        path_loss_nlos_db(p.environment, dist, p.carrier_ghz),
    )
    gain = -pl
    if p.shadowing:
        walked = v * np.broadcast_to(t, (k, steps))
        for state in (True, False):
            sf = gudmundson_shadowing_db(
                walked,
                SHADOW_STD_DB[(p.environment, state)],
                SHADOW_CORR_M[(p.environment, state)],
                rng,
            )
            gain -= np.where(los == state, sf, 0.0)
    if p.fading != "none":
        f_d = doppler_hz(p.speed_kmh, p.carrier_ghz)
        k_lin = 10.0 ** (p.rician_k_db / 10.0)
        kf = {
            "rayleigh": np.zeros((k, steps)),
            "rician": np.full((k, steps), k_lin),
            "auto": np.where(los, k_lin, 0.0),
        }[p.fading]
        h = rician_fading(t, f_d, kf, rng, p.sinusoids)
        power = np.maximum(np.abs(h) ** 2, 1e-30)
        gain += 10.0 * np.log10(power)
    return t, gain, los


def snr_coef_from_gain_db(
    gain_db: np.ndarray, tx_power_dbm: np.ndarray, noise_psd_dbm_per_hz: float
) -> np.ndarray:
    """``a = p g / N0`` in Hz from a channel gain in dB, transmit power and noise PSD.

    Args:
        gain_db: channel power gain in dB, ``(K,)`` or ``(K, T)``.
        tx_power_dbm: transmit power per device ``(K,)`` (or a scalar).
        noise_psd_dbm_per_hz: noise power spectral density ``N0``.
    """
    p = np.asarray(tx_power_dbm, dtype=float)
    g = np.asarray(gain_db, dtype=float)
    if g.ndim == 2 and p.ndim == 1:
        p = p[:, None]
    return 10.0 ** ((p + g - noise_psd_dbm_per_hz) / 10.0)


def snr_coef_from_snr_db(snr_db: np.ndarray, ref_bandwidth_hz: np.ndarray | float) -> np.ndarray:
    """``a = SNR · B_ref`` in Hz for an SNR in dB measured over ``B_ref`` Hz."""
    return 10.0 ** (np.asarray(snr_db, dtype=float) / 10.0) * np.asarray(ref_bandwidth_hz)


def snr_coef_from_throughput(
    throughput_bps: np.ndarray, ref_bandwidth_hz: np.ndarray | float
) -> np.ndarray:
    """Effective ``a = (2^(R/B_ref) - 1) B_ref`` in Hz for a throughput measured at ``B_ref``.

    At bandwidth ``B_ref`` the Shannon rate of the result is exactly ``R``; zero gives zero.
    """
    b = np.asarray(ref_bandwidth_hz, dtype=float)
    with np.errstate(over="ignore"):
        return np.expm1(np.log(2.0) * np.asarray(throughput_bps, dtype=float) / b) * b


class Channel(Protocol):
    """Uplink channel of ``K`` devices."""

    def snr_coef_hz(self, t_s: float) -> np.ndarray:
        """``a_k(t) = p_k g_k(t) / N0`` in Hz for every device, shape ``(K,)``."""
        ...

    def transfer_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, bits: np.ndarray, bandwidth_hz: np.ndarray
    ) -> np.ndarray:
        """Exact times at which each upload of ``bits`` started at ``start_s`` completes."""
        ...


@dataclass(frozen=True, eq=False)
class SignalChannel:
    """A channel given by piecewise-constant SNR coefficients (one signal row per device)."""

    signals: PiecewiseSignals

    def snr_coef_hz(self, t_s: float) -> np.ndarray:
        """SNR coefficients at ``t_s``, shape ``(K,)``."""
        return self.signals.at(t_s)

    def transfer_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, bits: np.ndarray, bandwidth_hz: np.ndarray
    ) -> np.ndarray:
        """Integrate ``B log2(1 + a(t)/B)`` from each start until the bits are sent.

        Args:
            devices: device index of each upload ``(m,)``.
            start_s: upload start times ``(m,)``.
            bits: bits to send ``(m,)``.
            bandwidth_hz: bandwidth share of each upload ``(m,)``, > 0 where bits > 0.

        Returns:
            Completion times ``(m,)``; ``inf`` if the rate stays zero for the rest of the trace.
        """
        bw = np.asarray(bandwidth_hz, dtype=float)

        def rate(values: np.ndarray, which: np.ndarray) -> np.ndarray:
            b = bw[which][:, None]
            return b * np.log2(1.0 + values / b)

        return self.signals.integrate_until(devices, start_s, bits, rate)


def generated_channel(
    devices: tuple[DeviceSpec, ...],
    spec: ChannelSpec,
    noise_psd_dbm_per_hz: float,
    rng: np.random.Generator,
) -> SignalChannel:
    """A channel generated from the scenario: ``static``, ``rayleigh`` or ``generated``.

    ``static``: path loss only; ``rayleigh``: path loss times Rayleigh block fading i.i.d. per
    ``coherence_s``; ``generated``: the mobility model of :func:`generate_gain_db` started at
    each device's ``distance_m``.

    Args:
        devices: the resolved devices (distance and transmit power are used).
        spec: the channel section.
        noise_psd_dbm_per_hz: receiver noise power spectral density N0.
        rng: the run's ``channel`` stream.

    Returns:
        A :class:`SignalChannel`; the fading realisation loops after ``spec.duration_s``.
    """
    dist = np.array([d.distance_m for d in devices])
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    if spec.kind == "generated":
        params = MobilityChannelParams(
            environment=spec.environment,
            carrier_ghz=spec.carrier_ghz,
            speed_kmh=spec.speed_kmh,
            step_s=spec.step_s,
            duration_s=spec.duration_s,
            fading=spec.fading,
            rician_k_db=spec.rician_k_db,
            shadowing=spec.shadowing,
            min_distance_m=min(spec.min_distance_m, float(dist.min())),
            max_distance_m=max(spec.max_distance_m, float(dist.max())),
        )
        times, gain_db, _ = generate_gain_db(params, dist, rng)
        _check_generated_gain(gain_db, devices, spec, noise_psd_dbm_per_hz)
        coef = snr_coef_from_gain_db(gain_db, p_dbm, noise_psd_dbm_per_hz)
        end = times.size * spec.step_s
        return SignalChannel(PiecewiseSignals(times, coef, end, "loop"))
    loss_db = path_loss_db(spec.path_loss, dist, spec.carrier_ghz)
    _check_generated_gain(-loss_db[:, None], devices, spec, noise_psd_dbm_per_hz)
    p_w = dbm_to_w(p_dbm)
    n0 = float(dbm_to_w(noise_psd_dbm_per_hz))
    mean_coef = p_w * 10.0 ** (-loss_db / 10.0) / n0
    if spec.kind == "static":
        return SignalChannel(PiecewiseSignals.constant(mean_coef))
    steps = max(1, int(np.ceil(spec.duration_s / spec.coherence_s)))
    fading = rng.exponential(1.0, size=(len(devices), steps))
    times = np.arange(steps) * spec.coherence_s
    return SignalChannel(
        PiecewiseSignals(times, mean_coef[:, None] * fading, steps * spec.coherence_s, "loop")
    )


def _check_snr_db(
    snr_db_hz: np.ndarray, devices: tuple[DeviceSpec, ...], where: str, terms: str
) -> None:
    """Refuse SNR coefficients ``a`` (in dB-Hz, ``(K, T)``) above :data:`MAX_SNR_DB`.

    Beyond it the spectral efficiency exceeds 1000 b/s/Hz at 1 Hz, and ``10**(a/10)``
    soon overflows a float.
    """
    peak = snr_db_hz.max(axis=1)
    bad = np.flatnonzero(~(peak <= MAX_SNR_DB))
    if bad.size:
        k = int(bad[np.argmax(np.nan_to_num(peak[bad], nan=np.inf))])
        raise InputError(
            f"{where}: device {devices[k].name} reaches an SNR coefficient p*g/N0 of "
            f"{peak[k]:.4g} dB-Hz ({terms.format(p=devices[k].tx_power_dbm)}), above the "
            f"{MAX_SNR_DB:.0f} dB-Hz desim represents (1000 b/s/Hz); check the device's "
            "tx_power_dbm and server.noise_psd_dbm_per_hz"
        )


def _check_generated_gain(
    gain_db: np.ndarray,
    devices: tuple[DeviceSpec, ...],
    spec: ChannelSpec,
    noise_psd_dbm_per_hz: float,
) -> None:
    """Refuse an unrepresentable SNR, and warn about a generated gain above 0 dB."""
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    peak = gain_db.max(axis=1)
    where = f"channel (kind = {spec.kind!r})"
    _check_snr_db(
        p_dbm[:, None] + gain_db - noise_psd_dbm_per_hz, devices, where,
        "tx_power_dbm {p:g} + gain_db - " + f"server.noise_psd_dbm_per_hz {noise_psd_dbm_per_hz:g}",
    )
    if peak.max() > 0.0:
        k = int(np.argmax(peak))
        warn(
            f"{where}: the channel gain of device {devices[k].name} reaches {peak[k]:.3g} dB "
            f"(distance_m {devices[k].distance_m:g}): a gain above 0 dB means the received "
            "power exceeds the transmitted one"
        )


def _check_trace_gain(
    trace: Trace,
    rows: np.ndarray,
    devices: tuple[DeviceSpec, ...],
    noise_psd_dbm_per_hz: float,
) -> None:
    """Refuse an unrepresentable SNR of a ``gain_db`` trace; warn about gains above 0 dB."""
    gain = trace.columns["gain_db"]
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    _check_snr_db(
        p_dbm[:, None] + gain.max(axis=1)[rows][:, None] - noise_psd_dbm_per_hz, devices,
        f"{trace.source}: column gain_db",
        "tx_power_dbm {p:g} + its trace device's largest gain_db - "
        f"server.noise_psd_dbm_per_hz {noise_psd_dbm_per_hz:g}",
    )
    if gain.max() > 0.0:
        m, t = np.unravel_index(int(np.argmax(gain)), gain.shape)
        warn(
            f"{trace.source}: column gain_db reaches {gain[m, t]:.3g} dB (trace device "
            f"{trace.devices[m]!r}, time_s {trace.times_s[t]:g}): a gain above 0 dB means the "
            "received power exceeds the transmitted one"
        )


def _finite_coef(trace: Trace, coef: np.ndarray) -> np.ndarray:
    """``coef`` if every value is finite; else a :class:`TraceError` naming where."""
    bad = ~np.isfinite(coef)
    if bad.any():
        m, t = np.argwhere(bad)[0]
        raise TraceError(
            f"{trace.source}: column {trace.quantity}: trace device {trace.devices[m]!r} at "
            f"time_s {trace.times_s[t]:g} gives an SNR coefficient too large for a float"
            + ("" if trace.quantity == "gain_db" else
               "; state the values over a smaller ref_bandwidth_hz")
        )
    return coef


def trace_snr_coef_hz(
    trace: Trace,
    tx_power_dbm: np.ndarray,
    noise_psd_dbm_per_hz: float,
    throughput_scale: float = 1.0,
) -> np.ndarray:
    """SNR coefficients ``a = p g / N0`` (Hz) of every trace device on the trace grid.

    ``gain_db`` uses the transmit power of the scenario device replaying each row
    (``tx_power_dbm`` ``(M,)``) and ``N0``; ``snr_db`` is taken over its ``ref_bandwidth_hz``
    (``a = SNR · B_ref``); ``throughput_mbps`` (times ``throughput_scale``) becomes the effective
    ``a = (2^(R/B_ref) - 1) B_ref``.

    Returns:
        ``(M, T)`` non-negative coefficients in Hz.
    """
    q = trace.quantity
    vals = trace.columns[q]
    with np.errstate(over="ignore"):
        if q == "gain_db":
            return _finite_coef(
                trace, snr_coef_from_gain_db(vals, tx_power_dbm, noise_psd_dbm_per_hz)
            )
        bw = trace.columns["ref_bandwidth_hz"]
        if q == "snr_db":
            return _finite_coef(trace, snr_coef_from_snr_db(vals, bw))
        return _finite_coef(trace, snr_coef_from_throughput(vals * 1e6 * throughput_scale, bw))


def trace_channel(
    trace: Trace,
    devices: tuple[DeviceSpec, ...],
    spec: ChannelSpec,
    noise_psd_dbm_per_hz: float,
    rng: np.random.Generator,
) -> SignalChannel:
    """Replay a channel trace for the scenario devices (``kind = "trace"``).

    Args:
        trace: the validated trace.
        devices: the resolved scenario devices (their transmit power converts ``gain_db``).
        spec: the channel section (``mapping``, ``end_policy``, ``throughput_scale``).
        noise_psd_dbm_per_hz: receiver noise PSD ``N0``.
        rng: the run's ``channel`` stream (used by the ``random-offset`` mapping only).

    Returns:
        A :class:`SignalChannel` with one row per scenario device.
    """
    if trace.kind != "channel":
        raise TraceError(f"{trace.source}: a compute trace cannot be a channel")
    names = tuple(d.name for d in devices)
    rows, offsets = map_devices(trace, names, spec.mapping, rng, "channel")
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    if trace.quantity == "gain_db":
        _check_trace_gain(trace, rows, devices, noise_psd_dbm_per_hz)
    coef = trace_snr_coef_hz(
        trace, np.zeros(len(trace.devices)), noise_psd_dbm_per_hz, spec.throughput_scale
    )
    per_device = coef[rows]
    if trace.quantity == "gain_db":  # transmit power belongs to the scenario device
        per_device = per_device * 10.0 ** (p_dbm[:, None] / 10.0)
    return SignalChannel(
        replay_signals(trace, per_device, np.arange(len(devices)), offsets, spec.end_policy,
                       trace_rows=rows)
    )


def trace_rate_bps(
    trace: Trace,
    bandwidth_hz: float | None = None,
    tx_power_dbm: float = 23.0,
    noise_psd_dbm_per_hz: float = -174.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Shannon rate of every trace device on the trace grid, for summaries and plots.

    Args:
        trace: a channel trace.
        bandwidth_hz: bandwidth share; ``None`` uses each row's ``ref_bandwidth_hz`` (so a
            throughput trace gives back its throughput) or 20 MHz for ``gain_db``.
        tx_power_dbm: transmit power used for ``gain_db`` traces.
        noise_psd_dbm_per_hz: noise PSD used for ``gain_db`` traces.

    Returns:
        ``(rate_bps (M, T), bandwidth_hz (M, T))``.
    """
    coef = trace_snr_coef_hz(trace, np.full(len(trace.devices), tx_power_dbm), noise_psd_dbm_per_hz)
    if bandwidth_hz is not None:
        bw = np.full(coef.shape, float(bandwidth_hz))
    elif "ref_bandwidth_hz" in trace.columns:
        bw = trace.columns["ref_bandwidth_hz"]
    else:
        bw = np.full(coef.shape, 20e6)
    return shannon_rate_bps(bw, coef), bw
