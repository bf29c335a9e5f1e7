"""Tidy channel and compute traces: validation, merging onto one grid, device mapping, summaries.

The tidy format (DESIGN §4, ``traces/README.md``) has one row per device and sample:

- channel traces: ``device, time_s`` and exactly one of ``gain_db``, ``snr_db`` or
  ``throughput_mbps``; ``snr_db`` and ``throughput_mbps`` also need the reference bandwidth
  ``ref_bandwidth_hz`` (a column or a metadata key);
- compute traces: ``device, time_s, speed_factor, available``.

Each value holds from its ``time_s`` until the device's next row; the last row holds until the
device's own end: its entry in the ``device_duration_s`` metadata, else the trace's ``duration_s``
(by default the last time plus the median sampling step). After its end the ``end_policy``
(``loop`` or ``hold``) applies to each device on its own length, so devices of different lengths
are never stretched to the longest one. Time starts at 0; a device whose first row comes later
also holds its first value back to 0. Devices may have different native grids: they are merged
onto the union of breakpoints, which is exact for piecewise-constant signals.

A :class:`Trace` keeps each device's own rows (no devices × all-timestamps grid unless asked for).
This module holds the validated :class:`Trace`, its metadata and its per-device summaries; tidy
tables are validated into traces by :mod:`desim.world.tidy`, and replayed for scenario devices by
:mod:`desim.world.replay`. Nothing here does file I/O (see :mod:`desim.io.traces`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import numpy as np

from desim.errors import TraceError
from desim.world.piecewise import EndPolicy

CHANNEL_COLUMNS = ("gain_db", "snr_db", "throughput_mbps")
COMPUTE_COLUMNS = ("speed_factor", "available")
META_KEYS = (
    "kind",
    "end_policy",
    "duration_s",
    "device_duration_s",
    "ref_bandwidth_hz",
    "source",
    "licence",
    "description",
    "command",
)
MAX_SPECTRAL_EFFICIENCY = 1000.0  # b/s/Hz; 2**1000 is still a finite float
# the SNR (dB) of that spectral efficiency, log2(1 + SNR) = 1000: the largest SNR, and SNR
# coefficient in dB-Hz, desim represents (10**(x/10) overflows a float near 3082 dB)
MAX_SNR_DB = 10.0 * MAX_SPECTRAL_EFFICIENCY * float(np.log10(2.0))
Quantity = Literal["gain_db", "snr_db", "throughput_mbps", "compute"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class TraceMeta:
    """Per-file metadata (JSON sidecar or ``# key: value`` header comments).

    Attributes:
        end_policy: ``loop`` (repeat from 0) or ``hold`` (keep the last value) after the end.
        duration_s: end of the trace in seconds, and the length of every device not in
            ``device_duration_s``; ``None`` infers last time + median step.
        device_duration_s: own length in seconds of some or all devices (``{device: s}``), for
            traces whose devices have different lengths (each loops or holds on its own).
        ref_bandwidth_hz: reference bandwidth of ``snr_db``/``throughput_mbps`` values when the
            file has no ``ref_bandwidth_hz`` column.
        source: where the data came from (citation, URL, generator).
        licence: licence of the data.
        description: free text.
        command: the command that regenerates the file.
        kind: ``channel`` or ``compute`` (informative; the columns decide).
    """

    end_policy: EndPolicy = "loop"
    duration_s: float | None = None
    device_duration_s: Mapping[str, float] | None = field(default=None, hash=False)
    ref_bandwidth_hz: float | None = None
    source: str = ""
    licence: str = ""
    description: str = ""
    command: str = ""
    kind: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> TraceMeta:
        """Validate metadata read from a sidecar or header comments."""
        unknown = sorted(set(data) - set(META_KEYS))
        if unknown:
            raise TraceError(
                f"{source}: unknown metadata key(s) {', '.join(unknown)}; known: "
                + ", ".join(META_KEYS)
            )
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("duration_s", "ref_bandwidth_hz"):
                try:
                    num = float(value)
                except (TypeError, ValueError):
                    raise TraceError(
                        f"{source}: metadata {key} must be a number, got {value!r}"
                    ) from None
                if not np.isfinite(num) or num <= 0:
                    raise TraceError(f"{source}: metadata {key} must be > 0, got {value!r}")
                out[key] = num
            elif key == "device_duration_s":
                out[key] = _device_durations(value, source)
            elif key == "end_policy":
                if value not in ("loop", "hold"):
                    raise TraceError(
                        f"{source}: metadata end_policy must be 'loop' or 'hold', got {value!r}"
                    )
                out[key] = value
            else:
                out[key] = str(value)
        return cls(**out)

    def to_mapping(self) -> dict[str, Any]:
        """The non-empty fields, for writing."""
        return {k: getattr(self, k) for k in META_KEYS if getattr(self, k) not in (None, "")}


def _device_durations(value: Any, source: str) -> dict[str, float]:
    """Validate the ``device_duration_s`` metadata: a JSON object of positive numbers."""
    if not isinstance(value, Mapping):
        raise TraceError(
            f"{source}: metadata device_duration_s must be an object of device: seconds, "
            f"got {value!r}"
        )
    out: dict[str, float] = {}
    for name, seconds in value.items():
        try:
            num = float(seconds)
        except (TypeError, ValueError):
            num = float("nan")
        if not np.isfinite(num) or num <= 0:
            raise TraceError(
                f"{source}: metadata device_duration_s of device {name!r} must be a number > 0, "
                f"got {seconds!r}"
            )
        out[str(name)] = num
    return out


@dataclass(frozen=True, eq=False)
class Trace:
    """A validated tidy trace: every device's own samples, and their union grid on demand.

    Each device keeps its native rows, compactly, one after another (a CSR layout): device
    ``m``'s times are ``row_times_s[row_start[m]:row_start[m + 1]]``, strictly increasing, and
    its values the same slice of every ``row_columns`` array. Nothing of size devices × all
    timestamps is stored: :attr:`times_s` and :attr:`columns`, the devices merged onto the
    union of their breakpoints (exact for piecewise-constant signals), are built on first use,
    for summaries and small replays (:mod:`desim.world.replay` replays a large trace from the
    rows themselves).

    Attributes:
        source: the file it came from (for messages).
        quantity: ``gain_db``, ``snr_db``, ``throughput_mbps`` or ``compute``.
        devices: trace device names ``(M,)`` in order of first appearance.
        row_start: where each device's rows start ``(M + 1,)``; the last entry is ``N``.
        row_times_s: native sample times ``(N,)``, device after device.
        row_columns: value column name to native values ``(N,)`` (the quantity, plus
            ``ref_bandwidth_hz`` for SNR and throughput; ``speed_factor`` and ``available``
            for compute traces).
        end_s: end of the trace: the longest device's end (one period under ``loop`` when
            every device has that length).
        meta: the file metadata (``end_policy`` applies after each device's end).
        samples: native row count per device ``(M,)``.
        median_step_s: native median sampling step per device ``(M,)`` (``nan`` if one row).
        device_end_s: each device's own end ``(M,)`` (empty: every device ends at ``end_s``);
            on ``[device_end_s[m], end_s)`` the union grid holds device ``m``'s last value.
    """

    source: str
    quantity: Quantity
    devices: tuple[str, ...]
    row_start: np.ndarray
    row_times_s: np.ndarray
    row_columns: Mapping[str, np.ndarray]
    end_s: float
    meta: TraceMeta
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    median_step_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    device_end_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def _cached(self, name: str, build: Callable[[], _T]) -> _T:
        """A derived value, built once (the trace is frozen and shared read-only)."""
        if name not in self.__dict__:
            object.__setattr__(self, name, build())
        return cast(_T, self.__dict__[name])

    @property
    def shared_grid(self) -> bool:
        """Whether every device has the same native sample times."""

        def build() -> bool:
            n = self.samples
            if len(self.devices) == 1:
                return True
            if np.any(n != n[0]):
                return False
            grid = self.row_times_s.reshape(len(self.devices), int(n[0]))
            return bool(np.all(grid == grid[0]))

        return self._cached("_shared_grid", build)

    def device_times_s(self, m: int) -> np.ndarray:
        """Native sample times of device ``m`` ``(samples[m],)`` (a read-only view)."""
        return self.row_times_s[self.row_start[m] : self.row_start[m + 1]]

    @property
    def times_s(self) -> np.ndarray:
        """The union grid ``(T,)`` of every device's times, starting at 0 (built on first use)."""

        def build() -> np.ndarray:
            times = self.device_times_s(0) if self.shared_grid else self.row_times_s
            grid = np.unique(np.concatenate([[0.0], times]))
            grid.flags.writeable = False
            return grid

        return self._cached("_times_s", build)

    def on_grid(self, flat: np.ndarray, devices: np.ndarray | None = None) -> np.ndarray:
        """Native values ``flat`` ``(N,)`` merged onto :attr:`times_s`: ``(len(devices), T)``.

        Each device's value holds from each of its times to its next one; before its first
        row it is its first value. ``devices`` defaults to every device.
        """
        grid = self.times_s
        which = range(len(self.devices)) if devices is None else np.asarray(devices)
        out = np.empty((len(which), grid.size), dtype=flat.dtype)
        for i, m in enumerate(which):
            lo, hi = int(self.row_start[m]), int(self.row_start[m + 1])
            seg = np.searchsorted(self.row_times_s[lo:hi], grid, side="right") - 1
            out[i] = flat[lo:hi][np.maximum(seg, 0)]
        return out

    @property
    def columns(self) -> Mapping[str, np.ndarray]:
        """Value column name to ``(M, T)`` values on :attr:`times_s` (built on first use)."""

        def build() -> dict[str, np.ndarray]:
            out = {name: self.on_grid(flat) for name, flat in self.row_columns.items()}
            for values in out.values():
                values.flags.writeable = False
            return out

        return self._cached("_columns", build)

    @property
    def ends_s(self) -> np.ndarray:
        """Each device's own end in seconds ``(M,)``: its period under ``loop``."""
        if self.device_end_s.size == len(self.devices):
            return self.device_end_s
        return np.full(len(self.devices), float(self.end_s))

    @property
    def same_length(self) -> bool:
        """Whether every device ends at ``end_s`` (one shared period)."""
        return bool(np.all(self.ends_s == self.end_s))

    def segment_weights_s(self) -> np.ndarray:
        """Seconds of each grid segment inside each device's own length ``(M, T)``.

        Time-weighted statistics use these weights, so a shorter device is summarised over its
        own length, not over the held tail up to ``end_s``.
        """
        bounds = np.append(self.times_s, self.end_s)
        ends = self.ends_s[:, None]
        return np.maximum(np.minimum(bounds[1:], ends) - np.minimum(bounds[:-1], ends), 0.0)

    @property
    def kind(self) -> str:
        """``channel`` or ``compute``."""
        return "compute" if self.quantity == "compute" else "channel"

    @property
    def end_policy(self) -> EndPolicy:
        """The end policy from the metadata."""
        return self.meta.end_policy

    def row_of(self, device: str) -> int:
        """Index of a trace device; :class:`TraceError` listing the known ones otherwise."""
        try:
            return self.devices.index(device)
        except ValueError:
            shown = ", ".join(self.devices[:10]) + (" ..." if len(self.devices) > 10 else "")
            raise TraceError(
                f"{self.source}: unknown device {device!r}; trace devices: {shown}"
            ) from None


@dataclass(frozen=True)
class DeviceSummary:
    """Time-weighted statistics of one trace device over its own length.

    Attributes:
        device: trace device name.
        samples: native row count.
        median_step_s: native median sampling step.
        length_s: the device's own length (its period under ``loop``).
        mean: time-weighted mean of the summarised quantity.
        p5: 5th percentile (time-weighted).
        p50: median (time-weighted).
        p95: 95th percentile (time-weighted).
        zero_fraction: fraction of time at zero (rate or speed) or unavailable.
    """

    device: str
    samples: int
    median_step_s: float
    length_s: float
    mean: float
    p5: float
    p50: float
    p95: float
    zero_fraction: float


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0-100) of a piecewise-constant signal, weighted by duration."""
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w)
    i = int(np.searchsorted(cum, q / 100.0 * cum[-1], side="left"))
    return float(v[min(i, v.size - 1)])


def summarise(quantity_values: np.ndarray, trace: Trace) -> list[DeviceSummary]:
    """Per-device time-weighted mean and percentiles of ``quantity_values`` ``(M, T)``.

    Each device is summarised over its own length (:meth:`Trace.segment_weights_s`).
    """
    weights = trace.segment_weights_s()
    rows = []
    for k, name in enumerate(trace.devices):
        inside = weights[k] > 0  # segments past a shorter device's end weigh nothing
        v, dur = quantity_values[k][inside], weights[k][inside]
        rows.append(
            DeviceSummary(
                device=name,
                samples=int(trace.samples[k]),
                median_step_s=float(trace.median_step_s[k]),
                length_s=float(trace.ends_s[k]),
                mean=float(np.sum(v * dur) / np.sum(dur)),
                p5=weighted_percentile(v, dur, 5),
                p50=weighted_percentile(v, dur, 50),
                p95=weighted_percentile(v, dur, 95),
                zero_fraction=float(np.sum(dur[v <= 0]) / np.sum(dur)),
            )
        )
    return rows
