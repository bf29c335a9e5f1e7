"""Random allocation instances (round snapshots) for tests and ``desim bench allocators``.

An instance is a :class:`RoundContext` drawn from a passed-in generator. Compute grows with depth
like DESIGN §2's model (a full forward pass plus backpropagation down to block ``n``), memory
grows with depth so deep blocks cut devices with small budgets, and the channel is scaled so
upload times are comparable to compute times (bandwidth then matters, which is where P2 and
its splits differ).
"""

from __future__ import annotations

import numpy as np

from desim.allocators.base import RoundContext


def random_context(
    rng: np.random.Generator,
    num_devices: int,
    num_blocks: int,
    *,
    monotone: bool = True,
    unavailable: float = 0.1,
    memory_cut: bool = True,
    total_bandwidth_hz: float = 20e6,
) -> RoundContext:
    """Draw one instance.

    Args:
        rng: the generator (no global randomness).
        num_devices: ``K``.
        num_blocks: ``N``.
        monotone: if False, compute is scrambled across blocks (CRUNCH's precondition fails).
        unavailable: probability that a device is unavailable (at least ``min(N, K)`` stay
            available; ``K < N`` is allowed and gives an infeasible DEFT instance).
        memory_cut: memory budgets such that deep blocks do not fit on every device.
        total_bandwidth_hz: ``B``.

    Returns:
        A :class:`RoundContext` with ``(K, N)`` compute seconds, ``(N,)`` memory and bits and
        ``(K,)`` budgets, SNR coefficients and availability.
    """
    # one function on purpose: the order of the draws below defines every instance the oracle
    # tests and benchmarks pin, so it reads (and must change) as one sequence
    K, N = num_devices, num_blocks
    depth = np.arange(1, N + 1)
    speed = np.exp(rng.uniform(np.log(0.5), np.log(8.0), K))
    work = 1.0 + depth / N * rng.uniform(0.5, 1.5)  # forward + backprop to block n
    compute = work[None, :] / speed[:, None]
    if not monotone:
        compute = compute * rng.uniform(0.5, 1.5, size=(K, N))
    memory = 1e9 * (1.0 + depth / N)
    if memory_cut:
        budget = rng.choice(memory[[0, N // 3, (2 * N) // 3, N - 1]], size=K)
        if K:
            budget[rng.choice(K, size=max(1, K // 4), replace=False)] = memory[-1]
    else:
        budget = np.full(K, memory[-1])
    available = rng.random(K) >= unavailable
    if available.sum() < min(N, K):
        available[rng.choice(K, size=min(N, K), replace=False)] = True
    bits = np.full(N, 2e6 * rng.uniform(0.5, 2.0))
    # SNR coefficient: log-uniform over three decades so B/N gives rates of ~1-10 Mbit/s
    snr = np.exp(rng.uniform(np.log(3e5), np.log(3e8), K))
    compute = np.where(available[:, None], compute, np.inf)
    return RoundContext(
        round_index=0,
        time_s=0.0,
        device_names=tuple(f"d{k}" for k in range(K)),
        compute_s=compute,
        memory_bytes=memory,
        memory_budget_bytes=budget,
        upload_bits=bits,
        snr_coef_hz=snr,
        available=available,
        total_bandwidth_hz=total_bandwidth_hz,
        aggregation_s=0.0,
        sample_bits=8 * 128 * 32.0,
        server_compute_s=work.copy(),
    )
