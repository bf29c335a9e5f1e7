"""Sweeps: execute the runs of a spec on a process pool or Ray, and resume after a crash.

A sweep spec expands into runs (:mod:`desim.experiments.sweep_spec`: grid, zip, allocators and
seeds; every run a fully resolved :class:`~desim.scenario.model.Scenario` named by a content
hash, its **run key**). :func:`run_sweep` executes the runs not yet stored on a backend
(:mod:`desim.experiments.sweep_backends`) and stores each one atomically
(:mod:`desim.experiments.sweep_store`): into a staging directory, then one ``rename`` to
``runs/<key>/`` (by the local worker that ran it, so writing is parallel too; Ray tasks return
their tables and the driver writes them as they arrive, a bounded window of tasks at a time, so
a cluster needs no shared file system and the driver's memory does not grow with the sweep).
So after a hard kill a run is either complete or absent, and ``--resume`` skips every completed
key. A failed run is recorded in ``failures/<key>.json`` and never stops the sweep. Results do
not depend on the backend or the number of workers: each run is a pure function of its
scenario.

Several sweeps may resume the same folder at once: each stages under ``.staging/<pid>/``, the
final rename happens under the folder's lock file ``.lock`` and a run a twin already stored is
kept. Ctrl-C stops the workers at once and re-raises :class:`KeyboardInterrupt`; the stored
runs stay.
"""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from desim.errors import DesimError, InputError
from desim.experiments.sweep_backends import local_backend, ray_backend
from desim.experiments.sweep_spec import Run
from desim.experiments.sweep_store import (
    RunOutcome,
    completed_keys,
    remove_dead_staging,
    store_outcome,
    summarize,
)
from desim.io.outputs import write_table
from desim.scenario.model import Scenario

ProgressFn = Callable[[bool], None]
"""Called with ``True``/``False`` (stored as a success or not) after each run."""


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


def execute_and_store(run: Run, out: Path, staging_root: Path) -> tuple[bool, str | None]:
    """Simulate one run and store it atomically (in a local worker: writes run in parallel).

    A run a twin sweep of the same folder stored meanwhile is not simulated again.
    """
    if (out / "runs" / run.key / "run.json").is_file():
        return True, None
    outcome = execute(run.key, run.scenario.model_dump(mode="json"))
    return store_outcome(outcome, run, out, staging_root), outcome.error


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
    runtime_env: dict[str, Any] | None = None,
) -> SweepReport:
    """Execute the runs not yet stored, then rebuild the summary table.

    On Ctrl-C (:class:`KeyboardInterrupt`) the workers are stopped at once, the runs stored so
    far stay, and the exception propagates (``--resume`` continues the sweep).

    Args:
        runs: from :func:`~desim.experiments.sweep_spec.expand`.
        out_dir: sweep results directory.
        backend: ``local`` (process pool) or ``ray``.
        workers: worker processes (``local``) or CPUs (a local Ray instance).
        address: Ray cluster address (``None``: start a local instance).
        resume: skip completed keys; without it, an ``out_dir`` holding runs is an error.
        progress: called with ``True``/``False`` (success/failure) after each run.
        runtime_env: Ray runtime environment of the tasks (``ray`` only; default: the
            ``RAY_RUNTIME_ENV`` variable), e.g. ``{"py_modules": [...], "pip": [...]}`` for
            workers that lack desim.

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
    remove_dead_staging(out)
    staging = out / ".staging" / str(os.getpid())  # this sweep's workers stage here too
    todo = [r for r in runs if r.key not in done]
    if backend == "ray":
        source = ray_backend(todo, workers, address, out, staging, execute,
                             runtime_env=runtime_env)
    else:
        source = local_backend(todo, workers, out, staging, execute_and_store)
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
