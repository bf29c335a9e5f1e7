"""What every trace importer shares: options, raw inputs, parsing and the converted result.

The importers themselves, one per foreign format, are registered in
:data:`desim.world.importers.TRACE_FORMATS`. An importer reads no file (:mod:`desim.io.traces`
does); it gets the inputs' content and names, and returns a tidy table plus the metadata built by
:func:`converted`, in which every device keeps its own length and loops on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from desim.errors import TraceError, warn
from desim.world.traces import TraceMeta

if TYPE_CHECKING:
    import pandas as pd

LENGTH_TOLERANCE = 0.1
"""Inputs whose lengths differ by more than this fraction of the longest one get a warning."""
MAX_LISTED = 30  # devices named in that warning


@dataclass(frozen=True)
class ImportOptions:
    """Options of ``desim traces convert``.

    Attributes:
        ref_bandwidth_hz: bandwidth the throughput was measured over (``None``: the format's
            default, :data:`desim.world.importers.DEFAULT_REF_BANDWIDTH_HZ`).
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


def base_name(name: str) -> str:
    """The file name of a path, with either separator."""
    return re.split(r"[\\/]", name)[-1]


def file_stem(name: str) -> str:
    """The file name of a path without its last suffix."""
    base = base_name(name)
    return base.rsplit(".", 1)[0] if "." in base else base


def file_labels(files: Sequence[str], devices: Sequence[str]) -> list[str]:
    """One device per file: name each by its file (and the device, if named otherwise)."""
    return [
        base_name(f) if base_name(f) == d else f"{base_name(f)} ({d})"
        for f, d in zip(files, devices)
    ]


def data_lines(raw: RawText) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of every line that is not blank or a ``#`` comment.

    Raises:
        TraceError: when there is no such line.
    """
    out = []
    for i, line in enumerate(raw.lines, start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            out.append((i, s))
    if not out:
        raise TraceError(f"{raw.name}: empty trace: no data lines")
    return out


def parse_number(raw: RawText, lineno: int, token: str, what: str) -> float:
    """A finite number read from ``token``; the error names the file, line and ``what``."""
    try:
        v = float(token)
    except ValueError:
        raise TraceError(f"{raw.name} line {lineno}: {what} {token!r} is not a number") from None
    if not np.isfinite(v):
        raise TraceError(f"{raw.name} line {lineno}: {what} is {token}, expected a finite number")
    return v


def converted(
    fmt: str,
    opts: ImportOptions,
    files: Sequence[str],
    devices: Sequence[str],
    times_s: Sequence[np.ndarray],
    columns: Mapping[str, Sequence[np.ndarray]],
    lengths_s: Sequence[float],
    labels: Sequence[str],
) -> tuple[pd.DataFrame, TraceMeta]:
    """The tidy table and metadata of a converted trace: every device keeps its own length.

    Args:
        fmt: the input format.
        opts: conversion options.
        files: the input file names.
        devices: device names ``(M,)``.
        times_s: each device's sample times.
        columns: value column name to each device's values.
        lengths_s: each device's own length ``(M,)`` in seconds (it loops on it).
        labels: the input file (and device) each one came from ``(M,)``, for the warning that
            the lengths differ.
    """
    # pandas loads with the first conversion, not with the format registry
    from desim.world.tidy import tidy_frame

    frame = tidy_frame(list(devices), list(times_s), {k: list(v) for k, v in columns.items()})
    src = opts.source or f"converted from {fmt}: " + ", ".join(file_stem(n) for n in files)
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
    meta = TraceMeta(
        end_policy="loop",
        duration_s=longest,
        device_duration_s=None if same else dict(zip(devices, lengths)),
        source=src,
        licence=opts.licence,
        command=opts.command,
        kind="channel",
    )
    return frame, meta
