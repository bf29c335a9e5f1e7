"""Sweeps: expand a spec into runs, execute them on a process pool or Ray, resume after a crash.

A sweep spec (TOML, see ``experiments/README.md``) names a base scenario, fixed overrides
(``[set]``), grid axes (``[grid]``: the product of every listed value), zipped axes (``[zip]``:
lists of equal length that vary together), allocators and replicate seeds. Every run is a fully
resolved :class:`~desim.scenario.model.Scenario`; its **run key** is a content hash of that scenario
(allocator, parameters and seed included) and the desim version.

Each run is written atomically: into a staging directory, then one ``rename`` to
``runs/<key>/`` (by the local worker that ran it, so writing is parallel too; Ray tasks return
their tables and the driver writes them, so a cluster needs no shared file system). So after a
hard kill a run is either complete or absent, and ``--resume`` skips every completed key. A
failed run is recorded in ``failures/<key>.json`` and never stops the sweep. Results do not
depend on the backend or the number of workers: each run is a pure function of its scenario.

Several sweeps may resume the same folder at once: each stages under ``.staging/<pid>/``, the
final rename happens under the folder's lock file ``.lock`` and a run a twin already stored is
kept. Ctrl-C stops the workers at once and re-raises :class:`KeyboardInterrupt`; the stored
runs stay. A sweep holds at most :data:`MAX_RUNS` runs (:func:`run_count` counts a spec
without resolving it, :func:`iter_runs` resolves it lazily).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from filelock import FileLock
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from desim import __version__
from desim.engine.checks import check_components
from desim.engine.records import WALL_CLOCK_COLUMNS
from desim.errors import BackendError, DesimError, InputError
from desim.io.files import (
    SHIPPED_PREFIX,
    apply_overrides,
    default_scenario_path,
    read_toml,
    resolve_override,
    resolve_paths,
    trace_sidecar,
    write_json,
    write_result_tables,
    write_table,
)
from desim.scenario.model import Scenario, format_validation_error, validate_scenario

MAX_RUNS = 100_000
"""Most runs one sweep may hold (a resolved run costs a few kB of memory and about 1 ms)."""

_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


class AllocatorEntry(BaseModel):
    """One allocator of a sweep: registered ``name``, optional ``label``; other keys are params."""

    model_config = ConfigDict(frozen=True, extra="allow", strict=True)
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

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)  # as the scenario
    name: str = Field(min_length=1)
    description: str = ""
    base: str = "default"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    allocators: list[AllocatorEntry] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        # the name becomes results/sweeps/<name>: it must not point outside that folder
        if not _FOLDER_NAME.fullmatch(value) or ".." in value:
            raise ValueError(
                "expected a folder name of letters, digits, '_', '-' and '.' (not starting "
                "with '.', no '..', no path separator)"
            )
        return value

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

    Files named by path are hashed by content and stand in the hashed scenario by their digest,
    not their path: editing a trace gives new keys, while the same files reached by another path
    (scenario paths are made absolute, :func:`desim.io.files.resolve_paths`) give the same key, so a
    moved checkout resumes its sweeps. Shipped files change only with the desim version. 16 hex
    digits.
    """
    digests = {str(p): _file_digest(p) for p in referenced_files(scenario)}
    blob = json.dumps(
        {
            "scenario": _by_content(scenario.model_dump(mode="json"), digests),
            "files": sorted(digests.values()),
            "desim": __version__,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _by_content(node: Any, digests: Mapping[str, str]) -> Any:
    """``node`` with every string that names a hashed file replaced by that file's digest."""
    if isinstance(node, dict):
        return {k: _by_content(v, digests) for k, v in node.items()}
    if isinstance(node, list):
        return [_by_content(v, digests) for v in node]
    if isinstance(node, str) and node in digests:
        return f"sha256:{digests[node]}"
    return node


def referenced_files(scenario: Scenario) -> list[Path]:
    """Existing user files a scenario reads, not shipped names.

    Channel and compute traces with their JSON sidecars, cost profiles (a CSV or a folder),
    the Kill-and-Revive score file and a model config JSON (``model.name = "path.json"``).
    """
    traces = [scenario.channel.path, scenario.compute.path]
    refs = [
        *traces,
        *(ref.profile for ref in scenario.cost.profiles.values()),
        scenario.scheme.kr_scores if isinstance(scenario.scheme.kr_scores, str) else None,
        scenario.model.name if scenario.model.name.endswith(".json") else None,
    ]
    paths = [Path(r) for r in refs if r and not r.startswith(SHIPPED_PREFIX)]
    paths += [trace_sidecar(Path(t)) for t in traces if t and not t.startswith(SHIPPED_PREFIX)]
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


def run_count(spec: SweepSpec) -> int:
    """Number of runs of a sweep, without resolving one (grid × zip × allocators × seeds)."""
    grid = math.prod(len(values) for values in spec.grid.values())
    zipped = len(next(iter(spec.zip.values()))) if spec.zip else 1
    return grid * zipped * len(spec.allocators) * len(spec.seeds)


def iter_runs(spec: SweepSpec, spec_dir: Path = Path(".")) -> Iterator[Run]:
    """Resolve the runs of a sweep one at a time, in :func:`expand`'s order (no count limit).

    Raises:
        InputError: naming the run's axis values and the bad field when a combination is invalid.
    """
    base_path = default_scenario_path() if spec.base == "default" else spec_dir / spec.base
    # paths in the base resolve from the base's folder, paths in the spec from the spec's
    base = resolve_paths(read_toml(base_path), base_path.parent)
    fixed = [(k, resolve_override(k, v, spec_dir)) for k, v in spec.set.items()]
    index = 0
    for point in _axis_points(spec):
        moved = [(k, resolve_override(k, v, spec_dir)) for k, v in point.items()]
        for alloc in spec.allocators:
            for seed in spec.seeds:
                overrides = fixed + moved
                data = apply_overrides(base, overrides)
                data["allocator"] = {"name": alloc.name, **alloc.params}
                data.setdefault("run", {})["seed"] = seed
                where = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "base"
                label = f"sweep {spec.name!r} run ({where}, allocator {alloc.display}, seed {seed})"
                scenario = validate_scenario(data, label)
                check_components(scenario, label)
                yield Run(index, run_key(scenario), point, alloc.display, seed, scenario)
                index += 1


def expand(spec: SweepSpec, spec_dir: Path = Path("."), *, limit: int = MAX_RUNS) -> list[Run]:
    """Resolve every run of a sweep (order: axes, then allocators, then seeds).

    Args:
        spec: the validated spec.
        spec_dir: directory that a relative ``base`` is read from.
        limit: most runs allowed (:data:`MAX_RUNS`); counted before anything is resolved.

    Raises:
        InputError: the sweep has more than ``limit`` runs (the message gives both counts), or
            naming the run's axis values and the bad field when a combination is invalid.
    """
    count = run_count(spec)
    if count > limit:
        raise InputError(
            f"sweep {spec.name!r}: {count:,} runs exceed the limit of {limit:,} runs per sweep; "
            "split the grid over several specs (--dry-run lists it without running)"
        )
    runs = list(iter_runs(spec, spec_dir))
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
    from desim.engine.assembly import build_simulation

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


def _lock(out: Path) -> FileLock:
    """The folder's lock: sweeps resuming one folder at once store their runs in turn."""
    return FileLock(out / ".lock")


def _store(outcome: RunOutcome, run: Run, out: Path, staging_root: Path) -> bool:
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
    write_result_tables(outcome.tables, meta, staging)
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


def _remove_dead_staging(out: Path) -> None:
    """Remove the staging of killed sweeps; a live twin's ``.staging/<pid>`` stays."""
    root = out / ".staging"
    if not root.is_dir():
        return
    for entry in root.iterdir():
        owner = entry.name.rsplit("-", 1)[-1]  # <pid>, or <key>-<pid> of older desim versions
        if owner.isdigit() and _alive(int(owner)):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():  # our own pid here is a dead sweep's, reused
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


ProgressFn = Callable[[bool], None]
_Outcomes = Generator[tuple[Run, bool], None, None]


def execute_and_store(run: Run, out: Path, staging_root: Path) -> tuple[bool, str | None]:
    """Simulate one run and store it atomically (in a local worker: writes run in parallel).

    A run a twin sweep of the same folder stored meanwhile is not simulated again.
    """
    if (out / "runs" / run.key / "run.json").is_file():
        return True, None
    outcome = execute(run.key, run.scenario.model_dump(mode="json"))
    return _store(outcome, run, out, staging_root), outcome.error


def _init_worker(parent_pid: int) -> None:
    """Pool initializer: ignore Ctrl-C (only the parent acts on it) and end with the parent.

    A terminal's Ctrl-C reaches every process of the group. A parent killed outright (SIGKILL,
    the OOM killer) cannot stop its workers, so each one watches it and exits once it is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_after, args=(parent_pid,), daemon=True).start()


def _exit_after(pid: int, poll_s: float = 1.0) -> None:
    while _alive(pid):
        time.sleep(poll_s)
    os._exit(1)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives in the block and raise it when the block ends (main thread).

    A worker cut off while it starts prints a traceback from the fork server.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if caught:
        raise KeyboardInterrupt


def _start_forkserver() -> None:
    """Start the fork server with Ctrl-C ignored, a disposition it and its workers inherit.

    Else a terminal's Ctrl-C while the server still imports the simulator kills it with a
    traceback. Only the main thread may change signal handlers; elsewhere the server starts as
    multiprocessing starts it.
    """
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, old)


def _local_backend(
    todo: list[Run], workers: int, out: Path, staging: Path
) -> _Outcomes:
    if workers <= 1:
        for run in todo:
            yield run, execute_and_store(run, out, staging)[0]
        return
    ctx = mp.get_context("forkserver")
    # workers fork from a server that has already imported the simulator: no per-worker imports
    ctx.set_forkserver_preload(["desim.engine.assembly", "desim.experiments.sweep"])
    with _sigint_deferred():
        _start_forkserver()
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    )
    finished = False
    try:
        pending: dict[Future[tuple[bool, str | None]], Run] = {}
        with _sigint_deferred():  # submitting starts the workers: not to be cut in half
            for r in todo:
                pending[pool.submit(execute_and_store, r, out, staging)] = r
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()[0]
        finished = True
    finally:
        if finished:
            pool.shutdown()
        else:  # Ctrl-C, an error, or the caller stopped early: do not wait for running runs
            _stop_pool(pool)


def _stop_pool(pool: ProcessPoolExecutor, grace_s: float = 3.0) -> None:
    """Cancel the queued runs and end the workers now (SIGTERM, then SIGKILL after ``grace_s``)."""
    # Python < 3.14 has no ProcessPoolExecutor.terminate_workers(); the pool keeps them here
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
    # only now release the queues: a worker still starting would fail to attach to them, loudly
    pool.shutdown(wait=False, cancel_futures=True)


def _ray_backend(
    todo: list[Run], workers: int, address: str | None, out: Path, staging: Path
) -> _Outcomes:
    """Ray tasks return tables; the driver stores them (no shared file system needed)."""
    try:
        import ray
    except ImportError:
        raise InputError('the ray backend needs the ray extra: pip install ".[ray]"') from None
    started = _connect_ray(ray, workers, address)
    refs: dict[Any, Run] = {}
    try:
        remote = ray.remote(execute)
        for r in todo:
            refs[remote.remote(r.key, r.scenario.model_dump(mode="json"))] = r
        while refs:
            # the timeout keeps the driver responsive to Ctrl-C; one wait returns every done run
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
            for ref in done:
                run = refs.pop(ref)
                yield run, _store(ray.get(ref), run, out, staging)
    finally:
        if refs and not (started and not address):  # a cluster outlives us: cancel our tasks
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _connect_ray(ray: Any, workers: int, address: str | None) -> bool:
    """Connect to ``address`` or start a local instance; return whether this call did.

    Raises:
        BackendError: nothing listens at ``address``, or Ray fails to start or connect.
    """
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address:
        _check_reachable(address)
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = max(1, workers)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        where = f"--address {address}" if address else "local Ray instance"
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise BackendError(f"{where}: cannot start Ray: {lines[0]}") from None
    return True


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a Ray address (``ray.init`` retries for minutes).

    Raises:
        InputError: ``address`` is not ``HOST:PORT``, ``ray://HOST[:PORT]`` or ``auto``.
        BackendError: no TCP connection within ``timeout_s``.
    """
    if address == "auto":
        return
    client = address.startswith("ray://")
    hostport = address.removeprefix("ray://")
    host, sep, port_text = hostport.rpartition(":")
    if not sep:  # Ray's default ports: the client server's, or the GCS's
        host, port_text = hostport, "10001" if client else "6379"
    if not host or not port_text.isdigit():
        raise InputError(
            f"--address: expected HOST:PORT, ray://HOST:PORT or auto, got {address!r}"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise BackendError(
            f"--address {address}: no Ray cluster reachable there ({reason}); start one with "
            "`ray start --head` or check the address"
        ) from None


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

    On Ctrl-C (:class:`KeyboardInterrupt`) the workers are stopped at once, the runs stored so
    far stay, and the exception propagates (``--resume`` continues the sweep).

    Args:
        runs: from :func:`expand`.
        out_dir: sweep results directory.
        backend: ``local`` (process pool) or ``ray``.
        workers: worker processes (``local``) or CPUs (a local Ray instance).
        address: Ray cluster address (``None``: start a local instance).
        resume: skip completed keys; without it, an ``out_dir`` holding runs is an error.
        progress: called with ``True``/``False`` (success/failure) after each run.

    Raises:
        InputError: ``out_dir`` holds runs and ``resume`` is false.
        BackendError: the Ray cluster at ``address`` cannot be reached.
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
    _remove_dead_staging(out)
    staging = out / ".staging" / str(os.getpid())  # this sweep's workers stage here too
    todo = [r for r in runs if r.key not in done]
    if backend == "ray":
        source = _ray_backend(todo, workers, address, out, staging)
    else:
        source = _local_backend(todo, workers, out, staging)
    ok = failed = 0
    try:
        for _run, success in source:
            ok += success
            failed += not success
            if progress is not None:
                progress(success)
    finally:
        source.close()  # interrupted in progress(): stops the workers before we go on
        shutil.rmtree(staging, ignore_errors=True)
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
