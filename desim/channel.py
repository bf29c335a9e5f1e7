"""Uplink channels: received SNR over time and exact transfer-time integration.

A channel is summarised per device by the SNR coefficient ``a_k(t) = p_k g_k(t) / N0`` in Hz, so
that with a bandwidth share ``B_k`` the Shannon rate is ``r_k(t) = B_k log2(1 + a_k(t)/B_k)``
(DESIGN §2). ``a_k(t)`` is piecewise-constant in time (:mod:`desim.signal`), which makes the
upload time of any number of bits exact, from any start time, including stalls at zero rate.

Generated channels here: 3GPP TR 38.901 NLOS path loss (UMi street canyon or UMa, with the LOS
formula as the floor the standard prescribes) or free space, times seeded Rayleigh block fading
(``|h|² ~ Exp(1)`` i.i.d. per coherence interval), or path loss alone (``static``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from desim.scenario import ChannelSpec, DeviceSpec
from desim.signal import PiecewiseSignals

BS_HEIGHT_M = {"umi-nlos": 10.0, "uma-nlos": 25.0, "free-space": 10.0}
UT_HEIGHT_M = 1.5


def dbm_to_w(dbm: np.ndarray | float) -> np.ndarray:
    """Convert dBm to watts."""
    return 10.0 ** ((np.asarray(dbm, dtype=float) - 30.0) / 10.0)


def path_loss_db(model: str, distance_m: np.ndarray, carrier_ghz: float) -> np.ndarray:
    """Path loss in dB at 2-D distances ``distance_m`` (TR 38.901 Table 7.4.1-1 NLOS forms).

    ``umi-nlos``: ``max(32.4 + 21 log10 d3D + 20 log10 fc, 35.3 log10 d3D + 22.4 + 21.3 log10 fc)``
    ``uma-nlos``: ``max(28 + 22 log10 d3D + 20 log10 fc, 13.54 + 39.08 log10 d3D + 20 log10 fc)``
    ``free-space``: ``32.45 + 20 log10 fc + 20 log10 d3D``; ``fc`` in GHz, UT height 1.5 m.
    """
    d2 = np.asarray(distance_m, dtype=float)
    d3 = np.sqrt(d2**2 + (BS_HEIGHT_M[model] - UT_HEIGHT_M) ** 2)
    lf = np.log10(carrier_ghz)
    if model == "umi-nlos":
        return np.maximum(
            32.4 + 21.0 * np.log10(d3) + 20.0 * lf, 35.3 * np.log10(d3) + 22.4 + 21.3 * lf
        )
    if model == "uma-nlos":
        return np.maximum(
            28.0 + 22.0 * np.log10(d3) + 20.0 * lf, 13.54 + 39.08 * np.log10(d3) + 20.0 * lf
        )
    if model == "free-space":
        return 32.45 + 20.0 * lf + 20.0 * np.log10(d3)
    raise ValueError(f"unknown path-loss model {model!r}")


def shannon_rate_bps(bandwidth_hz: np.ndarray, snr_coef_hz: np.ndarray) -> np.ndarray:
    """Rate ``B log2(1 + a/B)`` in bit/s; zero where the bandwidth is zero."""
    b = np.asarray(bandwidth_hz, dtype=float)
    a = np.asarray(snr_coef_hz, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = b * np.log2(1.0 + a / b)
    return np.where(b > 0, r, 0.0)


class Channel(Protocol):
    """Uplink channel of ``K`` devices."""

    def snr_coef_hz(self, t_s: float) -> np.ndarray:
        """``a_k(t) = p_k g_k(t) / N0`` in Hz for every device, shape ``(K,)``."""
        ...

    def transfer_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, bits: np.ndarray, bandwidth_hz: np.ndarray
    ) -> np.ndarray:
        """Exact times at which each upload of ``bits`` started at ``start_s`` completes."""
        ...


@dataclass(frozen=True, eq=False)
class SignalChannel:
    """A channel given by piecewise-constant SNR coefficients (one signal row per device)."""

    signals: PiecewiseSignals

    def snr_coef_hz(self, t_s: float) -> np.ndarray:
        """SNR coefficients at ``t_s``, shape ``(K,)``."""
        return self.signals.at(t_s)

    def transfer_end_s(
        self, devices: np.ndarray, start_s: np.ndarray, bits: np.ndarray, bandwidth_hz: np.ndarray
    ) -> np.ndarray:
        """Integrate ``B log2(1 + a(t)/B)`` from each start until the bits are sent.

        Args:
            devices: device index of each upload ``(m,)``.
            start_s: upload start times ``(m,)``.
            bits: bits to send ``(m,)``.
            bandwidth_hz: bandwidth share of each upload ``(m,)``, > 0 where bits > 0.

        Returns:
            Completion times ``(m,)``; ``inf`` if the rate stays zero for the rest of the trace.
        """
        bw = np.asarray(bandwidth_hz, dtype=float)

        def rate(values: np.ndarray, which: np.ndarray) -> np.ndarray:
            b = bw[which][:, None]
            return b * np.log2(1.0 + values / b)

        return self.signals.integrate_until(devices, start_s, bits, rate)


def generated_channel(
    devices: tuple[DeviceSpec, ...],
    spec: ChannelSpec,
    noise_psd_dbm_per_hz: float,
    rng: np.random.Generator,
) -> SignalChannel:
    """Path loss (plus Rayleigh block fading for ``kind = "rayleigh"``) for every device.

    Args:
        devices: the resolved devices (distance and transmit power are used).
        spec: the channel section.
        noise_psd_dbm_per_hz: receiver noise power spectral density N0.
        rng: the run's ``channel`` stream.

    Returns:
        A :class:`SignalChannel`; fading loops after ``spec.duration_s``.
    """
    dist = np.array([d.distance_m for d in devices])
    p_w = dbm_to_w(np.array([d.tx_power_dbm for d in devices]))
    n0 = float(dbm_to_w(noise_psd_dbm_per_hz))
    mean_coef = p_w * 10.0 ** (-path_loss_db(spec.path_loss, dist, spec.carrier_ghz) / 10.0) / n0
    if spec.kind == "static":
        return SignalChannel(PiecewiseSignals.constant(mean_coef))
    steps = max(1, int(np.ceil(spec.duration_s / spec.coherence_s)))
    fading = rng.exponential(1.0, size=(len(devices), steps))
    times = np.arange(steps) * spec.coherence_s
    return SignalChannel(
        PiecewiseSignals(times, mean_coef[:, None] * fading, steps * spec.coherence_s, "loop")
    )
