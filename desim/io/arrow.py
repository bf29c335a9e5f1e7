"""Parquet bytes of a result table, as pandas writes them, without pandas' per-call setup.

``DataFrame.to_parquet(path, index=False)`` converts the frame with
``pyarrow.Table.from_pandas`` (which derives the schema and its pandas metadata column by
column) and writes it with ``pyarrow.parquet.write_table``. The schema depends only on the
column names, their dtypes and the column index, so :func:`arrow_table` derives it once per
layout and converts each column as ``from_pandas`` does; :func:`parquet_bytes` writes to memory
(the caller writes the file atomically). Frames whose metadata could depend on their values
(object, categorical or datetime columns, ``attrs``) take ``from_pandas`` itself.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: schemas (pandas metadata included) by column index dtype and name, column names and dtypes
_SCHEMAS: dict[tuple[Hashable, ...], pa.Schema] = {}


def _layout(frame: pd.DataFrame, columns: list[pd.Series]) -> tuple[Hashable, ...] | None:
    """The key of ``frame``'s schema, or ``None`` when its metadata may depend on values."""
    dtypes = [c.dtype for c in columns]
    if frame.attrs or not frame.columns.is_unique or not all(
        isinstance(d, pd.StringDtype) or (isinstance(d, np.dtype) and d.kind in "biuf")
        for d in dtypes
    ):
        return None
    return (str(frame.columns.dtype), frame.columns.name, tuple(frame.columns),
            tuple(str(d) for d in dtypes), tuple(getattr(d, "storage", "") for d in dtypes))


def _array(column: pd.Series, type_: pa.DataType) -> pa.Array:
    """The column as ``from_pandas`` converts it (``NaN`` to null); numbers straight from numpy."""
    values = column.array
    if isinstance(values, pd.arrays.NumpyExtensionArray):
        return pa.array(values.to_numpy(), type=type_, from_pandas=True)
    return pa.array(column, type=type_, from_pandas=True)


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """``pyarrow.Table.from_pandas(frame, preserve_index=False)``, its schema reused by layout."""
    columns = [column for _, column in frame.items()]
    key = _layout(frame, columns)
    schema = None if key is None else _SCHEMAS.get(key)
    if schema is None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if key is not None:
            _SCHEMAS[key] = table.schema
        return table
    arrays = [_array(c, f.type) for c, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """The Parquet file ``frame.to_parquet(path, index=False)`` writes (snappy), in memory."""
    sink = pa.BufferOutputStream()
    pq.write_table(arrow_table(frame), sink, compression="snappy")
    return bytes(sink.getvalue())
