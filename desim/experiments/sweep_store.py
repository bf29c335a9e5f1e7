"""How a sweep stores its runs: one atomic folder per run, failure records and the summary.

Each run is written into a staging directory, then one ``rename`` to ``runs/<key>/``, so after
a hard kill a run is either complete or absent; a failed run is recorded in
``failures/<key>.json``. Several sweeps may resume the same folder at once: each stages under
``.staging/<pid>/``, the final rename happens under the folder's lock file ``.lock`` and a run
a twin already stored is kept. :func:`summarize` builds the summary table from what is stored.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from filelock import FileLock

from desim.engine.records import WALL_CLOCK_COLUMNS
from desim.experiments.sweep_spec import Run
from desim.io.atomic import write_json
from desim.io.outputs import write_result_tables


@dataclass
class RunOutcome:
    """What a worker sends back: tables and metadata, or the error of a failed run."""

    key: str
    tables: dict[str, pd.DataFrame] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_detail: str | None = None


def _lock(out: Path) -> FileLock:
    """The folder's lock: sweeps resuming one folder at once store their runs in turn."""
    return FileLock(out / ".lock")


def store_outcome(outcome: RunOutcome, run: Run, out: Path, staging_root: Path) -> bool:
    """Write one outcome atomically; return whether the run is stored as a success.

    A run that another sweep of the same folder (a twin) stored first is kept as it is: same
    key, same content. ``staging_root`` is the sweep's own staging folder.
    """
    final = out / "runs" / run.key
    failure = out / "failures" / f"{run.key}.json"
    if outcome.error is not None:
        failure.parent.mkdir(exist_ok=True)
        with _lock(out):
            if (final / "run.json").is_file():
                return True
            write_json(
                {
                    "key": run.key,
                    "axes": run.axes,
                    "allocator": run.allocator,
                    "seed": run.seed,
                    "error": outcome.error,
                    "traceback": outcome.error_detail,
                },
                failure,
            )
        return False
    assert outcome.tables is not None
    staging = staging_root / run.key
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    meta = {
        **outcome.metadata,
        "run_key": run.key,
        "axes": run.axes,
        "allocator_label": run.allocator,
    }
    # the staging folder is renamed into place once complete: its files need no atomic writes
    write_result_tables(outcome.tables, meta, staging, atomic=False)
    with _lock(out):
        if (final / "run.json").is_file():  # a twin was faster
            shutil.rmtree(staging)
        else:
            if final.exists():  # incomplete (not written by desim): replace it
                shutil.rmtree(final)
            os.rename(staging, final)  # atomic: the run appears complete or not at all
        failure.unlink(missing_ok=True)
    return True


def completed_keys(out: Path) -> set[str]:
    """Keys of runs stored completely under ``out/runs``."""
    runs = out / "runs"
    if not runs.is_dir():
        return set()
    return {p.name for p in runs.iterdir() if (p / "run.json").is_file()}


def remove_dead_staging(out: Path) -> None:
    """Remove the staging of killed sweeps; a live twin's ``.staging/<pid>`` stays."""
    root = out / ".staging"
    if not root.is_dir():
        return
    for entry in root.iterdir():
        owner = entry.name.rsplit("-", 1)[-1]  # <pid>, or <key>-<pid> of older desim versions
        if owner.isdigit() and process_alive(int(owner)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's counts; our own pid is a dead sweep's)."""
    if pid <= 0 or pid == os.getpid():  # our own pid here is a dead sweep's, reused
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


SUMMARY_STATS = ("latency_s", "planned_latency_s")
"""Round columns the summary gives mean, median, 95th percentile and maximum of."""
ROUND_SUMMARY_COLUMNS = ("status", *SUMMARY_STATS, "end_s", "min_memory_headroom_bytes",
                         "dropouts")
"""The columns of a stored rounds table the summary reads."""


def _read_columns(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a stored Parquet table as arrays, as ``pandas.read_parquet`` gives them."""
    with pq.ParquetFile(path) as file:  # no dataset machinery: one local file
        table = file.read(columns=list(columns))
    return {c: table.column(c).to_numpy() for c in columns}


def summarize(runs: list[Run], out: Path) -> pd.DataFrame:
    """One row per run, in spec order, from the stored results (failed runs keep their error)."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run_key": run.key,
            **run.axes,
            "allocator": run.allocator,
            "seed": run.seed,
        }
        stored = out / "runs" / run.key
        failure = out / "failures" / f"{run.key}.json"
        if (stored / "run.json").is_file():
            rounds = _read_columns(stored / "rounds.parquet", ROUND_SUMMARY_COLUMNS)
            row["status"] = "ok"
            row["rounds"] = len(rounds["status"])
            ok = rounds["status"] == "ok"
            for col in SUMMARY_STATS:
                x = rounds[col][ok].astype(float)
                has = x.size > 0
                row[f"{col}_mean"] = float(np.mean(x)) if has else float("nan")
                row[f"{col}_p50"] = float(np.median(x)) if has else float("nan")
                row[f"{col}_p95"] = float(np.percentile(x, 95)) if has else float("nan")
                row[f"{col}_max"] = float(np.max(x)) if has else float("nan")
            row["total_time_s"] = float(rounds["end_s"][-1])
            row["min_memory_headroom_bytes"] = float(
                pd.Series(rounds["min_memory_headroom_bytes"]).min())
            row["skipped_rounds"] = int((~ok).sum())
            row["dropouts"] = int(pd.Series(rounds["dropouts"]).sum())
            timing = _read_columns(stored / "timing.parquet", WALL_CLOCK_COLUMNS)
            for col in WALL_CLOCK_COLUMNS:
                row[f"{col}_mean"] = float(pd.Series(timing[col]).mean())
            row["error"] = ""
        elif failure.is_file():
            row["status"] = "failed"
            row["error"] = json.loads(failure.read_text())["error"]
        else:
            row["status"] = "missing"
            row["error"] = ""
        rows.append(row)
    return pd.DataFrame(rows)
