"""Roofline transfer of a block's step time from one machine to another.

A training step of block ``n`` does ``F_n`` FLOPs (:func:`desim.costs.analytic.analytic_flops`)
and moves at least ``B_n`` bytes between DRAM and the chip (:func:`step_bytes_moved`). On a
machine with peak ``P`` FLOP/s, memory bandwidth ``W`` bytes/s and efficiencies ``η_c``,
``η_m`` the roofline bound of its time is

``T_n = max(F_n / (η_c·P), B_n / (η_m·W))``  (:func:`roofline_time_s`),

and a time measured on a source machine transfers to a target as ``t_tgt = t_src / speed_n``
with ``speed_n = T_n(source) / T_n(target)`` (:func:`transfer_speed`). The maximum, not the sum:
the classic roofline assumes compute and memory traffic overlap, so the slower resource sets
the time.

The byte count is a **lower bound**: the fp32 tensors of the layer graphs
(:mod:`desim.costs.flops`), each read or written once; caches and the re-reads of tiled matrix
products are ignored. Docs: ``docs/transfer.md``. Pure: numpy only, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import numpy as np

from desim.costs.base import Workload
from desim.costs.flops import LayerMethod, Merge, Op, Product, head_graph, layer_graph
from desim.costs.methods import method_rules, trainable_values
from desim.costs.transformer import CLASSIFIER_LABELS, LayerKind, TransformerConfig
from desim.errors import InputError, ScenarioError

FP32_BYTES = 4.0
#: AdamW touches every trainable value 7 times: reads weight, gradient, m, v; writes weight, m, v
ADAMW_ACCESSES = 7
#: methods the byte count covers (not modelled: QLoRA's dequantisation, MeZO's perturbations)
ROOFLINE_METHODS = ("lora", "full", "lora-checkpoint", "adapter", "ia3")
_PARAMS = ("w.", "lora.", "adapter.", "ia3.", "head.")
_PREFIX = {"lora": "lora.", "full": "w.", "adapter": "adapter.", "ia3": "ia3."}


@dataclass(frozen=True)
class Machine:
    """A machine's nominal peaks and the fractions of them a training step sustains.

    Sustained throughput is peak × efficiency: ``compute_efficiency · peak_flops_per_s`` and
    ``memory_efficiency · memory_bytes_per_s``.

    Attributes:
        name: the machine's name (a hardware class).
        peak_flops_per_s: nominal fp32 peak ``P`` (FLOP/s).
        memory_bytes_per_s: nominal DRAM bandwidth ``W`` (bytes/s).
        compute_efficiency: ``η_c`` in ``(0, 1]``.
        memory_efficiency: ``η_m`` in ``(0, 1]``.
    """

    name: str
    peak_flops_per_s: float
    memory_bytes_per_s: float
    compute_efficiency: float = 1.0
    memory_efficiency: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self)[1:]:
            value, share = getattr(self, f.name), f.name.endswith("efficiency")
            ok = isinstance(value, int | float) and np.isfinite(value) and value > 0
            if not ok or (share and value > 1):
                want = "a number in (0, 1]" if share else "a positive finite number"
                raise ScenarioError(f"machine {self.name!r}: {f.name}: expected {want}, "
                                    f"got {value!r}")

    def ridge_flops_per_byte(self, sustained: bool = False) -> float:
        """Ridge point ``P / W`` (or ``η_c·P / (η_m·W)``) in FLOP/byte: above, compute bound."""
        ratio = self.compute_efficiency / self.memory_efficiency if sustained else 1.0
        return ratio * self.peak_flops_per_s / self.memory_bytes_per_s


MACHINES: dict[str, Machine] = {
    # One core of the profiling VM's AMD EPYC. Peak as in desim/costs/energy.py: 2 FMA pipes
    # x 16 fp32 lanes x 2 FLOP x 3 GHz (assumed; energy.py says family 26 = Zen 5, but this
    # VM's /proc/cpuinfo says family 25 model 17, 2.6 GHz TSC: unverified). Bandwidth measured
    # once on the idle VM: read+written bytes of a 512 MiB float64 copy, best of 6, 2.595e10:
    #   (ulimit -v 8000000; OMP_NUM_THREADS=1 python -c "import time, numpy as np
    #   src = np.ones(2**26); dst = np.empty_like(src)
    #   best = min((lambda t0: (np.copyto(dst, src), time.perf_counter() - t0)[1])(
    #       time.perf_counter()) for _ in range(6)); print(2 * src.nbytes / best)")
    "cpu-reference": Machine("cpu-reference", 1.92e11, 2.595e10),
    # The same VM, 2 threads on its 2 physical cores (lscpu: 1 thread per core, 2 cores, 1
    # socket, 32 MiB L3). Bandwidth: that copy in 2 processes started at one instant, 6 copies
    # each (script in docs/transfer.md): 12 x 2^30 B / 0.405 s (the slower) = 3.18e10 B/s
    "cpu-reference-2t": Machine("cpu-reference-2t", 2 * 1.92e11, 3.18e10),
    # Jetson AGX Orin 64GB: GPU fp32 peak 2048 CUDA cores x 2 x 1.3 GHz (energy.py); LPDDR5
    # 204.8 GB/s (NVIDIA's Jetson AGX Orin data sheet). Efficiencies are assumptions: 20% of
    # the fp32 peak (jetson-flan-t5-small.toml), 70% of the bandwidth. A prediction until
    # someone measures an Orin.
    "jetson-agx-orin": Machine("jetson-agx-orin", 5.3e12, 204.8e9, 0.2, 0.7),
}


@dataclass(frozen=True, eq=False)
class StepBytes:
    """Compulsory DRAM bytes of one training step of block ``n``, by term; ``(N,)`` each.

    Attributes:
        forward_weights: every layer and head weight (biases, norm weights) read once.
        forward_activations: every op's activation inputs read and output written once, and
            the embeddings (gathered rows read, not the whole table; the output written).
        recompute: ``lora-checkpoint``: the crossed layers' forward traffic again (else 0).
        backward_weights: the crossed layers' weights read again for input gradients.
        saved_activations: saved activations read for weight gradients, the other operand of
            an activation-by-activation product, and nonlinear element-wise backward.
        activation_gradients: each op's output gradient read and its inputs' gradients
            written (accumulation in place), the loss reading the logits, writing their grad.
        weight_gradients: the trained block's weight gradients written (``4·S_n``).
        optimizer: the AdamW step (``7·4·S_n``, :data:`ADAMW_ACCESSES`).
    """

    forward_weights: np.ndarray
    forward_activations: np.ndarray
    recompute: np.ndarray
    backward_weights: np.ndarray
    saved_activations: np.ndarray
    activation_gradients: np.ndarray
    weight_gradients: np.ndarray
    optimizer: np.ndarray

    @property
    def total(self) -> np.ndarray:
        """``(N,)`` the sum of all terms (bytes)."""
        return np.sum([getattr(self, f.name) for f in fields(self)], axis=0)


# indices of a graph's tally (values, not bytes): the StepBytes terms less recompute, optimizer
_FW, _FA, _BW, _SA, _AG, _WG = range(6)


@dataclass(frozen=True)
class _Shapes:
    """Shapes of a model's parameters, by their names in the layer graphs."""

    cfg: TransformerConfig
    rank: int
    adapter_size: int

    def linear(self, name: str) -> tuple[int, int]:
        """``(d_in, d_out)`` of a linear map (``sa.q``, ``ca.o``, ``wi0``, ``wo``...)."""
        h, i, f = self.cfg.hidden_size, self.cfg.inner_size, self.cfg.intermediate_size
        return {"q": (h, i), "k": (h, i), "v": (h, i), "o": (i, h), "wi0": (h, f),
                "wi1": (h, f), "wo": (f, h)}[name.rsplit(".", 1)[-1]]

    def matrix(self, name: str) -> tuple[int, int, int]:
        """``(k, n, bias)`` of a product's parameter operand (RoBERTa's maps have biases)."""
        cfg, h = self.cfg, self.cfg.hidden_size
        bias = not cfg.is_seq2seq
        if name.startswith("lora."):
            d_in, d_out = self.linear(name[5:-2])
            return (d_in, self.rank, 0) if name.endswith(".a") else (self.rank, d_out, 0)
        if name.startswith("adapter."):  # biased in every model (layer_adapter_values)
            a = self.adapter_size
            return (h, a, a) if name.endswith("down") else (a, h, h)
        if name.startswith("head."):
            n = {"head.dense": h, "head.out": CLASSIFIER_LABELS, "head.lm": cfg.vocab_size}[name]
            return h, n, n * (bias and name != "head.lm")
        d_in, d_out = self.linear(name[2:])
        return d_in, d_out, d_out * bias

    def vector(self, name: str, out: str) -> int:
        """Values of an element-wise parameter: a norm's weights, an IA3 scaling vector."""
        if name.startswith("w.ln"):
            return self.cfg.hidden_size * (1 if self.cfg.is_seq2seq else 2)
        d_in, d_out = self.linear(name[4:])
        return d_in if out.endswith(".in") else d_out


