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

import numpy as np
import pandas as pd

from desim.costs.models import TransformerConfig
from desim.costs.transformer import config_from_mapping
from desim.errors import InputError, ScenarioError, UnknownNameError
from desim.results import RunResult
from desim.scenario.model import Scenario, validate_scenario

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


def _resolved(text: Any, base: Path) -> Any:
    if not isinstance(text, str) or not text or text.startswith(SHIPPED_PREFIX):
        return text
    p = Path(text).expanduser()
    return text if p.is_absolute() else str((base / p).resolve())


def _looks_like_path(text: Any, base: Path) -> bool:
    """A profile or model reference that names a file, not a shipped name."""
    return isinstance(text, str) and (
        "/" in text or os.sep in text or text.endswith((".csv", ".json"))
        or (base / text).exists()
    )


def resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of parsed scenario data whose relative file paths are made absolute from ``base``.

    Paths inside a scenario or sweep spec resolve relative to that file's folder, as in every
    config format users know (paths on the command line stay relative to the working directory).
    The keys: ``channel.path``, ``compute.path``, ``scheme.kr_scores``, ``model.name`` when it
    names a ``.json`` config, and each ``cost.profiles`` entry that names a file or folder
    (``shipped:NAME`` and shipped hardware-class names are names, not paths).
    """
    out = copy.deepcopy(data)
    for section in ("channel", "compute"):
        node = out.get(section)
        if isinstance(node, dict) and "path" in node:
            node["path"] = _resolved(node["path"], base)
    scheme = out.get("scheme")
    if isinstance(scheme, dict) and isinstance(scheme.get("kr_scores"), str):
        scheme["kr_scores"] = _resolved(scheme["kr_scores"], base)
    model = out.get("model")
    if isinstance(model, dict) and _looks_like_path(model.get("name"), base):
        model["name"] = _resolved(model["name"], base)
    cost = out.get("cost")
    profiles = cost.get("profiles") if isinstance(cost, dict) else None
    if isinstance(profiles, dict):
        for cls, ref in profiles.items():
            if isinstance(ref, dict) and _looks_like_path(ref.get("profile"), base):
                ref["profile"] = _resolved(ref["profile"], base)
            elif _looks_like_path(ref, base):
                profiles[cls] = _resolved(ref, base)
    return out


def resolve_override(key: str, value: Any, base: Path) -> Any:
    """The value of one ``section.key`` override with a relative file path made absolute.

    Sweep specs use it: a path in ``[set]``, ``[grid]`` or ``[zip]`` resolves from the spec's
    folder, as :func:`resolve_paths` does for a scenario file.
    """
    node: Any = resolve_paths(apply_overrides({}, [(key, value)]), base)
    for part in key.split("."):
        node = node[part]
    return node


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
    # lazily: reading a profile or a trace needs no component registry
    from desim.engine.checks import check_components

    src = default_scenario_path() if path is None else Path(path)
    data = apply_overrides(resolve_paths(read_toml(src), src.parent), overrides)
    label = "default scenario" if path is None else str(src)
    scenario = validate_scenario(data, label)
    check_components(scenario, label)
    return scenario


def shipped_models() -> list[str]:
    """Names of the model configs shipped with desim."""
    return sorted(p.stem for p in _data_file("models").iterdir() if p.suffix == ".json")


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
                "or a path to a config .json"
            )
        path = _data_file("models", f"{name}.json")
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


# Profile tables (DESIGN §4, README "Calibration"): column -> (kind, meaning with unit).
PROFILE_COLUMNS: dict[str, tuple[str, str]] = {
    "hardware": ("str", "hardware-class name the profile describes"),
    "model": ("str", "model name (config file stem)"),
    "method": ("str", "fine-tuning method: lora, lora-checkpoint, qlora, mezo, adapter, ia3, full"),
    "lora_rank": ("int", "LoRA rank (0 for methods without LoRA values)"),
    "batch_size": ("int", "sequences per step (b)"),
    "seq_len": ("int", "tokens per sequence (s; for encoder-decoder models the encoder input)"),
    "target_len": ("int", "decoder target tokens per sequence (0 for encoder-only models)"),
    "block": ("int", "block depth n; 1 is next to the output (t5: decoder layers, then encoder)"),
    "num_blocks": ("int", "blocks in the model (one transformer layer each)"),
    "fwd_s": ("float", "median forward-pass seconds (with loss; mezo: both forward passes)"),
    "bwd_s": ("float", "median seconds of the backward pass stopping at block n (mezo: 0)"),
    "step_s": ("float", "median seconds of the AdamW step on block n (mezo: perturb + update)"),
    "compute_s": ("float", "median seconds of fwd + bwd + step (one training step, w_n)"),
    "fwd_spread_s": ("float", "max - min of fwd_s over repeats"),
    "bwd_spread_s": ("float", "max - min of bwd_s over repeats"),
    "step_spread_s": ("float", "max - min of step_s over repeats"),
    "compute_spread_s": ("float", "max - min of compute_s over repeats"),
    "flops": ("float", "counted FLOPs of one training step of block n (empty: not counted)"),
    "peak_memory_bytes": ("int", "peak bytes of the training step of block n (m_n)"),
    "saved_bytes": ("int", "bytes autograd keeps for backward (checkpointing: layer inputs)"),
    "param_bytes": ("int", "bytes of all parameters (frozen and trainable)"),
    "grad_bytes": ("int", "bytes of block n's gradients"),
    "optimizer_bytes": ("int", "bytes of block n's AdamW state"),
    "rss_peak_bytes": ("int", "process peak RSS after the grid point (cross-check)"),
    "trainable_params": ("int", "trainable values in block n (S_n; upload D_n = q S_n bits)"),
    "repeats": ("int", "timed repetitions per grid point"),
    "clock": ("str", "thread-cpu (CPU time of the single torch thread) or wall"),
    "memory_method": ("str", "saved-tensors, live-tensors (step high-water mark) or "
                      "cuda-max-allocated"),
    "device": ("str", "torch device: cpu or cuda"),
    "device_name": ("str", "CPU or GPU model"),
    "cores": ("int", "logical CPU cores of the machine"),
    "threads": ("int", "torch intra-op threads used (0 on CUDA)"),
    "torch_version": ("str", "torch version"),
    "transformers_version": ("str", "transformers version"),
    "peft_version": ("str", "peft version"),
    "date": ("str", "UTC time of the measurement"),
}
PROFILE_KEY = ("hardware", "model", "method", "batch_size", "seq_len", "target_len", "block")
# a step that takes no time (compute_s) or memory cannot be fitted (relative errors)
_PROFILE_POSITIVE = (
    "batch_size", "seq_len", "block", "num_blocks", "compute_s", "peak_memory_bytes"
)
_PROFILE_TABLE = ("hardware", "model", "method", "num_blocks", "lora_rank")
# columns added after the first profiles were shipped: older files get these values
_PROFILE_LATER = {"target_len": "0", "flops": ""}
_PROFILE_MAY_BE_EMPTY = ("flops",)


def _write_table_csv(frame: pd.DataFrame, path: str | Path, columns: Any, what: str) -> Path:
    """Write ``frame[columns]`` as CSV atomically; a missing column or folder is an error."""
    p = Path(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{p}: {what} lack columns {', '.join(missing)}")
    if not p.parent.exists():
        raise InputError(f"{p}: directory {p.parent} does not exist")
    out = frame[list(columns)]
    _atomic_write(p, lambda t: out.to_csv(t, index=False, float_format="%.9g"))
    return p


def _read_csv_text(path: Path, what: str) -> pd.DataFrame:
    """Every cell of a CSV as text (checked by the caller), with one-line errors."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read {what} CSV: {exc}") from None


