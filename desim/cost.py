"""Cost models: what training block ``n`` costs in compute time, peak memory and upload bits.

DESIGN §2: blocks are numbered from the output (block 1 next to the classification head).
Training block ``n`` runs a full forward pass, backpropagates from the loss down to the lowest
layer of block ``n`` only, and computes weight gradients for block ``n`` alone. Hence compute and
memory are non-decreasing in ``n``.

:class:`ProfiledCostModel` (the default) prices a block from measured profiles
(``desim profile``; README "Calibration") through a fitted model of time and memory in depth,
batch and sequence length. :class:`AnalyticCostModel` prices a block from FLOP and byte counts
of a RoBERTa encoder layer (formulas in its docstring) and is the fallback for unprofiled
hardware or workloads; :class:`TableCostModel` returns given arrays (tests, custom costs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

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


# methods the analytic model prices; all but ``full`` train LoRA on query and value
ANALYTIC_METHODS = ("lora", "full", "lora-checkpoint", "qlora", "mezo")


def trainable_params_per_layer(cfg: TransformerConfig, method: str, lora_rank: int) -> int:
    """Trainable values in one layer: LoRA on query and value (``4·h·r``) or the full layer."""
    if method in ("lora", "lora-checkpoint", "qlora", "mezo"):
        return 2 * 2 * cfg.hidden_size * lora_rank
    if method == "full":
        return layer_params(cfg)
    raise UnknownNameError(
        f"model.method: unknown method {method!r}; known: {', '.join(ANALYTIC_METHODS)}"
    )


def analytic_costs(workload: Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N,)`` counted FLOPs, peak bytes and upload bits of block ``n`` by the method.

    The formulas are those of :class:`AnalyticCostModel` (its docstring) for ``lora`` and
    ``full``. The other methods, all on LoRA's trainable values:

    - ``lora-checkpoint``: gradient checkpointing at layer boundaries. The backward pass
      recomputes the forward of the ``nℓ`` crossed layers (``+nℓ·F``). Only each crossed layer's
      input is kept (``4bsh`` bytes), plus one layer's full activations while it recomputes.
    - ``qlora``: an **estimate**, not a measurement: frozen weights in 4-bit NF4 with an fp32
      scale per 64 values (``0.5625`` bytes per parameter). Compute is counted as for LoRA; the
      dequantisation cost is not modelled.
    - ``mezo``: zeroth-order (MeZO). Two forward passes and no backward (``2·L·F``, the same at
      every depth). The memory is the weights, the trainable values (no gradients or moments),
      and one layer's activations. The upload is one projected-gradient scalar per block (the
      perturbation is regenerated from a shared seed).
    """
    cfg = workload.config
    b, s = workload.batch_size, workload.seq_len
    h, f, a = cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads
    L, ell = cfg.num_hidden_layers, workload.layers_per_block
    n = np.arange(1, workload.num_blocks + 1, dtype=float)
    method = workload.method
    layer_fwd = 2.0 * b * s * (4 * h * h + 2 * h * f) + 4.0 * b * s * s * h
    s_layer = trainable_params_per_layer(cfg, method, workload.lora_rank)
    trainable = float(s_layer * ell)
    params = cfg.vocab_size * h + cfg.max_position_embeddings * h + L * layer_params(cfg)
    act_layer = 4.0 * (17.0 * b * s * h + 2.5 * a * b * s * s)
    bits = np.full(workload.num_blocks, trainable * workload.gradient_bits)
    if method == "mezo":
        flops = np.full(n.shape, 2.0 * L * layer_fwd)
        memory = np.full(n.shape, 4.0 * params + act_layer + 4.0 * trainable)
        return flops, memory, np.full(workload.num_blocks, float(workload.gradient_bits))
    flops = L * layer_fwd + n * ell * layer_fwd + ell * 2.0 * b * s * s_layer
    weights = 4.0 * params if method != "qlora" else 0.5625 * params
    if method == "lora-checkpoint":
        flops = flops + n * ell * layer_fwd
        memory = weights + n * ell * 4.0 * b * s * h + act_layer + 16.0 * trainable
    else:
        memory = weights + n * ell * act_layer + 16.0 * trainable
    return flops, memory, bits


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
        flops, memory, bits = analytic_costs(workload)
        compute_s = flops / (self.flops_per_s * speeds[hardware])
        # QLoRA's memory is an estimate (see analytic_costs); the source says so in results
        source = f"{self.name}-estimate" if workload.method == "qlora" else self.name
        return BlockCosts(compute_s, memory, bits, source=source)


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


# ---------------------------------------------------------------------------------------------
# Measured profiles (README "Calibration").

PROFILE_FEATURES = ("1", "n", "bs", "n·bs", "bs²", "n·bs²")


