"""Allocators against exact oracles (brute force, MILP) and their documented properties."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desim.allocators import ALLOCATORS, Allocation, check_allocation, make_allocator
from desim.allocators.bandwidth import least_bandwidth_hz, minmax_latency_s
from desim.allocators.base import RoundContext
from desim.allocators.instances import random_context
from desim.errors import InfeasibleError, InputError, ScenarioError
from desim.world.rates import ShannonRate, shannon_rate_bps

REL = 1e-9
SEEDS = st.integers(0, 2**32 - 1)


def ctx_from(seed, k, n, **kw):
    return random_context(np.random.default_rng(seed), k, n, **kw)


def latency(name, ctx, params=None):
    alloc = make_allocator(name, params).allocate(ctx, np.random.default_rng(0))
    check_allocation(ctx, alloc)
    return ctx.round_latency_s(alloc), alloc


def tiny_ctx(budgets=(3e9, 3e9, 1.5e9), available=(True, True, True)):
    """The engine tests' three devices and two blocks as a snapshot (equal split: 1 MHz each)."""
    avail = np.array(available)
    compute = np.array([[1.0, 2.0], [2.0, 4.0], [2.0, 4.0]])
    return RoundContext(
        round_index=0,
        time_s=0.0,
        device_names=("A", "B", "C"),
        compute_s=np.where(avail[:, None], compute, np.inf),
        memory_bytes=np.array([1e9, 2e9]),
        memory_budget_bytes=np.array(budgets),
        upload_bits=np.array([1e6, 1e6]),
        snr_coef_hz=np.array([3e6, 15e6, 15e6]),
        available=avail,
        total_bandwidth_hz=2e6,
        aggregation_s=0.1,
        sample_bits=256.0,
        server_compute_s=np.array([2.0, 4.0]),
    )


# --- exact closed forms -------------------------------------------------------------------


def test_least_bandwidth_meets_the_rate_exactly_and_is_inf_beyond_the_supremum():
    a = np.array([3e6, 15e6, 1e9, 1e12, 1e6])
    rate = np.array([2e6, 1e6, 1e5, 1e3, 2e6])  # the last exceeds a/ln2 = 1.44e6
    beta = least_bandwidth_hz(a, rate)
    assert shannon_rate_bps(beta[:4], a[:4]) == pytest.approx(rate[:4], rel=1e-9)
    assert beta[0] == pytest.approx(1e6, rel=1e-12)  # 1 MHz * log2(1 + 3) = 2 Mbit/s
    assert np.isinf(beta[4])
    assert least_bandwidth_hz(np.array([5e6]), np.array([0.0]))[0] == 0.0


def test_crunch_on_the_hand_computed_instance():
    # t at 1 MHz each: A (1.5, 2.5), B (2.25, 4.25), C (2.25, inf: 1.5 GB < 2 GB).
    # Block 2 needs 1 device: 2.5 (A); block 1 needs the 2nd smallest of 1.5, 2.25, 2.25 -> 2.25
    lat, alloc = latency("crunch", tiny_ctx())
    assert lat == pytest.approx(2.5 + 0.1, abs=1e-12)
    assert alloc.block_device[1] == 0 and alloc.diagnostics["threshold_s"] == pytest.approx(2.5)


def test_minmax_split_equalises_active_latencies():
    ctx = ctx_from(3, 30, 12)
    _, alloc = latency("crunch", ctx, {"bandwidth": "minmax"})
    pair = ctx.pair_latency_s(alloc)
    assert pair.max() - pair.min() <= 1e-9 * pair.max()
    assert alloc.bandwidth_hz.sum() == pytest.approx(ctx.total_bandwidth_hz, rel=1e-12)
    # and it beats the equal split of the same assignment
    eq = Allocation(alloc.block_device, make_equal(ctx, alloc.block_device))
    assert pair.max() < ctx.pair_latency_s(eq).max()


def make_equal(ctx, bd):
    bw = np.zeros(ctx.num_devices)
    bw[bd] = ctx.total_bandwidth_hz / len(bd)
    return bw


