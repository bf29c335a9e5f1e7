"""TR 38.901 large-scale propagation: path loss, LOS probability and log-normal shadowing.

- 3GPP TR 38.901 path loss for UMi street canyon and UMa, LOS and NLOS (Table 7.4.1-1, with the
  breakpoint distance ``d'_BP = 4 h'_BS h'_UT f_c / c``, ``h_E = 1`` m) and the LOS probability
  of Table 7.4.2-1; free space for reference.
- Log-normal shadowing with distance-correlated (Gudmundson) updates,
  ``S_{n+1} = ρ S_n + sqrt(1 - ρ²) σ ε`` with ``ρ = exp(-Δd / d_corr)``; ``σ`` and ``d_corr``
  from TR 38.901 Table 7.5-6 (UMi 4 / 7.82 dB, 10 / 13 m; UMa 4 / 6 dB, 37 / 50 m).

Assumptions: BS heights 10 m (UMi) and 25 m (UMa), UT height 1.5 m (so UMa's ``C(d_2D, h_UT)``
is 0 and ``h_E = 1`` m). Random draws come from a passed-in :class:`numpy.random.Generator`.
"""

from __future__ import annotations

import numpy as np

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
