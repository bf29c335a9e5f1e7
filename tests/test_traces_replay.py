"""Trace replay: exact transfer times on hand-built traces, grids, mappings and end policies."""

import numpy as np
import pytest

from desim.errors import TraceError
from desim.scenario.devices import DeviceSpec
from desim.world.channel import snr_coef_from_snr_db, snr_coef_from_throughput
from desim.world.channel_trace import trace_channel
from desim.world.compute import trace_timeline
from desim.world.rates import shannon_rate_bps
from desim.world.replay import map_devices, replay_signals
from desim.world.tidy import tidy_frame, trace_from_frame
from desim.world.traces import TraceMeta

DEVICES = (DeviceSpec(name="a"), DeviceSpec(name="b"))


def throughput_trace(policy="hold", duration=3.0):
    # device x: 0 Mbit/s on [0,1), 2 on [1,2), 4 on [2,3); device y: 1 Mbit/s, 3 from t = 0.5
    frame = tidy_frame(
        ["x", "y"],
        [np.array([0.0, 1.0, 2.0]), np.array([0.0, 0.5])],
        {"throughput_mbps": [np.array([0.0, 2.0, 4.0]), np.array([1.0, 3.0])]},
    )
    meta = TraceMeta(end_policy=policy, duration_s=duration, ref_bandwidth_hz=1e6)
    return trace_from_frame(frame, "hand.csv", meta)


def test_union_grid_merges_native_grids_exactly():
    tr = throughput_trace()
    assert tr.times_s.tolist() == [0.0, 0.5, 1.0, 2.0]
    assert tr.columns["throughput_mbps"].tolist() == [[0, 0, 2, 4], [1, 3, 3, 3]]
    assert tr.samples.tolist() == [3, 2]


def test_throughput_conversion_gives_back_the_rate_at_ref_bandwidth():
    r = np.array([0.0, 1e6, 7.5e6, 40e6])
    a = snr_coef_from_throughput(r, 5e6)
    np.testing.assert_allclose(shannon_rate_bps(5e6, a), r, rtol=1e-12, atol=1e-6)
    # snr_db over B_ref: rate at B_ref is B log2(1 + SNR)
    a = snr_coef_from_snr_db(np.array([10.0]), 1e6)
    assert shannon_rate_bps(1e6, a)[0] == pytest.approx(1e6 * np.log2(11.0))


def test_transfer_stalls_through_zero_rate_then_ends_exactly():
    ch = trace_channel(throughput_trace(), DEVICES, -174.0, np.random.default_rng(0))
    # 3 Mbit from t = 0.5 at B = 1 MHz: stall to 1, 2 Mbit on [1,2), 1 Mbit at 4 Mbit/s -> 2.25
    end = ch.transfer_end_s(
        np.array([0, 1]), np.array([0.5, 0.0]), np.array([3e6, 2e6]), np.array([1e6, 1e6])
    )
    # y: 0.5 Mbit by 0.5, then 1.5 Mbit at 3 Mbit/s -> 1.0
    assert end.tolist() == pytest.approx([2.25, 1.0], abs=1e-9)


def test_loop_policy_wraps_and_hold_policy_keeps_last_value():
    rng = np.random.default_rng(0)
    loop = trace_channel(throughput_trace("loop"), DEVICES, -174.0, rng)
    # 10 Mbit from 0.5: 6 Mbit by 3, stall [3,4), 2 on [4,5), 2 more at 4 Mbit/s -> 5.5
    assert loop.transfer_end_s(np.array([0]), np.array([0.5]), np.array([10e6]), np.array([1e6]))[
        0
    ] == pytest.approx(5.5, abs=1e-9)
    hold = trace_channel(throughput_trace("hold"), DEVICES, -174.0, rng)
    # 6 Mbit by 3, then 4 Mbit/s forever: 4 more Mbit -> 4.0
    assert hold.transfer_end_s(np.array([0]), np.array([0.5]), np.array([10e6]), np.array([1e6]))[
        0
    ] == pytest.approx(4.0, abs=1e-9)
    # the scenario's end_policy overrides the file's
    over = trace_channel(throughput_trace("hold"), DEVICES, -174.0, rng, end_policy="loop")
    assert over.signals.end_policy == "loop"


def test_zero_rate_forever_is_inf_not_an_error():
    frame = tidy_frame(["x"], np.array([0.0, 1.0]), {"throughput_mbps": np.array([[2.0, 0.0]])})
    tr = trace_from_frame(frame, "z.csv", TraceMeta(end_policy="hold", ref_bandwidth_hz=1e6))
    ch = trace_channel(tr, DEVICES[:1], -174.0, None)
    end = ch.transfer_end_s(
        np.array([0, 0]), np.array([0.0, 0.0]), np.array([1e6, 5e6]), np.array([1e6, 1e6])
    )
    assert end[0] == pytest.approx(0.5) and np.isinf(end[1])


def test_gain_db_uses_device_power_and_noise():
    frame = tidy_frame(["x"], np.array([0.0]), {"gain_db": np.array([[-100.0]])})
    tr = trace_from_frame(frame, "g.csv", TraceMeta(duration_s=1.0))
    devs = (DeviceSpec(name="a", tx_power_dbm=20.0),)
    ch = trace_channel(tr, devs, -170.0, None)
    # a = 10^((20 - 100 + 170)/10) = 1e9 Hz
    assert ch.snr_coef_hz(0.3)[0] == pytest.approx(1e9)


