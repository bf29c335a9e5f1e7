"""Rate models: the uplink rate a planner expects from a bandwidth share, as a function of it.

The engine realises the Shannon rate ``r = B log2(1 + a/B)`` in bit/s of the true SNR
coefficient ``a = p g / N0`` in Hz at every instant (DESIGN §2, :func:`shannon_rate_bps`). A
planner knows the channel only through its channel state information (``allocator.csi``), so
it plans through a :class:`RateModel`, a rate *function* of bandwidth per device:

- :class:`ShannonRate`: the Shannon rate of known coefficients (the round-start snapshot, or a
  large-scale or predicted value), with its closed forms: the Lambert-W least bandwidth and the
  Newton solution of JBBA's bandwidth subproblem.
- :class:`MixtureRate`: ``Σ_i w_i B log2(1 + a_i/B)``, the time-weighted mean rate over a
  window of past SNR samples (``ergodic`` on replayed traces).
- :class:`RayleighErgodicRate` and :class:`RicianErgodicRate`: the mean over a fading
  distribution of unit mean, ``B E[log2(1 + a|h|²/B)]`` (:func:`ergodic_rate` picks one).

Every model is vectorised the same way: ``devices`` is an integer index array broadcast with the
bandwidth (or rate) argument, and results have the broadcast shape. Each rate is zero at
``B = 0``, increasing and concave in ``B``, and tends to ``E[a|h|²]/ln 2``; so its inverse and
the bandwidth subproblem have unique solutions, found by a bracketed root
(:func:`~desim.world.rate_kernels.bracketed_root`) unless a model has a closed form. The
numeric kernels live in :mod:`desim.world.rate_kernels`. Of desim, this module imports only
them and the errors, so allocators, schemes and the channel use it without depending on one
another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from desim.errors import InputError
from desim.world.rate_kernels import (
    LN2,
    LOG_X_RANGE,
    ROOT_RTOL,
    bracketed_root,
    rayleigh_slope_gap,
    rician_nodes,
    scaled_exp1,
    shannon_dual_bandwidth_hz,
    shannon_gap,
    shannon_least_bandwidth_hz,
    shannon_rate_bps,
)

__all__ = [
    "LN2",
    "MixtureRate",
    "RateModel",
    "RayleighErgodicRate",
    "RicianErgodicRate",
    "ShannonRate",
    "bracketed_root",
    "ergodic_rate",
    "shannon_gap",
    "shannon_least_bandwidth_hz",
    "shannon_rate_bps",
]

#: bracket growth for the least bandwidth: ``×16`` this many times (a factor ``1e72``)
EXPAND_STEPS = 60


def _index(devices: Any) -> np.ndarray:
    return np.asarray(devices, dtype=np.intp)


class RateModel(ABC):
    """A planner's rate function ``r_k(B)`` of bandwidth, for every device ``k``.

    Subclasses implement :meth:`rate_bps` and :meth:`slope` and set :attr:`mean_coef_hz`; the
    inverse and the bandwidth subproblem are bracketed roots here, which a model overrides when
    it has a closed form (:class:`ShannonRate`).

    Attributes:
        mean_coef_hz: ``(K,)`` mean SNR coefficient ``E[a|h|²]`` in Hz, for code that only
            ranks devices by channel; the rate's supremum is ``mean_coef_hz / ln 2``.
    """

    mean_coef_hz: np.ndarray

    @abstractmethod
    def rate_bps(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """Rate in bit/s of each device at each bandwidth in Hz; zero where it is zero."""

    @abstractmethod
    def slope(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """``dr/dB`` in bit/s per Hz (``inf`` at ``B = 0`` for a device with gain)."""

    def limit_bps(self, devices: Any) -> np.ndarray:
        """``sup_B r(B) = E[a|h|²] / ln 2``, the rate with unlimited bandwidth."""
        return self.mean_coef_hz[_index(devices)] / LN2

    def transfer_floor_s(self, bits: Any, devices: Any) -> np.ndarray:
        """Least seconds to move ``bits`` at any bandwidth, ``D / sup r`` (0 for no bits)."""
        d = np.asarray(bits, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d / self.limit_bps(devices), 0.0)

    def least_bandwidth_hz(self, rate_bps: Any, devices: Any) -> np.ndarray:
        """Least ``B`` with ``r(B) ≥ R`` (``inf`` at or above the supremum).

        ``0`` for ``R = 0``; ``inf`` also for a negative or infinite ``R``. A bracketed root of
        ``r(B) − R``: Jensen's inequality gives ``r(B) ≤`` the Shannon rate of the mean
        coefficient, so half its Lambert-W bandwidth is below the root; the upper end grows
        ``×16`` until it is above (``inf`` if it never is within a factor 1e72). The least
        point found with ``r(B) ≥ R`` is returned, so the rate is met.
        """
        rate, dev = np.broadcast_arrays(np.asarray(rate_bps, dtype=float), _index(devices))
        out = np.where(rate == 0, 0.0, np.inf)
        with np.errstate(invalid="ignore"):
            ok = (rate > 0) & np.isfinite(rate) & (rate < self.limit_bps(dev))
        r, d = rate[ok], dev[ok]
        lo = 0.5 * shannon_least_bandwidth_hz(self.mean_coef_hz[d], r)
        finite = np.isfinite(lo)
        r, d, lo = r[finite], d[finite], lo[finite]
        hi = 4.0 * lo
        short = ~(self.rate_bps(hi, d) >= r)
        for _ in range(EXPAND_STEPS):
            if not short.any():
                break
            hi[short] *= 16.0
            short[short] = ~(self.rate_bps(hi[short], d[short]) >= r[short])
        beta = np.full(r.shape, np.inf)
        if (~short).any():
            _, beta[~short] = bracketed_root(
                lambda b, rr, dd: self.rate_bps(b, dd) - rr,
                lo[~short], hi[~short], (r[~short], d[~short]),
            )
        inner = np.full(ok.sum(), np.inf)
        inner[finite] = beta
        out[ok] = inner
        return out

    def dual_bandwidth_hz(self, lam: Any, mu: float, bits: Any, devices: Any) -> np.ndarray:
        """Minimiser over ``B ≥ 0`` of ``λ D / r(B) + μ B`` (JBBA's bandwidth subproblem).

        Stationarity is ``r'(B) / r(B)² = μ / (λ D)``; the left side decreases in ``B`` (``r``
        increasing and concave), so a bracketed root in ``log B`` over
        ``B ∈ ā·[e^-42, e^30]`` (:data:`LOG_X_RANGE`, ``ā`` the mean coefficient) solves it,
        and the solution is clipped to that range as the Shannon closed form is.

        Args:
            lam: latency multipliers ``λ ≥ 0``.
            mu: bandwidth price ``μ ≥ 0`` in s/Hz.
            bits: ``D`` in bits (0 needs no bandwidth).
            devices: device indices (broadcast with ``lam`` and ``bits``).

        Returns:
            Bandwidths in Hz (0 for no bits or a device with no gain).
        """
        lam, d, dev = np.broadcast_arrays(
            np.asarray(lam, dtype=float), np.asarray(bits, dtype=float), _index(devices)
        )
        a = self.mean_coef_hz[dev]
        on = (d > 0) & (a > 0)
        with np.errstate(divide="ignore"):
            log_kappa = np.log(mu) - np.log(lam[on] * d[on])  # +inf at λ = 0
        de, log_a = dev[on], np.log(a[on])
        y_lo, y_hi = log_a - LOG_X_RANGE[1], log_a - LOG_X_RANGE[0]

        def excess(y: np.ndarray, lk: np.ndarray, k: np.ndarray) -> np.ndarray:
            b = np.exp(y)
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.log(self.slope(b, k)) - 2.0 * np.log(self.rate_bps(b, k)) - lk

        at_hi = excess(y_hi, log_kappa, de)
        y = np.where(at_hi >= 0, y_hi, y_lo)
        inner = (excess(y_lo, log_kappa, de) > 0) & (at_hi < 0)
        if inner.any():
            y[inner], _ = bracketed_root(excess, y_lo[inner], y_hi[inner],
                                         (log_kappa[inner], de[inner]), xatol=ROOT_RTOL,
                                         xrtol=0.0)
        out = np.zeros(d.shape)
        out[on] = np.exp(y)
        return out


class ShannonRate(RateModel):
    """The Shannon rate ``B log2(1 + a_k/B)`` of known coefficients (the ``snapshot`` CSI).

    Its numbers are those of the closed forms: :func:`shannon_rate_bps`,
    :func:`shannon_least_bandwidth_hz` and :func:`shannon_dual_bandwidth_hz`.

    Args:
        coef_hz: ``(K,)`` SNR coefficients ``a = p g / N0`` in Hz.
    """

    def __init__(self, coef_hz: Any) -> None:
        self.coef_hz = np.asarray(coef_hz, dtype=float)
        self.mean_coef_hz = self.coef_hz

    def rate_bps(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """:func:`shannon_rate_bps` of the devices' coefficients."""
        return shannon_rate_bps(bandwidth_hz, self.coef_hz[_index(devices)])

    def slope(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """``(ln(1+x) − x/(1+x)) / ln 2`` with ``x = a/B``."""
        b = np.asarray(bandwidth_hz, dtype=float)
        a = self.coef_hz[_index(devices)]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = a / b
            dr = (np.log1p(x) - x / (1.0 + x)) / LN2
        return np.where(b > 0, dr, np.where(a > 0, np.inf, 0.0))

    def transfer_floor_s(self, bits: Any, devices: Any) -> np.ndarray:
        """``D ln2 / a`` (0 for no bits)."""
        d = np.asarray(bits, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d * LN2 / self.coef_hz[_index(devices)], 0.0)

    def least_bandwidth_hz(self, rate_bps: Any, devices: Any) -> np.ndarray:
        """:func:`shannon_least_bandwidth_hz` (Lambert W)."""
        return shannon_least_bandwidth_hz(self.coef_hz[_index(devices)], rate_bps)

    def dual_bandwidth_hz(self, lam: Any, mu: float, bits: Any, devices: Any) -> np.ndarray:
        """:func:`shannon_dual_bandwidth_hz` (Newton in ``log(a/B)``)."""
        return shannon_dual_bandwidth_hz(lam, mu, self.coef_hz[_index(devices)], bits)


class MixtureRate(RateModel):
    """``r_k(B) = Σ_i w_{k,i} B log2(1 + a_{k,i}/B)``: a mean rate over coefficient samples.

    With the samples of a window of past SNR and their durations as weights it is the empirical
    ergodic rate of a replayed trace; with quadrature nodes it is a fading average
    (:class:`RicianErgodicRate`). One sample per device is the Shannon rate
    and is computed as :class:`ShannonRate`, exactly.

    Args:
        coef_hz: ``(K, M)`` coefficient samples in Hz (finite, ``≥ 0``).
        weights: ``(K, M)`` their weights (``≥ 0``, each row summing to 1).

    Raises:
        InputError: shapes differ, or a coefficient or weight is out of range.
    """

    def __init__(self, coef_hz: Any, weights: Any) -> None:
        a = np.asarray(coef_hz, dtype=float)
        w = np.asarray(weights, dtype=float)
        if a.ndim != 2 or w.shape != a.shape:
            raise InputError(f"mixture rate: coef_hz has shape {a.shape} and weights "
                             f"{w.shape}; expected two equal (K, M) shapes")
        if not (np.isfinite(a).all() and (a >= 0).all()):
            raise InputError("mixture rate: coefficients must be finite and >= 0 Hz")
        if not ((w >= 0).all() and np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-9)):
            raise InputError("mixture rate: weights must be >= 0 with rows summing to 1")
        self.coef_hz, self.weights = a, w
        self.mean_coef_hz = (w * a).sum(axis=1)
        self._single = ShannonRate(a[:, 0]) if a.shape[1] == 1 else None

    def rate_bps(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """``Σ_i w_i B ln(1 + a_i/B) / ln 2`` (``log1p``: exact as ``B ≫ a``)."""
        if self._single is not None:
            return self._single.rate_bps(bandwidth_hz, devices)
        b, k = np.broadcast_arrays(np.asarray(bandwidth_hz, dtype=float), _index(devices))
        bb = b[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = bb * np.log1p(self.coef_hz[k] / bb) / LN2
        return np.where(b > 0, (self.weights[k] * np.where(bb > 0, r, 0.0)).sum(axis=-1), 0.0)

    def slope(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """``Σ_i w_i (ln(1+x_i) − x_i/(1+x_i)) / ln 2``, ``x_i = a_i/B`` (:func:`shannon_gap`)."""
        if self._single is not None:
            return self._single.slope(bandwidth_hz, devices)
        b, k = np.broadcast_arrays(np.asarray(bandwidth_hz, dtype=float), _index(devices))
        a = self.coef_hz[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(a > 0, a / b[..., None], 0.0)
        return (self.weights[k] * shannon_gap(x)).sum(axis=-1) / LN2

    def transfer_floor_s(self, bits: Any, devices: Any) -> np.ndarray:
        """``D / sup r`` (:class:`ShannonRate`'s for one sample)."""
        if self._single is not None:
            return self._single.transfer_floor_s(bits, devices)
        return super().transfer_floor_s(bits, devices)

    def least_bandwidth_hz(self, rate_bps: Any, devices: Any) -> np.ndarray:
        """Least ``B`` with ``r(B) ≥ R`` (:meth:`RateModel.least_bandwidth_hz`)."""
        if self._single is not None:
            return self._single.least_bandwidth_hz(rate_bps, devices)
        return super().least_bandwidth_hz(rate_bps, devices)

    def dual_bandwidth_hz(self, lam: Any, mu: float, bits: Any, devices: Any) -> np.ndarray:
        """JBBA's bandwidth subproblem (:meth:`RateModel.dual_bandwidth_hz`)."""
        if self._single is not None:
            return self._single.dual_bandwidth_hz(lam, mu, bits, devices)
        return super().dual_bandwidth_hz(lam, mu, bits, devices)


class RayleighErgodicRate(RateModel):
    """``r_k(B) = B E[log2(1 + a_k X/B)]``, ``X ~ Exp(1)``: Rayleigh fading, in closed form.

    ``E[ln(1 + X/s)] = e^s E1(s)`` for ``s = B/a`` (integrate by parts against ``e^{−x}``), so
    ``r = (B/ln2) e^s E1(s)`` (:func:`~desim.world.rate_kernels.scaled_exp1`). With
    ``d/ds (e^s E1(s)) = e^s E1(s) − 1/s`` the slope is
    ``r' = (e^s E1(s) + s (e^s E1(s) − 1/s)) / ln2 = ((1+s) e^s E1(s) − 1) / ln2``.

    Args:
        mean_coef_hz: ``(K,)`` mean SNR coefficients ``a = p E[g] / N0`` in Hz.
    """

    def __init__(self, mean_coef_hz: Any) -> None:
        self.mean_coef_hz = np.asarray(mean_coef_hz, dtype=float)

    def _s(self, bandwidth_hz: Any, devices: Any) -> tuple[np.ndarray, np.ndarray]:
        b, k = np.broadcast_arrays(np.asarray(bandwidth_hz, dtype=float), _index(devices))
        a = self.mean_coef_hz[k]
        with np.errstate(divide="ignore", invalid="ignore"):
            return b, np.where(a > 0, b / a, np.inf)

    def rate_bps(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """``(B/ln2) e^s E1(s)``, ``s = B/a``; zero where ``B = 0``."""
        b, s = self._s(bandwidth_hz, devices)
        with np.errstate(invalid="ignore"):
            return np.where(b > 0, b * scaled_exp1(s) / LN2, 0.0)

    def slope(self, bandwidth_hz: Any, devices: Any) -> np.ndarray:
        """``((1+s) e^s E1(s) − 1) / ln2`` (no cancellation at large ``s``)."""
        _, s = self._s(bandwidth_hz, devices)
        return rayleigh_slope_gap(s) / LN2


class RicianErgodicRate(MixtureRate):
    """``r_k(B) = B E[log2(1 + a_k X/B)]`` for Rician fading with factor ``K_k``, by quadrature.

    ``X = |h|²`` with ``h = √(K/(K+1)) + CN(0, 1/(K+1))``, so ``2(K+1)X`` is non-central
    chi-square with 2 degrees of freedom and non-centrality ``2K``; ``K = 0`` is Rayleigh and
    ``K = inf`` no fading. The mean is the fixed quadrature of
    :func:`~desim.world.rate_kernels.rician_nodes`, so this is the :class:`MixtureRate` of
    coefficients ``a_k x_j`` with weights ``w_j`` (rows padded with zero weights where devices
    have different factors).

    Args:
        mean_coef_hz: ``(K,)`` mean SNR coefficients in Hz.
        k_factor: Rician ``K`` (line-of-sight to scattered power), ``≥ 0``: one for every
            device, or ``(K,)``.

    Raises:
        InputError: a factor is negative or NaN.
    """

    def __init__(self, mean_coef_hz: Any, k_factor: Any) -> None:
        a = np.asarray(mean_coef_hz, dtype=float)
        k = np.broadcast_to(np.asarray(k_factor, dtype=float), a.shape)
        if not (k >= 0).all():
            raise InputError(f"Rician rate: k_factor {k.tolist()}; expected K >= 0")
        self.k_factor = k
        values, row = np.unique(k, return_inverse=True)
        nodes = [rician_nodes(v) for v in values.tolist()]
        J = max((x.size for x, _ in nodes), default=1)
        x = np.ones((values.size, J))
        w = np.zeros((values.size, J))
        for i, (xi, wi) in enumerate(nodes):
            x[i, : xi.size], w[i, : wi.size] = xi, wi
        super().__init__(a[:, None] * x[row.ravel()], w[row.ravel()])


def ergodic_rate(mean_coef_hz: Any, k_factor: Any) -> RateModel:
    """The ergodic rate model of Rician fading with factors ``k_factor`` (0: Rayleigh).

    Every factor 0 gives the closed form (:class:`RayleighErgodicRate`), every factor ``inf``
    the Shannon rate of the mean, and otherwise the quadrature (:class:`RicianErgodicRate`).

    Args:
        mean_coef_hz: ``(K,)`` mean SNR coefficients in Hz (large-scale gain).
        k_factor: Rician ``K`` per device ``(K,)``, or one for all.
    """
    a = np.asarray(mean_coef_hz, dtype=float)
    k = np.broadcast_to(np.asarray(k_factor, dtype=float), a.shape)
    if (k == 0).all():
        return RayleighErgodicRate(a)
    if np.isinf(k).all():
        return ShannonRate(a)
    return RicianErgodicRate(a, k)
