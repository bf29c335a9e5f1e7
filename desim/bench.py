"""Benchmarks behind ``desim bench``: measured figures, never asserted in tests.

``engine``: simulated rounds per second of the full engine, and its wall-time ratio to a bare
SimPy loop that schedules the same events (:func:`desim.engine.bare_event_loop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from desim.components import build_simulation
from desim.engine import bare_event_loop
from desim.io import load_scenario


@dataclass(frozen=True)
class EngineBench:
    """Result of :func:`bench_engine`."""

    rounds: int
    devices: int
    blocks: int
    desim_wall_s: float
    bare_wall_s: float

    @property
    def rounds_per_s(self) -> float:
        """Simulated rounds per wall-clock second."""
        return self.rounds / self.desim_wall_s

    @property
    def ratio(self) -> float:
        """Desim wall time ÷ bare SimPy wall time (goal ≤ 3)."""
        return self.desim_wall_s / self.bare_wall_s


def bench_engine(rounds: int = 1000, devices: int = 100, repeats: int = 3) -> EngineBench:
    """Time the default scenario with ``devices`` devices for ``rounds`` rounds.

    All ``devices`` devices are in every round's allocation problem; the default model has 12
    blocks, so 12 of them train per round. Memory budgets are raised so any device can hold any
    block. The best of ``repeats`` runs of each loop is reported.
    """
    scenario = load_scenario(
        None,
        [
            f"devices.population.count={devices}",
            f"run.rounds={rounds}",
            "devices.population.memory_bytes=4e9",
        ],
    )
    sim = build_simulation(scenario)
    best_desim = best_bare = float("inf")
    for _ in range(repeats):
        tic = perf_counter()
        result = sim.run()
        best_desim = min(best_desim, perf_counter() - tic)
        dr = result.device_rounds_frame()
        comp = (dr.compute_end_s - dr.compute_start_s).to_numpy().reshape(rounds, -1)
        up = (dr.upload_end_s - dr.upload_start_s).to_numpy().reshape(rounds, -1)
        tic = perf_counter()
        bare_event_loop(comp, up, scenario.server.aggregation_s)
        best_bare = min(best_bare, perf_counter() - tic)
    return EngineBench(rounds, devices, sim.workload.num_blocks, best_desim, best_bare)


@dataclass(frozen=True)
class SweepBench:
    """Result of :func:`bench_sweep`."""

    runs: int
    rounds_per_run: int
    wall_1_s: float
    wall_2_s: float

    @property
    def speedup(self) -> float:
        """Wall time with 1 worker ÷ wall time with 2 workers (goal ≥ 1.8 on 2 cores)."""
        return self.wall_1_s / self.wall_2_s


def bench_sweep(runs: int = 200, rounds: int = 100, workdir: str | None = None) -> SweepBench:
    """Run the same ``runs``-run sweep with 1 and with 2 local workers and time both.

    The runs are the default scenario with ``rounds`` rounds, over 4 device counts × 2 allocators
    × ``runs / 8`` seeds. Each timing includes writing every run's results.
    """
    import tempfile
    from pathlib import Path

    from desim.sweep import AllocatorEntry, SweepSpec, expand, run_sweep

    seeds = max(1, runs // 8)
    spec = SweepSpec(
        name="bench",
        seeds=list(range(seeds)),
        set={"run.rounds": rounds},
        grid={"devices.population.count": [12, 16, 20, 24]},
        allocators=[AllocatorEntry(name="greedy"), AllocatorEntry(name="random")],
    )
    todo = expand(spec)
    walls = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for workers in (1, 2):
            tic = perf_counter()
            run_sweep(todo, Path(tmp) / f"w{workers}", workers=workers)
            walls.append(perf_counter() - tic)
    return SweepBench(len(todo), rounds, walls[0], walls[1])
