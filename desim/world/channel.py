"""Uplink channels: received SNR over time, the generated channels and exact transfer times.

A channel is summarised per device by the SNR coefficient ``a_k(t) = p_k g_k(t) / N0`` in Hz, so
that with a bandwidth share ``B_k`` the Shannon rate is ``r_k(t) = B_k log2(1 + a_k(t)/B_k)``
(DESIGN §2). ``a_k(t)`` is piecewise-constant in time (:mod:`desim.world.piecewise`), which makes
the upload time of any number of bits exact, from any start time, including stalls at zero rate.

:func:`static_channel` (path loss only, :mod:`desim.world.pathloss`) is built here; the
generated channels, Rayleigh block fading and the TR 38.901 mobility channel, produced on
demand in chunks, in :mod:`desim.world.generated`; replayed traces in
:mod:`desim.world.channel_trace`. The scenario's channel kinds are registered in
:mod:`desim.world.channel_kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from desim.errors import InputError, warn
from desim.scenario.devices import DeviceSpec
from desim.world.pathloss import dbm_to_w, path_loss_db
from desim.world.piecewise import PiecewiseSignals
from desim.world.signals import Signals
from desim.world.traces import MAX_SNR_DB

# the most a scenario device may transmit: 100 dBm is 10 MW, far above any radio (a 3GPP UE
# transmits 23 dBm, a macro base station 46 dBm); beyond it, watts soon overflow a float
MAX_TX_POWER_DBM = 100.0


def snr_coef_from_gain_db(
    gain_db: np.ndarray, tx_power_dbm: np.ndarray, noise_psd_dbm_per_hz: float
) -> np.ndarray:
    """``a = p g / N0`` in Hz from a channel gain in dB, transmit power and noise PSD.

    Args:
        gain_db: channel power gain in dB, ``(K,)`` or ``(K, T)``.
        tx_power_dbm: transmit power per device ``(K,)`` (or a scalar).
        noise_psd_dbm_per_hz: noise power spectral density ``N0``.
    """
    p = np.asarray(tx_power_dbm, dtype=float)
    g = np.asarray(gain_db, dtype=float)
    if g.ndim == 2 and p.ndim == 1:
        p = p[:, None]
    return 10.0 ** ((p + g - noise_psd_dbm_per_hz) / 10.0)


def snr_coef_from_snr_db(snr_db: np.ndarray, ref_bandwidth_hz: np.ndarray | float) -> np.ndarray:
    """``a = SNR · B_ref`` in Hz for an SNR in dB measured over ``B_ref`` Hz."""
    return 10.0 ** (np.asarray(snr_db, dtype=float) / 10.0) * np.asarray(ref_bandwidth_hz)


def snr_coef_from_throughput(
    throughput_bps: np.ndarray, ref_bandwidth_hz: np.ndarray | float
) -> np.ndarray:
    """Effective ``a = (2^(R/B_ref) - 1) B_ref`` in Hz for a throughput measured at ``B_ref``.

    At bandwidth ``B_ref`` the Shannon rate of the result is exactly ``R``; zero gives zero.
    """
    b = np.asarray(ref_bandwidth_hz, dtype=float)
    with np.errstate(over="ignore"):
        return np.expm1(np.log(2.0) * np.asarray(throughput_bps, dtype=float) / b) * b


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
    """A channel given by piecewise-constant SNR coefficients (one signal row per device).

    Attributes:
        signals: ``a_k(t) = p_k g_k(t) / N0`` in Hz (held in memory, or generated on demand).
        large_scale: the coefficient without the fast fading (path loss and shadowing), where
            the channel knows it (generated channels); ``None`` for a replayed trace.
        fading_k: the linear Rician K factor of the fast fading over time (0: Rayleigh);
            ``None`` with ``large_scale`` set: no fast fading.
    """

    signals: Signals
    large_scale: Signals | None = None
    fading_k: Signals | None = None

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


def static_channel(
    devices: tuple[DeviceSpec, ...], path_loss: str, carrier_ghz: float,
    noise_psd_dbm_per_hz: float,
) -> SignalChannel:
    """Path loss only, at each device's ``distance_m``: a constant SNR per device.

    Args:
        devices: the resolved devices (distance and transmit power are used).
        path_loss: a model of :func:`desim.world.pathloss.path_loss_db`.
        carrier_ghz: carrier frequency f_c.
        noise_psd_dbm_per_hz: receiver noise power spectral density N0.
    """
    mean = mean_snr_coef_hz(devices, path_loss, carrier_ghz, noise_psd_dbm_per_hz, "static")
    signals = PiecewiseSignals.constant(mean)
    return SignalChannel(signals, large_scale=signals)


def mean_snr_coef_hz(
    devices: tuple[DeviceSpec, ...], path_loss: str, carrier_ghz: float,
    noise_psd_dbm_per_hz: float, kind: str,
) -> np.ndarray:
    """``p g / N0`` ``(K,)`` from path loss alone, checked as a generated gain of ``kind``."""
    dist = np.array([d.distance_m for d in devices])
    loss_db = path_loss_db(path_loss, dist, carrier_ghz)
    check_generated_gain(-loss_db[:, None], devices, kind, noise_psd_dbm_per_hz)
    p_w = dbm_to_w(np.array([d.tx_power_dbm for d in devices]))
    n0 = float(dbm_to_w(noise_psd_dbm_per_hz))
    return p_w * 10.0 ** (-loss_db / 10.0) / n0


def check_snr_db(
    snr_db_hz: np.ndarray, devices: tuple[DeviceSpec, ...], where: str, terms: str
) -> None:
    """Refuse SNR coefficients ``a`` (in dB-Hz, ``(K, T)``) above :data:`MAX_SNR_DB`.

    Beyond it the spectral efficiency exceeds 1000 b/s/Hz at 1 Hz, and ``10**(a/10)``
    soon overflows a float.

    Args:
        snr_db_hz: the coefficients in dB-Hz, one row per device ``(K, T)``.
        devices: the devices of the rows.
        where: what gives the coefficients, for the message (a key or a file).
        terms: how the coefficient is made up, for the message (``{p}``: the device's power).

    Raises:
        InputError: naming the first device above the limit.
    """
    peak = snr_db_hz.max(axis=1)
    bad = np.flatnonzero(~(peak <= MAX_SNR_DB))
    if bad.size:
        k = int(bad[np.argmax(np.nan_to_num(peak[bad], nan=np.inf))])
        raise InputError(
            f"{where}: device {devices[k].name} reaches an SNR coefficient p*g/N0 of "
            f"{peak[k]:.4g} dB-Hz ({terms.format(p=devices[k].tx_power_dbm)}), above the "
            f"{MAX_SNR_DB:.0f} dB-Hz desim represents (1000 b/s/Hz); check the device's "
            "tx_power_dbm and server.noise_psd_dbm_per_hz"
        )


def check_generated_gain(
    gain_db: np.ndarray,
    devices: tuple[DeviceSpec, ...],
    kind: str,
    noise_psd_dbm_per_hz: float,
) -> None:
    """Refuse an unrepresentable SNR, and warn about a generated gain above 0 dB.

    Args:
        gain_db: channel gains in dB ``(K, T)`` (generated, or a bound of them).
        devices: the devices of the rows.
        kind: the channel kind, for the messages.
        noise_psd_dbm_per_hz: receiver noise power spectral density N0.
    """
    p_dbm = np.array([d.tx_power_dbm for d in devices])
    peak = gain_db.max(axis=1)
    where = f"channel (kind = {kind!r})"
    check_snr_db(
        p_dbm[:, None] + gain_db - noise_psd_dbm_per_hz, devices, where,
        "tx_power_dbm {p:g} + gain_db - " + f"server.noise_psd_dbm_per_hz {noise_psd_dbm_per_hz:g}",
    )
    if peak.max() > 0.0:
        k = int(np.argmax(peak))
        warn(
            f"{where}: the channel gain of device {devices[k].name} reaches {peak[k]:.3g} dB "
            f"(distance_m {devices[k].distance_m:g}): a gain above 0 dB means the received "
            "power exceeds the transmitted one"
        )