def profile_features(n: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Regressors of the fitted profile model, shape ``(..., 6)``.

    With tokens ``T = b·s`` and attention size ``A = b·s²``, a block-``n`` training step is
    modelled as ``(c0 + c1·n) + (c2 + c3·n)·T + (c4 + c5·n)·A``: a fixed part (the forward
    pass, the head, the step of one block) plus a part per layer the backward pass crosses,
    each affine in tokens (linear layers, layer norms, element-wise ops) and in ``b·s²``
    (attention scores and probabilities).
    """
    n, b, s = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (n, b, s)))
    tokens, attn = b * s, b * s * s
    return np.stack([np.ones_like(n), n, tokens, n * tokens, attn, n * attn], axis=-1)


def _fit_relative_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the sum of squared *relative* errors."""
    from scipy.optimize import nnls

    a = x / y[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    z, _ = nnls(a / scale, np.ones(len(y)))
    return z / scale


@dataclass(frozen=True, eq=False)
class ProfileFit:
    """The fitted model of one measured table (one hardware class, model and method).

    Coefficients multiply :func:`profile_features`. They are fitted by non-negative least
    squares on relative errors, so every term grows with depth, tokens and attention size and
    the predictions are non-decreasing in depth by construction.

    Attributes:
        hardware, model, method: what the table describes.
        num_blocks: profiled depths ``N`` (one encoder layer per block).
        lora_rank: LoRA rank of the table (0 for other methods).
        time_coef: ``(6,)`` coefficients of training-step seconds.
        memory_coef: ``(6,)`` coefficients of peak bytes.
        trainable_params: ``(N,)`` trainable values of block ``n`` at index ``n − 1``.
        time_residuals: ``(R,)`` relative residuals (prediction / measurement − 1) of the rows.
        memory_residuals: ``(R,)`` the same for memory.
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

    def compute_s(self, n: Any, batch: Any, seq_len: Any) -> np.ndarray:
        """Predicted training-step seconds of block ``n`` (broadcasts)."""
        return profile_features(n, batch, seq_len) @ self.time_coef

    def memory_bytes(self, n: Any, batch: Any, seq_len: Any) -> np.ndarray:
        """Predicted peak bytes of the training step of block ``n`` (broadcasts)."""
        return profile_features(n, batch, seq_len) @ self.memory_coef


def fit_profile(table: pd.DataFrame) -> ProfileFit:
    """Fit :class:`ProfileFit` to the rows of one (hardware, model, method) table.

    Raises:
        ScenarioError: the rows mix several tables, or too few grid points to fit.
    """
    keys = table[["hardware", "model", "method", "num_blocks", "lora_rank"]].drop_duplicates()
    if len(keys) != 1:
        raise ScenarioError(
            f"a profile fit needs one table; got {len(keys)}: {keys.to_dict('records')}"
        )
    grid = table[["batch_size", "seq_len"]].drop_duplicates()
    tokens = grid["batch_size"] * grid["seq_len"]
    if len(grid) < 3 or tokens.nunique() < 2 or grid["seq_len"].nunique() < 2:
        raise ScenarioError(
            "a profile needs at least 3 (batch, seq_len) points with 2 sequence lengths and "
            f"2 token counts to fit; got {len(grid)}"
        )
    key = keys.iloc[0]
    x = profile_features(table["block"], table["batch_size"], table["seq_len"])
    t = table["compute_s"].to_numpy(float)
    m = table["peak_memory_bytes"].to_numpy(float)
    time_coef, memory_coef = _fit_relative_nnls(x, t), _fit_relative_nnls(x, m)
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
    )


@dataclass(frozen=True, eq=False)
class ProfiledCostModel:
    """Costs from measured profiles: the default cost model (README "Calibration").

    Each hardware class names a profile table (:func:`desim.io.load_profile`). For a workload
    the rows of its model and method are fitted once (:func:`fit_profile`) and the fit answers
    any batch and sequence length. Compute seconds are at speed factor 1; the engine divides
    by each device's speed factor and timeline factor. Upload bits are the block's measured
    trainable values times ``gradient_bits``.

    Attributes:
        profiles: hardware class → profile table.
        fallback: prices classes or workloads without profile rows (``None``: raise instead);
            its ``source`` is recorded, so a run says which model priced it.
    """

    profiles: Mapping[str, pd.DataFrame]
    fallback: CostModel | None = None
    name: str = "profiled"
    _fits: dict[tuple[str, str, str], ProfileFit] = field(
        default_factory=dict, init=False, repr=False
    )

    def fit(self, hardware: str, model: str, method: str) -> ProfileFit | None:
        """The fit for ``hardware``, ``model`` and ``method``, or ``None`` without rows."""
        key = (hardware, model, method)
        if key not in self._fits:
            table = self.profiles[hardware]
            rows = table[(table["model"] == model) & (table["method"] == method)]
            if rows.empty:
                return None
            self._fits[key] = fit_profile(rows)
        return self._fits[key]

    def block_costs(self, workload: Workload, hardware: str) -> BlockCosts:
        """Return ``(N,)`` compute seconds, peak bytes and upload bits for every block.

        Raises:
            UnknownNameError: no profile for ``hardware`` or the workload, and no fallback.
            ScenarioError: the workload's block split or LoRA rank differs from the profile's.
        """
        cfg = workload.config
        fit = None
        if hardware in self.profiles:
            fit = self.fit(hardware, cfg.name, workload.method)
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
        if workload.num_blocks != fit.num_blocks:
            raise ScenarioError(
                f"model.num_blocks: the {hardware!r} profile of {cfg.name} has one layer per "
                f"block ({fit.num_blocks} blocks), got {workload.num_blocks}; use "
                "cost.model = 'analytic' for other block splits"
            )
        if fit.method == "lora" and workload.lora_rank != fit.lora_rank:
            raise ScenarioError(
                f"model.lora_rank: the {hardware!r} profile was measured at rank "
                f"{fit.lora_rank}, got {workload.lora_rank}"
            )
        n = np.arange(1, workload.num_blocks + 1)
        b, s = workload.batch_size, workload.seq_len
        return BlockCosts(
            compute_s=fit.compute_s(n, b, s),
            memory_bytes=fit.memory_bytes(n, b, s),
            upload_bits=fit.trainable_params * workload.gradient_bits,
            source=f"{self.name}:{hardware}",
        )
