"""``crunch-multi`` (devices that train several blocks) against brute force and MILP oracles.

Instances are :func:`random_context` snapshots with extras: uniform (the range search),
differing by block (bounds, then HiGHS) and with bits differing by block (the general MILP).
The brute force prices every block→device map with the set costs directly, so it checks the
range lemma and the search alike; the MILP assumes no structure. The fast subset runs by
default, the rest with ``-m slow`` (1,380 against brute force, 200 larger against the MILP).
"""

from dataclasses import replace

import numpy as np
import pytest

from desim.allocators import check_allocation, make_allocator
from desim.allocators.bandwidth import planned_latency_matrix_s
from desim.allocators.base import Allocation, RoundContext, plan_of
from desim.allocators.crunch import crunch_threshold
from desim.allocators.crunch_multi import (
    count_upload_s,
    most_devices,
    placement_latency_s,
    planned_share_hz,
    solve_sets,
)
from desim.allocators.instances import random_context
from desim.allocators.multi_exact import brute_force_sets, solve_sets_milp
from desim.allocators.ranges import covering_ranges
from desim.errors import AllocationError, InfeasibleError, ScenarioError

KINDS = ("uniform", "by-block", "bits")


def instance(seed, kind):
    """A small random snapshot (``K^N ≤ 1024``) with extras of ``kind``."""
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    while k**n > 1024:
        n -= 1
    ctx = random_context(rng, k, n, monotone=kind != "bits" or rng.random() < 0.5)
    scale = np.where(np.isfinite(ctx.compute_s[:, :1]), 1 / ctx.compute_s[:, :1], np.nan)
    level = rng.uniform(0, 0.4) * (rng.random() < 0.8)  # share of a block-1 compute
    by_block = rng.uniform(0.5, 1.5, n) if kind != "uniform" else np.ones(n)
    xbytes = rng.uniform(0, 3e8) * (rng.random() < 0.8) * by_block
    ctx = replace(ctx, extra_compute_s=level * by_block / scale, extra_memory_bytes=xbytes)
    if kind == "bits":
        ctx = replace(ctx, upload_bits=ctx.upload_bits * rng.uniform(0.5, 1.5, n))
    split = "proportional" if kind != "bits" and rng.random() < 0.5 else "equal"
    return ctx, split


def oracle_upload(ctx, split):
    """``upload_s(k, bits, used)``: ``proportional`` shares, or ``B`` split equally among the
    ``used`` devices of the placement (what ``equal`` realises)."""
    total = float(ctx.upload_bits.sum())

    def upload(k, bits, used):
        bw = (ctx.total_bandwidth_hz * bits / total if split == "proportional"
              else planned_share_hz(ctx, used))
        rate = ctx.rates.rate_bps(np.array([bw]), np.array([k]))[0]
        return bits / rate if bits > 0 else 0.0

    return upload


def best_milp(ctx, split):
    """The general MILP's optimum (count-priced upload), over every device count for ``equal``."""
    if split == "proportional":
        found = solve_sets_milp(ctx, count_upload_s(ctx, split), 60.0)
        return None if found is None else (found[0], count_upload_s(ctx, split))
    best = None
    for u in range(1, most_devices(ctx) + 1):
        table = count_upload_s(ctx, split, u)
        found = solve_sets_milp(ctx, table, 60.0, max_devices=u)
        if found is not None and (best is None or found[1] < best[0]):
            best = (found[1], found[0], table)
    return None if best is None else best[1:]


def check_against_oracles(seed, kind):
    ctx, split = instance(seed, kind)
    best, _ = brute_force_sets(ctx, oracle_upload(ctx, split))
    try:
        block_device, tau, diag = solve_sets(ctx, split, 20_000, 60.0)
    except InfeasibleError:
        assert np.isinf(best), f"seed {seed}: refused a feasible instance (optimum {best})"
        return "infeasible"
    assert np.isfinite(tau) and tau == pytest.approx(best, rel=1e-9, abs=0), (seed, kind, diag)
    table = count_upload_s(ctx, split, diag.get("planned_devices"))
    if split == "equal":  # the equal split among the devices used is what was planned
        assert diag["planned_devices"] == np.unique(block_device).size
    if kind != "bits":  # the placement itself costs what was reported
        assert placement_latency_s(ctx, block_device, table) == pytest.approx(tau, rel=1e-12)
        milp = best_milp(ctx, split)  # no structure assumed, count-priced upload
        assert milp is not None
        assert placement_latency_s(ctx, milp[0], milp[1]) == pytest.approx(best, rel=1e-7)
    alloc = make_allocator("crunch-multi", {"bandwidth": split}).allocate(
        ctx, np.random.default_rng(0))
    check_allocation(ctx, alloc)
    assert alloc.estimated_latency_s == pytest.approx(ctx.round_latency_s(alloc), rel=1e-12)
    return diag["method"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(60))
