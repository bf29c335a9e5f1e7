"""Rate models (desim.world.rates): Monte Carlo and quadrature checks, inverses, slopes, the
bandwidth subproblem, and the allocators planning under a non-Shannon rate."""

import dataclasses
import itertools
import types

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import minimize_scalar
from scipy.special import i0e

from desim.allocators import ALLOCATORS, check_allocation, make_allocator
from desim.allocators.bandwidth import minmax_latency_s
from desim.allocators.exact import least_total_bandwidth
from desim.allocators.instances import random_context
from desim.errors import InputError
from desim.schemes.fl_lora import FedLoRAScheme
from desim.world.rate_kernels import rayleigh_slope_gap, scaled_exp1
from desim.world.rates import (
    LN2,
    MixtureRate,
    RateModel,
    RayleighErgodicRate,
    RicianErgodicRate,
    ShannonRate,
    ergodic_rate,
    shannon_rate_bps,
)

DRAWS = 100_000
MEAN_COEF_HZ = np.array([1e7, 1e8, 1e9])
BANDWIDTHS_HZ = np.array([1e5, 1e6, 1e7])
K_FACTOR = 3.0


def models() -> dict[str, RateModel]:
    a = np.array([3e5, 2e7, 4e9])
    rng = np.random.default_rng(7)
    w = rng.dirichlet(np.ones(4), size=a.size)
    return {
        "shannon": ShannonRate(a),
        "rayleigh": RayleighErgodicRate(a),
        "rician": RicianErgodicRate(a, K_FACTOR),
        "mixture": MixtureRate(a[:, None] * rng.uniform(0.05, 3.0, (a.size, 4)), w),
    }


# --- the ergodic rates against Monte Carlo and adaptive quadrature ---------------------------


def mc_rate(samples: np.ndarray) -> np.ndarray:
    """``(3, 3)`` Monte Carlo ``B E[log2(1 + a X / B)]`` over the coefficient × bandwidth grid."""
    a, b = MEAN_COEF_HZ[:, None, None], BANDWIDTHS_HZ[None, :, None]
    return (b * np.log2(1.0 + a * samples / b)).mean(axis=-1)


def grid_rate(model: RateModel) -> np.ndarray:
    return model.rate_bps(BANDWIDTHS_HZ[None, :], np.arange(3)[:, None])


def test_rayleigh_rate_matches_monte_carlo():
    x = np.random.default_rng(20240715).exponential(size=DRAWS)
    err = grid_rate(RayleighErgodicRate(MEAN_COEF_HZ)) / mc_rate(x) - 1
    # SNR a/B from 1 to 1e4; the 1e5-draw estimate has a ~0.2% standard error at SNR 1
    assert np.abs(err).max() < 5e-3, err


def test_rician_rate_matches_monte_carlo():
    rng = np.random.default_rng(20240716)
    z = (rng.standard_normal(DRAWS) + 1j * rng.standard_normal(DRAWS)) / np.sqrt(2)
    x = np.abs(np.sqrt(K_FACTOR / (K_FACTOR + 1)) + z / np.sqrt(K_FACTOR + 1)) ** 2
    err = grid_rate(RicianErgodicRate(MEAN_COEF_HZ, K_FACTOR)) / mc_rate(x) - 1
    assert np.abs(err).max() < 5e-3, err


@pytest.mark.parametrize("k", [0.5, 3.0, 20.0])
def test_rician_quadrature_matches_adaptive_quadrature(k):
    def density(x):
        z = 2 * np.sqrt(k * (k + 1) * x)
        return (k + 1) * i0e(z) * np.exp(-((np.sqrt((k + 1) * x) - np.sqrt(k)) ** 2))

    model = RicianErgodicRate(np.array([1.0]), k)
    for snr in [1e-3, 1.0, 1e3, 1e6]:
        f = lambda x, snr=snr: density(x) * np.log1p(snr * x)  # noqa: E731
        exact = sum(quad(f, lo, hi, epsabs=0, epsrel=1e-12, limit=400)[0]
                    for lo, hi in [(0, 1), (1, np.inf)])
        got = model.rate_bps(1.0 / snr, 0) * snr * LN2  # E[ln(1 + snr X)]
        assert got == pytest.approx(exact, rel=1e-8)  # the documented bound is 1e-11