def _graph_values(ops: tuple[Op, ...], shapes: _Shapes, sizes_in: Mapping[str, float],
                  grad_in: Mapping[str, bool], prefix: str | None) -> tuple[np.ndarray, bool]:
    """The ``(6,)`` tally of values a graph moves, and whether its output needs grad.

    ``sizes_in``: values of the inputs (``x``, ``enc``); ``grad_in``: which require grad;
    ``prefix``: the trainable parameters' prefix when the layer trains, else ``None``.
    """
    size, needs, t = {**sizes_in}, {**grad_in}, np.zeros(6)

    def grad(name: str) -> bool:
        if name.startswith(_PARAMS):
            return prefix is not None and name.startswith(prefix)
        return needs.get(name, False)

    cfg = shapes.cfg
    for op in ops:
        if isinstance(op, Product):
            if op.right.startswith(_PARAMS):
                k, n, bias = shapes.matrix(op.right)
                rows = op.macs / (k * n)
                left, right, out, biases = rows * k, float(k * n), rows * n, float(bias)
                t[_FW] += right + biases
            else:  # attention: scores (one s×s map per head), context (the query's shape)
                left, right, biases = size[op.left], size[op.right], 0.0
                scores = op.out.endswith(".scores")
                out = (cfg.num_attention_heads * op.macs / cfg.inner_size if scores
                       else size[op.out[:-3] + "q"])
                t[_FA] += right
            size[op.out] = out
            t[_FA] += left + out
            a, c, weight = grad(op.left), grad(op.right), op.right.startswith(_PARAMS)
            needs[op.out] = a or c
            t[_AG] += out * (a or c)  # the output gradient read
            if a:  # input gradient: read the other operand, write the gradient
                t[_BW if weight else _SA] += right
                t[_AG] += left
            if c:  # weight (or key) gradient: read the saved left operand, write the gradient
                t[_SA] += left
                t[_WG if weight else _AG] += right + biases
            continue
        _merge_values(op, shapes, size, needs, grad, t)
    return t, needs.get("y", needs.get("logits", False))