def test_cyclic_and_table_mapping():
    tr = throughput_trace()
    names = ("a", "b", "c")
    rows, off = map_devices(tr, names, "cyclic", None)
    assert rows.tolist() == [0, 1, 0] and off.tolist() == [0, 0, 0]
    rows, _ = map_devices(tr, names, {"a": "y", "b": "x", "c": "y"}, None)
    assert rows.tolist() == [1, 0, 1]
    with pytest.raises(TraceError, match=r"hand.csv: unknown device 'nope'; trace devices: x, y"):
        map_devices(tr, names, {"a": "nope", "b": "x", "c": "y"}, None)
    with pytest.raises(TraceError, match="no trace device for scenario device"):
        map_devices(tr, names, {"a": "x"}, None)


def test_random_offset_mapping_is_a_seeded_shift():
    tr = throughput_trace("loop")
    names = ("a", "b", "c", "d")
    rows, off = map_devices(tr, names, "random-offset", np.random.default_rng(11))
    rows2, off2 = map_devices(tr, names, "random-offset", np.random.default_rng(11))
    np.testing.assert_array_equal(off, off2)
    assert np.all((off >= 0) & (off < 3.0)) and len(set(off)) == 4
    vals = tr.columns["throughput_mbps"]
    sig = replay_signals(tr, vals, rows, off)
    base = replay_signals(tr, vals, rows, np.zeros(4))
    for t in np.linspace(0, 8.9, 97):
        for k in range(4):
            assert sig.at(t)[k] == base.at((t + off[k]) % 3.0)[k]


def test_offset_under_hold_reaches_the_last_value_early():
    tr = throughput_trace("hold")
    sig = replay_signals(tr, tr.columns["throughput_mbps"], np.array([0]), np.array([1.5]))
    # x(t + 1.5): 2 on [0, 0.5), 4 from 0.5 on, forever
    assert [sig.at(t)[0] for t in (0.0, 0.49, 0.5, 2.9, 100.0)] == [2, 2, 4, 4, 4]


def test_compute_trace_pauses_work_while_unavailable():
    frame = tidy_frame(
        ["p"],
        np.array([0.0, 1.0, 3.0]),
        {"speed_factor": np.array([[0.5, 1.0, 1.0]]), "available": np.array([[1, 0, 1]])},
    )
    tr = trace_from_frame(frame, "c.csv", TraceMeta(end_policy="hold", duration_s=4.0))
    tl = trace_timeline(tr, ("a",), None)
    # 2 s of work: 0.5 by t = 1, paused on [1, 3), 1.5 more at speed 1 -> 4.5
    assert tl.work_end_s(np.array([0]), np.array([0.0]), np.array([2.0]))[0] == pytest.approx(4.5)
    assert tl.available(2.0).tolist() == [False] and tl.available(3.0).tolist() == [True]


def test_generated_compute_matches_its_parameters():
    from desim.world.compute import ComputeTimelineParams, generate_compute

    p = ComputeTimelineParams(
        duration_s=20000.0,
        load_mean=0.3,
        load_hold_s=50.0,
        mean_up_s=300.0,
        mean_down_s=100.0,
        min_speed=0.01,
    )
    series = generate_compute(p, 40, np.random.default_rng(8))
    up = load = total = 0.0
    for t, speed, avail in series:
        dur = np.diff(np.append(t, p.duration_s))
        up += np.sum(avail * dur)
        load += np.sum((1 - speed) * dur)
        total += p.duration_s
    # stationary availability 300 / 400 = 0.75 and mean load 0.3, within 0.03 (seed 8)
    assert up / total == pytest.approx(0.75, abs=0.03)
    assert load / total == pytest.approx(0.3, abs=0.03)


def test_scenario_generated_channel_and_compute_are_seeded():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    over = [
        'channel.kind="generated"',
        "channel.duration_s=60",
        'compute.kind="generated"',
        "compute.duration_s=600",
        "run.rounds=3",
    ]
    a = build_simulation(load_scenario(None, over))
    b = build_simulation(load_scenario(None, [*over, 'allocator.name="random"']))
    c = build_simulation(load_scenario(None, [*over, "run.seed=1"]))
    times = np.arange(0.0, 700.0, 0.35)
    def channel(sim):
        return np.array([sim.channel.snr_coef_hz(t) for t in times])

    def speed(sim):
        return np.array([sim.compute.speed(t) for t in times])

    np.testing.assert_array_equal(channel(a), channel(b))
    np.testing.assert_array_equal(speed(a), speed(b))
    assert not np.array_equal(channel(a), channel(c))
    # the channel repeats after 60 s (600 steps of 0.1 s), the compute timeline after 600 s
    np.testing.assert_array_equal(a.channel.snr_coef_hz(12.34), a.channel.snr_coef_hz(72.34))
    np.testing.assert_array_equal(a.compute.speed(12.34), a.compute.speed(612.34))
    rounds = a.run().rounds_frame()
    assert len(rounds) == 3 and np.all(np.isfinite(rounds.latency_s))


def test_trace_kind_needs_a_path():
    from desim.errors import ScenarioError
    from desim.io.scenario import load_scenario

    with pytest.raises(ScenarioError, match="channel.path: kind = 'trace' needs a tidy trace"):
        load_scenario(None, ["channel.path=''"])
    with pytest.raises(TraceError, match="no such shipped trace"):
        from desim.engine.assembly import build_simulation

        build_simulation(load_scenario(None, ['channel.path="shipped:nope.csv"']))
