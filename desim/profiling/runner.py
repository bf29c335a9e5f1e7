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
median and the spread (max − min) of each time. The repetitions are interleaved: every point is
warmed up, then each round times one repetition of every point in turn, so a host whose speed
drifts over minutes slows all points alike (tables shipped before 2026-12-02 timed each point's
repetitions back to back). ``rss_peak_bytes`` is then the process's high-water mark after all
of them.

Clock: on CPU with one torch thread every operation, forward and backward, runs on the calling
thread, so times are that thread's CPU time (:func:`time.thread_time`, ``clock = thread-cpu``):
other processes sharing the cores then do not inflate them (they still share caches and memory
bandwidth). With several threads, or on CUDA after a device synchronisation, times are wall
clock (:func:`time.perf_counter`, ``clock = wall``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from desim.errors import InputError
from desim.io.calibration import PROFILE_COLUMNS
from desim.io.hosts import cpu_name
from desim.io.model_configs import model_config_data
from desim.profiling.measure import (
    Blocks,
    Inputs,
    MetaCounter,
    block_optimizers,
    cuda_peak_by_depth,
    device_sync,
    live_peak_by_depth,
    step_clock,
    time_mezo_point,
    time_point,
)
from desim.profiling.memory import (
    optimizer_state_bytes,
    peak_rss_bytes,
    quant_state_bytes,
    tensor_bytes,
)
from desim.profiling.models import LORA_METHODS, build_model, family, make_inputs
from desim.profiling.request import ProfileRequest

Progress = Callable[[int, int], None] | None
# methods whose peak is the live-tensor high-water mark of a whole step (on CPU)
LIVE_METHODS = ("lora-checkpoint", "mezo", "qlora")


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
    _use_device(device, request.threads)
    kwargs = dict(lora_rank=request.lora_rank, adapter_size=request.adapter_size)
    model, blocks = build_model(data, request.method, device=device, seed=request.seed, **kwargs)
    counter = MetaCounter(data, request)
    optimizers = block_optimizers(blocks, request.method)
    sync = device_sync(device)
    clock, clock_name = step_clock(device)
    prov = provenance(device)
    grid = request.grid
    tick = _ticker(len(grid) * (request.warmup + request.repeats), on_progress)
    frames = []
    timed = tuple(sorted(request.blocks))
    if timed and timed[-1] > len(blocks):
        raise InputError(f"--blocks: {data['_name']} has {len(blocks)} blocks (got {timed[-1]})")
    rows = np.array(timed or range(1, len(blocks) + 1)) - 1  # the depths' rows
    quant = quant_state_bytes(model)
    param_bytes = tensor_bytes(model.parameters()) + quant
    inputs_of = {p: make_inputs(data, *p, target_len, device, request.seed) for p in grid}
    times = _interleaved_times(request, grid, inputs_of, clock, model, blocks, optimizers,
                               sync, tick, timed)
    for b, s in grid:
        inputs = inputs_of[(b, s)]
        fwd, bwd, step = times[(b, s)]
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
        peak, memory_method = _peak_memory(
            request, model, blocks, optimizers, inputs, counter, meta_inputs,
            saved + param_bytes + grads + states, quant,
        )
        frame = pd.DataFrame({
            **static, "batch_size": b, "seq_len": s,
            "flops": counter.flops(meta_inputs), "peak_memory_bytes": peak.astype(np.int64),
            "saved_bytes": saved, "rss_peak_bytes": peak_rss_bytes(),
            "memory_method": memory_method,
        }).iloc[rows].reset_index(drop=True)
        frames.append(frame.assign(**_time_columns(fwd, bwd, step)))
    return pd.concat(frames, ignore_index=True)[list(PROFILE_COLUMNS)]


def _interleaved_times(
    request: ProfileRequest, grid: list[tuple[int, int]], inputs_of: dict[tuple[int, int], Inputs],
    clock: Callable[[], float], model: torch.nn.Module, blocks: Blocks,
    optimizers: list[torch.optim.Optimizer] | None, sync: Callable[[], None],
    tick: Callable[[], None], timed: tuple[int, ...],
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(fwd, bwd, step)`` of every grid point, the repetitions interleaved across points.

    Every point is warmed up first; then round ``r`` times one repetition of each point in
    turn. A host whose speed drifts over minutes (docs: Calibration, "Drift") then slows every
    point alike, so the drift moves the table's scale, not its shape.
    """
    parts: dict[tuple[int, int], list[tuple[np.ndarray, ...]]] = {p: [] for p in grid}
    for r in range(request.repeats):
        for p in grid:
            warmup = request.warmup if r == 0 else 0
            args = (1, warmup, sync, tick)
            if optimizers is None:
                got = time_mezo_point(clock, model, blocks, inputs_of[p], *args,
                                      seed=request.seed + 104729 * r, depths=timed)
            else:
                got = time_point(clock, model, blocks, optimizers, inputs_of[p], *args,
                                 depths=timed)
            parts[p].append(got)
    out = {}
    for p in grid:
        fwd, bwd, step = (np.concatenate(x) for x in zip(*parts[p], strict=True))
        out[p] = (fwd, bwd, step)
    return out


def _use_device(device: str, threads: int | None) -> None:
    """Refuse CUDA when torch sees none; on CPU run ``threads`` torch threads (when given)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: torch sees no CUDA device (is this a CPU-only torch?)")
    if device == "cpu" and threads is not None:
        torch.set_num_threads(threads)


def _ticker(total: int, on_progress: Progress) -> Callable[[], None]:
    """A callback for each repetition that reports ``(done, total)`` to ``on_progress``."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    return tick


def _peak_memory(
    request: ProfileRequest,
    model: torch.nn.Module,
    blocks: Blocks,
    optimizers: list[torch.optim.Optimizer] | None,
    inputs: Inputs,
    counter: MetaCounter,
    meta_inputs: Inputs,
    saved_total: np.ndarray,
    quant: int,
) -> tuple[np.ndarray, str]:
    """Peak bytes of each depth's training step at one point, and how they were found.

    ``saved_total`` is the saved-tensors estimate (saved bytes, parameters, gradients and
    optimizer state), the figure of methods whose peak is not measured otherwise.
    """
    if request.device == "cuda":
        return cuda_peak_by_depth(model, blocks, optimizers, inputs), "cuda-max-allocated"
    if request.method == "qlora":  # 4-bit weights need values: a real step on CPU
        return live_peak_by_depth(model, blocks, optimizers, inputs) + quant, "live-tensors"
    if request.method in LIVE_METHODS:
        return counter.live(meta_inputs), "live-tensors"
    return saved_total, "saved-tensors"


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
        table: a profile table (:func:`desim.io.calibration.read_profile`).
        model_path: model config to build, for a model that is not shipped.
    """
    out = table.copy()
    keys = ["model", "method", "lora_rank", "batch_size", "seq_len", "target_len"]
    for (model, method, rank), rows in out.groupby(keys[:3], sort=False):
        data = model_config_data(model_path or str(model))
        request = ProfileRequest(str(model), str(method), (1,), (1,), lora_rank=int(rank) or 8)
        counter = MetaCounter(data, request)
        for (b, s, t), point in rows.groupby(keys[3:], sort=False):
            flops = counter.flops(make_inputs(data, int(b), int(s), int(t), "meta", 0))
            out.loc[point.index, "flops"] = flops[point["block"].to_numpy() - 1]
    return out
