"""Figures of channel and compute traces (``desim traces plot``); matplotlib is imported lazily.

Like ``figures.py`` this is an output edge: it draws from a validated trace and writes one image.
"""

from __future__ import annotations

from pathlib import Path

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
    dur = np.diff(np.append(trace.times_s, trace.end_s))
    if trace.kind == "channel":
        from desim.world.channel import trace_rate_bps

        rate, _ = trace_rate_bps(trace, bandwidth_hz, tx_power_dbm, noise_psd_dbm_per_hz)
        cdf_vals, cdf_label = rate / 1e6, "rate (Mbit/s)"
        if trace.quantity == "gain_db":
            time_vals, time_label = trace.columns["gain_db"], "channel gain (dB)"
        else:
            time_vals, time_label = cdf_vals, "rate (Mbit/s)"
    else:
        cdf_vals = trace.columns["speed_factor"] * trace.columns["available"]
        time_vals, time_label = cdf_vals, "effective speed factor"
        cdf_label = time_label
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    t = np.append(trace.times_s, trace.end_s)
    for k in range(min(max_devices, len(trace.devices))):
        ax_t.stairs(time_vals[k], t, label=trace.devices[k], baseline=None)
    ax_t.set_xlabel("time (s)")
    ax_t.set_ylabel(time_label)
    ax_t.legend(fontsize="small", loc="best")
    ax_t.set_title(Path(trace.source).name)
    v = cdf_vals.ravel()
    w = np.broadcast_to(dur, cdf_vals.shape).ravel()
    order = np.argsort(v)
    cum = np.cumsum(w[order])
    ax_c.step(v[order], cum / cum[-1], where="post")
    ax_c.set_xlabel(cdf_label)
    ax_c.set_ylabel("CDF (fraction of time, all devices)")
    ax_c.grid(alpha=0.3)
    try:
        fig.savefig(out, dpi=120)
    except (OSError, ValueError) as exc:
        raise InputError(f"{out}: cannot write the figure: {exc}") from None
    finally:
        plt.close(fig)
    return out