@given(SEEDS, st.integers(1, 6))
@settings(max_examples=40, deadline=None)
def test_minmax_root_is_tight(seed, n):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.1, 2.0, (3, n))
    a = np.exp(rng.uniform(np.log(1e5), np.log(1e9), (3, n)))
    bits = rng.uniform(1e5, 1e7, n)
    rate, dev = ShannonRate(a.ravel()), np.arange(a.size).reshape(a.shape)
    t, bw = minmax_latency_s(c, bits, rate, dev, 1e7)
    assert np.all(bw.sum(axis=1) <= 1e7 * (1 + 1e-12))
    lat = c + bits / shannon_rate_bps(bw, a)
    assert np.all(lat.max(axis=1) <= t * (1 + 1e-9))
    # any lower target needs more than B
    from desim.allocators.bandwidth import pair_bandwidth_hz

    assert np.all(pair_bandwidth_hz(c, bits, rate, dev, t[:, None] * (1 - 1e-7)).sum(axis=1) > 1e7)


# --- oracles ------------------------------------------------------------------------------


@given(SEEDS, st.integers(2, 4), st.integers(0, 3), st.sampled_from(["equal", "proportional"]))
@settings(max_examples=40, deadline=None)
def test_crunch_equals_brute_force_and_milp(seed, n, extra, split):
    ctx = ctx_from(seed, n + extra, n, unavailable=0.3)
    params = {"bandwidth": split}
    try:
        want, _ = latency("brute-force", ctx, params)
    except InfeasibleError:
        for name in ("crunch", "milp", "bottleneck-exact"):
            with pytest.raises(InfeasibleError):
                latency(name, ctx, params)
        return
    for name in ("crunch", "milp", "bottleneck-exact"):
        assert latency(name, ctx, params)[0] == pytest.approx(want, rel=REL), name
    got, alloc = latency("crunch", ctx, {**params, "min_sum": True})
    assert got == pytest.approx(want, rel=REL)
    assert "fallback" not in alloc.diagnostics


def test_crunch_instances_include_memory_cuts_and_unavailable_devices():
    # the oracle test above is only meaningful if its instances exercise both constraints
    cut = unavailable = 0
    for seed in range(50):
        ctx = ctx_from(seed, 6, 4, unavailable=0.3)
        unavailable += int((~ctx.available).any())
        cut += int((ctx.memory_bytes[-1] > ctx.memory_budget_bytes[ctx.available]).any())
    assert cut >= 25 and unavailable >= 25


@given(SEEDS, st.integers(2, 4), st.integers(0, 3))
@settings(max_examples=25, deadline=None)
def test_crunch_falls_back_on_non_monotone_latencies(seed, n, extra):
    ctx = ctx_from(seed, n + extra, n, monotone=False, memory_cut=False, unavailable=0.0)
    want, _ = latency("brute-force", ctx, {"bandwidth": "equal"})
    got, alloc = latency("crunch", ctx)
    assert got == pytest.approx(want, rel=REL)
    mono = np.all(np.diff(ctx.compute_s, axis=1) >= 0)
    assert ("fallback" in alloc.diagnostics) == (not mono)


@given(SEEDS, st.integers(2, 4), st.integers(0, 3))
@settings(max_examples=25, deadline=None)
def test_jbba_exact_equals_brute_force_with_optimal_splits(seed, n, extra):
    ctx = ctx_from(seed, n + extra, n, unavailable=0.2)
    try:
        want, _ = latency("brute-force", ctx, {"bandwidth": "minmax"})
    except InfeasibleError:
        with pytest.raises(InfeasibleError):
            latency("jbba-exact", ctx)
        return
    got, _ = latency("jbba-exact", ctx, {"tolerance": 1e-8})
    assert got == pytest.approx(want, rel=1e-7)


