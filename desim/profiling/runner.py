"""Measure per-block training costs over a grid of batch sizes and sequence lengths.

For one grid point ``(b, s)`` and every block depth ``n``:

- ``fwd_s``: one forward pass (with loss). All depths share it: one forward is run with every
  block's parameters requiring grad, and the backward of each depth is then taken from that
  graph (``retain_graph``). The forward pass does the same arithmetic whichever block trains;
  only which activations autograd keeps differs, and that is what memory accounting measures.
- ``bwd_s``: ``torch.autograd.grad(loss, params_of_block_n)``. Autograd executes only the part
  of the graph between the loss and block ``n`` (gradients for other blocks' parameters and for
  layers below ``n`` are not computed), which is exactly a backward pass that stops at block
  ``n`` with only block ``n`` trainable.
- ``step_s``: an AdamW step on block ``n``'s parameters.
- ``peak_memory_bytes``: see :mod:`desim.profiling.memory`. On CPU the saved-for-backward bytes
  come from a forward pass with *only* block ``n`` trainable, on the ``meta`` device; for
  ``lora-checkpoint``, ``mezo`` and ``qlora`` the peak is the live-tensor high-water mark of one
  whole training step of block ``n`` (``memory_method = live-tensors``).
- ``flops``: counted FLOPs (``torch.utils.flop_counter.FlopCounterMode``) of one training step
  of block ``n`` on the ``meta`` device (they depend only on shapes): the forward pass with
  loss and the backward pass stopping at block ``n`` (with checkpointing, its recomputation);
  for MeZO its two forward passes. ``qlora`` is counted on the LoRA model of the same shapes.
- ``mezo``: each depth runs a whole MeZO step (:mod:`desim.profiling.mezo`): ``fwd_s`` is its
  two forward passes, ``bwd_s`` is 0 and ``step_s`` the in-place perturbations and update.

Each grid point runs ``warmup`` untimed and ``repeats`` timed repetitions; the table holds the
median and the spread (max − min) of each time.

Clock: on CPU with one torch thread every operation, forward and backward, runs on the calling
thread, so times are that thread's CPU time (:func:`time.thread_time`, ``clock = thread-cpu``):
other processes sharing the cores then do not inflate them (they still share caches and memory
bandwidth). With several threads, or on CUDA after a device synchronisation, times are wall
clock (:func:`time.perf_counter`, ``clock = wall``).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from desim.errors import InputError
from desim.io.files import PROFILE_COLUMNS, model_config_data
from desim.profiling.memory import (
    SavedTensorMeter,
    live_peak_bytes,
    optimizer_state_bytes,
    peak_rss_bytes,
    quant_state_bytes,
    tensor_bytes,
)
from desim.profiling.mezo import mezo_step
from desim.profiling.models import (
    LORA_METHODS,
    build_model,
    family,
    make_inputs,
    set_trainable,
)
from desim.profiling.request import ProfileRequest

Progress = Callable[[int, int], None] | None
Inputs = dict[str, torch.Tensor]
Blocks = list[list[torch.nn.Parameter]]
# methods whose peak is the live-tensor high-water mark of a whole step (on CPU)
LIVE_METHODS = ("lora-checkpoint", "mezo", "qlora")


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: str) -> dict[str, Any]:
    """Hardware and software the measurements were taken on (columns of the profile)."""
    import peft
    import transformers

    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        threads = 0
    else:
        name = cpu_name()
        threads = torch.get_num_threads()
    return {
        "device": device,
        "device_name": name,
        "cores": os.cpu_count() or 0,
        "threads": threads,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _clock(device: str) -> tuple[Callable[[], float], str]:
    """The step clock and its name: thread CPU time with one CPU thread, else wall time."""
    if device == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time, "thread-cpu"
    return time.perf_counter, "wall"


def _sync(device: str) -> Callable[[], None]:
    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def time_point(
    clock: Callable[[], float],
    model: torch.nn.Module,
    blocks: Blocks,
    optimizers: list[torch.optim.Optimizer],
    inputs: Inputs,
    repeats: int,
    warmup: int,
    sync: Callable[[], None],
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time forward, per-depth backward and per-depth step at one grid point.

    Returns:
        ``fwd (R, N)`` (one forward shared by every depth), ``bwd (R, N)`` and
        ``step (R, N)`` seconds, ``R = repeats``.
    """
    depths = len(blocks)
    set_trainable(blocks, set(range(1, depths + 1)))
    fwd = np.zeros((repeats, depths))
    bwd = np.zeros((repeats, depths))
    step = np.zeros((repeats, depths))
    for r in range(-warmup, repeats):
        sync()
        t0 = clock()
        loss = model(**inputs).loss
        sync()
        t1 = clock()
        if r >= 0:
            fwd[r] = t1 - t0
        grads = []
        for n in range(1, depths + 1):
            t0 = clock()
            grads.append(torch.autograd.grad(loss, blocks[n - 1], retain_graph=n < depths))
            sync()
            if r >= 0:
                bwd[r, n - 1] = clock() - t0
        # steps after all backwards: a step changes weights the retained graph still needs
        for n in range(1, depths + 1):
            params, opt = blocks[n - 1], optimizers[n - 1]
            for p, g in zip(params, grads[n - 1], strict=True):
                p.grad = g
            t0 = clock()
            opt.step()
            sync()
            if r >= 0:
                step[r, n - 1] = clock() - t0
            opt.zero_grad(set_to_none=True)
        del loss
        tick()
    set_trainable(blocks, set())
    return fwd, bwd, step


