"""Fine-tuning methods: one table of rules, used by the analytic and the profiled models.

A method's rules (:class:`MethodRules`) say what it trains, whether it runs a backward pass,
what it keeps in memory and what a device uploads; :func:`trainable_values` counts the values
a block trains and :func:`upload_bits` the bits it uploads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from desim.costs.base import Workload
from desim.costs.flops import layer_lora_modules
from desim.costs.transformer import (
    LayerKind,
    Trains,
    TransformerConfig,
    layer_adapter_values,
    layer_ia3_values,
    layer_params,
)
from desim.errors import UnknownNameError, did_you_mean


@dataclass(frozen=True)
class MethodRules:
    """What a fine-tuning method trains, computes, keeps in memory and uploads.

    Attributes:
        name: the ``model.method`` name.
        trains: ``lora`` (LoRA rank ``r`` on every self-attention query and value), ``full``
            (every weight of the block's layers), ``adapter`` (a bottleneck adapter of width
            ``a`` after every layer's feed-forward output projection) or ``ia3`` (IA3 vectors
            on keys, values and output-projection inputs).
        backward: ``False`` for zeroth-order training (two forward passes, no backward).
        checkpoint: gradient checkpointing at layer boundaries.
        weight_bytes_per_param: bytes of a frozen weight (fp32: 4; NF4 with an fp32 scale per
            64 values: 0.5625).
        estimate: the analytic figures are an estimate, not a count (results say so).
        upload: ``gradient`` (``q`` bits per trainable value) or ``scalar`` (one ``q``-bit
            projected gradient per block: the perturbation is regenerated from a shared seed).
    """

    name: str
    trains: Trains
    backward: bool = True
    checkpoint: bool = False
    weight_bytes_per_param: float = 4.0
    estimate: bool = False
    upload: Literal["gradient", "scalar"] = "gradient"


METHODS: dict[str, MethodRules] = {
    m.name: m
    for m in (
        MethodRules("lora", "lora"),
        MethodRules("full", "full"),
        MethodRules("lora-checkpoint", "lora", checkpoint=True),
        MethodRules("qlora", "lora", weight_bytes_per_param=0.5625, estimate=True),
        MethodRules("mezo", "lora", backward=False, upload="scalar"),
        MethodRules("adapter", "adapter"),
        MethodRules("ia3", "ia3"),
    )
}
# methods the analytic model prices
ANALYTIC_METHODS = tuple(METHODS)


def method_rules(method: str) -> MethodRules:
    """The rules of ``method``.

    Raises:
        UnknownNameError: not a method the analytic model prices.
    """
    if method not in METHODS:
        raise UnknownNameError(
            f"model.method: unknown method {method!r}; known: {', '.join(ANALYTIC_METHODS)}"
            f"{did_you_mean(method, ANALYTIC_METHODS)}"
        )
    return METHODS[method]


def upload_bits(method: str, trainable_values: Any, gradient_bits: int) -> np.ndarray:
    """``(N,)`` bits a device uploads after training each block.

    ``q`` bits per trainable value (``D_n = q·S_n``), except for a method whose rule is
    ``scalar`` (MeZO: ``q`` bits per block). Methods without rules (a measured-only table)
    upload their gradients.
    """
    values = np.asarray(trainable_values, dtype=float)
    rules = METHODS.get(method)
    if rules is not None and rules.upload == "scalar":
        return np.full(values.shape, float(gradient_bits))
    return values * gradient_bits


def layer_trainable_values(cfg: TransformerConfig, kind: LayerKind, method: str,
                           lora_rank: int, adapter_size: int = 64) -> int:
    """Trainable values in one layer by the method.

    LoRA on the self-attention query and value: ``2·r·(h + i)`` (``4hr`` for RoBERTa); full
    fine-tuning: the whole layer (:func:`desim.costs.transformer.layer_params`); adapter:
    ``2ha + a + h`` (:func:`desim.costs.transformer.layer_adapter_values`); IA3: ``3i + f`` for
    RoBERTa (:func:`desim.costs.transformer.layer_ia3_values`).
    """
    trains = method_rules(method).trains
    if trains == "full":
        return layer_params(cfg, kind)
    if trains == "adapter":
        return layer_adapter_values(cfg, adapter_size)
    if trains == "ia3":
        return layer_ia3_values(cfg, kind)
    return sum(m.values(lora_rank) for m in layer_lora_modules(cfg, kind, 0, 0))


def trainable_values(workload: Workload) -> np.ndarray:
    """``(N,)`` trainable values ``S_n`` of every block (the sum over its layers)."""
    cfg = workload.config
    per_layer = np.array([
        layer_trainable_values(cfg, k, workload.method, workload.lora_rank,
                               workload.adapter_size)
        for k in cfg.layer_kinds()
    ], dtype=float)
    return per_layer.reshape(workload.num_blocks, -1).sum(axis=1)
