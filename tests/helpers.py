"""Small builders shared by tests: hand-made simulations whose answers are known."""

from __future__ import annotations

import numpy as np

from desim.allocators import make_allocator
from desim.costs.base import Workload
from desim.costs.table import TableCostModel
from desim.costs.transformer import TransformerConfig
from desim.engine.faults import FaultModel
from desim.engine.rng import rng_streams
from desim.engine.simulation import Simulation
from desim.scenario.devices import DeviceSpec
from desim.scenario.model import FaultsSpec, RunSpec, ServerSpec
from desim.world.channel import SignalChannel
from desim.world.compute import SignalTimeline
from desim.world.piecewise import PiecewiseSignals

TINY = TransformerConfig("tiny", 32, 2, 2, 64, 100, 64)


def tiny_simulation(
    *,
    channel: SignalChannel | None = None,
    compute: SignalTimeline | None = None,
    allocator: str = "greedy",
    rounds: int = 1,
    faults: FaultsSpec | None = None,
    policy: RunSpec | None = None,
    seed: int = 0,
) -> Simulation:
    """Three devices, two blocks; see tests/test_engine.py for the hand computation.

    Devices: A (speed 2, 3 GB), B (speed 1, 3 GB), C (speed 1, 1.5 GB: block 1 only).
    Blocks: compute 2 s and 4 s at speed 1, memory 1 GB and 2 GB, 1 Mbit each.
    Server: B = 2 MHz, aggregation 0.1 s. Channel: a = 3e6 Hz (A), 15e6 Hz (B), 15e6 Hz (C).
    """
    devices = (
        DeviceSpec(name="A", speed_factor=2.0, memory_bytes=3e9),
        DeviceSpec(name="B", speed_factor=1.0, memory_bytes=3e9),
        DeviceSpec(name="C", speed_factor=1.0, memory_bytes=1.5e9),
    )
    cost = TableCostModel(np.array([2.0, 4.0]), np.array([1e9, 2e9]), np.array([1e6, 1e6]))
    if channel is None:
        channel = SignalChannel(PiecewiseSignals.constant(np.array([3e6, 15e6, 15e6])))
    return Simulation(
        devices=devices,
        workload=Workload(TINY, "lora", 1, 8, 2),
        server=ServerSpec(total_bandwidth_hz=2e6, aggregation_s=0.1),
        cost_model=cost,
        channel=channel,
        compute=compute or SignalTimeline.constant(3),
        allocator=make_allocator(allocator),
        rounds=rounds,
        seed=seed,
        policy=policy or RunSpec(),
        faults=FaultModel(
            faults or FaultsSpec(), {"A": 0, "B": 1, "C": 2}, rng_streams(seed)["faults"]
        ),
    )


def torch_step_flops(model, blocks, inputs):  # type: ignore[no-untyped-def]
    """``(N,)`` FLOPs torch's counter sees for one training step of each block (torch needed).

    For block ``n``: the forward pass with loss and the backward pass to ``blocks[n − 1]``'s
    parameters, with only those requiring grad.
    """
    from torch.autograd import grad
    from torch.utils.flop_counter import FlopCounterMode

    out = []
    for params in blocks:
        for p in params:
            p.requires_grad_(True)
        with FlopCounterMode(display=False) as counter:
            grad(model(**inputs).loss, params)
        out.append(counter.get_total_flops())
        for p in params:
            p.requires_grad_(False)
    return np.array(out, dtype=float)