def test_rician_with_k_zero_is_the_rayleigh_closed_form():
    b = np.geomspace(1e2, 1e12, 21)
    ray, ric = RayleighErgodicRate([1e8]), RicianErgodicRate([1e8], 0.0)
    np.testing.assert_allclose(ric.rate_bps(b, 0), ray.rate_bps(b, 0), rtol=1e-10)
    np.testing.assert_allclose(ric.slope(b, 0), ray.slope(b, 0), rtol=1e-7)


def test_scaled_exp1_has_no_overflow_and_the_right_tail():
    s = np.array([49.0, 50.0, 51.0, 800.0, 1e13])
    f, h = scaled_exp1(s), rayleigh_slope_gap(s)
    assert np.all(np.isfinite(f)) and np.all(h > 0)
    # the branch switch at s = 50 is continuous to 1e-12
    assert scaled_exp1(50.0 + 1e-9) == pytest.approx(float(scaled_exp1(50.0)), rel=1e-12)
    assert rayleigh_slope_gap(50.0 + 1e-9) == pytest.approx(float(rayleigh_slope_gap(50.0)),
                                                            rel=1e-11)
    assert f[-1] == pytest.approx(1 / 1e13 - 1 / 1e26, rel=1e-15)
    assert h[-1] == pytest.approx(1 / 1e26 - 4 / 1e39, rel=1e-12)
    assert scaled_exp1(0.0) == np.inf and scaled_exp1(np.inf) == 0.0


# --- inverse, slope and the bandwidth subproblem of every model ------------------------------


@pytest.mark.parametrize("name", ["shannon", "rayleigh", "rician", "mixture"])
def test_least_bandwidth_round_trips_and_is_inf_at_the_limit(name):
    m = models()[name]
    dev = np.repeat(np.arange(3), 7)
    frac = np.tile([1e-6, 1e-3, 0.1, 0.5, 0.9, 0.99, 0.999], 3)
    rate = frac * m.limit_bps(dev)
    beta = m.least_bandwidth_hz(rate, dev)
    assert np.all(np.isfinite(beta) & (beta > 0))
    np.testing.assert_allclose(m.rate_bps(beta, dev), rate, rtol=1e-9)
    assert np.all(m.rate_bps(beta * (1 - 1e-8), dev) < rate)  # and it is the least
    edge = m.least_bandwidth_hz(np.array([1.0, 1.5, np.inf, -1.0, 0.0]) * m.limit_bps(0), 0)
    assert np.isinf(edge[:4]).all() and edge[4] == 0.0


@pytest.mark.parametrize("name", ["shannon", "rayleigh", "rician", "mixture"])
def test_slope_matches_a_finite_difference(name):
    m = models()[name]
    # up to s = B/a ≫ 50 for the Rayleigh branch; the Shannon rate's log2(1 + a/B) (today's
    # formula, kept to the bit) is too coarse for a finite difference beyond B = 100 a
    b = np.geomspace(1e3, 1e11 if name != "shannon" else 3e7, 9)[:, None]
    dev = np.arange(3)[None, :]
    h = 1e-5 * b
    fd = (m.rate_bps(b + h, dev) - m.rate_bps(b - h, dev)) / (2 * h)
    np.testing.assert_allclose(m.slope(b, dev), fd, rtol=2e-5)
    assert np.all(m.slope(0.0, dev) == np.inf)


def test_shannon_slope_is_accurate_far_above_the_coefficient():
    x = np.array([1e-2, 1e-4, 3e-6])
    series = sum((-1) ** n * (n - 1) / n * x**n for n in range(2, 14)) / LN2
    np.testing.assert_allclose(ShannonRate([1.0]).slope(1.0 / x, 0), series, rtol=1e-9)


@pytest.mark.parametrize("name", ["shannon", "rayleigh", "rician", "mixture"])
def test_dual_bandwidth_is_the_minimiser(name):
    m = models()[name]
    bits, mu = 2e6, 3e-8
    for k, lam in itertools.product(range(3), [0.05, 0.4, 1.0]):
        phi = lambda y: lam * bits / m.rate_bps(np.exp(y), k) + mu * np.exp(y)  # noqa: E731,B023
        b = float(m.dual_bandwidth_hz(lam, mu, bits, k))
        ref = minimize_scalar(phi, bounds=(np.log(b) - 5, np.log(b) + 5), method="bounded",
                              options={"xatol": 1e-10})
        assert phi(np.log(b)) <= ref.fun * (1 + 1e-12)
        assert b == pytest.approx(np.exp(ref.x), rel=1e-4)
    assert m.dual_bandwidth_hz(1.0, mu, 0.0, 0) == 0.0


