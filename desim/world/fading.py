"""Fast fading: Rayleigh and Rician with Jakes' Doppler spectrum (sum of sinusoids).

``h(t) = M^{-1/2} Σ exp(j(2π f_D cos α_m t + φ_m))`` with random arrival angles and phases has
mean power exactly 1 and autocorrelation ``E[h(t) h*(t+τ)] = J0(2π f_D τ)``. A Rician channel adds
a specular component of power ``K/(K+1)``. :func:`jakes_fading` and :func:`rician_fading` draw
from a passed-in :class:`numpy.random.Generator` and sample a whole horizon;
:class:`SumOfSinusoids` draws each link's angles and phases once from counter-based draws
(:mod:`desim.world.draws`) and then evaluates the same sum at any time, so a generated channel
can be produced chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from desim.world.draws import CounterDraws
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


@dataclass(frozen=True, eq=False)
class SumOfSinusoids:
    """Rician fading of ``K`` links with Jakes' spectrum, a deterministic function of time.

    ``h_k(t) = sqrt(K/(K+1)) e^{j(ω_k t + ψ_k)} + sqrt(1/(K+1)) M^{-1/2} Σ_m e^{j(ω_km t + φ_km)}``
    with ``ω = 2π f_D cos α``; the angles and phases are drawn once per link.

    Attributes:
        omega: angular Doppler shifts ``2π f_D cos α_km`` ``(K, M)`` in rad/s.
        phase: phases ``φ_km`` ``(K, M)``.
        los_omega: the specular component's ``2π f_D cos θ_k`` ``(K,)``.
        los_phase: its phase ``ψ_k`` ``(K,)``.
    """

    omega: np.ndarray
    phase: np.ndarray
    los_omega: np.ndarray
    los_phase: np.ndarray

    @classmethod
    def draw(cls, draws: CounterDraws, num_links: int, doppler: float, sinusoids: int,
             component: int) -> SumOfSinusoids:
        """Angles and phases ``U(0, 2π)`` of every link from the counter-based ``draws``."""
        rows = np.arange(num_links)
        two_pi = 2.0 * np.pi
        w = two_pi * doppler
        alpha = two_pi * draws.uniform(rows, range(sinusoids), 0, component)
        phi = two_pi * draws.uniform(rows, range(sinusoids), 1, component)
        theta = two_pi * draws.uniform(rows, [0], 2, component)[:, 0]
        psi = two_pi * draws.uniform(rows, [0], 3, component)[:, 0]
        return cls(w * np.cos(alpha), phi, w * np.cos(theta), psi)

    def power(self, rows: np.ndarray, times_s: np.ndarray, k_factor: np.ndarray) -> np.ndarray:
        """``|h|²`` ``(r, n)`` of links ``rows`` at ``times_s`` ``(n,)``, K factors ``(r, n)``.

        The sinusoids are added one by one, so each value is the same float whatever else is
        evaluated with it.
        """
        t = np.asarray(times_s, dtype=float)[None, :]
        omega, phase = self.omega[rows], self.phase[rows]
        re = np.zeros((rows.size, t.shape[1]))
        im = np.zeros_like(re)
        for m in range(omega.shape[1]):
            arg = omega[:, m, None] * t + phase[:, m, None]
            re += np.cos(arg)
            im += np.sin(arg)
        scale = 1.0 / np.sqrt(omega.shape[1])
        los = self.los_omega[rows, None] * t + self.los_phase[rows, None]
        a = np.sqrt(k_factor / (k_factor + 1.0))
        b = np.sqrt(1.0 / (k_factor + 1.0)) * scale
        return (a * np.cos(los) + b * re) ** 2 + (a * np.sin(los) + b * im) ** 2
