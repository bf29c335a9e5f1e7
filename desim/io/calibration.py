"""Calibration tables: profiles (per-block training costs) and Kill-and-Revive scores.

Both are CSV tables ``desim profile`` writes (README "Calibration"). Reading checks every cell
and turns each problem into an :class:`~desim.errors.InputError` naming the file, the line and
the column; writing is atomic (:func:`desim.io.atomic.atomic_write`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from desim.errors import InputError, UnknownNameError
from desim.io.atomic import atomic_write
from desim.io.shipped import SHIPPED_PREFIX, data_file, shipped_kr_scores, shipped_profiles

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
    atomic_write(p, lambda t: out.to_csv(t, index=False, float_format="%.9g"))
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


#: checked profile tables by (resolved path, content hash): a sweep worker parses each once
_PROFILES: dict[tuple[str, bytes], pd.DataFrame] = {}


def read_profile(path: str | Path) -> pd.DataFrame:
    """Read and check one profile CSV (a fresh copy of a table cached by content hash).

    Tables written before a column existed still load: ``target_len`` is then 0 and
    ``flops`` NaN (``desim profile --count-flops`` fills it).

    Raises:
        InputError: naming the file, and the line and column of the first bad value.
    """
    return _shared_profile(Path(path)).copy()


def _shared_profile(p: Path) -> pd.DataFrame:
    """The cached table of :func:`read_profile` itself: callers must not modify it."""
    try:
        digest = content_digest(p)
    except OSError:
        return _read_profile(p)  # the reader names what is wrong with the path
    key = (str(p.resolve()), digest)
    table = _PROFILES.get(key)
    if table is None:
        table = _PROFILES[key] = _read_profile(p)
    return table


def _read_profile(p: Path) -> pd.DataFrame:
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
    files = _profile_paths(ref)
    if files is not None:
        return [(f, read_profile(f)) for f in files]
    shipped = [(f, _shared_profile(f)) for f in shipped_profiles()]
    key = (str(ref), tuple(id(t) for _, t in shipped))  # the cached tables stand for contents
    parts = _CLASS_ROWS.get(key)
    if parts is None:
        parts = _CLASS_ROWS[key] = [
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
    return [(f, t.copy()) for f, t in parts]


def _profile_paths(ref: str | Path) -> list[Path] | None:
    """The files a path reference names (a CSV, or a folder's CSVs); ``None``: a shipped name.

    Raises:
        InputError: a folder without profile CSVs.
    """
    p = Path(ref)
    if p.is_dir():
        files = sorted(p.glob("*.csv"))
        if not files:
            raise InputError(f"{p}: folder holds no profile .csv files")
        return files
    if p.suffix == ".csv" or p.exists():
        return [p]
    return None


def profile_fingerprint(ref: str | Path) -> tuple[tuple[str, bytes], ...] | None:
    """Each file a profile reference reads, resolved, with a hash of its content.

    A shipped class name stands for every shipped profile. ``None`` when a file cannot be
    read (then nothing built from the reference may be reused).
    """
    try:
        files = _profile_paths(ref)
        return tuple((str(f.resolve()), content_digest(f))
                     for f in (shipped_profiles() if files is None else files))
    except (OSError, InputError):
        return None


def content_digest(path: Path) -> bytes:
    """A 16-byte BLAKE2b hash of a file's content (the key of what is parsed from it)."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).digest()


#: a shipped class's rows of each shipped table, keyed by the class and the cached tables
_CLASS_ROWS: dict[tuple[str, tuple[int, ...]], list[tuple[Path, pd.DataFrame]]] = {}


# Kill-and-Revive sensitivity scores (README "Calibration"): tidy rows of (step, module).
KR_SCORE_COLUMNS = ("step", "module", "layer", "target", "score")


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
        return data_file("kr-scores", name)
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
