"""The Gymnasium environment: the API checker, equivalence with ``desim run``, masks, repairs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from desim.allocators import make_allocator
from desim.allocators.base import Allocation, RoundContext, check_allocation
from desim.cli.main import main
from desim.engine.assembly import build_simulation
from desim.errors import ScenarioError
from desim.gym import DeftEnv, action_mask, decide
from desim.io.scenario import load_scenario

SMALL = ["run.rounds=3", "devices.population.count=14"]
# the golden faults scenario: dropouts, upload timeouts and the deadline, blocks re-planned
FAULTS = ["run.rounds=4", "faults.dropout_rate=0.1", 'run.straggler_policy="deadline"',
          "run.deadline_s=2.2", "faults.upload_timeout_s=2.0", 'run.on_infeasible="skip"']
# devices that come and go (more devices than blocks), so masks have holes
ONOFF = ["run.rounds=3", 'compute.path="shipped:compute-onoff-20dev.csv"']
# what the checker says of any honest environment with unbounded quantities and no spec
KNOWN_WARNINGS = ("maximum value is infinity", "not having a spec")


def test_the_gymnasium_checker_passes():
    env = DeftEnv(None, [*FAULTS, 'allocator.name="crunch"'])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    other = [str(w.message) for w in caught
             if not any(k in str(w.message) for k in KNOWN_WARNINGS)]
    assert not other


def _env_rounds(overrides: list[str], name: str, seed: int, *, via_action: bool = False):
    env = DeftEnv(None, [*overrides, f'allocator.name="{name}"'])
    allocator = make_allocator(name)
    env.reset(seed=seed)
    infos, done = [], False
    while not done:
        alloc = allocator.allocate(env.unwrapped.snapshot(), env.unwrapped.rng)
        action = env.unwrapped.action_of(alloc) if via_action else alloc
        _, reward, done, _, info = env.step(action)
        assert reward == -info["realised_latency_s"]
        infos.append(info)
    return env.unwrapped.result, infos


def _run_rounds(overrides: list[str], name: str, seed: int):
    scenario = load_scenario(None, [*overrides, f'allocator.name="{name}"', f"run.seed={seed}"])
    return build_simulation(scenario).run()


@pytest.mark.parametrize("overrides", [SMALL, FAULTS], ids=["small", "faults"])
@pytest.mark.parametrize("name", ["crunch", "jbba", "random"])
@pytest.mark.parametrize("seed", [0, 1])
def test_an_allocator_policy_replays_desim_run_exactly(overrides, name, seed):
    got, infos = _env_rounds(overrides, name, seed)
    want = _run_rounds(overrides, name, seed)
    g, w = got.rounds_frame(), want.rounds_frame()
    np.testing.assert_array_equal(g["latency_s"].to_numpy(), w["latency_s"].to_numpy())
    # every column but the solver's wall time, and every device row, to the bit
    pd.testing.assert_frame_equal(g.drop(columns="solve_wall_s"),
                                  w.drop(columns="solve_wall_s"), check_exact=True)
    pd.testing.assert_frame_equal(got.device_rounds_frame(), want.device_rounds_frame(),
                                  check_exact=True)
    pd.testing.assert_frame_equal(got.tables()["fault_events"], want.tables()["fault_events"])
    assert not any(i["repaired"] for i in infos) and all(i["check"] == "" for i in infos)


def test_the_faults_case_really_loses_and_replans_blocks():
    got, _ = _env_rounds(FAULTS, "crunch", 0)
    rounds = got.rounds_frame()
    assert rounds["dropouts"].sum() > 0 and rounds["reassigned_blocks"].sum() > 0


def test_the_cli_run_writes_the_latencies_the_environment_plays(tmp_path):
    assert main(["run", *sum((["--set", o] for o in FAULTS), []), "--allocator", "crunch",
                 "--seed", "1", "--out", str(tmp_path / "r")]) in (0, None)
    table = pd.read_parquet(tmp_path / "r" / "rounds.parquet")
    got, _ = _env_rounds(FAULTS, "crunch", 1)
    np.testing.assert_array_equal(got.rounds_frame()["latency_s"].to_numpy(),
                                  table["latency_s"].to_numpy())


@pytest.mark.parametrize("name", ["crunch", "jbba"])
def test_the_action_form_of_an_allocation_runs_it_to_rounding(name):
    # shares are bandwidths over B: B · s / Σs gives the Hz back to the last bits only
    got, infos = _env_rounds(SMALL, name, 0, via_action=True)
    want = _run_rounds(SMALL, name, 0)
    np.testing.assert_allclose(got.rounds_frame()["latency_s"], want.rounds_frame()["latency_s"],
                               rtol=1e-12, atol=0)
    assert (got.device_rounds_frame()["device"] == want.device_rounds_frame()["device"]).all()
    assert not any(i["repaired"] for i in infos)


def test_an_episode_is_the_scenarios_rounds_and_then_over():
    env = DeftEnv(None, SMALL)
    obs, info = env.reset(seed=3)
    assert obs["round"] == 0 and info == {"round": 0, "seed": 3}
    ends = []
    for r in range(3):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        ends.append(terminated)
        assert obs["round"] == r + 1 and info["round"] == r and truncated is False
    assert ends == [False, False, True]
    assert len(env.result.rounds_frame()) == 3
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.action_space.sample())


def test_reward_options():
    for reward, of in [("planned", lambda i: -i["planned_latency_s"]),
                       ("throughput", lambda i: 1.0 / i["realised_latency_s"]),
                       (lambda rec: rec.dropouts + 7.0, lambda i: i["dropouts"] + 7.0)]:
        env = DeftEnv(None, SMALL, reward=reward)
        env.reset(seed=0)
        _, r, _, _, info = env.step({"assignment": np.arange(12), "bandwidth": np.zeros(14)})
        assert r == of(info)
    with pytest.raises(ScenarioError, match="reward 'speed'"):
        DeftEnv(None, SMALL, reward="speed")


@pytest.mark.parametrize("scheme", ["fl-lora", "dlora", "offload"])
def test_other_schemes_are_refused_by_name(scheme):
    with pytest.raises(ScenarioError, match=f"scheme.name = '{scheme}'"):
        DeftEnv(None, [*SMALL, f'scheme.name="{scheme}"'])


def test_fewer_devices_than_blocks_is_refused():
    with pytest.raises(ScenarioError, match="5 devices for 12 blocks"):
        DeftEnv(None, ["run.rounds=1", "devices.population.count=5"])


def test_random_actions_never_raise_over_whole_episodes():
    env = DeftEnv(None, [*FAULTS, "run.rounds=6"])
    env.action_space.seed(0)
    for seed in range(3):
        env.reset(seed=seed)
        done = False
        while not done:
            _, reward, done, _, info = env.step(env.action_space.sample())
            assert np.isfinite(reward)
            if info["status"] == "ok":
                assert info["repaired"] == bool(info["check"])


# --- the mask and the repair rule on hand-made snapshots -------------------------------------

def tiny_ctx(available=(True, True, True), snr=(1e9, 1e9, 1e9)) -> RoundContext:
    """Three devices, two blocks; device c holds block 1 only (memory)."""
    return RoundContext(
        round_index=0, time_s=0.0, device_names=("a", "b", "c"),
        compute_s=np.array([[1.0, 2.0], [2.0, 4.0], [1.0, 2.0]]),
        memory_bytes=np.array([1.0, 2.0]), memory_budget_bytes=np.array([2.0, 2.0, 1.0]),
        upload_bits=np.array([1e6, 1e6]), snr_coef_hz=np.array(snr, dtype=float),
        available=np.array(available), total_bandwidth_hz=2e6,
    )


def test_the_mask_is_memory_availability_and_uplink():
    assert action_mask(tiny_ctx()).tolist() == [[True, True, True], [True, True, False]]
    masked = action_mask(tiny_ctx(available=(True, False, True), snr=(0.0, 1e9, 1e9)))
    assert masked.tolist() == [[False, False, True], [False, False, False]]


def test_a_valid_action_is_used_as_it_is():
    d = decide(tiny_ctx(), np.array([2, 0]), shares=np.array([0.25, 0.5, 0.75]))
    assert not d.repaired and d.check == ""
    assert d.allocation.block_device.tolist() == [2, 0]
    assert d.allocation.bandwidth_hz.tolist() == [0.5e6, 0.0, 1.5e6]  # idle b's share dropped


def test_all_zero_shares_are_the_equal_split():
    d = decide(tiny_ctx(), np.array([0, 1]), shares=np.zeros(3))
    assert not d.repaired and d.allocation.bandwidth_hz.tolist() == [1e6, 1e6, 0.0]


def test_a_clash_moves_the_fewest_blocks_to_the_least_latency():
    # both on a: block 2 (only a or b hold it) stays or moves; the cheapest is block 1 to c
    d = decide(tiny_ctx(), np.array([0, 0]), shares=np.zeros(3))
    assert d.allocation.block_device.tolist() == [2, 0]
    assert d.repairs == ("block 1: device a -> c (also chosen for block(s) 2)",)
    assert "device a got blocks 1 and 2" in d.check
    check_allocation(tiny_ctx(), d.allocation)


def test_an_ineligible_or_unknown_device_is_replaced():
    d = decide(tiny_ctx(), np.array([0, 2]), shares=np.zeros(3))
    assert d.allocation.block_device.tolist() == [0, 1]
    assert d.repairs == ("block 2: device c -> b (cannot train it (memory, availability, "
                         "compute or uplink))",)
    d = decide(tiny_ctx(), np.array([7, 0]), shares=np.zeros(3))
    assert d.allocation.block_device.tolist() == [2, 0]
    assert d.repairs[0] == "block 1: device index 7 -> c (not a device)"


def test_a_zero_share_with_bits_gets_the_smallest_share():
    d = decide(tiny_ctx(), np.array([2, 0]), shares=np.array([0.0, 0.9, 0.5]))
    assert d.repairs == ("device a: zero bandwidth share with bits to send; given the smallest "
                         "positive share",)
    assert d.allocation.bandwidth_hz.tolist() == [1e6, 0.0, 1e6]


def test_no_distinct_matching_makes_the_round_infeasible():
    # b is away and c has no uplink: a alone for two blocks
    ctx = tiny_ctx(available=(True, False, True), snr=(1e9, 1e9, 0.0))
    d = decide(ctx, np.array([0, 0]), shares=np.zeros(3))
    assert d.allocation is None and not d.repaired
    assert d.infeasible == ("round 0: block 1 (needs 1 bytes) cannot be placed: 2 available "
                            "device(s) can hold it (1 of them with zero channel gain, so no "
                            "uplink), but blocks 1...2 need 2 distinct devices (2 of 3 devices "
                            "available)")


def test_an_allocation_in_hz_runs_bit_for_bit_and_an_overfull_one_is_scaled():
    source = Allocation(np.array([2, 0]), np.array([0.3e6, 0.0, 1.2e6]), 5.0)
    d = decide(tiny_ctx(), source.block_device, bandwidth_hz=source.bandwidth_hz, source=source)
    assert d.allocation is source
    over = Allocation(np.array([2, 0]), np.array([2e6, 0.0, 2e6]))
    d = decide(tiny_ctx(), over.block_device, bandwidth_hz=over.bandwidth_hz, source=over)
    assert d.allocation.bandwidth_hz.tolist() == [1e6, 0.0, 1e6] and d.repaired


# --- properties on engine snapshots ------------------------------------------------------------

def _snapshots() -> list[RoundContext]:
    out = []
    for overrides in (SMALL, ONOFF, FAULTS):
        env = DeftEnv(None, overrides)
        for seed in (0, 1):
            env.reset(seed=seed)
            while True:
                out.append(env.snapshot())
                _, _, done, _, _ = env.step(env.action_space.sample())
                if done:
                    break
    return out


SNAPSHOTS = _snapshots()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_masked_distinct_actions_are_valid_and_never_repaired(data):
    ctx = data.draw(st.sampled_from(SNAPSHOTS))
    K, N = ctx.num_devices, ctx.num_blocks
    mask = action_mask(ctx)
    order = data.draw(st.permutations(range(K)))
    used, assignment = set(), np.empty(N, dtype=np.int64)
    for n in reversed(range(N)):  # deepest first: it has the fewest devices
        free = [k for k in order if mask[n, k] and k not in used]
        assume(free)
        assignment[n] = free[0]
        used.add(free[0])
    zero = data.draw(st.booleans())
    shares = np.zeros(K) if zero else np.array(
        data.draw(st.lists(st.floats(1e-6, 1.0), min_size=K, max_size=K)))
    d = decide(ctx, assignment, shares=shares)
    assert not d.repaired and d.check == ""
    check_allocation(ctx, d.allocation)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_action_becomes_a_feasible_allocation_or_an_infeasible_round(data):
    ctx = data.draw(st.sampled_from(SNAPSHOTS))
    K, N = ctx.num_devices, ctx.num_blocks
    assignment = np.array(data.draw(st.lists(st.integers(-2, K + 2), min_size=N, max_size=N)))
    shares = np.array(data.draw(st.lists(st.floats(allow_nan=True, allow_infinity=True),
                                         min_size=K, max_size=K)))
    d = decide(ctx, assignment, shares=shares)
    if d.allocation is None:  # only when no distinct valid matching exists at all
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import maximum_bipartite_matching

        matched = maximum_bipartite_matching(csr_matrix(action_mask(ctx).astype(int)))
        assert (matched >= 0).sum() < N and d.infeasible
    else:
        check_allocation(ctx, d.allocation)
        assert d.repaired == bool(d.check)


def test_the_example_runs_and_writes_its_learning_curve(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "gym_policies.py"
    out = tmp_path / "curve.png"
    done = subprocess.run([sys.executable, str(script), "--iterations", "1", "--population", "2",
                           "--out", str(out)], capture_output=True, text=True, check=True)
    assert "held-out seeds" in done.stdout and "cem" in done.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gymnasium_make_builds_the_registered_environment():
    import gymnasium

    from desim.gym import ENV_ID

    env = gymnasium.make(ENV_ID, overrides=[*SMALL, 'allocator.name="crunch"'])
    assert isinstance(env.unwrapped, DeftEnv)
    assert env.spec is not None and env.spec.max_episode_steps is None
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    steps, done = 0, False
    while not done:
        _, _, done, truncated, _ = env.step(env.action_space.sample())
        assert not truncated
        steps += 1
    assert steps == 3  # run.rounds
