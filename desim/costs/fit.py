"""Fitting measured profiles: the model of time, memory and FLOPs in depth, batch and length.

A profile table (``desim profile``; README "Calibration") holds measured training steps of one
hardware class, model and method over a grid of depths ``n``, batch sizes and sequence lengths.
:func:`fit_profile` fits :class:`ProfileFit` to it: non-negative coefficients of regressors that
grow with depth, tokens and attention size (:func:`profile_features` for encoder-only models,
:func:`seq2seq_features` for encoder-decoder ones), so every prediction is non-decreasing in
depth. :func:`depth_decreases` names the measured decreases such a fit smooths away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import ScenarioError

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
        table: profile rows (:func:`desim.io.calibration.read_profile`), one table or several.

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
    key, target_len = _fit_table_key(table, decoder_layers)
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
    flops_coef, flops_residuals = _fit_flops(table, decoder_layers)
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


def _fit_table_key(table: pd.DataFrame, decoder_layers: int) -> tuple[pd.Series, int]:
    """The table's one (hardware, model, method, blocks, rank) row and its target length.

    Raises:
        ScenarioError: as :func:`fit_profile` (several tables, too few grid points, a model
            family that does not match ``decoder_layers``).
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
    return keys.iloc[0], target_len


def _fit_flops(table: pd.DataFrame,
               decoder_layers: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Coefficients and relative residuals of counted FLOPs (``None``: none to fit).

    Fitted only when every row has a positive, finite ``flops`` value and the regressors are
    of full rank.
    """
    if "flops" not in table.columns:
        return None, None
    f = table["flops"].to_numpy(float)
    if not np.all(np.isfinite(f) & (f > 0)):
        return None, None
    xf = flops_features(table["block"], table["batch_size"], table["seq_len"], decoder_layers)
    coef = _fit_relative_lstsq(xf, f)
    return coef, None if coef is None else xf @ coef / f - 1.0
