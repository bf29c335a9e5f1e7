"""desim bench scale: one point in a child process, and the fitted exponents."""

from __future__ import annotations

import numpy as np
import pytest

from desim.experiments.bench_scale import (
    PHASES,
    ScalePoint,
    exponent,
    fitted_exponents,
    measure_point,
)


def test_exponent_is_the_log_log_slope():
    x = [10.0, 100.0, 1000.0]
    assert exponent(x, [3.0 * v**1.5 for v in x]) == pytest.approx(1.5)
    assert np.isnan(exponent([10.0], [1.0]))


def test_a_point_runs_in_its_own_process_and_reports_every_phase():
    p = measure_point("K", 20, 12, 2)
    assert set(p.phases_s) == set(PHASES)
    assert all(v >= 0 for v in p.phases_s.values())
    assert 50e6 < p.peak_rss_bytes < 4e9  # the child's own peak, imports included
    run = sum(v for k, v in p.phases_s.items() if k != "build")
    assert run + p.phases_s["build"] < p.wall_s  # start-up is outside the phases
    assert p.dominant in PHASES and p.dominant != "build"


def test_fitted_exponents_read_each_axis_alone():
    def point(axis, k, n, r, t):
        return ScalePoint(axis, k, n, r, t, int(1e8 * k), dict.fromkeys(PHASES, t / 6))

    pts = [point("K", 10, 12, 10, 1.0), point("K", 100, 12, 10, 10.0),
           point("rounds", 20, 12, 10, 1.0), point("rounds", 20, 12, 1000, 10.0)]
    fits = fitted_exponents(pts)
    assert fits["K"]["wall"] == pytest.approx(1.0) and fits["K"]["memory"] == pytest.approx(1.0)
    assert fits["rounds"]["wall"] == pytest.approx(0.5)
    assert np.isnan(fits["N"]["wall"])
