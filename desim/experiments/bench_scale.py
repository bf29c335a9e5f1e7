"""``desim bench scale``: wall time and peak memory against K, N and rounds, with the exponents.

Every point is one ``desim`` simulation in a fresh child process, so its peak resident memory
(``ru_maxrss`` of that child, from :func:`os.wait4`) is its own, imports included. The setting
scales to any K: the generated TR 38.901 channel and the generated compute timeline, both
produced on demand (:mod:`desim.world.generated`), ``crunch`` with the equal split.

Inside the child the run's time is split by timing the engine's own steps in place:

- ``snapshot``: building each round's :class:`~desim.allocators.base.RoundContext`;
- ``allocator``: the plan (the rounds table's ``solve_wall_s``);
- ``realise``: :func:`~desim.engine.realise.realise_with_losses`;
- ``records``: :func:`~desim.engine.recording.record_round` and the result tables;
- ``simpy``: the rest of the run (the event loop and the driver);

and ``build`` (:func:`~desim.engine.assembly.build_simulation`) and ``total`` (the child's
wall time, start-up included) beside them. An exponent is the least-squares slope of
``log(time)`` or ``log(memory)`` against ``log(axis)`` over an axis's points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

N_AXIS_DEVICES = 101
"""The device count of the ``N`` axis (odd, so its points are told apart from the others)."""
PHASES = ("build", "snapshot", "allocator", "realise", "records", "simpy")
#: (axis, K, N, rounds) of the full grid: K 10..10^4, N 12 and 24, rounds 10..10^4
FULL_GRID: tuple[tuple[str, int, int, int], ...] = (
    *(("K", k, 12, 10) for k in (10, 100, 1000, 10_000)),
    *(("N", N_AXIS_DEVICES, n, 10) for n in (12, 24)),
    *(("rounds", 20, 12, r) for r in (10, 100, 1000, 10_000)),
)
QUICK_GRID: tuple[tuple[str, int, int, int], ...] = (
    *(("K", k, 12, 5) for k in (10, 100)),
    *(("N", N_AXIS_DEVICES, n, 3) for n in (12, 24)),
    *(("rounds", 20, 12, r) for r in (5, 50)),
)


@dataclass(frozen=True)
class ScalePoint:
    """One measured point: its axis and size, wall time, peak memory and phase seconds."""

    axis: str
    devices: int
    blocks: int
    rounds: int
    wall_s: float
    peak_rss_bytes: int
    phases_s: dict[str, float] = field(default_factory=dict)

    @property
    def dominant(self) -> str:
        """The run phase (not ``build``) that took the most time."""
        run = {k: v for k, v in self.phases_s.items() if k != "build"}
        return max(run, key=run.__getitem__)


def overrides(devices: int, blocks: int, rounds: int) -> list[str]:
    """The scenario of a point: the default, grown to ``devices`` on generated worlds.

    RoBERTa-base (12 layers, the profiled costs) on the K and rounds axes; the ``N`` axis
    splits RoBERTa-large (24 layers) into 12 and 24 blocks, priced by the analytic model
    (the profiles have one layer per block), so that only the split changes.
    """
    n_axis = devices == N_AXIS_DEVICES
    model = "roberta-large" if n_axis else "roberta-base"
    cost = ["cost.model=analytic"] if n_axis else []
    return [*cost, f"devices.population.count={devices}", f"model.name={model}",
            f"model.num_blocks={blocks}", f"run.rounds={rounds}", "channel.kind=generated",
            "compute.kind=generated", "allocator.name=crunch", "allocator.bandwidth=equal",
            "run.on_infeasible=skip"]


def measure_in_process(devices: int, blocks: int, rounds: int) -> dict[str, float]:
    """Run one point here and return its phase seconds (the child's side)."""
    import desim.engine.driver as driver
    from desim.engine.assembly import build_simulation
    from desim.engine.simulation import Simulation
    from desim.io.scenario import load_scenario

    spent = dict.fromkeys(PHASES, 0.0)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tic = perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += perf_counter() - tic
        return wrapper

    driver.realise_with_losses = timed("realise", driver.realise_with_losses)  # type: ignore[assignment]
    driver.record_round = timed("records", driver.record_round)  # type: ignore[assignment]
    Simulation.context = timed("snapshot", Simulation.context)  # type: ignore[method-assign]
    tic = perf_counter()
    sim = build_simulation(load_scenario(None, overrides(devices, blocks, rounds)))
    spent["build"] = perf_counter() - tic
    spent["snapshot"] = 0.0  # building may take a snapshot; only the run's count
    tic = perf_counter()
    result = sim.run()
    run_s = perf_counter() - tic
    in_run = spent["snapshot"] + spent["realise"] + spent["records"]
    tic = perf_counter()
    tables = result.tables()
    spent["records"] += perf_counter() - tic
    spent["allocator"] = float(tables["timing"]["solve_wall_s"].sum())
    spent["simpy"] = max(run_s - in_run - spent["allocator"], 0.0)
    return spent


def measure_point(axis: str, devices: int, blocks: int, rounds: int) -> ScalePoint:
    """Run one point in a fresh child process: its wall time, peak RSS and phases."""
    cmd = [sys.executable, "-m", "desim.experiments.bench_scale", str(devices), str(blocks),
           str(rounds)]
    tic = perf_counter()
    with tempfile.TemporaryFile("w+") as errors:  # a file: a full pipe cannot block the child
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        text = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, for this child's own usage
        errors.seek(0)
        err = errors.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"bench scale point K={devices} N={blocks} rounds={rounds} failed "
                           f"(exit {proc.returncode}): {err.strip().splitlines()[-1:]}")
    phases = json.loads(text.strip().splitlines()[-1])
    return ScalePoint(axis, devices, blocks, rounds, wall, int(usage.ru_maxrss) * 1024, phases)


def exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x`` (``nan`` with fewer than 2 points)."""
    if len(xs) < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def bench_scale(quick: bool = False) -> list[ScalePoint]:
    """Measure every point of the grid (``quick``: a small one for tests)."""
    return [measure_point(*point) for point in (QUICK_GRID if quick else FULL_GRID)]


def fitted_exponents(points: list[ScalePoint]) -> dict[str, dict[str, float]]:
    """Per axis: the exponents of wall time, peak memory and the run time (less start-up)."""
    out: dict[str, dict[str, float]] = {}
    for axis, size in (("K", "devices"), ("N", "blocks"), ("rounds", "rounds")):
        pts = [p for p in points if p.axis == axis]
        xs = [float(getattr(p, size)) for p in pts]
        run = [sum(v for k, v in p.phases_s.items() if k != "build") for p in pts]
        out[axis] = {"wall": exponent(xs, [p.wall_s for p in pts]),
                     "run": exponent(xs, run),
                     "memory": exponent(xs, [float(p.peak_rss_bytes) for p in pts])}
    return out


def save_points(points: list[ScalePoint], path: str) -> None:
    """Write the points as JSON (``plot_scale`` redraws from it without re-measuring)."""
    Path(path).write_text(json.dumps([asdict(p) for p in points], indent=1) + "\n")


def load_points(path: str) -> list[ScalePoint]:
    """The points :func:`save_points` wrote."""
    return [ScalePoint(**d) for d in json.loads(Path(path).read_text())]


def plot_scale(points: list[ScalePoint], path: str) -> None:
    """Log-log panels of wall time and its phases, and peak memory, against each axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = fitted_exponents(points)
    fig, axes = plt.subplots(2, 3, figsize=(12.0, 6.6), constrained_layout=True)
    for col, (axis, size, label) in enumerate((("K", "devices", "devices K"),
                                              ("N", "blocks", "blocks N"),
                                              ("rounds", "rounds", "rounds"))):
        pts = sorted((p for p in points if p.axis == axis), key=lambda p: getattr(p, size))
        xs = [getattr(p, size) for p in pts]
        top, bottom = axes[0, col], axes[1, col]
        top.loglog(xs, [p.wall_s for p in pts], "ko-", label=f"wall (×{fits[axis]['wall']:.2f})")
        for i, phase in enumerate(PHASES):
            ys = [max(p.phases_s.get(phase, 0.0), 1e-5) for p in pts]
            top.loglog(xs, ys, marker="os^vDx"[i], ls="--", lw=0.8, ms=4, label=phase)
        top.set_title(f"time against {label}", fontsize=9)
        top.set_ylabel("seconds (log)")
        top.grid(alpha=0.3, which="both")
        top.legend(fontsize=6)
        bottom.semilogx(xs, [p.peak_rss_bytes / 1e6 for p in pts], "C3o-",
                      label=f"peak RSS (×{fits[axis]['memory']:.2f})")
        mem = [p.peak_rss_bytes / 1e6 for p in pts]
        bottom.set_ylim(0.0, max(mem) * 1.3)  # from zero: small changes look small
        for ax in (top, bottom):
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        bottom.set_xlabel(label)
        bottom.set_ylabel("peak memory (MB)")
        bottom.grid(alpha=0.3, which="both")
        bottom.legend(fontsize=7)
    fig.suptitle("desim bench scale: generated channel and compute, crunch (fitted log-log "
                 "exponents in the legends)", fontsize=10)
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":  # the child of measure_point: one point, phases as JSON
    K, N, R = (int(a) for a in sys.argv[1:4])
    print(json.dumps(measure_in_process(K, N, R)))
