"""Cost models: what training block ``n`` costs in compute time, peak memory and upload bits.

DESIGN §2: blocks are numbered from the output (block 1 next to the head). Training block
``n`` runs a full forward pass, backpropagates from the loss down to the lowest layer of block
``n`` only, and computes weight gradients for block ``n`` alone. Hence compute and memory are
non-decreasing in ``n``. An encoder-decoder model (T5) numbers its decoder layers first
(:mod:`desim.costs.transformer`), so training an encoder block crosses the whole decoder.

:class:`ProfiledCostModel` (the default) prices a block from measured profiles
(``desim profile``; README "Calibration") through a fitted model of time and memory in depth,
batch and sequence length. :class:`AnalyticCostModel` prices a block from FLOP and byte counts
of the model's layers (formulas in :func:`analytic_costs`) and is the fallback for unprofiled
hardware or workloads; :class:`TableCostModel` returns given arrays (tests, custom costs).
Every model also gives each block's counted training FLOPs (``BlockCosts.flops``, for MFU).
The rules of the fine-tuning methods (what trains, what is uploaded) sit in :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from desim.costs.transformer import (
    LayerKind,
    Trains,
    TransformerConfig,
    adapter_activation_bytes,
    head_activation_bytes,
    layer_activation_bytes,
    layer_adapter_values,
    layer_ia3_values,
    layer_input_bytes,
    layer_lora_modules,
    layer_params,
    model_params,
    step_flops,
)
from desim.errors import ScenarioError, UnknownNameError


@dataclass(frozen=True)
class Workload:
    """What is trained: model, method, batch and sequence lengths, and the block split.

    Attributes:
        config: the model.
        method: the fine-tuning method (:data:`METHODS`, or a measured-only one).
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


@dataclass(frozen=True, eq=False)
class BlockCosts:
    """Per-block costs on one hardware class, arrays of shape ``(N,)`` indexed by ``n - 1``.

    Attributes:
        compute_s: training-step seconds on the hardware class at speed factor 1 (w_n).
        memory_bytes: peak memory of the training step (m_n).
        upload_bits: bits the block's device uploads (D_n; :func:`upload_bits`).
        source: which model produced them (recorded in results).
        flops: counted FLOPs of the training step (``None``: not priced; users then count
            them with :func:`analytic_flops`).
        flops_source: ``profiled`` (torch's FLOP counter, via the profile's ``flops``
            column) or ``analytic`` (:func:`analytic_flops`).
    """

    compute_s: np.ndarray
    memory_bytes: np.ndarray
    upload_bits: np.ndarray
    source: str
    flops: np.ndarray | None = None
    flops_source: str = "analytic"


