"""Tidy tables: validating one into a :class:`~desim.world.traces.Trace`, and building one.

A tidy table has one row per device and sample (the format is described in
:mod:`desim.world.traces`). :func:`trace_from_frame` checks every row of a parsed table (and
:func:`trace_from_columns` the typed columns a large file's reader hands over), groups the rows by
device without any devices × timestamps grid, and works out each device's own end. It does no
file I/O (see :mod:`desim.io.traces`); it receives parsed tables and the line number of every
row, so each problem is reported as one :class:`~desim.errors.TraceError` naming the file and
the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from desim.errors import TraceError
from desim.world.traces import (
    CHANNEL_COLUMNS,
    COMPUTE_COLUMNS,
    MAX_SNR_DB,
    MAX_SPECTRAL_EFFICIENCY,
    Quantity,
    Trace,
    TraceMeta,
)


def _fail(source: str, where: str, lines: Any, i: int, msg: str) -> TraceError:
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
    """Validate a tidy table and keep its devices' own rows.

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
    _, value_cols = _value_columns(cols, meta, source)
    dev_raw = frame["device"]
    missing = np.flatnonzero(dev_raw.isna().to_numpy() | (dev_raw.astype(str).str.strip() == ""))
    if missing.size:
        raise _fail(source, where, lines, int(missing[0]), "device is empty")
    codes, names = pd.factorize(dev_raw.astype(str).str.strip().to_numpy())  # first appearance
    time = _numeric(frame, "time_s", source, where, lines)
    values = {c: _numeric(frame, c, source, where, lines) for c in value_cols}
    return trace_from_columns(
        source, cols, codes, [str(x) for x in names], time, values, meta, lines, where
    )


def trace_from_columns(
    source: str,
    cols: list[str],
    codes: np.ndarray,
    names: list[str],
    time: np.ndarray,
    values: dict[str, np.ndarray],
    meta: TraceMeta,
    lines: np.ndarray | RowNumbers,
    where: str = "line",
) -> Trace:
    """Validate parsed tidy columns (the reader of large files hands them over typed).

    Args:
        source: file name used in messages.
        cols: the header (stripped names).
        codes: device of every row ``(n,)``, an index into ``names``.
        names: device names; several entries may strip to the same name.
        time: ``time_s`` of every row ``(n,)``, finite.
        values: the value columns of the header (:func:`_value_columns`), finite ``(n,)``.
        meta: file metadata.
        lines: the file line (or row) number of every row.
        where: ``line`` for text files, ``row`` for Parquet.
    """
    quantity, value_cols = _value_columns(cols, meta, source)
    codes, devices = _device_codes(codes, names, source, where, lines)
    values = {c: values[c] for c in value_cols}
    n = time.size
    if quantity != "gain_db" and quantity != "compute" and "ref_bandwidth_hz" not in values:
        # no ref_bandwidth_hz column, so the metadata gives it (checked above)
        assert meta.ref_bandwidth_hz is not None
        values["ref_bandwidth_hz"] = np.full(n, float(meta.ref_bandwidth_hz))
    _check_values(quantity, time, values, source, where, lines)
    return _merge(source, quantity, devices, codes, time, values, meta, lines, where)


class RowNumbers:
    """Line numbers of consecutive rows: row ``i`` is on line ``first + i`` (no array of them)."""

    def __init__(self, first: int) -> None:
        """Args: first: the line (or row) number of row 0."""
        self.first = first

    def __getitem__(self, i: int) -> int:
        """The line of row ``i``."""
        return self.first + int(i)


def _device_codes(
    codes: np.ndarray, names: list[str], source: str, where: str, lines: Any
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Codes ``(n,)`` numbering the stripped device names in order of first appearance."""
    stripped = [x.strip() for x in names]
    empty = [i for i, x in enumerate(stripped) if x == ""]
    rows = np.flatnonzero(np.isin(codes, empty)) if empty else np.zeros(0, dtype=np.intp)
    if rows.size:
        raise _fail(source, where, lines, int(rows[0]), "device is empty")
    unique: dict[str, int] = {}
    merged = np.array([unique.setdefault(x, len(unique)) for x in stripped], dtype=np.int64)
    codes = merged[codes] if codes.size else codes.astype(np.int64)
    # renumber in order of first appearance: scan only where the device changes
    starts = np.flatnonzero(np.append(True, codes[1:] != codes[:-1]))
    _, first = np.unique(codes[starts], return_index=True)
    order = np.argsort(first)  # the codes by their first appearance
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    by_code = list(unique)
    present = np.unique(codes[starts])
    devices = tuple(by_code[int(present[i])] for i in order)
    lut = np.zeros(len(by_code), dtype=np.int64)
    lut[present] = rank
    return lut[codes], devices


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
    lines: Any,
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
    devices: tuple[str, ...],
    dev_id: np.ndarray,
    time: np.ndarray,
    values: dict[str, np.ndarray],
    meta: TraceMeta,
    lines: Any,
    where: str,
) -> Trace:
    """Group the rows by device (stable, file order within a device) and check their times."""
    m = len(devices)
    grouped = bool(np.all(dev_id[1:] >= dev_id[:-1]))  # a file written device after device
    order = None if grouped else np.argsort(dev_id, kind="stable")
    sorted_id = dev_id if order is None else dev_id[order]
    t = time if order is None else time[order]
    row_start = np.searchsorted(sorted_id, np.arange(m + 1))
    d = np.diff(t)
    inside = sorted_id[1:] == sorted_id[:-1]  # consecutive rows of one device
    bad = np.flatnonzero((d <= 0) & inside)
    if bad.size:
        j = int(bad[0])
        i, prev = (j + 1, j) if order is None else (int(order[j + 1]), int(order[j]))
        raise _fail(
            source,
            where,
            lines,
            i,
            f"time_s {time[i]:g} is not after the previous time {time[prev]:g} "
            f"of device {devices[int(dev_id[i])]!r} (times must increase)",
        )
    steps = [d[row_start[k] : row_start[k + 1] - 1] for k in range(m)]
    ends = _device_ends(source, devices, t[row_start[1:] - 1], steps, meta)
    cols = {c: (v if order is None else v[order]) for c, v in values.items()}
    end = float(ends.max())
    return Trace(
        source=source,
        quantity=quantity,
        devices=devices,
        row_start=row_start,
        row_times_s=t,
        row_columns=cols,
        end_s=end,
        meta=meta,
        samples=np.diff(row_start),
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
