"""``desim run`` (simulate one scenario and write its results) and ``desim allocators``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from desim.cli.consoles import err, out
from desim.errors import InfeasibleError, Interrupted

if TYPE_CHECKING:
    from desim.engine.simulation import Simulation
    from desim.results import RunResult


def run(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario TOML (default: the built-in scenario).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a scenario key: section.key=value (repeatable)."),
    ] = None,
    allocator: Annotated[
        str | None, typer.Option(help="Allocator name (desim allocators).")
    ] = None,
    rounds: Annotated[int | None, typer.Option(help="Number of rounds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Results directory (default: results/<name>-<allocator>-"
                     "seed<seed>-<run key>)."),
    ] = None,
    trace_out: Annotated[
        Path | None,
        typer.Option("--trace-out", help="Also write a Chrome/Perfetto trace JSON of the run."),
    ] = None,
) -> None:
    """Simulate a scenario and write rounds/device_rounds tables and run.json."""
    from desim.engine.assembly import build_simulation
    from desim.experiments.sweep_spec import run_key
    from desim.io.outputs import (
        check_output_dir,
        check_output_file,
        write_chrome_trace,
        write_results,
    )
    from desim.io.scenario import load_scenario

    scen = load_scenario(scenario, _overrides(set_, allocator, rounds, seed))
    name = "default" if scenario is None else scenario.stem
    # the folder name carries the run key (a hash of the resolved scenario and the files it
    # reads): a run of another configuration never overwrites these results
    target = out_dir or Path("results") / (
        f"{name}-{scen.allocator.name}-seed{scen.run.seed}-{run_key(scen)[:8]}"
    )
    check_output_dir(target, "--out")
    if trace_out is not None:
        check_output_file(trace_out, "--trace-out")
    result = _simulate(build_simulation(scen), scen.run.rounds)
    write_results(result, target)
    _print_summary(result.rounds_frame(), scen.allocator.name, result.metadata, target)
    if trace_out is not None:
        write_chrome_trace(result, trace_out)
        out.print(f"timeline trace written to {trace_out} (open in ui.perfetto.dev)")


def _overrides(
    set_: list[str] | None, allocator: str | None, rounds: int | None, seed: int | None
) -> list[str]:
    """The ``--set`` overrides with those ``--allocator`` (first), ``--rounds`` and ``--seed``."""
    overrides = list(set_ or [])
    if allocator is not None:
        overrides.insert(0, f'allocator.name="{allocator}"')
    if rounds is not None:
        overrides.append(f"run.rounds={rounds}")
    if seed is not None:
        overrides.append(f"run.seed={seed}")
    return overrides


def _simulate(sim: Simulation, rounds: int) -> RunResult:
    """Run ``sim`` with a progress bar on stderr; Ctrl-C becomes :class:`Interrupted`."""
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("rounds", total=rounds)
        try:
            return sim.run(on_round=lambda _: progress.advance(task))
        except InfeasibleError as exc:  # run.on_infeasible = "error" (the default)
            raise InfeasibleError(
                f"{exc}; nothing was written (--set 'run.on_infeasible=\"skip\"' records such "
                "a round as skipped and goes on)"
            ) from None
        except KeyboardInterrupt:
            done = int(progress.tasks[0].completed)
            raise Interrupted(
                f"after {done} of {rounds} rounds; nothing was written (a run's results "
                "are written whole or not at all): run the same command again"
            ) from None


def _print_summary(rounds, allocator: str, metadata: dict, target: Path) -> None:  # type: ignore[no-untyped-def]
    done = rounds[rounds["status"] == "ok"]
    lat, plan = done["latency_s"].to_numpy(), done["planned_latency_s"].to_numpy()
    if lat.size == 0:  # every round was skipped: nothing to summarise but the reasons
        lat = plan = np.full(1, np.nan)
    scheme = metadata.get("scheme", "deft")
    label = allocator if scheme == "deft" else f"scheme {scheme}"
    table = Table(title=f"desim run: {label}, {len(rounds)} rounds", show_header=True)
    table.add_column("metric")
    table.add_column("realised", justify="right")
    table.add_column("planned", justify="right")
    for label, fn in (
        ("mean", np.mean),
        ("p50", np.median),
        ("p95", lambda x: np.percentile(x, 95)),
    ):
        table.add_row(f"round latency {label} (s)", f"{fn(lat):.4f}", f"{fn(plan):.4f}")
    skipped = int((rounds["status"] != "ok").sum())
    if skipped or rounds["dropouts"].any():
        lost = int(rounds["dropouts"].sum())
        table.add_row("skipped rounds / lost tasks", f"{skipped} / {lost}", "")
    table.add_row("total simulated time (s)", f"{rounds['end_s'].iloc[-1]:.2f}", "")
    solve = rounds["solve_wall_s"].to_numpy() * 1e3
    table.add_row("solver time mean / max (ms)", f"{solve.mean():.3f} / {solve.max():.3f}", "")
    head = rounds["min_memory_headroom_bytes"].min() / 1e6
    table.add_row("min memory headroom (MB)", f"{head:.1f}", "")
    if "energy_j" in rounds:
        table.add_row("device energy per round mean (J)", f"{done['energy_j'].mean():.2f}", "")
    table.add_row("cost model", ", ".join(metadata.get("cost_model", [])), "")
    for hw, entry in metadata.get("pricing", {}).items():
        table.add_row(f"priced with ({hw})", _priced_line(entry), "")
    out.print(table)
    from desim.io.hosts import host_notes

    for note in host_notes(metadata.get("pricing", {})):
        err.print(note, markup=False)
    steps = ", bandwidth_steps" if metadata.get("uplink", {}).get("mode") == "reclaim" else ""
    out.print(
        f"results written to {target}/ (rounds, device_rounds, fault_events, timing{steps} as "
        ".parquet and .csv; run.json)"
    )


def _priced_line(entry: dict) -> str:  # type: ignore[type-arg]
    """Where a class's profile was measured, the speed applied and whether this host matches."""
    m = entry.get("measured") or {}
    if not m:
        return entry.get("source", "")
    date = m.get("date", {}).get("last", "")[:10]
    parts = [f"{m.get('device_name', '?')}, {m.get('threads', '?')} thread(s), "
             f"torch {m.get('torch_version', '?')}, {date}"]
    cal = entry.get("calibration")
    if cal:
        parts.append(f"calibrated here x{cal['speed']:.3g} ({cal['host'].get('date', '')[:10]})")
    elif "transfer" in entry:
        t = entry["transfer"]
        parts.append(f"roofline {t['source']} -> {t['target']}, speed "
                     f"{t['speed_min']:.3g}-{t['speed_max']:.3g}")
    elif float(entry.get("speed", 1.0)) != 1.0:
        parts.append(f"borrowed at speed {entry['speed']:g}")
    match = entry.get("host_match")
    if match is not None:
        parts.append("host matches" if match["matches"]
                     else "host differs: " + ", ".join(match["differs"]))
    return "; ".join(parts)


def list_allocators() -> None:
    """List the registered allocators and their parameters."""
    from desim.allocators import ALLOCATORS

    table = Table(show_header=True)
    table.add_column("name")
    table.add_column("description")
    table.add_column("parameters")
    for name in sorted(ALLOCATORS):
        info = ALLOCATORS[name]
        params = ", ".join(f"{k}: {v}" for k, v in info.parameters().items())
        table.add_row(name, info.description, params)
    out.print(table)

