"""Typed, projected reading of large tidy trace files with pyarrow (no pandas, no strings).

A tidy trace of 10⁷ rows read as text by pandas holds every cell as a Python string: gigabytes
for a few hundred megabytes of file. This reader asks pyarrow for the trace's columns only
(``device``, ``time_s`` and the value columns a trace may use; any other column is never read),
with their types: ``device`` dictionary-encoded (an ``int32`` code per row and one string per
device), numbers as ``float64``. It returns those columns, or ``None`` for any file it does not
read cleanly (a missing column, a null, a non-finite or non-numeric cell, a ragged row, odd
bytes): :mod:`desim.io.traces` then reads that file as text, which finds the problem and names
its line, so a file gives the same trace or the same message whichever reader succeeds.
Values are never narrowed to ``float32``: replay must give the same numbers for either reader.
"""

from __future__ import annotations

import codecs
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from desim.world.tidy import RowNumbers
from desim.world.traces import CHANNEL_COLUMNS, COMPUTE_COLUMNS

NUMERIC = ("time_s", *CHANNEL_COLUMNS, "ref_bandwidth_hz", *COMPUTE_COLUMNS)
"""Every numeric column a tidy trace may use; the reader projects onto these and ``device``."""
_CHUNK_BYTES = 1 << 24
# characters str.splitlines() breaks on besides \n and \r: the text reader would see more lines
_ODD_BREAKS = (b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8",
               b"\xe2\x80\xa9")


@dataclass(frozen=True)
class TraceColumns:
    """The columns of a trace file, typed.

    Attributes:
        header: the file's column names, stripped, in file order.
        codes: device of every row ``(n,)``, an index into ``names``.
        names: the distinct device names as written (unstripped).
        numeric: column name to finite ``float64`` values ``(n,)`` (``time_s`` and the value
            columns present).
        meta: metadata from the CSV header comments (``{}`` for Parquet).
        lines: the line (CSV) or row (Parquet) number of every row.
        where: ``line`` or ``row``.
    """

    header: list[str]
    codes: np.ndarray
    names: list[str]
    numeric: dict[str, np.ndarray]
    meta: dict[str, Any]
    lines: RowNumbers
    where: str


def header_meta(lines: list[str]) -> tuple[dict[str, Any], int]:
    """Metadata from leading ``# key: value`` lines (values JSON or text), and their count."""
    meta: dict[str, Any] = {}
    count = 0
    for line in lines:
        if not line.startswith("#"):
            break
        count += 1
        key, sep, value = line[1:].partition(":")
        if sep and key.strip():
            raw = value.strip()
            try:
                meta[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                meta[key.strip()] = raw
    return meta, count


def read_columns(path: Path) -> TraceColumns | None:
    """The typed columns of a clean ``.parquet`` or ``.csv`` trace, else ``None``."""
    try:
        if path.suffix == ".parquet":
            return _parquet(path)
        return _csv(path)
    except Exception:  # noqa: BLE001 - any failure: the text reader gives the exact message
        return None


def _wanted(raw: list[str]) -> list[str] | None:
    """The raw names of the columns to read; ``None`` when the header needs the text reader."""
    stripped = [c.strip() for c in raw]
    if (len(set(stripped)) != len(stripped) or "" in stripped
            or "device" not in stripped or "time_s" not in stripped):
        return None
    return [r for r, c in zip(raw, stripped) if c == "device" or c in NUMERIC]


def _columns(table: Any, raw: list[str], meta: dict[str, Any], lines: RowNumbers,
             where: str) -> TraceColumns | None:
    """Typed numpy columns from a pyarrow table; ``None`` on a null or a non-finite number."""
    import pyarrow as pa

    if table.num_rows == 0:
        return None
    numeric: dict[str, np.ndarray] = {}
    codes: np.ndarray | None = None
    names: list[str] = []
    for name in table.column_names:
        col = table.column(name)
        if col.null_count:
            return None
        if name.strip() == "device":
            if not pa.types.is_dictionary(col.type) or not _stringy(col.type.value_type):
                return None
            col = col.unify_dictionaries()
            names = col.chunk(0).dictionary.to_pylist()
            codes = np.concatenate([c.indices.to_numpy() for c in col.chunks])
            continue
        if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
            return None
        values = col.to_numpy().astype(np.float64, copy=False)
        if not np.all(np.isfinite(values)):
            return None
        numeric[name.strip()] = values
    if codes is None or any(_odd_text(n) for n in names):
        return None
    return TraceColumns([c.strip() for c in raw], codes, names, numeric, meta, lines, where)


def _stringy(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _odd_text(name: str) -> bool:
    return any(b in name.encode() for b in _ODD_BREAKS)


def _parquet(path: Path) -> TraceColumns | None:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    pandas_meta = schema.pandas_metadata or {}
    index = {c for c in pandas_meta.get("index_columns", []) if isinstance(c, str)}
    raw = list(schema.names)
    wanted = _wanted(raw)
    if wanted is None or index & set(wanted):
        return None
    device = next(r for r in wanted if r.strip() == "device")
    table = pq.read_table(path, columns=wanted, read_dictionary=[device])
    kind = table.schema.field(device).type
    if _stringy(kind):  # not decoded as a dictionary: encode it as the CSV reader does
        table = table.set_column(table.column_names.index(device), device,
                                 table.column(device).dictionary_encode())
    return _columns(table, raw, {}, RowNumbers(1), "row")


def _csv(path: Path) -> TraceColumns | None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not _plain_utf8(path):
        return None
    comments: list[str] = []
    with open(path, encoding="utf-8", newline="") as fh:
        header = ""
        for line in fh:
            if not line.startswith("#"):
                header = line
                break
            comments.append(line.rstrip("\r\n"))
    meta, skip = header_meta(comments)
    if header.startswith("\ufeff") or not header.strip():
        return None
    raw = next(csv.reader([header]))
    wanted = _wanted(raw)
    if wanted is None:
        return None
    types = {r: (pa.dictionary(pa.int32(), pa.string()) if r.strip() == "device"
                 else pa.float64()) for r in wanted}
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(skip_rows=skip),
        parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types=types, include_columns=wanted,
                                             strings_can_be_null=False),
    )
    if table.column_names != wanted:
        return None
    return _columns(table, raw, meta, RowNumbers(skip + 2), "line")


def _plain_utf8(path: Path) -> bool:
    """Whether the file is UTF-8 without NUL or line breaks other than CR and LF.

    The text reader splits lines as :meth:`str.splitlines` does, on more characters than CSV.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_BYTES):
            piece = tail + chunk
            if any(b in piece for b in _ODD_BREAKS) or b"\x00" in chunk:
                return False
            decoder.decode(chunk)  # raises on bytes that are not UTF-8
            tail = chunk[-2:]
    decoder.decode(b"", final=True)
    return True
