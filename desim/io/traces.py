"""Trace files: read and write tidy channel and compute traces, convert foreign formats.

A tidy trace is a CSV (metadata in ``# key: value`` header comments) or a Parquet file (metadata
in a JSON sidecar). Reading turns every problem into a :class:`~desim.errors.TraceError` naming
the file and the line (CSV) or row (Parquet); :mod:`desim.world.traces` checks the values.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from desim.io.atomic import atomic_write, write_json
from desim.io.shipped import SHIPPED_PREFIX, data_file, shipped_traces
from desim.io.trace_columns import header_meta, read_columns


def resolve_trace_path(text: str) -> Path:
    """A trace path from a scenario: ``shipped:NAME`` names a file shipped in the package."""
    from desim.errors import TraceError

    if text.startswith(SHIPPED_PREFIX):
        name = text[len(SHIPPED_PREFIX) :]
        if name not in shipped_traces():
            raise TraceError(
                f"{text}: no such shipped trace; shipped: {', '.join(shipped_traces()) or 'none'}"
            )
        return data_file("traces", name)
    return Path(text)


def trace_sidecar(path: Path) -> Path:
    """The JSON metadata sidecar of a trace file: ``name.csv`` -> ``name.json``."""
    return path.with_suffix(".json")


def _read_text_lines(path: Path) -> list[str]:
    from desim.errors import TraceError

    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        raise TraceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, expected a trace file") from None
    except UnicodeDecodeError as exc:
        raise TraceError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror}") from None


#: parsed traces by (resolved path, content hash of the file and its sidecar), read-only
_TRACES: dict[tuple[str, bytes], Any] = {}
_CHUNK_BYTES = 1 << 24  # files are hashed and checked in 16 MiB pieces, never held whole


def read_trace(path: str | Path) -> Any:
    """Read and validate a tidy channel or compute trace (CSV or Parquet) with its metadata.

    Metadata comes from ``# key: value`` header comments (CSV) and the JSON sidecar
    (:func:`trace_sidecar`), the sidecar winning. A process parses each file once: the trace
    is cached by content hash, with read-only arrays (every run of a sweep worker shares it).
    Well-formed files are read by :mod:`pyarrow` into typed columns, only the columns a trace
    uses; any file it does not read cleanly is read again by the text reader, whose message
    names the line of the first problem.

    Returns:
        A :class:`desim.world.traces.Trace`.

    Raises:
        TraceError: naming the file and line (CSV) or row (Parquet) of the first problem.
    """
    p = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    try:
        _hash_file(p, digest)
        side = trace_sidecar(p)
        if side.exists():
            digest.update(b"\0sidecar\0")
            _hash_file(side, digest)
    except OSError:
        return _read_trace(p)  # the reader names what is wrong with the path
    key = (str(p.resolve()), digest.digest())
    trace = _TRACES.get(key)
    if trace is None:
        trace = _TRACES[key] = _read_trace(p)
        for values in (trace.row_start, trace.row_times_s, *trace.row_columns.values(),
                       trace.samples, trace.median_step_s, trace.device_end_s):
            values.flags.writeable = False
    return trace


def _hash_file(path: Path, digest: Any) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            digest.update(chunk)


def _read_trace(path: Path) -> Any:
    from desim.errors import TraceError
    from desim.world.tidy import trace_from_columns
    from desim.world.traces import TraceMeta

    path = Path(path)
    if path.suffix not in (".parquet", ".csv", ".txt", ""):
        raise TraceError(
            f"{path}: unknown trace format {path.suffix!r}; tidy traces are .csv or .parquet "
            "(convert others with `desim traces convert --from FORMAT`)"
        )
    fast = read_columns(path)
    if fast is None:  # not a clean file: the text reader finds and names the problem
        return _read_trace_frame(path)
    meta = {**fast.meta, **_sidecar_meta(path)}
    return trace_from_columns(
        str(path), fast.header, fast.codes, fast.names, fast.numeric["time_s"], fast.numeric,
        TraceMeta.from_mapping(meta, str(path)), fast.lines, fast.where,
    )


def _sidecar_meta(path: Path) -> dict[str, Any]:
    from desim.errors import TraceError

    side = trace_sidecar(path)
    if not side.exists():
        return {}
    try:
        loaded = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TraceError(f"{side}: cannot read trace metadata: {exc}") from None
    if not isinstance(loaded, dict):
        raise TraceError(f"{side}: trace metadata must be a JSON object")
    return loaded


def _read_trace_frame(path: Path) -> Any:
    """Read a trace through pandas, as text: slower, and exact about every bad line."""
    import io as _io

    import numpy as np

    from desim.errors import TraceError
    from desim.world.tidy import trace_from_frame
    from desim.world.traces import TraceMeta

    meta: dict[str, Any] = {}
    if path.suffix == ".parquet":
        if not path.exists():
            raise TraceError(f"{path}: file not found")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise TraceError(f"{path}: not a readable Parquet file ({exc})") from None
        lines, where = np.arange(1, len(frame) + 1), "row"
    else:
        text = _read_text_lines(path)
        meta, skip = header_meta(text)
        body = "\n".join(text[skip:])
        if not body.strip():
            raise TraceError(f"{path}: empty trace: no header or data rows")
        try:
            frame = pd.read_csv(
                _io.StringIO(body), dtype=str, skip_blank_lines=False, keep_default_na=False
            )
        except pd.errors.ParserError as exc:
            raise TraceError(f"{path}: malformed CSV: {exc}") from None
        lines, where = np.arange(len(frame)) + skip + 2, "line"
    meta.update(_sidecar_meta(path))
    return trace_from_frame(frame, str(path), TraceMeta.from_mapping(meta, str(path)), lines, where)


def write_trace(
    frame: pd.DataFrame, meta: Any, path: str | Path, float_format: str = "%.9g"
) -> Path:
    """Write a tidy trace atomically, with its metadata.

    CSV gets ``# key: value`` header comments; Parquet gets a JSON sidecar (:func:`trace_sidecar`).

    Args:
        frame: the tidy rows.
        meta: a :class:`desim.world.traces.TraceMeta`.
        path: ``.csv`` or ``.parquet`` target.
        float_format: number format for CSV values.
    """
    from desim.errors import TraceError

    path = Path(path)
    fields = meta.to_mapping()
    if path.parent and not path.parent.exists():
        raise TraceError(f"{path}: directory {path.parent} does not exist")
    if path.suffix == ".csv":

        def write(p: str) -> None:
            with open(p, "w", newline="") as fh:
                for key, value in fields.items():
                    fh.write(f"# {key}: {json.dumps(value)}\n")
                frame.to_csv(fh, index=False, float_format=float_format)

        atomic_write(path, write)
    elif path.suffix == ".parquet":
        atomic_write(path, lambda p: frame.to_parquet(p, index=False))
        write_json(fields, trace_sidecar(path))
        os.chmod(trace_sidecar(path), 0o644)
    else:
        raise TraceError(f"{path}: unknown output format {path.suffix!r}; use .csv or .parquet")
    os.chmod(path, 0o644)  # temporary files are private; a trace is meant to be shared
    return path


def convert_trace(fmt: str, inputs: Iterable[str | Path], out: str | Path, options: Any) -> Any:
    """Convert foreign trace files to one tidy trace (``desim traces convert``).

    Args:
        fmt: a registered format (:data:`desim.world.importers.TRACE_FORMATS`), which names
            what its importer reads: text lines, a parsed CSV table or a tidy trace.
        inputs: input files (one device or several per file, see :mod:`desim.world.importers`).
        out: output ``.csv`` or ``.parquet`` file.
        options: :class:`desim.world.trace_import.ImportOptions`.

    Returns:
        The validated :class:`desim.world.traces.Trace` as written (re-read from ``out``).

    Raises:
        UnknownNameError: for an unknown format, listing the registered ones.
        TraceError: naming the input file (and line) of the first problem.
    """
    from desim.errors import TraceError
    from desim.world.importers import TRACE_FORMATS
    from desim.world.trace_import import RawText

    paths = [Path(p) for p in inputs]
    if not paths:
        raise TraceError("traces convert: no input files")
    form = TRACE_FORMATS.get_obj(fmt)
    if form.max_inputs is not None and len(paths) > form.max_inputs:
        many = "one input file" if form.max_inputs == 1 else f"{form.max_inputs} input files"
        raise TraceError(f"traces convert --from {fmt} takes {many}")
    raw: list[Any] = []
    for p in paths:  # what the format's importer reads: text lines, a CSV table, a tidy trace
        if form.reads == "text":
            raw.append(RawText(str(p), _read_text_lines(p)))
        elif form.reads == "csv":
            _read_text_lines(p)  # uniform not-found / not-text errors
            try:
                raw.append((str(p), pd.read_csv(p)))
            except pd.errors.EmptyDataError:
                raise TraceError(f"{p}: empty trace: no header or data rows") from None
            except pd.errors.ParserError as exc:
                raise TraceError(f"{p}: malformed CSV: {exc}") from None
        else:
            trace = read_trace(p)
            if p.suffix == ".parquet":
                rows = pd.read_parquet(p)
            else:
                rows = pd.read_csv(p, skiprows=header_meta(_read_text_lines(p))[1])
            raw.append((str(p), rows, trace.meta))
    frame, meta = form.convert(raw, options)
    from desim.world.tidy import trace_from_frame

    trace_from_frame(frame, f"{fmt} input", meta)  # validate before writing anything
    write_trace(frame, meta, out)
    return read_trace(out)
