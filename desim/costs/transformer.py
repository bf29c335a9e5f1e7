"""Transformer shapes, parameters and activation memory: encoder-only (RoBERTa) and T5.

A model is a stack of layers numbered from the output (DESIGN §2). In an encoder-only model
layer ``j`` (1-based) is encoder layer ``L − j`` counted from the input. In an encoder-decoder
(T5) model with ``Ld`` decoder and ``Le`` encoder layers, layers ``1..Ld`` are the decoder
layers from the last one and ``Ld+1..Ld+Le`` the encoder layers from the last one, so training
an encoder layer backpropagates through the whole decoder and the LM head. Encoder layers see
``s`` source tokens per sequence, decoder layers ``t`` target tokens (and attend over the ``s``
encoder outputs).

This module holds a model's shape (:class:`TransformerConfig`), its parameter counts and the
bytes its layers keep for the backward pass; the counted FLOPs of a training step are in
:mod:`desim.costs.flops`. Pure: no torch, no I/O.
"""


from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
    "TransformerConfig", "adapter_activation_bytes", "config_from_mapping",
    "head_activation_bytes", "layer_activation_bytes", "layer_adapter_values",
    "layer_ia3_values", "layer_input_bytes", "layer_params", "model_params",
]
