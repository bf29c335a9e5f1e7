"""Importers: foreign channel-trace formats to the tidy format (``desim traces convert``).

Every format is registered in :data:`TRACE_FORMATS` by the :func:`trace_format` decorator on its
importer, which names what the importer reads: ``text`` lines, a parsed ``csv`` table or a
validated ``tidy`` trace, each with the file name for messages (:mod:`desim.io.traces` does the
reading). An importer returns a tidy table plus metadata
(:func:`desim.world.trace_import.converted`). Times are shifted to start at 0. Assumptions, per
format:

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
- ``tidy``: a tidy trace (``.csv`` or ``.parquet``), rewritten as it is with its own metadata.

Throughputs become an effective SNR only at replay (DESIGN §2), using the reference bandwidth
recorded with the trace (``--ref-bandwidth-hz``; defaults per format are in
:data:`DEFAULT_REF_BANDWIDTH_HZ` and must be stated by the user when known).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from desim.errors import TraceError
from desim.registry import Registry
from desim.world.trace_import import (
    ImportOptions,
    RawText,
    base_name,
    converted,
    data_lines,
    file_labels,
    file_stem,
    parse_number,
)
from desim.world.traces import TraceMeta

if TYPE_CHECKING:
    import pandas as pd

# assumed bandwidth of each format's measurements when the user states none (README)
DEFAULT_REF_BANDWIDTH_HZ = {
    "mahimahi": 20e6,  # an LTE 20 MHz carrier
    "pensieve": 5e6,  # a 3G/HSDPA (WCDMA) carrier
    "5gophers": 100e6,  # one 5G NR carrier (aggregated mmWave carriers reach 400 MHz)
}
Importer = Callable[[Sequence[Any], ImportOptions], "tuple[pd.DataFrame, TraceMeta]"]
"""``(inputs, options) -> (tidy table, metadata)``; the inputs are what the format reads."""
F = TypeVar("F", bound=Importer)


@dataclass(frozen=True)
class TraceFormat:
    """A registered trace format: its importer and what it reads.

    Attributes:
        convert: the importer.
        reads: what :func:`desim.io.traces.convert_trace` hands it per input file: ``text`` (a
            :class:`~desim.world.trace_import.RawText`), ``csv`` (``(file name, parsed
            table)``) or ``tidy`` (``(file name, table, TraceMeta)`` of a validated tidy trace).
        max_inputs: the most input files it takes (``None``: any number).
    """

    convert: Importer
    reads: Literal["text", "csv", "tidy"]
    max_inputs: int | None = None


TRACE_FORMATS: Registry[TraceFormat] = Registry("trace format")
"""Every format of ``desim traces convert --from``, in the order the help lists them."""


def trace_format(
    name: str,
    description: str,
    reads: Literal["text", "csv", "tidy"],
    max_inputs: int | None = None,
) -> Callable[[F], F]:
    """Decorator registering an importer in :data:`TRACE_FORMATS` under ``name``.

    Args:
        name: the format's name (``--from NAME``).
        description: one line for listings and the docs.
        reads: what the importer takes per input file (see :class:`TraceFormat`).
        max_inputs: the most input files it takes (``None``: any number).
    """

    def deco(fn: F) -> F:
        TRACE_FORMATS.register(name, description)(TraceFormat(fn, reads, max_inputs))
        return fn

    return deco


def _ref_bw(fmt: str, opts: ImportOptions) -> float:
    return opts.ref_bandwidth_hz or DEFAULT_REF_BANDWIDTH_HZ[fmt]


@trace_format("ns3", "ns-3 TraceFadingLossModel fading traces (gain_db), one device per file",
              "text")
def import_ns3(inputs: Sequence[RawText], opts: ImportOptions) -> tuple[pd.DataFrame, TraceMeta]:
    """ns-3 ``TraceFadingLossModel`` fading traces: one device per file (see module notes)."""
    names, times, gains = [], [], []
    for raw in inputs:
        rows = []
        width = None
        for lineno, text in data_lines(raw):
            tokens = [t for t in re.split(r"[\s,]+", text) if t]
            vals = [parse_number(raw, lineno, t, "fading value") for t in tokens]
            if width is not None and len(vals) != width:
                raise TraceError(
                    f"{raw.name} line {lineno}: {len(vals)} samples, expected {width} "
                    "(every resource block row has the same number of samples)"
                )
            width = len(vals)
            rows.append(vals)
        db = np.array(rows)  # (resource blocks, samples)
        wide = 10.0 * np.log10(np.mean(10.0 ** (db / 10.0), axis=0)) - opts.path_loss_db
        names.append(file_stem(raw.name))
        times.append(np.arange(wide.size) * opts.sample_ms / 1e3)
        gains.append(wide)
    lengths = [t.size * opts.sample_ms / 1e3 for t in times]
    files = [r.name for r in inputs]
    return converted("ns3", opts, files, names, times, {"gain_db": gains}, lengths,
                     file_labels(files, names))


@trace_format("mahimahi", "Mahimahi packet-delivery traces, counted as windowed throughput",
              "text")
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
        for lineno, text in data_lines(raw):
            v = parse_number(raw, lineno, text.split()[0], "timestamp")
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
        names.append(file_stem(raw.name))
        times.append(np.arange(windows) * opts.window_ms / 1e3)
        rates.append(bits / (opts.window_ms / 1e3) / 1e6)
        lengths.append(windows * opts.window_ms / 1e3)
    bw = _ref_bw("mahimahi", opts)
    cols = {"throughput_mbps": rates, "ref_bandwidth_hz": [np.full(t.size, bw) for t in times]}
    files = [r.name for r in inputs]
    return converted("mahimahi", opts, files, names, times, cols, lengths,
                     file_labels(files, names))


@trace_format("pensieve", "`time_s throughput_mbps` text (Pensieve, Norway HSDPA, FCC)", "text")
def import_pensieve(
    inputs: Sequence[RawText], opts: ImportOptions
) -> tuple[pd.DataFrame, TraceMeta]:
    """``time_s throughput_mbps`` text files, one device per file (see module notes)."""
    names, times, rates = [], [], []
    lengths: list[float] = []
    for raw in inputs:
        t_list: list[float] = []
        r_list: list[float] = []
        for lineno, text in data_lines(raw):
            tokens = text.split()
            if len(tokens) < 2:
                raise TraceError(
                    f"{raw.name} line {lineno}: expected 'time_s throughput_mbps', got {text!r}"
                )
            t = parse_number(raw, lineno, tokens[0], "time")
            r = parse_number(raw, lineno, tokens[1], "throughput")
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
        names.append(file_stem(raw.name))
        times.append(t_arr)
        rates.append(np.array(r_list))
    bw = _ref_bw("pensieve", opts)
    cols = {"throughput_mbps": rates, "ref_bandwidth_hz": [np.full(t.size, bw) for t in times]}
    files = [r.name for r in inputs]
    return converted("pensieve", opts, files, names, times, cols, lengths,
                     file_labels(files, names))


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


@trace_format("5gophers", "5Gophers v1.0 throughput and mobility CSVs", "csv")
def import_5gophers(
    tables: Sequence[tuple[str, pd.DataFrame]], opts: ImportOptions
) -> tuple[pd.DataFrame, TraceMeta]:
    """5Gophers v1.0 throughput and mobility CSVs (see module notes).

    Args:
        tables: ``(file name, parsed CSV)`` pairs; data row ``i`` is file line ``i + 2``.
        opts: conversion options.
    """
    series = [s for fname, df in tables for s in _gophers_table(fname, df)]
    names = [label for label, _, _, _ in series]
    if len(set(names)) != len(names):
        raise TraceError("5gophers: two inputs give the same device name; convert them separately")
    times = [t for _, _, t, _ in series]
    bw = _ref_bw("5gophers", opts)
    cols = {"throughput_mbps": [r for _, _, _, r in series],
            "ref_bandwidth_hz": [np.full(t.size, bw) for t in times]}
    lengths = [float(t[-1]) + 1.0 for t in times]  # one row per second
    return converted("5gophers", opts, [n for n, _ in tables], names, times, cols, lengths,
                     [where for _, where, _, _ in series])


def _gophers_table(
    fname: str, df: pd.DataFrame
) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(device, file label, times_s, throughput_mbps)`` of every device one CSV holds."""
    import pandas as pd  # with the first conversion, not with the format registry

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

    def rate_of(column: str) -> np.ndarray:
        return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)

    out = []
    wide = [c for c in cols if c.endswith("_throughput_mbps")]
    if "carrier" in cols and "throughput_mbps" in cols:
        keys = ["carrier", "num_tcp_conn", "server_location", "run_num"]
        missing = [k for k in keys if k not in cols]
        if missing:
            raise TraceError(f"{fname}: missing column(s) {', '.join(missing)}")
        rate = rate_of("throughput_mbps")
        for key, idx in df.groupby(keys, sort=False).indices.items():
            carrier, conn, loc, run = key
            label = f"{carrier}-{conn}conn-{loc}-run{run}"
            t, r = _gophers_series(fname, seq[idx], rate[idx], lines[idx], label)
            out.append((label, f"{base_name(fname)} ({label})", t, r))
    elif "throughput_mbps" in cols:
        label = file_stem(fname).removeprefix("03-User-Mobility_").removesuffix("-trace")
        t, r = _gophers_series(fname, seq, rate_of("throughput_mbps"), lines, label)
        out.append((label, base_name(fname), t, r))
    elif wide:
        stem = file_stem(fname).removeprefix("03-User-Mobility_")
        for c in wide:
            label = f"{stem}-{c.removesuffix('_throughput_mbps')}"
            t, r = _gophers_series(fname, seq, rate_of(c), lines, label)
            out.append((label, f"{base_name(fname)} ({label})", t, r))
    else:
        raise TraceError(
            f"{fname}: not a 5Gophers throughput CSV (no throughput_mbps or "
            f"<Carrier>_throughput_mbps columns); got {cols}"
        )
    return out


@trace_format("tidy", "a tidy trace (.csv or .parquet), rewritten with its own metadata",
              "tidy", max_inputs=1)
def import_tidy(
    inputs: Sequence[tuple[str, pd.DataFrame, TraceMeta]], opts: ImportOptions
) -> tuple[pd.DataFrame, TraceMeta]:
    """A validated tidy trace as it is: its rows and its own metadata (``opts`` is unused)."""
    _, frame, meta = inputs[0]
    return frame, meta
