"""Counted work per layer: every layer as a small dataflow graph of matrix products.

Every layer is one graph of matrix products (:func:`layer_graph`): linear maps, attention
scores and context products, and a method's modules (LoRA factors, a bottleneck adapter; IA3's
scalings are element-wise, uncounted, but pass the grad flag on). Layers are numbered as in
:mod:`desim.costs.transformer` (from the output; T5's decoder layers first). Training FLOPs are
counted on these graphs with autograd's rule, which is also what torch's ``FlopCounterMode``
counts:

- a product of an ``m×k`` by a ``k×n`` operand costs ``2mkn`` FLOPs forward;
- in the backward pass it costs another ``2mkn`` for **each operand that requires grad**;
- a tensor requires grad when it depends on a trainable value (element-wise operations, norms
  and residual additions pass the flag on and are not counted).

Only the trained block's values are trainable, so the count follows the crossing rules by
itself: layers below the trained block have no backward; the trained block's lowest layer skips
its input gradients; a crossed decoder layer skips the backward of its cross-attention keys and
values unless the trained block is in the encoder. Pure: no torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from desim.costs.transformer import CLASSIFIER_LABELS, LayerKind, Trains, TransformerConfig


@dataclass(frozen=True)
class Product:
    """A matrix product ``out = left · right`` of ``macs`` multiply-accumulates (``mkn``).

    Operand names starting ``w.`` are a layer's own weights, ``lora.`` its LoRA factors and
    ``adapter.`` its bottleneck adapter (trainable when the layer trains by that method); other
    names are activations.
    """

    out: str
    left: str
    right: str
    macs: float


@dataclass(frozen=True)
class Merge:
    """An uncounted element-wise operation (norm, residual, activation) of ``inputs``.

    An input named ``ia3.…`` is an IA3 scaling vector (trainable when the layer trains by IA3).
    """

    out: str
    inputs: tuple[str, ...]


Op = Product | Merge


@dataclass(frozen=True)
class LoraModule:
    """One LoRA module (on a query or value projection), as DLoRA and the counts see it.

    Attributes:
        layer: the layer's index from the input (0-based; encoder layers first).
        name: ``sa.q`` or ``sa.v`` (self-attention query or value).
        group: the module's input tensor within the layer; modules of one group share it.
        tokens: tokens per sequence it processes (``s`` or ``t``).
        d_in: input width (``h``).
        d_out: output width (``i``).
    """

    layer: int
    name: str
    group: str
    tokens: int
    d_in: int
    d_out: int

    def values(self, rank: int) -> int:
        """Trainable values of the module at LoRA rank ``rank``: ``r·(d_in + d_out)``."""
        return rank * (self.d_in + self.d_out)


def layer_lora_modules(
    cfg: TransformerConfig, kind: LayerKind, seq_len: int, target_len: int, layer: int = 0
) -> tuple[LoraModule, ...]:
    """LoRA modules of one layer: the self-attention's query and value (one shared input).

    They see ``s`` tokens in an encoder layer and ``t`` in a decoder layer. T5's
    cross-attention carries none (the profiler's targets, ``SelfAttention.q`` and ``.v``).
    """
    h, i = cfg.hidden_size, cfg.inner_size
    tokens = seq_len if kind == "encoder" else target_len
    return (LoraModule(layer, "sa.q", "sa", tokens, h, i),
            LoraModule(layer, "sa.v", "sa", tokens, h, i))


def lora_modules(
    cfg: TransformerConfig, seq_len: int, target_len: int
) -> tuple[LoraModule, ...]:
    """Every LoRA module, layer by layer from the input (encoder layers first)."""
    kinds = cfg.layer_kinds()[::-1]
    return tuple(m for layer, kind in enumerate(kinds)
                 for m in layer_lora_modules(cfg, kind, seq_len, target_len, layer))


# where IA3 scales a linear map: its output (keys, values) or its input (output projections)
IA3Side = Literal["in", "out"] | None


def _linear(ops: list[Op], name: str, x: str, rows: float, d_in: int, d_out: int,
            rank: int, ia3: IA3Side = None) -> None:
    if ia3 == "in":  # peft's feed-forward IA3: (x * l) · W
        ops.append(Merge(f"{name}.in", (x, f"ia3.{name}")))
        x = f"{name}.in"
    ops.append(Product(name, x, f"w.{name}", rows * d_in * d_out))
    if rank:
        ops.append(Product(f"{name}.a", x, f"lora.{name}.a", rows * d_in * rank))
        ops.append(Product(f"{name}.b", f"{name}.a", f"lora.{name}.b", rows * rank * d_out))
        ops.append(Merge(name, (name, f"{name}.b")))
    if ia3 == "out":  # (x · W) * l
        ops.append(Merge(name, (name, f"ia3.{name}")))


@dataclass(frozen=True)
class LayerMethod:
    """The modules a fine-tuning method adds to every layer (all zero: the frozen backbone).

    Attributes:
        rank: LoRA rank of the modules on every self-attention query and value (0: none).
        adapter_size: width ``a`` of the bottleneck adapter after the feed-forward output
            projection (0: none).
        ia3: IA3 scaling vectors on every attention's keys and values, and on the inputs of
            the feed-forward output projection and (RoBERTa) the attention output projection.
    """

    rank: int = 0
    adapter_size: int = 0
    ia3: bool = False


def _attention(ops: list[Op], p: str, xq: str, xkv: str, residual: str, rows_q: float,
               rows_kv: float, keys: int, cfg: TransformerConfig, rank: int,
               ia3: bool) -> None:
    """Projections, scores ``QKᵀ``, context ``PV`` and the output projection.

    Scores and context cost ``rows_q·keys·i`` multiply-accumulates each (summed over heads).
    IA3 (peft's targets ``key``/``value``/``output.dense``, T5 ``k``/``v``/``wo``) scales the
    keys and values, and in RoBERTa also the output projection's input (``attention.output.dense``
    matches ``output.dense``); in T5 the cross-attention's keys and values too.
    """
    h, i = cfg.hidden_size, cfg.inner_size
    kv: IA3Side = "out" if ia3 else None
    o: IA3Side = "in" if ia3 and not cfg.is_seq2seq else None
    _linear(ops, f"{p}.q", xq, rows_q, h, i, rank)
    _linear(ops, f"{p}.k", xkv, rows_kv, h, i, 0, kv)
    _linear(ops, f"{p}.v", xkv, rows_kv, h, i, rank, kv)
    ops.append(Product(f"{p}.scores", f"{p}.q", f"{p}.k", rows_q * keys * i))
    ops.append(Product(f"{p}.ctx", f"{p}.scores", f"{p}.v", rows_q * keys * i))
    _linear(ops, f"{p}.o", f"{p}.ctx", rows_q, i, h, 0, o)
    ops.append(Merge(f"{p}.out", (residual, f"{p}.o")))


def _ffn(ops: list[Op], x: str, residual: str, rows: float, cfg: TransformerConfig,
         method: LayerMethod) -> None:
    """The feed-forward block; a bottleneck adapter ``y + up(gelu(down(y)))`` follows ``wo``."""
    h, f, a = cfg.hidden_size, cfg.intermediate_size, method.adapter_size
    _linear(ops, "wi0", x, rows, h, f, 0)
    if cfg.gated_ffn:
        _linear(ops, "wi1", x, rows, h, f, 0)
    ops.append(Merge("act", ("wi0", "wi1") if cfg.gated_ffn else ("wi0",)))
    _linear(ops, "wo", "act", rows, f, h, 0, "in" if method.ia3 else None)
    if a:
        ops.append(Product("ad.down", "wo", "adapter.down", rows * h * a))
        ops.append(Merge("ad.act", ("ad.down",)))
        ops.append(Product("ad.up", "ad.act", "adapter.up", rows * a * h))
        ops.append(Merge("wo", ("wo", "ad.up")))
    ops.append(Merge("ffn.out", (residual, "wo")))


def layer_graph(cfg: TransformerConfig, kind: LayerKind, batch: int, seq_len: int,
                target_len: int, rank: int = 0,
                method: LayerMethod | None = None) -> tuple[Op, ...]:
    """The products of one layer from input ``x`` to output ``y`` (``enc``: encoder output).

    Args:
        cfg: the model.
        kind: ``encoder`` or ``decoder``.
        batch: ``b`` sequences.
        seq_len: ``s`` source tokens per sequence.
        target_len: ``t`` target tokens per sequence (decoder layers only).
        rank: LoRA rank of the modules on every self-attention query and value (0: none).
        method: the modules of another method (adapter, IA3); ``None``: none.
    """
    m = method or LayerMethod()
    r, ia3 = rank or m.rank, m.ia3
    b, s, t = float(batch), seq_len, target_len
    ops: list[Op] = []
    if not cfg.is_seq2seq:  # RoBERTa: post-norm
        _attention(ops, "sa", "x", "x", "x", b * s, b * s, s, cfg, r, ia3)
        ops.append(Merge("ln1", ("sa.out", "w.ln1")))
        _ffn(ops, "ln1", "ln1", b * s, cfg, m)
        ops.append(Merge("y", ("ffn.out", "w.ln2")))
        return tuple(ops)
    ops.append(Merge("ln1", ("x", "w.ln1")))  # T5: pre-norm
    if kind == "encoder":
        _attention(ops, "sa", "ln1", "ln1", "x", b * s, b * s, s, cfg, r, ia3)
        ops.append(Merge("ln2", ("sa.out", "w.ln2")))
        _ffn(ops, "ln2", "sa.out", b * s, cfg, m)
    else:
        _attention(ops, "sa", "ln1", "ln1", "x", b * t, b * t, t, cfg, r, ia3)
        ops.append(Merge("ln2", ("sa.out", "w.ln2")))
        _attention(ops, "ca", "ln2", "enc", "sa.out", b * t, b * s, s, cfg, 0, ia3)
        ops.append(Merge("ln3", ("ca.out", "w.ln3")))
        _ffn(ops, "ln3", "ca.out", b * t, cfg, m)
    ops.append(Merge("y", ("ffn.out",)))
    return tuple(ops)


def head_graph(cfg: TransformerConfig, batch: int, target_len: int) -> tuple[Op, ...]:
    """The (frozen) head on the last layer's output ``x``.

    Encoder-only: the sequence-classification head on the first token (``h×h`` dense, then
    ``h×2``). Encoder-decoder: the LM head over every target token (``2·b·t·h·V`` forward).
    """
    h = cfg.hidden_size
    if cfg.is_seq2seq:
        return (Product("logits", "x", "head.lm", float(batch) * target_len * h * cfg.vocab_size),)
    return (Product("dense", "x", "head.dense", float(batch) * h * h),
            Product("logits", "dense", "head.out", float(batch) * h * CLASSIFIER_LABELS))


def count_graph(ops: tuple[Op, ...], grad_in: Mapping[str, bool],
                trainable: Trains | None) -> tuple[float, float, bool]:
    """Forward and backward multiply-accumulates of a graph, and whether ``y`` needs grad.

    Args:
        ops: the graph (:func:`layer_graph`, :func:`head_graph`).
        grad_in: which inputs (``x``, ``enc``) require grad.
        trainable: the method (:data:`Trains`) when the layer trains, else ``None``.

    Returns:
        ``(forward_macs, backward_macs, output requires grad)``; the output is ``y`` for a
        layer and ``logits`` for a head.
    """
    prefix = {"lora": "lora.", "full": "w.", "adapter": "adapter.", "ia3": "ia3."}.get(
        trainable or "", None)
    needs = dict(grad_in)

    def grad(name: str) -> bool:
        if name.startswith(("w.", "lora.", "adapter.", "ia3.", "head.")):
            return prefix is not None and name.startswith(prefix)
        return needs.get(name, False)

    fwd = bwd = 0.0
    for op in ops:
        if isinstance(op, Product):
            a, c = grad(op.left), grad(op.right)
            fwd += op.macs
            bwd += op.macs * (int(a) + int(c))
            needs[op.out] = a or c
        else:
            needs[op.out] = any(grad(x) for x in op.inputs)
    return fwd, bwd, needs.get("y", needs.get("logits", False))


def layer_forward_flops(cfg: TransformerConfig, kind: LayerKind, batch: int, seq_len: int,
                        target_len: int, rank: int = 0) -> float:
    """Forward FLOPs of one layer (``rank`` 0: the frozen backbone alone).

    RoBERTa: ``F = 2bs(4hi + 2hf) + 4bs²i`` (+ ``8bshr`` with LoRA); T5 adds the gated FFN's
    third matrix and, in a decoder layer, the cross-attention over ``s`` encoder outputs.
    """
    graph = layer_graph(cfg, kind, batch, seq_len, target_len, rank)
    return 2.0 * count_graph(graph, {}, None)[0]


@dataclass(frozen=True, eq=False)
class StepFlops:
    """Counted FLOPs of one training step, per trained block.

    Attributes:
        forward: FLOPs of the forward pass (every layer, LoRA factors and the head).
        backward: ``(N,)`` FLOPs of the backward pass when block ``n`` trains.
        crossed_forward: ``(N,)`` forward FLOPs of the layers that backward crosses (what
            gradient checkpointing recomputes).
    """

    forward: float
    backward: np.ndarray
    crossed_forward: np.ndarray


def step_flops(cfg: TransformerConfig, batch: int, seq_len: int, target_len: int,
               num_blocks: int, trains: Trains, rank: int, adapter_size: int = 64) -> StepFlops:
    """Count the FLOPs of training each block (``L/N`` consecutive layers) by autograd's rule.

    Args:
        cfg: the model.
        batch: ``b`` sequences.
        seq_len: ``s`` source tokens per sequence.
        target_len: ``t`` target tokens per sequence (unused by encoder-only models).
        num_blocks: ``N``; it must divide the layer count.
        trains: ``lora`` (LoRA factors on every self-attention query and value; all layers
            carry them), ``full`` (the block's layer weights; no added modules), ``adapter``
            (a bottleneck adapter in every layer) or ``ia3`` (IA3 vectors in every layer).
        rank: LoRA rank.
        adapter_size: adapter bottleneck width ``a`` (``adapter`` only).
    """
    method = LayerMethod(rank=rank if trains == "lora" else 0,
                         adapter_size=adapter_size if trains == "adapter" else 0,
                         ia3=trains == "ia3")
    graphs = {k: layer_graph(cfg, k, batch, seq_len, target_len, method=method)
              for k in ("encoder", "decoder")}
    head = head_graph(cfg, batch, target_len)
    kinds = cfg.layer_kinds()
    per_block = cfg.num_layers // num_blocks
    cache: dict[tuple[Any, ...], tuple[float, float, bool]] = {}

    def layer(kind: LayerKind, x: bool, enc: bool, trained: bool) -> tuple[float, float, bool]:
        key = (kind, x, enc and kind == "decoder", trained)
        if key not in cache:
            cache[key] = count_graph(graphs[kind], {"x": x, "enc": key[2]},
                                     trains if trained else None)
        return cache[key]

    enc_order = [j for j in range(cfg.num_layers - 1, -1, -1) if kinds[j] == "encoder"]
    dec_order = [j for j in range(cfg.num_layers - 1, -1, -1) if kinds[j] == "decoder"]
    forward = 0.0
    backward = np.zeros(num_blocks)
    crossed = np.zeros(num_blocks)
    for n in range(num_blocks):
        lo, hi = n * per_block, (n + 1) * per_block  # layers j-1 in [lo, hi) train
        fwd = bwd = rec = 0.0
        enc_grad = top = False
        for order in (enc_order, dec_order):
            if not order:
                continue
            flag = False  # each stack starts from frozen embeddings
            for j in order:
                f, bw, flag = layer(kinds[j], flag, enc_grad, lo <= j < hi)
                fwd, bwd, rec = fwd + f, bwd + bw, rec + (f if flag else 0.0)
            enc_grad = top = flag  # the head reads the last stack's output
        f, bw, _ = count_graph(head, {"x": top}, None)
        forward, backward[n], crossed[n] = fwd + f, bwd + bw, rec
    return StepFlops(2.0 * forward, 2.0 * backward, 2.0 * crossed)


__all__ = [
    "LayerMethod", "LoraModule", "Merge", "Product", "StepFlops", "count_graph", "head_graph",
    "layer_forward_flops", "layer_graph", "layer_lora_modules", "lora_modules", "step_flops",
]
