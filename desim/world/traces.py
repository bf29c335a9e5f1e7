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

This module does no file I/O (see :mod:`desim.io.files`); it receives parsed tables and the line
number of every row, so each problem is reported as one :class:`~desim.errors.TraceError` naming
the file and the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from desim.errors import TraceError, warn
from desim.world.piecewise import EndPolicy, PiecewiseSignals

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
SHARED_PERIODS = 8
"""Devices of different lengths looping together repeat every ``n`` times the longest length,
``n <= SHARED_PERIODS`` (see :func:`shared_period_s`)."""
MAX_SPECTRAL_EFFICIENCY = 1000.0  # b/s/Hz; 2**1000 is still a finite float
# the SNR (dB) of that spectral efficiency, log2(1 + SNR) = 1000: the largest SNR, and SNR
# coefficient in dB-Hz, desim represents (10**(x/10) overflows a float near 3082 dB)
MAX_SNR_DB = 10.0 * MAX_SPECTRAL_EFFICIENCY * float(np.log10(2.0))
Quantity = Literal["gain_db", "snr_db", "throughput_mbps", "compute"]


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
    """A validated tidy trace with every device on the union grid of breakpoints.

    Attributes:
        source: the file it came from (for messages).
        quantity: ``gain_db``, ``snr_db``, ``throughput_mbps`` or ``compute``.
        devices: trace device names ``(M,)`` in order of first appearance.
        times_s: union grid ``(T,)`` starting at 0.
        columns: value column name to ``(M, T)`` array on the grid (the quantity, plus
            ``ref_bandwidth_hz`` for SNR and throughput; ``speed_factor`` and ``available``
            for compute traces).
        end_s: end of the trace: the longest device's end (one period under ``loop`` when
            every device has that length).
        meta: the file metadata (``end_policy`` applies after each device's end).
        samples: native row count per device ``(M,)``.
        median_step_s: native median sampling step per device ``(M,)`` (``nan`` if one row).
        device_end_s: each device's own end ``(M,)`` (empty: every device ends at ``end_s``);
            on ``[device_end_s[m], end_s)`` the grid holds device ``m``'s last value.
    """

    source: str
    quantity: Quantity
    devices: tuple[str, ...]
    times_s: np.ndarray
    columns: Mapping[str, np.ndarray]
    end_s: float
    meta: TraceMeta
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0))
    median_step_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    device_end_s: np.ndarray = field(default_factory=lambda: np.zeros(0))

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


def _fail(source: str, where: str, lines: np.ndarray, i: int, msg: str) -> TraceError:
    return TraceError(f"{source} {where} {int(lines[i])}: {msg}")


def _numeric(
    frame: pd.DataFrame, col: str, source: str, where: str, lines: np.ndarray
) -> np.ndarray:
    raw = frame[col]
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        i = int(bad[0])
        got = raw.iloc[i]
        what = "NaN" if (vals[i] != vals[i] and _is_missing_or_nan(got)) else f"{got!r}"
        raise _fail(source, where, lines, i, f"{col} is {what}, expected a finite number")
    return vals


