"""Channel traces replayed as channels: SNR coefficients of gain, SNR and throughput traces.

A ``gain_db`` trace gives ``a = p g / N0`` with the transmit power of the scenario device that
replays it; an ``snr_db`` trace over its ``ref_bandwidth_hz`` ``B_ref`` gives ``a = SNR · B_ref``;
a measured throughput ``R`` at ``B_ref`` gives the effective ``a = (2^(R/B_ref) - 1) B_ref``, whose
Shannon rate at ``B_ref`` is exactly ``R`` (DESIGN §2). Scenario devices are mapped onto trace
devices and replayed by :mod:`desim.world.replay`, from the trace's own rows: a large trace
whose devices have their own timestamps becomes a channel on
:class:`~desim.world.ragged.RaggedSignals`, each device on its own grid, instead of every
device on the union of all the timestamps.
"""

from __future__ import annotations

import numpy as np

from desim.errors import TraceError, warn
from desim.scenario.devices import DeviceSpec
from desim.world.channel import (
    Channel,
    SignalChannel,
    check_snr_db,
    snr_coef_from_gain_db,
    snr_coef_from_snr_db,
    snr_coef_from_throughput,
)
from desim.world.piecewise import EndPolicy
from desim.world.rates import shannon_rate_bps
from desim.world.replay import TraceMapping, map_devices, replay_rows
from desim.world.traces import Trace


def _check_trace_gain(
    trace: Trace,
    rows: np.ndarray,
    devices: tuple[DeviceSpec, ...],
    noise_psd_dbm_per_hz: float,
) -> None:
    """Refuse an unrepresentable SNR of a ``gain_db`` trace; warn about gains above 0 dB."""
    gain = trace.row_columns["gain_db"]
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    largest = np.maximum.reduceat(gain, trace.row_start[:-1])  # (M,) every device has rows
    check_snr_db(
        p_dbm[:, None] + largest[rows][:, None] - noise_psd_dbm_per_hz, devices,
        f"{trace.source}: column gain_db",
        "tx_power_dbm {p:g} + its trace device's largest gain_db - "
        f"server.noise_psd_dbm_per_hz {noise_psd_dbm_per_hz:g}",
    )
    if gain.max() > 0.0:
        i = int(np.argmax(gain))  # the first device reaching it, at its first time
        m, t = _where(trace, i)
        warn(
            f"{trace.source}: column gain_db reaches {gain[i]:.3g} dB (trace device "
            f"{trace.devices[m]!r}, time_s {t:g}): a gain above 0 dB means the "
            "received power exceeds the transmitted one"
        )


def _where(trace: Trace, i: int) -> tuple[int, float]:
    """Trace device and union-grid time of row ``i``: a device's first row holds from 0."""
    m = int(np.searchsorted(trace.row_start, i, side="right")) - 1
    return m, 0.0 if i == trace.row_start[m] else float(trace.row_times_s[i])


def _finite_rows(trace: Trace, coef: np.ndarray) -> np.ndarray:
    """``coef`` ``(N,)`` if every value is finite; else a :class:`TraceError` naming where."""
    bad = np.flatnonzero(~np.isfinite(coef))
    if bad.size:
        m, t = _where(trace, int(bad[0]))
        raise TraceError(
            f"{trace.source}: column {trace.quantity}: trace device {trace.devices[m]!r} at "
            f"time_s {t:g} gives an SNR coefficient too large for a float"
            + ("" if trace.quantity == "gain_db" else
               "; state the values over a smaller ref_bandwidth_hz")
        )
    return coef


def _finite_coef(trace: Trace, coef: np.ndarray) -> np.ndarray:
    """``coef`` if every value is finite; else a :class:`TraceError` naming where."""
    bad = ~np.isfinite(coef)
    if bad.any():
        m, t = np.argwhere(bad)[0]
        raise TraceError(
            f"{trace.source}: column {trace.quantity}: trace device {trace.devices[m]!r} at "
            f"time_s {trace.times_s[t]:g} gives an SNR coefficient too large for a float"
            + ("" if trace.quantity == "gain_db" else
               "; state the values over a smaller ref_bandwidth_hz")
        )
    return coef


def row_snr_coef_hz(
    trace: Trace, noise_psd_dbm_per_hz: float, throughput_scale: float = 1.0
) -> np.ndarray:
    """SNR coefficients of every trace row ``(N,)`` in Hz, before any transmit power.

    As :func:`trace_snr_coef_hz` at 0 dBm, on the trace's own rows (no union grid).
    """
    q = trace.quantity
    vals = trace.row_columns[q]
    with np.errstate(over="ignore"):
        if q == "gain_db":
            zero_dbm = np.asarray(0.0)
            return _finite_rows(trace, snr_coef_from_gain_db(vals, zero_dbm, noise_psd_dbm_per_hz))
        bw = trace.row_columns["ref_bandwidth_hz"]
        if q == "snr_db":
            return _finite_rows(trace, snr_coef_from_snr_db(vals, bw))
        return _finite_rows(trace, snr_coef_from_throughput(vals * 1e6 * throughput_scale, bw))


