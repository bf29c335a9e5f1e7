"""Build a transformer with random weights and one fine-tuning method, split into blocks.

The model comes from its Hugging Face config (no download, no pretrained weights: timing and
memory do not depend on weight values). Two families:

- ``roberta``: a RoBERTa sequence classifier (two labels). One encoder layer is one block,
  numbered from the output: block ``n`` is encoder layer ``L − n`` (0-based), so block 1 sits
  next to the classification head.
- ``t5``: a T5 encoder-decoder (``T5ForConditionalGeneration``, FLAN-T5 configs) trained as a
  sequence-to-sequence model on target tokens. Blocks are numbered from the output too: blocks
  ``1..Ld`` are the decoder layers from the last one, blocks ``Ld+1..Ld+Le`` the encoder layers
  from the last one, so the backward pass to an encoder block crosses the whole decoder.

Methods (the backbone, embeddings and head stay frozen):

- ``lora``: peft LoRA, rank ``r`` on the self-attention query and value projections (RoBERTa
  ``query``/``value``, T5 ``SelfAttention.q``/``.v``; two modules per layer), alpha ``2r``, no
  dropout;
- ``lora-checkpoint``: ``lora`` with gradient checkpointing at every layer (transformers'
  activation checkpointing, non-reentrant ``torch.utils.checkpoint``);
- ``qlora``: ``lora`` on top of 4-bit NF4 frozen linear layers (bitsandbytes ``Linear4bit``,
  fp32 compute); every linear layer inside the transformer layers is quantised, embeddings and
  head stay fp32;
- ``mezo``: the LoRA values of ``lora``, trained zeroth-order (:mod:`desim.profiling.mezo`);
- ``ia3``: peft IA3 on key, value and the feed-forward output (RoBERTa ``key``/``value``/
  ``output.dense``, T5 ``k``/``v``/``wo``);
- ``adapter``: a Houlsby/Pfeiffer bottleneck adapter after each layer's feed-forward output
  projection (``y + up(gelu(down(y)))``, width ``adapter_size``, ``up`` zero-initialised);
- ``full``: every weight of the layer.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from desim.errors import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LORA_METHODS = ("lora", "lora-checkpoint", "qlora", "mezo")
_LAYER = {
    "roberta": re.compile(r"encoder\.layer\.(\d+)\."),
    "t5": re.compile(r"(encoder|decoder)\.block\.(\d+)\."),
}
_LORA_TARGETS: dict[str, list[str] | str] = {
    "roberta": ["query", "value"],
    "t5": r".*\.SelfAttention\.(q|v)$",
}
_IA3_TARGETS = {
    "roberta": (["key", "value", "output.dense"], ["output.dense"]),
    "t5": (["k", "v", "wo"], ["wo"]),
}
QLORA_HINT = (
    "--method qlora needs bitsandbytes (pip install bitsandbytes==0.50.2), which is not "
    "installed; without it qlora is priced only by the analytic estimate "
    "(model.method = \"qlora\", cost model source analytic-estimate)"
)


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

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped layer's weight (T5's feed-forward reads ``wo.weight.dtype``)."""
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.linear(x)
        return y + self.adapter_up(nn.functional.gelu(self.adapter_down(y)))


def family(data: dict[str, Any]) -> str:
    """The model family of a config mapping: ``roberta`` or ``t5``."""
    return str(data.get("_family") or ("t5" if data.get("model_type") == "t5" else "roberta"))


def layer_counts(data: dict[str, Any]) -> tuple[int, int]:
    """``(encoder layers, decoder layers)`` of a config mapping (decoder 0 for RoBERTa)."""
    if family(data) == "t5":
        enc = int(data["num_layers"])
        return enc, int(data.get("num_decoder_layers") or enc)
    return int(data["num_hidden_layers"]), 0


def hf_config(data: dict[str, Any]) -> Any:
    """A transformers config (``RobertaConfig`` or ``T5Config``) from a config mapping.

    Keys starting ``_`` and ``architectures`` are dropped; ``use_cache`` is off (training keeps
    no key/value cache). RoBERTa gets two labels.
    """
    keep = {k: v for k, v in data.items() if not k.startswith("_") and k != "architectures"}
    keep["use_cache"] = False
    if family(data) == "t5":
        from transformers import T5Config

        return T5Config(**keep)
    from transformers import RobertaConfig

    keep["num_labels"] = 2
    return RobertaConfig(**keep)


def transformer_layers(model: nn.Module, fam: str) -> list[nn.Module]:
    """The model's transformer layers, encoder first (for hooks on layer inputs)."""
    get_base_model = getattr(model, "get_base_model", None)  # a peft wrapper has it
    base: nn.Module = model if get_base_model is None else get_base_model()
    if fam == "t5":
        return [*_module_list(base, "encoder.block"), *_module_list(base, "decoder.block")]
    return list(_module_list(base, "roberta.encoder.layer"))


def _module_list(module: nn.Module, target: str) -> nn.ModuleList:
    """The ``nn.ModuleList`` submodule of ``module`` at the dotted path ``target``."""
    found = module.get_submodule(target)
    if not isinstance(found, nn.ModuleList):
        raise TypeError(f"{type(module).__name__}.{target} is not an nn.ModuleList")
    return found


def _feed_forward_outputs(model: nn.Module, fam: str) -> Iterator[tuple[nn.Module, str]]:
    for layer in transformer_layers(model, fam):
        if fam == "t5":
            yield _module_list(layer, "layer")[-1].get_submodule("DenseReluDense"), "wo"
        else:
            yield layer.get_submodule("output"), "dense"


