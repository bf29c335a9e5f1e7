"""Several blocks per device: what training a set of blocks in one backward pass costs.

A device that trains a set ``S`` of blocks (numbered from the output, DESIGN §2) runs one
forward pass, one backward pass from the loss down to the lowest layer of ``d = max S``, the
weight gradients of every block in ``S`` and an optimizer step on each. The backward pass to
``d`` already carries the activation gradient through every block above ``d``, so a block
``n ∈ S`` other than ``d`` adds only its weight-gradient products and its update:

- compute ``c(S) = w_d + Σ_{n ∈ S, n ≠ d} e_n`` (:attr:`BlockCosts.extra_compute_s` ``e``);
- memory ``m(S) = m_d + Σ_{n ∈ S, n ≠ d} x_n`` (:attr:`BlockCosts.extra_memory_bytes`
  ``x``): block ``n``'s gradients and optimizer state, and the activations its
  weight-gradient products keep (their inputs, which a frozen crossed layer does not keep);
- upload ``D(S) = Σ_{n ∈ S} D_n``.

:func:`set_cost` composes them. The extras come from counts on the layer graphs of
:mod:`desim.costs.flops`: :func:`extra_flops` (the products a crossed layer adds when its
values train, by autograd's rule), :func:`extra_activation_bytes`. Each cost model prices
them its way: the analytic model at its FLOP rate (:func:`analytic_extras`), the profiled one
from its measured table (:func:`profiled_extras`, :func:`derived_extra_compute_s`; docs:
Calibration, "Several blocks per device"). For encoder-only models the composition is exact
for the counted FLOPs (a test checks it against :func:`set_step_flops` on every set of a
small model); for an encoder-decoder model a decoder block above the lowest decoder layer is
counted as if the encoder output needed no grad, which overstates full fine-tuning's extra by
its cross-attention keys' and values' backward when ``d`` lies in the encoder
(:func:`_extra_layers`). Pure: no torch, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

from desim.costs.base import BlockCosts, Workload
from desim.costs.flops import LayerMethod, Op, Product, count_graph, head_graph, layer_graph
from desim.costs.methods import METHODS, method_rules, trainable_values
from desim.costs.roofline import _Shapes
from desim.costs.transformer import LayerKind
from desim.errors import ScenarioError

#: bytes a training block adds per trainable value besides the value itself: an fp32 gradient
#: and AdamW's two fp32 moments (the value is resident whether or not it trains)
STATE_BYTES_PER_VALUE = 12.0
_PREFIX = {"lora": "lora.", "full": "w.", "adapter": "adapter.", "ia3": "ia3."}
_PARAMS = ("w.", "lora.", "adapter.", "ia3.", "head.")


class SetCost(NamedTuple):
    """What a device training a set of blocks in one backward pass costs.

    Attributes:
        compute_s: training-step seconds at speed factor 1.
        memory_bytes: peak bytes of the step.
        upload_bits: bits uploaded (every block's gradient).
    """

    compute_s: float
    memory_bytes: float
    upload_bits: float


def block_set(blocks: Iterable[int], num_blocks: int) -> np.ndarray:
    """The distinct 1-based block numbers of ``blocks``, ascending (checked against ``N``).

    Raises:
        ScenarioError: an empty set, or a block outside ``1..num_blocks``.
    """
    idx = np.unique(np.fromiter((int(n) for n in blocks), dtype=np.int64))
    if idx.size == 0 or idx[0] < 1 or idx[-1] > num_blocks:
        raise ScenarioError(f"a block set needs blocks in 1..{num_blocks}; got {idx.tolist()}")
    return idx


def set_cost(costs: BlockCosts, blocks: Iterable[int]) -> SetCost:
    """Compute seconds, peak bytes and upload bits of training ``blocks`` in one pass.

    Args:
        costs: the per-block costs (``(N,)`` arrays) of one hardware class.
        blocks: **1-based** block numbers (block 1 next to the output), in any order.

    Returns:
        ``c(S) = w_d + Σ e_n``, ``m(S) = m_d + Σ x_n`` (sums over ``S`` less its deepest block
        ``d``) and ``D(S) = Σ D_n``. A set of one block ``{n}`` costs exactly ``w_n``, ``m_n``,
        ``D_n``.

    Raises:
        ScenarioError: an empty set or a block outside ``1..N``.
    """
    idx = block_set(blocks, len(costs.compute_s)) - 1
    d, others = idx[-1], idx[:-1]
    compute = costs.compute_s[d] + costs.extra_compute_s[others].sum()
    memory = costs.memory_bytes[d] + costs.extra_memory_bytes[others].sum()
    return SetCost(float(compute), float(memory), float(costs.upload_bits[idx].sum()))


def _layer_method(workload: Workload) -> LayerMethod:
    trains = method_rules(workload.method).trains
    return LayerMethod(rank=workload.lora_rank if trains == "lora" else 0,
                       adapter_size=workload.adapter_size if trains == "adapter" else 0,
                       ia3=trains == "ia3")


def _graphs(workload: Workload) -> dict[str, tuple[Op, ...]]:
    cfg, b, s, t = workload.config, workload.batch_size, workload.seq_len, workload.decoder_len
    method = _layer_method(workload)
    return {k: layer_graph(cfg, k, b, s, t, method=method) for k in ("encoder", "decoder")}


def set_step_flops(workload: Workload, blocks: Iterable[int]) -> float:
    """Counted FLOPs of one training step of the set ``blocks`` (1-based), counted directly.

    The layer graphs are walked as :func:`desim.costs.flops.step_flops` walks them, with every
    layer of every block in the set trainable; with checkpointing the crossed layers' forward
    is recomputed, and a MeZO step is two forward passes. For ``{n}`` this is
    :func:`desim.costs.analytic.analytic_flops` of block ``n``.
    """
    cfg, rules = workload.config, method_rules(workload.method)
    idx = block_set(blocks, workload.num_blocks) - 1
    per_block = workload.layers_per_block
    trained = {int(n) * per_block + j for n in idx for j in range(per_block)}
    graphs, kinds = _graphs(workload), cfg.layer_kinds()
    trains = rules.trains
    fwd = bwd = rec = 0.0
    enc_grad = top = False
    for kind in ("encoder", "decoder"):
        order = [j for j in range(cfg.num_layers - 1, -1, -1) if kinds[j] == kind]
        if not order:
            continue
        flag = False  # each stack starts from frozen embeddings
        for j in order:
            f, bw, flag = count_graph(graphs[kinds[j]],
                                      {"x": flag, "enc": enc_grad and kinds[j] == "decoder"},
                                      trains if j in trained else None)
            fwd, bwd, rec = fwd + f, bwd + bw, rec + (f if flag else 0.0)
        enc_grad = top = flag
    f, bw, _ = count_graph(head_graph(cfg, workload.batch_size, workload.decoder_len),
                           {"x": top}, None)
    forward, backward = 2.0 * (fwd + f), 2.0 * (bwd + bw)
    if not rules.backward:
        return 2.0 * forward
    return forward + backward + (2.0 * rec if rules.checkpoint else 0.0)


def _extra_layers(workload: Workload) -> list[tuple[int, LayerKind, dict[str, bool]]]:
    """Each layer's block index, kind and input grad flags when its block trains above ``d``.

    A block above the set's deepest block ``d`` is crossed, so its layers' inputs require
    grad, except the lowest decoder layer's (it reads the frozen decoder embeddings). The
    encoder output requires grad when ``d`` lies in the encoder, which is certain for the
    block holding the lowest decoder layer (no decoder block lies below it); the decoder
    blocks above it are counted with a frozen encoder output, as when ``d`` lies in the
    decoder (for full fine-tuning the larger count, for LoRA the same).
    """
    cfg = workload.config
    per_block, lowest_decoder = workload.layers_per_block, cfg.num_decoder_layers - 1
    out: list[tuple[int, LayerKind, dict[str, bool]]] = []
    for j, kind in enumerate(cfg.layer_kinds()):
        block = j // per_block
        enc = kind == "decoder" and block >= lowest_decoder // per_block
        out.append((block, kind, {"x": j != lowest_decoder, "enc": enc}))
    return out


def extra_flops(workload: Workload) -> np.ndarray:
    """``(N,)`` FLOPs block ``n`` adds to a step when it trains above the set's deepest block.

    For each of its layers: the backward FLOPs of the crossed layer with its values trainable
    less those with them frozen, by autograd's rule (:func:`desim.costs.flops.count_graph`).
    The input gradient flows through either way, so that is the weight-gradient products,
    ``2·m·k·n`` each (the grad flags: :func:`_extra_layers`). Zero for MeZO (no backward
    pass).
    """
    rules = method_rules(workload.method)
    out = np.zeros(workload.num_blocks)
    if not rules.backward:
        return out
    graphs = _graphs(workload)
    for block, kind, grad_in in _extra_layers(workload):
        trained = count_graph(graphs[kind], grad_in, rules.trains)[1]
        out[block] += 2.0 * (trained - count_graph(graphs[kind], grad_in, None)[1])
    return out


def _saved_by_training(ops: tuple[Op, ...], shapes: _Shapes, prefix: str,
                       size_in: Mapping[str, float]) -> float:
    """Values a crossed layer keeps for its weight gradients when its ``prefix`` values train.

    A product with a trained parameter keeps its activation operand; an element-wise op with
    a trained IA3 vector keeps its activation inputs. Each tensor counts once. A frozen
    crossed layer keeps none of them (its products need only the frozen weights for the
    input gradient). RoBERTa's layer norm keeps its input whether or not its weights train;
    T5's RMS norm (``w · x/rms(x)``) keeps ``x/rms(x)`` for its weight's gradient.
    """
    cfg = shapes.cfg
    size, kept = dict(size_in), {}
    for op in ops:
        if isinstance(op, Product) and op.right.startswith(_PARAMS):
            k, n, _ = shapes.matrix(op.right)
            size[op.out] = op.macs / k  # rows · n
            if op.right.startswith(prefix):
                kept[op.left] = size[op.left]
        elif isinstance(op, Product):  # attention: one s×s map per head, then the query's shape
            scores = op.out.endswith(".scores")
            size[op.out] = (cfg.num_attention_heads * op.macs / cfg.inner_size if scores
                            else size[op.out[:-3] + "q"])
        else:
            acts = [x for x in op.inputs if not x.startswith(_PARAMS)]
            size[op.out] = size[acts[0]]
            if prefix == "ia3." and any(x.startswith(prefix) for x in op.inputs):
                kept.update({x: size[x] for x in acts})
            elif cfg.is_seq2seq and any(x.startswith(prefix) for x in op.inputs):
                kept[op.out + ".normed"] = size[op.out]  # T5's RMS norm keeps x/rms(x)
    return float(sum(kept.values()))


def extra_activation_bytes(workload: Workload) -> np.ndarray:
    """``(N,)`` activation bytes block ``n``'s weight gradients keep when it trains above ``d``.

    fp32 (4 bytes a value) of :func:`_saved_by_training` over the block's layers: for RoBERTa
    full fine-tuning ``4·b·s·(3h + f)`` a layer (the inputs of the query/key/value, output,
    intermediate and output maps), for LoRA ``4·b·s·(h + 2r)`` (the input of the ``A``
    factors, shared, and each ``A``'s output). Zero for MeZO and for gradient checkpointing
    (a crossed layer's activations live only while it is recomputed). This equals the
    profiler's saved-tensor count for RoBERTa with every method and for T5 adapters; for T5's
    other methods it misses what the lowest decoder layer's self-attention keeps once it
    trains (its input needs no grad otherwise) and the cross-attention maps that depend on
    where ``d`` lies: on flan-t5-small at ``8×128`` a set's peak is off by 0.9% at most.
    """
    rules = method_rules(workload.method)
    if not rules.backward or rules.checkpoint:
        return np.zeros(workload.num_blocks)
    cfg, b, s, t = workload.config, workload.batch_size, workload.seq_len, workload.decoder_len
    shapes = _Shapes(cfg, workload.lora_rank, workload.adapter_size)
    h = cfg.hidden_size
    sizes = {"encoder": {"x": b * s * h}, "decoder": {"x": b * t * h, "enc": b * s * h}}
    graphs, out = _graphs(workload), np.zeros(workload.num_blocks)
    for block, kind, _ in _extra_layers(workload):
        out[block] += 4.0 * _saved_by_training(graphs[kind], shapes, _PREFIX[rules.trains],
                                               sizes[kind])
    return out


def analytic_extras(workload: Workload, flops_per_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` extra seconds and bytes of block ``n`` in a set, by counts (the analytic model).

    Seconds: :func:`extra_flops` at ``flops_per_s`` (the analytic model counts no optimizer
    time). Bytes: :data:`STATE_BYTES_PER_VALUE` per trainable value (none for MeZO, which
    keeps no gradients or moments) plus :func:`extra_activation_bytes`.
    """
    state = STATE_BYTES_PER_VALUE if method_rules(workload.method).backward else 0.0
    memory = state * trainable_values(workload) + extra_activation_bytes(workload)
    return extra_flops(workload) / flops_per_s, memory


def derived_extra_compute_s(compute_s: np.ndarray, flops: np.ndarray, step_s: np.ndarray,
                            weight_flops: np.ndarray) -> np.ndarray:
    """``(N,)`` extra seconds of block ``n`` in a set, from single-block costs at one point.

    ``e_n = step_n + r · F^w_n``: block ``n``'s measured optimizer step plus its
    weight-gradient FLOPs ``F^w_n`` (:func:`extra_flops`) at the backward pass's measured
    seconds per FLOP ``r``, the least-squares slope of ``w_n`` on the counted FLOPs ``F_n``
    over the depths: what one more crossed layer costs per counted FLOP, element-wise work
    included (docs: Calibration, "Several blocks per device"). ``r = 0`` where the FLOPs do
    not grow with depth (MeZO).

    Args:
        compute_s: ``(N,)`` step seconds ``w_n``.
        flops: ``(N,)`` counted FLOPs ``F_n`` of the same steps.
        step_s: ``(N,)`` optimizer-step seconds of each block (a MeZO step's update).
        weight_flops: ``(N,)`` ``F^w_n``.
    """
    f, w = np.asarray(flops, float), np.asarray(compute_s, float)
    rate = 0.0
    if f.size > 1 and np.ptp(f) > 0:
        df = f - f.mean()
        rate = max(float(df @ (w - w.mean()) / (df @ df)), 0.0)
    return np.asarray(step_s, float) + rate * np.asarray(weight_flops, float)


def profiled_extras(workload: Workload, rows: Any, compute_s: np.ndarray,
                    flops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` extra seconds and bytes of block ``n`` in a set, from a measured profile.

    Seconds: :func:`derived_extra_compute_s` of the fitted ``compute_s`` and the counted
    ``flops`` at the workload's point, with each block's median measured ``step_s`` over the
    table (an optimizer step does not depend on the batch). Bytes: the block's measured
    ``grad_bytes`` and ``optimizer_bytes`` (the table's largest) plus
    :func:`extra_activation_bytes`, which equals the saved-tensor accounting of the profiler
    (a test checks it on a small model). A method without rules (a measured-only table)
    gets no weight-gradient or activation term.

    Args:
        workload: what is priced.
        rows: the profile rows of its model and method (a DataFrame with ``block``,
            ``step_s``, ``grad_bytes``, ``optimizer_bytes``).
        compute_s: ``(N,)`` fitted step seconds at the workload's point.
        flops: ``(N,)`` counted FLOPs there.
    """
    blocks = range(1, workload.num_blocks + 1)
    by_block = rows.groupby("block")

    def per_block(col: str, how: str) -> np.ndarray:
        if col not in rows.columns:
            return np.zeros(workload.num_blocks)
        values = getattr(by_block[col], how)().reindex(blocks)
        return values.fillna(0.0).to_numpy(float)

    known = workload.method in METHODS
    weight = extra_flops(workload) if known else np.zeros(workload.num_blocks)
    act = extra_activation_bytes(workload) if known else np.zeros(workload.num_blocks)
    seconds = derived_extra_compute_s(compute_s, flops, per_block("step_s", "median"), weight)
    state = per_block("grad_bytes", "max") + per_block("optimizer_bytes", "max")
    return seconds, state + act
