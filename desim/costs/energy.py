"""Energy and efficiency: a power model per hardware class and the columns it adds to results.

Every device of a hardware class draws ``compute_w`` while computing, ``transmit_w`` while
uploading, ``receive_w`` while downloading and ``idle_w`` for the rest of a round it takes part
in (waiting at a barrier or for the server). Devices that sit a round out are not charged.
Phases of one device never overlap (a device computes, then sends), so its energy in a round is

``E = compute_w·T_comp + transmit_w·T_up + receive_w·T_down + idle_w·(T_round − T_comp − T_up −
T_down)``.

Efficiency: tokens per second per watt is tokens per joule (``tokens / E``); model FLOP
utilisation ``MFU = counted training FLOPs / (time × peak)`` with peak = the class's nominal
peak × the device's speed factor (a device σ times faster than its class profile is assumed to
have σ times the peak). The per-row MFU uses the device's compute time, the per-round MFU the
round latency (so communication stalls count against it). Granularity ``G = T_comp / T_comm``.
Defaults and their sources are in the README ("Schemes, methods and energy"). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from desim.scenario.devices import DeviceSpec
from desim.scenario.model import HardwarePower

# Nominal figures; README "Schemes, methods and energy" gives the source of each number.
DEFAULT_POWER: dict[str, HardwarePower] = {
    # one fp32 core of the profiling CPU (AMD EPYC, family 26 = Zen 5, full-width AVX-512):
    # 2 FMA pipes x 16 fp32 lanes x 2 FLOP x 3 GHz (assumed clock); the profiled steps sustain
    # 6-9e10 FLOP/s on it. Watts: a phone-class SoC under sustained load; LTE radio powers
    # from Huang et al. (MobiSys 2012)
    "cpu-reference": HardwarePower(
        compute_w=5.0, transmit_w=2.5, receive_w=1.3, idle_w=1.0, peak_flops_per_s=1.92e11
    ),
    # Jetson AGX Orin 64GB in its 30 W mode; GPU fp32 peak 2048 CUDA cores x 2 x 1.3 GHz
    "jetson-agx-orin": HardwarePower(
        compute_w=30.0, transmit_w=2.5, receive_w=1.3, idle_w=5.0, peak_flops_per_s=5.3e12
    ),
}

POWER_COLUMNS = ("compute_w", "transmit_w", "receive_w", "idle_w", "peak_flops_per_s")


def device_power_table(
    devices: Sequence[DeviceSpec], power: Mapping[str, HardwarePower]
) -> pd.DataFrame:
    """One row per device name: its class's watts and its peak FLOP/s (× speed factor).

    Devices of a class without a power entry get ``NaN`` (their energy is then ``NaN``).
    """
    columns: dict[str, list[float]] = {c: [] for c in POWER_COLUMNS}
    for d in devices:
        p = power.get(d.hardware)
        vals = [np.nan] * 5 if p is None else [getattr(p, c) for c in POWER_COLUMNS]
        vals[4] *= d.speed_factor
        for c, v in zip(POWER_COLUMNS, vals, strict=True):
            columns[c].append(v)
    return pd.DataFrame(columns, index=pd.Index([d.name for d in devices], name="device"))


Columns = dict[str, np.ndarray]
"""A table as named ``(n,)`` columns (the result tables are built from them in one go)."""

DEVICE_ENERGY_COLUMNS = ("compute_energy_j", "upload_energy_j", "download_energy_j",
                         "idle_energy_j", "energy_j", "tokens_per_s_per_w", "mfu", "granularity")


def _groups(rounds: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``(round, label)`` group (dense codes) and whether it is the group's first."""
    codes = pd.factorize(labels)[0].astype(np.int64)
    key = rounds.astype(np.int64) * (int(codes.max(initial=0)) + 1) + codes
    _, index, group = np.unique(key, return_index=True, return_inverse=True)
    first = np.zeros(len(key), dtype=bool)
    first[index] = True
    return group, first


