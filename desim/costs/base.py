"""What every cost model shares: the workload it prices, the costs it returns, its protocol.

DESIGN §2: blocks are numbered from the output (block 1 next to the head). Training block
``n`` runs a full forward pass, backpropagates from the loss down to the lowest layer of block
``n`` only, and computes weight gradients for block ``n`` alone. Hence compute and memory are
non-decreasing in ``n``. An encoder-decoder model (T5) numbers its decoder layers first
(:mod:`desim.costs.transformer`), so training an encoder block crosses the whole decoder.

The models: :class:`~desim.costs.profiled.ProfiledCostModel` (the default) prices a block from
measured profiles (``desim profile``; README "Calibration") through a fitted model of time and
memory in depth, batch and sequence length (:mod:`desim.costs.fit`);
:class:`~desim.costs.analytic.AnalyticCostModel` prices a block from FLOP and byte counts of
the model's layers and is the fallback for unprofiled hardware or workloads;
:class:`~desim.costs.table.TableCostModel` returns given arrays (tests, custom costs). Every
model also gives each block's counted training FLOPs (``BlockCosts.flops``, for MFU). The
rules of the fine-tuning methods (what trains, what is uploaded) sit in
:data:`desim.costs.methods.METHODS`; scenarios name a model through
:data:`desim.costs.registry.COST_MODELS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from desim.costs.transformer import TransformerConfig
from desim.errors import ScenarioError


@dataclass(frozen=True)
class Workload:
    """What is trained: model, method, batch and sequence lengths, and the block split.

    Attributes:
        config: the model.
        method: the fine-tuning method (:data:`~desim.costs.methods.METHODS`, or a
            measured-only one).
        batch_size: ``b`` sequences per step.
        seq_len: ``s`` tokens per sequence (the encoder input of an encoder-decoder model).
        num_blocks: ``N``; it must divide the layer count (``Ld + Le`` for T5).
        lora_rank: LoRA rank ``r``.
        gradient_bits: bits per uploaded value ``q``.
        target_len: ``t`` decoder target tokens per sequence; used by encoder-decoder models
            only.
        adapter_size: bottleneck width ``a`` of the ``adapter`` method.
    """

    config: TransformerConfig
    method: str
    batch_size: int
    seq_len: int
    num_blocks: int
    lora_rank: int = 8
    gradient_bits: int = 32
    target_len: int = 32
    adapter_size: int = 64

    def __post_init__(self) -> None:
        layers = self.config.num_layers
        if layers % self.num_blocks:
            raise ScenarioError(
                f"model.num_blocks: {self.num_blocks} does not divide the "
                f"{layers} layers of {self.config.name}"
            )
        if self.config.is_seq2seq and self.target_len < 1:
            raise ScenarioError(f"model.target_len: expected >= 1, got {self.target_len}")
        if self.adapter_size < 1:
            raise ScenarioError(f"model.adapter_size: expected >= 1, got {self.adapter_size}")

    @property
    def layers_per_block(self) -> int:
        """Consecutive layers in one block (``L / N``)."""
        return self.config.num_layers // self.num_blocks

    @property
    def decoder_len(self) -> int:
        """Target tokens the decoder sees: ``t``, or 0 for an encoder-only model."""
        return self.target_len if self.config.is_seq2seq else 0

    @property
    def tokens_per_sample(self) -> int:
        """Tokens one training sample carries: ``s`` (+ ``t`` for an encoder-decoder)."""
        return self.seq_len + self.decoder_len


#: marks an extra cost a model did not give (:class:`BlockCosts` fills zeros)
_UNSET = np.zeros(0)


@dataclass(frozen=True, eq=False)
class BlockCosts:
    """Per-block costs on one hardware class, arrays of shape ``(N,)`` indexed by ``n - 1``.

    Attributes:
        compute_s: training-step seconds on the hardware class at speed factor 1 (w_n).
        memory_bytes: peak memory of the training step (m_n).
        upload_bits: bits the block's device uploads (D_n;
            :func:`~desim.costs.methods.upload_bits`).
        source: which model produced them (recorded in results).
        flops: counted FLOPs of the training step (``None``: not priced; users then count
            them with :func:`~desim.costs.analytic.analytic_flops`).
        flops_source: ``profiled`` (torch's FLOP counter, via the profile's ``flops``
            column) or ``analytic`` (:func:`~desim.costs.analytic.analytic_flops`).
        provenance: what priced them, for ``run.json`` (``pricing``): the profile, where and
            when its rows were measured, the speed applied and any calibration
            (:meth:`desim.costs.profiled.ProfiledCostModel.block_costs`); ``None`` when
            nothing was measured.
        extra_compute_s: seconds at speed factor 1 that block ``n`` adds to a device's step
            when it trains in a set of blocks above the set's deepest block (its weight
            gradients and update; :mod:`desim.costs.multiblock`, whose
            :func:`~desim.costs.multiblock.set_cost` composes a set's cost). Zeros when not
            given (a model that does not price sets).
        extra_memory_bytes: bytes block ``n`` then adds (its gradients, optimizer state and
            the activations its weight gradients keep). Zeros when not given.
    """

    compute_s: np.ndarray
    memory_bytes: np.ndarray
    upload_bits: np.ndarray
    source: str
    flops: np.ndarray | None = None
    flops_source: str = "analytic"
    provenance: Mapping[str, Any] | None = None
    extra_compute_s: np.ndarray = field(default_factory=lambda: _UNSET)
    extra_memory_bytes: np.ndarray = field(default_factory=lambda: _UNSET)

    def __post_init__(self) -> None:
        for name in ("extra_compute_s", "extra_memory_bytes"):
            if getattr(self, name) is _UNSET:
                object.__setattr__(self, name, np.zeros(np.shape(self.compute_s)))


class CostModel(Protocol):
    """Prices every block of a workload on a hardware class."""

    @property
    def name(self) -> str:
        """The model's name in results (read-only: the models are frozen dataclasses)."""
        ...

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return the per-block costs of ``workload`` on ``hardware``."""
        ...
