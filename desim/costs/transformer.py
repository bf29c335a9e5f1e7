"""Transformer shapes and counted work per layer: encoder-only (RoBERTa) and encoder-decoder (T5).

A model is a stack of layers numbered from the output (DESIGN §2). In an encoder-only model
layer ``j`` (1-based) is encoder layer ``L − j`` counted from the input. In an encoder-decoder
(T5) model with ``Ld`` decoder and ``Le`` encoder layers, layers ``1..Ld`` are the decoder
layers from the last one and ``Ld+1..Ld+Le`` the encoder layers from the last one, so training
an encoder layer backpropagates through the whole decoder and the LM head. Encoder layers see
``s`` source tokens per sequence, decoder layers ``t`` target tokens (and attend over the ``s``
encoder outputs).

Every layer is one small dataflow graph of matrix products (:func:`layer_graph`): linear maps,
attention scores and context products, and a method's modules (LoRA factors, a bottleneck
adapter; IA3's scalings are element-wise, uncounted, but pass the grad flag on). Training
FLOPs are counted on these graphs with autograd's rule, which is also what torch's
``FlopCounterMode`` counts:

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

from desim.errors import InputError

LayerKind = Literal["encoder", "decoder"]
# which values a method trains: the LoRA factors on every self-attention query and value, the
# layer's own weights, a bottleneck adapter after the feed-forward output projection, or IA3's
# scaling vectors (keys, values and the inputs of the output projections)
Trains = Literal["lora", "full", "adapter", "ia3"]

ENCODER_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
)
T5_FIELDS = ("d_model", "d_ff", "d_kv", "num_heads", "num_layers", "vocab_size")
CLASSIFIER_LABELS = 2  # the profiler's sequence-classification head (two labels)


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a transformer (the fields of a Hugging Face config).

    An encoder-only model (RoBERTa) leaves the fields after ``max_position_embeddings`` at
    their defaults. An encoder-decoder model follows T5's conventions: no biases, RMS norms
    (a weight only), pre-norm layers, a relative-position bias table in the first layer of
    each stack, and an LM head over the vocabulary.

    Attributes:
        name: the model's name in tables (the config file stem).
        hidden_size: ``h`` (T5 ``d_model``).
        num_hidden_layers: encoder layers (``L``; T5 ``num_layers``, ``Le``).
        num_attention_heads: ``a``.
        intermediate_size: feed-forward width ``f`` (T5 ``d_ff``).
        vocab_size: ``V``.
        max_position_embeddings: learned positions (0 for T5's relative positions).
        num_decoder_layers: ``Ld`` (0: encoder-only).
        head_dim: per-head width (T5 ``d_kv``; 0: ``h / a``).
        gated_ffn: a gated feed-forward (T5 ``gated-gelu``: three matrices instead of two).
        relative_attention_num_buckets: T5's relative-position buckets.
        tie_word_embeddings: the LM head shares the input embedding (T5 default ``True``;
            FLAN-T5 configs set ``False``).
    """

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    num_decoder_layers: int = 0
    head_dim: int = 0
    gated_ffn: bool = False
    relative_attention_num_buckets: int = 0
    tie_word_embeddings: bool = True

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder model (it has decoder layers)."""
        return self.num_decoder_layers > 0

    @property
    def num_layers(self) -> int:
        """All layers, ``Ld + Le`` (``L`` for an encoder-only model)."""
        return self.num_hidden_layers + self.num_decoder_layers

    @property
    def inner_size(self) -> int:
        """Width of the query, key and value projections: ``i = a · head_dim``."""
        if self.head_dim:
            return self.num_attention_heads * self.head_dim
        return self.hidden_size

    def layer_kinds(self) -> tuple[LayerKind, ...]:
        """Kind of every layer, from the output (index ``j − 1`` for layer ``j``)."""
        decoder: LayerKind = "decoder"
        encoder: LayerKind = "encoder"
        return (decoder,) * self.num_decoder_layers + (encoder,) * self.num_hidden_layers


def config_from_mapping(raw: Mapping[str, Any], name: str, source: str) -> TransformerConfig:
    """A :class:`TransformerConfig` from the mapping of a Hugging Face ``config.json``.

    T5 configs (``_family = "t5"``, or no ``_family`` and ``model_type = "t5"``) use T5's keys
    (``d_model``, ``d_ff``, ``d_kv``, ``num_heads``, ``num_layers``, ``num_decoder_layers``
    (default ``num_layers``), ``feed_forward_proj``, ``relative_attention_num_buckets``,
    ``tie_word_embeddings``); others need RoBERTa's (:data:`ENCODER_FIELDS`).

    Raises:
        InputError: naming ``source`` and the missing or non-positive integer fields.
    """

    def ints(fields: tuple[str, ...]) -> dict[str, int]:
        bad = [f for f in fields if not _positive_int(raw.get(f))]
        if bad:
            raise InputError(f"{source}: missing or non-positive integer fields: {', '.join(bad)}")
        return {f: int(raw[f]) for f in fields}

    is_t5 = (raw.get("_family") or raw.get("model_type")) == "t5"
    if not is_t5:
        e = ints(ENCODER_FIELDS)
        return TransformerConfig(
            name=name,
            hidden_size=e["hidden_size"],
            num_hidden_layers=e["num_hidden_layers"],
            num_attention_heads=e["num_attention_heads"],
            intermediate_size=e["intermediate_size"],
            vocab_size=e["vocab_size"],
            max_position_embeddings=e["max_position_embeddings"],
        )
    v = ints(T5_FIELDS)
    decoder = raw.get("num_decoder_layers", v["num_layers"])
    if not _positive_int(decoder):
        raise InputError(f"{source}: num_decoder_layers must be a positive integer")
    buckets = raw.get("relative_attention_num_buckets", 32)
    if not _positive_int(buckets):
        raise InputError(f"{source}: relative_attention_num_buckets must be a positive integer")
    proj = str(raw.get("feed_forward_proj", "relu"))
    return TransformerConfig(
        name=name,
        hidden_size=v["d_model"],
        num_hidden_layers=v["num_layers"],
        num_attention_heads=v["num_heads"],
        intermediate_size=v["d_ff"],
        vocab_size=v["vocab_size"],
        max_position_embeddings=0,
        num_decoder_layers=int(decoder),
        head_dim=v["d_kv"],
        gated_ffn=proj.startswith("gated-"),
        relative_attention_num_buckets=int(buckets),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", True)),
    )


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


# ---------------------------------------------------------------------------------------------
# Layer graphs and counted FLOPs.


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


# ---------------------------------------------------------------------------------------------
# Parameters and activation memory.


def layer_params(cfg: TransformerConfig, kind: LayerKind = "encoder") -> int:
    """Parameters of one layer.

    RoBERTa: attention ``4(h²+h)``, FFN ``(hf+f) + (fh+h)``, two LayerNorms ``4h``.
    T5 (no biases, RMS norms): attention ``4hi`` per attention (two in a decoder layer), FFN
    ``(2 or 3)·hf``, one norm weight ``h`` per sub-layer.
    """
    h, f, i = cfg.hidden_size, cfg.intermediate_size, cfg.inner_size
    if not cfg.is_seq2seq:
        return 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * 2 * h
    ffn = (3 if cfg.gated_ffn else 2) * h * f
    if kind == "encoder":
        return 4 * h * i + ffn + 2 * h
    return 8 * h * i + ffn + 3 * h


def layer_adapter_values(cfg: TransformerConfig, adapter_size: int) -> int:
    """Values of one layer's bottleneck adapter: ``2ha + a + h``.

    Down ``h×a`` and up ``a×h`` weights with their biases (the profiler's ``adapter_down`` and
    ``adapter_up``), the same in every layer kind.
    """
    h, a = cfg.hidden_size, adapter_size
    return 2 * h * a + a + h


def layer_ia3_values(cfg: TransformerConfig, kind: LayerKind = "encoder") -> int:
    """IA3 values of one layer: one per scaled key, value or output-projection input.

    RoBERTa (peft targets ``key``, ``value``, ``output.dense``; the last also matches the
    attention output ``attention.output.dense``): ``3i + f``. T5 (``k``, ``v``, ``wo``):
    encoder ``2i + f``; decoder ``4i + f`` (its cross-attention keys and values too).
    """
    i, f = cfg.inner_size, cfg.intermediate_size
    if not cfg.is_seq2seq:
        return 3 * i + f
    return (2 if kind == "encoder" else 4) * i + f


def adapter_activation_bytes(cfg: TransformerConfig, kind: LayerKind, batch: int,
                             seq_len: int, target_len: int,
                             adapter_size: int) -> tuple[float, float]:
    """fp32 bytes a layer keeps for its bottleneck adapter's backward: ``(crossed, lowest)``.

    A crossed layer keeps its adapter's GELU input, ``4·b·tokens·a`` bytes, besides its own
    activations (:func:`layer_activation_bytes`). The adapter sits at the end of the layer, so
    in the trained block's lowest layer the backward pass stops there: that layer keeps only the
    adapter's input and its GELU's input and output, ``4·b·tokens·(h + 2a)`` bytes, instead of
    its activations (measured on the tiny model: its saved bytes are below LoRA's by about
    one layer's).
    """
    tokens = seq_len if kind == "encoder" else target_len
    bt = 4.0 * batch * tokens
    return bt * adapter_size, bt * (cfg.hidden_size + 2 * adapter_size)


def model_params(cfg: TransformerConfig) -> int:
    """Parameters of the whole model (frozen and trainable).

    RoBERTa: token and position embeddings plus ``L`` layers (the small head is left out).
    T5: the shared embedding, the LM head unless tied, ``Le`` encoder and ``Ld`` decoder
    layers, two final norms and two relative-position bias tables.
    """
    h, V = cfg.hidden_size, cfg.vocab_size
    if not cfg.is_seq2seq:
        return V * h + cfg.max_position_embeddings * h + cfg.num_hidden_layers * layer_params(cfg)
    head = 0 if cfg.tie_word_embeddings else V * h
    return (V * h + head + cfg.num_hidden_layers * layer_params(cfg, "encoder")
            + cfg.num_decoder_layers * layer_params(cfg, "decoder") + 2 * h
            + 2 * cfg.relative_attention_num_buckets * cfg.num_attention_heads)


def layer_activation_bytes(cfg: TransformerConfig, kind: LayerKind, batch: int, seq_len: int,
                           target_len: int) -> float:
    """fp32 bytes one crossed layer keeps for backward (Korthikanti et al. 2022, ×2 for fp32).

    Their 16-bit count per layer, ``34bsh + 5ab s²`` for ``f = 4h`` and ``i = h``, split by
    tensor width: ``10bsh + 8bsi + 4bsf + 5ab s²`` (a gated FFN keeps one more ``f``-wide
    tensor: ``6bsf``). A decoder layer over ``t`` target tokens: self-attention, norms and FFN
    on ``t`` tokens, plus a cross-attention keeping its query side (``3bth + 4bti``), the
    encoder-side keys and values (``4bsi``) and its ``t×s`` probabilities (``5abts``):
    ``15bth + 12bti + 4bsi + (4|6)btf + 5ab t² + 5abts``.
    """
    b, h, i = float(batch), cfg.hidden_size, cfg.inner_size
    f, a, s, t = cfg.intermediate_size, cfg.num_attention_heads, seq_len, target_len
    ffn = 6.0 if cfg.gated_ffn else 4.0
    if kind == "encoder":
        half = 10 * b * s * h + 8 * b * s * i + ffn * b * s * f + 5 * a * b * s * s
    else:
        half = (15 * b * t * h + 12 * b * t * i + 4 * b * s * i + ffn * b * t * f
                + 5 * a * b * t * t + 5 * a * b * t * s)
    return 2.0 * half


def head_activation_bytes(cfg: TransformerConfig, batch: int, target_len: int) -> float:
    """fp32 bytes the LM head keeps: its input, the logits and their log-softmax.

    0 for the small classification head of an encoder-only model.
    """
    if not cfg.is_seq2seq:
        return 0.0
    bt = float(batch) * target_len
    return 4.0 * (bt * cfg.hidden_size + 2.0 * bt * cfg.vocab_size)


def layer_input_bytes(cfg: TransformerConfig, kind: LayerKind, batch: int, seq_len: int,
                      target_len: int) -> float:
    """fp32 bytes of one layer's input (``4·b·tokens·h``), what a checkpoint keeps."""
    tokens = seq_len if kind == "encoder" else target_len
    return 4.0 * batch * tokens * cfg.hidden_size


__all__ = [
    "LayerMethod", "LoraModule", "Merge", "Product", "StepFlops", "TransformerConfig",
    "adapter_activation_bytes", "config_from_mapping", "count_graph", "head_activation_bytes",
    "head_graph", "layer_activation_bytes", "layer_adapter_values", "layer_forward_flops",
    "layer_graph", "layer_ia3_values", "layer_input_bytes", "layer_lora_modules",
    "layer_params", "lora_modules", "model_params", "step_flops",
]
