"""Re-calibrate a profile's speed on this host: ``desim profile --calibrate``.

A shipped profile's fitted **shape** (how time grows with depth, batch and length) carries over
between hosts of a kind; its **speed** belongs to the host and the hour it was measured on
(docs: Calibration, "Re-calibrating on your host"). Calibration measures a few points of one
table of the profile on this host, exactly as ``--validate`` does (same clock, repeats and
thread count), and fits the one scale that explains them best
(:func:`desim.profiling.report.scale_fit`). The result is a hardware class that borrows the
profile at that speed, written as a calibrated class file (:mod:`desim.io.hosts`) with the host
and the points it was measured at.

Defaults: two grid points of the table (:data:`CALIBRATION_POINTS`, the first two in its grid;
``8×128`` is the built-in scenario's) at blocks 1, N/2 and N. They are grid points on purpose:
``--validate`` then checks the calibrated class on the off-grid held-out points, which the
calibration never saw. One scale is fitted, not more: on the host measured, the speed
relative to the profile varied less across grid points measured together than the same point
did between runs minutes apart, so a second parameter would fit drift (docs: Calibration,
"Drift"). When more than :data:`SHAPE_WARN_PCT` is left after the scale, the command says that
one scale does not describe this host and that the table should be re-profiled there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from desim.errors import InputError
from desim.io.calibration import load_profile
from desim.io.hosts import CalibratedClass, cpu_id, read_class_file
from desim.profiling.report import ScaleFit, ValidationReport, scale_fit
from desim.profiling.runner import provenance
from desim.profiling.validation import validate_profile

#: grid points tried in order; the first two a table's grid has are measured
CALIBRATION_POINTS = ((8, 128), (1, 256), (4, 128), (4, 64), (1, 128), (8, 64), (1, 64), (2, 64))
#: shape error (%) above which one scale is said not to describe the host
SHAPE_WARN_PCT = 5.0


@dataclass(frozen=True)
class Calibration:
    """One calibration: the table measured, the fitted speed and the class that uses it.

    Attributes:
        model: the calibrated table's model.
        method: its method.
        fit: the scale, its interval and the absolute and shape errors.
        report: the measurements against the profile as it was (speed 1).
        calibrated: the class to write (:func:`desim.io.hosts.write_class_file`).
    """

    model: str
    method: str
    fit: ScaleFit
    report: ValidationReport
    calibrated: CalibratedClass


def calibration_points(grid: pd.DataFrame, count: int = 2) -> list[tuple[int, int]]:
    """The first ``count`` of :data:`CALIBRATION_POINTS` that are points of ``grid``."""
    have = set(zip(grid["batch_size"], grid["seq_len"], strict=True))
    return [p for p in CALIBRATION_POINTS if p in have][:count]


def calibration_blocks(num_blocks: int) -> tuple[int, ...]:
    """Blocks 1, N/2 and N (rounded down, without repeats)."""
    return tuple(sorted({1, max(1, num_blocks // 2), num_blocks}))


def calibrate(
    ref: str,
    model: str | None = None,
    method: str | None = None,
    points: Sequence[tuple[int, int]] | None = None,
    blocks: Sequence[int] | None = None,
    repeats: int = 3,
    threads: int | None = None,
    model_path: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """Measure one table of profile ``ref`` on this host and fit its speed here.

    Args:
        ref: a shipped hardware-class name, a profile CSV or folder, or a calibrated class
            file (then its profile is re-calibrated).
        model: the table's model (default: roberta-base if the profile has it, else the first).
        method: the table's method (default: lora if the model has it, else the first).
        points: ``(batch, seq_len)`` pairs (default :func:`calibration_points`).
        blocks: the depths to measure (default :func:`calibration_blocks`).
        repeats: timed repetitions per point.
        threads: torch threads (default: the table's).
        model_path: the model config, for a profile of a model that is not shipped.
        on_progress: callback ``(done, total)``.

    Raises:
        InputError: an unknown table, or no calibration point in the table's grid.
    """
    profile_ref = read_class_file(ref).profile if ref.endswith(".toml") else ref
    profile = load_profile(profile_ref)
    table = select_table(profile, model, method, str(ref))
    first = table.iloc[0]
    model, method = str(first["model"]), str(first["method"])
    grid = table[["batch_size", "seq_len"]].drop_duplicates()
    pts = list(points) if points else calibration_points(grid)
    if not pts:
        raise InputError(f"{ref}: {model} {method} has none of the calibration points "
                         f"{CALIBRATION_POINTS} in its grid; give --points")
    depths = tuple(blocks) if blocks else calibration_blocks(int(first["num_blocks"]))
    report = validate_profile(table, pts, repeats=repeats, model_path=model_path,
                              on_progress=on_progress, threads=threads, blocks=depths,
                              allow_grid_points=True)
    rows = report.rows
    fit = scale_fit(rows["predicted_compute_s"].to_numpy(), rows["measured_compute_s"].to_numpy())
    host = {**provenance(str(first["device"])), "cpu_id": cpu_id()}
    measured = {
        "model": model, "method": method,
        "points": [f"{b}x{s}" for b, s in pts], "blocks": list(depths), "repeats": repeats,
        "rows": fit.rows, "absolute_mape_pct": round(fit.absolute_mape_pct, 4),
        "shape_mape_pct": round(fit.shape_mape_pct, 4),
        "profile_measured": str(table["date"].max()),
        "profile_host": f"{first['device_name']}, {first['cores']} cores, "
                        f"{first['threads']} thread(s), torch {first['torch_version']}",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    stored = profile_ref if not Path(profile_ref).exists() else str(Path(profile_ref).resolve())
    cls = CalibratedClass(profile=stored, speed=fit.speed, speed_ci95=fit.speed_ci95,
                          host=host, measured=measured)
    return Calibration(model=model, method=method, fit=fit, report=report, calibrated=cls)


def select_table(profile: pd.DataFrame, model: str | None, method: str | None,
                 ref: str) -> pd.DataFrame:
    """The rows of one (hardware, model, method) table of ``profile``.

    Defaults: roberta-base if the profile has it (else its first model), lora if that model
    has it (else its first method).

    Raises:
        InputError: naming ``ref`` and what it has, for an unknown model or method or a table
            of several hardware classes.
    """
    models = sorted(set(profile["model"]))
    if model is None:
        model = "roberta-base" if "roberta-base" in models else models[0]
    rows = profile[profile["model"] == model]
    if rows.empty:
        raise InputError(f"{ref}: no rows of model {model!r}; it has: {', '.join(models)}")
    methods = sorted(set(rows["method"]))
    if method is None:
        method = "lora" if "lora" in methods else methods[0]
    rows = rows[rows["method"] == method]
    if rows.empty:
        raise InputError(f"{ref}: {model} has no rows of method {method!r}; it has: "
                         f"{', '.join(methods)}")
    hardware = sorted(set(rows["hardware"]))
    if len(hardware) > 1:
        raise InputError(f"{ref}: {model} {method} has rows of several hardware classes "
                         f"({', '.join(hardware)}); name one profile file")
    return rows.reset_index(drop=True)
