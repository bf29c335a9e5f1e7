"""single-device with its own data (one mini-batch a round) and with pooled data (N of them).

The tiny instance is the engine tests' (tests/helpers.py): devices A (speed 2, 3 GB),
B (speed 1, 3 GB), C (speed 1, 1.5 GB: block 1 only); blocks of 2 s and 4 s at speed 1, 1 and
2 GB, 1 Mbit each; B = 2 MHz, aggregation 0.1 s; SNR coefficients 3e6, 15e6, 15e6 Hz; a
mini-batch is 256 bits (batch 1 of 8 tokens, 32-bit ids).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import desim
from desim.allocators import make_allocator
from desim.allocators.base import RoundContext, check_allocation, plan_of
from desim.allocators.instances import random_context
from desim.errors import InfeasibleError, ScenarioError
from tests.helpers import tiny_simulation

R_A = 2e6 * np.log2(1 + 3e6 / 2e6)  # A's rate with the whole band, bit/s
R_B = 2e6 * np.log2(1 + 15e6 / 2e6)  # B's (and C's)
OWN_S = 2.0 + 2e6 / R_A + 0.1  # A: deepest block 4/2 s, 2 Mbit up, aggregation
POOLED = {"data": "pooled"}


def tiny_ctx(**changes: object) -> RoundContext:
    """The tiny instance as a snapshot (compute at speed 1 of the timeline)."""
    compute = np.array([[1.0, 2.0], [2.0, 4.0], [2.0, 4.0]])
    ctx = RoundContext(
        round_index=0, time_s=0.0, device_names=("A", "B", "C"), compute_s=compute,
        memory_bytes=np.array([1e9, 2e9]), memory_budget_bytes=np.array([3e9, 3e9, 1.5e9]),
        upload_bits=np.array([1e6, 1e6]), snr_coef_hz=np.array([3e6, 15e6, 15e6]),
        available=np.ones(3, dtype=bool), total_bandwidth_hz=2e6, aggregation_s=0.1,
        sample_bits=256.0, work_s=compute,
    )
    return replace(ctx, **changes)  # type: ignore[arg-type]


def pooled(ctx: RoundContext):  # type: ignore[no-untyped-def]
    return make_allocator("single-device", POOLED).allocate(ctx, np.random.default_rng(0))


# --- the allocation, by hand ----------------------------------------------------------------


def test_own_data_is_the_default_and_unchanged():
    alloc = make_allocator("single-device").allocate(tiny_ctx(), np.random.default_rng(0))
    assert make_allocator("single-device").data == "own"
    assert alloc.plan is None and alloc.block_device.tolist() == [0, 0]
    assert alloc.estimated_latency_s == pytest.approx(OWN_S, rel=1e-12)


def test_pooled_adds_the_other_mini_batches_and_their_compute():
    # trainer A: B uploads its 256 bits (15e6 is the best channel besides A) while A computes
    # its own batch (2 s, longer); the server relays them to A (256 bits at A's whole-band
    # rate), A accumulates one more batch (2 s) and uploads 2 Mbit. B as trainer: 4+4 s.
    alloc = pooled(tiny_ctx())
    assert alloc.mode == "grouped" and alloc.block_device.tolist() == [0, 0]
    assert alloc.bandwidth_hz.tolist() == [2e6, 0.0, 0.0]
    expected = max(2.0, 256 / R_B) + 256 / R_A + 2.0 + 2e6 / R_A + 0.1
    assert alloc.estimated_latency_s == pytest.approx(expected, rel=1e-12)
    # against own data: (N - 1) more batches of compute and the relay (the uploads overlap
    # the trainer's own batch here)
    assert expected - OWN_S == pytest.approx(2.0 + 256 / R_A, rel=1e-12)
    assert dict(alloc.diagnostics) == {"data": "pooled", "trainer": "A", "data_from": ["B"]}


def test_large_mini_batches_move_the_trainer_to_the_better_channel():
    # 20 Mbit batches: A would wait 20e6/R_B for B's upload and 20e6/R_A for the relay
    # (13.7 s in all); B computes longer but hears C and the relay at R_B (11.7 s)
    ctx = tiny_ctx(sample_bits=2e7)
    alloc = pooled(ctx)
    assert alloc.block_device.tolist() == [1, 1]
    expected = max(4.0, 2e7 / R_B) + 2e7 / R_B + 4.0 + 2e6 / R_B + 0.1
    assert alloc.estimated_latency_s == pytest.approx(expected, rel=1e-12)
    a_s = max(2.0, 2e7 / R_B) + 2e7 / R_A + 2.0 + 2e6 / R_A + 0.1
    assert expected < a_s


def test_the_plan_has_two_stages_and_per_block_rows():
    ctx = replace(tiny_ctx(), workload=tiny_simulation().workload)
    alloc = pooled(ctx)
    check_allocation(ctx, alloc)
    plan = plan_of(ctx, alloc)
    assert plan is alloc.plan
    assert plan.devices.tolist() == [0, 1] and plan.bandwidth_hz.tolist() == [2e6, 2e6]
    (c1, u1), (d2, c2, u2) = plan.stages
    assert (c1.kind, c1.amount.tolist(), u1.kind, u1.amount.tolist()) == (
        "compute", [2.0, 0.0], "up", [0.0, 256.0])
    assert [(p.kind, p.amount.tolist()) for p in (d2, c2, u2)] == [
        ("down", [256.0, 0.0]), ("compute", [2.0, 0.0]), ("up", [2e6, 0.0])]
    assert plan.barrier_s == (0.0, 0.1)
    rows = plan.rows
    assert rows.participant.tolist() == [0, 0] and rows.block.tolist() == [1, 2]
    assert rows.samples.tolist() == [2.0, 2.0]  # N = 2 mini-batches of 1 sample
    assert rows.memory_bytes.tolist() == [2e9, 2e9]  # the trainer's peak, one mini-batch at a time
    assert rows.planned_compute_s.tolist() == [4.0, 4.0]
    assert ctx.round_latency_s(alloc) == plan.planned_latency_s == alloc.estimated_latency_s


def test_pooled_needs_n_devices_that_can_upload():
    ctx = tiny_ctx(available=np.array([True, False, False]))
    with pytest.raises(InfeasibleError, match=(
            r"^round 0: block 2 cannot be placed: single-device \(pooled data\) needs 2 "
            r"devices \(the trainer and 1 uploading a mini-batch each\), but only 1 of 3 "
            r"devices are available with nonzero channel gain$")):
        pooled(ctx)
    # B and C are heard, A is not: C still uploads for B
    alloc = pooled(tiny_ctx(snr_coef_hz=np.array([0.0, 15e6, 15e6])))
    assert alloc.block_device.tolist() == [1, 1]
    assert alloc.diagnostics["data_from"] == ["C"]


def test_pooled_refuses_when_no_device_holds_the_deepest_block():
    ctx = tiny_ctx(memory_budget_bytes=np.array([1.5e9, 1.5e9, 1.5e9]))
    with pytest.raises(InfeasibleError, match=r"^round 0: block 2 \(needs 2e\+09 bytes\)"):
        pooled(ctx)


def test_an_unknown_data_mode_is_one_clear_error():
    with pytest.raises(ScenarioError, match=r"allocator.data: Input should be 'own' or "
                                            r"'pooled' \(got 'shared'\)"):
        make_allocator("single-device", {"data": "shared"})


@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(0, 6))
@settings(max_examples=60, deadline=None)
def test_pooled_is_feasible_consistent_and_never_faster_than_own(seed, n, extra):
    ctx = random_context(np.random.default_rng(seed), n + extra, n, unavailable=0.3)
    try:
        alloc = pooled(ctx)
    except InfeasibleError as exc:
        assert str(exc).startswith("round 0: ")
        return
    check_allocation(ctx, alloc)
    plan = plan_of(ctx, alloc)
    assert plan.size == n and len(set(plan.devices.tolist())) == n
    assert alloc.estimated_latency_s == pytest.approx(ctx.round_latency_s(alloc), rel=1e-12)
    own = make_allocator("single-device").allocate(ctx, np.random.default_rng(0))
    # the pooled trainer still computes its deepest block and uploads every gradient
    assert alloc.estimated_latency_s >= own.estimated_latency_s * (1 - 1e-12)


# --- the engine ------------------------------------------------------------------------------


def _tiny(data: str, rounds: int = 2):  # type: ignore[no-untyped-def]
    sim = tiny_simulation(allocator="single-device", rounds=rounds)
    return replace(sim, allocator=make_allocator("single-device", {"data": data})).run()


def test_engine_realises_the_pooled_plan_exactly_on_a_constant_world():
    own, pool = _tiny("own"), _tiny("pooled")
    o, p = own.rounds_frame(), pool.rounds_frame()
    expected = 4.1 + (256 + 2e6) / R_A
    assert p["latency_s"].tolist() == pytest.approx([expected] * 2, rel=1e-12)
    assert p["planned_latency_s"].tolist() == pytest.approx(p["latency_s"].tolist(), rel=1e-12)
    assert (p["latency_s"] - o["latency_s"]).tolist() == pytest.approx([2.0 + 256 / R_A] * 2,
                                                                       rel=1e-12)
    rows = pool.device_rounds_frame()
    assert rows["device"].tolist() == ["A"] * 4 and rows["block"].tolist() == [1, 2, 1, 2]
    assert rows["samples"].tolist() == [2.0] * 4  # every block's update saw both batches
    assert rows["download_bits"].tolist() == [256.0] * 4
    first = rows.iloc[0]
    assert first["compute_busy_s"] == pytest.approx(4.0, rel=1e-12)
    assert first["upload_start_s"] == pytest.approx(4.0 + 256 / R_A, rel=1e-12)
    assert own.device_rounds_frame()["samples"].tolist() == [1.0] * 4


# the default scenario's trace keys do not apply to the static channel and constant timeline
@pytest.mark.filterwarnings("ignore:.*is a parameter of 'trace'")
def test_default_scenario_pooled_consumes_n_mini_batches_and_plans_exactly_when_static():
    sc = desim.load_scenario(None, [
        "run.rounds=2", 'allocator.name="single-device"', 'allocator.data="pooled"',
        'channel.kind="static"', 'compute.kind="constant"'])
    result = desim.build_simulation(sc).run()
    rounds = result.rounds_frame()
    assert rounds["planned_latency_s"].tolist() == pytest.approx(rounds["latency_s"].tolist(),
                                                                 rel=1e-9)
    assert rounds["samples"].tolist() == [12 * 8.0] * 2  # N = 12 mini-batches of b = 8
    rows = result.device_rounds_frame()
    assert len(rows) == 24 and rows.groupby("round")["device"].nunique().tolist() == [1, 1]
    assert rows["download_bits"].iloc[0] == 11 * 8 * 128 * 32  # the relayed token ids
