import numpy as np
import pytest

from desim.errors import InfeasibleError, SimulationError
from desim.world.channel import SignalChannel
from desim.world.compute import SignalTimeline
from desim.world.piecewise import PiecewiseSignals
from tests.helpers import tiny_simulation


def test_three_devices_two_blocks_hand_computed():
    # greedy ranks by deepest-block compute: A 4/2 = 2 s, B 4 s, C 4 s -> A takes block 2,
    # B (next, fits 1 GB) takes block 1. Equal split: 1 MHz each.
    # A: compute 2 s, rate 1e6*log2(1+3) = 2 Mbit/s -> 0.5 s upload -> 2.5 s
    # B: compute 2 s, rate 1e6*log2(1+15) = 4 Mbit/s -> 0.25 s upload -> 2.25 s
    # round = max(2.5, 2.25) + 0.1 aggregation = 2.6 s
    result = tiny_simulation(rounds=2).run()
    rounds = result.rounds_frame()
    assert rounds.latency_s.tolist() == pytest.approx([2.6, 2.6], abs=1e-12)
    assert rounds.planned_latency_s.tolist() == pytest.approx([2.6, 2.6], abs=1e-12)
    assert rounds.start_s.tolist() == pytest.approx([0.0, 2.6], abs=1e-12)
    assert rounds.bottleneck_device.tolist() == ["A", "A"]
    dev = result.device_rounds_frame()
    first = dev[dev["round"] == 0].set_index("block")
    assert first.loc[2, "device"] == "A" and first.loc[1, "device"] == "B"
    assert first.loc[2, "upload_end_s"] == pytest.approx(2.5)
    assert first.loc[1, "upload_end_s"] == pytest.approx(2.25)
    assert first.loc[1, "mean_rate_bps"] == pytest.approx(4e6)
    assert first.bandwidth_hz.tolist() == [1e6, 1e6]


def test_rate_change_mid_upload_is_integrated_exactly():
    # A's SNR rises from 3e6 to 15e6 Hz at t = 2.25, during its upload that started at t = 2:
    # 0.25 s at 2 Mbit/s sends 0.5 Mbit, the other 0.5 Mbit at 4 Mbit/s takes 0.125 s.
    sig = PiecewiseSignals(
        np.array([0.0, 2.25]),
        np.array([[3e6, 15e6], [15e6, 15e6], [15e6, 15e6]]),
        10.0,
        "hold",
    )
    result = tiny_simulation(channel=SignalChannel(sig)).run()
    r = result.rounds_frame().iloc[0]
    assert r.latency_s == pytest.approx(2.375 + 0.1, abs=1e-12)
    assert r.planned_latency_s == pytest.approx(2.6, abs=1e-12)  # planned at the t0 snapshot


def test_speed_change_mid_compute_is_integrated_exactly():
    # A needs 4 s of work at speed factor 2 = 2 s at rho = 1; rho drops to 0.5 at t = 1:
    # 1 s done by t = 1, the remaining 1 s takes 2 s -> compute ends at 3, upload 0.5 s -> 3.5
    speed = PiecewiseSignals(
        np.array([0.0, 1.0]), np.array([[1.0, 0.5], [1.0, 1.0], [1.0, 1.0]]), 100.0, "hold"
    )
    timeline = SignalTimeline(speed, PiecewiseSignals.constant(np.ones(3)))
    result = tiny_simulation(compute=timeline).run()
    dev = result.device_rounds_frame().set_index("device")
    assert dev.loc["A", "compute_end_s"] == pytest.approx(3.0, abs=1e-12)
    assert result.rounds_frame().latency_s[0] == pytest.approx(3.6, abs=1e-12)


def test_fewer_available_devices_than_blocks_names_the_block():
    avail = PiecewiseSignals.constant(np.array([1.0, 0.0, 0.0]))
    timeline = SignalTimeline(PiecewiseSignals.constant(np.ones(3)), avail)
    with pytest.raises(InfeasibleError, match=r"round 0: block 1 .*1 of 3 devices available"):
        tiny_simulation(compute=timeline).run()


def test_upload_that_never_finishes_is_a_clear_error():
    sig = PiecewiseSignals(
        np.array([0.0, 1.0]), np.array([[3e6, 0.0], [15e6] * 2, [15e6] * 2]), 2.0
    )
    with pytest.raises(SimulationError, match="device A never finishes the upload of block 2"):
        tiny_simulation(channel=SignalChannel(sig)).run()


def test_random_allocator_output_is_feasible_and_recorded():
    result = tiny_simulation(allocator="random", rounds=20).run()
    dev = result.device_rounds_frame()
    # C (1.5 GB) can never hold block 2 (2 GB)
    assert not ((dev.device == "C") & (dev.block == 2)).any()
    assert (dev.groupby("round").device.nunique() == 2).all()
