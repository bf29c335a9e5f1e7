"""The analytic cost model: counted FLOPs and bytes of a block's training step.

:class:`AnalyticCostModel` prices block ``n`` as ``w_n = FLOPs_n / flops_per_s``, the counted
FLOPs of its training step (:func:`analytic_flops`, on the layer graphs of
:mod:`desim.costs.flops`) at a sustained throughput, with the peak memory of
:func:`analytic_memory_bytes` and the upload bits of :func:`desim.costs.methods.upload_bits`.
It is the ``analytic`` cost model of a scenario and the fallback of the ``profiled`` one for
unprofiled hardware or workloads.

What each fine-tuning method (:data:`desim.costs.methods.METHODS`) changes:

- ``lora-checkpoint``: gradient checkpointing at layer boundaries. The backward pass
  recomputes the forward of the crossed layers. Only each crossed layer's input is kept
  (``4·b·tokens·h`` bytes; T5 also the encoder output), plus the largest crossed layer's
  activations while it recomputes.
- ``qlora``: an **estimate**, not a measurement: frozen weights in 4-bit NF4 with an fp32
  scale per 64 values (``0.5625`` bytes per parameter). Compute is counted as for LoRA; the
  dequantisation cost is not modelled.
- ``mezo``: zeroth-order (MeZO). Two forward passes and no backward (the same at every
  depth). The memory is the weights, the trainable values (no gradients or moments), and
  the largest layer's activations (and T5's logits). The upload is one projected-gradient
  scalar per block.
- ``adapter``: a bottleneck adapter ``y + up(gelu(down(y)))`` of width ``a`` after every
  layer's feed-forward output projection (T5: after ``wo``); trains ``2ha + a + h`` values
  per layer. Every layer's forward pass adds ``4·b·tokens·h·a`` FLOPs. The backward pass
  stops at the trained block's lowest adapter, so that layer keeps only the adapter's
  tensors and crossed layers keep the adapter's GELU input too
  (:func:`desim.costs.transformer.adapter_activation_bytes`).
- ``ia3``: peft's IA3 vectors scaling keys and values (T5: of the cross-attention too) and
  the inputs of the output projections (RoBERTa: attention and feed-forward; T5: ``wo``);
  ``3i + f`` values per RoBERTa layer. The scalings are element-wise (not counted), but
  they make the keys, values and their attention products need gradients in the trained
  block. Activations as for LoRA: the tensors IA3 keeps (pre-scaling keys, values and FFN
  activations) are already in Korthikanti's count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import Field

from desim.costs.base import BlockCosts, Workload
from desim.costs.flops import step_flops
from desim.costs.methods import method_rules, trainable_values, upload_bits
from desim.costs.multiblock import analytic_extras
from desim.costs.registry import COST_MODELS, CostInputs, CostParams
from desim.costs.transformer import (
    adapter_activation_bytes,
    head_activation_bytes,
    layer_activation_bytes,
    layer_input_bytes,
    model_params,
)
from desim.errors import UnknownNameError

#: the hardware class the analytic throughput describes (the edge server's by default)
REFERENCE_CLASS = "cpu-reference"


def analytic_flops(workload: Workload) -> np.ndarray:
    """``(N,)`` counted FLOPs of one training step of block ``n`` (:func:`analytic_costs`)."""
    rules = method_rules(workload.method)
    counts = step_flops(workload.config, workload.batch_size, workload.seq_len,
                        workload.decoder_len, workload.num_blocks, rules.trains,
                        workload.lora_rank, workload.adapter_size)
    if not rules.backward:
        return np.full(workload.num_blocks, 2.0 * counts.forward)
    flops = counts.forward + counts.backward
    return flops + counts.crossed_forward if rules.checkpoint else flops


def analytic_costs(workload: Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N,)`` counted FLOPs, peak bytes and upload bits of block ``n`` by the method.

    **FLOPs** are counted exactly on every layer's matrix products by autograd's rule
    (:mod:`desim.costs.flops`, which matches torch's ``FlopCounterMode``): a product of
    ``m×k`` by ``k×n`` costs ``2mkn`` forward and ``2mkn`` more per operand that requires grad.
    For RoBERTa with LoRA one layer's forward pass is ``F = 2bs(4hi + 2hf) + 4bs²i`` plus
    ``8bshr`` for its two LoRA modules; the backward pass to block ``n`` costs about ``F`` per
    crossed layer (twice for the attention products, less in the block's lowest layer, which
    computes no input gradients), and weight gradients ``2bs`` per trainable value. T5 adds the
    decoder layers (self-attention over ``t``, cross-attention over ``s``: its key and value
    projections of the encoder output are backpropagated only when the trained block is in the
    encoder), the gated FFN's third matrix, and the LM head (``2bthV`` forward, and as much
    backward for every block).

    **Memory**: :func:`analytic_memory_bytes`. **Upload** bits:
    :func:`desim.costs.methods.upload_bits`. The methods' rules: the module docstring.
    """
    trainable = trainable_values(workload)
    memory = analytic_memory_bytes(workload, trainable)
    bits = upload_bits(workload.method, trainable, workload.gradient_bits)
    return analytic_flops(workload), memory, bits


