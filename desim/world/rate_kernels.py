"""Numeric kernels of the rate models: Shannon closed forms, ``e^s E1(s)``, Rician nodes, roots.

Pure array functions behind :mod:`desim.world.rates`, kept apart so the models read as models:

- the Shannon rate ``B log2(1 + a/B)`` (DESIGN §2), its Lambert-W inverse and the Newton
  solution of JBBA's per-pair bandwidth subproblem;
- ``e^s E1(s)`` and ``(1+s) e^s E1(s) − 1`` without overflow or cancellation (the Rayleigh
  ergodic rate and its slope);
- Gauss–Legendre nodes for the mean over Rician power fading;
- an elementwise bracketed root (Chandrupatla's method).

Nothing of desim is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize.elementwise import find_root
from scipy.special import exp1, i0e, lambertw

LN2 = float(np.log(2.0))
#: ``x = a/B`` range of the bandwidth subproblem's solution: ``B ∈ [a e^-42, a e^30]``
LOG_X_RANGE = (-30.0, 42.0)
SUBPROBLEM_STEPS = 30
#: relative tolerance of every bracketed root on the bandwidth
ROOT_RTOL = 1e-13
#: below this ``x = a/B`` the Shannon slope's ``ln(1+x) − x/(1+x)`` is summed as a series
SERIES_BELOW = 1e-2
#: ``e^s E1(s)`` from its asymptotic series above this ``s`` (``exp(s)`` overflows near 709)
ASYMPTOTIC_FROM = 50.0
#: terms of the asymptotic series; at ``s ≥ 50`` the first omitted one is below 2e-17 relative
ASYMPTOTIC_TERMS = 40
#: Rician quadrature: Gauss–Legendre order per panel in ``u = ln x``
PANEL_ORDER = 8
#: the Rician quadrature leaves out ``x < e^-36.8`` and tails of probability ``≤ e^-46``
LOG_X_FLOOR, TAIL_EXPONENT = -36.8, 46.0


def shannon_rate_bps(bandwidth_hz: np.ndarray, snr_coef_hz: np.ndarray) -> np.ndarray:
    """Rate ``B log2(1 + a/B)`` in bit/s; zero where the bandwidth is zero."""
    b = np.asarray(bandwidth_hz, dtype=float)
    a = np.asarray(snr_coef_hz, dtype=float)
    on = b > 0
    # a / b only where b > 0 (no warnings to silence); the other entries are zeroed below
    r = b * np.log2(1.0 + np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=on))
    return np.where(on, r, 0.0)


def shannon_least_bandwidth_hz(snr_coef_hz: np.ndarray, rate_bps: np.ndarray) -> np.ndarray:
    """Least bandwidth ``β`` with ``β log2(1 + a/β) ≥ R`` (DESIGN §2, exact P2 reference).

    With ``c = R ln2 / a``: ``β = a/(u − 1)``, ``u = −W₋₁(−c e^{−c})/c`` (Lambert W, branch −1).

    Args:
        snr_coef_hz: ``a = p g / N0`` in Hz (any shape, broadcast with ``rate_bps``).
        rate_bps: required rate ``R`` in bit/s; ``0`` needs no bandwidth, negative or ``inf``
            (no time left) is unreachable.

    Returns:
        Bandwidths in Hz; ``inf`` where ``R`` is at least the supremum rate ``a/ln2``.
    """
    a, rate = np.broadcast_arrays(
        np.asarray(snr_coef_hz, dtype=float), np.asarray(rate_bps, dtype=float)
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        c = rate * LN2 / a
        ok = (c > 0) & (c < 1) & np.isfinite(c)
        cc = np.where(ok, c, 0.5)
        u = -lambertw(-cc * np.exp(-cc), -1).real / cc
        beta = a / (u - 1.0)
    beta = np.where(ok & (beta > 0), beta, np.inf)
    return np.where(rate == 0, 0.0, beta)


def _stationarity(x: np.ndarray) -> np.ndarray:
    """``h(x) = x² (ln(1+x) − x/(1+x)) / ln²(1+x)``, increasing in ``x > 0``."""
    lg = np.log1p(x)
    small = x < 1e-3
    gap = np.where(small, x * x * (0.5 - x * (2.0 / 3.0 - 0.75 * x)), lg - x / (1.0 + x))
    return x * x * gap / (lg * lg)


def shannon_dual_bandwidth_hz(
    lam: np.ndarray, mu: float, snr_coef_hz: np.ndarray, bits: np.ndarray
) -> np.ndarray:
    """Minimiser of ``λ D / r(B) + μ B`` over ``B ≥ 0`` for the Shannon rate (broadcast arrays).

    Newton's method in ``y = log x``, ``x = a/B``, on the stationarity condition
    ``x² (ln(1+x) − x/(1+x)) / ln²(1+x) = μ a² / (λ D ln 2)``, with ``x`` kept in
    :data:`LOG_X_RANGE`.

    Args:
        lam: latency multipliers ``λ ≥ 0``.
        mu: bandwidth price ``μ > 0`` in s/Hz.
        snr_coef_hz: ``a = p g / N0`` in Hz.
        bits: ``D`` in bits (0 needs no bandwidth).

    Returns:
        Bandwidths in Hz.
    """
    lam, a, d = np.broadcast_arrays(lam, snr_coef_hz, bits)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_kappa = np.log(mu) + 2.0 * np.log(a) - np.log(lam * d * LN2)
    target = np.clip(np.nan_to_num(log_kappa, nan=0.0), -200.0, 200.0)
    # log h(e^y) has slope between 1 and 2 in y: Newton from the small-x asymptote h ≈ x²/2
    y = np.clip(0.5 * (target + LN2), *LOG_X_RANGE)
    eps = 1e-6
    for _ in range(SUBPROBLEM_STEPS):
        g = np.log(_stationarity(np.exp(y)))
        slope = (np.log(_stationarity(np.exp(y + eps))) - g) / eps
        step = (g - target) / np.maximum(slope, 0.5)
        y = np.clip(y - step, *LOG_X_RANGE)
        if np.all(np.abs(step) < 1e-10):
            break
    x = np.exp(y)
    return np.where((d > 0) & (a > 0), a / x, 0.0)


def shannon_gap(x: np.ndarray) -> np.ndarray:
    """``ln(1+x) − x/(1+x)`` for ``x ≥ 0`` (``ln 2`` times the slope of ``B log2(1 + a/B)``).

    Below :data:`SERIES_BELOW` it is the series ``Σ_{n≥2} (−1)^n (n−1) x^n / n`` to ``x⁹``
    (exact to 2e-16 relative there), where the difference of the two terms would lose
    ``eps/x``.
    """
    x = np.asarray(x, dtype=float)
    small = x < SERIES_BELOW
    xs = np.where(small, x, 0.0)
    series = np.zeros_like(xs)
    for n in range(9, 1, -1):  # Horner over the coefficients (−1)^n (n−1)/n of x^n
        series = series * xs + (-1.0) ** n * (n - 1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        direct = np.log1p(x) - x / (1.0 + x)
    return np.where(small, series * xs * xs, np.where(np.isinf(x), np.inf, direct))


def _horner(z: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    out = np.zeros_like(z)
    for c in coefs[::-1]:
        out = out * z + c
    return out


_FACT = np.cumprod(np.concatenate(([1.0], np.arange(1.0, ASYMPTOTIC_TERMS + 1))))
_SIGN = (-1.0) ** np.arange(ASYMPTOTIC_TERMS)
#: ``e^s E1(s) ~ z Σ (−1)^n n! z^n`` with ``z = 1/s``
_F_COEFS = _SIGN * _FACT[:ASYMPTOTIC_TERMS]
#: ``(1+s) e^s E1(s) − 1 ~ z² Σ (−1)^m (m+1) (m+1)! z^m``
_H_COEFS = _SIGN * np.arange(1.0, ASYMPTOTIC_TERMS + 1) * _FACT[1 : ASYMPTOTIC_TERMS + 1]


def _two_branch(s: Any, near: Callable[[np.ndarray], np.ndarray],
                far: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``near(s)`` up to :data:`ASYMPTOTIC_FROM`, ``far(1/s)`` above (evaluated only there)."""
    s = np.asarray(s, dtype=float)
    big = s > ASYMPTOTIC_FROM
    out = np.array(near(np.where(big, 1.0, s)), dtype=float)
    if big.any():
        with np.errstate(divide="ignore"):
            out[big] = far(1.0 / s[big])
    return out


