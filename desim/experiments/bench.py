"""Benchmarks behind ``desim bench``: measured figures, never asserted in tests.

``engine``: simulated rounds per second of the full engine, and its wall-time ratio to a bare
SimPy loop that schedules the same events (:func:`desim.engine.simulation.bare_event_loop`).

``sweep``: the speedup of 2 local workers over 1 (:func:`bench_sweep`); ``overhead``: what a
sweep of one-round runs spends beside simulating, per run and by phase
(:func:`bench_sweep_overhead`).

``allocators``: solve time against ``K`` and ``N`` (:func:`bench_allocator_times`), JBBA's gap
to the exact P2 optimum on random instances (:func:`bench_jbba_gap`), and every allocator's
round latency on the default scenario relative to ``jbba-exact``
(:func:`bench_default_latency`). Each returns a DataFrame; the CLI writes them as CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

from desim.engine.assembly import build_simulation
from desim.engine.simulation import bare_event_loop
from desim.io.scenario import load_scenario


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


def bench_engine(
    rounds: int = 1000, devices: int = 100, repeats: int = 3, overrides: tuple[str, ...] = ()
) -> EngineBench:
    """Time the default scenario with ``devices`` devices for ``rounds`` rounds.

    All ``devices`` devices are in every round's allocation problem; the default model has 12
    blocks, so 12 of them train per round. Memory budgets are raised so any device can hold any
    block; ``overrides`` (``section.key=value``) change anything else. The best of ``repeats``
    runs of each loop is reported.
    """
    scenario = load_scenario(
        None,
        [
            f"devices.population.count={devices}",
            f"run.rounds={rounds}",
            "devices.population.memory_bytes=4e9",
            *overrides,
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

    from desim.experiments.sweep import run_sweep
    from desim.experiments.sweep_spec import AllocatorEntry, SweepSpec, expand

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


@dataclass(frozen=True)
class OverheadBench:
    """Result of :func:`bench_sweep_overhead`: what a sweep spends beside simulating rounds.

    Attributes:
        runs: one-round runs swept on one local worker.
        sweep_wall_s: wall time of that sweep (expansion excluded, storing included).
        round_s: one round's own cost, from one long run of the same scenario.
        phases_s: mean seconds per run of each phase, timed in-process on the same runs:
            ``build`` (setup: traces, profiles, fitted costs, the simulation), ``simulate``,
            ``tables`` (frames and energy columns) and ``store`` (Parquet, CSV, run.json).
    """

    runs: int
    sweep_wall_s: float
    round_s: float
    phases_s: dict[str, float]

    @property
    def overhead_per_run_s(self) -> float:
        """(sweep wall − runs × one round's cost) ÷ runs (goal ≤ 20 ms)."""
        return (self.sweep_wall_s - self.runs * self.round_s) / self.runs

    @property
    def efficiency(self) -> float:
        """Rounds per second of the sweep over those of one long run (goal ≥ 50%)."""
        return self.runs * self.round_s / self.sweep_wall_s

    @property
    def setup_share(self) -> float:
        """The share of the sweep's wall time spent in setup (the ``build`` phase)."""
        return self.runs * self.phases_s["build"] / self.sweep_wall_s


def bench_sweep_overhead(runs: int = 60, long_rounds: int = 200) -> OverheadBench:
    """Sweep ``runs`` one-round runs of the default scenario on one worker; split the cost.

    The runs are 4 device counts × ``runs / 4`` seeds of ``greedy``. One round's own cost is
    the per-round wall time of one ``long_rounds``-round run.
    """
    import tempfile
    from pathlib import Path

    from desim.experiments.sweep import run_sweep
    from desim.experiments.sweep_spec import AllocatorEntry, SweepSpec, expand
    from desim.io.outputs import write_result_tables

    spec = SweepSpec(name="overhead", seeds=list(range(max(1, runs // 4))),
                     set={"run.rounds": 1}, grid={"devices.population.count": [12, 16, 20, 24]},
                     allocators=[AllocatorEntry(name="greedy")])
    todo = expand(spec)
    long_sim = build_simulation(load_scenario(None, [f"run.rounds={long_rounds}"]))
    tic = perf_counter()
    long_sim.run()
    round_s = (perf_counter() - tic) / long_rounds
    phases = dict.fromkeys(("build", "simulate", "tables", "store"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        tic = perf_counter()
        run_sweep(todo, Path(tmp) / "sweep", workers=1)
        wall = perf_counter() - tic
        for run in todo:
            t0 = perf_counter()
            sim = build_simulation(run.scenario)
            t1 = perf_counter()
            result = sim.run()
            t2 = perf_counter()
            tables = result.tables()
            t3 = perf_counter()
            write_result_tables(tables, result.metadata, Path(tmp) / "phases" / run.key,
                                atomic=False)  # as the sweep writes its staging folder
            t4 = perf_counter()
            for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                phases[name] += dt / len(todo)
    return OverheadBench(len(todo), wall, round_s, phases)


ALLOCATOR_TIME_TARGETS = (
    "crunch at K=10000, N=24 <= 10 ms",
    "crunch >= 100x faster than milp at K=1000",
    "jbba-exact at K=200, N=24 <= 200 ms",
    "jbba within 1% of jbba-exact on >= 95% of instances",
)


def _best_solve_s(allocator, ctx, repeats: int, budget_s: float = 0.3) -> float:  # type: ignore[no-untyped-def]
    """Best solve time over at least ``repeats`` calls, more while under ``budget_s`` (≤ 200)."""
    import numpy as np

    rng = np.random.default_rng(0)
    best, spent, calls = float("inf"), 0.0, 0
    while calls < repeats or (spent < budget_s and calls < 200):
        tic = perf_counter()
        allocator.allocate(ctx, rng)
        took = perf_counter() - tic
        best, spent, calls = min(best, took), spent + took, calls + 1
    return best


def bench_allocator_times(
    devices: tuple[int, ...] = (10, 100, 1000, 10000),
    blocks: tuple[int, ...] = (12, 24),
    milp_max_devices: int = 1000,
    repeats: int = 5,
    seed: int = 0,
):  # type: ignore[no-untyped-def]
    """Best-of-``repeats`` solve time of ``crunch``, ``bottleneck-exact`` and ``milp`` per size.

    Instances come from :func:`desim.allocators.instances.random_context` (memory cuts, 10%
    unavailable devices). ``milp`` is skipped above ``milp_max_devices`` (and said so in the
    ``note`` column) and timed once (HiGHS takes seconds). A ``jbba-exact`` row at
    ``K = 200, N = 24`` is added for its target, ``oracle-exact`` rows at ``K = 20, N = 12``
    and ``K = 200, N = 24`` with a time-varying true future (:func:`_with_fading_future`), and
    ``crunch-multi`` rows at ``K = 8`` and ``100``, ``N = 24``
    (:func:`desim.experiments.bench_sets.crunch_multi_times`).

    Returns:
        DataFrame with ``allocator, devices, blocks, solve_ms, note``.
    """
    import numpy as np
    import pandas as pd

    from desim.allocators import make_allocator
    from desim.allocators.instances import random_context

    rows = []
    for n in blocks:
        for k in devices:
            if k < n:
                for name in ("crunch", "bottleneck-exact", "milp"):
                    rows.append((name, k, n, float("nan"), "skipped: K < N, no feasible round"))
                continue
            ctx = random_context(np.random.default_rng([seed, k, n]), k, n)
            for name in ("crunch", "bottleneck-exact", "milp"):
                if name == "milp" and k > milp_max_devices:
                    note = f"skipped: K > {milp_max_devices} (HiGHS on {k * n:,} binaries)"
                    rows.append((name, k, n, float("nan"), note))
                    continue
                reps, budget = (1, 0.0) if name == "milp" else (repeats, 0.3)
                secs = _best_solve_s(make_allocator(name), ctx, reps, budget)
                rows.append((name, k, n, secs * 1e3, ""))
    ctx = random_context(np.random.default_rng([seed, 200, 24]), 200, 24)
    secs = _best_solve_s(make_allocator("jbba-exact"), ctx, repeats)
    rows.append(("jbba-exact", 200, 24, secs * 1e3, ""))
    from desim.experiments.bench_sets import crunch_multi_times

    rows.extend(crunch_multi_times(seed, lambda a, c: _best_solve_s(a, c, repeats)))
    for k, n in ((20, 12), (200, 24)):  # the genie bound needs the true future world
        ctx = _with_fading_future(random_context(np.random.default_rng([seed, k, n]), k, n), seed)
        secs = _best_solve_s(make_allocator("oracle-exact"), ctx, repeats)
        rows.append(("oracle-exact", k, n, secs * 1e3, "future: 0.1 s Rayleigh blocks, load"))
    return pd.DataFrame(rows, columns=["allocator", "devices", "blocks", "solve_ms", "note"])


def _with_fading_future(ctx, seed: int):  # type: ignore[no-untyped-def]
    """``ctx`` with a true future world for ``oracle-exact`` (both loop at 60 s).

    The channel is Rayleigh block fading (0.1 s blocks, ``Exp(1)`` around the instance's SNR);
    speeds are uniform in ``[0.5, 1]``, each held 1 s.
    """
    from dataclasses import replace

    import numpy as np

    from desim.engine.realise import World
    from desim.world.channel import SignalChannel
    from desim.world.compute import SignalTimeline
    from desim.world.piecewise import PiecewiseSignals

    rng = np.random.default_rng([seed, ctx.num_devices, ctx.num_blocks, 1])
    K = ctx.num_devices
    fading = ctx.snr_coef_hz[:, None] * rng.exponential(1.0, (K, 600))
    channel = SignalChannel(PiecewiseSignals(np.arange(600) * 0.1, fading, 60.0, "loop"))
    speed = PiecewiseSignals(np.arange(60.0), rng.uniform(0.5, 1.0, (K, 60)), 60.0, "loop")
    world = World(SignalTimeline(speed, PiecewiseSignals.constant(np.ones(K))), channel,
                  ctx.device_names)
    now = speed.at(0.0)
    return replace(ctx, work_s=ctx.compute_s, compute_s=ctx.compute_s / now[:, None],
                   speed=now, snr_coef_hz=channel.snr_coef_hz(0.0), future=world)


def bench_jbba_gap(
    instances: int = 100, devices: int = 30, blocks: int = 12, seed: int = 0
):  # type: ignore[no-untyped-def]
    """Optimality gap of ``jbba`` (with and without its refinement step) to ``jbba-exact``.

    Returns:
        DataFrame with one row per feasible random instance: ``instance, exact_s, jbba_s,
        gap, dual_only_s, dual_only_gap, iterations, jbba_ms, exact_ms``.
    """
    import numpy as np
    import pandas as pd

    from desim.allocators import make_allocator
    from desim.allocators.instances import random_context
    from desim.errors import InfeasibleError

    exact, jbba = make_allocator("jbba-exact"), make_allocator("jbba")
    plain = make_allocator("jbba", {"refine": False})
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(instances):
        ctx = random_context(rng, devices, blocks)
        try:
            tic = perf_counter()
            ref = ctx.round_latency_s(exact.allocate(ctx, rng))
            t_exact = perf_counter() - tic
        except InfeasibleError:
            continue
        tic = perf_counter()
        alloc = jbba.allocate(ctx, rng)
        t_jbba = perf_counter() - tic
        got = ctx.round_latency_s(alloc)
        dual_only = ctx.round_latency_s(plain.allocate(ctx, rng))
        rows.append(
            (i, ref, got, got / ref - 1, dual_only, dual_only / ref - 1,
             alloc.diagnostics["iterations"], t_jbba * 1e3, t_exact * 1e3)
        )
    cols = ["instance", "exact_s", "jbba_s", "gap", "dual_only_s", "dual_only_gap",
            "iterations", "jbba_ms", "exact_ms"]
    return pd.DataFrame(rows, columns=cols)


def bench_default_latency(rounds: int = 20, overrides: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Round latency of every allocator on the default scenario, relative to jbba-exact.

    Two views. ``snapshot_s``: the planned round latency on the *same* snapshots (the round
    starts of the ``jbba-exact`` run), which compares the optimisers on equal terms. Then each
    allocator's own run: mean planned and realised latency (runs diverge after round 0, since a
    different latency shifts the next round's start; all runs share the channel and compute
    realisation). ``brute-force`` is skipped when the scenario has too many assignments;
    ``oracle-exact`` runs with ``allocator.csi = "oracle"`` (its own run's realised latency is
    the bound of its rounds).

    Returns:
        DataFrame with ``allocator, snapshot_s, snapshot_vs_exact, planned_s, realised_s,
        realised_vs_exact, solve_ms, note``.
    """
    import numpy as np
    import pandas as pd

    from desim.allocators import ALLOCATORS
    from desim.errors import DesimError

    def scenario(name: str):  # type: ignore[no-untyped-def]
        # the genie bound plans with the true future, which the engine hands over under oracle CSI
        csi = ['allocator.csi="oracle"'] if name == "oracle-exact" else []
        return load_scenario(
            None, [*overrides, *csi, f'allocator.name="{name}"', f"run.rounds={rounds}"])

    starts = build_simulation(scenario("jbba-exact")).run().rounds_frame().start_s.tolist()
    rows = []
    for name in sorted(ALLOCATORS):
        sim = build_simulation(scenario(name))
        rng = np.random.default_rng(0)
        try:
            snap = []
            for r, t0 in enumerate(starts):
                ctx = sim.context(r, t0)
                snap.append(ctx.round_latency_s(sim.allocator.allocate(ctx, rng)))
            rf = sim.run().rounds_frame()
        except DesimError as exc:
            rows.append((name, *[float("nan")] * 4, f"skipped: {exc}"))
            continue
        rows.append(
            (name, float(np.mean(snap)), rf.planned_latency_s.mean(), rf.latency_s.mean(),
             rf.solve_wall_s.mean() * 1e3, "")
        )
    cols = ["allocator", "snapshot_s", "planned_s", "realised_s", "solve_ms", "note"]
    frame = pd.DataFrame(rows, columns=cols)
    ref = frame.set_index("allocator").loc["jbba-exact"]
    frame.insert(2, "snapshot_vs_exact", frame.snapshot_s / ref.snapshot_s)
    frame.insert(5, "realised_vs_exact", frame.realised_s / ref.realised_s)
    return frame
