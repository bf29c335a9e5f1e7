"""Measure training steps that train a set of blocks in one backward pass.

A device that trains a set ``S`` of blocks (several blocks per device) runs one forward pass,
one backward pass from the loss down to the lowest layer of ``S``'s deepest block with the
values of every block in ``S`` requiring grad (and nothing else), and one AdamW step on each
block of ``S``. Each quantity is measured as :mod:`desim.profiling.runner` measures a single
block, which is the set ``{n}``:

- ``fwd_s``: one forward pass with every block requiring grad, shared by every set;
- ``bwd_s``: ``torch.autograd.grad(loss, values of S)``: autograd runs the graph between the
  loss and ``S``'s deepest block and computes weight gradients for ``S``'s values only;
- ``step_s``: the AdamW steps of ``S``'s blocks, one after the other (on CPU torch's AdamW
  loops over tensors, so one optimizer over all of them costs the same);
- ``peak_memory_bytes``: saved-for-backward bytes of a forward pass with exactly ``S``
  trainable (on ``meta``) plus every parameter and ``S``'s gradients and AdamW state; the
  live-tensor high-water mark of one whole step of ``S`` for ``lora-checkpoint``, ``mezo``
  and ``qlora``; ``max_memory_allocated`` on CUDA;
- ``flops``: torch's FLOP counter over one training step of ``S`` (on ``meta``);
- ``mezo``: one MeZO step perturbing and updating every value of ``S`` (two forward passes).

The same clock, warm-up, repeats and interleaving as a profile: every point is warmed up, then
each round times one repetition of every point in turn. Within a repetition the sets that
share a deepest block are timed in an order that rotates from round to round
(:func:`time_sets_point`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from desim.errors import InputError
from desim.io.model_configs import model_config_data
from desim.profiling.measure import (
    Blocks,
    Inputs,
    MetaCounter,
    block_optimizers,
    device_sync,
    step_clock,
)
from desim.profiling.memory import (
    SavedTensorMeter,
    live_peak_bytes,
    optimizer_state_bytes,
    peak_rss_bytes,
    quant_state_bytes,
    tensor_bytes,
)
from desim.profiling.mezo import mezo_step
from desim.profiling.models import LORA_METHODS, build_model, make_inputs, set_trainable
from desim.profiling.request import ProfileRequest
from desim.profiling.runner import (
    LIVE_METHODS,
    _check_lengths,
    _state_bytes,
    _target_len,
    _ticker,
    _use_device,
    provenance,
)

Optimizers = list[torch.optim.Optimizer] | None
BlockSet = tuple[int, ...]

#: the columns of a set table (``desim profile --sets``), in order, with their meaning
SET_COLUMNS: dict[str, str] = {
    "hardware": "hardware-class name", "model": "model name", "method": "fine-tuning method",
    "lora_rank": "LoRA rank (0 for methods without LoRA values)",
    "batch_size": "sequences per step (b)", "seq_len": "tokens per sequence (s)",
    "target_len": "decoder target tokens (0 for encoder-only models)",
    "blocks": "the trained blocks, 1-based from the output, comma-separated",
    "deepest": "the deepest block of the set (max)", "set_size": "blocks in the set",
    "num_blocks": "blocks in the model",
    "fwd_s": "median forward-pass seconds (shared by every set)",
    "bwd_s": "median seconds of the one backward pass of the set",
    "step_s": "median seconds of the AdamW steps of the set's blocks",
    "compute_s": "median seconds of fwd + bwd + step (the set's training step)",
    "fwd_spread_s": "max - min of fwd_s", "bwd_spread_s": "max - min of bwd_s",
    "step_spread_s": "max - min of step_s", "compute_spread_s": "max - min of compute_s",
    "compute_min_s": "minimum of compute_s over repeats",
    "flops": "counted FLOPs of one training step of the set",
    "peak_memory_bytes": "peak bytes of the set's training step",
    "saved_bytes": "bytes autograd keeps for backward with exactly the set trainable",
    "param_bytes": "bytes of all parameters", "grad_bytes": "bytes of the set's gradients",
    "optimizer_bytes": "bytes of the set's AdamW state",
    "rss_peak_bytes": "process peak RSS after the point (cross-check)",
    "trainable_params": "trainable values of the set (upload: q bits each)",
    "repeats": "timed repetitions", "clock": "thread-cpu or wall",
    "memory_method": "saved-tensors, live-tensors or cuda-max-allocated",
    "device": "torch device", "device_name": "CPU or GPU model", "cores": "logical cores",
    "threads": "torch threads", "torch_version": "torch version",
    "transformers_version": "transformers version", "peft_version": "peft version",
    "date": "UTC time of the measurement",
}


def set_params(blocks: Blocks, group: BlockSet) -> list[torch.nn.Parameter]:
    """The trainable values of the blocks in ``group`` (1-based), deepest block last."""
    return [p for n in group for p in blocks[n - 1]]


def time_sets_point(
    clock: Callable[[], float], model: torch.nn.Module, blocks: Blocks,
    optimizers: Optimizers, inputs: Inputs, repeats: int, warmup: int,
    sync: Callable[[], None], tick: Callable[[], None], sets: Sequence[BlockSet],
    seed: int = 0, rotate: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time the training step of every set in ``sets`` at one grid point.

    The backward passes run from the shallowest deepest block to the deepest (the last one
    frees the retained graph); sets with the same deepest block run in the order of
    ``sets`` rotated by ``rotate``. The caller rotates by the round, so that no set is always
    timed first or last of its group: each backward keeps its gradients until the steps, and
    a pass late in a repetition runs with more memory held.

    Returns:
        ``fwd (R, Q)`` (one forward pass shared by every set; MeZO: the set's two),
        ``bwd (R, Q)`` and ``step (R, Q)`` seconds, ``R = repeats``, ``Q = len(sets)``.
    """
    q = len(sets)
    if optimizers is None:  # MeZO: a whole step per set
        return _time_mezo_sets(clock, model, blocks, inputs, repeats, warmup, sync, tick, sets,
                               seed)
    fwd, bwd, step = (np.zeros((repeats, q)) for _ in range(3))
    order = sorted(range(q), key=lambda i: (max(sets[i]), (i - rotate) % q))
    set_trainable(blocks, set(range(1, len(blocks) + 1)))
    for r in range(-warmup, repeats):
        sync()
        t0 = clock()
        loss = model(**inputs).loss
        sync()
        if r >= 0:
            fwd[r] = clock() - t0
        grads: dict[int, tuple[torch.Tensor, ...]] = {}
        for j, i in enumerate(order):
            t0 = clock()
            grads[i] = torch.autograd.grad(loss, set_params(blocks, sets[i]),
                                           retain_graph=j != q - 1)
            sync()
            if r >= 0:
                bwd[r, i] = clock() - t0
        # steps after all backwards: a step changes weights the retained graph still needs
        for i in order:
            for p, g in zip(set_params(blocks, sets[i]), grads.pop(i), strict=True):
                p.grad = g
            t0 = clock()
            for n in sets[i]:
                optimizers[n - 1].step()
            sync()
            if r >= 0:
                step[r, i] = clock() - t0
            for n in sets[i]:
                optimizers[n - 1].zero_grad(set_to_none=True)
        del loss
        tick()
    set_trainable(blocks, set())
    return fwd, bwd, step


