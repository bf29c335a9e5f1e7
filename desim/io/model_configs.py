"""Model configs: a shipped model by name (``roberta-base``) or a config JSON by path.

RoBERTa and T5 configs are both read; every problem is an :class:`~desim.errors.InputError`
naming the file (or an :class:`~desim.errors.UnknownNameError` listing the shipped models).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from desim.costs.transformer import TransformerConfig, config_from_mapping
from desim.errors import InputError, UnknownNameError, did_you_mean
from desim.io.shipped import data_file, shipped_models


def load_model_config(name: str) -> TransformerConfig:
    """Load a shipped model config by name (``roberta-base``) or a config JSON by path.

    RoBERTa and T5 keys are both read (:func:`desim.costs.transformer.config_from_mapping`).
    """
    path, raw = _read_model_json(name)
    return config_from_mapping(raw, path.stem, str(path))


def _read_model_json(name: str) -> tuple[Path, dict[str, Any]]:
    """The path and JSON object of a shipped model config (by name) or a config file."""
    path = Path(name)
    if not (path.suffix == ".json" and path.exists()):
        if name not in shipped_models():
            raise UnknownNameError(
                f"model.name: unknown model {name!r}; known: {', '.join(shipped_models())} "
                f"or a path to a config .json{did_you_mean(name, shipped_models())}"
            )
        path = data_file("models", f"{name}.json")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read model config: {exc}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a model config must be a JSON object")
    return path, raw


def model_config_data(name: str) -> dict[str, Any]:
    """The whole config mapping of a shipped model or config JSON (for building the model).

    The mapping gains ``_name``, the model's name in tables (the file stem), and ``_family``
    (``roberta`` or ``t5``: the file's ``_family`` key, else ``t5`` when ``model_type`` is
    ``t5``). T5 configs use Hugging Face's T5 keys (``d_model``, ``d_ff``, ``d_kv``,
    ``num_heads``, ``num_layers``, ``num_decoder_layers``, ``vocab_size``).

    Raises:
        UnknownNameError, InputError: as :func:`load_model_config`, or a T5 config lacking
            one of its keys.
    """
    path, raw = _read_model_json(name)
    family = raw.get("_family") or ("t5" if raw.get("model_type") == "t5" else "roberta")
    if family not in ("roberta", "t5"):
        raise InputError(f"{path}: _family: expected 'roberta' or 't5' (got {family!r})")
    if family == "t5":
        bad = [f for f in T5_FIELDS if not isinstance(raw.get(f), int) or raw[f] <= 0]
        if bad:
            raise InputError(f"{path}: missing or non-positive integer fields: {', '.join(bad)}")
        raw["_name"] = path.stem
    else:
        raw["_name"] = load_model_config(str(path)).name
    raw["_family"] = family
    return raw


T5_FIELDS = ("d_model", "d_ff", "d_kv", "num_heads", "num_layers", "vocab_size")