class CostModel(Protocol):
    """Prices every block of a workload on a hardware class."""

    @property
    def name(self) -> str:
        """The model's name in results (read-only: the models are frozen dataclasses)."""
        ...

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return the per-block costs of ``workload`` on ``hardware``."""
        ...


# ---------------------------------------------------------------------------------------------
# Fine-tuning methods: one table of rules, used by the analytic and the profiled models.


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
    (:mod:`desim.costs.transformer`, which matches torch's ``FlopCounterMode``): a product of
    ``m×k`` by ``k×n`` costs ``2mkn`` forward and ``2mkn`` more per operand that requires grad.
    For RoBERTa with LoRA one layer's forward pass is ``F = 2bs(4hi + 2hf) + 4bs²i`` plus
    ``8bshr`` for its two LoRA modules; the backward pass to block ``n`` costs about ``F`` per
    crossed layer (twice for the attention products, less in the block's lowest layer, which
    computes no input gradients), and weight gradients ``2bs`` per trainable value. T5 adds the
    decoder layers (self-attention over ``t``, cross-attention over ``s``: its key and value
    projections of the encoder output are backpropagated only when the trained block is in the
    encoder), the gated FFN's third matrix, and the LM head (``2bthV`` forward, and as much
    backward for every block).

    **Memory** in fp32: frozen weights ``4·P`` (:func:`desim.costs.transformer.model_params`),
    the activations kept by the layers the backward crosses (the first ``nℓ`` from the output;
    :func:`desim.costs.transformer.layer_activation_bytes`, Korthikanti et al. 2022 scaled from 16
    to
    32 bits), the LM head's logits (T5), and 16 bytes per trainable value (weight, gradient,
    two Adam moments). **Upload** bits: :func:`upload_bits`.

    Methods (:data:`METHODS`):

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

    The adapter and IA3 values of the other blocks are frozen weights (4 B each; LoRA's are
    left out, about 0.2% of roberta-base's weights).
    """
    cfg, rules = workload.config, method_rules(workload.method)
    b, s, t = workload.batch_size, workload.seq_len, workload.decoder_len
    kinds = cfg.layer_kinds()
    n_layers = np.arange(1, workload.num_blocks + 1) * workload.layers_per_block
    act = np.array([layer_activation_bytes(cfg, k, b, s, t) for k in kinds])
    trainable = trainable_values(workload)
    weights = rules.weight_bytes_per_param * model_params(cfg)
    head = head_activation_bytes(cfg, b, t)
    flops = analytic_flops(workload)
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
    return flops, memory, upload_bits(workload.method, trainable, workload.gradient_bits)


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
    sustained throughput. Memory and upload bits are those of :func:`analytic_costs`.

    Attributes:
        flops_per_s: sustained training FLOP/s of the reference hardware class.
        hardware_speed: extra per-class speed multipliers (class name → factor); unknown classes
            are rejected.
    """

    flops_per_s: float = 5e10
    hardware_speed: tuple[tuple[str, float], ...] = (("cpu-reference", 1.0),)
    name: str = "analytic"

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return ``(N,)`` compute seconds, peak bytes, upload bits and FLOPs of every block."""
        speeds = dict(self.hardware_speed)
        if hardware not in speeds:
            raise UnknownNameError(
                f"unknown hardware class {hardware!r}; known: {', '.join(sorted(speeds))}"
            )
        flops, memory, bits = analytic_costs(workload)
        compute_s = flops / (self.flops_per_s * speeds[hardware])
        # QLoRA's memory is an estimate (see analytic_costs); the source says so in results
        estimate = method_rules(workload.method).estimate
        source = f"{self.name}-estimate" if estimate else self.name
        return BlockCosts(compute_s, memory, bits, source=source, flops=flops)


