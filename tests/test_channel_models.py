"""TR 38.901 path loss, LOS probability, shadowing, Jakes/Rician fading (seeded, toleranced)."""

import numpy as np
import pytest
from scipy import special, stats

from desim.world.fading import doppler_hz, jakes_fading, rician_fading
from desim.world.mobility import MobilityChannelParams, generate_gain_db, reflect
from desim.world.pathloss import (
    breakpoint_distance_m,
    gudmundson_shadowing_db,
    los_probability,
    path_loss_db,
)

FC = 3.5


def d3(d2, h_bs):
    return np.hypot(d2, h_bs - 1.5)


def test_breakpoint_distances():
    # d'BP = 4 (hBS - 1)(hUT - 1) fc / c
    assert breakpoint_distance_m("umi", FC) == pytest.approx(4 * 9 * 0.5 * 3.5e9 / 3e8)  # 210 m
    assert breakpoint_distance_m("uma", FC) == pytest.approx(4 * 24 * 0.5 * 3.5e9 / 3e8)  # 560 m
    assert breakpoint_distance_m("umi", FC) == pytest.approx(210.0)


@pytest.mark.parametrize("d2", [20.0, 100.0, 200.0])
def test_umi_los_below_breakpoint(d2):
    want = 32.4 + 21 * np.log10(d3(d2, 10)) + 20 * np.log10(FC)
    assert path_loss_db("umi-los", d2, FC) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("d2", [300.0, 1000.0])
def test_umi_los_above_breakpoint(d2):
    want = 32.4 + 40 * np.log10(d3(d2, 10)) + 20 * np.log10(FC) - 9.5 * np.log10(210.0**2 + 8.5**2)
    assert path_loss_db("umi-los", d2, FC) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("d2", [50.0, 150.0, 400.0])
def test_umi_nlos(d2):
    los = float(path_loss_db("umi-los", d2, FC))
    nlos = 35.3 * np.log10(d3(d2, 10)) + 22.4 + 21.3 * np.log10(FC)
    assert path_loss_db("umi-nlos", d2, FC) == pytest.approx(max(los, nlos), abs=1e-9)
    assert nlos > los  # NLOS is the binding term at these distances


@pytest.mark.parametrize("d2", [100.0, 500.0, 1000.0])
def test_uma_los_and_nlos(d2):
    d = d3(d2, 25)
    if d2 <= 560.0:
        los = 28.0 + 22 * np.log10(d) + 20 * np.log10(FC)
    else:
        los = 28.0 + 40 * np.log10(d) + 20 * np.log10(FC) - 9 * np.log10(560.0**2 + 23.5**2)
    nlos = 13.54 + 39.08 * np.log10(d) + 20 * np.log10(FC)
    assert path_loss_db("uma-los", d2, FC) == pytest.approx(los, abs=1e-9)
    assert path_loss_db("uma-nlos", d2, FC) == pytest.approx(max(los, nlos), abs=1e-9)


def test_path_loss_reference_value():
    # UMi LOS at 100 m, 3.5 GHz: 32.4 + 21 log10(100.3606) + 20 log10(3.5) = 85.3142 dB
    assert float(path_loss_db("umi-los", 100.0, 3.5)) == pytest.approx(85.3142, abs=1e-3)


def test_los_probability():
    assert los_probability("umi", np.array([5.0, 18.0])).tolist() == [1.0, 1.0]
    d = 100.0
    assert los_probability("umi", d) == pytest.approx(0.18 + np.exp(-d / 36) * 0.82)
    assert los_probability("uma", d) == pytest.approx(0.18 + np.exp(-d / 63) * 0.82)
    p = los_probability("umi", np.linspace(18, 1000, 50))
    assert np.all(np.diff(p) < 0)


def test_rayleigh_mean_power_and_envelope_ks():
    # 4000 independent links sampled at one time: |h|^2 mean 1 within 5 %, envelope Rayleigh
    rng = np.random.default_rng(1)
    h = jakes_fading(np.array([0.37]), 20.0, 4000, rng)[:, 0]
    power = np.abs(h) ** 2
    assert power.mean() == pytest.approx(1.0, rel=0.05)
    ks = stats.kstest(np.abs(h), "rayleigh", args=(0.0, np.sqrt(0.5)))
    assert ks.pvalue > 0.01


def test_rayleigh_time_average_power_of_one_link():
    rng = np.random.default_rng(2)
    t = np.arange(0, 200, 0.01)
    h = jakes_fading(t, doppler_hz(30, 3.5), 4, rng)
    assert np.mean(np.abs(h) ** 2, axis=1) == pytest.approx(np.ones(4), rel=0.1)


def test_fading_autocorrelation_is_bessel_j0():
    # E[h(t) h*(t + tau)] = J0(2 pi fD tau): 3000 links, atol 0.07 (3 sigma of the estimate)
    rng = np.random.default_rng(3)
    f_d = 10.0
    tau = np.arange(0, 0.2, 0.005)
    h = jakes_fading(tau, f_d, 3000, rng)
    acf = np.mean(h[:, :1].conj() * h, axis=0).real
    np.testing.assert_allclose(acf, special.j0(2 * np.pi * f_d * tau), atol=0.07)


@pytest.mark.parametrize("k_db", [3.0, 9.0])
def test_rician_k_factor_is_recovered(k_db):
    rng = np.random.default_rng(4)
    k = 10 ** (k_db / 10)
    h = rician_fading(np.array([0.5]), 5.0, np.full(20000, k), rng)[:, 0]
    p = np.abs(h) ** 2
    m2, m4 = p.mean(), np.mean(p**2)
    root = np.sqrt(2 * m2**2 - m4)
    k_hat = root / (m2 - root)  # moment estimator
    assert m2 == pytest.approx(1.0, rel=0.03)
    assert 10 * np.log10(k_hat) == pytest.approx(k_db, abs=0.5)


def test_gudmundson_shadowing_std_and_correlation():
    rng = np.random.default_rng(5)
    walked = np.broadcast_to(np.arange(400) * 1.0, (500, 400))  # 1 m per sample
    s = gudmundson_shadowing_db(walked, 7.82, 13.0, rng)
    assert s.std() == pytest.approx(7.82, rel=0.05)
    corr = np.mean(s[:, 100:300] * s[:, 113:313]) / np.mean(s[:, 100:300] ** 2)
    assert corr == pytest.approx(np.exp(-1.0), abs=0.05)


def test_reflect_folds_into_range():
    x = np.array([40.0, 50.0, 120.0, 310.0, 600.0])
    assert reflect(x, 50.0, 300.0).tolist() == [60.0, 50.0, 120.0, 290.0, 100.0]


def test_generated_gain_is_seeded_and_consistent():
    params = MobilityChannelParams(duration_s=20.0, step_s=0.1, fading="none", shadowing=False)
    t, g, los = generate_gain_db(params, np.array([100.0, 250.0]), np.random.default_rng(7))
    t2, g2, _ = generate_gain_db(params, np.array([100.0, 250.0]), np.random.default_rng(7))
    np.testing.assert_array_equal(g, g2)
    assert t.size == 200 and t[1] == pytest.approx(0.1)
    # without shadowing or fading the gain is minus the state's path loss at the start
    start = [
        path_loss_db("umi-los" if s else "umi-nlos", d, 3.5)
        for s, d in zip(los[:, 0], [100.0, 250.0])
    ]
    np.testing.assert_allclose(-g[:, 0], start, atol=1e-9)
