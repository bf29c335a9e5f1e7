"""Importers: foreign channel-trace formats to the tidy format (``desim traces convert``).

Each importer takes already-read content (text lines or a parsed table, with the file name for
messages; :mod:`desim.io.files` does the reading) and returns a tidy table plus metadata. Times are
shifted to start at 0. Assumptions, per format:

- ``ns3``: an ns-3 ``TraceFadingLossModel`` ASCII file (as written by the LENA
  ``fading-trace-generator`` script): one row per resource block, one column per sample
  (1 ms apart by default), whitespace or comma separated, values are the fading gain in dB
  (``10 log10 |h|²``, positive = constructive). A device's wideband gain is the power average
  over resource blocks, ``10 log10 mean_rb 10^(v/10)``, minus an optional constant path loss.
  ns-3 loops these traces, so the end policy is ``loop``. Output: ``gain_db``.
- ``mahimahi``: a Mahimahi packet-delivery trace: one integer millisecond timestamp per line,
  each line one delivery opportunity of ``packet_bytes`` (1500) bytes; repeated timestamps are
  several opportunities. Throughput is counted over consecutive windows of ``window_ms``
  (``bits in window / window``); empty windows are zero (a stall). The trace's period is the
  last timestamp rounded up to a whole window; Mahimahi loops traces, so ``loop``.
  Output: ``throughput_mbps`` at the stated reference bandwidth.
- ``pensieve``: Pensieve / Norway HSDPA / FCC style text, ``time_s throughput_mbps`` per line
  (whitespace separated). Each value holds until the next line's time; the last value for the
  median step. One device per input file, named after the file. Output: ``throughput_mbps``.
- ``5gophers``: the 5Gophers v1.0 CSVs (one row per second, ``seq_num`` in seconds).
  ``01-Throughput_data.csv`` gives one device per (carrier, connections, server location, run),
  named ``CARRIER-Nconn-LOCATION-runR``; ``03-User-Mobility_walking-trace.csv`` one device
  ``walking``; the driving traces one device per ``<Carrier>_throughput_mbps`` column. A missing
  second holds the previous value. Output: ``throughput_mbps``.

Throughputs become an effective SNR only at replay (DESIGN §2), using the reference bandwidth
recorded with the trace (``--ref-bandwidth-hz``; defaults per format are in
:data:`DEFAULT_REF_BANDWIDTH_HZ` and must be stated by the user when known).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from desim.errors import TraceError, warn
from desim.world.traces import TraceMeta, tidy_frame

FORMATS = ("ns3", "mahimahi", "pensieve", "5gophers", "tidy")
LENGTH_TOLERANCE = 0.1
"""Inputs whose lengths differ by more than this fraction of the longest one get a warning."""
MAX_LISTED = 30  # devices named in that warning
# assumed bandwidth of each format's measurements when the user states none (README)
DEFAULT_REF_BANDWIDTH_HZ = {
    "mahimahi": 20e6,  # an LTE 20 MHz carrier
    "pensieve": 5e6,  # a 3G/HSDPA (WCDMA) carrier
    "5gophers": 100e6,  # one 5G NR carrier (aggregated mmWave carriers reach 400 MHz)
}


@dataclass(frozen=True)
class ImportOptions:
    """Options of ``desim traces convert``.

    Attributes:
        ref_bandwidth_hz: bandwidth the throughput was measured over (``None``: the format's
            default in :data:`DEFAULT_REF_BANDWIDTH_HZ`).
        window_ms: Mahimahi counting window.
        packet_bytes: Mahimahi bytes per delivery opportunity.
        sample_ms: ns-3 sample interval.
        path_loss_db: constant path loss subtracted from ns-3 fading gains.
        source: provenance text stored in the metadata (default: the input names).
        licence: licence text stored in the metadata.
        command: the command that regenerates the output, stored in the metadata.
    """

    ref_bandwidth_hz: float | None = None
    window_ms: float = 100.0
    packet_bytes: int = 1500
    sample_ms: float = 1.0
    path_loss_db: float = 0.0
    source: str = ""
    licence: str = ""
    command: str = ""


@dataclass(frozen=True)
class RawText:
    """A text input: its name (file path) and its lines."""

    name: str
    lines: Sequence[str]


def _base(name: str) -> str:
    return re.split(r"[\\/]", name)[-1]


def _stem(name: str) -> str:
    base = _base(name)
    return base.rsplit(".", 1)[0] if "." in base else base


def _file_labels(files: Sequence[str], devices: Sequence[str]) -> list[str]:
    """One device per file: name each by its file (and the device, if named otherwise)."""
    return [
        _base(f) if _base(f) == d else f"{_base(f)} ({d})" for f, d in zip(files, devices)
    ]


def _meta(
    fmt: str,
    opts: ImportOptions,
    names: Sequence[str],
    devices: Sequence[str],
    lengths_s: Sequence[float],
    labels: Sequence[str],
) -> TraceMeta:
    """Metadata of a converted trace: every device keeps its own length (``loop``).

    Args:
        fmt: the input format.
        opts: conversion options.
        names: the input file names.
        devices: device names ``(M,)``.
        lengths_s: each device's own length ``(M,)`` in seconds.
        labels: the input file (and device) each one came from ``(M,)``, for the warning.
    """
    src = opts.source or f"converted from {fmt}: " + ", ".join(_stem(n) for n in names)
    lengths = [float(x) for x in lengths_s]
    longest = max(lengths)
    if longest - min(lengths) > LENGTH_TOLERANCE * longest:
        shown = [f"{label} {length:g} s" for label, length in zip(labels, lengths)]
        more = len(shown) - MAX_LISTED
        warn(
            f"traces convert --from {fmt}: the inputs differ in length by more than "
            f"{LENGTH_TOLERANCE:.0%} ({min(lengths):g} s to {longest:g} s); each device loops on "
            "its own length: " + ", ".join(shown[:MAX_LISTED]) + (f" and {more} more" if more > 0
                                                                  else "")
        )
    same = all(length == longest for length in lengths)
    return TraceMeta(
        end_policy="loop",
        duration_s=longest,
        device_duration_s=None if same else dict(zip(devices, lengths)),
        source=src,
        licence=opts.licence,
        command=opts.command,
        kind="channel",
    )


def _ref_bw(fmt: str, opts: ImportOptions) -> float:
    return opts.ref_bandwidth_hz or DEFAULT_REF_BANDWIDTH_HZ[fmt]


def _data_lines(raw: RawText) -> list[tuple[int, str]]:
    out = []
    for i, line in enumerate(raw.lines, start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((i, s))
    if not out:
        raise TraceError(f"{raw.name}: empty trace: no data lines")
    return out


def _number(raw: RawText, lineno: int, token: str, what: str) -> float:
    try:
        v = float(token)
    except ValueError:
        raise TraceError(f"{raw.name} line {lineno}: {what} {token!r} is not a number") from None
    if not np.isfinite(v):
        raise TraceError(f"{raw.name} line {lineno}: {what} is {token}, expected a finite number")
    return v


def import_ns3(inputs: Sequence[RawText], opts: ImportOptions) -> tuple[pd.DataFrame, TraceMeta]:
    """ns-3 ``TraceFadingLossModel`` fading traces: one device per file (see module notes)."""
    names, times, gains = [], [], []
    for raw in inputs:
        rows = []
        width = None
        for lineno, text in _data_lines(raw):
            tokens = [t for t in re.split(r"[\s,]+", text) if t]
            vals = [_number(raw, lineno, t, "fading value") for t in tokens]
            if width is not None and len(vals) != width:
                raise TraceError(
                    f"{raw.name} line {lineno}: {len(vals)} samples, expected {width} "
                    "(every resource block row has the same number of samples)"
                )
            width = len(vals)
            rows.append(vals)
        db = np.array(rows)  # (resource blocks, samples)
        wide = 10.0 * np.log10(np.mean(10.0 ** (db / 10.0), axis=0)) - opts.path_loss_db
        names.append(_stem(raw.name))
        times.append(np.arange(wide.size) * opts.sample_ms / 1e3)
        gains.append(wide)
    lengths = [t.size * opts.sample_ms / 1e3 for t in times]
    frame = tidy_frame(names, times, {"gain_db": gains})
    files = [r.name for r in inputs]
    return frame, _meta("ns3", opts, files, names, lengths, _file_labels(files, names))


def import_mahimahi(
    inputs: Sequence[RawText], opts: ImportOptions
) -> tuple[pd.DataFrame, TraceMeta]:
    """Mahimahi delivery-opportunity traces to windowed throughput (see module notes)."""
    if opts.window_ms <= 0:
        raise TraceError(f"--window-ms must be > 0, got {opts.window_ms}")
    names, times, rates = [], [], []
    lengths: list[float] = []
    for raw in inputs:
        stamps = []
        prev = -np.inf
        for lineno, text in _data_lines(raw):
            v = _number(raw, lineno, text.split()[0], "timestamp")
            if v < 0:
                raise TraceError(f"{raw.name} line {lineno}: negative timestamp {text!r}")
            if v < prev:
                raise TraceError(
                    f"{raw.name} line {lineno}: timestamp {v:g} ms is before the previous "
                    f"{prev:g} ms (timestamps must not decrease)"
                )
            prev = v
            stamps.append(v)
        ms = np.array(stamps)
        windows = max(1, int(np.ceil(ms[-1] / opts.window_ms - 1e-9)))
        idx = np.minimum((ms // opts.window_ms).astype(int), windows - 1)
        counts = np.bincount(idx, minlength=windows)
        bits = counts * opts.packet_bytes * 8.0
        names.append(_stem(raw.name))
        times.append(np.arange(windows) * opts.window_ms / 1e3)
        rates.append(bits / (opts.window_ms / 1e3) / 1e6)
        lengths.append(windows * opts.window_ms / 1e3)
    bw = _ref_bw("mahimahi", opts)
    cols = {"throughput_mbps": rates, "ref_bandwidth_hz": [np.full(t.size, bw) for t in times]}
    frame = tidy_frame(names, times, cols)
    files = [r.name for r in inputs]
    return frame, _meta("mahimahi", opts, files, names, lengths, _file_labels(files, names))


def import_pensieve(
    inputs: Sequence[RawText], opts: ImportOptions
) -> tuple[pd.DataFrame, TraceMeta]:
    """``time_s throughput_mbps`` text files, one device per file (see module notes)."""
    names, times, rates = [], [], []
    lengths: list[float] = []
    for raw in inputs:
        t_list: list[float] = []
        r_list: list[float] = []
        for lineno, text in _data_lines(raw):
            tokens = text.split()
            if len(tokens) < 2:
                raise TraceError(
                    f"{raw.name} line {lineno}: expected 'time_s throughput_mbps', got {text!r}"
                )
            t = _number(raw, lineno, tokens[0], "time")
            r = _number(raw, lineno, tokens[1], "throughput")
            if t_list and t <= t_list[-1]:
                raise TraceError(
                    f"{raw.name} line {lineno}: time {t:g} s is not after the previous "
                    f"{t_list[-1]:g} s (times must increase)"
                )
            if r < 0:
                raise TraceError(f"{raw.name} line {lineno}: negative throughput {r:g} Mbit/s")
            t_list.append(t)
            r_list.append(r)
        t_arr = np.array(t_list) - t_list[0]
        step = float(np.median(np.diff(t_arr))) if t_arr.size > 1 else 1.0
        lengths.append(float(t_arr[-1]) + step)
        names.append(_stem(raw.name))
        times.append(t_arr)
        rates.append(np.array(r_list))
    bw = _ref_bw("pensieve", opts)
    cols = {"throughput_mbps": rates, "ref_bandwidth_hz": [np.full(t.size, bw) for t in times]}
    frame = tidy_frame(names, times, cols)
    files = [r.name for r in inputs]
    return frame, _meta("pensieve", opts, files, names, lengths, _file_labels(files, names))


def _gophers_series(
    name: str, seq: np.ndarray, rate: np.ndarray, lines: np.ndarray, label: str
) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(seq, kind="stable")
    s, r, ln = seq[order], rate[order], lines[order]
    dup = np.flatnonzero(np.diff(s) <= 0)
    if dup.size:
        raise TraceError(
            f"{name} line {int(ln[dup[0] + 1])}: seq_num {s[dup[0] + 1]:g} repeats for {label}"
        )
    bad = np.flatnonzero(~np.isfinite(r))
    if bad.size:
        raise TraceError(f"{name} line {int(ln[bad[0]])}: throughput is NaN for {label}")
    neg = np.flatnonzero(r < 0)
    if neg.size:
        raise TraceError(f"{name} line {int(ln[neg[0]])}: negative throughput for {label}")
    return s - s[0], r


def import_5gophers(
    tables: Sequence[tuple[str, pd.DataFrame]], opts: ImportOptions
) -> tuple[pd.DataFrame, TraceMeta]:
    """5Gophers v1.0 throughput and mobility CSVs (see module notes).

    Args:
        tables: ``(file name, parsed CSV)`` pairs; data row ``i`` is file line ``i + 2``.
        opts: conversion options.
    """
    names: list[str] = []
    times: list[np.ndarray] = []
    rates: list[np.ndarray] = []
    labels: list[str] = []
    for fname, df in tables:
        if df.empty:
            raise TraceError(f"{fname}: empty trace: no data rows")
        cols = list(df.columns)
        lines = np.arange(len(df)) + 2
        if "seq_num" not in cols:
            raise TraceError(f"{fname}: not a 5Gophers CSV (no seq_num column); got {cols}")
        seq = pd.to_numeric(df["seq_num"], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(seq))
        if bad.size:
            raise TraceError(f"{fname} line {int(lines[bad[0]])}: seq_num is not a number")
        wide = [c for c in cols if c.endswith("_throughput_mbps")]
        if "carrier" in cols and "throughput_mbps" in cols:
            keys = ["carrier", "num_tcp_conn", "server_location", "run_num"]
            missing = [k for k in keys if k not in cols]
            if missing:
                raise TraceError(f"{fname}: missing column(s) {', '.join(missing)}")
            rate = pd.to_numeric(df["throughput_mbps"], errors="coerce").to_numpy(dtype=float)
            for key, idx in df.groupby(keys, sort=False).indices.items():
                carrier, conn, loc, run = key
                label = f"{carrier}-{conn}conn-{loc}-run{run}"
                t, r = _gophers_series(fname, seq[idx], rate[idx], lines[idx], label)
                names.append(label)
                labels.append(f"{_base(fname)} ({label})")
                times.append(t)
                rates.append(r)
        elif "throughput_mbps" in cols:
            rate = pd.to_numeric(df["throughput_mbps"], errors="coerce").to_numpy(dtype=float)
            label = _stem(fname).removeprefix("03-User-Mobility_").removesuffix("-trace")
            t, r = _gophers_series(fname, seq, rate, lines, label)
            names.append(label)
            labels.append(_base(fname))
            times.append(t)
            rates.append(r)
        elif wide:
            stem = _stem(fname).removeprefix("03-User-Mobility_")
            for c in wide:
                rate = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
                label = f"{stem}-{c.removesuffix('_throughput_mbps')}"
                t, r = _gophers_series(fname, seq, rate, lines, label)
                names.append(label)
                labels.append(f"{_base(fname)} ({label})")
                times.append(t)
                rates.append(r)
        else:
            raise TraceError(
                f"{fname}: not a 5Gophers throughput CSV (no throughput_mbps or "
                f"<Carrier>_throughput_mbps columns); got {cols}"
            )
    if len(set(names)) != len(names):
        raise TraceError("5gophers: two inputs give the same device name; convert them separately")
    bw = _ref_bw("5gophers", opts)
    cols_out = {"throughput_mbps": rates, "ref_bandwidth_hz": [np.full(t.size, bw) for t in times]}
    lengths = [float(t[-1]) + 1.0 for t in times]  # one row per second
    frame = tidy_frame(names, times, cols_out)
    return frame, _meta("5gophers", opts, [n for n, _ in tables], names, lengths, labels)


TextImporter = Callable[[Sequence[RawText], ImportOptions], tuple[pd.DataFrame, TraceMeta]]
TEXT_IMPORTERS: dict[str, TextImporter] = {
    "ns3": import_ns3,
    "mahimahi": import_mahimahi,
    "pensieve": import_pensieve,
}
