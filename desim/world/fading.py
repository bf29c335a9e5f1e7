"""Fast fading: Rayleigh and Rician with Jakes' Doppler spectrum (sum of sinusoids).

``h(t) = M^{-1/2} Σ exp(j(2π f_D cos α_m t + φ_m))`` with random arrival angles and phases has
mean power exactly 1 and autocorrelation ``E[h(t) h*(t+τ)] = J0(2π f_D τ)``. A Rician channel adds
a specular component of power ``K/(K+1)``. Random draws come from a passed-in
:class:`numpy.random.Generator`.
"""

from __future__ import annotations

import numpy as np

from desim.world.pathloss import SPEED_OF_LIGHT_M_PER_S

# TR 38.901 Table 7.5-6: Ricean K factor mean in LOS (dB)
RICIAN_K_DB = {"umi": 9.0, "uma": 9.0}


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