def time_mezo_point(
    clock: Callable[[], float],
    model: torch.nn.Module,
    blocks: Blocks,
    inputs: Inputs,
    repeats: int,
    warmup: int,
    sync: Callable[[], None],
    tick: Callable[[], None],
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time a whole MeZO step of every depth at one grid point.

    Returns:
        ``fwd (R, N)`` (both forward passes), ``bwd (R, N)`` (zeros) and ``step (R, N)``
        (perturbations and update) seconds.
    """
    depths = len(blocks)
    fwd = np.zeros((repeats, depths))
    step = np.zeros((repeats, depths))
    set_trainable(blocks, set())
    for r in range(-warmup, repeats):
        for n in range(1, depths + 1):
            t = mezo_step(model, blocks[n - 1], inputs, seed=seed + 7919 * (r + warmup) + n,
                          clock=clock, sync=sync)
            if r >= 0:
                fwd[r, n - 1], step[r, n - 1] = t.forward_s, t.update_s
        tick()
    return fwd, np.zeros_like(fwd), step


def training_step(
    model: torch.nn.Module,
    blocks: Blocks,
    optimizers: list[torch.optim.Optimizer] | None,
    inputs: Inputs,
    n: int,
    seed: int = 0,
) -> None:
    """One training step of block ``n`` alone: forward, backward, AdamW step; or MeZO.

    With ``optimizers = None`` the step is a MeZO step (no backward).
    """
    if optimizers is None:
        mezo_step(model, blocks[n - 1], inputs, seed=seed)
        return
    set_trainable(blocks, {n})
    loss = model(**inputs).loss
    for p, g in zip(blocks[n - 1], torch.autograd.grad(loss, blocks[n - 1]), strict=True):
        p.grad = g
    del loss
    optimizers[n - 1].step()
    optimizers[n - 1].zero_grad(set_to_none=True)
    set_trainable(blocks, set())


def flops_by_depth(
    model: torch.nn.Module,
    blocks: Blocks,
    optimizers: list[torch.optim.Optimizer] | None,
    inputs: Inputs,
) -> np.ndarray:
    """``(N,)`` counted FLOPs of one training step of block ``n`` (any device, or meta)."""
    out = np.zeros(len(blocks))
    for n in range(1, len(blocks) + 1):
        with FlopCounterMode(display=False) as counter:
            training_step(model, blocks, optimizers, inputs, n)
        out[n - 1] = counter.get_total_flops()
    return out


def saved_bytes_by_depth(model: torch.nn.Module, blocks: Blocks, inputs: Inputs) -> np.ndarray:
    """``(N,)`` bytes kept for backward with only block ``n`` trainable (any device, or meta)."""
    out = np.zeros(len(blocks), dtype=np.int64)
    params = list(model.parameters())
    for n in range(1, len(blocks) + 1):
        set_trainable(blocks, {n})
        with SavedTensorMeter(exclude=params) as meter:
            loss = model(**inputs).loss
        out[n - 1] = meter.saved_bytes  # while the loss keeps the graph alive
        del loss
    set_trainable(blocks, set())
    return out


def live_peak_by_depth(
    model: torch.nn.Module,
    blocks: Blocks,
    optimizers: list[torch.optim.Optimizer] | None,
    inputs: Inputs,
) -> np.ndarray:
    """``(N,)`` live-tensor peak bytes of one training step of block ``n`` (CPU or meta).

    Counted: every parameter and buffer, block ``n``'s optimizer state (made resident first,
    as in steady-state training) and every tensor the step creates while it lives.
    """
    out = np.zeros(len(blocks), dtype=np.int64)
    for n in range(1, len(blocks) + 1):
        opt = None if optimizers is None else optimizers[n - 1]
        if opt is not None and not opt.state:
            for p in blocks[n - 1]:
                p.grad = torch.zeros_like(p)
            opt.step()
            opt.zero_grad(set_to_none=True)
        out[n - 1] = live_peak_bytes(
            partial(training_step, model, blocks, optimizers, inputs, n), model, opt
        )
    return out


def cuda_peak_by_depth(
    model: torch.nn.Module,
    blocks: Blocks,
    optimizers: list[torch.optim.Optimizer] | None,
    inputs: Inputs,
) -> np.ndarray:
    """``(N,)`` ``max_memory_allocated`` of a real training step of block ``n`` on CUDA.

    The optimizer states of the other blocks (resident after timing) are subtracted, so the
    figure is what a device training only block ``n`` would hold.
    """
    states = np.array([optimizer_state_bytes(o) for o in optimizers or []] or [0] * len(blocks))
    out = np.zeros(len(blocks), dtype=np.int64)
    for n in range(1, len(blocks) + 1):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        training_step(model, blocks, optimizers, inputs, n)
        torch.cuda.synchronize()
        others = states.sum() - states[n - 1]
        out[n - 1] = torch.cuda.max_memory_allocated() - others
    return out


def _optimizers(blocks: Blocks, method: str) -> list[torch.optim.Optimizer] | None:
    if method == "mezo":
        return None
    return [torch.optim.AdamW(p, lr=1e-4) for p in blocks]


def _target_len(data: dict[str, Any], request: ProfileRequest) -> int:
    if family(data) != "t5":
        if request.target_len:
            raise InputError(
                f"--target-len: {data['_name']} is an encoder-only model (no decoder targets)"
            )
        return 0
    return request.target_len or DEFAULT_TARGET_LEN


DEFAULT_TARGET_LEN = 32


def _check_lengths(data: dict[str, Any], seq_lens: tuple[int, ...]) -> None:
    if family(data) == "t5":
        return  # relative position buckets: no hard limit
    max_len = int(data["max_position_embeddings"]) - 2  # RoBERTa positions start at 2
    too_long = [s for s in seq_lens if s > max_len]
    if too_long:
        raise InputError(f"--seq-len: {too_long[0]} exceeds {data['_name']}'s {max_len} positions")


class _Counter:
    """The meta-device twin of the profiled model: FLOPs and memory by shape alone."""

    def __init__(self, data: dict[str, Any], request: ProfileRequest) -> None:
        method = "lora" if request.method == "qlora" else request.method
        self.model, self.blocks = build_model(
            data, method, device="meta", seed=request.seed,
            lora_rank=request.lora_rank, adapter_size=request.adapter_size,
        )
        self.optimizers = _optimizers(self.blocks, request.method)
        self.family = family(data)
        self.method = request.method

    def flops(self, inputs: Inputs) -> np.ndarray:
        return flops_by_depth(self.model, self.blocks, self.optimizers, inputs)

    def saved(self, inputs: Inputs) -> np.ndarray:
        if self.method == "mezo":  # no graph: nothing is saved
            return np.zeros(len(self.blocks), dtype=np.int64)
        return saved_bytes_by_depth(self.model, self.blocks, inputs)

    def live(self, inputs: Inputs) -> np.ndarray:
        return live_peak_by_depth(self.model, self.blocks, self.optimizers, inputs)


def profile_table(request: ProfileRequest, on_progress: Progress = None) -> pd.DataFrame:
    """Profile every grid point of ``request``; one row per (batch, seq_len, block).

    Raises:
        InputError: unknown model, a sequence longer than the model's positions, CUDA
            requested but unavailable, or ``qlora`` without bitsandbytes.
    """
    data = model_config_data(request.model)
    _check_lengths(data, request.seq_lens)
    target_len = _target_len(data, request)
    device = request.device
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device (is this a CPU-only torch?)")
    if device == "cpu" and request.threads is not None:
        torch.set_num_threads(request.threads)
    kwargs = dict(lora_rank=request.lora_rank, adapter_size=request.adapter_size)
    model, blocks = build_model(data, request.method, device=device, seed=request.seed, **kwargs)
    counter = _Counter(data, request)
    optimizers = _optimizers(blocks, request.method)
    sync = _sync(device)
    clock, clock_name = _clock(device)
    prov = provenance(device)
    grid = request.grid
    total, done = len(grid) * (request.warmup + request.repeats), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    frames = []
    quant = quant_state_bytes(model)
    param_bytes = tensor_bytes(model.parameters()) + quant
    for b, s in grid:
        inputs = make_inputs(data, b, s, target_len, device, request.seed)
        timing_args = (request.repeats, request.warmup, sync, tick)
        if optimizers is None:
            fwd, bwd, step = time_mezo_point(
                clock, model, blocks, inputs, *timing_args, seed=request.seed)
        else:
            fwd, bwd, step = time_point(clock, model, blocks, optimizers, inputs, *timing_args)
        grads, states = _state_bytes(blocks, optimizers)  # AdamW state exists after a step
        static = {
            "hardware": request.hardware or device, "model": data["_name"],
            "method": request.method,
            "lora_rank": request.lora_rank if request.method in LORA_METHODS else 0,
            "target_len": target_len, "block": np.arange(1, len(blocks) + 1),
            "num_blocks": len(blocks), "param_bytes": param_bytes, "grad_bytes": grads,
            "optimizer_bytes": states, "repeats": request.repeats, "clock": clock_name,
            "trainable_params": [sum(p.numel() for p in ps) for ps in blocks], **prov,
        }
        meta_inputs = make_inputs(data, b, s, target_len, "meta", 0)
        saved = counter.saved(meta_inputs)
        if device == "cuda":
            peak, memory_method = cuda_peak_by_depth(model, blocks, optimizers, inputs), (
                "cuda-max-allocated")
        elif request.method == "qlora":  # 4-bit weights need values: a real step on CPU
            peak = live_peak_by_depth(model, blocks, optimizers, inputs) + quant
            memory_method = "live-tensors"
        elif request.method in LIVE_METHODS:
            peak, memory_method = counter.live(meta_inputs), "live-tensors"
        else:
            peak = saved + param_bytes + grads + states
            memory_method = "saved-tensors"
        frames.append(pd.DataFrame({
            **static, "batch_size": b, "seq_len": s, **_time_columns(fwd, bwd, step),
            "flops": counter.flops(meta_inputs), "peak_memory_bytes": peak.astype(np.int64),
            "saved_bytes": saved, "rss_peak_bytes": peak_rss_bytes(),
            "memory_method": memory_method,
        }))
    return pd.concat(frames, ignore_index=True)[list(PROFILE_COLUMNS)]


def _state_bytes(
    blocks: Blocks, optimizers: list[torch.optim.Optimizer] | None
) -> np.ndarray:
    """``(2, N)``: block ``n``'s gradient bytes and AdamW state bytes (zeros for MeZO)."""
    if optimizers is None:
        return np.zeros((2, len(blocks)), dtype=np.int64)
    return np.array([
        [tensor_bytes(p) for p in blocks],
        [optimizer_state_bytes(o) for o in optimizers],
    ], dtype=np.int64)