@dataclass(frozen=True, eq=False)
class TableCostModel:
    """Costs given directly as arrays (the same on every hardware class).

    Attributes:
        compute_s: ``(N,)`` seconds at speed factor 1.
        memory_bytes: ``(N,)`` peak bytes.
        upload_bits: ``(N,)`` upload bits.
        flops: ``(N,)`` counted FLOPs (``None``: :func:`analytic_flops` of the workload).
    """

    compute_s: np.ndarray
    memory_bytes: np.ndarray
    upload_bits: np.ndarray
    name: str = "table"
    flops: np.ndarray | None = None

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return the stored arrays (their length must equal ``workload.num_blocks``)."""
        given = (self.compute_s, self.memory_bytes, self.upload_bits,
                 *(() if self.flops is None else (self.flops,)))
        arrays = [np.asarray(x, dtype=float) for x in given]
        if any(x.shape != (workload.num_blocks,) for x in arrays):
            raise ScenarioError(
                f"cost table has {arrays[0].shape} entries, expected {workload.num_blocks} blocks"
            )
        compute_s, memory_bytes, upload_bits = arrays[:3]
        if self.flops is None:
            return BlockCosts(compute_s, memory_bytes, upload_bits, source=self.name,
                              flops=analytic_flops(workload))
        return BlockCosts(compute_s, memory_bytes, upload_bits, source=self.name,
                          flops=arrays[3], flops_source=self.name)


# ---------------------------------------------------------------------------------------------
# Measured profiles (README "Calibration").

PROFILE_FEATURES = ("1", "n", "bs", "n·bs", "bs²", "n·bs²")
SEQ2SEQ_FEATURES = ("1", "b", "bs", "bs²", "d", "d·b", "d·bs", "e", "e·bs", "e·bs²", "x·bs")


def profile_features(n: Any, b: Any, s: Any) -> np.ndarray:
    """Regressors of the fitted profile model of an encoder-only table, shape ``(..., 6)``.

    With tokens ``T = b·s`` and attention size ``A = b·s²``, a block-``n`` training step is
    modelled as ``(c0 + c1·n) + (c2 + c3·n)·T + (c4 + c5·n)·A``: a fixed part (the forward
    pass, the head, the step of one block) plus a part per layer the backward pass crosses,
    each affine in tokens (linear layers, layer norms, element-wise ops) and in ``b·s²``
    (attention scores and probabilities).
    """
    n, b, s = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (n, b, s)))
    tokens, attn = b * s, b * s * s
    return np.stack([np.ones_like(n), n, tokens, n * tokens, attn, n * attn], axis=-1)


def seq2seq_features(n: Any, b: Any, s: Any, decoder_layers: int) -> np.ndarray:
    """Regressors of an encoder-decoder table (fixed target length ``t``), shape ``(..., 11)``.

    Block ``n`` crosses ``d = min(n, Ld)`` decoder and ``e = max(n − Ld, 0)`` encoder layers;
    ``x = [n > Ld]`` marks that the encoder is crossed. With ``t`` fixed, decoder terms (``b·t``
    tokens, ``b·t²`` self-attention) are multiples of ``b`` and cross-attention terms
    (``b·t·s``) of ``b·s``, so a step is

    ``(c0 + c1·b + c2·bs + c3·bs²) + d·(c4 + c5·b + c6·bs) + e·(c7 + c8·bs + c9·bs²)
    + x·c10·bs``:

    the forward pass and the head; a part per crossed decoder layer; a part per crossed encoder
    layer (tokens ``b·s``, attention ``b·s²``); and, once the encoder is crossed, the
    cross-attention keys and values of every decoder layer. Every regressor is non-decreasing
    in ``n``, ``b`` and ``s``.
    """
    n, b, s = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (n, b, s)))
    d = np.minimum(n, decoder_layers)
    e = np.maximum(n - decoder_layers, 0.0)
    x = (n > decoder_layers).astype(float)
    bs, bss = b * s, b * s * s
    return np.stack([np.ones_like(n), b, bs, bss, d, d * b, d * bs, e, e * bs, e * bss, x * bs],
                    axis=-1)


def flops_features(n: Any, b: Any, s: Any, decoder_layers: int) -> np.ndarray:
    """Regressors of counted FLOPs: the time regressors plus the terms that make them exact.

    Encoder-only: the classification head adds ``b``. Encoder-decoder: the trained block's own
    part changes from a decoder to an encoder layer at ``n = Ld + 1`` (``x``, ``x·b``,
    ``x·bs²``). Coefficients may be negative: FLOP counts need no monotone guarantee.
    """
    n, b, s = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (n, b, s)))
    if decoder_layers <= 0:
        return np.concatenate([profile_features(n, b, s), b[..., None]], axis=-1)
    x = (n > decoder_layers).astype(float)
    extra = np.stack([x, x * b, x * b * s * s], axis=-1)
    return np.concatenate([seq2seq_features(n, b, s, decoder_layers), extra], axis=-1)


def _relative_system(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = x / y[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    return a / scale, scale


def _fit_relative_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the sum of squared *relative* errors."""
    from scipy.optimize import nnls

    a, scale = _relative_system(x, y)
    z, _ = nnls(a, np.ones(len(y)))
    return z / scale