def test_crunch_multi_equals_brute_force_and_milp(seed, kind):
    check_against_oracles(seed, kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_crunch_multi_equals_the_oracles_on_many_instances(kind):
    methods = {}
    for seed in range(1000, 1000 + 400):
        m = check_against_oracles(seed, kind)
        methods[m] = methods.get(m, 0) + 1
    want = {"uniform": {"ranges"}, "by-block": {"ranges", "ranges+milp"}, "bits": {"milp"}}
    assert want[kind] <= set(methods), methods  # each path really ran


@pytest.mark.slow
@pytest.mark.parametrize("by_block", [False, True])
def test_crunch_multi_equals_the_general_milp_on_larger_instances(by_block):
    solved = 0
    for seed in range(100):
        rng = np.random.default_rng([seed, 7])
        k, n = int(rng.integers(2, 13)), int(rng.integers(4, 13))
        ctx = random_context(rng, k, n)
        spread = rng.uniform(0.5, 1.5, n) if by_block else np.ones(n)
        ctx = replace(ctx, extra_compute_s=0.01 * spread * np.ones((k, 1)),
                      extra_memory_bytes=np.full(n, 5e7))
        try:
            _, tau, _ = solve_sets(ctx, "equal", 20_000, 60.0)
        except InfeasibleError:
            assert best_milp(ctx, "equal") is None
            continue
        milp = best_milp(ctx, "equal")
        assert placement_latency_s(ctx, milp[0], milp[1]) == pytest.approx(tau, rel=1e-7)
        solved += 1
    assert solved >= 50


def reach(cap):
    """Exact walk feasibility by DP over subsets: the least position every subset reaches."""
    k, n = cap.shape
    best = [n] * (1 << k)
    for mask in range(1, 1 << k):
        best[mask] = min(
            (p - cap[j, p - 1] if p > 0 else 0)
            for j in range(k) if mask >> j & 1 for p in [best[mask ^ (1 << j)]]
        )
    return best[-1] <= 0


@pytest.mark.parametrize("seed", range(40))
def test_range_search_and_its_milp_equal_the_subset_dp(seed):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 9)), int(rng.integers(3, 13))
    top = np.sort(rng.integers(0, rng.integers(1, n + 1) + 1, size=(k, n)), axis=1)[:, ::-1]
    cap = np.minimum(top, np.arange(1, n + 1))  # non-increasing in p, at most p
    want = reach(cap)
    for budget in (10**6, 1):  # the search, then HiGHS past a budget of one node
        ranges, info = covering_ranges(cap, budget, 60.0)
        assert (ranges is not None) == want, (cap, info)
        if ranges is not None:
            p, used = n, set()
            for dev, deepest, count in ranges:
                assert deepest == p and dev not in used and 1 <= count <= cap[dev, p - 1]
                used.add(dev)
                p -= count
            assert p == 0


def walk(cap, order):
    p = cap.shape[1]
    for k in order:
        p -= cap[k, p - 1] if p > 0 else 0
    return p <= 0


def test_no_order_of_the_devices_is_canonical():
    # docs/allocators.md: compute a + b·d, 3 s upload a block, tau = 10 s, N = 4; caps by hand
    def caps(a, b):
        return [max((m for m in range(d + 1) if a + b * d + 3 * m <= 10), default=0)
                for d in range(1, 5)]

    a, b, c, c2 = caps(1, 2), caps(2, 1), caps(3, 1), caps(0, 2)
    assert (a, b, c, c2) == ([1, 1, 1, 0], [1, 2, 1, 1], [1, 1, 1, 1], [1, 2, 1, 0])
    with_c, with_c2 = np.array([a, b, c]), np.array([a, b, c2])
    orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    ok_c = [o for o in orders if walk(with_c, o)]
    ok_c2 = [o for o in orders if walk(with_c2, o)]
    assert ok_c == [(2, 0, 1)] and ok_c2 == [(1, 0, 2)]  # A before B, then B before A
    assert covering_ranges(with_c, 100, 60.0)[0] is not None
    assert covering_ranges(with_c2, 100, 60.0)[0] is not None