def _merge_values(op: Merge, shapes: _Shapes, size: dict[str, float],
                  needs: dict[str, bool], grad: Callable[[str], bool], t: np.ndarray) -> None:
    """Tally an element-wise op; a sum needs no saved input, a norm or activation does."""
    acts = [x for x in op.inputs if not x.startswith(_PARAMS)]
    pars = {p: float(shapes.vector(p, op.out)) for p in op.inputs if p.startswith(_PARAMS)}
    flags = {x: grad(x) for x in op.inputs}
    size[op.out] = size[acts[0]]
    needs[op.out] = any(flags.values())
    if op.out == "y" and len(op.inputs) == 1:  # T5's layer output: a name, not an op
        return
    t[_FW] += sum(pars.values())
    t[_FA] += sum(size[x] for x in acts) + size[op.out]
    if not needs[op.out]:
        return
    t[_AG] += size[op.out] + sum(size[x] for x in acts if flags[x])
    if len(acts) == 1 or pars:
        t[_SA] += sum(size[x] for x in acts)
        t[_BW] += sum(pars.values())
    t[_WG] += sum(v for p, v in pars.items() if flags[p])


def step_bytes(workload: Workload) -> StepBytes:
    """Compulsory DRAM bytes of one training step of every block, term by term.

    Walks the layer graphs of :func:`desim.costs.flops.layer_graph` in the order of
    :func:`desim.costs.flops.step_flops` (each stack from its frozen embeddings, trained block
    ``n``'s layers trainable), so a layer's backward runs exactly where autograd's runs. Sizes
    follow from each product's multiply-accumulates and its parameter's shape; softmax, scaling
    and dropout are fused into the attention products (uncounted), T5's relative-position
    tables and RoBERTa's position embeddings and embedding norm are left out. fp32 throughout.

    Raises:
        ScenarioError: the method is not one of :data:`ROOFLINE_METHODS`.
    """
    if workload.method not in ROOFLINE_METHODS:
        raise ScenarioError(f"model.method: the roofline byte count does not model "
                            f"{workload.method!r}; supported: {', '.join(ROOFLINE_METHODS)}")
    cfg, b, s, t = workload.config, workload.batch_size, workload.seq_len, workload.decoder_len
    tally, recompute = _layer_tallies(workload)
    logits = b * (t * cfg.vocab_size if cfg.is_seq2seq else CLASSIFIER_LABELS)
    tally[:, _FA] += 2.0 * b * (s + t) * cfg.hidden_size  # embeddings: rows read, output written
    tally[:, _AG] += 2.0 * logits  # the loss reads the logits and writes their gradient
    v = FP32_BYTES * tally.T
    optimizer = ADAMW_ACCESSES * FP32_BYTES * trainable_values(workload)
    return StepBytes(v[_FW], v[_FA], FP32_BYTES * recompute, v[_BW], v[_SA], v[_AG], v[_WG],
                     optimizer)