def analytic_memory_bytes(workload: Workload, trainable: np.ndarray) -> np.ndarray:
    """``(N,)`` peak bytes of the training step of block ``n`` by the method.

    In fp32: frozen weights ``4·P`` (:func:`desim.costs.transformer.model_params`), the
    activations kept by the layers the backward crosses (the first ``nℓ`` from the output;
    :func:`desim.costs.transformer.layer_activation_bytes`, Korthikanti et al. 2022 scaled from
    16 to 32 bits), the LM head's logits (T5), and 16 bytes per trainable value (weight,
    gradient, two Adam moments; ``trainable``: :func:`desim.costs.methods.trainable_values`).
    The adapter and IA3 values of the other blocks are frozen weights (4 B each; LoRA's are
    left out, about 0.2% of roberta-base's weights).
    """
    cfg, rules = workload.config, method_rules(workload.method)
    b, s, t = workload.batch_size, workload.seq_len, workload.decoder_len
    kinds = cfg.layer_kinds()
    n_layers = np.arange(1, workload.num_blocks + 1) * workload.layers_per_block
    act = np.array([layer_activation_bytes(cfg, k, b, s, t) for k in kinds])
    weights = rules.weight_bytes_per_param * model_params(cfg)
    head = head_activation_bytes(cfg, b, t)
    if not rules.backward:
        memory = np.full(workload.num_blocks, weights + act.max() + head) + 4.0 * trainable
    elif rules.checkpoint:
        inputs = np.cumsum([layer_input_bytes(cfg, k, b, s, t) for k in kinds])
        encoder_out = 4.0 * b * s * cfg.hidden_size if cfg.is_seq2seq else 0.0
        memory = (weights + inputs[n_layers - 1] + np.maximum.accumulate(act)[n_layers - 1]
                  + head + encoder_out + 16.0 * trainable)
    else:
        memory = weights + _kept_activation_bytes(workload, act) + head + 16.0 * trainable
    if rules.trains in ("adapter", "ia3"):
        memory = memory + 4.0 * (trainable.sum() - trainable)
    return memory


def _kept_activation_bytes(workload: Workload, act: np.ndarray) -> np.ndarray:
    """``(N,)`` activation bytes kept by the layers the backward pass to block ``n`` crosses.

    ``act`` is ``(L,)`` per-layer bytes from the output; the first ``n·L/N`` layers are crossed.
    """
    n_layers = np.arange(1, workload.num_blocks + 1) * workload.layers_per_block
    if method_rules(workload.method).trains != "adapter":
        return np.cumsum(act)[n_layers - 1]
    cfg, b, s, t = (workload.config, workload.batch_size, workload.seq_len,
                    workload.decoder_len)
    crossed, lowest = np.array([
        adapter_activation_bytes(cfg, k, b, s, t, workload.adapter_size)
        for k in cfg.layer_kinds()
    ]).T
    kept, low = act + crossed, n_layers - 1
    return np.cumsum(kept)[low] - kept[low] + lowest[low]


@dataclass(frozen=True)
class AnalyticCostModel:
    """FLOP- and byte-count cost model (the fallback when unprofiled; :func:`analytic_costs`).

    ``w_n = FLOPs_n / flops_per_s``: the counted FLOPs of block ``n``'s training step at a
    sustained throughput. Memory and upload bits are those of :func:`analytic_costs`; what a
    block adds to a set of blocks is :func:`desim.costs.multiblock.analytic_extras`.

    Attributes:
        flops_per_s: sustained training FLOP/s of the reference hardware class.
        hardware_speed: extra per-class speed multipliers (class name → factor); unknown classes
            are rejected.
    """

    flops_per_s: float = 5e10
    hardware_speed: tuple[tuple[str, float], ...] = ((REFERENCE_CLASS, 1.0),)
    name: str = "analytic"

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return ``(N,)`` compute seconds, peak bytes, upload bits and FLOPs of every block."""
        speeds = dict(self.hardware_speed)
        if hardware not in speeds:
            raise UnknownNameError(
                f"unknown hardware class {hardware!r}; known: {', '.join(sorted(speeds))}"
            )
        flops, memory, bits = analytic_costs(workload)
        rate = self.flops_per_s * speeds[hardware]
        compute_s = flops / rate
        # QLoRA's memory is an estimate (see analytic_costs); the source says so in results
        estimate = method_rules(workload.method).estimate
        source = f"{self.name}-estimate" if estimate else self.name
        extra_s, extra_bytes = analytic_extras(workload, rate)
        return BlockCosts(compute_s, memory, bits, source=source, flops=flops,
                          extra_compute_s=extra_s, extra_memory_bytes=extra_bytes)


class AnalyticParams(CostParams):
    """Parameters of the ``analytic`` cost model."""

    analytic_flops_per_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=5e10, description="Sustained training throughput of the analytic model."
    )


@COST_MODELS.register("analytic", "FLOP and byte counts at a sustained throughput",
                      AnalyticParams)
def build_analytic(params: AnalyticParams, inputs: CostInputs) -> AnalyticCostModel:
    """Every device class, and the reference class, at ``analytic_flops_per_s``."""
    classes = sorted({*inputs.classes, REFERENCE_CLASS})
    return AnalyticCostModel(params.analytic_flops_per_s, tuple((h, 1.0) for h in classes))
