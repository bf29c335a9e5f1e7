"""Cost models: what training block ``n`` costs in compute time, peak memory and upload bits.

DESIGN §2: blocks are numbered from the output (block 1 next to the classification head).
Training block ``n`` runs a full forward pass, backpropagates from the loss down to the lowest
layer of block ``n`` only, and computes weight gradients for block ``n`` alone. Hence compute and
memory are non-decreasing in ``n``.

:class:`AnalyticCostModel` prices a block from FLOP and byte counts of a RoBERTa encoder layer
(formulas in its docstring); :class:`TableCostModel` returns given arrays (tests, custom costs).
Measured profiles replace the analytic model as the default once calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from desim.errors import ScenarioError, UnknownNameError


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of an encoder-only transformer (the fields of a Hugging Face config)."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int


@dataclass(frozen=True)
class Workload:
    """What is trained: model, method, batch and sequence length, and the block split."""

    config: TransformerConfig
    method: str
    batch_size: int
    seq_len: int
    num_blocks: int
    lora_rank: int = 8
    gradient_bits: int = 32

    def __post_init__(self) -> None:
        layers = self.config.num_hidden_layers
        if layers % self.num_blocks:
            raise ScenarioError(
                f"model.num_blocks: {self.num_blocks} does not divide the "
                f"{layers} layers of {self.config.name}"
            )

    @property
    def layers_per_block(self) -> int:
        """Consecutive layers in one block (``L / N``)."""
        return self.config.num_hidden_layers // self.num_blocks


@dataclass(frozen=True, eq=False)
class BlockCosts:
    """Per-block costs on one hardware class, arrays of shape ``(N,)`` indexed by ``n - 1``.

    Attributes:
        compute_s: training-step seconds on the hardware class at speed factor 1 (w_n).
        memory_bytes: peak memory of the training step (m_n).
        upload_bits: bits of the block's gradient (D_n = q·S_n).
        source: which model produced them (recorded in results).
    """

    compute_s: np.ndarray
    memory_bytes: np.ndarray
    upload_bits: np.ndarray
    source: str


class CostModel(Protocol):
    """Prices every block of a workload on a hardware class."""

    name: str

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return the per-block costs of ``workload`` on ``hardware``."""
        ...


def layer_params(cfg: TransformerConfig) -> int:
    """Parameters of one encoder layer (attention, FFN, two LayerNorms, with biases)."""
    h, f = cfg.hidden_size, cfg.intermediate_size
    return 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h


def trainable_params_per_layer(cfg: TransformerConfig, method: str, lora_rank: int) -> int:
    """Trainable values in one layer: LoRA on query and value (``4·h·r``) or the full layer."""
    if method == "lora":
        return 2 * 2 * cfg.hidden_size * lora_rank
    if method == "full":
        return layer_params(cfg)
    raise UnknownNameError(f"model.method: unknown method {method!r}; known: full, lora")


@dataclass(frozen=True)
class AnalyticCostModel:
    """FLOP- and byte-count cost model of a RoBERTa encoder (the fallback when unprofiled).

    With batch ``b``, sequence ``s``, hidden ``h``, FFN width ``f``, heads ``a``, layers ``L``
    and ``ℓ = L/N`` layers per block, one layer's forward pass costs
    ``F = 2bs(4h² + 2hf) + 4bs²h`` FLOPs. Backpropagating activation gradients through a layer
    costs about ``F`` again, and weight gradients of the trainable values cost ``2bs`` FLOPs per
    trainable weight (``4h²+2hf`` for a full layer, ``4hr`` for LoRA). So

    ``w_n = [L·F + nℓ·F + ℓ·2bs·S_layer] / flops_per_s``.

    Memory in fp32: frozen weights ``4·P`` (embeddings plus ``L`` layers), activations saved
    for backward only in the ``nℓ`` layers above the cut, ``4·(17bsh + 2.5ab s²)`` bytes per layer
    (Korthikanti et al. 2022, "Reducing activation recomputation", scaled from 16- to 32-bit), and
    16 bytes per trainable value (weight, gradient, two Adam moments).

    Attributes:
        flops_per_s: sustained training FLOP/s of the reference hardware class.
        hardware_speed: extra per-class speed multipliers (class name → factor); unknown classes
            are rejected.
    """

    flops_per_s: float = 5e10
    hardware_speed: tuple[tuple[str, float], ...] = (("cpu-reference", 1.0),)
    name: str = "analytic"

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return ``(N,)`` compute seconds, peak bytes and upload bits for every block."""
        speeds = dict(self.hardware_speed)
        if hardware not in speeds:
            raise UnknownNameError(
                f"unknown hardware class {hardware!r}; known: {', '.join(sorted(speeds))}"
            )
        cfg = workload.config
        b, s = workload.batch_size, workload.seq_len
        h, f, a = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
        L, ell = cfg.num_hidden_layers, workload.layers_per_block
        n = np.arange(1, workload.num_blocks + 1, dtype=float)
        layer_fwd = 2.0 * b * s * (4 * h * h + 2 * h * f) + 4.0 * b * s * s * h
        s_layer = trainable_params_per_layer(cfg, workload.method, workload.lora_rank)
        flops = L * layer_fwd + n * ell * layer_fwd + ell * 2.0 * b * s * s_layer
        compute_s = flops / (self.flops_per_s * speeds[hardware])
        weights = 4.0 * (
            cfg.vocab_size * h + cfg.max_position_embeddings * h + L * layer_params(cfg)
        )
        act_layer = 4.0 * (17.0 * b * s * h + 2.5 * a * b * s * s)
        trainable = float(s_layer * ell)
        memory = weights + n * ell * act_layer + 16.0 * trainable
        bits = np.full(workload.num_blocks, trainable * workload.gradient_bits)
        return BlockCosts(compute_s, memory, bits, source=self.name)


@dataclass(frozen=True, eq=False)
class TableCostModel:
    """Costs given directly as arrays (the same on every hardware class).

    Attributes:
        compute_s: ``(N,)`` seconds at speed factor 1.
        memory_bytes: ``(N,)`` peak bytes.
        upload_bits: ``(N,)`` gradient bits.
    """

    compute_s: np.ndarray
    memory_bytes: np.ndarray
    upload_bits: np.ndarray
    name: str = "table"

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return the stored arrays (their length must equal ``workload.num_blocks``)."""
        arrays = [
            np.asarray(x, dtype=float)
            for x in (self.compute_s, self.memory_bytes, self.upload_bits)
        ]
        if any(x.shape != (workload.num_blocks,) for x in arrays):
            raise ScenarioError(
                f"cost table has {arrays[0].shape} entries, expected {workload.num_blocks} blocks"
            )
        return BlockCosts(*arrays, source=self.name)