@given(SEEDS, st.booleans())
@settings(max_examples=20, deadline=None)
def test_jbba_is_never_better_than_jbba_exact(seed, refine):
    ctx = ctx_from(seed, 12, 6, unavailable=0.1)
    try:
        exact, _ = latency("jbba-exact", ctx, {"tolerance": 1e-8})
    except InfeasibleError:
        return
    got, alloc = latency("jbba", ctx, {"refine": refine, "iterations": 20})
    assert got >= exact * (1 - 1e-7)
    trace = alloc.diagnostics["trace"]
    # weak duality: every dual value is a lower bound; the best primal never rises
    assert all(dual <= exact * (1 + 1e-7) for _, dual, _ in trace)
    best = [p for _, _, p in trace]
    assert all(b2 <= b1 for b1, b2 in zip(best, best[1:]))
    assert alloc.diagnostics["dual_bound_s"] <= exact * (1 + 1e-7)


def test_jbba_with_refinement_reaches_the_optimum_on_random_instances():
    gaps = []
    for seed in range(15):
        ctx = ctx_from(seed, 20, 8)
        try:
            exact, _ = latency("jbba-exact", ctx, {"tolerance": 1e-8})
        except InfeasibleError:
            continue
        gaps.append(latency("jbba", ctx)[0] / exact - 1)
    assert len(gaps) >= 10 and max(gaps) <= 1e-6


def test_jbba_beats_equal_split_crunch_when_bandwidth_matters():
    ctx = ctx_from(5, 20, 8)
    assert latency("jbba", ctx)[0] < latency("crunch", ctx)[0] * (1 - 1e-3)


# --- feasibility of every allocator ---------------------------------------------------------

GENIES = {"oracle-exact"}
"""Allocators that plan with the true future (``ctx.future``): tests/test_oracle_exact.py."""


@given(SEEDS, st.integers(1, 4), st.integers(0, 4), st.floats(0.0, 0.6))
@settings(max_examples=30, deadline=None)
def test_every_allocator_is_feasible_or_raises_infeasible(seed, n, extra, unavailable):
    ctx = ctx_from(seed, n + extra, n, unavailable=unavailable)
    for name in sorted(set(ALLOCATORS) - GENIES):
        try:
            alloc = make_allocator(name).allocate(ctx, np.random.default_rng(seed))
        except InfeasibleError:
            continue
        check_allocation(ctx, alloc)
        if alloc.estimated_latency_s is not None:
            assert alloc.estimated_latency_s == pytest.approx(ctx.round_latency_s(alloc), rel=1e-9)


@pytest.mark.parametrize("name", sorted(set(ALLOCATORS) - {"offload"} - GENIES))
def test_infeasible_instance_names_the_block(name):
    # only A can hold block 2 (needs 2 GB), and A is unavailable
    ctx = tiny_ctx(available=(False, True, True), budgets=(3e9, 1.5e9, 1.5e9))
    with pytest.raises(InfeasibleError, match=r"round 0: block 2 .*0 available device\(s\)"):
        make_allocator(name).allocate(ctx, np.random.default_rng(0))


def test_offload_needs_an_available_device():
    ctx = replace(tiny_ctx(), available=np.zeros(3, dtype=bool))
    with pytest.raises(InfeasibleError, match=r"block 1 cannot be placed: 0 of 3 devices"):
        make_allocator("offload").allocate(ctx, np.random.default_rng(0))


def test_offload_with_fewer_devices_than_blocks_spreads_the_mini_batches():
    # only C is available: it uploads both mini-batches (512 bits) with the whole 2 MHz band
    # (log2(1 + 15/2) bit/s per Hz); the server still trains 2 mini-batches: 0.8 s
    ctx = tiny_ctx(available=(False, False, True))
    lat, alloc = latency("offload", ctx)
    assert alloc.mode == "offload" and alloc.block_device.tolist() == [2, 2]
    assert alloc.bandwidth_hz.tolist() == [0.0, 0.0, 2e6]
    assert lat == pytest.approx(512 / (2e6 * np.log2(1 + 7.5)) + 0.8, rel=1e-12)
    # three mini-batches on two devices: the better channel (C, 15e6) takes the extra one
    three = replace(tiny_ctx(available=(True, False, True)), compute_s=np.ones((3, 3)),
                    memory_bytes=np.ones(3), upload_bits=np.ones(3),
                    server_compute_s=np.ones(3))
    alloc = make_allocator("offload").allocate(three, np.random.default_rng(0))
    assert sorted(alloc.block_device.tolist()) == [0, 2, 2]
    check_allocation(three, alloc)