def _time_mezo_sets(
    clock: Callable[[], float], model: torch.nn.Module, blocks: Blocks, inputs: Inputs,
    repeats: int, warmup: int, sync: Callable[[], None], tick: Callable[[], None],
    sets: Sequence[BlockSet], seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`time_sets_point` for MeZO: one whole MeZO step per set (``bwd`` zeros)."""
    fwd, bwd, step = (np.zeros((repeats, len(sets))) for _ in range(3))
    for r in range(-warmup, repeats):
        for i, group in enumerate(sets):
            t = mezo_step(model, set_params(blocks, group), inputs,
                          seed=seed + 7919 * (r + warmup) + i, clock=clock, sync=sync)
            if r >= 0:
                fwd[r, i], step[r, i] = t.forward_s, t.update_s
        tick()
    return fwd, bwd, step


def set_training_step(model: torch.nn.Module, blocks: Blocks, optimizers: Optimizers,
                      inputs: Inputs, group: BlockSet, seed: int = 0) -> None:
    """One training step of the blocks in ``group``: forward, one backward, AdamW; or MeZO."""
    params = set_params(blocks, group)
    if optimizers is None:
        mezo_step(model, params, inputs, seed=seed)
        return
    set_trainable(blocks, set(group))
    loss = model(**inputs).loss
    for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
        p.grad = g
    del loss
    for n in group:
        optimizers[n - 1].step()
        optimizers[n - 1].zero_grad(set_to_none=True)
    set_trainable(blocks, set())


def flops_of_sets(model: torch.nn.Module, blocks: Blocks, optimizers: Optimizers,
                  inputs: Inputs, sets: Sequence[BlockSet]) -> np.ndarray:
    """``(Q,)`` counted FLOPs of one training step of each set (any device, or meta)."""
    out = np.zeros(len(sets))
    for i, group in enumerate(sets):
        with FlopCounterMode(display=False) as counter:
            set_training_step(model, blocks, optimizers, inputs, group)
        out[i] = counter.get_total_flops()
    return out


def saved_bytes_of_sets(model: torch.nn.Module, blocks: Blocks, inputs: Inputs,
                        sets: Sequence[BlockSet]) -> np.ndarray:
    """``(Q,)`` bytes kept for backward with exactly the set's blocks trainable."""
    out = np.zeros(len(sets), dtype=np.int64)
    params = list(model.parameters())
    for i, group in enumerate(sets):
        set_trainable(blocks, set(group))
        with SavedTensorMeter(exclude=params) as meter:
            loss = model(**inputs).loss
        out[i] = meter.saved_bytes
        del loss
    set_trainable(blocks, set())
    return out


def _resident_states(blocks: Blocks, optimizers: Optimizers, group: BlockSet) -> None:
    """Make the AdamW state of ``group``'s blocks resident, as in steady-state training."""
    for n in group:
        opt = None if optimizers is None else optimizers[n - 1]
        if opt is not None and not opt.state:
            for p in blocks[n - 1]:
                p.grad = torch.zeros_like(p)
            opt.step()
            opt.zero_grad(set_to_none=True)


def live_peak_of_sets(model: torch.nn.Module, blocks: Blocks, optimizers: Optimizers,
                      inputs: Inputs, sets: Sequence[BlockSet]) -> np.ndarray:
    """``(Q,)`` live-tensor peak bytes of one training step of each set (CPU or meta)."""
    out = np.zeros(len(sets), dtype=np.int64)
    for i, group in enumerate(sets):
        _resident_states(blocks, optimizers, group)
        opts = [] if optimizers is None else [optimizers[n - 1] for n in group]
        out[i] = live_peak_bytes(
            partial(set_training_step, model, blocks, optimizers, inputs, group), model, opts
        )
    return out


def cuda_peak_of_sets(model: torch.nn.Module, blocks: Blocks, optimizers: Optimizers,
                      inputs: Inputs, sets: Sequence[BlockSet]) -> np.ndarray:
    """``(Q,)`` ``max_memory_allocated`` of a step of each set, other blocks' state removed."""
    states = np.array([optimizer_state_bytes(o) for o in optimizers or []] or [0] * len(blocks))
    out = np.zeros(len(sets), dtype=np.int64)
    for i, group in enumerate(sets):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        set_training_step(model, blocks, optimizers, inputs, group)
        torch.cuda.synchronize()
        others = states.sum() - states[np.array(group) - 1].sum()
        out[i] = torch.cuda.max_memory_allocated() - others
    return out


def set_table(request: ProfileRequest,
              on_progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Measure every set of ``request.sets`` at every grid point; one row per (point, set).

    Raises:
        InputError: as :func:`desim.profiling.runner.profile_table`, or a set naming a block
            the model does not have.
    """
    data = model_config_data(request.model)
    _check_lengths(data, request.seq_lens)
    target_len = _target_len(data, request)
    device = request.device
    _use_device(device, request.threads)
    model, blocks = build_model(data, request.method, device=device, seed=request.seed,
                                lora_rank=request.lora_rank, adapter_size=request.adapter_size)
    sets = request.sets
    too_deep = [g for g in sets if g[-1] > len(blocks)]
    if too_deep:
        raise InputError(f"--sets: {data['_name']} has {len(blocks)} blocks (got {too_deep[0]})")
    optimizers = block_optimizers(blocks, request.method)
    meta = _MetaSets(data, request)
    sync, (clock, clock_name) = device_sync(device), step_clock(device)
    tick = _ticker(len(request.grid) * (request.warmup + request.repeats), on_progress)
    inputs_of = {p: make_inputs(data, *p, target_len, device, request.seed) for p in request.grid}
    parts: dict[tuple[int, int], list[tuple[np.ndarray, ...]]] = {p: [] for p in request.grid}
    for r in range(request.repeats):
        for p in request.grid:
            parts[p].append(time_sets_point(
                clock, model, blocks, optimizers, inputs_of[p], 1,
                request.warmup if r == 0 else 0, sync, tick, sets,
                seed=request.seed + 104729 * r, rotate=r,
            ))
    param_bytes = tensor_bytes(model.parameters()) + quant_state_bytes(model)
    static = {"hardware": request.hardware or device, "model": data["_name"],
              "method": request.method,
              "lora_rank": request.lora_rank if request.method in LORA_METHODS else 0,
              "target_len": target_len, "num_blocks": len(blocks), "param_bytes": param_bytes,
              "repeats": request.repeats, "clock": clock_name,
              **_set_columns(blocks, optimizers, sets), **provenance(device)}
    frames = []
    for b, s in request.grid:
        meta_inputs = make_inputs(data, b, s, target_len, "meta", 0)
        saved = meta.saved(meta_inputs)
        estimate = saved + param_bytes + np.asarray(static["grad_bytes"]) + np.asarray(
            static["optimizer_bytes"])
        peak, memory_method = _set_peak(request, model, blocks, optimizers,
                                        inputs_of[(b, s)], meta, meta_inputs, estimate)
        frames.append(pd.DataFrame({
            **static, "batch_size": b, "seq_len": s, "flops": meta.flops(meta_inputs),
            "peak_memory_bytes": peak.astype(np.int64), "saved_bytes": saved,
            "rss_peak_bytes": peak_rss_bytes(), "memory_method": memory_method,
            **_time_columns(parts[(b, s)]),
        }))
    return pd.concat(frames, ignore_index=True)[list(SET_COLUMNS)]


def _set_columns(blocks: Blocks, optimizers: Optimizers,
                 sets: Sequence[BlockSet]) -> dict[str, list[Any]]:
    """Each set's ``blocks``, ``deepest``, ``set_size``, state bytes and trainable values."""
    grads, states = _state_bytes(blocks, optimizers)  # AdamW state exists after the timing
    return {"blocks": [",".join(map(str, g)) for g in sets], "deepest": [g[-1] for g in sets],
            "set_size": [len(g) for g in sets],
            "grad_bytes": [int(grads[np.array(g) - 1].sum()) for g in sets],
            "optimizer_bytes": [int(states[np.array(g) - 1].sum()) for g in sets],
            "trainable_params": [sum(p.numel() for p in set_params(blocks, g)) for g in sets]}


def _time_columns(rounds: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    """Medians, spreads (max − min) and the minimum step of the rounds' ``(fwd, bwd, step)``."""
    fwd, bwd, step = (np.concatenate(x) for x in zip(*rounds, strict=True))
    parts = {"fwd": fwd, "bwd": bwd, "step": step, "compute": fwd + bwd + step}
    return {**{f"{k}_s": np.median(v, axis=0) for k, v in parts.items()},
            **{f"{k}_spread_s": np.ptp(v, axis=0) for k, v in parts.items()},
            "compute_min_s": parts["compute"].min(axis=0)}


class _MetaSets(MetaCounter):
    """The meta-device twin of the measured model: FLOPs and bytes of each set by shape."""

    def __init__(self, data: dict[str, Any], request: ProfileRequest) -> None:
        super().__init__(data, request)
        self.sets = request.sets

    def flops(self, inputs: Inputs) -> np.ndarray:
        """``(Q,)`` counted FLOPs of each set's step (:func:`flops_of_sets`)."""
        return flops_of_sets(self.model, self.blocks, self.optimizers, inputs, self.sets)

    def saved(self, inputs: Inputs) -> np.ndarray:
        """``(Q,)`` saved-for-backward bytes of each set (0 for MeZO: no graph)."""
        if self.method == "mezo":
            return np.zeros(len(self.sets), dtype=np.int64)
        return saved_bytes_of_sets(self.model, self.blocks, inputs, self.sets)

    def live(self, inputs: Inputs) -> np.ndarray:
        """``(Q,)`` live-tensor peak bytes of each set's step (:func:`live_peak_of_sets`)."""
        return live_peak_of_sets(self.model, self.blocks, self.optimizers, inputs, self.sets)


def _set_peak(request: ProfileRequest, model: torch.nn.Module, blocks: Blocks,
              optimizers: Optimizers, inputs: Inputs, meta: _MetaSets, meta_inputs: Inputs,
              estimate: np.ndarray) -> tuple[np.ndarray, str]:
    """Peak bytes of each set's step and how they were found (as a profile's, per method)."""
    if request.device == "cuda":
        return cuda_peak_of_sets(model, blocks, optimizers, inputs, request.sets), \
            "cuda-max-allocated"
    if request.method == "qlora":
        peak = live_peak_of_sets(model, blocks, optimizers, inputs, request.sets)
        return peak + quant_state_bytes(model), "live-tensors"
    if request.method in LIVE_METHODS:
        return meta.live(meta_inputs), "live-tensors"
    return estimate, "saved-tensors"
