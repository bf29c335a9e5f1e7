"""Generated channels and compute timelines, produced on demand in chunks (issue 17, item 3).

Every value is a pure function of (seed, stream, device, segment): the chunk size, where a
query starts and which devices are generated together never change a bit, of the values or of
a whole run's tables; the generators keep their statistics; memory follows the window asked
about, not the horizon.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from scipy import special, stats

from desim.scenario.devices import DeviceSpec
from desim.world.chunked import ChunkedSignals
from desim.world.compute import ComputeTimelineParams
from desim.world.draws import CounterDraws
from desim.world.fading import SumOfSinusoids
from desim.world.generated import generated_timeline, mobility_channel, rayleigh_channel
from desim.world.mobility import MobilityChannelParams
from desim.world.shadowing import ChunkedShadowing

CHUNKS = (1, 7, 64, 1000)
K = 12


def _devices(k: int = K, seed: int = 3) -> tuple[DeviceSpec, ...]:
    dist = np.random.default_rng(seed).uniform(50.0, 300.0, k)
    return tuple(DeviceSpec(name=f"d{i}", tx_power_dbm=23.0, distance_m=float(d))
                 for i, d in enumerate(dist))


def _mobility(chunk: int, k: int = K, **params) -> ChunkedSignals:
    p = MobilityChannelParams(**{"duration_s": None, **params})
    return mobility_channel(_devices(k), p, -174.0, np.random.default_rng(11), chunk).signals


def _rayleigh(chunk: int, k: int = K, duration_s: float | None = None) -> ChunkedSignals:
    return rayleigh_channel(_devices(k), "umi-nlos", 3.5, 0.1, duration_s, -174.0,
                            np.random.default_rng(12), chunk).signals


def _speed(chunk: int, k: int = K, **params) -> ChunkedSignals:
    p = ComputeTimelineParams(**{"duration_s": None, **params})
    return generated_timeline(p, k, np.random.default_rng(13), chunk).speed_signals


def _shannon(values: np.ndarray, which: np.ndarray) -> np.ndarray:
    return 1e6 * np.log2(1.0 + values / 1e6)


def _answers(signals: ChunkedSignals, amount: float, rate) -> list[np.ndarray]:
    """Values on a grid and integrals from scattered starts, in the order asked."""
    times = np.linspace(0.0, 700.0, 613)
    rows = np.tile(np.arange(K), 4)
    starts = np.repeat([0.0, 0.05, 61.37, 433.3], K)
    dur, val = signals.segments_between(rows, starts, starts + 9.3)
    return [np.array([signals.at(t) for t in times]),
            signals.integrate_until(rows, starts, np.full(rows.size, amount), rate),
            dur, val, signals.integrate_between(rows, starts, starts + 9.3, rate)]


# --- exactness --------------------------------------------------------------------------------


@pytest.mark.parametrize("make, amount, rate", [
    (_mobility, 3e7, _shannon),
    (lambda c: _mobility(c, speed_kmh=120.0, fading="rician", duration_s=None), 3e7, _shannon),
    (_rayleigh, 3e7, _shannon),
    (lambda c: _rayleigh(c, duration_s=4.05), 3e7, _shannon),  # repeats after 41 blocks
    (_speed, 40.0, None),
    (lambda c: _speed(c, duration_s=500.0, mean_down_s=30.0), 40.0, None),
])
def test_values_and_integrals_do_not_depend_on_the_chunk_size(make, amount, rate):
    first = _answers(make(CHUNKS[0]), amount, rate)
    assert np.all(np.isfinite(first[1]))
    for chunk in CHUNKS[1:]:
        for a, b in zip(first, _answers(make(chunk), amount, rate)):
            assert a.shape == b.shape
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("make", [_mobility, _rayleigh, _speed])
def test_a_window_alone_equals_the_same_window_of_a_longer_generation(make):
    source = make(64).source
    rows = np.array([0, 3, 4, 11])
    b_alone, v_alone = source.pieces(rows, 40, 47)
    b_long, v_long = source.pieces(np.arange(K), 30, 90)
    alone = ChunkedSignals(source, 7)
    inside = ChunkedSignals(source, 60)
    t = np.linspace(float(b_alone[..., 0].max()), float(b_alone[..., -1].min()), 50)
    for time in t:  # the same function of time, however the pieces were cut
        np.testing.assert_array_equal(alone.at(time), inside.at(time))
    if b_alone.ndim == 1:  # on a fixed grid the very same samples
        np.testing.assert_array_equal(v_alone, v_long[rows, 10:17])
        np.testing.assert_array_equal(b_alone, b_long[10:18])


def test_a_devices_values_do_not_depend_on_how_many_devices_there_are():
    few, many = _rayleigh(64, k=5), _rayleigh(64, k=40)
    for t in (0.0, 3.3, 1234.5):
        np.testing.assert_array_equal(few.at(t), many.at(t)[:5])
    few_m, many_m = _mobility(64, k=5), _mobility(64, k=40)
    np.testing.assert_array_equal(few_m.at(77.7), many_m.at(77.7)[:5])


def test_at_agrees_with_the_pieces_the_integration_sees():
    signals = _speed(4, mean_down_s=50.0)
    times = np.random.default_rng(0).uniform(0.0, 3000.0, 40)
    for t in times:
        _, val = signals.segments_between(np.arange(K), np.full(K, t), np.full(K, t + 1e-6))
        np.testing.assert_array_equal(signals.at(t), val[:, 0])


def test_a_period_repeats_the_realisation_and_none_never_does():
    looped = _rayleigh(64, duration_s=5.0)
    np.testing.assert_array_equal(looped.at(1.23), looped.at(6.23))
    np.testing.assert_array_equal(looped.at(1.23), looped.at(5001.23))
    free = _rayleigh(64)
    assert not np.array_equal(free.at(1.23), free.at(6.23))
    speed = _speed(4, duration_s=600.0)
    np.testing.assert_array_equal(speed.at(12.0), speed.at(612.0))


def test_a_zero_rate_never_finishes_and_a_zero_amount_ends_at_the_start():
    signals = _rayleigh(64)
    zero_bw = lambda v, w: 0.0 * np.log2(1.0 + v / 0.0)  # noqa: E731 (nan: no bandwidth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        end = signals.integrate_until(np.array([0, 1]), np.array([1.0, 2.0]),
                                      np.array([5.0, 0.0]), zero_bw)
    assert end[0] == np.inf and end[1] == 2.0


def test_a_whole_run_gives_identical_tables_at_any_chunk_size():
    from desim.engine.assembly import build_simulation
    from desim.engine.records import WALL_CLOCK_COLUMNS
    from desim.io.scenario import load_scenario

    base = ['channel.kind="generated"', 'compute.kind="generated"', "run.rounds=4",
            'allocator.name="crunch"', "compute.mean_down_s=40.0", "faults.dropout_rate=0.1",
            'server.uplink="reclaim"', 'allocator.csi="ergodic"']
    tables = []
    for chunk in (7, 64, 1000):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scenario = load_scenario(None, [*base, f"channel.chunk_segments={chunk}",
                                            f"compute.chunk_segments={max(1, chunk // 16)}"])
        result = build_simulation(scenario).run()
        tables.append({name: frame.drop(columns=[c for c in WALL_CLOCK_COLUMNS if c in frame])
                       for name, frame in result.tables().items()})
    assert len(tables[0]["rounds"]) == 4
    for other in tables[1:]:
        for name, frame in tables[0].items():
            assert frame.equals(other[name]), name


# --- statistics -------------------------------------------------------------------------------


def test_rayleigh_blocks_are_iid_unit_exponentials():
    signals = _rayleigh(64, k=400)
    mean = rayleigh_channel(_devices(400), "umi-nlos", 3.5, 0.1, None, -174.0,
                            np.random.default_rng(12)).large_scale
    assert mean is not None
    rows = np.arange(400)
    dur, val = signals.segments_between(rows, np.zeros(400), np.full(400, 20.0))
    dur, val = dur[:, :200], val[:, :200]  # 200 blocks of 0.1 s per device, then padding
    fading = (val / mean.at(0.0)[:, None]).ravel()
    assert np.all(dur == pytest.approx(0.1))
    assert fading.mean() == pytest.approx(1.0, abs=0.01)
    assert stats.kstest(fading, "expon").pvalue > 0.01
    lag1 = np.corrcoef(fading[:-1], fading[1:])[0, 1]
    assert abs(lag1) < 0.02


def test_sum_of_sinusoids_has_unit_power_rayleigh_envelope_and_jakes_correlation():
    draws = CounterDraws((7, 8))
    links, fd = 3000, 20.0
    sos = SumOfSinusoids.draw(draws, links, fd, 64, 3)
    rows = np.arange(links)
    power = sos.power(rows, np.array([0.37]), np.zeros((links, 1)))[:, 0]
    assert power.mean() == pytest.approx(1.0, abs=0.05)
    assert stats.kstest(np.sqrt(power), "rayleigh", args=(0.0, np.sqrt(0.5))).pvalue > 0.01
    # E[h(t) h*(t + τ)] = J0(2π f_D τ): the power's autocovariance is J0² for Rayleigh fading
    tau = np.array([0.0, 0.005, 0.01, 0.02])
    p = sos.power(rows, 1.0 + tau, np.zeros((links, tau.size)))
    cov = np.mean((p[:, :1] - 1.0) * (p - 1.0), axis=0) / np.var(p[:, 0])
    np.testing.assert_allclose(cov, special.j0(2 * np.pi * fd * tau) ** 2, atol=0.06)


def test_shadowing_has_its_std_and_exponential_decorrelation():
    step_m = 3.0 / 3.6 * 0.1
    sh = ChunkedShadowing.build(CounterDraws((1, 2)), 7.82, 13.0, step_m, 4)
    assert sh.block == 76  # coarse states every 76 steps: the pairs below straddle them
    s = sh.values(np.arange(20000), 0, 320) / 7.82  # across devices: no time averaging
    assert s[:, 123].std() == pytest.approx(1.0, abs=0.02)
    for i, j in [(0, 1), (0, 75), (0, 77), (70, 80), (10, 160), (0, 300), (151, 153)]:
        assert np.mean(s[:, i] * s[:, j]) == pytest.approx(np.exp(-(j - i) * step_m / 13.0),
                                                           abs=0.03)
    # far along the walk a window is as stationary as at the start
    far = sh.values(np.arange(3000), 10**6, 10**6 + 3)
    assert far.std() == pytest.approx(7.82, rel=0.04)


def test_a_still_device_keeps_its_shadowing_and_fading():
    signals = _mobility(64, speed_kmh=0.0)
    np.testing.assert_array_equal(signals.at(0.0), signals.at(123.4))


def test_rician_k_follows_the_los_state_and_the_large_scale_part_is_known():
    devices = _devices(300)
    channel = mobility_channel(devices, MobilityChannelParams(duration_s=None), -174.0,
                               np.random.default_rng(5))
    assert channel.large_scale is not None and channel.fading_k is not None
    ratio = np.concatenate([channel.signals.at(t) / channel.large_scale.at(t)
                            for t in np.arange(0.0, 30.0, 1.3)])
    assert ratio.mean() == pytest.approx(1.0, abs=0.05)  # E|h|² = 1 on the large scale
    k = channel.fading_k.at(3.0)
    assert set(np.unique(k)) <= {0.0, np.float32(10 ** 0.9)}
    assert 0 < np.count_nonzero(k) < k.size  # some LOS, some NLOS at 50-300 m


def test_generated_compute_matches_its_parameters():
    p = dict(load_mean=0.3, load_hold_s=50.0, mean_up_s=300.0, mean_down_s=100.0,
             min_speed=0.01)
    timeline = generated_timeline(ComputeTimelineParams(duration_s=None, **p), 40,
                                  np.random.default_rng(8))
    rows, horizon = np.arange(40), 20000.0
    up = timeline.available_signals.integrate_between(rows, np.zeros(40), np.full(40, horizon))
    work = timeline.speed_signals.integrate_between(rows, np.zeros(40), np.full(40, horizon))
    assert up.sum() / (40 * horizon) == pytest.approx(0.75, abs=0.03)
    assert 1.0 - work.sum() / up.sum() == pytest.approx(0.3, abs=0.03)  # load while up
    # up and down periods: exponential with means 300 and 100 s
    dur, val = timeline.available_signals.segments_between(rows, np.zeros(40),
                                                           np.full(40, horizon))
    periods = {1.0: [], 0.0: []}
    for d, v in zip(dur, val):
        keep = d > 0
        d, v = d[keep], v[keep]
        cut = np.flatnonzero(np.diff(v)) + 1
        for seg_d, seg_v in zip(np.split(d, cut)[1:-1], np.split(v, cut)[1:-1]):
            periods[float(seg_v[0])].append(seg_d.sum())
    assert np.mean(periods[1.0]) == pytest.approx(300.0, rel=0.1)
    assert np.mean(periods[0.0]) == pytest.approx(100.0, rel=0.1)


# --- memory -----------------------------------------------------------------------------------


def _round_peak_bytes(channel, k: int, t0: float) -> int:
    """Peak bytes allocated by a round at ``t0``: every device's snapshot, 12 uploads."""
    tracemalloc.start()
    try:
        for t in (t0, t0 + 0.7, t0 + 1.9):
            assert channel.snr_coef_hz(t).shape == (k,)
        rows = np.arange(0, k, 833)
        end = channel.transfer_end_s(rows, np.full(rows.size, t0), np.full(rows.size, 5e7),
                                     np.full(rows.size, 1e6))
        assert np.all(np.isfinite(end))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_ten_thousand_devices_allocate_the_window_not_the_horizon():
    k = 10_000
    channel = mobility_channel(_devices(k), MobilityChannelParams(duration_s=None), -174.0,
                               np.random.default_rng(2))
    early = _round_peak_bytes(channel, k, 10.0)
    late = _round_peak_bytes(channel, k, 86_400.0)  # a day in: the horizon does not count
    # O(K × window): a coarse block of shadowing (76 steps) per process, one segment of Jakes
    # sums; the whole first day at 0.1 s would be 10⁴ × 864,000 × 8 B = 69 GB per array
    assert early < 100e6 and late < 100e6
    assert late < 1.5 * early
    assert channel.signals.cached_bytes < 4e6  # chunks of the participants only
