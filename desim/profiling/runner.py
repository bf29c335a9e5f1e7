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
  come from a forward pass with *only* block ``n`` trainable, on the ``meta`` device.

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
from typing import Any

import numpy as np
import pandas as pd
import torch

from desim.errors import InputError
from desim.io import PROFILE_COLUMNS, model_config_data
from desim.profiling import ProfileRequest
from desim.profiling.memory import (
    SavedTensorMeter,
    optimizer_state_bytes,
    peak_rss_bytes,
    tensor_bytes,
)
from desim.profiling.models import build_model, set_trainable

Progress = Callable[[int, int], None] | None


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


def _sync(device: str) -> Callable[[], None]:
    if device == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _inputs(b: int, s: int, vocab: int, device: str, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (b, s), generator=gen)  # 0-2 are special tokens
    labels = torch.randint(0, 2, (b,), generator=gen)
    return ids.to(device), labels.to(device)


def time_point(
    clock: Callable[[], float],
    model: torch.nn.Module,
    blocks: list[list[torch.nn.Parameter]],
    optimizers: list[torch.optim.Optimizer],
    inputs: tuple[torch.Tensor, ...],
    repeats: int,
    warmup: int,
    sync: Callable[[], None],
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time forward, per-depth backward and per-depth step at one grid point.

    Returns:
        ``fwd (R,)``, ``bwd (R, N)`` and ``step (R, N)`` seconds, ``R = repeats``.
    """
    ids, labels = inputs
    depths = len(blocks)
    set_trainable(blocks, set(range(1, depths + 1)))
    fwd = np.zeros(repeats)
    bwd = np.zeros((repeats, depths))
    step = np.zeros((repeats, depths))
    for r in range(-warmup, repeats):
        sync()
        t0 = clock()
        loss = model(input_ids=ids, labels=labels).loss
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


def saved_bytes_by_depth(
    model: torch.nn.Module, blocks: list[list[torch.nn.Parameter]], inputs: tuple[torch.Tensor, ...]
) -> np.ndarray:
    """``(N,)`` bytes saved for backward with only block ``n`` trainable (any device, or meta)."""
    ids, labels = inputs
    out = np.zeros(len(blocks), dtype=np.int64)
    params = list(model.parameters())
    for n in range(1, len(blocks) + 1):
        set_trainable(blocks, {n})
        with SavedTensorMeter(exclude=params) as meter:
            loss = model(input_ids=ids, labels=labels).loss
        del loss
        out[n - 1] = meter.saved_bytes
    set_trainable(blocks, set())
    return out


def cuda_peak_by_depth(
    model: torch.nn.Module,
    blocks: list[list[torch.nn.Parameter]],
    optimizers: list[torch.optim.Optimizer],
    inputs: tuple[torch.Tensor, ...],
) -> np.ndarray:
    """``(N,)`` ``max_memory_allocated`` of a real training step of block ``n`` on CUDA.

    The optimizer states of the other blocks (resident after timing) are subtracted, so the
    figure is what a device training only block ``n`` would hold.
    """
    ids, labels = inputs
    states = np.array([optimizer_state_bytes(o) for o in optimizers])
    out = np.zeros(len(blocks), dtype=np.int64)
    for n in range(1, len(blocks) + 1):
        set_trainable(blocks, {n})
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizers[n - 1].step()
        optimizers[n - 1].zero_grad(set_to_none=True)
        del loss
        torch.cuda.synchronize()
        others = states.sum() - states[n - 1]
        out[n - 1] = torch.cuda.max_memory_allocated() - others
    set_trainable(blocks, set())
    return out


def profile_table(request: ProfileRequest, on_progress: Progress = None) -> pd.DataFrame:
    """Profile every grid point of ``request``; one row per (batch, seq_len, block).

    Raises:
        InputError: unknown model, a sequence longer than the model's positions, or CUDA
            requested but unavailable.
    """
    data = model_config_data(request.model)
    model_name = data["_name"]
    max_len = int(data["max_position_embeddings"]) - 2  # RoBERTa positions start at 2
    too_long = [s for s in request.seq_lens if s > max_len]
    if too_long:
        raise InputError(f"--seq-len: {too_long[0]} exceeds {model_name}'s {max_len} positions")
    device = request.device
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device (is this a CPU-only torch?)")
    if device == "cpu" and request.threads is not None:
        torch.set_num_threads(request.threads)
    kwargs = dict(lora_rank=request.lora_rank, adapter_size=request.adapter_size)
    model, blocks = build_model(data, request.method, device=device, seed=request.seed, **kwargs)
    meta = None
    if device == "cpu":
        meta = build_model(data, request.method, device="meta", seed=request.seed, **kwargs)
    optimizers = [torch.optim.AdamW(p, lr=1e-4) for p in blocks]
    sync = _sync(device)
    thread_clock = device == "cpu" and torch.get_num_threads() == 1
    clock, clock_name = (time.thread_time, "thread-cpu") if thread_clock else (
        time.perf_counter, "wall")
    prov = provenance(device)
    hardware = request.hardware or device
    grid = request.grid
    total, done = len(grid) * (request.warmup + request.repeats), 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    rows: list[dict[str, Any]] = []
    param_bytes = tensor_bytes(model.parameters())
    for b, s in grid:
        inputs = _inputs(b, s, int(data["vocab_size"]), device, request.seed)
        fwd, bwd, step = time_point(
            clock,
            model, blocks, optimizers, inputs, request.repeats, request.warmup, sync, tick
        )
        total_s = fwd[:, None] + bwd + step
        if meta is not None:
            saved = saved_bytes_by_depth(*meta, _inputs(b, s, 10, "meta", 0))
            method = "saved-tensors"
        else:
            saved = np.zeros(len(blocks), dtype=np.int64)
            peak_cuda = cuda_peak_by_depth(model, blocks, optimizers, inputs)
            method = "cuda-max-allocated"
        rss = peak_rss_bytes()
        for n in range(1, len(blocks) + 1):
            grad_bytes = tensor_bytes(blocks[n - 1])
            opt_bytes = optimizer_state_bytes(optimizers[n - 1])
            if meta is not None:
                peak = int(saved[n - 1]) + param_bytes + grad_bytes + opt_bytes
            else:
                peak = int(peak_cuda[n - 1])
            rows.append(
                {
                    "hardware": hardware,
                    "model": model_name,
                    "method": request.method,
                    "lora_rank": request.lora_rank if request.method == "lora" else 0,
                    "batch_size": b,
                    "seq_len": s,
                    "block": n,
                    "num_blocks": len(blocks),
                    "fwd_s": float(np.median(fwd)),
                    "bwd_s": float(np.median(bwd[:, n - 1])),
                    "step_s": float(np.median(step[:, n - 1])),
                    "compute_s": float(np.median(total_s[:, n - 1])),
                    "fwd_spread_s": float(np.ptp(fwd)),
                    "bwd_spread_s": float(np.ptp(bwd[:, n - 1])),
                    "step_spread_s": float(np.ptp(step[:, n - 1])),
                    "compute_spread_s": float(np.ptp(total_s[:, n - 1])),
                    "peak_memory_bytes": peak,
                    "saved_bytes": int(saved[n - 1]),
                    "param_bytes": param_bytes,
                    "grad_bytes": grad_bytes,
                    "optimizer_bytes": opt_bytes,
                    "rss_peak_bytes": rss,
                    "trainable_params": sum(p.numel() for p in blocks[n - 1]),
                    "repeats": request.repeats,
                    "clock": clock_name,
                    "memory_method": method,
                    **prov,
                }
            )
    return pd.DataFrame(rows, columns=list(PROFILE_COLUMNS))
