"""Figures of channel and compute traces (``desim traces plot``); matplotlib is imported lazily.

Like :mod:`desim.experiments.paper_figures` this is an output edge: it draws from a validated trace
and writes one image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from desim.errors import InputError
from desim.world.traces import Trace


def plot_trace(
    trace: Trace,
    out: str | Path,
    bandwidth_hz: float | None = None,
    tx_power_dbm: float = 23.0,
    noise_psd_dbm_per_hz: float = -174.0,
    max_devices: int = 6,
) -> Path:
    """Draw a trace: value over time for the first devices and the time-weighted CDF.

    Channel traces show ``gain_db`` (gain traces) or the rate (others) over time, and the rate
    CDF over all devices; compute traces show the effective speed factor and its CDF.

    Args:
        trace: the trace.
        out: image path (any format matplotlib writes).
        bandwidth_hz: bandwidth for rates (``None``: the reference bandwidth, or 20 MHz).
        tx_power_dbm: transmit power for gain traces.
        noise_psd_dbm_per_hz: noise PSD for gain traces.
        max_devices: devices drawn in the time panel.

    Returns:
        The written path.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError('desim traces plot needs matplotlib: pip install ".[plot]"') from None
    out = Path(out)
    series = _series(trace, bandwidth_hz, tx_power_dbm, noise_psd_dbm_per_hz)
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    _draw_over_time(ax_t, trace, series[0], series[1], max_devices)
    _draw_cdf(ax_c, trace, series[2], series[3])
    try:
        fig.savefig(out, dpi=120)
    except (OSError, ValueError) as exc:
        raise InputError(f"{out}: cannot write the figure: {exc}") from None
    finally:
        plt.close(fig)
    return out


def _series(
    trace: Trace, bandwidth_hz: float | None, tx_power_dbm: float, noise_psd_dbm_per_hz: float
) -> tuple[np.ndarray, str, np.ndarray, str]:
    """What the two panels draw: ``(over-time values, label, CDF values, label)``."""
    if trace.kind == "channel":
        from desim.world.channel_trace import trace_rate_bps

        rate, _ = trace_rate_bps(trace, bandwidth_hz, tx_power_dbm, noise_psd_dbm_per_hz)
        cdf_vals, cdf_label = rate / 1e6, "rate (Mbit/s)"
        if trace.quantity == "gain_db":
            return trace.columns["gain_db"], "channel gain (dB)", cdf_vals, cdf_label
        return cdf_vals, "rate (Mbit/s)", cdf_vals, cdf_label
    speed = trace.columns["speed_factor"] * trace.columns["available"]
    return speed, "effective speed factor", speed, "effective speed factor"


def _draw_over_time(
    ax: Any, trace: Trace, values: np.ndarray, label: str, max_devices: int
) -> None:
    """The time panel: one step line per device, for the first ``max_devices`` devices."""
    t = np.append(trace.times_s, trace.end_s)
    for k in range(min(max_devices, len(trace.devices))):
        ax.stairs(values[k], t, label=trace.devices[k], baseline=None)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(label)
    ax.legend(fontsize="small", loc="best")
    ax.set_title(Path(trace.source).name)


def _draw_cdf(ax: Any, trace: Trace, values: np.ndarray, label: str) -> None:
    """The CDF panel: the fraction of time, over all devices, a value is not exceeded."""
    dur = np.diff(np.append(trace.times_s, trace.end_s))
    v = values.ravel()
    w = np.broadcast_to(dur, values.shape).ravel()
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    ax.step(v[order], cum / cum[-1], where="post")
    ax.set_xlabel(label)
    ax.set_ylabel("CDF (fraction of time, all devices)")
    ax.grid(alpha=0.3)
