"""Where the runs of a sweep execute: a local process pool (fork server) or Ray.

A backend yields ``(run, stored as a success)`` as runs finish. Local workers simulate and store
each run themselves, so writing is parallel too; Ray tasks return their tables and the driver
stores them as they arrive, so a cluster needs no shared file system, and keeps only a bounded
window of tasks submitted, so a sweep of any size streams through a driver of bounded memory.
Ctrl-C stops the workers at once. What a worker runs is passed in (``job``, ``simulate``):
:mod:`desim.experiments.sweep` defines it.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from desim.errors import BackendError, InputError
from desim.experiments.sweep_spec import Run
from desim.experiments.sweep_store import RunOutcome, process_alive, store_outcome

Outcomes = Generator[tuple[Run, bool], None, None]
Job = Callable[[Run, Path, Path], tuple[bool, str | None]]
"""Simulate one run and store it, in a local worker: ``(stored as a success, error)``."""
Simulate = Callable[[str, dict[str, Any]], RunOutcome]
"""Simulate one run from its key and scenario JSON and return its outcome (a Ray task)."""


def _init_worker(parent_pid: int) -> None:
    """Pool initializer: ignore Ctrl-C (only the parent acts on it) and end with the parent.

    A terminal's Ctrl-C reaches every process of the group. A parent killed outright (SIGKILL,
    the OOM killer) cannot stop its workers, so each one watches it and exits once it is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_after, args=(parent_pid,), daemon=True).start()


def _exit_after(pid: int, poll_s: float = 1.0) -> None:
    while process_alive(pid):
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


def local_backend(todo: list[Run], workers: int, out: Path, staging: Path, job: Job) -> Outcomes:
    """Run ``job`` for each run in this process (one worker) or on a fork-server pool."""
    if workers <= 1:
        for run in todo:
            yield run, job(run, out, staging)[0]
        return
    ctx = mp.get_context("forkserver")
    # workers fork from a server that has already imported the simulator: no per-worker imports
    # (desim.experiments.sweep defines the job the pool runs, execute_and_store)
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
                pending[pool.submit(job, r, out, staging)] = r
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


def ray_backend(
    todo: list[Run],
    workers: int,
    address: str | None,
    out: Path,
    staging: Path,
    simulate: Simulate,
    max_in_flight: int | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> Outcomes:
    """Run ``simulate`` as Ray tasks; the driver stores what they return (no shared files).

    A task gets a run's key and scenario and returns its :class:`RunOutcome` as an object; the
    driver writes each one atomically as it arrives and drops it, and keeps at most
    ``max_in_flight`` tasks submitted (default: twice the cluster's CPUs), so neither the
    driver nor the cluster's object stores hold more than that many results, however many runs
    the sweep has. Each stored run records the Ray node that simulated it (``ray_node_id`` in
    ``run.json``).

    Args:
        todo: the runs to execute.
        workers: CPUs of a local Ray instance (without ``address``).
        address: a cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``), or ``None``.
        out: the sweep folder.
        staging: this sweep's staging folder.
        simulate: what a task runs: key and scenario JSON to outcome.
        max_in_flight: most tasks submitted at once.
        runtime_env: Ray runtime environment of the sweep's tasks (the package for workers
            without desim installed); default: the ``RAY_RUNTIME_ENV`` variable's JSON.
    """
    try:
        import ray
    except ImportError:
        raise InputError('the ray backend needs the ray extra: pip install ".[ray]"') from None
    started = _connect_ray(ray, workers, address, runtime_env)
    refs: dict[Any, Run] = {}
    try:
        remote = ray.remote(_node_tagged(simulate)).options(scheduling_strategy="SPREAD")
        window = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", workers)))
        queue = iter(todo)
        while True:
            while len(refs) < window:  # top up the window; the rest waits its turn
                r = next(queue, None)
                if r is None:
                    break
                refs[remote.remote(r.key, r.scenario.model_dump(mode="json"))] = r
            if not refs:
                return
            # the timeout keeps the driver responsive to Ctrl-C; then take every finished run
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            if done:
                done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for ref in done:
                run = refs.pop(ref)
                yield run, store_outcome(ray.get(ref), run, out, staging)
    finally:
        if refs and not (started and not address):  # a cluster outlives us: cancel our tasks
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _node_tagged(simulate: Simulate) -> Simulate:
    """``simulate`` recording the Ray node it ran on in the outcome's metadata."""

    def task(key: str, scenario_json: dict[str, Any]) -> RunOutcome:
        import ray

        outcome = simulate(key, scenario_json)
        outcome.metadata["ray_node_id"] = ray.get_runtime_context().get_node_id()
        return outcome

    return task


def _connect_ray(
    ray: Any, workers: int, address: str | None, runtime_env: dict[str, Any] | None = None
) -> bool:
    """Connect to ``address`` or start a local instance; return whether this call did.

    Raises:
        InputError: ``RAY_RUNTIME_ENV`` is not a JSON object.
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
    env = runtime_env if runtime_env is not None else _runtime_env_variable()
    if env is not None:
        kwargs["runtime_env"] = env
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        where = f"--address {address}" if address else "local Ray instance"
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise BackendError(f"{where}: cannot start Ray: {lines[0]}") from None
    return True


def _runtime_env_variable() -> dict[str, Any] | None:
    """The ``RAY_RUNTIME_ENV`` variable's runtime environment (Ray's own name for it)."""
    text = os.environ.get("RAY_RUNTIME_ENV")
    if not text:
        return None
    try:
        env = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"RAY_RUNTIME_ENV: not JSON ({exc.msg}): {text[:80]!r}") from None
    if not isinstance(env, dict):
        raise InputError(f"RAY_RUNTIME_ENV: expected a JSON object, got {text[:80]!r}")
    return env


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
