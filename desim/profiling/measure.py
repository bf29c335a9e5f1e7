"""Measurements of one grid point at every block depth: times, FLOPs, saved and peak bytes.

:mod:`desim.profiling.runner` runs them over a grid and explains what each one measures; the
FLOPs and the memory of most methods are counted on the ``meta`` device (:class:`MetaCounter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from desim.profiling.memory import SavedTensorMeter, live_peak_bytes, optimizer_state_bytes
from desim.profiling.mezo import mezo_step
from desim.profiling.models import build_model, family, set_trainable
from desim.profiling.request import ProfileRequest

Inputs = dict[str, torch.Tensor]
Blocks = list[list[torch.nn.Parameter]]


def step_clock(device: str) -> tuple[Callable[[], float], str]:
    """The step clock and its name: thread CPU time with one CPU thread, else wall time."""
    if device == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time, "thread-cpu"
    return time.perf_counter, "wall"


def device_sync(device: str) -> Callable[[], None]:
    """What waits for the device's queued work: ``torch.cuda.synchronize`` on CUDA, else nothing."""
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
    depths: tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time forward, per-depth backward and per-depth step at one grid point.

    ``depths`` are the depths to time, ascending (empty: every block).

    Returns:
        ``fwd (R, D)`` (one forward shared by every depth), ``bwd (R, D)`` and
        ``step (R, D)`` seconds, ``R = repeats``, ``D`` the depths timed.
    """
    timed = depths or tuple(range(1, len(blocks) + 1))
    set_trainable(blocks, set(range(1, len(blocks) + 1)))
    fwd = np.zeros((repeats, len(timed)))
    bwd = np.zeros((repeats, len(timed)))
    step = np.zeros((repeats, len(timed)))
    for r in range(-warmup, repeats):
        sync()
        t0 = clock()
        loss = model(**inputs).loss
        sync()
        t1 = clock()
        if r >= 0:
            fwd[r] = t1 - t0
        grads = []
        for i, n in enumerate(timed):
            t0 = clock()
            grads.append(torch.autograd.grad(loss, blocks[n - 1], retain_graph=n != timed[-1]))
            sync()
            if r >= 0:
                bwd[r, i] = clock() - t0
        # steps after all backwards: a step changes weights the retained graph still needs
        for i, n in enumerate(timed):
            params, opt = blocks[n - 1], optimizers[n - 1]
            for p, g in zip(params, grads[i], strict=True):
                p.grad = g
            t0 = clock()
            opt.step()
            sync()
            if r >= 0:
                step[r, i] = clock() - t0
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
    depths: tuple[int, ...] = (),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time a whole MeZO step of every depth (or of ``depths``) at one grid point.

    Returns:
        ``fwd (R, D)`` (both forward passes), ``bwd (R, D)`` (zeros) and ``step (R, D)``
        (perturbations and update) seconds.
    """
    timed = depths or tuple(range(1, len(blocks) + 1))
    fwd = np.zeros((repeats, len(timed)))
    step = np.zeros((repeats, len(timed)))
    set_trainable(blocks, set())
    for r in range(-warmup, repeats):
        for i, n in enumerate(timed):
            t = mezo_step(model, blocks[n - 1], inputs, seed=seed + 7919 * (r + warmup) + n,
                          clock=clock, sync=sync)
            if r >= 0:
                fwd[r, i], step[r, i] = t.forward_s, t.update_s
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


def block_optimizers(blocks: Blocks, method: str) -> list[torch.optim.Optimizer] | None:
    """One AdamW optimizer per block (``None`` for MeZO, which has no optimizer state)."""
    if method == "mezo":
        return None
    return [torch.optim.AdamW(p, lr=1e-4) for p in blocks]


class MetaCounter:
    """The meta-device twin of the profiled model: FLOPs and memory by shape alone."""

    def __init__(self, data: dict[str, Any], request: ProfileRequest) -> None:
        method = "lora" if request.method == "qlora" else request.method
        self.model, self.blocks = build_model(
            data, method, device="meta", seed=request.seed,
            lora_rank=request.lora_rank, adapter_size=request.adapter_size,
        )
        self.optimizers = block_optimizers(self.blocks, request.method)
        self.family = family(data)
        self.method = request.method

    def flops(self, inputs: Inputs) -> np.ndarray:
        """``(N,)`` counted FLOPs of one training step of each block (:func:`flops_by_depth`)."""
        return flops_by_depth(self.model, self.blocks, self.optimizers, inputs)

    def saved(self, inputs: Inputs) -> np.ndarray:
        """``(N,)`` bytes kept for backward at each depth (:func:`saved_bytes_by_depth`)."""
        if self.method == "mezo":  # no graph: nothing is saved
            return np.zeros(len(self.blocks), dtype=np.int64)
        return saved_bytes_by_depth(self.model, self.blocks, inputs)

    def live(self, inputs: Inputs) -> np.ndarray:
        """``(N,)`` live-tensor peak bytes at each depth (:func:`live_peak_by_depth`)."""
        return live_peak_by_depth(self.model, self.blocks, self.optimizers, inputs)