def _time_columns(fwd: np.ndarray, bwd: np.ndarray, step: np.ndarray) -> dict[str, np.ndarray]:
    total = fwd + bwd + step
    out = {}
    for name, values in (("fwd", fwd), ("bwd", bwd), ("step", step), ("compute", total)):
        out[f"{name}_s"] = np.median(values, axis=0)
    for name, values in (("fwd", fwd), ("bwd", bwd), ("step", step), ("compute", total)):
        out[f"{name}_spread_s"] = np.ptp(values, axis=0)
    return out


def count_flops(table: pd.DataFrame, model_path: str | None = None) -> pd.DataFrame:
    """A copy of a profile table with its ``flops`` column counted (times are not touched).

    For tables measured before desim counted FLOPs. Each (model, method, rank, batch,
    sequence and target length) is counted once on the meta device.

    Args:
        table: a profile table (:func:`desim.io.files.read_profile`).
        model_path: model config to build, for a model that is not shipped.
    """
    out = table.copy()
    keys = ["model", "method", "lora_rank", "batch_size", "seq_len", "target_len"]
    for (model, method, rank), rows in out.groupby(keys[:3], sort=False):
        data = model_config_data(model_path or str(model))
        request = ProfileRequest(str(model), str(method), (1,), (1,), lora_rank=int(rank) or 8)
        counter = _Counter(data, request)
        for (b, s, t), point in rows.groupby(keys[3:], sort=False):
            flops = counter.flops(make_inputs(data, int(b), int(s), int(t), "meta", 0))
            out.loc[point.index, "flops"] = flops[point["block"].to_numpy() - 1]
    return out