def _is_missing_or_nan(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return bool(np.isnan(value))
    return str(value).strip().lower() in ("nan", "")


def trace_from_frame(
    frame: pd.DataFrame,
    source: str,
    meta: TraceMeta | None = None,
    lines: np.ndarray | None = None,
    where: str = "line",
) -> Trace:
    """Validate a tidy table and merge its devices onto one grid.

    Args:
        frame: the parsed rows (strings or numbers).
        source: file name used in messages.
        meta: file metadata (defaults: ``loop``, inferred duration).
        lines: the file line (or row) number of every row ``(n,)``; ``1..n`` when ``None``.
        where: ``line`` for text files, ``row`` for Parquet.

    Returns:
        The validated :class:`Trace`.

    Raises:
        TraceError: naming the file and line of the first problem.
    """
    meta = meta or TraceMeta()
    n = len(frame)
    lines = np.arange(1, n + 1) if lines is None else np.asarray(lines)
    if n == 0:
        raise TraceError(f"{source}: empty trace: no data rows")
    cols = [str(c).strip() for c in frame.columns]
    frame = frame.set_axis(cols, axis=1)
    quantity, value_cols = _value_columns(cols, meta, source)
    dev_raw = frame["device"]
    missing = np.flatnonzero(dev_raw.isna().to_numpy() | (dev_raw.astype(str).str.strip() == ""))
    if missing.size:
        raise _fail(source, where, lines, int(missing[0]), "device is empty")
    device = dev_raw.astype(str).str.strip().to_numpy()
    time = _numeric(frame, "time_s", source, where, lines)
    values = {c: _numeric(frame, c, source, where, lines) for c in value_cols}
    if quantity != "gain_db" and quantity != "compute" and "ref_bandwidth_hz" not in values:
        # no ref_bandwidth_hz column, so the metadata gives it (checked above)
        assert meta.ref_bandwidth_hz is not None
        values["ref_bandwidth_hz"] = np.full(n, float(meta.ref_bandwidth_hz))
    _check_values(quantity, time, values, source, where, lines)
    return _merge(source, quantity, device, time, values, meta, lines, where)


def _value_columns(cols: list[str], meta: TraceMeta, source: str) -> tuple[Quantity, list[str]]:
    """The quantity a header holds and its value columns; the error names what is missing."""
    found = [c for c in CHANNEL_COLUMNS if c in cols]
    absent = [c for c in ("device", "time_s") if c not in cols]
    partial = [c for c in COMPUTE_COLUMNS if c not in cols]
    if not found and len(partial) == 1:  # one of the two compute columns
        absent.append(partial[0])
    if absent:
        raise TraceError(
            f"{source}: missing column(s) {', '.join(absent)} (the header has {', '.join(cols)})"
        )
    if len(found) > 1:
        raise TraceError(f"{source}: several value columns ({', '.join(found)}); give exactly one")
    if not found:
        if not partial:
            return "compute", list(COMPUTE_COLUMNS)
        raise TraceError(
            f"{source}: expected columns device, time_s and one of "
            f"{', '.join(CHANNEL_COLUMNS)} (channel) or speed_factor, available (compute); "
            f"got {', '.join(cols)}"
        )
    quantity = cast(Quantity, found[0])  # found holds CHANNEL_COLUMNS names only
    if quantity == "gain_db":
        return quantity, [quantity]
    if "ref_bandwidth_hz" in cols:
        return quantity, [quantity, "ref_bandwidth_hz"]
    if meta.ref_bandwidth_hz is None:
        raise TraceError(
            f"{source}: {quantity} needs the reference bandwidth: add a "
            "ref_bandwidth_hz column or metadata key"
        )
    return quantity, [quantity]


def _check_values(
    quantity: str,
    time: np.ndarray,
    values: dict[str, np.ndarray],
    source: str,
    where: str,
    lines: np.ndarray,
) -> None:
    def first(mask: np.ndarray) -> int | None:
        idx = np.flatnonzero(mask)
        return int(idx[0]) if idx.size else None

    checks: list[tuple[np.ndarray, str]] = [(time < 0, "time_s is negative")]
    if quantity == "throughput_mbps":
        checks.append((values["throughput_mbps"] < 0, "negative throughput_mbps"))
    if "ref_bandwidth_hz" in values:
        checks.append((values["ref_bandwidth_hz"] <= 0, "ref_bandwidth_hz must be > 0"))
    if quantity == "compute":
        checks.append((values["speed_factor"] < 0, "negative speed_factor"))
        avail = values["available"]
        checks.append(((avail != 0) & (avail != 1), "available must be 0 or 1"))
    for mask, msg in checks:
        i = first(mask)
        if i is not None:
            raise _fail(source, where, lines, i, msg)
    if quantity in ("gain_db", "snr_db"):
        i = first(values[quantity] > MAX_SNR_DB)
        if i is not None:
            gain = "; a channel power gain is below 0 dB" if quantity == "gain_db" else ""
            raise _fail(
                source,
                where,
                lines,
                i,
                f"{quantity} {values[quantity][i]:g} dB exceeds {MAX_SNR_DB:.0f} dB (a spectral "
                f"efficiency above {MAX_SPECTRAL_EFFICIENCY:.0f} b/s/Hz{gain})",
            )
    if quantity == "throughput_mbps":
        eff = values["throughput_mbps"] * 1e6 / values["ref_bandwidth_hz"]
        i = first(eff > MAX_SPECTRAL_EFFICIENCY)
        if i is not None:
            raise _fail(
                source,
                where,
                lines,
                i,
                f"throughput {values['throughput_mbps'][i]:g} Mbit/s over "
                f"{values['ref_bandwidth_hz'][i]:g} Hz exceeds {MAX_SPECTRAL_EFFICIENCY:.0f} "
                "b/s/Hz; state a larger ref_bandwidth_hz",
            )


def _merge(
    source: str,
    quantity: Quantity,
    device: np.ndarray,
    time: np.ndarray,
    values: dict[str, np.ndarray],
    meta: TraceMeta,
    lines: np.ndarray,
    where: str,
) -> Trace:
    names, first_idx, inverse = np.unique(device, return_index=True, return_inverse=True)
    order = np.argsort(first_idx)  # keep the order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    dev_id = rank[inverse]
    devices = tuple(str(names[i]) for i in order)
    per_dev: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    for k in range(len(devices)):
        idx = np.flatnonzero(dev_id == k)  # file order
        d = np.diff(time[idx])
        bad = np.flatnonzero(d <= 0)
        if bad.size:
            i = int(idx[bad[0] + 1])
            raise _fail(
                source,
                where,
                lines,
                i,
                f"time_s {time[i]:g} is not after the previous time {time[idx[bad[0]]]:g} "
                f"of device {devices[k]!r} (times must increase)",
            )
        per_dev.append(idx)
        steps.append(d)
    ends = _device_ends(source, devices, np.array([time[idx[-1]] for idx in per_dev]), steps, meta)
    grid = np.unique(np.concatenate([[0.0], time]))
    cols: dict[str, np.ndarray] = {}
    for col, vals in values.items():
        out = np.empty((len(devices), grid.size))
        for k, idx in enumerate(per_dev):
            seg = np.searchsorted(time[idx], grid, side="right") - 1
            out[k] = vals[idx][np.maximum(seg, 0)]  # before the first row: the first value
        cols[col] = out
    end = float(ends.max())
    return Trace(
        source=source,
        quantity=quantity,
        devices=devices,
        times_s=grid,
        columns=cols,
        end_s=end,
        meta=meta,
        samples=np.array([idx.size for idx in per_dev]),
        median_step_s=np.array([np.median(s) if s.size else np.nan for s in steps]),
        device_end_s=np.zeros(0) if np.all(ends == end) else ends,
    )


def _device_ends(
    source: str,
    devices: tuple[str, ...],
    last_s: np.ndarray,
    steps: list[np.ndarray],
    meta: TraceMeta,
) -> np.ndarray:
    """Each device's own end ``(M,)`` from the metadata, checked against its last row.

    A device listed in ``device_duration_s`` ends there; every other one at ``duration_s``, or,
    without it, at the last time of the trace plus the median sampling step (shared).
    """
    own = dict(meta.device_duration_s or {})
    unknown = sorted(set(own) - set(devices))
    if unknown:
        raise TraceError(
            f"{source}: metadata device_duration_s names unknown device(s) {', '.join(unknown)}"
        )
    last = float(last_s.max())
    default: float | None = None
    if meta.duration_s is not None:
        if meta.duration_s <= last and len(own) < len(devices):
            raise TraceError(
                f"{source}: metadata duration_s {meta.duration_s:g} must exceed the last "
                f"time_s {last:g}"
            )
        default = float(meta.duration_s)
    elif len(own) < len(devices):
        all_steps = np.concatenate(steps)
        if not all_steps.size:
            raise TraceError(
                f"{source}: every device has a single row; give duration_s in the metadata"
            )
        default = last + float(np.median(all_steps))
    ends = np.array([own.get(name, default) for name in devices], dtype=float)
    for k, name in enumerate(devices):
        if name not in own:
            continue
        if ends[k] <= last_s[k]:
            raise TraceError(
                f"{source}: metadata device_duration_s of device {name!r} ({ends[k]:g}) must "
                f"exceed its last time_s {last_s[k]:g}"
            )
        if default is not None and meta.duration_s is not None and ends[k] > default:
            raise TraceError(
                f"{source}: metadata device_duration_s of device {name!r} ({ends[k]:g}) exceeds "
                f"duration_s {default:g}, the end of the trace"
            )
    return ends


def grid_step_s(trace: Trace) -> float | None:
    """The sampling step of a trace sampled on one uniform grid up to its end, else ``None``.

    ``random-offset`` draws whole steps on such a trace, so the shifted signals share the
    trace's grid: the engine's cost grows with the union of every device's breakpoints, and
    offsets off the grid would multiply it by the number of devices.
    """
    if not trace.same_length or trace.times_s.size < 2:
        return None
    steps = np.diff(np.append(trace.times_s, trace.end_s))
    return float(steps[0]) if np.allclose(steps, steps[0], rtol=1e-9, atol=0.0) else None


def map_devices(
    trace: Trace,
    names: tuple[str, ...],
    mapping: str | Mapping[str, str],
    rng: np.random.Generator | None,
    section: str = "channel",
) -> tuple[np.ndarray, np.ndarray]:
    """Assign a trace device and a time offset to every scenario device.

    Args:
        trace: the trace.
        names: scenario device names ``(K,)``.
        mapping: ``cyclic`` (scenario device ``i`` replays trace device ``i mod M``),
            ``random-offset`` (the same, each starting at a uniform random time within its
            trace device's own length, drawn from ``rng``), or a table
            ``{scenario device: trace device}``.
        rng: the run's stream for this section (``channel`` or ``compute``).
        section: scenario section name for messages.

    Returns:
        ``(rows (K,), offsets_s (K,))``.
    """
    k = len(names)
    m = len(trace.devices)
    if isinstance(mapping, str):
        rows = np.arange(k) % m
        if mapping == "cyclic":
            if m == 1 and k > 1:
                warn(
                    f"{section}.path ({trace.source}) holds one trace device and "
                    f"{section}.mapping = 'cyclic' replays it for every scenario device: all {k} "
                    f"devices get the same signal (mapping = 'random-offset' starts each at "
                    "its own time)"
                )
            return rows, np.zeros(k)
        if mapping == "random-offset":
            if rng is None:
                raise ValueError("random-offset mapping needs a random generator")
            step = grid_step_s(trace)
            if step is not None:  # whole steps: every device keeps the trace's own time grid
                return rows, step * rng.integers(0, round(trace.end_s / step), k)
            if trace.same_length:
                return rows, rng.uniform(0.0, trace.end_s, k)
            return rows, rng.uniform(0.0, trace.ends_s[rows])
        raise TraceError(
            f"{section}.mapping: unknown mapping {mapping!r}; known: cyclic, random-offset, "
            "or a table of scenario device = trace device"
        )
    missing = [n for n in names if n not in mapping]
    if missing:
        raise TraceError(
            f"{section}.mapping: no trace device for scenario device(s) {', '.join(missing[:5])}"
        )
    extra = sorted(set(mapping) - set(names))
    if extra:
        raise TraceError(f"{section}.mapping: unknown scenario device(s) {', '.join(extra[:5])}")
    return np.array([trace.row_of(mapping[n]) for n in names]), np.zeros(k)


def replay_signals(
    trace: Trace,
    values: np.ndarray,
    rows: np.ndarray,
    offsets_s: np.ndarray,
    end_policy: EndPolicy | None = None,
    trace_rows: np.ndarray | None = None,
) -> PiecewiseSignals:
    """Signals ``v_k(t) = values[rows[k]](t + offsets_s[k])`` on their union grid.

    Every signal loops (or holds) on the own length of the trace device it replays. When those
    lengths differ, the signals share the period :func:`shared_period_s`: inside it each one
    repeats exactly on its own length.

    Args:
        trace: the trace (grid, device lengths and default end policy).
        values: values on ``trace.times_s``, one row per trace device ``(M, T)``, or one row
            per output signal already mapped to trace devices ``(K, T)``.
        rows: row of ``values`` per output signal ``(K,)``.
        offsets_s: time offset per output signal ``(K,)``, within its device's length.
        end_policy: override of the trace's end policy.
        trace_rows: trace device of each output signal ``(K,)``, whose length it loops on;
            default ``rows mod M``, which is right for values per trace device and for values
            mapped with the ``cyclic`` or ``random-offset`` mapping (output ``k`` replays trace
            device ``k mod M``).

    Returns:
        ``K`` signals; a shifted ``loop`` row wraps around within its own length, a shifted
        ``hold`` row reaches its held last value ``offset`` seconds early.
    """
    policy = end_policy or trace.end_policy
    if policy == "loop" and not trace.same_length:
        devs = np.asarray(rows) % len(trace.devices) if trace_rows is None else trace_rows
        lengths = trace.ends_s[np.asarray(devs)]
        if np.any(lengths != trace.end_s):
            return _replay_own_loops(trace, values, np.asarray(rows), offsets_s, lengths)
    # one shared period; under hold a shorter device's last value already holds on the grid
    end = trace.end_s
    times = trace.times_s
    offs = np.mod(np.asarray(offsets_s, dtype=float), end)
    if not np.any(offs):
        return PiecewiseSignals(times, values[np.asarray(rows)], end, policy)
    step = grid_step_s(trace)
    if policy == "loop" and step is not None and _whole_steps(offs, step):
        grid = times  # a uniform grid shifted by whole steps is itself (exactly, not in floats)
    else:
        parts = [np.zeros(1)]
        for o in np.unique(offs):
            shifted = times - o
            parts.append(np.mod(shifted, end) if policy == "loop" else shifted[shifted > 0])
        grid = np.unique(np.concatenate(parts))
        grid = grid[grid < end]
    # evaluate at segment midpoints so float rounding at a breakpoint cannot pick a neighbour
    mid = (grid + np.append(grid[1:], end)) / 2.0
    out = np.empty((len(rows), grid.size))
    for i, (r, o) in enumerate(zip(rows, offs)):
        local = mid + o
        local = np.mod(local, end) if policy == "loop" else np.minimum(local, np.nextafter(end, 0))
        seg = np.searchsorted(times, local, side="right") - 1
        out[i] = values[r][seg]
    return PiecewiseSignals(grid, out, end, policy)


def _whole_steps(offsets_s: np.ndarray, step_s: float) -> bool:
    n = offsets_s / step_s
    return bool(np.all(np.abs(n - np.round(n)) <= 1e-9 * np.maximum(n, 1.0)))


def shared_period_s(lengths_s: np.ndarray, max_periods: int = SHARED_PERIODS) -> float:
    """The period of signals that loop on different lengths ``(K,)``.

    The smallest multiple ``n L_max`` (``n <= max_periods``) of the longest length that is a
    whole number of every length, where one exists, so the loops are exact forever; else
    ``max_periods L_max``. Then every signal repeats exactly on its own length up to that
    period and all restart together there: a shorter signal's last repetition is cut short,
    which weighs at most ``L_k / (max_periods L_max)`` in any long-run statistic.
    """
    longest = float(np.max(lengths_s))
    for n in range(1, max_periods + 1):
        ratio = n * longest / np.asarray(lengths_s, dtype=float)
        if np.all(np.abs(ratio - np.round(ratio)) <= 1e-9 * ratio):
            return n * longest
    return max_periods * longest


def _replay_own_loops(
    trace: Trace,
    values: np.ndarray,
    rows: np.ndarray,
    offsets_s: np.ndarray,
    lengths_s: np.ndarray,
) -> PiecewiseSignals:
    """Looping signals of different own lengths ``lengths_s`` ``(K,)`` on one shared period."""
    times = trace.times_s
    period = shared_period_s(lengths_s)
    offs = np.mod(np.asarray(offsets_s, dtype=float), lengths_s)
    parts = [np.zeros(1)]
    for r, o, length in zip(rows, offs, lengths_s):
        # only the row's own change points, so the grid grows with the rows, not with M
        own = times < length
        v = values[r][own]
        change = times[own][np.append(True, v[1:] != v[:-1])]
        starts = np.mod(change - o, length)
        copies = np.arange(int(np.ceil(period / length)) + 1) * length
        parts.append((starts[None, :] + copies[:, None]).ravel())
    grid = np.unique(np.concatenate(parts))
    grid = grid[grid < period]
    mid = (grid + np.append(grid[1:], period)) / 2.0
    out = np.empty((len(rows), grid.size))
    for i, (r, o, length) in enumerate(zip(rows, offs, lengths_s)):
        seg = np.searchsorted(times, np.mod(mid + o, length), side="right") - 1
        out[i] = values[r][seg]
    return PiecewiseSignals(grid, out, period, "loop")


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


def tidy_frame(
    devices: tuple[str, ...] | list[str],
    times_s: list[np.ndarray] | np.ndarray,
    columns: Mapping[str, list[np.ndarray] | np.ndarray],
) -> pd.DataFrame:
    """Build a tidy table from per-device times and values (rows grouped by device).

    Args:
        devices: device names ``(M,)``.
        times_s: per-device sample times (a list of arrays, or one shared ``(T,)`` grid).
        columns: column name to per-device values (a list of arrays, or an ``(M, T)`` array).
    """
    shared = isinstance(times_s, np.ndarray) and np.ndim(times_s) == 1
    t_list = [np.asarray(times_s)] * len(devices) if shared else list(times_s)
    frame = {
        "device": np.concatenate(
            [np.full(t.size, d, dtype=object) for d, t in zip(devices, t_list)]
        ),
        "time_s": np.concatenate(t_list),
    }
    for name, vals in columns.items():
        frame[name] = np.concatenate([np.asarray(v) for v in vals])
    return pd.DataFrame(frame)