# --- crunch-multi and crunch --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_it_equals_crunch_when_one_block_per_device_is_optimal(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    ctx = random_context(rng, n + int(rng.integers(0, 8)), n)
    try:
        tau_crunch, _ = crunch_threshold(planned_latency_matrix_s(ctx, "equal"))
    except InfeasibleError:
        return
    if not np.isfinite(tau_crunch):
        return
    block_device, tau, _ = solve_sets(ctx, "equal", 20_000, 60.0)
    assert tau <= tau_crunch
    if np.bincount(block_device).max() == 1:  # its optimum is single-block: crunch's
        assert tau == tau_crunch
    # a huge extra makes every set of two slower than any single block: exactly crunch
    big = replace(ctx, extra_compute_s=np.full(ctx.compute_s.shape, 1e6))
    block_device, tau, _ = solve_sets(big, "equal", 20_000, 60.0)
    assert tau == tau_crunch and np.bincount(block_device).max() == 1
    alloc = make_allocator("crunch-multi").allocate(big, np.random.default_rng(0))
    assert alloc.mode == "deft"  # one block per device: re-plannable like any DEFT round


def test_crunch_with_fewer_devices_than_blocks_falls_back_with_a_note():
    ctx = random_context(np.random.default_rng(2), 3, 8, unavailable=0.0, memory_cut=False)
    alloc = make_allocator("crunch").allocate(ctx, np.random.default_rng(0))
    check_allocation(ctx, alloc)
    assert alloc.mode == "grouped"
    assert alloc.diagnostics["fallback"].startswith("crunch-multi: 3 devices for 8 blocks")
    multi = make_allocator("crunch-multi").allocate(ctx, np.random.default_rng(0))
    assert alloc.block_device.tolist() == multi.block_device.tolist()


def test_a_four_device_run_records_the_fallback():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    for name, note in (("crunch-multi", False), ("crunch", True)):
        scenario = load_scenario(None, ["devices.population.count=4", "run.rounds=2",
                                        f'allocator.name="{name}"'])
        result = build_simulation(scenario).run()
        rounds = result.tables()["rounds"]
        assert len(rounds) == 2 and np.isfinite(rounds.latency_s).all()
        diags = result.metadata["allocator_diagnostics"]
        assert [("fallback" in d) for d in diags] == [note, note]
        assert all(d["most_blocks_on_a_device"] >= 3 for d in diags)  # 12 blocks on 4


def test_allocators_of_one_block_per_device_still_refuse_fewer_devices():
    from desim.engine.assembly import build_simulation
    from desim.io.scenario import load_scenario

    scenario = load_scenario(None, ["devices.population.count=4", 'allocator.name="greedy"'])
    with pytest.raises(ScenarioError, match=r"4 devices for 12 blocks; .*crunch-multi"):
        build_simulation(scenario)


# --- composed costs of a grouped allocation -----------------------------------------------


def grouped_ctx():
    """Two devices, three blocks; device speeds 2 and 1 (planned = work / speed)."""
    work = np.array([[2.0, 3.0, 5.0], [2.0, 3.0, 5.0]])
    extra = np.array([[0.5, 0.25, 0.125], [0.5, 0.25, 0.125]])
    speed = np.array([2.0, 1.0])
    return RoundContext(
        round_index=0, time_s=0.0, device_names=("A", "B"),
        compute_s=work / speed[:, None], memory_bytes=np.array([1e9, 2e9, 3e9]),
        memory_budget_bytes=np.array([3.2e9, 3.2e9]), upload_bits=np.array([1e6, 2e6, 4e6]),
        snr_coef_hz=np.array([3e6, 3e6]), available=np.array([True, True]),
        total_bandwidth_hz=2e6, aggregation_s=0.1, work_s=work, speed=speed,
        extra_compute_s=extra / speed[:, None], extra_work_s=extra,
        extra_memory_bytes=np.array([1e8, 2e8, 4e8]),
    )


