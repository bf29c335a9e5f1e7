"""Replicate seeds: ``run.seed`` drives every draw the scenario does not pin.

The default scenario draws its population from the run's ``population`` stream and starts each
shipped trace at a seed-dependent offset (``mapping = "random-offset"``), so replicate seeds are
real replicates; a pinned ``devices.population.seed`` keeps the devices and still varies the
traces; the allocator never changes the devices or the channel (paired comparisons).
"""

import numpy as np
import pytest

from desim.engine.assembly import build_simulation, devices_of
from desim.engine.rng import STREAM_NAMES, rng_stream, rng_streams
from desim.io.scenario import load_scenario

# times at which two channel or compute realisations are compared, seconds
PROBE_S = np.linspace(0.0, 600.0, 61)


def _scenario(seed, *overrides):
    return load_scenario(None, [f"run.seed={seed}", "run.rounds=3", *overrides])


def _rounds_csv(seed, *overrides):
    tables = build_simulation(_scenario(seed, *overrides)).run().tables()
    return tables["rounds"].to_csv(index=False, float_format="%.17g")


def _channel(sim):
    return np.array([sim.channel.snr_coef_hz(t) for t in PROBE_S])


def _speed(sim):
    return np.array([sim.compute.speed(t) for t in PROBE_S])


def test_default_scenario_pins_no_population_seed_and_offsets_its_traces():
    s = load_scenario()
    assert s.devices.population is not None and s.devices.population.seed is None
    # the compute timeline replays cyclically by default (offsets on its irregular change
    # times would multiply the engine's breakpoints); a user may offset it too
    assert s.channel.mapping == "random-offset" and s.compute.mapping == "cyclic"


def test_default_channel_offsets_are_whole_trace_steps():
    from desim.io.traces import read_trace, resolve_trace_path
    from desim.world.replay import grid_step_s, map_devices

    trace = read_trace(resolve_trace_path(load_scenario().channel.path))
    step = grid_step_s(trace)
    assert step is not None
    _, offsets = map_devices(trace, tuple(f"d{i}" for i in range(50)), "random-offset",
                             np.random.default_rng(3))
    assert np.allclose(offsets / step, np.round(offsets / step)) and np.unique(offsets).size > 40


def test_three_seeds_give_three_round_tables_and_a_seed_repeats_exactly():
    crunch = 'allocator.name="crunch"'  # deterministic: every difference is the scenario's
    tables = {seed: _rounds_csv(seed, crunch) for seed in (0, 1, 7)}
    assert len(set(tables.values())) == 3
    assert _rounds_csv(7, crunch) == tables[7]
    first_round_s = {
        build_simulation(_scenario(seed, crunch)).run().rounds_frame()["latency_s"].iloc[0]
        for seed in (0, 1, 7)
    }
    assert len(first_round_s) == 3


def test_unpinned_population_is_a_draw_of_the_run_seed():
    pops = [devices_of(_scenario(seed)) for seed in (0, 1, 7)]
    assert len({tuple(d.speed_factor for d in p) for p in pops}) == 3
    assert devices_of(_scenario(1)) == pops[1]


@pytest.mark.parametrize("count", [12, 20])
def test_every_seeds_population_admits_every_block(count):
    block_bytes = build_simulation(_scenario(0)).block_memory_bytes  # (N,), device-independent
    n = len(block_bytes)
    for seed in range(20):
        devices = devices_of(_scenario(seed, f"devices.population.count={count}"))
        budgets = np.array([d.memory_bytes for d in devices])
        # Hall's condition for nested neighbourhoods: block j needs N - j + 1 devices able to
        # hold blocks j..N
        held = [(budgets >= block_bytes[j]).sum() for j in range(n)]
        assert all(h >= n - j for j, h in enumerate(held)), (seed, held)


def test_pinned_population_seed_keeps_the_devices_and_varies_the_traces():
    pin = "devices.population.seed=2024"
    sims = [build_simulation(_scenario(seed, pin)) for seed in (0, 1, 7)]
    assert sims[0].devices == sims[1].devices == sims[2].devices
    assert sims[0].devices == devices_of(_scenario(3, pin))
    channels = [_channel(s) for s in sims]
    assert not np.array_equal(channels[0], channels[1])
    assert not np.array_equal(channels[1], channels[2])
    offset = [_scenario(seed, pin, 'compute.mapping="random-offset"') for seed in (0, 1)]
    speeds = [_speed(build_simulation(s)) for s in offset]
    assert not np.array_equal(speeds[0], speeds[1])


def test_pinned_population_and_cyclic_traces_give_one_run_for_every_seed():
    fixed = ["devices.population.seed=2024", 'channel.mapping="cyclic"',
             'compute.mapping="cyclic"', 'allocator.name="crunch"']
    assert _rounds_csv(0, *fixed) == _rounds_csv(7, *fixed)


@pytest.mark.parametrize("allocator", ["random", "jbba"])
def test_allocator_changes_neither_the_population_nor_the_channel(allocator):
    base = build_simulation(_scenario(5, 'allocator.name="greedy"'))
    other = build_simulation(_scenario(5, f'allocator.name="{allocator}"'))
    assert other.devices == base.devices
    np.testing.assert_array_equal(_channel(other), _channel(base))
    np.testing.assert_array_equal(_speed(other), _speed(base))
    # and the shared population is the seed's own, not a fixed one
    assert base.devices != build_simulation(_scenario(6, 'allocator.name="greedy"')).devices


def test_population_stream_leaves_the_older_streams_unchanged():
    for seed in (0, 1, 7):
        old = np.random.SeedSequence(seed).spawn(5)  # the streams before `population`
        streams = rng_streams(seed)
        for name, child in zip(STREAM_NAMES[:5], old):
            np.testing.assert_array_equal(
                streams[name].random(8), np.random.default_rng(child).random(8)
            )
    assert STREAM_NAMES[5] == "population"
    np.testing.assert_array_equal(
        rng_stream(7, "population").random(8), rng_streams(7)["population"].random(8)
    )


def test_unknown_stream_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown random stream 'fading'; known: channel, "):
        rng_stream(0, "fading")
