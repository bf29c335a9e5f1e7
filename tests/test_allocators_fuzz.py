"""Every registered allocator on random snapshots: a valid allocation or InfeasibleError.

Snapshots come from :func:`desim.allocators.instances.random_context`, then get random
availability masks, memory budgets, stalled devices (speed 0) and muted uplinks (zero channel
gain, as a zero-throughput trace gives), with ``K`` from 0 and often fewer devices than blocks.
An independent matching oracle says when an allocator may refuse.
"""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desim.allocators import ALLOCATORS, check_allocation, make_allocator
from desim.allocators.crunch import crunch_threshold
from desim.allocators.instances import random_context
from desim.errors import InfeasibleError, InputError

# allocators whose plan must use pairs with a finite planned latency (eligible, uplink > 0)
LATENCY_AWARE = {
    "bottleneck-exact", "brute-force", "crunch", "depth-unaware", "jbba", "jbba-exact",
    "milp", "minsum",
}
# allocators that place blocks on eligible devices without looking at the channel
CHANNEL_BLIND = {"greedy", "random"}
PARAMS = {"brute-force": {"max_assignments": 5000}}  # keep the oracle's enumeration small
# with fewer devices than blocks these place block sets with crunch-multi instead
SET_FALLBACK = {"crunch", "bottleneck-exact"}


def device_subset(k):
    """A few device indices (at most two), so stalls and mutes stay the exception."""
    return st.frozensets(st.integers(0, max(k - 1, 0)), max_size=2 if k else 0)


@st.composite
def snapshots(draw):
    """A random round snapshot with ``0 ≤ K ≤ 12`` devices and ``1 ≤ N ≤ 12`` blocks."""
    k = draw(st.integers(0, 12))
    n = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ctx = random_context(rng, k, n, monotone=draw(st.booleans()), unavailable=0.0)
    available = np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k)), dtype=bool)
    # budget level j fits blocks 1..j (memory grows with depth); level 0 fits no block
    level = np.array(draw(st.lists(st.integers(0, n), min_size=k, max_size=k)), dtype=np.intp)
    budget = np.where(level > 0, ctx.memory_bytes[np.maximum(level - 1, 0)], 0.0)
    compute = ctx.compute_s.copy()  # unavailable devices keep a finite time, as in the engine
    stalled = sorted(draw(device_subset(k)))
    compute[stalled] = np.inf
    snr = ctx.snr_coef_hz.copy()
    snr[sorted(draw(device_subset(k)))] = 0.0
    return replace(
        ctx, compute_s=compute, memory_budget_bytes=budget, available=available, snr_coef_hz=snr
    )


def has_perfect_matching(mask):
    """Whether every block (column of ``mask`` ``(K, N)``) gets its own device (Kuhn)."""
    k, n = mask.shape
    owner = [-1] * k

    def augment(block, seen):
        for dev in np.flatnonzero(mask[:, block]):
            if not seen[dev]:
                seen[dev] = True
                if owner[dev] < 0 or augment(owner[dev], seen):
                    owner[dev] = block
                    return True
        return False

    return all(augment(j, [False] * k) for j in range(n))


def may_refuse(name, ctx):
    """Whether ``name`` may raise InfeasibleError on ``ctx`` (the instance has no solution)."""
    eligible = ctx.eligible()
    talks = (ctx.snr_coef_hz > 0)[:, None]
    sets = name == "crunch-multi" or (name in SET_FALLBACK and ctx.num_devices < ctx.num_blocks)
    if sets:  # no extras here: a device that holds block N can train every block
        return not (eligible[:, -1] & talks[:, 0]).any()
    if name in LATENCY_AWARE:
        return not has_perfect_matching(eligible & talks)
    if name in CHANNEL_BLIND:
        return not has_perfect_matching(eligible)
    if name == "single-device":
        return not (eligible[:, -1] & talks[:, 0]).any()
    if name == "offload":  # the min(N, available) best-channel devices need an uplink
        avail = np.flatnonzero(ctx.available)
        best = avail[np.argsort(-ctx.snr_coef_hz[avail], kind="stable")][:ctx.num_blocks]
        return avail.size == 0 or (ctx.sample_bits > 0 and bool((ctx.snr_coef_hz[best] <= 0).any()))
    raise AssertionError(f"no feasibility oracle for allocator {name!r}; add one")


