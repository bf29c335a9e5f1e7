"""Three policies on desim's Gymnasium environment: random, greedy, and one learnt by CEM.

    pip install ".[gym,plot]"
    python examples/gym_policies.py            # about 30 s on two cores

The scenario (examples/gym-tiny.toml) is 6 devices, 4 blocks and 8 rounds an episode, on the
real engine (desim.gym.DeftEnv). The policies:

- ``random``: every block (deepest first) on a uniformly drawn valid free device (the env's
  action mask), random bandwidth shares;
- ``greedy``: desim's ``greedy`` allocator on the round snapshot (the fastest device gets the
  deepest block, equal bandwidth), passed to the env as its Allocation;
- ``cem``: a linear scoring policy learnt by the cross-entropy method. Device k's score for
  block n is ``θ · (speed, channel, depth × speed, depth × channel)`` with speed
  ``-log ĉ_{k,n}`` and channel ``log10 p g/N0``; blocks are placed deepest first on the valid
  free device of highest score, and bandwidth shares are ``exp(ψ · (channel, speed))`` over
  the blocks' devices (both standardised per round). CEM draws 6-vectors (θ, ψ) from a
  Gaussian, keeps the best quarter on the training seeds, and refits.

It prints the mean round latency of each policy on held-out seeds and writes the learning
curve (mean episode reward per CEM iteration, random and greedy as reference lines).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from time import perf_counter

import numpy as np

from desim.allocators import make_allocator
from desim.gym import DeftEnv

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "gym-tiny.toml"
TRAIN_SEEDS = tuple(range(8))
TEST_SEEDS = tuple(range(100, 120))


def episode(env: DeftEnv, policy, seed: int) -> float:
    """The episode's total reward (minus the sum of realised round latencies, seconds)."""
    obs, _ = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, done, _, _ = env.step(policy(env, obs))
        total += reward
    return total


def mean_reward(env: DeftEnv, policy, seeds) -> float:
    """The mean episode reward over ``seeds``."""
    return float(np.mean([episode(env, policy, s) for s in seeds]))


def random_policy(rng: np.random.Generator):
    """Uniform over masked distinct assignments, random shares."""
    def act(env: DeftEnv, obs) -> dict:
        mask = obs["action_mask"].astype(bool)
        N, K = mask.shape
        assignment, free = np.zeros(N, dtype=np.int64), np.ones(K, dtype=bool)
        for n in reversed(range(N)):  # deepest first: it has the fewest valid devices
            choices = np.flatnonzero(mask[n] & free)
            k = rng.choice(choices) if choices.size else rng.integers(K)  # none: env repairs
            assignment[n], free[k] = k, False
        return {"assignment": assignment, "bandwidth": rng.random(K)}
    return act


def greedy_policy(env: DeftEnv, obs):
    """The ``greedy`` allocator on the round's snapshot, with the run's allocator stream."""
    return GREEDY.allocate(env.unwrapped.snapshot(), env.unwrapped.rng)


GREEDY = make_allocator("greedy")


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def scoring_policy(params: np.ndarray):
    """The CEM family: ``params = (θ_1..θ_4, ψ_1, ψ_2)`` (module docstring)."""
    theta, psi = params[:4], params[4:]

    def act(env: DeftEnv, obs) -> dict:
        mask = obs["action_mask"].astype(bool)
        N, K = mask.shape
        speed = -np.log(obs["compute_s"])  # (K, N); a capped entry is masked out anyway
        channel = np.broadcast_to(obs["log10_snr_coef_hz"][:, None], (K, N))
        depth = np.broadcast_to((np.arange(1, N + 1) / N)[None, :], (K, N))
        score = (theta[0] * _z(speed) + theta[1] * _z(channel)
                 + theta[2] * depth * _z(speed) + theta[3] * depth * _z(channel))
        assignment, free = np.zeros(N, dtype=np.int64), np.ones(K, dtype=bool)
        for n in reversed(range(N)):
            s = np.where(mask[n] & free, score[:, n], -np.inf)
            k = int(np.argmax(s))
            assignment[n], free[k] = k, False
        used_speed = speed[assignment, np.arange(N)]
        logits = np.zeros(K)
        logits[assignment] = (psi[0] * _z(obs["log10_snr_coef_hz"])[assignment]
                              + psi[1] * _z(used_speed))
        shares = np.zeros(K)
        shares[assignment] = np.exp(np.clip(logits[assignment] - logits[assignment].max(),
                                            -5, 0))  # shares within 1:150
        return {"assignment": assignment, "bandwidth": shares}
    return act


