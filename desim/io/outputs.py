"""Run outputs: result tables (Parquet and CSV), ``run.json`` and the timeline trace.

Every file is written atomically (:func:`desim.io.atomic.atomic_write`) and ``run.json`` last,
so a results directory with ``run.json`` is complete. Output paths are checked before any work.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from desim.errors import InputError
from desim.io.arrow import parquet_bytes
from desim.io.atomic import atomic_write, write_json
from desim.results import RunResult


def write_table(frame: pd.DataFrame, path_stem: Path, atomic: bool = True) -> list[Path]:
    """Write ``frame`` as ``<stem>.parquet`` and ``<stem>.csv`` (each atomically if ``atomic``).

    The Parquet file is the one ``frame.to_parquet(path, index=False)`` writes, byte for byte
    (:func:`desim.io.arrow.parquet_bytes`). ``atomic = False`` is for a staging folder that is
    itself renamed into place once complete (a sweep's run).
    """
    pq, csv = path_stem.with_suffix(".parquet"), path_stem.with_suffix(".csv")
    data = parquet_bytes(frame)
    write = atomic_write if atomic else (lambda path, fill: fill(path))
    write(pq, lambda p: Path(p).write_bytes(data))
    write(csv, lambda p: frame.to_csv(p, index=False, float_format="%.17g"))
    return [pq, csv]


def write_results(result: RunResult, out_dir: str | Path) -> list[Path]:
    """Write a run's tables (:meth:`RunResult.tables`) and ``run.json`` (last) into ``out_dir``."""
    return write_result_tables(result.tables(), result.metadata, out_dir)


def write_result_tables(
    tables: Mapping[str, pd.DataFrame], metadata: Mapping[str, Any], out_dir: str | Path,
    atomic: bool = True,
) -> list[Path]:
    """Write each table as Parquet and CSV, then ``run.json`` (last, always atomically).

    ``atomic``: every table file atomically too; ``False`` for a staging folder that is
    renamed into place once complete.
    """
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
        paths += write_table(frame, out / name, atomic)
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