def test_offload_uploads_mini_batches_then_the_server_trains():
    # uploaders: B and C (best SNR 15e6), 1 MHz each -> 4 Mbit/s, 256 bits -> 64 us;
    # server: 2 mini-batches x 4 s (deepest block) / speed 10 = 0.8 s; no aggregation
    lat, alloc = latency("offload", tiny_ctx())
    assert alloc.mode == "offload" and sorted(alloc.block_device.tolist()) == [1, 2]
    assert lat == pytest.approx(256 / 4e6 + 0.8, rel=1e-12)


def test_brute_force_refuses_large_instances():
    ctx = ctx_from(0, 20, 8)
    with pytest.raises(InputError, match=r"brute-force: .* more than allocator.max_assignments"):
        make_allocator("brute-force").allocate(ctx, np.random.default_rng(0))


# --- baselines ----------------------------------------------------------------------------


def test_single_device_trains_all_blocks_on_the_best_device():
    ctx = tiny_ctx()
    lat, alloc = latency("single-device", ctx)
    # A: deepest block 2 s + 2 Mbit at 2 MHz (2e6 log2 2.5 bit/s); B: 4 s + 2 Mbit at 2e6 log2 8.5
    a_s = 2.0 + 2e6 / (2e6 * np.log2(2.5))
    assert alloc.mode == "grouped" and alloc.block_device.tolist() == [0, 0]
    assert lat == pytest.approx(a_s + 0.1, rel=1e-12)


def test_minsum_minimises_the_sum_and_depth_unaware_ignores_depth():
    ctx = ctx_from(11, 15, 6, unavailable=0.0)
    _, ms = latency("minsum", ctx)
    _, cr = latency("crunch", ctx)
    assert ctx.pair_latency_s(ms).sum() <= ctx.pair_latency_s(cr).sum() * (1 + 1e-12)
    _, du = latency("depth-unaware", ctx)
    # a planner blind to depth does no better than the depth-aware optimum
    assert ctx.round_latency_s(du) >= ctx.round_latency_s(cr) * (1 - 1e-12)


def test_check_allocation_stays_strict_for_deft():
    from desim.errors import AllocationError

    ctx = tiny_ctx()
    with pytest.raises(AllocationError, match="at most one per device"):
        check_allocation(ctx, Allocation(np.array([0, 0]), np.array([2e6, 0, 0])))
    check_allocation(ctx, Allocation(np.array([0, 0]), np.array([2e6, 0, 0]), mode="grouped"))


# --- registry -----------------------------------------------------------------------------


def test_every_allocator_is_registered_with_description_and_typed_parameters():
    want = {
        "crunch", "jbba", "bottleneck-exact", "milp", "jbba-exact", "brute-force",
        "random", "greedy", "depth-unaware", "minsum", "single-device", "offload",
    }
    assert want <= set(ALLOCATORS)
    for info in ALLOCATORS.values():
        assert info.description
    assert ALLOCATORS["jbba"].parameters()["step"].endswith("= 'polyak'")
    with pytest.raises(ScenarioError, match="allocator.step"):
        make_allocator("jbba", {"step": "nope"})
    with pytest.raises(ScenarioError, match="allocator.bandwidth: unknown bandwidth split"):
        make_allocator("crunch", {"bandwidth": "nope"})
    assert make_allocator("crunch", {"bandwidth": "minmax", "min_sum": True}).min_sum


def test_allocator_parameters_come_from_set_overrides():
    from desim.io.scenario import load_scenario

    scen = load_scenario(
        None, ['allocator.name="jbba"', "allocator.iterations=7", 'allocator.step="diminishing"']
    )
    alloc = make_allocator(scen.allocator.name, scen.allocator.params)
    assert alloc.iterations == 7 and alloc.step == "diminishing"
