import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desim.world.piecewise import PiecewiseSignals


def loop_signal():
    # row 0: 2 on [0,1), 0 on [1,3), 1 on [3,4), then repeats; row 1: constant 1
    return PiecewiseSignals(
        np.array([0.0, 1.0, 3.0]), np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]), 4.0, "loop"
    )


def test_loop_integration_crosses_zero_segments_and_periods():
    s = loop_signal()
    end = s.integrate_until([0, 0, 0, 1, 0], [0, 0.5, 0, 0, 3.5], [1, 2, 3, 10, 2.5])
    # [0.5,1) gives 1, the zero stretch stalls, [3,4) gives the last 1 -> 4.0;
    # from 3.5: 0.5 by t=4, then 2 per second on the next period's first segment -> 5.0
    np.testing.assert_array_equal(end, [0.5, 4.0, 4.0, 10.0, 5.0])


def test_hold_policy_keeps_last_value_and_zero_forever_is_inf():
    s = PiecewiseSignals(np.array([0.0, 1.0]), np.array([[1.0, 0.0], [0.0, 2.0]]), 2.0, "hold")
    end = s.integrate_until([0, 1, 1, 0], [0, 0, 5, 0], [0.5, 1, 1, 2])
    np.testing.assert_array_equal(end, [0.5, 1.5, 5.5, np.inf])


def test_all_zero_loop_never_finishes():
    s = PiecewiseSignals(np.array([0.0, 1.0]), np.array([[0.0, 0.0]]), 2.0, "loop")
    assert s.integrate_until([0], [0.3], [1.0])[0] == np.inf


def test_zero_amount_ends_at_start():
    s = loop_signal()
    assert s.integrate_until([0], [1.7], [0.0])[0] == 1.7


def test_rate_fn_is_applied_per_query():
    s = PiecewiseSignals.constant(np.array([3.0]))
    scale = np.array([1.0, 2.0])
    end = s.integrate_until([0, 0], [0, 0], [6, 6], lambda v, w: v * scale[w][:, None])
    np.testing.assert_array_equal(end, [2.0, 1.0])


def test_at_wraps_under_loop():
    s = loop_signal()
    np.testing.assert_array_equal(s.at(4.5), [2.0, 1.0])
    np.testing.assert_array_equal(s.at(7.0), [1.0, 1.0])


@pytest.mark.parametrize(
    "times, values, end",
    [([1.0], [1.0], 2.0), ([0.0, 0.0], [1.0, 1.0], 2.0), ([0.0], [-1.0], 1.0), ([0.0], [1.0], 0.0)],
)
def test_invalid_signals_are_rejected(times, values, end):
    with pytest.raises(ValueError):
        PiecewiseSignals(np.array(times), np.array(values), end)


def _integral(s: PiecewiseSignals, row: int, t0: float, t1: float) -> float:
    """Independent reference: sum value × overlap over unrolled segments."""
    total = 0.0
    bounds = np.append(s.times_s, s.end_s)
    cycles = range(int(t1 // s.end_s) + 2) if s.end_policy == "loop" else [0]
    for c in cycles:
        for i in range(s.times_s.size):
            lo, hi = c * s.end_s + bounds[i], c * s.end_s + bounds[i + 1]
            if s.end_policy == "hold" and i == s.times_s.size - 1:
                hi = np.inf
            total += s.values[row, i] * max(0.0, min(hi, t1) - max(lo, t0))
    return total


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(0.01, 5.0), min_size=1, max_size=8),
    st.lists(st.floats(0.0, 10.0), min_size=8, max_size=8),
    st.sampled_from(["loop", "hold"]),
    st.floats(0.0, 20.0),
    st.floats(0.001, 50.0),
)
def test_integration_matches_reference(durations, vals, policy, start, amount):
    times = np.concatenate([[0.0], np.cumsum(durations[:-1])])
    values = np.array(vals[: len(durations)])
    values[0] = max(values[0], 0.5)  # guarantee progress under loop
    values[-1] = max(values[-1], 0.5)  # and under hold
    s = PiecewiseSignals(times, values, float(np.sum(durations)), policy)
    end = s.integrate_until([0], [start], [amount])[0]
    assert end >= start
    assert _integral(s, 0, start, end) == pytest.approx(amount, rel=1e-9, abs=1e-9)


def test_huge_amounts_skip_whole_periods_exactly():
    rng = np.random.default_rng(1)
    values = rng.exponential(1.0, (2, 5000))
    values[1] = 0.0
    s = PiecewiseSignals(np.arange(5000) * 0.1, values, 500.0, "loop")
    per_period = float(values[0].sum() * 0.1)
    end = s.integrate_until([0, 0, 1], [0.0, 250.0, 3.0], [per_period * 1e6, per_period * 7, 1.0])
    assert end[0] == pytest.approx(500.0 * 1e6, rel=1e-12)
    assert end[1] == pytest.approx(250.0 + 7 * 500.0, rel=1e-12)
    assert end[2] == np.inf


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.floats(0.01, 3.0), min_size=1, max_size=10),
    st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.5]), min_size=10, max_size=10),
    st.sampled_from(["loop", "hold"]),
    st.floats(0.0, 1e4),
    st.floats(0.0, 1e3),
)
def test_cumulative_inversion_matches_windowed_scan(durations, vals, policy, start, amount):
    times = np.concatenate([[0.0], np.cumsum(durations[:-1])])
    s = PiecewiseSignals(times, np.array(vals[: len(durations)]), float(np.sum(durations)), policy)
    fast = s.integrate_until([0], [start], [amount])[0]  # identity rate: cumulative inversion
    scan = s.integrate_until([0], [start], [amount], lambda v, _w: v)[0]  # windowed scan
    assert fast == pytest.approx(scan, rel=1e-9, abs=1e-9) or (fast == scan == np.inf)


@pytest.mark.parametrize("policy", ["hold", "loop"])
def test_integrate_between_inverts_integrate_until(policy):
    """The bits sent over [start, integrate_until's end) are the amount asked for."""
    s = PiecewiseSignals(np.array([0, 1, 2.5, 4.0]),
                         np.array([[1.0, 3.0, 0.0, 2.0], [2.0, 1.0, 4.0, 0.5]]), 5.0, policy)
    rng = np.random.default_rng(1)
    rows, start = rng.integers(0, 2, 300), rng.uniform(0, 20, 300)
    amount = rng.uniform(0, 30, 300)

    def rate(v, _w):
        return np.log2(1 + 3 * v)

    end = s.integrate_until(rows, start, amount, rate)
    back = s.integrate_between(rows, start, end, rate)
    np.testing.assert_allclose(back, amount, rtol=1e-12, atol=1e-12)
    # an empty or reversed interval integrates to zero; a split interval adds up
    assert s.integrate_between(rows, start, start - 1.0).max() == 0.0
    mid = (start + end) / 2
    np.testing.assert_allclose(s.integrate_between(rows, start, mid, rate)
                               + s.integrate_between(rows, mid, end, rate), amount, rtol=1e-12)