# oracle-exact plans with the true future, which a snapshot lacks: tests/test_oracle_exact.py
@pytest.mark.parametrize("name", sorted(set(ALLOCATORS) - {"oracle-exact"}))
@given(ctx=snapshots(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_allocator_returns_a_valid_allocation_or_raises_infeasible(name, ctx, seed):
    allocator = make_allocator(name, PARAMS.get(name))
    try:
        alloc = allocator.allocate(ctx, np.random.default_rng(seed))
    except InfeasibleError as exc:
        msg = str(exc)
        assert msg.startswith(f"round {ctx.round_index}: ")
        assert may_refuse(name, ctx), f"{name} refused a feasible instance: {msg}"
        usable = int(ctx.eligible().any(axis=1).sum())
        sets = name == "crunch-multi" or (
            name in SET_FALLBACK and ctx.num_devices < ctx.num_blocks)
        if name not in {"single-device", "offload"} and not sets and usable < ctx.num_blocks:
            avail = int(ctx.available.sum())
            assert (
                f"{avail} of {ctx.num_devices} devices available for {ctx.num_blocks} blocks"
                in msg
            )
            assert msg.endswith("each block needs its own device")
        return
    except InputError as exc:  # brute-force refuses to enumerate too many maps (documented)
        assert name == "brute-force" and "allocator.max_assignments" in str(exc)
        return
    check_allocation(ctx, alloc)
    if alloc.estimated_latency_s is not None:
        assert np.isfinite(alloc.estimated_latency_s)
        assert alloc.estimated_latency_s == pytest.approx(ctx.round_latency_s(alloc), rel=1e-9)


# --- regressions: fewer devices than blocks ------------------------------------------------


def test_crunch_threshold_with_fewer_devices_than_blocks_names_the_block():
    # K = 2 devices, N = 3 blocks, every pair eligible: blocks 1..3 need 3 devices
    t = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]])
    assert crunch_threshold(t) == (float("inf"), 1)
    # block 3 fits on no device: it is the deepest block that violates Hall's condition
    t[:, 2] = np.inf
    assert crunch_threshold(t) == (float("inf"), 3)
    assert crunch_threshold(np.zeros((0, 4))) == (float("inf"), 4)


def test_crunch_threshold_is_unchanged_with_enough_devices():
    t = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [0.5, 5.0, 9.0]])
    # block 3 alone: smallest of (3, 4, 9) = 3; blocks 2..3: second-smallest of (2, 3, 5) = 3;
    # blocks 1..3: third-smallest of (1, 2, 0.5) = 2; tau* = 3, the tie goes to block 2
    assert crunch_threshold(t) == (3.0, 2)


@pytest.mark.parametrize("name", sorted((LATENCY_AWARE | CHANNEL_BLIND) - SET_FALLBACK))
def test_three_devices_for_twelve_blocks_is_infeasible_with_the_counts(name):
    ctx = random_context(np.random.default_rng(3), 3, 12, unavailable=0.0, memory_cut=False)
    with pytest.raises(
        InfeasibleError,
        match=r"^round 0: block \d+ cannot be placed: 3 of 3 devices available for 12 blocks; "
        r"each block needs its own device$",
    ):
        make_allocator(name).allocate(ctx, np.random.default_rng(0))


def test_unusable_devices_are_counted_in_the_message():
    ctx = random_context(np.random.default_rng(3), 4, 3, unavailable=0.0, memory_cut=False)
    ctx = replace(ctx, memory_budget_bytes=np.array([0.0, 0.0, 9e9, 9e9]))
    with pytest.raises(
        InfeasibleError,
        match=r"^round 0: block 1 cannot be placed: 4 of 4 devices available for 3 blocks, "
        r"but only 2 of them can train a block \(memory or compute\); "
        r"each block needs its own device$",
    ):
        make_allocator("crunch").allocate(ctx, np.random.default_rng(0))


def test_single_device_trains_every_block_even_with_one_device():
    ctx = random_context(np.random.default_rng(5), 1, 4, unavailable=0.0, memory_cut=False)
    alloc = make_allocator("single-device").allocate(ctx, np.random.default_rng(0))
    check_allocation(ctx, alloc)
    assert alloc.mode == "grouped" and alloc.block_device.tolist() == [0, 0, 0, 0]
    assert alloc.bandwidth_hz.tolist() == [ctx.total_bandwidth_hz]


def test_single_device_refuses_a_device_with_a_muted_uplink():
    # device 1 holds every block but has zero channel gain; device 0 holds only block 1
    ctx = random_context(np.random.default_rng(5), 2, 3, unavailable=0.0, memory_cut=False)
    ctx = replace(
        ctx,
        memory_budget_bytes=np.array([ctx.memory_bytes[0], ctx.memory_bytes[-1]]),
        snr_coef_hz=np.array([1e8, 0.0]),
    )
    with pytest.raises(InfeasibleError, match=r"^round 0: single-device: .*zero channel gain"):
        make_allocator("single-device").allocate(ctx, np.random.default_rng(0))


def test_brute_force_refuses_when_every_map_has_a_muted_uplink():
    ctx = random_context(np.random.default_rng(5), 3, 2, unavailable=0.0, memory_cut=False)
    ctx = replace(ctx, snr_coef_hz=np.array([1e8, 0.0, 0.0]))
    with pytest.raises(
        InfeasibleError,
        match=r"^round 0: block 1 .*3 available device\(s\) can hold it \(2 of them with zero "
        r"channel gain, so no uplink\), but blocks 1\.\.\.2 need 2 distinct devices",
    ):
        make_allocator("brute-force").allocate(ctx, np.random.default_rng(0))


def test_offload_names_the_counts():
    ctx = random_context(np.random.default_rng(5), 2, 3, unavailable=0.0)
    ctx = replace(ctx, snr_coef_hz=np.array([1e6, 0.0]), sample_bits=256.0)
    with pytest.raises(
        InfeasibleError,
        match=r"^round 0: block 1 cannot be placed: offload spreads 3 mini-batches over the 2 "
        r"best-channel available devices, but only 1 of them have nonzero channel gain$",
    ):
        make_allocator("offload").allocate(ctx, np.random.default_rng(0))