def trace_snr_coef_hz(
    trace: Trace,
    tx_power_dbm: np.ndarray,
    noise_psd_dbm_per_hz: float,
    throughput_scale: float = 1.0,
) -> np.ndarray:
    """SNR coefficients ``a = p g / N0`` (Hz) of every trace device on the trace grid.

    ``gain_db`` uses the transmit power of the scenario device replaying each row
    (``tx_power_dbm`` ``(M,)``) and ``N0``; ``snr_db`` is taken over its ``ref_bandwidth_hz``
    (``a = SNR · B_ref``); ``throughput_mbps`` (times ``throughput_scale``) becomes the effective
    ``a = (2^(R/B_ref) - 1) B_ref``.

    Returns:
        ``(M, T)`` non-negative coefficients in Hz.
    """
    q = trace.quantity
    vals = trace.columns[q]
    with np.errstate(over="ignore"):
        if q == "gain_db":
            return _finite_coef(
                trace, snr_coef_from_gain_db(vals, tx_power_dbm, noise_psd_dbm_per_hz)
            )
        bw = trace.columns["ref_bandwidth_hz"]
        if q == "snr_db":
            return _finite_coef(trace, snr_coef_from_snr_db(vals, bw))
        return _finite_coef(trace, snr_coef_from_throughput(vals * 1e6 * throughput_scale, bw))


def trace_channel(
    trace: Trace,
    devices: tuple[DeviceSpec, ...],
    noise_psd_dbm_per_hz: float,
    rng: np.random.Generator | None,
    mapping: TraceMapping = "cyclic",
    end_policy: EndPolicy | None = None,
    throughput_scale: float = 1.0,
) -> Channel:
    """Replay a channel trace for the scenario devices (``kind = "trace"``).

    Args:
        trace: the validated trace.
        devices: the resolved scenario devices (their transmit power converts ``gain_db``).
        noise_psd_dbm_per_hz: receiver noise PSD ``N0``.
        rng: the run's ``channel`` stream (used by the ``random-offset`` mapping only).
        mapping: trace device of each scenario device (:func:`desim.world.replay.map_devices`).
        end_policy: after the trace ends, ``loop`` or ``hold``; ``None``: the file's own.
        throughput_scale: factor applied to a throughput trace's rates.

    Returns:
        A :class:`SignalChannel` with one row per scenario device; its signals are ragged
        (:class:`~desim.world.ragged.RaggedSignals`) when one grid shared by every device would be
        large
        (:data:`desim.world.replay.DENSE_MAX_CELLS`).
    """
    if trace.kind != "channel":
        raise TraceError(f"{trace.source}: a compute trace cannot be a channel")
    names = tuple(d.name for d in devices)
    rows, offsets = map_devices(trace, names, mapping, rng, "channel")
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    if trace.quantity == "gain_db":
        _check_trace_gain(trace, rows, devices, noise_psd_dbm_per_hz)
    coef = row_snr_coef_hz(trace, noise_psd_dbm_per_hz, throughput_scale)
    # transmit power belongs to the scenario device
    power = 10.0 ** (p_dbm / 10.0) if trace.quantity == "gain_db" else None
    # a PiecewiseSignals on the shared grid, or per-device RaggedSignals for a large trace
    return SignalChannel(replay_rows(trace, coef, rows, offsets, end_policy, power))


def trace_rate_bps(
    trace: Trace,
    bandwidth_hz: float | None = None,
    tx_power_dbm: float = 23.0,
    noise_psd_dbm_per_hz: float = -174.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Shannon rate of every trace device on the trace grid, for summaries and plots.

    Args:
        trace: a channel trace.
        bandwidth_hz: bandwidth share; ``None`` uses each row's ``ref_bandwidth_hz`` (so a
            throughput trace gives back its throughput) or 20 MHz for ``gain_db``.
        tx_power_dbm: transmit power used for ``gain_db`` traces.
        noise_psd_dbm_per_hz: noise PSD used for ``gain_db`` traces.

    Returns:
        ``(rate_bps (M, T), bandwidth_hz (M, T))``.
    """
    coef = trace_snr_coef_hz(trace, np.full(len(trace.devices), tx_power_dbm), noise_psd_dbm_per_hz)
    if bandwidth_hz is not None:
        bw = np.full(coef.shape, float(bandwidth_hz))
    elif "ref_bandwidth_hz" in trace.columns:
        bw = trace.columns["ref_bandwidth_hz"]
    else:
        bw = np.full(coef.shape, 20e6)
    return shannon_rate_bps(bw, coef), bw