def write_profile(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a profile table as CSV atomically (columns in :data:`PROFILE_COLUMNS` order)."""
    return _write_table_csv(frame, path, PROFILE_COLUMNS, "profile rows")


def read_profile(path: str | Path) -> pd.DataFrame:
    """Read and check one profile CSV.

    Tables written before a column existed still load: ``target_len`` is then 0 and
    ``flops`` NaN (``desim profile --count-flops`` fills it).

    Raises:
        InputError: naming the file, and the line and column of the first bad value.
    """
    p = Path(path)
    raw = _read_csv_text(p, "profile")
    for col, default in _PROFILE_LATER.items():
        if col not in raw.columns:
            raw[col] = default
    missing = [c for c in PROFILE_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"{p}: missing profile columns: {', '.join(missing)}")
    if raw.empty:
        raise InputError(f"{p}: profile has no rows")
    frame = raw[list(PROFILE_COLUMNS)].copy()
    for col, (kind, _) in PROFILE_COLUMNS.items():
        if kind == "str":
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values) | (values < 0)
        if col in _PROFILE_MAY_BE_EMPTY:
            bad &= frame[col].str.strip() != ""
        if col in _PROFILE_POSITIVE:
            bad |= values <= 0
        if kind == "int":
            bad |= values != np.round(values)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            expected = "a positive" if col in _PROFILE_POSITIVE else "a non-negative"
            raise InputError(
                f"{p}: line {i + 2}: column {col}: expected {expected} "
                f"{'integer' if kind == 'int' else 'number'} (got {frame[col].iloc[i]!r})"
            )
        frame[col] = values.astype("int64" if kind == "int" else "float64")
    over = frame["block"] > frame["num_blocks"]
    if over.any():
        i = int(np.flatnonzero(over.to_numpy())[0])
        raise InputError(f"{p}: line {i + 2}: column block: exceeds num_blocks")
    dup = frame.duplicated(list(PROFILE_KEY))
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        key = dict(frame.iloc[i][list(PROFILE_KEY)])
        raise InputError(f"{p}: line {i + 2}: duplicate row for {key}")
    _check_profile_blocks(frame, p)
    return frame


def _check_profile_blocks(frame: pd.DataFrame, path: Path) -> None:
    """Every table of a profile has rows for each of its blocks ``1..num_blocks``."""
    for (hardware, model, method, blocks, _), rows in frame.groupby(
        list(_PROFILE_TABLE), sort=False
    ):
        missing = sorted(set(range(1, int(blocks) + 1)) - set(rows["block"].tolist()))
        if missing:
            shown = ", ".join(str(b) for b in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise InputError(
                f"{path}: block {shown} missing: no rows of {model} {method} (hardware "
                f"{hardware}) for {'it' if len(missing) == 1 else 'them'}; a profile needs "
                f"every block 1..{blocks} (num_blocks)"
            )


# Kill-and-Revive sensitivity scores (README "Calibration"): tidy rows of (step, module).
KR_SCORE_COLUMNS = ("step", "module", "layer", "target", "score")


def shipped_kr_scores() -> list[str]:
    """Names of the Kill-and-Revive score files shipped with desim (``desim/data/kr-scores``)."""
    folder = _data_file("kr-scores")
    return sorted(p.name for p in folder.glob("*.csv")) if folder.is_dir() else []


def resolve_kr_scores_path(text: str) -> Path:
    """A score file path: ``shipped:NAME`` names a file of :func:`shipped_kr_scores`.

    Raises:
        InputError: an unknown shipped name (the message lists the shipped ones).
    """
    if text.startswith(SHIPPED_PREFIX):
        name = text[len(SHIPPED_PREFIX) :]
        if name not in shipped_kr_scores():
            raise InputError(
                f"{text}: no such shipped score file; shipped: "
                f"{', '.join(shipped_kr_scores()) or 'none'}"
            )
        return _data_file("kr-scores", name)
    return Path(text)


def write_kr_scores(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write Kill-and-Revive scores (columns :data:`KR_SCORE_COLUMNS`) as CSV atomically."""
    return _write_table_csv(frame, path, KR_SCORE_COLUMNS, "scores")


def read_kr_scores(path: str | Path) -> np.ndarray:
    """Read a Kill-and-Revive score file into an array of shape ``(steps, modules)``.

    Rows are ``step, module, layer, target, score`` (``desim profile --kr-scores``); row ``r``
    of the result is the ``r``-th step in increasing order and column ``i`` is module ``i``
    (``2(l − 1) + t``: layer ``l`` from the input, ``t`` = 0 query, 1 value).

    Raises:
        InputError: naming the file and the line and field of the first problem: a missing
            column, a step or module that is not a non-negative integer, a score that is not a
            finite non-negative number, a duplicate (step, module), or a step whose modules are
            not exactly ``0..M-1`` (``M`` the number of modules of the file).
    """
    p = Path(path)
    raw = _read_csv_text(p, "score")
    missing = [c for c in ("step", "module", "score") if c not in raw.columns]
    if missing:
        raise InputError(
            f"{p}: missing columns: {', '.join(missing)} (expected {', '.join(KR_SCORE_COLUMNS)})"
        )
    if raw.empty:
        raise InputError(f"{p}: no score rows")
    values = {}
    for col, what in (("step", "a non-negative integer"), ("module", "a non-negative integer"),
                      ("score", "a finite non-negative number")):
        v = pd.to_numeric(raw[col], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(v) | (v < 0)
        if col != "score":
            bad |= v != np.round(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{p}: line {i + 2}: field {col}: expected {what} (got {raw[col].iloc[i]!r})"
            )
        values[col] = v
    step, module = values["step"].astype(np.int64), values["module"].astype(np.int64)
    frame = pd.DataFrame({"step": step, "module": module, "score": values["score"]})
    dup = frame.duplicated(["step", "module"])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(f"{p}: line {i + 2}: duplicate row for step {step[i]}, module {module[i]}")
    count = int(module.max()) + 1
    for s, rows in frame.groupby("step", sort=True):
        have = set(rows["module"])
        if len(have) != count:
            gap = min(set(range(count)) - have)
            raise InputError(
                f"{p}: step {s}: module {gap} missing (every step needs modules 0..{count - 1})"
            )
    table = frame.pivot(index="step", columns="module", values="score").sort_index()
    return table.to_numpy(float)


def write_report_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a report table (validation MAPE, rows, violations) as CSV atomically."""
    p = Path(path)
    if not p.parent.exists():
        raise InputError(f"{p}: directory {p.parent} does not exist")
    _atomic_write(p, lambda t: frame.to_csv(t, index=False, float_format="%.9g"))
    return p


def shipped_profiles() -> list[Path]:
    """Profile CSVs shipped with desim (``desim/data/profiles``)."""
    folder = _data_file("profiles")
    return sorted(folder.glob("*.csv")) if folder.is_dir() else []


def load_profile(ref: str | Path) -> pd.DataFrame:
    """A profile by path (a CSV, or a folder of CSVs) or by shipped hardware-class name.

    Raises:
        UnknownNameError: ``ref`` is neither a path nor a shipped hardware class.
        InputError: a file is malformed.
    """
    p = Path(ref)
    parts = load_profile_files(ref)
    if not p.is_dir() and (p.suffix == ".csv" or p.exists()):
        return parts[0][1]
    return pd.concat([t for _, t in parts], ignore_index=True)


def load_profile_files(ref: str | Path) -> list[tuple[Path, pd.DataFrame]]:
    """The profile files a reference names, each with its rows (:func:`load_profile`).

    A shipped hardware-class name gives every shipped file with rows of that class, each
    holding those rows only, so a caller can name the file a row came from.

    Raises:
        UnknownNameError: ``ref`` is neither a path nor a shipped hardware class.
        InputError: a file is malformed.
    """
    p = Path(ref)
    if p.is_dir():
        files = sorted(p.glob("*.csv"))
        if not files:
            raise InputError(f"{p}: folder holds no profile .csv files")
        return [(f, read_profile(f)) for f in files]
    if p.suffix == ".csv" or p.exists():
        return [(p, read_profile(p))]
    shipped = [(f, read_profile(f)) for f in shipped_profiles()]
    parts = [
        (f, t[t["hardware"] == str(ref)].reset_index(drop=True))
        for f, t in shipped
        if (t["hardware"] == str(ref)).any()
    ]
    if not parts:
        known = sorted({h for _, t in shipped for h in t["hardware"]})
        raise UnknownNameError(
            f"unknown profile {str(ref)!r}: not a file, and not a shipped hardware class "
            f"(known: {', '.join(known) or 'none'})"
        )
    return parts


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file and one ``os.replace``, with the user's umask applied.

    ``mkstemp`` creates its file 0600; the result gets the mode a plain ``open`` would give
    (0644 under umask 022).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; restore it at once
    os.umask(mask)
    return mask


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
    """Write a run's tables (:meth:`RunResult.tables`) and ``run.json`` (last) into ``out_dir``."""
    return write_result_tables(result.tables(), result.metadata, out_dir)


def write_result_tables(
    tables: Mapping[str, pd.DataFrame], metadata: Mapping[str, Any], out_dir: str | Path
) -> list[Path]:
    """Write each table as Parquet and CSV, then ``run.json``; every file atomically."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create results directory: {exc.strerror}") from None
    done = out / "run.json"
    if done.exists():
        done.unlink()  # the directory is incomplete until run.json is rewritten
    paths = []
    for name, frame in tables.items():
        paths += write_table(frame, out / name)
    paths.append(write_json(metadata, done))
    return paths


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | Path, option: str) -> None:
    """Refuse, before any work, a results directory that cannot be created or written.

    Raises:
        InputError: naming the option, the path and why.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option} {p}: exists and is not a directory")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise InputError(f"{option} {p}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: no permission to write in {base}")


def check_output_file(path: str | Path, option: str) -> None:
    """Refuse, before any work, an output file whose folder is missing or not writable.

    Raises:
        InputError: naming the option, the path and why.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{option} {p}: is a directory, expected a file name")
    parent = p.absolute().parent
    if not parent.is_dir():
        raise InputError(f"{option} {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{option} {p}: no permission to write in {parent}")


def write_chrome_trace(result: RunResult, path: str | Path) -> Path:
    """Write a Chrome/Perfetto JSON trace of a run (open it in ui.perfetto.dev)."""
    from desim.results import chrome_trace_events

    p = Path(path)
    if p.parent and not p.parent.exists():
        raise InputError(f"{p}: directory {p.parent} does not exist")
    return write_json({"traceEvents": chrome_trace_events(result), "displayTimeUnit": "ms"}, p)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write one CSV atomically."""
    _atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format="%.17g"))
    return path