def _fit_relative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Signed least-squares coefficients on relative errors (``None``: rank-deficient)."""
    a, scale = _relative_system(x, y)
    z, _, rank, _ = np.linalg.lstsq(a, np.ones(len(y)), rcond=None)
    return z / scale if rank == x.shape[1] else None


@dataclass(frozen=True)
class DepthDecrease:
    """Blocks at which a measured column is lower than at the block above it.

    Attributes:
        column: ``compute_s`` or ``peak_memory_bytes``.
        blocks: the depths ``n`` whose value is below that of ``n − 1`` at some grid point.
        example: the first such place, for messages (grid point, both values).
    """

    column: str
    blocks: tuple[int, ...]
    example: str


def depth_decreases(table: pd.DataFrame) -> list[DepthDecrease]:
    """Where time or memory of a profile table *decreases* with depth (the fit hides it).

    The fitted model is non-decreasing in depth by construction (:class:`ProfileFit`), so a
    measured decrease is smoothed away silently; this names it. A time decrease counts only
    when it exceeds the measurement spread of both rows (``compute_spread_s``, max − min over
    repeats), so depth-independent steps (``mezo``) measured with noise do not count; memory
    is deterministic, so any decrease counts. (:func:`desim.profiling.report.depth_violations`
    lists every decrease, noise included, for ``desim profile --validate``.)

    Args:
        table: profile rows (:func:`desim.io.files.read_profile`), one table or several.

    Returns:
        One entry per column that decreases somewhere; empty when both are non-decreasing.
    """
    grid = ["hardware", "model", "method", "num_blocks", "lora_rank", "batch_size", "seq_len",
            "target_len"]
    grid = [c for c in grid if c in table.columns]
    found: dict[str, tuple[set[int], str]] = {}
    for key, rows in table.sort_values("block", kind="stable").groupby(grid, sort=True):
        point = dict(zip(grid, key, strict=True))
        blocks = rows["block"].to_numpy()
        for col in ("compute_s", "peak_memory_bytes"):
            v = rows[col].to_numpy(float)
            noisy = col == "compute_s" and "compute_spread_s" in rows.columns
            spread = rows["compute_spread_s"].to_numpy(float) if noisy else np.zeros(v.size)
            down = np.flatnonzero(v[1:] < v[:-1] - np.maximum(spread[1:], spread[:-1])) + 1
            if not down.size:
                continue
            i = int(down[0])
            seen, example = found.get(col, (set(), ""))
            seen.update(int(b) for b in blocks[down])
            example = example or (
                f"{point.get('model')} {point.get('method')} at batch_size "
                f"{point.get('batch_size')}, seq_len {point.get('seq_len')}: {v[i]:.4g} at "
                f"block {int(blocks[i])} < {v[i - 1]:.4g} at block {int(blocks[i - 1])}"
            )
            found[col] = (seen, example)
    return [DepthDecrease(col, tuple(sorted(b)), ex) for col, (b, ex) in found.items()]


@dataclass(frozen=True, eq=False)
class ProfileFit:
    """The fitted model of one measured table (one hardware class, model and method).

    Time and memory coefficients multiply :func:`profile_features` (encoder-only tables) or
    :func:`seq2seq_features` (encoder-decoder tables). They are fitted by non-negative least
    squares on relative errors, so every term grows with depth, tokens and attention size and
    the predictions are non-decreasing in depth by construction. Counted FLOPs (the table's
    ``flops`` column, when every row has one) multiply :func:`flops_features`.

    Attributes:
        hardware, model, method: what the table describes.
        num_blocks: profiled depths ``N`` (one layer per block).
        lora_rank: LoRA rank of the table (0 for other methods).
        time_coef: coefficients of training-step seconds.
        memory_coef: coefficients of peak bytes.
        trainable_params: ``(N,)`` trainable values of block ``n`` at index ``n − 1``.
        time_residuals: ``(R,)`` relative residuals (prediction / measurement − 1) of the rows.
        memory_residuals: ``(R,)`` the same for memory.
        decoder_layers: ``Ld`` of an encoder-decoder model (0: encoder-only).
        target_len: the table's decoder target length ``t`` (0: encoder-only).
        flops_coef: coefficients of counted FLOPs (``None``: the table has none).
        flops_residuals: ``(R,)`` relative residuals of the FLOPs (``None`` without them).
    """

    hardware: str
    model: str
    method: str
    num_blocks: int
    lora_rank: int
    time_coef: np.ndarray
    memory_coef: np.ndarray
    trainable_params: np.ndarray
    time_residuals: np.ndarray
    memory_residuals: np.ndarray
    decoder_layers: int = 0
    target_len: int = 0
    flops_coef: np.ndarray | None = None
    flops_residuals: np.ndarray | None = None

    def features(self, n: Any, batch: Any, seq_len: Any) -> np.ndarray:
        """The time and memory regressors of this table's family."""
        if self.decoder_layers > 0:
            return seq2seq_features(n, batch, seq_len, self.decoder_layers)
        return profile_features(n, batch, seq_len)

    def compute_s(self, n: Any, batch: Any, seq_len: Any) -> np.ndarray:
        """Predicted training-step seconds of block ``n`` (broadcasts)."""
        return self.features(n, batch, seq_len) @ self.time_coef

    def memory_bytes(self, n: Any, batch: Any, seq_len: Any) -> np.ndarray:
        """Predicted peak bytes of the training step of block ``n`` (broadcasts)."""
        return self.features(n, batch, seq_len) @ self.memory_coef

    def flops(self, n: Any, batch: Any, seq_len: Any) -> np.ndarray | None:
        """Counted FLOPs of the training step of block ``n`` (``None``: not in the table)."""
        if self.flops_coef is None:
            return None
        return flops_features(n, batch, seq_len, self.decoder_layers) @ self.flops_coef


def _single(table: pd.DataFrame, column: str, default: int = 0) -> int:
    if column not in table.columns:
        return default
    values = table[column].unique()
    if len(values) != 1:
        raise ScenarioError(
            f"a profile fit needs one {column} per table; got {sorted(values.tolist())}"
        )
    return int(values[0])


