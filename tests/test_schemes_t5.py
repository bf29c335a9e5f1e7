"""fl-lora and dlora on an encoder-decoder (T5) model: per-round bits and compute exactly."""

from __future__ import annotations

import numpy as np
import pytest

from desim.allocators import make_allocator
from desim.costs.analytic import AnalyticCostModel
from desim.engine.simulation import Simulation
from desim.scenario.devices import DeviceSpec
from desim.scenario.model import HardwarePower, ServerSpec
from desim.schemes.base import Scheme
from desim.schemes.dlora import DLoRAScheme, SplitLayout
from desim.schemes.fl_lora import FedLoRAScheme
from desim.world.channel import SignalChannel
from desim.world.compute import SignalTimeline
from desim.world.piecewise import PiecewiseSignals
from tests.test_cost_t5 import tiny_t5

# The tiny T5 (h=16, i=8, f=24 gated, 1 encoder + 1 decoder layer, V=50) at b=1, s=4, t=2,
# LoRA r=2: counted FLOPs of training block 1 (the decoder layer) and block 2 (the encoder
# layer, the full step), derived in tests/test_cost_t5.py
STEP = [38592.0, 51072.0]
LORA_VALUES = 2 * 2 * (16 + 8)  # per layer: self-attention q and v, r·(h + i) each
POWER = {"cpu-reference": HardwarePower(compute_w=5.0, transmit_w=2.5, receive_w=1.3,
                                        idle_w=1.0, peak_flops_per_s=1e5)}


def tiny(scheme: Scheme) -> Simulation:
    """Devices A (speed 2) and B (speed 1) on 2 MHz: 1 MHz each at a = 3e6 Hz, 2 Mbit/s.

    Costs are analytic at 51,072 FLOP/s, so the full training step (block 2) takes 1 s at
    speed 1; the server's class is priced the same way.
    """
    devices = (
        DeviceSpec(name="A", speed_factor=2.0, memory_bytes=1e9),
        DeviceSpec(name="B", speed_factor=1.0, memory_bytes=1e9),
    )
    return Simulation(
        devices=devices,
        workload=tiny_t5(),
        server=ServerSpec(total_bandwidth_hz=2e6, aggregation_s=0.1),
        cost_model=AnalyticCostModel(flops_per_s=STEP[1]),
        channel=SignalChannel(PiecewiseSignals.constant(np.array([3e6, 3e6]))),
        compute=SignalTimeline.constant(2),
        allocator=make_allocator("greedy"),
        scheme=scheme,
        power=POWER,
    )


def test_fl_lora_on_t5_round_exactly():
    result = tiny(FedLoRAScheme(local_steps=1)).run()
    dev = result.device_rounds_frame().set_index("device")
    bits = 2 * LORA_VALUES * 32.0  # both blocks' LoRA values: decoder and encoder layer
    assert dev.upload_bits.tolist() == [bits, bits] == [3072.0 * 2] * 2
    assert dev.download_bits.tolist() == [bits, bits]
    # one full step: A 1/2 s, B 1 s; the upload and the broadcast at 2 Mbit/s
    assert dev.compute_busy_s.tolist() == pytest.approx([0.5, 1.0])
    assert dev.flops.tolist() == [STEP[1]] * 2
    assert dev.tokens.tolist() == [6.0, 6.0]  # b·(s + t)
    latency = 1.0 + bits / 2e6 + 0.1 + bits / 2e6
    assert result.rounds_frame().latency_s.iloc[0] == pytest.approx(latency)
    assert dev.mfu.tolist() == pytest.approx([STEP[1] / (0.5 * 2e5), STEP[1] / (1.0 * 1e5)])


def test_dlora_layout_on_t5():
    lay = SplitLayout.of(tiny_t5(), 32)
    # modules from the input: encoder q, v (4 source tokens), decoder q, v (2 target tokens);
    # a module's step is 3 × 2b·tokens·r·(h + i) FLOPs
    assert lay.module_flops.tolist() == [3 * 2 * 4 * 2 * 24.0] * 2 + [3 * 2 * 2 * 2 * 24.0] * 2
    assert lay.out_bits.tolist() == [4 * 8 * 32.0] * 2 + [2 * 8 * 32.0] * 2  # b·tokens·i
    assert lay.group_bits.tolist() == [4 * 16 * 32.0, 2 * 16 * 32.0]  # b·tokens·h
    # the server's step splits by backbone forward FLOPs: encoder 6912, decoder 5056 MACs
    assert lay.layer_share.tolist() == pytest.approx([6912 / 11968, 5056 / 11968])


def test_dlora_on_t5_round_exactly():
    result = tiny(DLoRAScheme(kill_revive=None)).run()
    dev = result.device_rounds_frame().set_index("device")
    # per step: the encoder layer's input (4·16·32 bits) and the decoder layer's (2·16·32)
    # down, two module outputs per layer up (4·8·32 and 2·8·32 each); backward mirrors it
    down = up = (2048 + 1024) + (2 * 1024 + 2 * 512)
    assert dev.upload_bits.tolist() == [up, up] == [6144.0, 6144.0]
    assert dev.download_bits.tolist() == [down, down]
    module_flops = 2 * 1152 + 2 * 576
    assert dev.flops.tolist() == [module_flops] * 2
    # the device runs its modules at its sustained rate: full step FLOPs ÷ its step time
    comp = [module_flops / (STEP[1] * 2.0), module_flops / STEP[1]]
    assert dev.compute_busy_s.tolist() == pytest.approx(comp)
    # memory: 4 modules × 48 values × 16 B plus the two layers' inputs (bytes)
    assert dev.memory_bytes.tolist() == [16.0 * 4 * 48 + (2048 + 1024) / 8] * 2
    # the server's 1 s step ÷ server_speed_factor 10, the links, then aggregation
    latency = 0.1 + comp[1] + (up + down) / 2e6 + 0.1
    assert result.rounds_frame().latency_s.iloc[0] == pytest.approx(latency)