def test_the_composed_cost_of_a_grouped_allocation_is_the_hand_computation():
    ctx = grouped_ctx()
    # A trains blocks 1 and 3 (deepest 3), B trains block 2; 1 MHz each: rate 2 Mbit/s
    alloc = Allocation(np.array([0, 1, 0]), np.array([1e6, 1e6]), mode="grouped")
    check_allocation(ctx, alloc)
    compute, bits = ctx.device_work(alloc)
    assert compute.tolist() == [5.0 / 2 + 0.5 / 2, 3.0, 5.0 / 2 + 0.5 / 2]
    assert bits.tolist() == [5e6, 2e6, 5e6]
    assert ctx.set_memory_bytes(alloc).tolist() == [3.1e9, 2e9, 3.1e9]
    plan = plan_of(ctx, alloc)
    assert plan.devices.tolist() == [0, 1]
    assert plan.stages[0][0].amount.tolist() == [5.5, 3.0]  # work at speed 1: 5 + 0.5, 3
    assert plan.stages[0][1].amount.tolist() == [5e6, 2e6]
    assert plan.rows.memory_bytes.tolist() == [3.1e9, 2e9, 3.1e9]
    rate = 1e6 * np.log2(1 + 3e6 / 1e6)
    assert plan.planned_latency_s == pytest.approx(max(2.75 + 5e6 / rate, 3 + 2e6 / rate) + 0.1,
                                                   rel=1e-12)
    # 3.1 GB fits 3.2 GB; with block 2 on A too the set needs 3 + 0.1 + 0.2 = 3.3 GB
    with pytest.raises(AllocationError, match=r"device A trains blocks 1, 2, 3, which need 3.3e"):
        check_allocation(ctx, Allocation(np.array([0, 0, 0]), np.array([2e6, 0]),
                                         mode="grouped"))


def test_single_device_pays_the_extras_of_its_shallower_blocks():
    ctx = grouped_ctx()
    ctx = replace(ctx, memory_budget_bytes=np.array([3.2e9, 4e9]))  # only B holds all three
    alloc = make_allocator("single-device").allocate(ctx, np.random.default_rng(0))
    assert alloc.block_device.tolist() == [1, 1, 1]
    rate = 2e6 * np.log2(1 + 3e6 / 2e6)
    assert alloc.estimated_latency_s == pytest.approx(5.0 + 0.5 + 0.25 + 7e6 / rate + 0.1,
                                                      rel=1e-12)


@pytest.mark.parametrize("split", ["equal", "proportional", "minmax"])
def test_every_split_is_feasible_and_minmax_equalises_the_devices(split):
    ctx = random_context(np.random.default_rng(4), 5, 12, unavailable=0.0)
    ctx = replace(ctx, extra_compute_s=np.full(ctx.compute_s.shape, 0.01))
    alloc = make_allocator("crunch-multi", {"bandwidth": split}).allocate(
        ctx, np.random.default_rng(0))
    check_allocation(ctx, alloc)
    assert alloc.mode == "grouped"
    assert alloc.bandwidth_hz.sum() == pytest.approx(ctx.total_bandwidth_hz, rel=1e-12)
    if split == "minmax":
        pair = ctx.pair_latency_s(alloc)
        assert pair.max() - pair.min() <= 1e-9 * pair.max()
        equal = make_allocator("crunch-multi").allocate(ctx, np.random.default_rng(0))
        assert ctx.round_latency_s(alloc) <= ctx.round_latency_s(equal) * (1 + 1e-12)


def test_no_placement_names_the_block_and_the_counts():
    ctx = random_context(np.random.default_rng(1), 3, 6, unavailable=0.0)
    small = replace(ctx, memory_budget_bytes=np.full(3, ctx.memory_bytes[-1] * 0.99))
    with pytest.raises(InfeasibleError, match=r"^round 0: block 6 .*0 available device\(s\)"):
        make_allocator("crunch-multi").allocate(small, np.random.default_rng(0))
    # every device holds block 6 alone, but 6 blocks on 3 devices need room for 2 each
    tight = replace(ctx, memory_budget_bytes=np.full(3, ctx.memory_bytes[-1]),
                    extra_memory_bytes=np.full(6, 1e12))
    with pytest.raises(InfeasibleError, match=r"cannot cover all 6 blocks"):
        make_allocator("crunch-multi").allocate(tight, np.random.default_rng(0))
