"""Atomic writes: every file desim writes goes to a temporary name, then one ``os.replace``.

A reader never sees a half-written file, and an interrupted write leaves the old file (or none).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from desim.errors import InputError


def atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file and one ``os.replace``, with the user's umask applied.

    ``mkstemp`` creates its file 0600; the result gets the mode a plain ``open`` would give
    (0644 under umask 022).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; restore it at once
    os.umask(mask)
    return mask


def write_json(data: Mapping[str, Any], path: Path) -> Path:
    """Write JSON atomically (sorted keys, stable output)."""

    def write(p: str) -> None:
        with open(p, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")

    atomic_write(path, write)
    return path


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write one CSV atomically."""
    atomic_write(path, lambda p: frame.to_csv(p, index=False, float_format="%.17g"))
    return path


def write_report_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a report table (validation MAPE, rows, violations) as CSV atomically."""
    p = Path(path)
    if not p.parent.exists():
        raise InputError(f"{p}: directory {p.parent} does not exist")
    atomic_write(p, lambda t: frame.to_csv(t, index=False, float_format="%.9g"))
    return p