def fit_profile(table: pd.DataFrame, decoder_layers: int = 0) -> ProfileFit:
    """Fit :class:`ProfileFit` to the rows of one (hardware, model, method) table.

    Args:
        table: the rows (tables without ``target_len`` or ``flops`` columns are read as
            encoder-only and without FLOP counts).
        decoder_layers: ``Ld`` of an encoder-decoder model (its config's
            ``num_decoder_layers``); 0 for encoder-only models.

    Raises:
        ScenarioError: the rows mix several tables, too few grid points to fit, or an
            encoder-decoder table (``target_len > 0``) without ``decoder_layers`` (or the
            reverse).
    """
    keys = table[["hardware", "model", "method", "num_blocks", "lora_rank"]].drop_duplicates()
    if len(keys) != 1:
        raise ScenarioError(
            f"a profile fit needs one table; got {len(keys)}: {keys.to_dict('records')}"
        )
    target_len = _single(table, "target_len")
    if (target_len > 0) != (decoder_layers > 0):
        raise ScenarioError(
            f"profile of {keys.iloc[0]['model']}: target_len {target_len} in the table but "
            f"{decoder_layers} decoder layers given; an encoder-decoder table needs both"
        )
    grid = table[["batch_size", "seq_len"]].drop_duplicates()
    tokens = grid["batch_size"] * grid["seq_len"]
    if len(grid) < 3 or tokens.nunique() < 2 or grid["seq_len"].nunique() < 2:
        raise ScenarioError(
            "a profile needs at least 3 (batch, seq_len) points with 2 sequence lengths and "
            f"2 token counts to fit; got {len(grid)}"
        )
    if decoder_layers > 0 and (len(grid) < 4 or grid["batch_size"].nunique() < 2):
        raise ScenarioError(
            "an encoder-decoder profile needs at least 4 (batch, seq_len) points with 2 batch "
            f"sizes and 2 sequence lengths to fit; got {len(grid)}"
        )
    key = keys.iloc[0]
    n, b, s = table["block"], table["batch_size"], table["seq_len"]
    if decoder_layers > 0:
        x = seq2seq_features(n, b, s, decoder_layers)
    else:
        x = profile_features(n, b, s)
    t = table["compute_s"].to_numpy(float)
    m = table["peak_memory_bytes"].to_numpy(float)
    for col, y in (("compute_s", t), ("peak_memory_bytes", m)):
        if not np.all(np.isfinite(y) & (y > 0)):  # the fit weighs relative errors: 1/y
            raise ScenarioError(
                f"profile of {key['model']} {key['method']}: column {col} must be positive "
                f"and finite in every row to fit (got {y[~(np.isfinite(y) & (y > 0))][0]:g})"
            )
    time_coef, memory_coef = _fit_relative_nnls(x, t), _fit_relative_nnls(x, m)
    flops_coef = flops_residuals = None
    if "flops" in table.columns:
        f = table["flops"].to_numpy(float)
        if np.all(np.isfinite(f) & (f > 0)):
            xf = flops_features(n, b, s, decoder_layers)
            flops_coef = _fit_relative_lstsq(xf, f)
            if flops_coef is not None:
                flops_residuals = xf @ flops_coef / f - 1.0
    n_blocks = int(key["num_blocks"])
    params = table.groupby("block")["trainable_params"].max()
    return ProfileFit(
        hardware=str(key["hardware"]),
        model=str(key["model"]),
        method=str(key["method"]),
        num_blocks=n_blocks,
        lora_rank=int(key["lora_rank"]),
        time_coef=time_coef,
        memory_coef=memory_coef,
        trainable_params=params.reindex(range(1, n_blocks + 1)).to_numpy(float),
        time_residuals=x @ time_coef / t - 1.0,
        memory_residuals=x @ memory_coef / m - 1.0,
        decoder_layers=decoder_layers,
        target_len=target_len,
        flops_coef=flops_coef,
        flops_residuals=flops_residuals,
    )


