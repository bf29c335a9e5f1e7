"""File input and output: scenarios, model configs and result tables (the only file I/O).

Reading turns every problem into an :class:`~desim.errors.InputError` naming the file and the
field or line. Writing is atomic per file (write to a temporary name, then ``os.replace``), and
``run.json`` is written last, so a results directory with ``run.json`` is complete.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from desim.cost import TransformerConfig
from desim.errors import InputError, ScenarioError, UnknownNameError
from desim.records import RunResult
from desim.scenario import Scenario, validate_scenario

DEFAULT_SCENARIO = "default.toml"


def _data_file(*parts: str) -> Path:
    return Path(str(resources.files("desim").joinpath("data", *parts)))


def default_scenario_path() -> Path:
    """Path of the built-in default scenario shipped inside the package."""
    return _data_file(DEFAULT_SCENARIO)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, naming the file and line on error."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as a TOML literal, else as a string."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or len(path) < 2 or not all(path):
        raise ScenarioError(f"--set {text!r}: expected section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(
    data: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]
) -> dict[str, Any]:
    """Return a copy of ``data`` with every override applied.

    Each override is a ``"section.key=value"`` string (value read as TOML) or a
    ``("section.key", value)`` pair (sweeps pass typed values this way).
    """
    out = copy.deepcopy(data)
    for item in overrides:
        if isinstance(item, str):
            path, value = parse_override(item)
            label = f"--set {item!r}"
        else:
            path, value = item[0].split("."), item[1]
            label = item[0]
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ScenarioError(f"{label}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def load_scenario(
    path: str | Path | None = None, overrides: Iterable[str | tuple[str, Any]] = ()
) -> Scenario:
    """Read and validate a scenario TOML (the built-in default when ``path`` is ``None``).

    Args:
        path: scenario file, or ``None`` for the default scenario.
        overrides: ``section.key=value`` strings applied before validation.

    Raises:
        InputError: naming the file and each bad field.
    """
    src = default_scenario_path() if path is None else Path(path)
    data = apply_overrides(read_toml(src), overrides)
    label = "default scenario" if path is None else str(src)
    return validate_scenario(data, label)


MODEL_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
)


def shipped_models() -> list[str]:
    """Names of the model configs shipped with desim."""
    return sorted(p.stem for p in _data_file("models").iterdir() if p.suffix == ".json")


def load_model_config(name: str) -> TransformerConfig:
    """Load a shipped model config by name (``roberta-base``) or a config JSON by path."""
    path = Path(name)
    if not (path.suffix == ".json" and path.exists()):
        if name not in shipped_models():
            raise UnknownNameError(
                f"model.name: unknown model {name!r}; known: {', '.join(shipped_models())} "
                "or a path to a config .json"
            )
        path = _data_file("models", f"{name}.json")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read model config: {exc}") from None
    missing = [f for f in MODEL_FIELDS if not isinstance(raw.get(f), int) or raw[f] <= 0]
    if missing:
        raise InputError(f"{path}: missing or non-positive integer fields: {', '.join(missing)}")
    return TransformerConfig(name=path.stem, **{f: int(raw[f]) for f in MODEL_FIELDS})


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_table(frame: pd.DataFrame, path_stem: Path) -> list[Path]:
    """Write ``frame`` as ``<stem>.parquet`` and ``<stem>.csv`` atomically."""
    pq, csv = path_stem.with_suffix(".parquet"), path_stem.with_suffix(".csv")
    _atomic_write(pq, lambda p: frame.to_parquet(p, index=False))
    _atomic_write(csv, lambda p: frame.to_csv(p, index=False, float_format="%.17g"))
    return [pq, csv]


def write_json(data: Mapping[str, Any], path: Path) -> Path:
    """Write JSON atomically (sorted keys, stable output)."""

    def write(p: str) -> None:
        with open(p, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")

    _atomic_write(path, write)
    return path


def write_results(result: RunResult, out_dir: str | Path) -> list[Path]:
    """Write ``rounds`` and ``device_rounds`` tables and ``run.json`` (last) into ``out_dir``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create results directory: {exc.strerror}") from None
    done = out / "run.json"
    if done.exists():
        done.unlink()  # the directory is incomplete until run.json is rewritten
    paths = write_table(result.rounds_frame(), out / "rounds")
    paths += write_table(result.device_rounds_frame(), out / "device_rounds")
    paths.append(write_json(result.metadata, done))
    return paths


def write_chrome_trace(result: RunResult, path: str | Path) -> Path:
    """Write a Chrome/Perfetto JSON trace of a run (open it in ui.perfetto.dev)."""
    from desim.records import chrome_trace_events

    p = Path(path)
    if p.parent and not p.parent.exists():
        raise InputError(f"{p}: directory {p.parent} does not exist")
    return write_json({"traceEvents": chrome_trace_events(result), "displayTimeUnit": "ms"}, p)