def scaled_exp1(s: Any) -> np.ndarray:
    """``e^s E1(s) = ∫₀^∞ e^{−t} / (s + t) dt`` for ``s ≥ 0`` (``inf`` at 0, ``0`` at ``inf``).

    ``scipy.special.exp1`` times ``exp`` up to :data:`ASYMPTOTIC_FROM`, the asymptotic series
    ``1/s − 1/s² + 2/s³ − …`` above (where ``exp(s)`` would overflow).
    """
    return _two_branch(s, lambda x: np.exp(x) * exp1(x), lambda z: z * _horner(z, _F_COEFS))


def rayleigh_slope_gap(s: Any) -> np.ndarray:
    """``(1 + s) e^s E1(s) − 1 = ∫₀^∞ t e^{−t} / (s+t)² dt > 0`` for ``s ≥ 0``.

    Directly up to :data:`ASYMPTOTIC_FROM` (relative error growing like ``eps s²``, under
    1e-12 at ``s = 50``), by the asymptotic series ``1/s² − 4/s³ + 18/s⁴ − …`` above, where
    the direct difference would cancel.
    """
    return _two_branch(s, lambda x: (1.0 + x) * np.exp(x) * exp1(x) - 1.0,
                       lambda z: z * z * _horner(z, _H_COEFS))


