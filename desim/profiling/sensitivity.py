"""Kill-and-Revive sensitivity scores: gradient norms of LoRA modules over real training steps.

DLoRA's Kill-and-Revive keeps only the LoRA modules whose sensitivity is high. The proxy
measured here is the gradient norm: at each of ``S`` real LoRA training steps (AdamW, every
module trainable, random inputs and labels, the random-weight model), the score of module
``i`` is ``‖∇A_i‖_F + ‖∇B_i‖_F``, divided by the mean over the modules at that step, so 1.0 is
the step's average. Modules are the self-attention query and value LoRA pairs, indexed from the
input over the whole model: ``module = 2(l − 1) + t`` for layer ``l`` (1-based; encoder layers
first, then for T5 the decoder layers) and ``t`` = 0 (query) or 1 (value).

The weights are random, so the scores describe how gradient mass spreads over depth in this
architecture at initialisation, not a fine-tuned model's task sensitivity (README
"Calibration").
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import torch

from desim.errors import InputError
from desim.io.calibration import KR_SCORE_COLUMNS
from desim.io.model_configs import model_config_data
from desim.profiling.models import build_model, family, layer_counts, make_inputs

_MODULE = {
    "roberta": re.compile(r"encoder\.layer\.(\d+)\.attention\.self\.(query|value)\.lora_"),
    "t5": re.compile(r"(encoder|decoder)\.block\.(\d+)\.layer\.0\.SelfAttention\.(q|v)\.lora_"),
}


def _module_index(name: str, fam: str, encoder_layers: int) -> tuple[int, int, str] | None:
    """``(module, layer, target)`` of a LoRA parameter name, or ``None``."""
    found = _MODULE[fam].search(name)
    if found is None:
        return None
    if fam == "t5":
        part, index, proj = found.group(1), int(found.group(2)), found.group(3)
        layer = index + 1 + (encoder_layers if part == "decoder" else 0)
    else:
        layer, proj = int(found.group(1)) + 1, found.group(2)
    t = 0 if proj in ("query", "q") else 1
    return 2 * (layer - 1) + t, layer, "query" if t == 0 else "value"


def kr_scores(
    model: str,
    steps: int,
    batch_size: int,
    seq_len: int,
    *,
    target_len: int | None = None,
    lora_rank: int = 8,
    lr: float = 1e-4,
    seed: int = 0,
    threads: int | None = 1,
) -> pd.DataFrame:
    """Run ``steps`` LoRA training steps and score every module at every step.

    Args:
        model: shipped model name or config JSON path.
        steps: training steps ``S`` (≥ 1).
        batch_size: sequences per step.
        seq_len: tokens per sequence (T5: encoder input).
        target_len: T5 target tokens (default 32); encoder-only models take none.
        lora_rank: LoRA rank.
        lr: AdamW learning rate.
        seed: seed of the weights and of each step's inputs (``seed + step``).
        threads: torch CPU threads (``None``: torch's default).

    Returns:
        A tidy frame with columns :data:`desim.io.calibration.KR_SCORE_COLUMNS`, one row per
        (step, module); ``step`` from 1, ``module`` from 0.

    Raises:
        InputError: a non-positive count, or ``target_len`` for an encoder-only model.
    """
    for label, value in (("--steps", steps), ("--batch", batch_size), ("--seq-len", seq_len)):
        if value < 1:
            raise InputError(f"{label}: must be a positive integer (got {value})")
    data = model_config_data(model)
    fam = family(data)
    if fam != "t5" and target_len:
        raise InputError(f"--target-len: {data['_name']} is an encoder-only model")
    target = (target_len or 32) if fam == "t5" else 0
    if threads is not None:
        torch.set_num_threads(threads)
    net, _ = build_model(data, "lora", lora_rank=lora_rank, seed=seed)
    modules = _lora_modules(net, fam, layer_counts(data)[0])
    params = [p for _, _, ps in modules.values() for p in ps]
    optimizer = torch.optim.AdamW(params, lr=lr)
    order = sorted(modules)
    rows: list[dict[str, Any]] = []
    for step in range(1, steps + 1):
        inputs = make_inputs(data, batch_size, seq_len, target, "cpu", seed + step)
        scores = _step_scores(net, inputs, [modules[i][2] for i in order], optimizer)
        for i, score in zip(order, scores, strict=True):
            layer, proj, _ = modules[i]
            rows.append({"step": step, "module": i, "layer": layer, "target": proj,
                         "score": float(score)})
    return pd.DataFrame(rows, columns=list(KR_SCORE_COLUMNS))


def _lora_modules(
    net: torch.nn.Module, fam: str, encoder_layers: int
) -> dict[int, tuple[int, str, list[torch.nn.Parameter]]]:
    """Module index -> ``(layer, target, its LoRA parameters)``, each made trainable."""
    modules: dict[int, tuple[int, str, list[torch.nn.Parameter]]] = {}
    for name, param in net.named_parameters():
        found = _module_index(name, fam, encoder_layers)
        if found is not None:
            index, layer, proj = found
            modules.setdefault(index, (layer, proj, []))[2].append(param)
            param.requires_grad_(True)
    return modules


def _step_scores(
    net: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    modules: list[list[torch.nn.Parameter]],
    optimizer: torch.optim.Optimizer,
) -> np.ndarray:
    """One training step: each module's gradient norm over the step's mean (1.0 = average)."""
    loss = net(**inputs).loss
    loss.backward()
    norms = np.array([
        sum(float(p.grad.norm()) for p in params if p.grad is not None) for params in modules
    ])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mean = norms.mean()
    return norms / mean if mean > 0 else np.ones_like(norms)
