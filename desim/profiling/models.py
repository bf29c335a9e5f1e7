"""Build a RoBERTa sequence classifier with random weights and one fine-tuning method.

The model comes from its Hugging Face config (no download, no pretrained weights: timing and
memory do not depend on weight values). Methods:

- ``lora``: peft LoRA, rank ``r`` on the query and value projections (alpha ``2r``, no dropout);
- ``ia3``: peft IA3 on key, value and the feed-forward output (peft's RoBERTa defaults);
- ``adapter``: a Houlsby/Pfeiffer bottleneck adapter after each layer's feed-forward output
  projection (``y + up(gelu(down(y)))``, width ``adapter_size``, ``up`` zero-initialised);
- ``full``: every weight of the layer.

Blocks are one encoder layer each, numbered from the output: block ``n`` is encoder layer
``L − n`` (0-based), so block 1 sits next to the classification head. The backbone, the
embeddings and the head are frozen.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")
_METHOD_PARAM = {"lora": "lora_", "ia3": "ia3_", "adapter": "adapter_"}


class BottleneckAdapter(nn.Module):
    """A linear layer followed by a residual bottleneck adapter (Houlsby et al. 2019)."""

    def __init__(self, linear: nn.Linear, size: int) -> None:
        super().__init__()
        self.linear = linear
        out = linear.out_features
        self.adapter_down = nn.Linear(out, size)
        self.adapter_up = nn.Linear(size, out)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.linear(x)
        return y + self.adapter_up(nn.functional.gelu(self.adapter_down(y)))


def hf_config(data: dict[str, Any]) -> Any:
    """A transformers ``RobertaConfig`` from a config mapping (keys starting ``_`` dropped)."""
    from transformers import RobertaConfig

    keep = {k: v for k, v in data.items() if not k.startswith("_") and k != "architectures"}
    keep["num_labels"] = 2
    return RobertaConfig(**keep)


def build_model(
    data: dict[str, Any],
    method: str,
    *,
    lora_rank: int = 8,
    adapter_size: int = 64,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[nn.Module, list[list[nn.Parameter]]]:
    """Build the model with random weights on ``device`` and split its trainable parameters.

    Args:
        data: the model config mapping (``desim/data/models/*.json``).
        method: ``lora``, ``adapter``, ``ia3`` or ``full``.
        lora_rank: LoRA rank.
        adapter_size: adapter bottleneck width.
        device: a torch device name (``cpu``, ``cuda``, ``meta``).
        seed: seed of the random weights.

    Returns:
        ``(model, blocks)``: the model in training mode with every parameter frozen, and
        ``blocks[n − 1]``, the parameters of block ``n`` (block 1 next to the output).
    """
    from transformers import RobertaForSequenceClassification

    cfg = hf_config(data)
    torch.manual_seed(seed)
    with torch.device(device):
        model: nn.Module = RobertaForSequenceClassification(cfg)
        if method == "adapter":
            for layer in model.roberta.encoder.layer:
                layer.output.dense = BottleneckAdapter(layer.output.dense, adapter_size)
        elif method == "lora":
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(
                r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
                target_modules=["query", "value"],
            )
            model = get_peft_model(model, lora)
        elif method == "ia3":
            from peft import IA3Config, get_peft_model

            ia3 = IA3Config(
                target_modules=["key", "value", "output.dense"],
                feedforward_modules=["output.dense"],
            )
            model = get_peft_model(model, ia3)
    model.train()
    layers = cfg.num_hidden_layers
    blocks: list[list[nn.Parameter]] = [[] for _ in range(layers)]
    marker = _METHOD_PARAM.get(method)
    for name, param in model.named_parameters():
        param.requires_grad_(False)
        found = _LAYER.search(name)
        if found is None or (marker is not None and marker not in name):
            continue
        blocks[layers - 1 - int(found.group(1))].append(param)
    if any(not b for b in blocks):
        raise RuntimeError(f"method {method!r} left a block without trainable parameters")
    return model, blocks


def set_trainable(blocks: list[list[nn.Parameter]], depths: set[int]) -> None:
    """Make exactly the blocks in ``depths`` (1-based, from the output) require grad."""
    for n, params in enumerate(blocks, start=1):
        for p in params:
            p.requires_grad_(n in depths)
