"""Sweeps: expand a spec into runs, execute them on a process pool or Ray, resume after a crash.

A sweep spec (TOML, see ``experiments/README.md``) names a base scenario, fixed overrides
(``[set]``), grid axes (``[grid]``: the product of every listed value), zipped axes (``[zip]``:
lists of equal length that vary together), allocators and replicate seeds. Every run is a fully
resolved :class:`~desim.scenario.Scenario`; its **run key** is a content hash of that scenario
(allocator, parameters and seed included) and the desim version.

Each run is written atomically: into a staging directory, then one ``rename`` to
``runs/<key>/`` (by the local worker that ran it, so writing is parallel too; Ray tasks return
their tables and the driver writes them, so a cluster needs no shared file system). So after a
hard kill a run is either complete or absent, and ``--resume`` skips every completed key. A
failed run is recorded in ``failures/<key>.json`` and never stops the sweep. Results do not
depend on the backend or the number of workers: each run is a pure function of its scenario.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import shutil
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from desim import __version__
from desim.errors import DesimError, InputError
from desim.io import (
    apply_overrides,
    default_scenario_path,
    read_toml,
    write_json,
    write_result_tables,
    write_table,
)
from desim.records import WALL_CLOCK_COLUMNS
from desim.scenario import Scenario, format_validation_error, validate_scenario


class AllocatorEntry(BaseModel):
    """One allocator of a sweep: registered ``name``, optional ``label``; other keys are params."""

    model_config = ConfigDict(frozen=True, extra="allow")
    name: str
    label: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """The allocator parameters (every key except ``name`` and ``label``)."""
        return dict(self.model_extra or {})

    @property
    def display(self) -> str:
        """The label used in tables and legends."""
        return self.label or self.name


class SweepSpec(BaseModel):
    """A validated sweep spec (see the module docstring for the semantics)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    base: str = "default"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    allocators: list[AllocatorEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _axes(self) -> SweepSpec:
        for key, values in {**self.grid, **self.zip}.items():
            if not values:
                raise ValueError(f"axis {key!r} is empty")
        lengths = {len(v) for v in self.zip.values()}
        if len(lengths) > 1:
            raise ValueError(f"zip axes must have equal lengths, got {sorted(lengths)}")
        both = set(self.grid) & set(self.zip)
        if both:
            raise ValueError(f"axes listed in both grid and zip: {sorted(both)}")
        if any(s < 0 for s in self.seeds):
            raise ValueError("seeds must be non-negative")
        labels = [a.display for a in self.allocators]
        if len(set(labels)) != len(labels):
            raise ValueError(f"allocator labels must be unique, got {labels}")
        return self

    @property
    def axis_keys(self) -> list[str]:
        """Dotted keys of every axis, grid first."""
        return list(self.grid) + list(self.zip)


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its position, axis values, allocator label and resolved scenario."""

    index: int
    key: str
    axes: dict[str, Any]
    allocator: str
    seed: int
    scenario: Scenario


def load_sweep_spec(path: str | Path) -> tuple[SweepSpec, Path]:
    """Read and validate a sweep spec; returns the spec and its directory (for relative bases)."""
    p = Path(path)
    data = read_toml(p)
    try:
        return SweepSpec.model_validate(data), p.parent
    except ValidationError as exc:
        raise InputError(f"{p}: {format_validation_error(exc)}") from None


def run_key(scenario: Scenario) -> str:
    """Content hash of a resolved scenario, the files it reads, and the desim version.

    Trace and profile files named by path are hashed by content, so editing a trace gives new
    keys (shipped files change only with the desim version). 16 hex digits.
    """
    blob = json.dumps(
        {
            "scenario": scenario.model_dump(mode="json"),
            "files": {str(p): _file_digest(p) for p in referenced_files(scenario)},
            "desim": __version__,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def referenced_files(scenario: Scenario) -> list[Path]:
    """Existing user files a scenario reads (trace and profile paths, not shipped names)."""
    refs = [
        scenario.channel.path,
        scenario.compute.path,
        *(ref.profile for ref in scenario.cost.profiles.values()),
        scenario.scheme.kr_scores if isinstance(scenario.scheme.kr_scores, str) else None,
    ]
    paths = [Path(r) for r in refs if r and not r.startswith("shipped:")]
    return sorted({p for p in paths if p.exists()})


def _file_digest(path: Path) -> str:
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _digest(path_text: str, mtime_ns: int, size: int) -> str:
    """Content hash, cached per (path, mtime, size): a sweep hashes each file once."""
    path = Path(path_text)
    h = hashlib.sha256()
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _axis_points(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    grid_keys = list(spec.grid)
    zip_rows = list(zip(*spec.zip.values(), strict=True)) if spec.zip else [()]
    for combo in itertools.product(*spec.grid.values()):
        for row in zip_rows:
            yield {
                **dict(zip(grid_keys, combo, strict=True)),
                **dict(zip(spec.zip, row, strict=True)),
            }


def expand(spec: SweepSpec, spec_dir: Path = Path(".")) -> list[Run]:
    """Resolve every run of a sweep (order: axes, then allocators, then seeds).

    Raises:
        InputError: naming the run's axis values and the bad field when a combination is invalid.
    """
    base_path = default_scenario_path() if spec.base == "default" else spec_dir / spec.base
    base = read_toml(base_path)
    runs: list[Run] = []
    for point in _axis_points(spec):
        for alloc in spec.allocators:
            for seed in spec.seeds:
                overrides: list[tuple[str, Any]] = list(spec.set.items())
                overrides += list(point.items())
                data = apply_overrides(base, overrides)
                data["allocator"] = {"name": alloc.name, **alloc.params}
                data.setdefault("run", {})["seed"] = seed
                where = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "base"
                label = f"sweep {spec.name!r} run ({where}, allocator {alloc.display}, seed {seed})"
                scenario = validate_scenario(data, label)
                runs.append(Run(len(runs), run_key(scenario), point, alloc.display, seed, scenario))
    keys = [r.key for r in runs]
    if len(set(keys)) != len(keys):
        raise InputError(f"sweep {spec.name!r}: two runs resolve to the same scenario")
    return runs


@dataclass
class RunOutcome:
    """What a worker sends back: tables and metadata, or the error of a failed run."""

    key: str
    tables: dict[str, pd.DataFrame] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_detail: str | None = None


def execute(key: str, scenario_json: dict[str, Any]) -> RunOutcome:
    """Simulate one run (in a worker process). Never raises: failures become outcomes."""
    from desim.components import build_simulation

    try:
        scenario = Scenario.model_validate(scenario_json)
        result = build_simulation(scenario).run()
        return RunOutcome(key, result.tables(), result.metadata)
    except DesimError as exc:
        return RunOutcome(key, error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a bug in one run must not stop the sweep; keep the traceback
        return RunOutcome(
            key, error=f"{type(exc).__name__}: {exc}", error_detail=traceback.format_exc()
        )


def _store(outcome: RunOutcome, run: Run, out: Path) -> bool:
    """Write one outcome atomically; return whether the run succeeded."""
    if outcome.error is not None:
        (out / "failures").mkdir(exist_ok=True)
        write_json(
            {
                "key": run.key,
                "axes": run.axes,
                "allocator": run.allocator,
                "seed": run.seed,
                "error": outcome.error,
                "traceback": outcome.error_detail,
            },
            out / "failures" / f"{run.key}.json",
        )
        return False
    staging = out / ".staging" / f"{run.key}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    assert outcome.tables is not None
    meta = {
        **outcome.metadata,
        "run_key": run.key,
        "axes": run.axes,
        "allocator_label": run.allocator,
    }
    write_result_tables(outcome.tables, meta, staging)
    final = out / "runs" / run.key
    if final.exists():  # an older copy of the same content: replace it
        shutil.rmtree(final)
    os.rename(staging, final)  # atomic: the run appears complete or not at all
    failure = out / "failures" / f"{run.key}.json"
    if failure.exists():
        failure.unlink()
    return True


def completed_keys(out: Path) -> set[str]:
    """Keys of runs stored completely under ``out/runs``."""
    runs = out / "runs"
    if not runs.is_dir():
        return set()
    return {p.name for p in runs.iterdir() if (p / "run.json").is_file()}


ProgressFn = Callable[[bool], None]


def execute_and_store(run: Run, out: Path) -> tuple[bool, str | None]:
    """Simulate one run and store it atomically (in a local worker: writes run in parallel)."""
    outcome = execute(run.key, run.scenario.model_dump(mode="json"))
    return _store(outcome, run, out), outcome.error


def _local_backend(todo: list[Run], workers: int, out: Path) -> Iterator[tuple[Run, bool]]:
    if workers <= 1:
        for run in todo:
            yield run, execute_and_store(run, out)[0]
        return
    ctx = mp.get_context("forkserver")
    # workers fork from a server that has already imported the simulator: no per-worker imports
    ctx.set_forkserver_preload(["desim.components", "desim.sweep"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending = {pool.submit(execute_and_store, r, out): r for r in todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()[0]


def _ray_backend(
    todo: list[Run], workers: int, address: str | None, out: Path
) -> Iterator[tuple[Run, bool]]:
    """Ray tasks return tables; the driver stores them (no shared file system needed)."""
    try:
        import ray
    except ImportError:
        raise InputError('the ray backend needs the ray extra: pip install ".[ray]"') from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = max(1, workers)
        ray.init(**kwargs)
        started = True
    try:
        remote = ray.remote(execute)
        refs = {remote.remote(r.key, r.scenario.model_dump(mode="json")): r for r in todo}
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                run = refs.pop(ref)
                yield run, _store(ray.get(ref), run, out)
    finally:
        if started:
            ray.shutdown()


@dataclass(frozen=True)
class SweepReport:
    """Counts of one sweep invocation and where its summary went."""

    total: int
    skipped: int
    succeeded: int
    failed: int
    summary_path: Path


def run_sweep(
    runs: list[Run],
    out_dir: str | Path,
    *,
    backend: Literal["local", "ray"] = "local",
    workers: int = 1,
    address: str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> SweepReport:
    """Execute the runs not yet stored, then rebuild the summary table.

    Args:
        runs: from :func:`expand`.
        out_dir: sweep results directory.
        backend: ``local`` (process pool) or ``ray``.
        workers: worker processes (``local``) or CPUs (a local Ray instance).
        address: Ray cluster address (``None``: start a local instance).
        resume: skip completed keys; without it, an ``out_dir`` holding runs is an error.
        progress: called with ``True``/``False`` (success/failure) after each run.
    """
    out = Path(out_dir)
    done = completed_keys(out)
    if done and not resume:
        raise InputError(
            f"{out}: already holds {len(done)} completed runs; pass --resume "
            "to continue this sweep, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    shutil.rmtree(out / ".staging", ignore_errors=True)  # leftovers of a killed sweep
    todo = [r for r in runs if r.key not in done]
    if backend == "ray":
        source = _ray_backend(todo, workers, address, out)
    else:
        source = _local_backend(todo, workers, out)
    ok = failed = 0
    for _run, success in source:
        ok += success
        failed += not success
        if progress is not None:
            progress(success)
    summary = summarize(runs, out)
    path = out / "summary"
    write_table(summary, path)
    return SweepReport(len(runs), len(runs) - len(todo), ok, failed, path.with_suffix(".parquet"))


SUMMARY_STATS = ("latency_s", "planned_latency_s")


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
            rounds = pd.read_parquet(stored / "rounds.parquet")
            row["status"] = "ok"
            row["rounds"] = len(rounds)
            ok_rounds = rounds[rounds["status"] == "ok"]
            for col in SUMMARY_STATS:
                x = ok_rounds[col].to_numpy(dtype=float)
                has = x.size > 0
                row[f"{col}_mean"] = float(np.mean(x)) if has else float("nan")
                row[f"{col}_p50"] = float(np.median(x)) if has else float("nan")
                row[f"{col}_p95"] = float(np.percentile(x, 95)) if has else float("nan")
                row[f"{col}_max"] = float(np.max(x)) if has else float("nan")
            row["total_time_s"] = float(rounds["end_s"].iloc[-1])
            row["min_memory_headroom_bytes"] = float(rounds["min_memory_headroom_bytes"].min())
            row["skipped_rounds"] = int((rounds["status"] != "ok").sum())
            row["dropouts"] = int(rounds["dropouts"].sum())
            timing = pd.read_parquet(stored / "timing.parquet")
            for col in WALL_CLOCK_COLUMNS:
                row[f"{col}_mean"] = float(timing[col].mean())
            row["error"] = ""
        elif failure.is_file():
            row["status"] = "failed"
            row["error"] = json.loads(failure.read_text())["error"]
        else:
            row["status"] = "missing"
            row["error"] = ""
        rows.append(row)
    return pd.DataFrame(rows)