def cem(env: DeftEnv, iterations: int, population: int, rng: np.random.Generator):
    """The cross-entropy method over the 6 parameters; the curve of each iteration."""
    mean, std = np.zeros(6), np.full(6, 1.5)
    elite_n = max(2, population // 4)
    curve = []
    for it in range(iterations):
        cands = mean + std * rng.standard_normal((population, mean.size))
        scores = np.array([mean_reward(env, scoring_policy(c), TRAIN_SEEDS) for c in cands])
        elite = cands[np.argsort(scores)[-elite_n:]]
        mean, std = elite.mean(axis=0), elite.std(axis=0) + 0.05  # a little noise: no collapse
        at_mean = mean_reward(env, scoring_policy(mean), TRAIN_SEEDS)
        curve.append((float(scores.mean()), float(np.sort(scores)[-elite_n:].mean()), at_mean))
        print(f"  CEM iteration {it + 1:2d}: population {scores.mean():8.3f}, "
              f"elite {curve[-1][1]:8.3f}, mean policy {at_mean:8.3f}")
    return mean, curve


def plot(curve, random_ref: float, greedy_ref: float, out: Path) -> None:
    """Write the learning curve PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.array(curve)
    it = np.arange(1, len(c) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(it, c[:, 0], "o-", color="tab:blue", alpha=0.45, label="CEM population mean")
    ax.plot(it, c[:, 2], "o-", color="tab:blue", label="CEM mean policy")
    ax.axhline(random_ref, color="tab:red", ls="--", label="random (masked)")
    ax.axhline(greedy_ref, color="tab:green", ls="--", label="greedy allocator")
    ax.set_ylim(1.05 * min(random_ref, c[:, 0].min(), c[:, 2].min()),
                0.9 * max(greedy_ref, c[:, 2].max()))
    ax.set_xlabel("CEM iteration")
    ax.set_ylabel("mean episode reward (−Σ round latency, s)")
    ax.set_title("DeftEnv, 6 devices × 4 blocks × 8 rounds (training seeds)")
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"learning curve written to {out}")


def main() -> None:
    """Train, compare, plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--population", type=int, default=24)
    parser.add_argument("--out", type=Path,
                        default=HERE.parent / "docs" / "gym-cem.png")
    args = parser.parse_args()
    tic = perf_counter()
    env = DeftEnv(SCENARIO)
    rng = np.random.default_rng(0)
    random_ref = mean_reward(env, random_policy(np.random.default_rng(1)), TRAIN_SEEDS)
    greedy_ref = mean_reward(env, greedy_policy, TRAIN_SEEDS)
    print(f"training seeds {TRAIN_SEEDS}: random {random_ref:.3f}, greedy {greedy_ref:.3f}")
    params, curve = cem(env, args.iterations, args.population, rng)
    rounds = env.simulation.rounds
    print(f"held-out seeds {TEST_SEEDS[0]}..{TEST_SEEDS[-1]}: mean round latency (s)")
    for name, policy in [("random", random_policy(np.random.default_rng(2))),
                         ("greedy", greedy_policy), ("cem", scoring_policy(params))]:
        print(f"  {name:7s} {-mean_reward(env, policy, TEST_SEEDS) / rounds:.4f}")
    print(f"  (cem parameters θ = {np.round(params[:4], 2)}, ψ = {np.round(params[4:], 2)})")
    plot(curve, random_ref, greedy_ref, args.out)
    print(f"done in {perf_counter() - tic:.1f} s")


if __name__ == "__main__":
    main()