@dataclass(frozen=True, eq=False)
class ProfiledCostModel:
    """Costs from measured profiles: the default cost model (README "Calibration").

    Each hardware class names a profile table (:func:`desim.io.files.load_profile`). For a workload
    the rows of its model and method are fitted once (:func:`fit_profile`) and the fit answers
    any batch and sequence length. Compute seconds are at speed factor 1; the engine divides
    by each device's speed factor and timeline factor. Upload bits follow the method's rule
    (:func:`upload_bits`) on the block's measured trainable values. FLOPs come from the
    table's ``flops`` column (torch's FLOP counter) when every row has one, else from
    :func:`analytic_flops` (``BlockCosts.flops_source`` says which).

    Attributes:
        profiles: hardware class → profile table.
        fallback: prices classes or workloads without profile rows (``None``: raise instead);
            its ``source`` is recorded, so a run says which model priced it.
        class_speed: hardware class → how many times faster the class runs than its profile
            (a class priced by another class's measurements); absent classes: 1.
    """

    profiles: Mapping[str, pd.DataFrame]
    fallback: CostModel | None = None
    class_speed: Mapping[str, float] = field(default_factory=dict)
    name: str = "profiled"
    _fits: dict[tuple[str, str, str, int], ProfileFit] = field(
        default_factory=dict, init=False, repr=False
    )

    def fit(self, hardware: str, model: str, method: str,
            decoder_layers: int = 0) -> ProfileFit | None:
        """The fit for ``hardware``, ``model`` and ``method``, or ``None`` without rows.

        ``decoder_layers`` is the model's ``Ld`` (0 for encoder-only models).
        """
        key = (hardware, model, method, decoder_layers)
        if key not in self._fits:
            table = self.profiles[hardware]
            rows = table[(table["model"] == model) & (table["method"] == method)]
            if rows.empty:
                return None
            self._fits[key] = fit_profile(rows, decoder_layers)
        return self._fits[key]

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return ``(N,)`` compute seconds, peak bytes, upload bits and FLOPs of every block.

        Raises:
            UnknownNameError: no profile for ``hardware`` or the workload, and no fallback.
            ScenarioError: the workload's block split, LoRA rank, adapter width or target
                length differs from the profile's.
        """
        cfg = workload.config
        fit = None
        if hardware in self.profiles:
            fit = self.fit(hardware, cfg.name, workload.method, cfg.num_decoder_layers)
        if fit is None:
            if self.fallback is not None:
                return self.fallback.block_costs(workload, hardware)
            if hardware not in self.profiles:
                raise UnknownNameError(
                    f"no profile for hardware class {hardware!r}; profiled classes: "
                    f"{', '.join(sorted(self.profiles))}"
                )
            table = self.profiles[hardware]
            have = sorted({f"{m}/{t}" for m, t in zip(table["model"], table["method"])})
            raise UnknownNameError(
                f"profile of {hardware!r} has no rows for {cfg.name}/{workload.method}; "
                f"it has: {', '.join(have)}"
            )
        self._check(fit, workload, hardware)
        n = np.arange(1, workload.num_blocks + 1)
        b, s = workload.batch_size, workload.seq_len
        flops = fit.flops(n, b, s)
        speed = float(self.class_speed.get(hardware, 1.0))
        source = f"{self.name}:{hardware}"
        if speed != 1.0:
            source = f"{self.name}:{fit.hardware} profile /{speed:g} for {hardware}"
        return BlockCosts(
            compute_s=fit.compute_s(n, b, s) / speed,
            memory_bytes=fit.memory_bytes(n, b, s),
            upload_bits=upload_bits(workload.method, fit.trainable_params,
                                    workload.gradient_bits),
            source=source,
            flops=analytic_flops(workload) if flops is None else flops,
            flops_source="analytic" if flops is None else "profiled",
        )

    @staticmethod
    def _check(fit: ProfileFit, workload: Workload, hardware: str) -> None:
        name = workload.config.name
        if workload.num_blocks != fit.num_blocks:
            raise ScenarioError(
                f"model.num_blocks: the {hardware!r} profile of {name} has one layer per "
                f"block ({fit.num_blocks} blocks), got {workload.num_blocks}; use "
                "cost.model = 'analytic' for other block splits"
            )
        if fit.lora_rank > 0 and workload.lora_rank != fit.lora_rank:
            raise ScenarioError(
                f"model.lora_rank: the {hardware!r} profile was measured at rank "
                f"{fit.lora_rank}, got {workload.lora_rank}"
            )
        rules = METHODS.get(workload.method)
        if rules is not None and rules.trains == "adapter":
            h = workload.config.hidden_size
            measured = (fit.trainable_params - h) / (2 * h + 1)  # S = 2ha + a + h per layer
            if not np.array_equal(measured, np.full(fit.num_blocks, workload.adapter_size)):
                raise ScenarioError(
                    f"model.adapter_size: the {hardware!r} profile of {name} was measured at "
                    f"adapter width {measured[0]:g}, got {workload.adapter_size}"
                )
        if fit.target_len > 0 and workload.target_len != fit.target_len:
            raise ScenarioError(
                f"model.target_len: the {hardware!r} profile of {name} was measured at "
                f"target length {fit.target_len}, got {workload.target_len}"
            )