def test_the_bracketed_dual_agrees_with_the_shannon_newton_solution():
    m = models()["shannon"]
    lam = np.array([1e-4, 0.01, 0.3, 1.0])[None, :]
    dev = np.arange(3)[:, None]
    newton = m.dual_bandwidth_hz(lam, 1e-8, 1e6, dev)
    bracketed = RateModel.dual_bandwidth_hz(m, lam, 1e-8, 1e6, dev)
    np.testing.assert_allclose(bracketed, newton, rtol=1e-9)


def test_a_one_sample_mixture_is_the_shannon_rate_exactly():
    a = np.array([0.0, 3e5, 2e7, 4e9])
    mix, sh = MixtureRate(a[:, None], np.ones((4, 1))), ShannonRate(a)
    b = np.geomspace(1e2, 1e10, 17)[:, None]
    dev = np.arange(4)[None, :]
    for method in ("rate_bps", "slope"):
        assert np.array_equal(getattr(mix, method)(b, dev), getattr(sh, method)(b, dev))
    rate = 0.3 * sh.limit_bps(dev) * np.ones_like(b)
    assert np.array_equal(mix.least_bandwidth_hz(rate, dev), sh.least_bandwidth_hz(rate, dev))
    assert np.array_equal(mix.dual_bandwidth_hz(b * 1e-9, 1e-8, 1e6, dev),
                          sh.dual_bandwidth_hz(b * 1e-9, 1e-8, 1e6, dev))
    assert np.array_equal(mix.rate_bps(b, dev), shannon_rate_bps(b, a[None, :]))


def test_mixture_rejects_bad_weights():
    with pytest.raises(InputError, match="summing to 1"):
        MixtureRate(np.ones((2, 3)), np.full((2, 3), 0.5))
    with pytest.raises(InputError, match="shape"):
        MixtureRate(np.ones((2, 3)), np.ones((2, 2)) / 2)


def test_ergodic_rate_picks_the_closed_form_or_the_quadrature():
    a = np.array([1e7, 1e8])
    assert isinstance(ergodic_rate(a, 0.0), RayleighErgodicRate)
    assert isinstance(ergodic_rate(a, np.inf), ShannonRate)
    both = ergodic_rate(a, [2.0, 10.0])
    assert isinstance(both, RicianErgodicRate)
    for k in range(2):  # per-device factors, rows padded to the longer quadrature
        alone = RicianErgodicRate(a, both.k_factor[k])
        assert both.rate_bps(1e6, k) == pytest.approx(float(alone.rate_bps(1e6, k)), rel=1e-14)


# --- planners under a non-Shannon rate ------------------------------------------------------


def rayleigh_ctx(seed, k, n, **kw):
    ctx = random_context(np.random.default_rng(seed), k, n, **kw)
    return dataclasses.replace(ctx, rate=RayleighErgodicRate(ctx.snr_coef_hz))


def test_the_context_plans_with_its_rate_model():
    ctx = random_context(np.random.default_rng(0), 4, 2)
    assert isinstance(ctx.rates, ShannonRate) and ctx.rates is ctx.rates
    assert np.array_equal(ctx.rates.mean_coef_hz, ctx.snr_coef_hz)
    ray = dataclasses.replace(ctx, rate=RayleighErgodicRate(ctx.snr_coef_hz))
    bw = np.full(4, 1e6)
    # Jensen: fading costs rate, so every planned upload is slower under the ergodic rate
    assert np.all(ray.upload_s(bw) > ctx.upload_s(bw))


@pytest.mark.parametrize("seed", range(6))
def test_every_allocator_is_feasible_under_the_ergodic_rate(seed):
    ctx = rayleigh_ctx(seed, 6, 3, unavailable=0.2)  # feasible for every allocator
    # the oracle allocators plan with the true future (ctx.future), not with a rate model
    for name in sorted(n for n in ALLOCATORS if not n.startswith("oracle")):
        alloc = make_allocator(name).allocate(ctx, np.random.default_rng(seed))
        check_allocation(ctx, alloc)
        assert np.isfinite(ctx.round_latency_s(alloc))
        if alloc.estimated_latency_s is not None:
            assert alloc.estimated_latency_s == pytest.approx(ctx.round_latency_s(alloc), rel=1e-9)