def _quantize_layers(model: nn.Module, fam: str) -> None:
    """Replace every linear layer inside the transformer layers by a 4-bit NF4 one."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise InputError(QLORA_HINT) from None
    for layer in transformer_layers(model, fam):
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                q = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    compute_dtype=torch.float32, quant_type="nf4",
                )
                q.weight = bnb.nn.Params4bit(
                    child.weight.data.cpu(), requires_grad=False, quant_type="nf4"
                )
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q.to(child.weight.device))  # .to() quantises


def _apply_method(
    model: PreTrainedModel, fam: str, method: str, lora_rank: int, adapter_size: int
) -> nn.Module:
    if method == "adapter":
        for parent, name in _feed_forward_outputs(model, fam):
            setattr(parent, name, BottleneckAdapter(getattr(parent, name), adapter_size))
        return model
    if method == "ia3":
        from peft import IA3Config, get_peft_model

        targets, feedforward = _IA3_TARGETS[fam]
        return get_peft_model(
            model, IA3Config(target_modules=targets, feedforward_modules=feedforward)
        )
    if method in LORA_METHODS:
        from peft import LoraConfig, get_peft_model

        if method == "qlora":
            _quantize_layers(model, fam)
        lora = LoraConfig(
            r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0,
            target_modules=_LORA_TARGETS[fam],
        )
        peft_model = get_peft_model(model, lora)
        if method == "lora-checkpoint":
            model.activation_checkpointing_enable({"use_reentrant": False})
            # transformers then makes the embedding output require grad (reentrant checkpoints
            # need it); that would extend every backward pass to the embeddings and keep the
            # activations of the layers below block n, so it is undone
            model.disable_input_require_grads()
            # T5 attention makes its zero position bias a grad-requiring leaf under
            # checkpointing (for reentrant checkpoints), which extends the backward pass of a
            # decoder block through every decoder layer below it; that flag is turned off
            for module in model.modules():
                if type(module).__name__ == "T5Attention":
                    # torch types Module.__setattr__'s value as Tensor | Module; any value works
                    module.gradient_checkpointing = False  # type: ignore[assignment]
        return peft_model
    return model


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
        method: a method of :data:`desim.profiling.METHODS`.
        lora_rank: LoRA rank.
        adapter_size: adapter bottleneck width.
        device: a torch device name (``cpu``, ``cuda``, ``meta``; ``qlora`` needs cpu or cuda).
        seed: seed of the random weights.

    Returns:
        ``(model, blocks)``: the model in training mode with every parameter frozen, and
        ``blocks[n − 1]``, the parameters of block ``n`` (block 1 next to the output).

    Raises:
        InputError: ``qlora`` without bitsandbytes or on the meta device.
    """
    fam = family(data)
    cfg = hf_config(data)
    if method == "qlora" and device == "meta":
        raise InputError("qlora cannot be built on the meta device (4-bit weights need values)")
    torch.manual_seed(seed)
    with torch.device(device), warnings.catch_warnings():
        # peft asks transformers for deprecated checkpointing names (a FutureWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if fam == "t5":
            from transformers import T5ForConditionalGeneration

            base: PreTrainedModel = T5ForConditionalGeneration(cfg)
        else:
            from transformers import RobertaForSequenceClassification

            base = RobertaForSequenceClassification(cfg)
        model = _apply_method(base, fam, method, lora_rank, adapter_size)
    model.train()
    return model, split_blocks(model, data, method)


def split_blocks(
    model: nn.Module, data: dict[str, Any], method: str
) -> list[list[nn.Parameter]]:
    """Freeze every parameter and return ``blocks[n − 1]``, the trainable values of block ``n``."""
    fam = family(data)
    enc, dec = layer_counts(data)
    blocks: list[list[nn.Parameter]] = [[] for _ in range(enc + dec)]
    marker = {"ia3": "ia3_", "adapter": "adapter_"}.get(method)
    if method in LORA_METHODS:
        marker = "lora_"
    for name, param in model.named_parameters():
        param.requires_grad_(False)
        found = _LAYER[fam].search(name)
        if found is None or (marker is not None and marker not in name):
            continue
        index = int(found.groups()[-1])
        if fam == "t5" and found.group(1) == "decoder":
            blocks[dec - 1 - index].append(param)
        else:
            blocks[dec + enc - 1 - index].append(param)
    if any(not b for b in blocks):
        raise RuntimeError(f"method {method!r} left a block without trainable parameters")
    return blocks


def set_trainable(blocks: list[list[nn.Parameter]], depths: set[int]) -> None:
    """Make exactly the blocks in ``depths`` (1-based, from the output) require grad."""
    for n, params in enumerate(blocks, start=1):
        for p in params:
            p.requires_grad_(n in depths)


def make_inputs(
    data: dict[str, Any], b: int, s: int, target_len: int, device: str, seed: int
) -> dict[str, torch.Tensor]:
    """Random model inputs with labels: keyword arguments of the model's forward.

    RoBERTa: ``input_ids (b, s)`` (ids ≥ 3: 0–2 are special tokens) and ``labels (b,)``.
    T5: ``input_ids (b, s)`` and target ``labels (b, target_len)`` (ids ≥ 3: pad, eos, unk).
    """
    gen = torch.Generator().manual_seed(seed)
    vocab = int(data["vocab_size"])
    ids = torch.randint(3, vocab, (b, s), generator=gen)
    if family(data) == "t5":
        labels = torch.randint(3, vocab, (b, target_len), generator=gen)
    else:
        labels = torch.randint(0, 2, (b,), generator=gen)
    return {"input_ids": ids.to(device), "labels": labels.to(device)}