# --- traces (channel and compute): tidy CSV/Parquet with metadata, importers -------------------

SHIPPED_PREFIX = "shipped:"


def shipped_traces() -> list[str]:
    """Names of the trace files shipped with desim (``shipped:NAME`` in a scenario)."""
    folder = _data_file("traces")
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".csv", ".parquet"))


def resolve_trace_path(text: str) -> Path:
    """A trace path from a scenario: ``shipped:NAME`` names a file shipped in the package."""
    from desim.errors import TraceError

    if text.startswith(SHIPPED_PREFIX):
        name = text[len(SHIPPED_PREFIX) :]
        if name not in shipped_traces():
            raise TraceError(
                f"{text}: no such shipped trace; shipped: {', '.join(shipped_traces()) or 'none'}"
            )
        return _data_file("traces", name)
    return Path(text)


def trace_sidecar(path: Path) -> Path:
    """The JSON metadata sidecar of a trace file: ``name.csv`` -> ``name.json``."""
    return path.with_suffix(".json")


def _read_text_lines(path: Path) -> list[str]:
    from desim.errors import TraceError

    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a trace file") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None


def _header_meta(lines: list[str]) -> tuple[dict[str, Any], int]:
    meta: dict[str, Any] = {}
    count = 0
    for line in lines:
        if not line.startswith("#"):
            break
        count += 1
        key, sep, value = line[1:].partition(":")
        if sep and key.strip():
            raw = value.strip()
            try:
                meta[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                meta[key.strip()] = raw
    return meta, count


def read_trace(path: str | Path) -> Any:
    """Read and validate a tidy channel or compute trace (CSV or Parquet) with its metadata.

    Metadata comes from ``# key: value`` header comments (CSV) and the JSON sidecar
    (:func:`trace_sidecar`), the sidecar winning.

    Returns:
        A :class:`desim.world.traces.Trace`.

    Raises:
        TraceError: naming the file and line (CSV) or row (Parquet) of the first problem.
    """
    import io as _io

    import numpy as np

    from desim.errors import TraceError
    from desim.world.traces import TraceMeta, trace_from_frame

    path = Path(path)
    meta: dict[str, Any] = {}
    if path.suffix == ".parquet":
        if not path.exists():
            raise TraceError(f"{path}: file not found")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise TraceError(f"{path}: not a readable Parquet file ({exc})") from None
        lines, where = np.arange(1, len(frame) + 1), "row"
    elif path.suffix in (".csv", ".txt", ""):
        text = _read_text_lines(path)
        meta, skip = _header_meta(text)
        body = "\n".join(text[skip:])
        if not body.strip():
            raise TraceError(f"{path}: empty trace: no header or data rows")
        try:
            frame = pd.read_csv(
                _io.StringIO(body), dtype=str, skip_blank_lines=False, keep_default_na=False
            )
        except pd.errors.ParserError as exc:
            raise TraceError(f"{path}: malformed CSV: {exc}") from None
        lines, where = np.arange(len(frame)) + skip + 2, "line"
    else:
        raise TraceError(
            f"{path}: unknown trace format {path.suffix!r}; tidy traces are .csv or .parquet "
            "(convert others with `desim traces convert --from FORMAT`)"
        )
    side = trace_sidecar(path)
    if side.exists():
        try:
            loaded = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TraceError(f"{side}: cannot read trace metadata: {exc}") from None
        if not isinstance(loaded, dict):
            raise TraceError(f"{side}: trace metadata must be a JSON object")
        meta.update(loaded)
    return trace_from_frame(frame, str(path), TraceMeta.from_mapping(meta, str(path)), lines, where)


def write_trace(
    frame: pd.DataFrame, meta: Any, path: str | Path, float_format: str = "%.9g"
) -> Path:
    """Write a tidy trace atomically, with its metadata.

    CSV gets ``# key: value`` header comments; Parquet gets a JSON sidecar (:func:`trace_sidecar`).

    Args:
        frame: the tidy rows.
        meta: a :class:`desim.world.traces.TraceMeta`.
        path: ``.csv`` or ``.parquet`` target.
        float_format: number format for CSV values.
    """
    from desim.errors import TraceError

    path = Path(path)
    fields = meta.to_mapping()
    if path.parent and not path.parent.exists():
        raise TraceError(f"{path}: directory {path.parent} does not exist")
    if path.suffix == ".csv":

        def write(p: str) -> None:
            with open(p, "w", newline="") as fh:
                for key, value in fields.items():
                    fh.write(f"# {key}: {json.dumps(value)}\n")
                frame.to_csv(fh, index=False, float_format=float_format)

        _atomic_write(path, write)
    elif path.suffix == ".parquet":
        _atomic_write(path, lambda p: frame.to_parquet(p, index=False))
        write_json(fields, trace_sidecar(path))
        os.chmod(trace_sidecar(path), 0o644)
    else:
        raise TraceError(f"{path}: unknown output format {path.suffix!r}; use .csv or .parquet")
    os.chmod(path, 0o644)  # temporary files are private; a trace is meant to be shared
    return path


def convert_trace(fmt: str, inputs: Iterable[str | Path], out: str | Path, options: Any) -> Any:
    """Convert foreign trace files to one tidy trace (``desim traces convert``).

    Args:
        fmt: ``ns3``, ``mahimahi``, ``pensieve``, ``5gophers`` or ``tidy``.
        inputs: input files (one device or several per file, see :mod:`desim.world.importers`).
        out: output ``.csv`` or ``.parquet`` file.
        options: :class:`desim.world.importers.ImportOptions`.

    Returns:
        The validated :class:`desim.world.traces.Trace` as written (re-read from ``out``).
    """
    from desim.errors import TraceError
    from desim.world.importers import FORMATS, TEXT_IMPORTERS, RawText, import_5gophers

    paths = [Path(p) for p in inputs]
    if not paths:
        raise TraceError("traces convert: no input files")
    if fmt in TEXT_IMPORTERS:
        raw = [RawText(str(p), _read_text_lines(p)) for p in paths]
        frame, meta = TEXT_IMPORTERS[fmt](raw, options)
    elif fmt == "5gophers":
        tables = []
        for p in paths:
            _read_text_lines(p)  # uniform not-found / not-text errors
            try:
                tables.append((str(p), pd.read_csv(p)))
            except pd.errors.EmptyDataError:
                raise TraceError(f"{p}: empty trace: no header or data rows") from None
            except pd.errors.ParserError as exc:
                raise TraceError(f"{p}: malformed CSV: {exc}") from None
        frame, meta = import_5gophers(tables, options)
    elif fmt == "tidy":
        if len(paths) != 1:
            raise TraceError("traces convert --from tidy takes one input file")
        trace = read_trace(paths[0])
        frame = pd.read_parquet(paths[0]) if paths[0].suffix == ".parquet" else None
        if frame is None:
            text = _read_text_lines(paths[0])
            _, skip = _header_meta(text)
            frame = pd.read_csv(paths[0], skiprows=skip)
        meta = trace.meta
    else:
        raise TraceError(f"unknown trace format {fmt!r}; known: {', '.join(FORMATS)}")
    from desim.world.traces import trace_from_frame

    trace_from_frame(frame, f"{fmt} input", meta)  # validate before writing anything
    write_trace(frame, meta, out)
    return read_trace(out)