def brute_force(ctx):
    """Every feasible map with its min-max split under ``ctx.rates``: ``(maps, latencies)``."""
    k, n = ctx.num_devices, ctx.num_blocks
    ok = ctx.eligible()
    maps = np.array([p for p in itertools.permutations(range(k), n)
                     if ok[list(p), np.arange(n)].all()])
    lat, _ = minmax_latency_s(ctx.compute_s[maps, np.arange(n)], ctx.upload_bits, ctx.rates,
                              maps, ctx.total_bandwidth_hz)
    return maps, lat


@pytest.mark.parametrize("seed", range(8))
def test_jbba_exact_is_the_brute_force_optimum_under_the_ergodic_rate(seed):
    ctx = rayleigh_ctx(seed, 4 + seed % 3, 2 + seed % 2)
    best = float(brute_force(ctx)[1].min())
    exact = make_allocator("jbba-exact", {"tolerance": 1e-9}).allocate(ctx, None)
    assert ctx.round_latency_s(exact) == pytest.approx(best + ctx.aggregation_s, rel=1e-8)
    # its feasibility test (min-sum of least bandwidths ≤ B) flips exactly at the optimum
    devices, band = np.arange(ctx.num_devices), ctx.total_bandwidth_hz
    assert least_total_bandwidth(ctx, devices, best * (1 + 1e-7))[0] <= band
    assert least_total_bandwidth(ctx, devices, best * (1 - 1e-7))[0] > band
    jbba = make_allocator("jbba").allocate(ctx, None)
    assert ctx.round_latency_s(jbba) >= best * (1 - 1e-9)  # nothing beats the optimum
    assert jbba.diagnostics["dual_bound_s"] <= best * (1 + 1e-9)  # weak duality
    # and the Shannon optimum at the same mean SNR is faster (Jensen)
    shannon = dataclasses.replace(ctx, rate=None)
    fast = make_allocator("jbba-exact").allocate(shannon, None)
    assert shannon.round_latency_s(fast) < best


def test_the_ergodic_optimum_is_another_assignment_than_the_snapshot_one():
    # seed 4 (5 devices, 2 blocks): fading costs the strong devices more rate, and the
    # Shannon-optimal map is 0.63% slower than the ergodic optimum under the ergodic rate
    ctx = rayleigh_ctx(4, 5, 2)
    maps, lat = brute_force(ctx)
    snapshot = int(np.argmin(brute_force(dataclasses.replace(ctx, rate=None))[1]))  # same maps
    shannon_best, ergodic_best = maps[snapshot], maps[np.argmin(lat)]
    assert lat[snapshot] > lat.min() * 1.006
    for name in ("jbba-exact", "jbba", "brute-force"):
        alloc = make_allocator(name).allocate(ctx, None)
        assert np.array_equal(alloc.block_device, ergodic_best), name
        assert not np.array_equal(alloc.block_device, shannon_best)


def test_minmax_split_equalises_latencies_and_uses_the_band_under_the_ergodic_rate():
    ctx = rayleigh_ctx(3, 30, 12)
    alloc = make_allocator("crunch", {"bandwidth": "minmax"}).allocate(ctx, None)
    pair = ctx.pair_latency_s(alloc)
    assert pair.max() - pair.min() <= 1e-9 * pair.max()
    assert alloc.bandwidth_hz.sum() == pytest.approx(ctx.total_bandwidth_hz, rel=1e-12)
    equal = make_allocator("crunch", {"bandwidth": "equal"}).allocate(ctx, None)
    assert pair.max() <= ctx.pair_latency_s(equal).max()


def test_fl_lora_plans_its_uploads_with_the_rate_model():
    ctx = rayleigh_ctx(1, 5, 3, unavailable=0.0, memory_cut=False)
    ctx = dataclasses.replace(
        ctx, work_s=ctx.compute_s, speed=np.ones(5), block_flops=np.ones((5, 3)),
        workload=types.SimpleNamespace(batch_size=8, gradient_bits=float(ctx.upload_bits.sum())),
    )
    plan = FedLoRAScheme().plan(ctx, None, np.random.default_rng(0))
    bits, share = ctx.upload_bits.sum(), ctx.total_bandwidth_hz / 5
    up = bits / RayleighErgodicRate(ctx.snr_coef_hz).rate_bps(share, np.arange(5))
    want = (ctx.compute_s[:, -1] + up).max() + ctx.aggregation_s + up.max()
    assert plan.planned_latency_s == pytest.approx(want, rel=1e-12)
