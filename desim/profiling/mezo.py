"""One MeZO step: zeroth-order training of a block's values with two forward passes.

MeZO (Malladi et al. 2023) estimates the gradient along a random direction ``z ~ N(0, I)``
by a central difference and never runs a backward pass, so it keeps no activations, gradients
or optimizer state. ``z`` is regenerated from a seed each time it is needed instead of being
stored, so the only extra memory is one parameter tensor's worth of noise at a time:

1. ``θ ← θ + εz``; forward with loss ``ℓ₊`` (no autograd graph);
2. ``θ ← θ − 2εz``; forward with loss ``ℓ₋``;
3. ``θ ← θ + εz`` (restored); projected gradient ``g = (ℓ₊ − ℓ₋) / 2ε``;
4. ``θ ← θ − η g z`` (SGD along ``z``).

The perturbation and the update are in-place on the block's values; the scalar ``g`` is all a
device would upload (the server regenerates ``z`` from the shared seed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MezoTiming:
    """Seconds of one MeZO step: ``forward_s`` (both forward passes) and ``update_s``."""

    forward_s: float
    update_s: float


def _noise(p: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    if gen is None:  # meta tensors have no values: shapes are all that matter
        return torch.empty_like(p)
    return torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype)


def _generator(params: list[nn.Parameter], seed: int) -> torch.Generator | None:
    device = params[0].device
    if device.type == "meta":
        return None
    return torch.Generator(device=device).manual_seed(seed)


def _perturb(params: list[nn.Parameter], seed: int, scale: float | torch.Tensor) -> None:
    gen = _generator(params, seed)
    for p in params:
        z = _noise(p, gen)
        if isinstance(scale, torch.Tensor):
            p.addcmul_(z, scale)
        else:
            p.add_(z, alpha=scale)
        del z


def mezo_step(
    model: nn.Module,
    params: list[nn.Parameter],
    inputs: Mapping[str, torch.Tensor],
    *,
    seed: int,
    eps: float = 1e-3,
    lr: float = 1e-6,
    clock: Callable[[], float] | None = None,
    sync: Callable[[], None] = lambda: None,
) -> MezoTiming:
    """Run one MeZO step on ``params`` (in place) and time its parts with ``clock``.

    Args:
        model: the model; its forward takes ``inputs`` and returns an output with ``loss``.
        params: the values to train (one block's LoRA matrices).
        inputs: keyword arguments of the forward pass, labels included.
        seed: seed of this step's direction ``z``.
        eps: perturbation scale ``ε``.
        lr: learning rate ``η``.
        clock: a clock in seconds (``None``: timing is not taken; both fields are 0).
        sync: waits for the device (CUDA) before a clock reading.

    Returns:
        The step's :class:`MezoTiming`.
    """
    tick = clock or (lambda: 0.0)
    forward = update = 0.0
    with torch.no_grad():
        sync()
        t0 = tick()
        _perturb(params, seed, eps)
        sync()
        t1 = tick()
        loss_pos = model(**inputs).loss
        sync()
        t2 = tick()
        _perturb(params, seed, -2.0 * eps)
        sync()
        t3 = tick()
        loss_neg = model(**inputs).loss
        sync()
        t4 = tick()
        _perturb(params, seed, eps)
        projected = (loss_pos - loss_neg) / (2.0 * eps)
        _perturb(params, seed, -lr * projected)
        sync()
        t5 = tick()
        forward = (t2 - t1) + (t4 - t3)
        update = (t1 - t0) + (t3 - t2) + (t5 - t4)
    return MezoTiming(forward_s=forward, update_s=update)