def _layer_tallies(workload: Workload) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 6)`` tallies of the layers and head, and ``(N,)`` recomputed values (checkpoint)."""
    rules = method_rules(workload.method)
    cfg, b, s, t = workload.config, workload.batch_size, workload.seq_len, workload.decoder_len
    h, num_blocks = cfg.hidden_size, workload.num_blocks
    shapes = _Shapes(cfg, workload.lora_rank, workload.adapter_size)
    method = LayerMethod(rank=workload.lora_rank if rules.trains == "lora" else 0,
                         adapter_size=workload.adapter_size if rules.trains == "adapter" else 0,
                         ia3=rules.trains == "ia3")
    graphs = {k: layer_graph(cfg, k, b, s, t, method=method) for k in ("encoder", "decoder")}
    sizes = {"encoder": {"x": b * s * h}, "decoder": {"x": b * t * h, "enc": b * s * h}}
    cache: dict[tuple[LayerKind, bool, bool, bool], tuple[np.ndarray, bool]] = {}

    def layer(kind: LayerKind, x: bool, enc: bool, trained: bool) -> tuple[np.ndarray, bool]:
        key = (kind, x, enc and kind == "decoder", trained)
        if key not in cache:
            cache[key] = _graph_values(graphs[kind], shapes, sizes[kind],
                                       {"x": x, "enc": key[2]},
                                       _PREFIX[rules.trains] if trained else None)
        return cache[key]

    kinds, per_block = cfg.layer_kinds(), workload.layers_per_block
    orders = [[j for j in range(cfg.num_layers - 1, -1, -1) if kinds[j] == kind]
              for kind in ("encoder", "decoder")]
    head = head_graph(cfg, b, t)
    tally, recompute = np.zeros((num_blocks, 6)), np.zeros(num_blocks)
    for n in range(num_blocks):
        lo, hi = n * per_block, (n + 1) * per_block
        enc_grad = top = False
        for order in orders:
            if not order:
                continue
            flag = False  # each stack starts from frozen embeddings
            for j in order:
                v, flag = layer(kinds[j], flag, enc_grad, lo <= j < hi)
                tally[n] += v
                recompute[n] += (v[_FW] + v[_FA]) * (flag and rules.checkpoint)
            enc_grad = top = flag  # the head reads the last stack's output
        tally[n] += _graph_values(head, shapes, {"x": b * (t or s) * h}, {"x": top}, None)[0]
    return tally, recompute


def step_bytes_moved(workload: Workload) -> np.ndarray:
    """``(N,)`` compulsory DRAM bytes of one training step of block ``n`` (a lower bound).

    The sum of the terms of :func:`step_bytes`: forward weights and activations, the crossed
    layers' backward (weights read again, saved activations read, activation gradients
    written and read), the trained block's weight gradients and its AdamW step. Non-decreasing
    in ``n`` for identical layers (RoBERTa); it also holds for the shipped FLAN-T5 configs
    (checked at ``b = 8, s = 128, t = 32``).

    Raises:
        ScenarioError: the method is not one of :data:`ROOFLINE_METHODS`.
    """
    return step_bytes(workload).total


def _checked(name: str, x: np.ndarray | float, positive: bool = False) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0 if positive else arr < 0):
        raise InputError(f"{name}: expected finite values {'>' if positive else '>='} 0")
    return arr


def roofline_time_s(flops: np.ndarray, bytes_moved: np.ndarray, machine: Machine) -> np.ndarray:
    """Roofline seconds of each step: ``max(F / (η_c·P), B / (η_m·W))`` elementwise.

    The maximum, not the sum: the classic roofline bound (compute and memory traffic overlap).

    Args:
        flops: FLOPs of each step (any shape, e.g. ``(N,)``).
        bytes_moved: DRAM bytes of each step (broadcast against ``flops``).
        machine: the machine.

    Returns:
        Seconds, in the inputs' broadcast shape.

    Raises:
        InputError: a negative or non-finite input.
    """
    f, bm = _checked("flops", flops), _checked("bytes_moved", bytes_moved)
    compute = f / (machine.peak_flops_per_s * machine.compute_efficiency)
    memory = bm / (machine.memory_bytes_per_s * machine.memory_efficiency)
    return np.maximum(compute, memory)


def transfer_speed(flops: np.ndarray, bytes_moved: np.ndarray, source: Machine,
                   target: Machine) -> np.ndarray:
    """``roofline_time_s(source) / roofline_time_s(target)``: how many times faster a step runs.

    A time ``t_src`` measured on ``source`` predicts ``t_tgt = t_src / speed`` on ``target``.

    Args:
        flops: FLOPs of each step, e.g. ``(N,)``.
        bytes_moved: DRAM bytes of each step (:func:`step_bytes_moved`).
        source: the machine the times were measured on.
        target: the machine to predict.

    Raises:
        InputError: a negative or non-finite input, or a step of no FLOPs and no bytes.
    """
    src = roofline_time_s(flops, bytes_moved, source)
    if np.any(src == 0):
        raise InputError("flops, bytes_moved: a step with neither FLOPs nor bytes has no speed")
    return src / roofline_time_s(flops, bytes_moved, target)


def fit_compute_efficiency(flops: np.ndarray, measured_s: np.ndarray, machine: Machine) -> float:
    """The compute efficiency ``η_c`` that best explains measured times, compute bound assumed.

    The geometric mean of ``flops / (measured_s · peak_flops_per_s)`` (least squares in log
    time). A value above 1 means the machine's peak is understated.

    Args:
        flops: FLOPs of each measured step.
        measured_s: measured seconds of each step (the shape of ``flops``).
        machine: the machine measured (its peak is used, its efficiencies are not).

    Raises:
        InputError: empty, mismatched, non-positive or non-finite inputs.
    """
    f, m = _checked("flops", flops, True), _checked("measured_s", measured_s, True)
    if f.shape != m.shape or f.size == 0:
        raise InputError(f"flops, measured_s: expected equal non-empty shapes, got {f.shape} "
                         f"and {m.shape}")
    return float(np.exp(np.mean(np.log(f / (m * machine.peak_flops_per_s)))))


__all__ = [
    "ADAMW_ACCESSES", "MACHINES", "ROOFLINE_METHODS", "Machine", "StepBytes",
    "fit_compute_efficiency", "roofline_time_s", "step_bytes", "step_bytes_moved",
    "transfer_speed",
]