def rician_nodes(k_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights for ``E[g(X)]``, ``X = |h|²`` Rician with factor ``K``.

    The density ``p(x) = (K+1) e^{−K−(K+1)x} I0(2√(K(K+1)x))`` is integrated in ``u = ln x``
    (weights ``p(x) x du``), where ``ln(1 + c x)`` is a smooth soft ramp for every ``c``, by
    8-point Gauss–Legendre panels over ``√x ∈ √(K/(K+1)) ± √(46/(K+1))`` (tails ``≤ e^-46``;
    ``x < e^-36.8`` left out): of width 1 up to ``x = K/(4(K+1))``, of width
    ``min(1, 2√(2/(K+1)))`` over the bulk above. Weights are then scaled to sum to 1 and nodes
    to mean 1. Against adaptive quadrature (``scipy.integrate.quad``) ``E[ln(1 + cX)]`` is
    within 2e-11 relative for ``K`` from 0 to 1000 and ``c`` from 1e-6 to 1e12, with 80 to 344
    nodes. ``K = inf`` (no scattering) is the single node ``x = 1``.

    Returns:
        ``(J,)`` nodes ``x_j`` and ``(J,)`` weights ``w_j``.
    """
    k = float(k_factor)
    if np.isinf(k):
        return np.ones(1), np.ones(1)
    mean = np.sqrt(k / (k + 1.0))
    spread = np.sqrt(TAIL_EXPONENT / (k + 1.0))
    u_lo = max(2.0 * np.log(mean - spread) if mean > spread else LOG_X_FLOOR, LOG_X_FLOOR)
    u_hi = 2.0 * np.log(mean + spread)
    # panels of width 1 up to x = (mean/2)², where the density is a smooth exponential in u,
    # then narrower ones over the bulk, whose width in u shrinks like 1/√K
    u_mid = min(max(2.0 * np.log(mean / 2.0) if mean > 0 else u_lo, u_lo), u_hi)
    width = min(1.0, 2.0 * np.sqrt(2.0 / (k + 1.0)))
    edges = np.concatenate((
        np.linspace(u_lo, u_mid, int(np.ceil(u_mid - u_lo)) + 1)[:-1],
        np.linspace(u_mid, u_hi, int(np.ceil((u_hi - u_mid) / width)) + 1),
    ))
    t, wt = np.polynomial.legendre.leggauss(PANEL_ORDER)
    half = 0.5 * np.diff(edges)[:, None]
    x = np.exp((0.5 * (edges[1:] + edges[:-1])[:, None] + half * t).ravel())
    # I0(z) e^{−K−(K+1)x} = i0e(z) e^{−(√((K+1)x) − √K)²}: no overflow at large K
    z = 2.0 * np.sqrt(k * (k + 1.0) * x)
    p = (k + 1.0) * i0e(z) * np.exp(-((np.sqrt((k + 1.0) * x) - np.sqrt(k)) ** 2))
    w = p * x * (half * wt).ravel()
    w = w / w.sum()
    return x / (w * x).sum(), w


def bracketed_root(
    f: Callable[..., np.ndarray], lo: np.ndarray, hi: np.ndarray, args: tuple[Any, ...],
    *, xatol: float = 0.0, xrtol: float = ROOT_RTOL,
) -> tuple[np.ndarray, np.ndarray]:
    """Roots of the monotone ``f(x, *args)`` in ``[lo, hi]``, elementwise.

    Chandrupatla's bracketed method (``scipy.optimize.elementwise.find_root``), stopped only by
    the bracket width ``xatol + xrtol |x|`` (or an exact zero): no tolerance on ``f``.

    Returns:
        The root (the final bracket's end with the smaller ``|f|``) and, for an increasing
        ``f``, the least point found with ``f ≥ 0`` (that end if ``f ≥ 0`` there, else the
        upper end).

    Raises:
        ArithmeticError: ``[lo, hi]`` does not bracket a root, or ``f`` is not finite in it.
    """
    res = find_root(f, (lo, hi), args=args,
                    tolerances={"xatol": xatol, "xrtol": xrtol, "fatol": 0.0, "frtol": 0.0})
    if np.any(res.status != 0):
        raise ArithmeticError(f"bracketed root failed (statuses {np.unique(res.status)})")
    return res.x, np.where(res.f_x >= 0, res.x, res.bracket[1])