def first_rows(rounds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether each row is the first of its ``(round, label)``.

    ``labels``: the ``task`` column (a task's first row) or the ``device`` column (a device's).
    """
    return _groups(rounds, labels)[1]


def _lookup(table: pd.DataFrame, columns: Sequence[str], index: np.ndarray) -> Columns:
    """``table``'s ``columns`` at rows of the labels ``index`` (``NaN`` for a label it lacks)."""
    rows = table.index.get_indexer(index)
    return {c: np.append(table[c].to_numpy(float), np.nan)[rows] for c in columns}


def add_device_energy(columns: Columns, span_s: np.ndarray, power: pd.DataFrame) -> Columns:
    """Append energy and efficiency columns to the per-device-round table's columns.

    A task with several rows (a set of blocks trained in one pass) is charged once, on its
    first row; its other rows get zero energy, FLOPs, samples and tokens. A device that ran
    several tasks in a round (lost blocks re-planned onto it) is charged for each, and idles
    for the round's time none of its tasks was busy, charged on its first row.

    Args:
        columns: the per-device-round table (busy-time columns included), at least one row.
        span_s: each row's round latency (its round's end less its start).
        power: :func:`device_power_table`.

    Returns:
        A copy with ``compute_energy_j``, ``upload_energy_j``, ``download_energy_j``,
        ``idle_energy_j``, ``energy_j``, ``tokens_per_s_per_w``, ``mfu`` and ``granularity``.
    """
    t = dict(columns)
    one = first_rows(t["round"], t["task"])
    group, device_first = _groups(t["round"], t["device"])
    device = t["device"].astype(str)
    comp, up, down = (t[c].astype(float) for c in
                      ("compute_busy_s", "upload_busy_s", "download_busy_s"))
    # each device's busy seconds over its tasks (one task: its own, to the bit)
    busy = [np.bincount(group, weights=np.where(one, x, 0.0))[group] for x in (comp, up, down)]
    idle = np.maximum(span_s - busy[0] - busy[1] - busy[2], 0.0)
    w = _lookup(power, POWER_COLUMNS, device)
    t["compute_energy_j"] = np.where(one, w["compute_w"] * comp, 0.0)
    t["upload_energy_j"] = np.where(one, w["transmit_w"] * up, 0.0)
    t["download_energy_j"] = np.where(one, w["receive_w"] * down, 0.0)
    t["idle_energy_j"] = np.where(device_first, w["idle_w"] * idle, 0.0)
    t["energy_j"] = (t["compute_energy_j"] + t["upload_energy_j"] + t["download_energy_j"]
                     + t["idle_energy_j"])
    for c in ("flops", "samples", "tokens"):
        t[c] = np.where(one, t[c].astype(float), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t["tokens_per_s_per_w"] = np.where(one, t["tokens"] / t["energy_j"], np.nan)
        t["mfu"] = np.where(one & (comp > 0), t["flops"] / (comp * w["peak_flops_per_s"]), np.nan)
        t["granularity"] = np.where(one, comp / (up + down), np.nan)
    return t


def round_metrics(rounds: Columns, device_rounds: Columns, power: pd.DataFrame) -> Columns:
    """Append per-round sums and efficiencies to the rounds table's columns.

    Adds ``energy_j`` (sum over the round's devices), ``upload_bits``, ``download_bits``,
    ``samples``, ``tokens``, ``flops``, ``peak_device_memory_bytes``, ``tokens_per_s_per_w``
    (tokens ÷ energy), ``mfu`` (FLOPs ÷ (latency × Σ peak of the round's devices)) and
    ``granularity`` (Σ compute time ÷ Σ communication time). ``device_rounds`` carries
    :func:`add_device_energy`'s columns (or none of its rows). Sums are pandas' grouped sums.
    """
    out = dict(rounds)
    d = device_rounds
    first = first_rows(d["round"], d["task"])  # a task's bits and busy times are on each row
    per_row = {c: d[c] for c in ("energy_j", "samples", "tokens", "flops")}
    for c in ("upload_bits", "download_bits"):
        per_row[c] = np.where(first, d[c], 0.0)
    peak = _lookup(power, ["peak_flops_per_s"], d["device"].astype(str))["peak_flops_per_s"]
    per_row["peak"] = np.where(first_rows(d["round"], d["device"]), peak, 0.0)
    per_row["compute"] = np.where(first, d["compute_busy_s"], 0.0)
    per_row["comm"] = np.where(first, d["upload_busy_s"] + d["download_busy_s"], 0.0)
    frame = pd.DataFrame(per_row)
    sums = frame.groupby(d["round"]).sum()
    sums["peak_device_memory_bytes"] = pd.Series(d["memory_bytes"]).groupby(d["round"]).max()
    sums = sums.reindex(out["round"])
    for c in ("energy_j", "upload_bits", "download_bits", "samples", "tokens", "flops",
              "peak_device_memory_bytes"):
        out[c] = sums[c].to_numpy(float)
    lat = np.asarray(out["latency_s"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["tokens_per_s_per_w"] = out["tokens"] / out["energy_j"]
        out["mfu"] = out["flops"] / (lat * sums["peak"].to_numpy(float))
        out["granularity"] = sums["compute"].to_numpy(float) / sums["comm"].to_numpy(float)
    return out


def merged_power(overrides: Mapping[str, Any]) -> dict[str, HardwarePower]:
    """The default power table with a scenario's ``[power]`` entries replacing classes."""
    return {**DEFAULT_POWER, **overrides}
