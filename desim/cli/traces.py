"""``desim traces``: convert, generate, summarise and plot channel and compute traces.

A thin layer like :mod:`desim.cli.main`: parse options, call library functions, print.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from desim.cli.generate import command_line, generate_app
from desim.errors import TraceError
from desim.world.importers import TRACE_FORMATS

if TYPE_CHECKING:
    from desim.world.traces import Trace

traces_app = typer.Typer(
    help="Channel and compute traces: convert, generate, info, plot.", no_args_is_help=True
)
traces_app.add_typer(generate_app, name="generate")

# markup off: user paths and keys are printed verbatim, never parsed as rich markup
out = Console(width=None if sys.stdout.isatty() else 110, markup=False)


@traces_app.command("convert")
def convert(
    paths: Annotated[
        list[Path], typer.Argument(help="Input file(s), then the output .csv/.parquet.")
    ],
    from_: Annotated[
        str,
        typer.Option("--from", help=f"Input format: {', '.join(TRACE_FORMATS)}.",
                     autocompletion=lambda: list(TRACE_FORMATS)),
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
    from desim.io.traces import convert_trace
    from desim.world.trace_import import ImportOptions

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
    opts = replace(opts, command=command_line(words, changed))
    trace = convert_trace(from_, paths[:-1], paths[-1], opts)
    out.print(
        f"wrote {paths[-1]}: {len(trace.devices)} device(s), {trace.quantity}, "
        f"{trace.end_s:g} s, end policy {trace.end_policy}"
    )
    for name, length in zip(trace.devices, trace.ends_s):
        out.print(f"  {name}: {length:g} s")


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
    from desim.io.traces import read_trace, resolve_trace_path

    trace = read_trace(resolve_trace_path(path))
    dur = trace.segment_weights_s()  # (M, T): each device over its own length
    out.print(f"file: {path}")
    values, label, unit, extra = _info_values(trace, dur, bandwidth_hz, tx_power_dbm,
                                              noise_psd_dbm_per_hz)
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
    out.print(_info_table(trace, dur, values, label, unit, max_devices))


def _info_values(
    trace: Trace, dur: np.ndarray, bandwidth_hz: float | None, tx_power_dbm: float,
    noise_psd_dbm_per_hz: float,
) -> tuple[np.ndarray, str, float, str]:
    """The values ``info`` summarises, their label and unit, and the trace's kind line."""
    if trace.kind == "channel":
        from desim.world.channel_trace import trace_rate_bps

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
    return values, label, unit, extra


def _info_table(
    trace: Trace, dur: np.ndarray, values: np.ndarray, label: str, unit: float, max_devices: int
) -> Table:
    """The pooled row and one row per device (up to ``max_devices``) of ``info``."""
    from desim.world.traces import summarise, weighted_percentile

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
    return table


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
    from desim.io.traces import read_trace, resolve_trace_path

    trace = read_trace(resolve_trace_path(path))
    plot_trace(trace, out_file, bandwidth_hz, tx_power_dbm, noise_psd_dbm_per_hz, max_devices)
    out.print(f"wrote {out_file}")
