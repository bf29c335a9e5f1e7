"""``desim traces``: convert, generate, summarise and plot channel and compute traces.

A thin layer like :mod:`desim.cli.main`: parse options, call library functions, print.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from desim.errors import TraceError

traces_app = typer.Typer(
    help="Channel and compute traces: convert, generate, info, plot.", no_args_is_help=True
)
generate_app = typer.Typer(help="Generate seeded channel or compute traces.", no_args_is_help=True)
traces_app.add_typer(generate_app, name="generate")

# markup off: user paths and keys are printed verbatim, never parsed as rich markup
out = Console(width=None if sys.stdout.isatty() else 110, markup=False)


def _command_line(words: list[str], options: dict[str, object]) -> str:
    """The canonical command that regenerates a file (stored in its metadata)."""
    parts = ["desim", *words]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


@traces_app.command("convert")
def convert(
    paths: Annotated[
        list[Path], typer.Argument(help="Input file(s), then the output .csv/.parquet.")
    ],
    from_: Annotated[
        str, typer.Option("--from", help="Input format: ns3, mahimahi, pensieve, 5gophers, tidy.")
    ],
    ref_bandwidth_hz: Annotated[
        float | None,
        typer.Option(help="Bandwidth the throughput was measured over (default: per format)."),
    ] = None,
    window_ms: Annotated[float, typer.Option(help="Mahimahi counting window (ms).")] = 100.0,
    packet_bytes: Annotated[int, typer.Option(help="Mahimahi bytes per opportunity.")] = 1500,
    sample_ms: Annotated[float, typer.Option(help="ns-3 sample interval (ms).")] = 1.0,
    path_loss_db: Annotated[
        float, typer.Option(help="ns-3: constant path loss subtracted from the fading gain (dB).")
    ] = 0.0,
    source: Annotated[str, typer.Option(help="Provenance stored in the metadata.")] = "",
    licence: Annotated[str, typer.Option(help="Licence stored in the metadata.")] = "",
) -> None:
    """Convert foreign trace files to one tidy trace (desim traces convert --from FMT IN... OUT)."""
    from desim.io.files import convert_trace
    from desim.world.importers import ImportOptions

    if len(paths) < 2:
        raise TraceError("traces convert: give at least one input file and the output file")
    opts = ImportOptions(
        ref_bandwidth_hz=ref_bandwidth_hz,
        window_ms=window_ms,
        packet_bytes=packet_bytes,
        sample_ms=sample_ms,
        path_loss_db=path_loss_db,
        source=source,
        licence=licence,
    )
    # the command that regenerates the output: the inputs as given, the options not at default
    changed = {
        f.name: getattr(opts, f.name)
        for f in fields(opts)
        if f.name != "command" and getattr(opts, f.name) != f.default
    }
    words = ["traces", "convert", "--from", from_, *(shlex.quote(str(p)) for p in paths)]
    opts = replace(opts, command=_command_line(words, changed))
    trace = convert_trace(from_, paths[:-1], paths[-1], opts)
    out.print(
        f"wrote {paths[-1]}: {len(trace.devices)} device(s), {trace.quantity}, "
        f"{trace.end_s:g} s, end policy {trace.end_policy}"
    )
    for name, length in zip(trace.devices, trace.ends_s):
        out.print(f"  {name}: {length:g} s")


@generate_app.command("channel")
def generate_channel(
    out_file: Annotated[Path, typer.Option("--out", help="Output .csv or .parquet.")],
    devices: Annotated[int, typer.Option(help="Number of devices K.", min=1)] = 20,
    duration_s: Annotated[float, typer.Option(help="Length in seconds.", min=0)] = 300.0,
    step_s: Annotated[float, typer.Option(help="Sampling step in seconds.", min=0)] = 0.1,
    scenario: Annotated[str, typer.Option(help="TR 38.901 scenario: umi or uma.")] = "umi",
    speed_kmh: Annotated[float, typer.Option(help="Device speed (km/h).", min=0)] = 3.0,
    carrier_ghz: Annotated[float, typer.Option(help="Carrier frequency (GHz).")] = 3.5,
    fading: Annotated[str, typer.Option(help="auto, rayleigh, rician or none.")] = "auto",
    rician_k_db: Annotated[float, typer.Option(help="Rician K factor (dB).")] = 9.0,
    shadowing: Annotated[bool, typer.Option(help="Log-normal shadowing.")] = True,
    min_distance_m: Annotated[float, typer.Option(help="Minimum 2-D distance (m).")] = 50.0,
    max_distance_m: Annotated[float, typer.Option(help="Maximum 2-D distance (m).")] = 300.0,
    seed: Annotated[int, typer.Option(help="Seed.", min=0)] = 0,
) -> None:
    """Generate a TR 38.901 channel gain trace (path loss, LOS, shadowing, Jakes fading)."""
    from desim.io.files import write_trace
    from desim.world.channel import MobilityChannelParams, generate_gain_db
    from desim.world.traces import TraceMeta, tidy_frame

    if scenario not in ("umi", "uma"):
        raise TraceError(f"--scenario: unknown scenario {scenario!r}; known: umi, uma")
    if fading not in ("auto", "rayleigh", "rician", "none"):
        raise TraceError(f"--fading: unknown {fading!r}; known: auto, rayleigh, rician, none")
    if not (duration_s > 0 and step_s > 0 and duration_s / step_s <= 1e7):
        raise TraceError("--duration-s and --step-s must be > 0 with at most 10 million steps")
    if not 0 < min_distance_m <= max_distance_m:
        raise TraceError("--min-distance-m must be > 0 and <= --max-distance-m")
    params = MobilityChannelParams(
        environment=scenario,  # type: ignore[arg-type]
        carrier_ghz=carrier_ghz,
        speed_kmh=speed_kmh,
        step_s=step_s,
        duration_s=duration_s,
        fading=fading,  # type: ignore[arg-type]
        rician_k_db=rician_k_db,
        shadowing=shadowing,
        min_distance_m=min_distance_m,
        max_distance_m=max_distance_m,
    )
    rng = np.random.default_rng(seed)
    d0 = rng.uniform(min_distance_m, max_distance_m, devices)
    times, gain, _ = generate_gain_db(params, d0, rng)
    width = len(str(devices - 1))
    names = [f"dev{i:0{width}d}" for i in range(devices)]
    frame = tidy_frame(names, np.round(times, 9), {"gain_db": np.round(gain, 2)})
    meta = TraceMeta(
        end_policy="loop",
        duration_s=float(times.size * step_s),
        source=f"desim TR 38.901 {scenario.upper()} generator (seed {seed})",
        licence="MIT (generated by desim)",
        description=(
            f"{devices} devices, {scenario} at {carrier_ghz} GHz, {speed_kmh} km/h, "
            f"step {step_s} s, fading {fading}, shadowing {'on' if shadowing else 'off'}, "
            f"distance {min_distance_m}-{max_distance_m} m; gain_db rounded to 0.01 dB"
        ),
        command=_command_line(
            ["traces", "generate", "channel"],
            {
                "devices": devices,
                "duration_s": duration_s,
                "step_s": step_s,
                "scenario": scenario,
                "speed_kmh": speed_kmh,
                "carrier_ghz": carrier_ghz,
                "fading": fading,
                "rician_k_db": rician_k_db,
                "shadowing": shadowing,
                "min_distance_m": min_distance_m,
                "max_distance_m": max_distance_m,
                "seed": seed,
                "out": out_file.name,
            },
        ),
        kind="channel",
    )
    write_trace(frame, meta, out_file, float_format="%.2f")
    out.print(f"wrote {out_file}: {devices} devices x {times.size} samples")


@generate_app.command("compute")
def generate_compute_cmd(
    out_file: Annotated[Path, typer.Option("--out", help="Output .csv or .parquet.")],
    devices: Annotated[int, typer.Option(help="Number of devices K.", min=1)] = 20,
    duration_s: Annotated[float, typer.Option(help="Length in seconds.", min=0)] = 3600.0,
    load_mean: Annotated[float, typer.Option(help="Mean background load in [0, 1).")] = 0.3,
    load_concentration: Annotated[float, typer.Option(help="Beta a+b of the load.")] = 4.0,
    load_hold_s: Annotated[float, typer.Option(help="Mean hold time of a load level (s).")] = 60.0,
    min_speed: Annotated[float, typer.Option(help="Floor of the speed factor.")] = 0.05,
    mean_up_s: Annotated[float, typer.Option(help="Mean available period (s).")] = 1800.0,
    mean_down_s: Annotated[
        float, typer.Option(help="Mean unavailable period (s); 0: never.")
    ] = 120.0,
    seed: Annotated[int, typer.Option(help="Seed.", min=0)] = 0,
) -> None:
    """Generate a compute timeline: background load and on/off availability per device."""
    from desim.io.files import write_trace
    from desim.world.compute import ComputeTimelineParams, generate_compute
    from desim.world.traces import TraceMeta, tidy_frame

    if not (
        0 <= load_mean < 1
        and duration_s > 0
        and load_hold_s > 0
        and mean_up_s > 0
        and mean_down_s >= 0
        and 0 < min_speed <= 1
        and load_concentration > 0
    ):
        raise TraceError(
            "generate compute: need 0 <= load-mean < 1, 0 < min-speed <= 1 and positive "
            "duration, concentration, hold and up times (down time >= 0)"
        )
    params = ComputeTimelineParams(
        duration_s=duration_s,
        load_mean=load_mean,
        load_concentration=load_concentration,
        load_hold_s=load_hold_s,
        min_speed=min_speed,
        mean_up_s=mean_up_s,
        mean_down_s=mean_down_s,
    )
    series = generate_compute(params, devices, np.random.default_rng(seed))
    width = len(str(devices - 1))
    names = [f"dev{i:0{width}d}" for i in range(devices)]
    frame = tidy_frame(
        names,
        [np.round(s[0], 6) for s in series],
        {"speed_factor": [s[1] for s in series], "available": [s[2].astype(int) for s in series]},
    )
    meta = TraceMeta(
        end_policy="loop",
        duration_s=duration_s,
        source=f"desim compute-timeline generator (seed {seed})",
        licence="MIT (generated by desim)",
        description=(
            f"{devices} devices; load Beta mean {load_mean}, concentration {load_concentration}, "
            f"hold {load_hold_s} s; availability up {mean_up_s} s / down {mean_down_s} s"
        ),
        command=_command_line(
            ["traces", "generate", "compute"],
            {
                "devices": devices,
                "duration_s": duration_s,
                "load_mean": load_mean,
                "load_concentration": load_concentration,
                "load_hold_s": load_hold_s,
                "min_speed": min_speed,
                "mean_up_s": mean_up_s,
                "mean_down_s": mean_down_s,
                "seed": seed,
                "out": out_file.name,
            },
        ),
        kind="compute",
    )
    write_trace(frame, meta, out_file)
    out.print(f"wrote {out_file}: {devices} devices, {len(frame)} rows")


def _fmt(x: float, unit: float = 1.0) -> str:
    return f"{x / unit:.3f}"


@traces_app.command("info")
def info(
    path: Annotated[
        str, typer.Argument(help="Tidy trace (.csv or .parquet), or shipped:NAME.")
    ],
    bandwidth_hz: Annotated[
        float | None,
        typer.Option(help="Bandwidth for rates (default: the trace's ref bandwidth, or 20 MHz)."),
    ] = None,
    tx_power_dbm: Annotated[float, typer.Option(help="Transmit power for gain traces.")] = 23.0,
    noise_psd_dbm_per_hz: Annotated[float, typer.Option(help="N0 for gain traces.")] = -174.0,
    max_devices: Annotated[int, typer.Option(help="Per-device rows to print.")] = 12,
) -> None:
    """Print devices, duration, sampling, and mean and percentile rates of a trace."""
    from desim.io.files import read_trace, resolve_trace_path
    from desim.world.traces import summarise, weighted_percentile

    trace = read_trace(resolve_trace_path(path))
    dur = trace.segment_weights_s()  # (M, T): each device over its own length
    out.print(f"file: {path}")
    if trace.kind == "channel":
        from desim.world.channel import trace_rate_bps

        rate, bw = trace_rate_bps(trace, bandwidth_hz, tx_power_dbm, noise_psd_dbm_per_hz)
        values, label, unit = rate, "rate (Mbit/s)", 1e6
        bws = np.unique(bw)
        bw_text = ", ".join(f"{b / 1e6:g} MHz" for b in bws[:4])
        extra = f"{trace.quantity}; rates at bandwidth {bw_text}"
        if trace.quantity == "gain_db":
            extra += f", {tx_power_dbm:g} dBm, N0 {noise_psd_dbm_per_hz:g} dBm/Hz"
    else:
        values, label, unit = (
            trace.columns["speed_factor"] * trace.columns["available"],
            ("effective speed factor"),
            1.0,
        )
        avail = float(np.sum(trace.columns["available"] * dur) / dur.sum())
        extra = f"compute timeline; available {100 * avail:.1f}% of the time"
    shown = ", ".join(trace.devices[:6]) + (" ..." if len(trace.devices) > 6 else "")
    steps = trace.median_step_s[np.isfinite(trace.median_step_s)]
    out.print(f"kind: {trace.kind} ({extra})")
    out.print(f"devices: {len(trace.devices)} ({shown})")
    ends = trace.ends_s
    length = (
        f"{trace.end_s:g} s"
        if trace.same_length
        else f"{ends.min():g}..{ends.max():g} s (each device loops or holds on its own length)"
    )
    rows = int(trace.samples.sum())
    out.print(f"duration: {length}, end policy {trace.end_policy}; rows: {rows}")
    if steps.size:
        out.print(
            f"sampling: median step {np.median(steps):g} s "
            f"(per-device medians {steps.min():g}..{steps.max():g} s)"
        )
    if trace.meta.source:
        out.print(f"source: {trace.meta.source}")
    if trace.meta.licence:
        out.print(f"licence: {trace.meta.licence}")
    w = dur.ravel()
    v = values.ravel()
    table = Table(title=label, show_header=True, box=box.SIMPLE)
    for col in ("device", "rows", "step (s)", "length (s)", "mean", "p5", "p50", "p95",
                "zero time"):
        table.add_column(col, justify="right" if col != "device" else "left")
    table.add_row(
        "all (pooled)",
        str(int(trace.samples.sum())),
        "",
        "",
        _fmt(float(np.sum(v * w) / np.sum(w)), unit),
        *(_fmt(weighted_percentile(v, w, q), unit) for q in (5, 50, 95)),
        f"{100 * float(np.sum(w[v <= 0]) / np.sum(w)):.1f}%",
    )
    for s in summarise(values, trace)[:max_devices]:
        table.add_row(
            s.device,
            str(s.samples),
            f"{s.median_step_s:g}",
            f"{s.length_s:g}",
            _fmt(s.mean, unit),
            _fmt(s.p5, unit),
            _fmt(s.p50, unit),
            _fmt(s.p95, unit),
            f"{100 * s.zero_fraction:.1f}%",
        )
    if len(trace.devices) > max_devices:
        table.caption = f"{len(trace.devices) - max_devices} more devices not shown"
    out.print(table)


@traces_app.command("plot")
def plot(
    path: Annotated[
        str, typer.Argument(help="Tidy trace (.csv or .parquet), or shipped:NAME.")
    ],
    out_file: Annotated[Path, typer.Option("--out", help="Output image (.png, .pdf, .svg).")],
    bandwidth_hz: Annotated[
        float | None, typer.Option(help="Bandwidth for rates (default as in `info`).")
    ] = None,
    tx_power_dbm: Annotated[float, typer.Option(help="Transmit power for gain traces.")] = 23.0,
    noise_psd_dbm_per_hz: Annotated[float, typer.Option(help="N0 for gain traces.")] = -174.0,
    max_devices: Annotated[int, typer.Option(help="Devices drawn over time.")] = 6,
) -> None:
    """Plot gain or rate over time per device and the rate CDF."""
    from desim.experiments.trace_figures import plot_trace
    from desim.io.files import read_trace, resolve_trace_path

    trace = read_trace(resolve_trace_path(path))
    plot_trace(trace, out_file, bandwidth_hz, tx_power_dbm, noise_psd_dbm_per_hz, max_devices)
    out.print(f"wrote {out_file}")
